//! A member makes its own keys, on its own machine. `overstap member init` makes the TLS key,
//! the node's signing key and its encryption key in the member's folder, and writes a
//! membership request for the authority: a PKCS#10 request for the TLS key, the public signing
//! and encryption keys, the org id, kind and name, signed with the new signing key (proof of
//! possession). `overstap member rotate` makes the next signing and encryption keys beside the
//! current ones (`*.key.next`) and a rotation request signed by the current key and the new one;
//! the node takes them in use when a directory names them. No private key leaves the folder:
//! the authority answers with a certificate and the directory, public files only.
//!
//! Folder layout: `keys/signing.key`, `keys/encryption.key`, `tls/key.pem` (0600),
//! `membership-request.signed`, `node.toml` or `hub.toml`; once admitted `tls/cert.pem`,
//! `tls/ca.pem`, `authority.pub` (and for the hub `directory.signed`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use overstap_node::write_secret;
use overstap_proto::config::parse_key_hex;
use overstap_proto::directory::{kind_name, validate_org_id};
use overstap_proto::envelope::EncryptionKeyPair;
use overstap_proto::pb::{MemberKind, MembershipRequest, Signed};
use overstap_proto::sign::{Domain, generate_signing_key, sign_message};
use prost::Message;
use rcgen::{CertificateParams, DnType, KeyPair};
use sha2::{Digest, Sha256};

use crate::authority::Authority;

/// The request `member init` writes, in the member's folder.
pub const JOIN_REQUEST: &str = "membership-request.signed";
/// The request `member rotate` writes, in the member's folder.
pub const ROTATION_REQUEST: &str = "rotation-request.signed";

/// A member about to join: who it is, where its hub is, and its own folder.
#[derive(Debug, Clone)]
pub struct Admission {
    pub org_id: String,
    pub kind: MemberKind,
    pub name: String,
    /// Host names and addresses in the hub's server certificate (hub only).
    pub hosts: Vec<String>,
    /// The hub's address, written into a node's `node.toml`.
    pub hub_url: String,
    /// The hub's name as in its certificate, written into a node's `node.toml`.
    pub hub_name: String,
    /// Where the hub listens, written into `hub.toml`.
    pub listen: String,
    /// The member's own folder: its keys, its settings, and what the authority sends back.
    pub out: PathBuf,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The TLS certificate's fields the authority issues for a member (and the request asks for).
pub(crate) fn tls_params(
    org_id: &str,
    name: &str,
    hosts: &[String],
) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, org_id);
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    Ok(params)
}

/// Makes the member's keys in `a.out` and its settings file, and writes the membership
/// request (returned too). Refuses a folder that already holds a signing key.
pub fn init(a: &Admission) -> anyhow::Result<Signed> {
    validate_org_id(&a.org_id)?;
    let dir = &a.out;
    if dir.join("keys/signing.key").exists() {
        bail!(
            "{} already holds a member's keys; refusing to overwrite them",
            dir.display()
        );
    }
    let hub = a.kind == MemberKind::Hub;
    let hosts = if hub { a.hosts.clone() } else { Vec::new() };
    let tls_key = KeyPair::generate()?;
    let csr = tls_params(&a.org_id, &a.name, &hosts)?.serialize_request(&tls_key)?;
    let signing = generate_signing_key();
    write_secret(&dir.join("tls/key.pem"), tls_key.serialize_pem().as_bytes())?;
    write_secret(
        &dir.join("keys/signing.key"),
        hex::encode(signing.to_bytes()).as_bytes(),
    )?;
    let (encryption_key, encryption_key_id) = if hub {
        (Vec::new(), String::new())
    } else {
        let enc = EncryptionKeyPair::generate();
        write_secret(
            &dir.join("keys/encryption.key"),
            hex::encode(enc.secret).as_bytes(),
        )?;
        (enc.public.to_vec(), enc.key_id())
    };
    write_settings(a)?;
    let request = MembershipRequest {
        org_id: a.org_id.clone(),
        kind: a.kind as i32,
        display_name: a.name.clone(),
        tls_csr: csr.der().to_vec(),
        tls_public_key: tls_key.public_key_raw().to_vec(),
        signing_key: signing.verifying_key().to_bytes().to_vec(),
        encryption_key,
        encryption_key_id,
        hosts,
        made_at: now(),
        replaces_signing_key: Vec::new(),
    };
    let signed = sign_message(Domain::MembershipRequest, &request, &[&signing]);
    write_public(&dir.join(JOIN_REQUEST), &signed.encode_to_vec())?;
    Ok(signed)
}

fn write_settings(a: &Admission) -> anyhow::Result<()> {
    if a.kind == MemberKind::Hub {
        return write_public(
            &a.out.join("hub.toml"),
            format!(
                "# Overstap hub settings; OVERSTAP_* environment variables override these.\n\
                 hub_id = \"{}\"\nlisten = \"{}\"\ndatabase_url = \"sqlite://hub.db\"\n\
                 directory_file = \"directory.signed\"\nmax_envelope_bytes = {}\n",
                a.org_id,
                a.listen,
                overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES
            )
            .as_bytes(),
        );
    }
    write_public(
        &a.out.join("node.toml"),
        format!(
            "# Overstap node settings for {} ({}); OVERSTAP_* environment variables override these.\n\
             org_id = \"{}\"\nhub_url = \"{}\"\nhub_name = \"{}\"\ndatabase_url = \"sqlite://node.db\"\n\
             api_listen = \"127.0.0.1:0\"\n\
             # The web app for students, guardians and staff: plain HTTP on this machine,\n\
             # behind the school's own HTTPS reverse proxy for everyone else.\n\
             web_listen = \"127.0.0.1:0\"\nweb_url_file = \"web.url\"\n",
            a.name,
            kind_name(a.kind),
            a.org_id,
            a.hub_url,
            a.hub_name
        )
        .as_bytes(),
    )
}

fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the signing key {}", path.display()))?;
    Ok(SigningKey::from_bytes(&parse_key_hex(
        &text,
        "signing key",
    )?))
}

/// Makes the member's next signing and encryption keys beside the current ones (`.next`) and
/// writes the rotation request, signed by the current signing key and the new one. `org_id`
/// is the member's, as the directory lists it. Until a directory names the new keys the node
/// goes on with the current ones; rotating again replaces the `.next` keys.
pub fn rotate(dir: &Path, org_id: &str, again: bool) -> anyhow::Result<Signed> {
    let current = read_signing_key(&dir.join("keys/signing.key"))?;
    if dir.join("keys/signing.key.next").exists() && !again {
        bail!(
            "{} already holds next keys from an earlier rotation that the node has not taken in use. If the authority accepted that request, publish the directory and wait: making new ones now would leave the node unable to follow. If it did not, run this again with --again",
            dir.display()
        );
    }
    if !dir.join("keys/encryption.key").exists() {
        bail!(
            "{} holds no encryption key: the hub's keys are changed by admitting a new hub",
            dir.display()
        );
    }
    let signing = generate_signing_key();
    let enc = EncryptionKeyPair::generate();
    write_secret(
        &dir.join("keys/encryption.key.next"),
        hex::encode(enc.secret).as_bytes(),
    )?;
    write_secret(
        &dir.join("keys/signing.key.next"),
        hex::encode(signing.to_bytes()).as_bytes(),
    )?;
    let request = MembershipRequest {
        org_id: org_id.to_string(),
        signing_key: signing.verifying_key().to_bytes().to_vec(),
        encryption_key: enc.public.to_vec(),
        encryption_key_id: enc.key_id(),
        made_at: now(),
        replaces_signing_key: current.verifying_key().to_bytes().to_vec(),
        ..Default::default()
    };
    let signed = sign_message(Domain::MembershipRequest, &request, &[&current, &signing]);
    write_public(&dir.join(ROTATION_REQUEST), &signed.encode_to_vec())?;
    Ok(signed)
}

/// Reads a request file as `member init` or `member rotate` wrote it.
pub fn read_request(path: &Path) -> anyhow::Result<Signed> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Signed::decode(bytes.as_slice())
        .with_context(|| format!("{} is not a signed membership request", path.display()))
}

/// The request's fingerprint, to be read out over the phone and compared: six groups of five
/// digits from the SHA-256 of the signed request (about 100 bits).
pub fn fingerprint(signed: &Signed) -> String {
    let digest = Sha256::digest(signed.encode_to_vec());
    digest[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// All parties on one machine (the demo, the tests, the benchmarks): the member makes its keys
/// in its own folder, and the authority admits it by its request, with the fingerprint as the
/// member would read it out. The authority's answer goes into the member's folder.
pub fn join(authority: &Authority, a: &Admission) -> anyhow::Result<Signed> {
    let request = init(a)?;
    authority.admit_request(&request, &fingerprint(&request), &a.out)
}

/// All parties on one machine: the member makes its next keys and the authority accepts them.
pub fn rotate_and_accept(
    authority: &Authority,
    dir: &Path,
    org_id: &str,
) -> anyhow::Result<Signed> {
    let request = rotate(dir, org_id, false)?;
    authority.rotate_request(&request)
}

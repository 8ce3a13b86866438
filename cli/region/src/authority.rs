//! The regional authority: its ed25519 key, the region's TLS CA, and the signed directory.
//!
//! Folder layout (`overstap authority init --dir AUTH`):
//! `authority.key` (0600), `authority.pub`, `ca.pem`, `ca.key` (0600), `region.txt`,
//! `directory.signed` (the newest signed directory). `admit` writes a member's credentials to a
//! folder of its own: `tls/{ca,cert,key}.pem`, `keys/{signing,encryption}.key` (0600),
//! `authority.pub`, and `node.toml` or `hub.toml`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use overstap_node::write_secret;
use overstap_proto::config::parse_key_hex;
use overstap_proto::directory::{VerifiedDirectory, kind_name, validate_org_id};
use overstap_proto::envelope::EncryptionKeyPair;
use overstap_proto::pb::{Directory, Member, MemberKind, Signed};
use overstap_proto::sign::{Domain, generate_signing_key, sign_message};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

pub struct Authority {
    pub dir: PathBuf,
    pub key: SigningKey,
    pub region: String,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn ca_params(region: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Overstap {region} region CA"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Options for admitting a member.
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
    pub out: PathBuf,
}

impl Authority {
    /// Makes the authority key, the region CA and an empty directory (version 1).
    pub fn init(dir: &Path, region: &str) -> anyhow::Result<Self> {
        if dir.join("authority.key").exists() {
            bail!(
                "{} already holds an authority; refusing to overwrite it",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = generate_signing_key();
        write_secret(
            &dir.join("authority.key"),
            hex::encode(key.to_bytes()).as_bytes(),
        )?;
        write_public(
            &dir.join("authority.pub"),
            &format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
        )?;
        write_public(&dir.join("region.txt"), &format!("{region}\n"))?;
        let ca_key = KeyPair::generate()?;
        let ca = ca_params(region)?.self_signed(&ca_key)?;
        write_public(&dir.join("ca.pem"), &ca.pem())?;
        write_secret(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
        let authority = Authority {
            dir: dir.to_path_buf(),
            key,
            region: region.to_string(),
        };
        authority.write_directory(&Directory {
            region: region.to_string(),
            version: 1,
            issued_at: now(),
            members: vec![],
        })?;
        Ok(authority)
    }

    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(dir.join("authority.key")).with_context(|| {
            format!(
                "{} holds no authority (run `overstap authority init` first)",
                dir.display()
            )
        })?;
        let key = SigningKey::from_bytes(&parse_key_hex(&text, "authority key")?);
        let region = std::fs::read_to_string(dir.join("region.txt"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Authority {
            dir: dir.to_path_buf(),
            key,
            region,
        })
    }

    /// The newest directory this authority signed.
    pub fn directory(&self) -> anyhow::Result<VerifiedDirectory> {
        let bytes =
            std::fs::read(self.dir.join("directory.signed")).context("reading directory.signed")?;
        let signed = Signed::decode(bytes.as_slice())
            .context("directory.signed is not a signed directory")?;
        Ok(VerifiedDirectory::verify(
            &signed,
            &self.key.verifying_key(),
            0,
        )?)
    }

    /// A dashboard session token for the coordinator `org_id`, valid for `hours`.
    pub fn dashboard_token(&self, org_id: &str, hours: u32) -> anyhow::Result<String> {
        let member = self
            .directory()?
            .member(org_id)
            .map(|m| m.kind())
            .with_context(|| format!("{org_id} is not in the directory"))?;
        if member != MemberKind::Coordinator {
            bail!(
                "{org_id} is a {}; only coordinators get a dashboard session",
                overstap_proto::directory::kind_name(member)
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        Ok(overstap_proto::session::issue_token(
            &self.key, org_id, now, hours, nonce,
        )?)
    }

    pub fn signed_directory(&self) -> anyhow::Result<Signed> {
        Ok(self.directory()?.signed)
    }

    fn write_directory(&self, d: &Directory) -> anyhow::Result<Signed> {
        let signed = sign_message(Domain::Directory, d, &[&self.key]);
        let tmp = self.dir.join("directory.signed.tmp");
        std::fs::write(&tmp, signed.encode_to_vec())?;
        std::fs::rename(&tmp, self.dir.join("directory.signed"))?;
        Ok(signed)
    }

    /// Issues a member's credentials into `a.out` and publishes a new directory version.
    pub fn admit(&self, a: &Admission) -> anyhow::Result<Signed> {
        validate_org_id(&a.org_id)?;
        let current = self.directory()?.directory;
        if current.members.iter().any(|m| m.org_id == a.org_id) {
            bail!("{} is already a member of the region", a.org_id);
        }
        if a.kind == MemberKind::Hub && current.members.iter().any(|m| m.kind() == MemberKind::Hub)
        {
            bail!("the region already has a hub");
        }
        let ca_key = KeyPair::from_pem(
            &std::fs::read_to_string(self.dir.join("ca.key")).context("reading ca.key")?,
        )?;
        let issuer = Issuer::new(ca_params(&self.region)?, ca_key);
        let tls_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(if a.kind == MemberKind::Hub {
            a.hosts.clone()
        } else {
            vec![]
        })?;
        params
            .distinguished_name
            .push(DnType::CommonName, a.org_id.clone());
        params
            .distinguished_name
            .push(DnType::OrganizationName, a.name.clone());
        params.extended_key_usages = if a.kind == MemberKind::Hub {
            // The hub's certificate also authenticates it as a client, to hand in directories.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = params.signed_by(&tls_key, &issuer)?;
        let out = &a.out;
        write_public(
            &out.join("tls/ca.pem"),
            &std::fs::read_to_string(self.dir.join("ca.pem"))?,
        )?;
        write_public(&out.join("tls/cert.pem"), &cert.pem())?;
        write_secret(&out.join("tls/key.pem"), tls_key.serialize_pem().as_bytes())?;
        write_public(
            &out.join("authority.pub"),
            &format!("{}\n", hex::encode(self.key.verifying_key().to_bytes())),
        )?;
        let signing = generate_signing_key();
        write_secret(
            &out.join("keys/signing.key"),
            hex::encode(signing.to_bytes()).as_bytes(),
        )?;
        let (enc_public, enc_id) = if a.kind == MemberKind::Hub {
            (vec![], String::new())
        } else {
            let enc = EncryptionKeyPair::generate();
            write_secret(
                &out.join("keys/encryption.key"),
                hex::encode(enc.secret).as_bytes(),
            )?;
            (enc.public.to_vec(), enc.key_id())
        };
        let member = Member {
            org_id: a.org_id.clone(),
            kind: a.kind as i32,
            display_name: a.name.clone(),
            signing_key: signing.verifying_key().to_bytes().to_vec(),
            encryption_key: enc_public,
            encryption_key_id: enc_id,
            tls_cert_sha256: Sha256::digest(cert.der()).to_vec(),
        };
        let mut next = current.clone();
        next.version += 1;
        next.issued_at = now();
        next.members.push(member);
        let signed = self.write_directory(&next)?;
        if a.kind == MemberKind::Hub {
            std::fs::write(out.join("directory.signed"), signed.encode_to_vec())?;
            write_public(
                &out.join("hub.toml"),
                &format!(
                    "# Overstap hub settings; OVERSTAP_* environment variables override these.\n\
                     hub_id = \"{}\"\nlisten = \"{}\"\ndatabase_url = \"sqlite://hub.db\"\n\
                     directory_file = \"directory.signed\"\nmax_envelope_bytes = {}\n",
                    a.org_id,
                    a.listen,
                    overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES
                ),
            )?;
        } else {
            write_public(
                &out.join("node.toml"),
                &format!(
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
                ),
            )?;
        }
        Ok(signed)
    }

    /// Removes a member (left the region, or compromised) and signs a new directory version.
    /// The hub refuses envelopes to and from it as soon as it holds that version.
    pub fn remove(&self, org_id: &str) -> anyhow::Result<Signed> {
        let mut next = self.directory()?.directory;
        let before = next.members.len();
        next.members.retain(|m| m.org_id != org_id);
        if next.members.len() == before {
            bail!("{org_id} is not a member of the region");
        }
        next.version += 1;
        next.issued_at = now();
        self.write_directory(&next)
    }

    /// Gives a member new signing and encryption keys (written into its credentials folder
    /// `member_dir`, the previous encryption key kept as `keys/encryption.key.previous` for
    /// envelopes already on their way) and signs a new directory version listing them.
    pub fn rotate(&self, org_id: &str, member_dir: &Path) -> anyhow::Result<Signed> {
        let mut next = self.directory()?.directory;
        let member = next
            .members
            .iter_mut()
            .find(|m| m.org_id == org_id)
            .with_context(|| format!("{org_id} is not a member of the region"))?;
        if member.kind() == MemberKind::Hub {
            bail!("the hub's key is rotated by admitting a new hub");
        }
        let enc_path = member_dir.join("keys/encryption.key");
        let previous =
            std::fs::read(&enc_path).with_context(|| format!("reading {}", enc_path.display()))?;
        write_secret(&member_dir.join("keys/encryption.key.previous"), &previous)?;
        let enc = EncryptionKeyPair::generate();
        let signing = generate_signing_key();
        // The new key files are in place before the directory names them.
        write_secret(&enc_path, hex::encode(enc.secret).as_bytes())?;
        write_secret(
            &member_dir.join("keys/signing.key"),
            hex::encode(signing.to_bytes()).as_bytes(),
        )?;
        member.encryption_key = enc.public.to_vec();
        member.encryption_key_id = enc.key_id();
        member.signing_key = signing.verifying_key().to_bytes().to_vec();
        next.version += 1;
        next.issued_at = now();
        self.write_directory(&next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_admit_and_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let auth = Authority::init(&tmp.path().join("auth"), "test").unwrap();
        assert!(Authority::init(&tmp.path().join("auth"), "test").is_err());
        let admit = |org: &str, kind| Admission {
            org_id: org.into(),
            kind,
            name: format!("{org} naam"),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            hub_url: "https://127.0.0.1:7443".into(),
            hub_name: "localhost".into(),
            listen: "127.0.0.1:7443".into(),
            out: tmp.path().join(org),
        };
        auth.admit(&admit("HUB", MemberKind::Hub)).unwrap();
        auth.admit(&admit("25LP", MemberKind::School)).unwrap();
        let d = auth.directory().unwrap();
        assert_eq!(d.version(), 3);
        assert_eq!(d.directory.members.len(), 2);
        assert!(
            auth.admit(&admit("25LP", MemberKind::School))
                .unwrap_err()
                .to_string()
                .contains("already a member")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["tls/key.pem", "keys/signing.key", "keys/encryption.key"] {
                let mode = std::fs::metadata(tmp.path().join("25LP").join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
    }
}

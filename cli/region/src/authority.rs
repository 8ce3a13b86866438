//! The regional authority: its ed25519 key, the region's TLS CA, and the signed directory. It
//! never holds a member's private key: members make their own keys ([`crate::member`]) and the
//! authority admits them by their requests, answering with a certificate and the directory.
//!
//! Folder layout (`overstap authority init --dir AUTH`; it can live on an offline machine):
//! `authority.key` (0600), `authority.pub`, `ca.pem`, `ca.key` (0600), `region.txt`,
//! `directory.signed` (the newest signed directory).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use overstap_node::write_secret;
use overstap_proto::config::parse_key_hex;
use overstap_proto::directory::{VerifiedDirectory, validate_org_id};
use overstap_proto::envelope::key_id_of;
use overstap_proto::pb::{Directory, EndedSessions, Member, MemberKind, MembershipRequest, Signed};
use overstap_proto::sign::{
    Domain, decode_body, generate_signing_key, sign_message, verify_signed_by, verifying_key,
};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest, Sha256};

use crate::member;

pub struct Authority {
    pub dir: PathBuf,
    pub key: SigningKey,
    pub region: String,
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
        member::write_public(
            &dir.join("authority.pub"),
            format!("{}\n", hex::encode(key.verifying_key().to_bytes())).as_bytes(),
        )?;
        member::write_public(&dir.join("region.txt"), format!("{region}\n").as_bytes())?;
        let ca_key = KeyPair::generate()?;
        let ca = ca_params(region)?.self_signed(&ca_key)?;
        member::write_public(&dir.join("ca.pem"), ca.pem().as_bytes())?;
        write_secret(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
        let authority = Authority {
            dir: dir.to_path_buf(),
            key,
            region: region.to_string(),
        };
        authority.write_directory(&Directory {
            region: region.to_string(),
            version: 1,
            issued_at: member::now(),
            members: vec![],
            ended_sessions: vec![],
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

    /// The newest signed directory in `dir`, checked against the `authority.pub` beside it: what
    /// `authority publish` hands to the hub. Needs no private key, so the two public files can
    /// be carried from an offline authority to a machine that reaches the hub.
    pub fn published_directory(dir: &Path) -> anyhow::Result<Signed> {
        let public = std::fs::read_to_string(dir.join("authority.pub"))
            .with_context(|| format!("reading {}/authority.pub", dir.display()))?;
        let key = verifying_key(&parse_key_hex(&public, "authority key")?, "authority key")?;
        Ok(read_directory(dir, &key)?.signed)
    }

    /// The newest directory this authority signed.
    pub fn directory(&self) -> anyhow::Result<VerifiedDirectory> {
        read_directory(&self.dir, &self.key.verifying_key())
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
        // A session issued in the second its coordinator's sessions were ended would be ended
        // with them: it starts a second later.
        let ended_up_to = self
            .directory()?
            .directory
            .ended_sessions
            .iter()
            .filter(|e| e.org_id == org_id)
            .map(|e| e.issued_up_to)
            .max()
            .unwrap_or(0);
        let issued = member::now().max(ended_up_to + 1);
        let mut nonce = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        Ok(overstap_proto::session::issue_token(
            &self.key, org_id, issued, hours, nonce,
        )?)
    }

    /// Ends dashboard sessions of the coordinator `org_id` before they run out: the one whose
    /// token is `token`, or every one issued until now. Signs a new directory version; the hub
    /// refuses those sessions once it holds it. Ends that no session could outlive any more
    /// are dropped from the directory here.
    pub fn end_sessions(&self, org_id: &str, token: Option<&str>) -> anyhow::Result<Signed> {
        let mut next = self.directory()?.directory;
        if !next.members.iter().any(|m| m.org_id == org_id) {
            bail!("{org_id} is not a member of the region");
        }
        let now = member::now();
        let (issued_up_to, nonce) = match token {
            Some(t) => {
                let t = overstap_proto::session::read_token(t, &self.key.verifying_key())
                    .context("this is not a dashboard token of this authority")?;
                if t.org_id != org_id {
                    bail!("this token is {}'s, not {org_id}'s", t.org_id);
                }
                (0, t.nonce)
            }
            None => (now, Vec::new()),
        };
        let longest = i64::from(overstap_proto::session::MAX_HOURS) * 3_600;
        next.ended_sessions
            .retain(|e| e.ended_at + longest + overstap_proto::passport::MAX_CLOCK_SKEW > now);
        next.ended_sessions.push(EndedSessions {
            org_id: org_id.to_string(),
            issued_up_to,
            nonce,
            ended_at: now,
        });
        next.version += 1;
        next.issued_at = now;
        self.write_directory(&next)
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

    /// Admits a member by the request it made on its own machine (`overstap member init`):
    /// checks the proof-of-possession signature, the fields, that the CSR carries the TLS key
    /// the request names, and that the fingerprint the member read out (`heard`) is this
    /// request's; then issues the TLS certificate for the CSR's key from the region's CA and
    /// signs a new directory version. Writes only public files into `out`: `tls/cert.pem`,
    /// `tls/ca.pem`, `authority.pub`, and for the hub `directory.signed`. On any refusal no
    /// directory version is made.
    pub fn admit_request(
        &self,
        signed: &Signed,
        heard: &str,
        out: &Path,
    ) -> anyhow::Result<Signed> {
        let r: MembershipRequest = decode_body(Domain::MembershipRequest, signed)
            .context("this is not a membership request")?;
        let heard_digits: String = heard.chars().filter(char::is_ascii_digit).collect();
        let fingerprint = member::fingerprint(signed);
        if heard_digits != fingerprint.replace(' ', "") {
            bail!(
                "the fingerprint does not match: this request's is {fingerprint}, and the member read out {heard}; the request was changed on its way, or it is another request. Ask the member to send it again"
            );
        }
        let key = verifying_key(&r.signing_key, "signing key in the request")?;
        verify_signed_by(Domain::MembershipRequest, signed, &key).context(
            "the request is not signed by the signing key it names (no proof that the member holds it)",
        )?;
        if !r.replaces_signing_key.is_empty() {
            bail!("this is a rotation request: use `overstap authority rotate --request`");
        }
        validate_org_id(&r.org_id)?;
        let kind = MemberKind::try_from(r.kind)
            .ok()
            .filter(|k| *k != MemberKind::Unspecified)
            .context("the request names no kind of member")?;
        if r.display_name.trim().is_empty() {
            bail!("the request names no organisation name");
        }
        let current = self.directory()?.directory;
        if let Some(m) = current.members.iter().find(|m| m.org_id == r.org_id) {
            bail!(
                "{} is already a member of the region ({}), with other keys; remove it first if its keys are lost",
                r.org_id,
                m.display_name
            );
        }
        if current
            .members
            .iter()
            .any(|m| m.signing_key == r.signing_key)
        {
            bail!("another member already has this signing key");
        }
        if kind == MemberKind::Hub && current.members.iter().any(|m| m.kind() == MemberKind::Hub) {
            bail!("the region already has a hub");
        }
        if kind == MemberKind::Hub
            && !(r.encryption_key.is_empty() && r.encryption_key_id.is_empty())
        {
            bail!("a hub has no encryption key: nothing is sealed to it");
        }
        if kind != MemberKind::Hub {
            if r.encryption_key.len() != 32 || key_id_of(&r.encryption_key) != r.encryption_key_id {
                bail!("the request's encryption key is not a 32-byte key with its key id");
            }
            if !r.hosts.is_empty() {
                bail!("only the hub's certificate names hosts");
            }
        }
        let csr = CertificateSigningRequestParams::from_der(&r.tls_csr.clone().into())
            .context("the TLS certificate request (CSR) is not a signed PKCS#10 request")?;
        if csr.public_key.der_bytes() != r.tls_public_key.as_slice() {
            bail!("the certificate request is for another TLS key than the one the request names");
        }
        let ca_key = KeyPair::from_pem(
            &std::fs::read_to_string(self.dir.join("ca.key")).context("reading ca.key")?,
        )?;
        let issuer = Issuer::new(ca_params(&self.region)?, ca_key);
        // The certificate's fields are the authority's, from the checked request; nothing
        // else the CSR asks for is taken over.
        let mut params = member::tls_params(&r.org_id, &r.display_name, &r.hosts)?;
        params.extended_key_usages = if kind == MemberKind::Hub {
            // The hub's certificate also authenticates it as a client, to hand in directories.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        let mut next = current.clone();
        next.version += 1;
        next.issued_at = member::now();
        next.members.push(Member {
            org_id: r.org_id.clone(),
            kind: kind as i32,
            display_name: r.display_name.clone(),
            signing_key: r.signing_key.clone(),
            encryption_key: r.encryption_key.clone(),
            encryption_key_id: r.encryption_key_id.clone(),
            tls_cert_sha256: Sha256::digest(cert.der()).to_vec(),
        });
        member::write_public(&out.join("tls/cert.pem"), cert.pem().as_bytes())?;
        member::write_public(
            &out.join("tls/ca.pem"),
            &std::fs::read(self.dir.join("ca.pem"))?,
        )?;
        member::write_public(
            &out.join("authority.pub"),
            format!("{}\n", hex::encode(self.key.verifying_key().to_bytes())).as_bytes(),
        )?;
        let signed = self.write_directory(&next)?;
        if kind == MemberKind::Hub {
            member::write_public(&out.join("directory.signed"), &signed.encode_to_vec())?;
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
        next.issued_at = member::now();
        self.write_directory(&next)
    }

    /// Accepts a member's new signing and encryption keys by the rotation request it made
    /// (`overstap member rotate`): it must be signed by the signing key the directory lists now
    /// and by the new one. Signs a new directory version listing them; the member's node takes
    /// them in use when it holds that version, and keeps the previous encryption key for what
    /// is on its way.
    pub fn rotate_request(&self, signed: &Signed) -> anyhow::Result<Signed> {
        let r: MembershipRequest = decode_body(Domain::MembershipRequest, signed)
            .context("this is not a rotation request")?;
        let mut next = self.directory()?.directory;
        let member = next
            .members
            .iter_mut()
            .find(|m| m.org_id == r.org_id)
            .with_context(|| format!("{} is not a member of the region", r.org_id))?;
        if member.kind() == MemberKind::Hub {
            bail!("the hub's key is changed by admitting a new hub");
        }
        if r.replaces_signing_key.is_empty() {
            bail!(
                "this is a request to join, not to rotate: use `overstap authority admit --request`"
            );
        }
        if r.replaces_signing_key != member.signing_key {
            bail!(
                "the request replaces a signing key {} does not have (now); was it made before an earlier rotation?",
                r.org_id
            );
        }
        let old = verifying_key(&member.signing_key, "current signing key")?;
        verify_signed_by(Domain::MembershipRequest, signed, &old).context(
            "a rotation must be signed by the member's current signing key, as the directory lists it",
        )?;
        let new = verifying_key(&r.signing_key, "new signing key")?;
        verify_signed_by(Domain::MembershipRequest, signed, &new).context(
            "the rotation is not signed by the new signing key it names (no proof that the member holds it)",
        )?;
        if r.signing_key == member.signing_key {
            bail!("the new signing key is the current one");
        }
        if r.encryption_key.len() != 32 || key_id_of(&r.encryption_key) != r.encryption_key_id {
            bail!("the request's encryption key is not a 32-byte key with its key id");
        }
        member.signing_key = r.signing_key.clone();
        member.encryption_key = r.encryption_key.clone();
        member.encryption_key_id = r.encryption_key_id.clone();
        next.version += 1;
        next.issued_at = member::now();
        self.write_directory(&next)
    }
}

/// `dir/directory.signed`, checked against the authority's public `key`.
fn read_directory(
    dir: &Path,
    key: &ed25519_dalek::VerifyingKey,
) -> anyhow::Result<VerifiedDirectory> {
    let bytes = std::fs::read(dir.join("directory.signed"))
        .with_context(|| format!("reading {}/directory.signed", dir.display()))?;
    let signed =
        Signed::decode(bytes.as_slice()).context("directory.signed is not a signed directory")?;
    Ok(VerifiedDirectory::verify(&signed, key, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Admission, fingerprint, init, join, rotate};
    use overstap_proto::sign::add_signature;

    fn admission(dir: &Path, org: &str, kind: MemberKind) -> Admission {
        Admission {
            org_id: org.into(),
            kind,
            name: format!("{org} naam"),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            hub_url: "https://127.0.0.1:7443".into(),
            hub_name: "localhost".into(),
            listen: "127.0.0.1:7443".into(),
            out: dir.join(org),
        }
    }

    /// The request's body decoded, changed by `f`, and signed again with `keys`.
    fn altered(
        signed: &Signed,
        keys: &[&SigningKey],
        f: impl FnOnce(&mut MembershipRequest),
    ) -> Signed {
        let mut r: MembershipRequest = decode_body(Domain::MembershipRequest, signed).unwrap();
        f(&mut r);
        sign_message(Domain::MembershipRequest, &r, keys)
    }

    fn key_in(dir: &Path, file: &str) -> SigningKey {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        SigningKey::from_bytes(&parse_key_hex(&text, "key").unwrap())
    }

    #[test]
    fn members_join_by_their_own_requests_and_versions_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let auth = Authority::init(&tmp.path().join("auth"), "test").unwrap();
        assert!(Authority::init(&tmp.path().join("auth"), "test").is_err());
        join(&auth, &admission(tmp.path(), "HUB", MemberKind::Hub)).unwrap();
        join(&auth, &admission(tmp.path(), "25LP", MemberKind::School)).unwrap();
        let d = auth.directory().unwrap();
        assert_eq!(d.version(), 3);
        // What `authority publish` hands in needs the public files only, and is the same.
        assert_eq!(Authority::published_directory(&auth.dir).unwrap(), d.signed);
        assert_eq!(d.directory.members.len(), 2);
        // The member's own folder: its keys, made there, 0600; the certificate the authority
        // issued is for the member's own TLS key, and the directory lists its own keys.
        let school = tmp.path().join("25LP");
        let listed = d.member("25LP").unwrap();
        assert_eq!(
            listed.signing_key,
            key_in(&school, "keys/signing.key")
                .verifying_key()
                .to_bytes()
        );
        let cert = std::fs::read_to_string(school.join("tls/cert.pem")).unwrap();
        let der = pem_der(&cert);
        assert_eq!(listed.tls_cert_sha256, Sha256::digest(&der).to_vec());
        let key = KeyPair::from_pem(&std::fs::read_to_string(school.join("tls/key.pem")).unwrap())
            .unwrap();
        let raw = key.public_key_raw();
        assert!(
            der.windows(raw.len()).any(|w| w == raw),
            "the certificate names the member's key"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["tls/key.pem", "keys/signing.key", "keys/encryption.key"] {
                let mode = std::fs::metadata(school.join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        // Nothing secret in the authority's folder but its own two keys.
        let mut files = vec![];
        for e in std::fs::read_dir(&auth.dir).unwrap() {
            files.push(e.unwrap().file_name().into_string().unwrap());
        }
        files.sort();
        assert_eq!(
            files,
            [
                "authority.key",
                "authority.pub",
                "ca.key",
                "ca.pem",
                "directory.signed",
                "region.txt"
            ]
        );
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn a_request_that_does_not_add_up_is_refused_and_no_version_is_made() {
        let tmp = tempfile::tempdir().unwrap();
        let auth = Authority::init(&tmp.path().join("auth"), "test").unwrap();
        join(&auth, &admission(tmp.path(), "25LP", MemberKind::School)).unwrap();
        let a = admission(tmp.path(), "30RT", MemberKind::Mbo);
        let good = init(&a).unwrap();
        let signing = key_in(&a.out, "keys/signing.key");
        let other = generate_signing_key();
        let refused = |signed: &Signed, heard: &str| {
            let before = auth.directory().unwrap().version();
            let e = auth.admit_request(signed, heard, &a.out).unwrap_err();
            assert_eq!(auth.directory().unwrap().version(), before);
            assert!(!a.out.join("tls/cert.pem").exists());
            format!("{e:#}")
        };
        // Signed by another key than the one it names: no proof of possession.
        let unproven = altered(&good, &[&other], |_| {});
        let e = refused(&unproven, &fingerprint(&unproven));
        assert!(e.contains("not signed by the signing key it names"), "{e}");
        // A CSR for another TLS key than the one named.
        let elsewhere = KeyPair::generate().unwrap();
        let swapped = altered(&good, &[&signing], |r| {
            r.tls_public_key = elsewhere.public_key_raw().to_vec();
        });
        let e = refused(&swapped, &fingerprint(&swapped));
        assert!(e.contains("another TLS key"), "{e}");
        // A CSR whose own signature fails.
        let broken = altered(&good, &[&signing], |r| {
            let n = r.tls_csr.len();
            r.tls_csr[n - 3] ^= 1;
        });
        let e = refused(&broken, &fingerprint(&broken));
        assert!(e.contains("CSR"), "{e}");
        // Changed after the member read out its fingerprint (the member's name, here).
        let renamed = altered(&good, &[&signing], |r| {
            r.display_name = "Iemand anders".into()
        });
        let e = refused(&renamed, &fingerprint(&good));
        assert!(e.contains("fingerprint does not match"), "{e}");
        // An org id already taken, by another member's keys.
        let taken = init(&admission(
            &tmp.path().join("again"),
            "25LP",
            MemberKind::School,
        ))
        .unwrap();
        let e = refused(&taken, &fingerprint(&taken));
        assert!(e.contains("already a member"), "{e}");
        // The good one goes in, once; read out with other spacing, as a person would type it.
        let heard = fingerprint(&good).replace(' ', "-");
        auth.admit_request(&good, &heard, &a.out).unwrap();
        assert!(auth.directory().unwrap().member("30RT").is_ok());
    }

    #[test]
    fn a_rotation_needs_the_current_key_and_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let auth = Authority::init(&tmp.path().join("auth"), "test").unwrap();
        let a = admission(tmp.path(), "30RT", MemberKind::Mbo);
        join(&auth, &a).unwrap();
        let request = rotate(&a.out, "30RT", false).unwrap();
        // Next keys are waiting: a second rotation is refused unless asked for again.
        let e = format!("{:#}", rotate(&a.out, "30RT", false).unwrap_err());
        assert!(e.contains("--again"), "{e}");
        let new = key_in(&a.out, "keys/signing.key.next");
        let before = auth.directory().unwrap().version();
        // Signed by the new key alone.
        let alone = altered(&request, &[&new], |_| {});
        let e = format!("{:#}", auth.rotate_request(&alone).unwrap_err());
        assert!(e.contains("current signing key"), "{e}");
        // The old key signed, but the new one did not.
        let old = key_in(&a.out, "keys/signing.key");
        let mut unproven = altered(&request, &[&old], |_| {});
        add_signature(
            Domain::MembershipRequest,
            &mut unproven,
            &generate_signing_key(),
        );
        let e = format!("{:#}", auth.rotate_request(&unproven).unwrap_err());
        assert!(e.contains("new signing key"), "{e}");
        assert_eq!(auth.directory().unwrap().version(), before);
        // Both: the directory lists the new keys; the current key files are untouched until
        // the node takes the new ones in use.
        auth.rotate_request(&request).unwrap();
        let d = auth.directory().unwrap();
        assert_eq!(d.version(), before + 1);
        assert_eq!(
            d.member("30RT").unwrap().signing_key,
            new.verifying_key().to_bytes()
        );
        assert_eq!(
            key_in(&a.out, "keys/signing.key").verifying_key(),
            old.verifying_key()
        );
        // The same request once more: it replaces a key the member no longer has.
        let e = format!("{:#}", auth.rotate_request(&request).unwrap_err());
        assert!(e.contains("does not have"), "{e}");
    }
}

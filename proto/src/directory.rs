//! The authority-signed member directory: who is in the region, with which keys.
//!
//! Nodes are provisioned with the authority's public key and accept only directories it signed,
//! with strictly increasing versions. The hub serves the directory but cannot forge it.

use ed25519_dalek::VerifyingKey;

use crate::ProtocolError;
use crate::pb::{Directory, Member, MemberKind, Signed};
use crate::sign::{Domain, open_signed, verifying_key};

/// A directory whose authority signature has been checked.
#[derive(Debug, Clone)]
pub struct VerifiedDirectory {
    pub directory: Directory,
    pub signed: Signed,
    /// Each member's signing key, decompressed once for this version: every signature checked
    /// under the directory would otherwise decompress its signer's key again.
    signing_keys: std::collections::HashMap<String, VerifyingKey>,
}

impl VerifiedDirectory {
    /// Checks the authority's signature and that `version` is newer than `held_version`
    /// (pass 0 when no directory is held yet).
    pub fn verify(
        signed: &Signed,
        authority: &VerifyingKey,
        held_version: u64,
    ) -> Result<Self, ProtocolError> {
        let directory: Directory = open_signed(Domain::Directory, signed, authority)?;
        if directory.version <= held_version {
            return Err(ProtocolError::StaleDirectory {
                offered: directory.version,
                held: held_version,
            });
        }
        let mut signing_keys = std::collections::HashMap::new();
        for m in &directory.members {
            validate_org_id(&m.org_id)?;
            let key = verifying_key(&m.signing_key, "member signing key")?;
            if signing_keys.insert(m.org_id.clone(), key).is_some() {
                return Err(ProtocolError::Malformed {
                    what: "directory",
                    detail: format!("member {} is listed twice", m.org_id),
                });
            }
            if m.kind() != MemberKind::Hub && m.encryption_key.len() != 32 {
                return Err(ProtocolError::Malformed {
                    what: "directory",
                    detail: format!("member {} has no 32-byte encryption key", m.org_id),
                });
            }
        }
        Ok(VerifiedDirectory {
            directory,
            signed: signed.clone(),
            signing_keys,
        })
    }

    pub fn version(&self) -> u64 {
        self.directory.version
    }

    pub fn member(&self, org_id: &str) -> Result<&Member, ProtocolError> {
        self.directory
            .members
            .iter()
            .find(|m| m.org_id == org_id)
            .ok_or_else(|| ProtocolError::UnknownMember(org_id.to_string()))
    }

    /// The member whose TLS client certificate has this SHA-256 fingerprint.
    pub fn member_by_cert(&self, cert_sha256: &[u8]) -> Option<&Member> {
        self.directory
            .members
            .iter()
            .find(|m| !m.tls_cert_sha256.is_empty() && m.tls_cert_sha256 == cert_sha256)
    }

    pub fn signing_key_of(&self, org_id: &str) -> Result<VerifyingKey, ProtocolError> {
        self.signing_keys
            .get(org_id)
            .copied()
            .ok_or_else(|| ProtocolError::UnknownMember(org_id.to_string()))
    }

    /// The hub's receipt-signing key (the one member of kind hub).
    pub fn hub(&self) -> Option<&Member> {
        self.directory
            .members
            .iter()
            .find(|m| m.kind() == MemberKind::Hub)
    }
}

/// Org ids are BRIN codes, municipality codes and the like: short, ASCII letters and digits.
pub fn validate_org_id(org_id: &str) -> Result<(), ProtocolError> {
    let ok = !org_id.is_empty()
        && org_id.len() <= 32
        && org_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::Malformed {
            what: "org id",
            detail: format!("{org_id:?} must be 1-32 ASCII letters, digits, '-' or '_'"),
        })
    }
}

/// The lower-case word used in CLIs and config for a member kind.
pub fn kind_name(kind: MemberKind) -> &'static str {
    match kind {
        MemberKind::School => "school",
        MemberKind::Mbo => "mbo",
        MemberKind::Municipality => "municipality",
        MemberKind::Coordinator => "coordinator",
        MemberKind::Hub => "hub",
        MemberKind::Unspecified => "unspecified",
    }
}

/// Parses a member kind word.
pub fn parse_kind(word: &str) -> Result<MemberKind, ProtocolError> {
    Ok(match word {
        "school" => MemberKind::School,
        "mbo" => MemberKind::Mbo,
        "municipality" | "gemeente" => MemberKind::Municipality,
        "coordinator" => MemberKind::Coordinator,
        "hub" => MemberKind::Hub,
        other => {
            return Err(ProtocolError::Malformed {
                what: "member kind",
                detail: format!(
                    "{other:?} is not one of school, mbo, municipality, coordinator, hub"
                ),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{generate_signing_key, sign_message};

    fn member(org: &str) -> Member {
        Member {
            org_id: org.into(),
            kind: MemberKind::School as i32,
            display_name: "Test".into(),
            signing_key: generate_signing_key().verifying_key().to_bytes().to_vec(),
            encryption_key: vec![7; 32],
            encryption_key_id: "k1".into(),
            tls_cert_sha256: vec![1; 32],
        }
    }

    fn dir(version: u64) -> Directory {
        Directory {
            region: "test".into(),
            version,
            issued_at: 0,
            members: vec![member("25LP"), member("GM0193")],
            ended_sessions: vec![],
        }
    }

    #[test]
    fn accepts_newer_signed_directory() {
        let authority = generate_signing_key();
        let signed = sign_message(Domain::Directory, &dir(2), &[&authority]);
        let v = VerifiedDirectory::verify(&signed, &authority.verifying_key(), 1).unwrap();
        assert_eq!(v.member("GM0193").unwrap().org_id, "GM0193");
        assert!(v.member_by_cert(&[1; 32]).is_some());
        assert!(matches!(
            v.member("XX"),
            Err(ProtocolError::UnknownMember(_))
        ));
    }

    #[test]
    fn refuses_old_version_and_foreign_signer() {
        let authority = generate_signing_key();
        let signed = sign_message(Domain::Directory, &dir(2), &[&authority]);
        let err = VerifiedDirectory::verify(&signed, &authority.verifying_key(), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stale directory: version 2 is not newer than version 2"
        );
        let forger = generate_signing_key();
        let forged = sign_message(Domain::Directory, &dir(3), &[&forger]);
        assert!(VerifiedDirectory::verify(&forged, &authority.verifying_key(), 0).is_err());
    }

    #[test]
    fn refuses_duplicate_members_and_bad_org_ids() {
        let authority = generate_signing_key();
        let mut d = dir(1);
        d.members.push(member("25LP"));
        let signed = sign_message(Domain::Directory, &d, &[&authority]);
        assert!(VerifiedDirectory::verify(&signed, &authority.verifying_key(), 0).is_err());
        assert!(validate_org_id("25 LP").is_err());
        assert!(validate_org_id("").is_err());
        assert!(validate_org_id("GM0193").is_ok());
    }
}

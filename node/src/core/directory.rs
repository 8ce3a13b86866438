//! The signed directory and this node's own keys: installing a newer directory, following a
//! rotation of this node's keys (taking the `.next` key files `overstap member rotate` made in
//! use once a directory names them), and signing its student cards again after its signing key
//! was rotated.

use std::path::PathBuf;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use overstap_proto::config::parse_key_hex;
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::EncryptionKeyPair;
use overstap_proto::passport::verify_card;
use overstap_proto::pb::Signed;
use overstap_proto::sign::{Domain, add_signature, verifying_key};
use prost::Message;

use super::{NodeCore, NodeError, read_lock, stored};

/// Where the node's own key files are, so a rotated key is picked up without a restart.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub signing: PathBuf,
    pub encryption: PathBuf,
}

impl KeyFiles {
    /// The previous encryption key is kept beside the current one after a rotation.
    pub fn previous_encryption(&self) -> PathBuf {
        let mut p = self.encryption.clone().into_os_string();
        p.push(".previous");
        PathBuf::from(p)
    }

    /// The next key, made by `overstap member rotate` beside the current one and taken in use
    /// when a directory names it.
    pub fn next(path: &std::path::Path) -> PathBuf {
        let mut p = path.to_path_buf().into_os_string();
        p.push(".next");
        PathBuf::from(p)
    }

    /// Puts the next key (`path.next`) in place of the current one if `wanted` says it is the
    /// one the directory names; the current key is kept as `keep_as` first (the encryption
    /// key, for envelopes already on their way). Each step is a whole file, so a crash in
    /// between leaves a state this repeats from.
    fn promote(
        path: &std::path::Path,
        keep_as: Option<&std::path::Path>,
        what: &'static str,
        wanted: impl Fn(&[u8; 32]) -> bool,
    ) -> Result<(), NodeError> {
        let next = Self::next(path);
        let Ok(key) = Self::read(&next, what) else {
            return Ok(());
        };
        if !wanted(&key) {
            return Ok(());
        }
        let io =
            |e: std::io::Error| NodeError::Invalid(format!("taking the new {what} in use: {e}"));
        if let Some(keep) = keep_as
            && let Ok(current) = std::fs::read(path)
        {
            crate::write_secret(keep, &current)
                .map_err(|e| NodeError::Invalid(format!("keeping the previous {what}: {e:#}")))?;
        }
        std::fs::rename(&next, path).map_err(io)
    }

    fn read(path: &std::path::Path, what: &'static str) -> Result<[u8; 32], NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Invalid(format!("reading {what} {}: {e}", path.display())))?;
        Ok(parse_key_hex(&text, what)?)
    }
}

impl NodeCore {
    /// Installs a directory if the authority signed it and it is newer than the one held. If it
    /// lists new keys for this node (a rotation), the new key files are read; the previous
    /// encryption key stays, for envelopes already on their way.
    pub async fn install_directory(&self, signed: &Signed) -> Result<u64, NodeError> {
        let verified =
            VerifiedDirectory::verify(signed, &self.authority, self.directory_version())?;
        let version = verified.version();
        let key_before = self
            .directory()
            .ok()
            .and_then(|d| d.member(&self.org_id).ok().map(|m| m.signing_key.clone()));
        if let Ok(me) = verified.member(&self.org_id) {
            self.follow_rotation(me)?;
            // This node's own signing key was rotated: the cards it issued are signed again
            // before the new directory is kept, so a crash in between does it again at the next
            // start (the node then still holds the directory of before).
            if let Some(old) = key_before
                && old != me.signing_key
                && self.key().verifying_key().as_bytes().as_slice() == me.signing_key.as_slice()
            {
                self.resign_cards(&old).await?;
            }
        }
        self.store
            .save_directory(version, &signed.encode_to_vec())
            .await?;
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(verified));
        tracing::info!(org = %self.org_id, version, "directory installed");
        Ok(version)
    }

    fn follow_rotation(&self, me: &overstap_proto::pb::Member) -> Result<(), NodeError> {
        let Some(files) = &self.key_files else {
            return Ok(());
        };
        let known = read_lock(&self.encryption_keys)
            .iter()
            .any(|k| k.key_id() == me.encryption_key_id);
        if !known && !me.encryption_key_id.is_empty() {
            KeyFiles::promote(
                &files.encryption,
                Some(&files.previous_encryption()),
                "encryption key",
                |k| {
                    EncryptionKeyPair::from_secret(k)
                        .is_ok_and(|pair| pair.key_id() == me.encryption_key_id)
                },
            )?;
            let mut keys = vec![EncryptionKeyPair::from_secret(&KeyFiles::read(
                &files.encryption,
                "encryption key",
            )?)?];
            if let Ok(prev) = KeyFiles::read(&files.previous_encryption(), "encryption key") {
                keys.push(EncryptionKeyPair::from_secret(&prev)?);
            }
            for old in read_lock(&self.encryption_keys) {
                if !keys.iter().any(|k| k.key_id() == old.key_id()) {
                    keys.push(old);
                }
            }
            if keys[0].key_id() == me.encryption_key_id {
                tracing::info!(org = %self.org_id, key = %me.encryption_key_id, "new encryption key in use");
                *self
                    .encryption_keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = keys;
            }
        }
        if self.key().verifying_key().as_bytes().as_slice() != me.signing_key.as_slice() {
            KeyFiles::promote(&files.signing, None, "signing key", |k| {
                SigningKey::from_bytes(k)
                    .verifying_key()
                    .as_bytes()
                    .as_slice()
                    == me.signing_key.as_slice()
            })?;
            let key = SigningKey::from_bytes(&KeyFiles::read(&files.signing, "signing key")?);
            if key.verifying_key().as_bytes().as_slice() == me.signing_key.as_slice() {
                tracing::info!(org = %self.org_id, "new signing key in use");
                *self.signing_key.write().unwrap_or_else(|p| p.into_inner()) = key;
            }
        }
        Ok(())
    }

    /// Signs again, with this node's current key, every student card that its previous key
    /// (`old`, as the directory listed it) signed. The card itself is unchanged: same pseudonym,
    /// keys and date, so a recipient that holds the old copy takes the new one as the same card.
    /// Without this, every card issued before a rotation of the school's key would fail at the
    /// school itself and at every recipient. Returns how many were signed again.
    async fn resign_cards(&self, old: &[u8]) -> Result<usize, NodeError> {
        let old = verifying_key(old, "previous signing key")?;
        let key = self.key();
        let current = key.verifying_key();
        let mut tx = self.store.begin().await?;
        let mut count = 0;
        for (pseudonym, bytes) in self.store.student_cards().await? {
            let signed = stored::<Signed>(&bytes, "student card")?;
            if verify_card(&signed, &current).is_ok() || verify_card(&signed, &old).is_err() {
                continue;
            }
            let mut again = Signed {
                body: signed.body,
                sigs: Vec::new(),
            };
            add_signature(Domain::StudentCard, &mut again, &key);
            tx.replace_card(&pseudonym, &again.encode_to_vec(), self.now())
                .await?;
            count += 1;
        }
        tx.commit().await?;
        tracing::info!(org = %self.org_id, cards = count, "student cards signed again with the new key");
        Ok(count)
    }
}

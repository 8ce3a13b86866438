//! The exchange log: every routing event of the hub as a leaf of an append-only Merkle tree
//! (RFC 6962 / 9162 hashing), with checkpoints in the C2SP tlog-checkpoint format, signed as
//! C2SP signed notes by the hub's key from the authority-signed directory.
//!
//! The hashing, proofs and checkpoint text come from `tlog_tiles` (Cloudflare's port of Go's
//! `golang.org/x/mod/sumdb/tlog`, which backs the Go checksum database) and `signed_note`;
//! this module only decides what a leaf is and which key signs. A leaf holds metadata only:
//! event, envelope kind, org ids, envelope id, body hash, time. No pseudonym, no content, so the
//! log never conflicts with erasure.

use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, record_hash};
pub use tlog_tiles::{Hash, HashReader, RecordProof, TreeProof, stored_hash_count};

use crate::ProtocolError;

/// One routing event, as the hub logs it and serves it: event ("send" or "delivery"), envelope
/// kind, org ids, envelope id, SHA-256 of the sealed body (empty for a delivery) and time. The
/// generated type is the one type for it everywhere.
pub use crate::pb::LogEntry;

/// The exact bytes of a leaf: a domain tag and length-prefixed fields, so no party depends on
/// how any other encoder orders things.
pub fn entry_bytes(e: &LogEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"overstap.v1/log-entry\0");
    for field in [
        e.event.as_bytes(),
        e.from_org.as_bytes(),
        e.to_org.as_bytes(),
        e.envelope_id.as_slice(),
        e.body_sha256.as_slice(),
    ] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&e.envelope_kind.to_be_bytes());
    out.extend_from_slice(&e.at.to_be_bytes());
    out
}

/// The RFC 6962 leaf hash of an entry: SHA-256(0x00 || entry bytes).
pub fn leaf_hash(e: &LogEntry) -> Hash {
    record_hash(&entry_bytes(e))
}

/// The log's origin line: one log per region.
pub fn origin(region: &str) -> String {
    format!("overstap/{region}")
}

/// The signed-note key name of a hub.
pub fn key_name(hub_id: &str) -> String {
    format!("overstap-hub-{hub_id}")
}

fn signer(key: &SigningKey, name: &str) -> Result<StandardSigner, ProtocolError> {
    let vkey = signed_note::new_ed25519_verifier_key(name, &key.verifying_key());
    let id = vkey.split('+').nth(1).unwrap_or_default().to_string();
    let mut private = vec![1u8];
    private.extend_from_slice(&key.to_bytes());
    let skey = format!(
        "PRIVATE+KEY+{name}+{id}+{}",
        base64::engine::general_purpose::STANDARD.encode(private)
    );
    StandardSigner::new(&skey).map_err(|e| ProtocolError::malformed("log key", format!("{e:?}")))
}

/// The signed-note key name of a witness (a coordinator member).
pub fn witness_key_name(org_id: &str) -> String {
    format!("overstap-witness-{org_id}")
}

/// C2SP tlog-cosignature v1 with Ed25519 (signature type 0x04): the witness signs
/// `cosignature/v1\ntime T\n` followed by the checkpoint body, and the signature on the note
/// line is T (u64, big-endian) followed by the 64-byte Ed25519 signature. The key id binds the
/// name, the type byte and the key, so a witness key cannot pass for a hub key or the reverse.
struct CosignatureV1 {
    name: String,
    key: VerifyingKey,
    signing: Option<(SigningKey, u64)>,
}

const COSIGNATURE_V1: u8 = 0x04;

impl CosignatureV1 {
    fn message(time: u64, body: &[u8]) -> Vec<u8> {
        let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
        m.extend_from_slice(body);
        m
    }
}

impl signed_note::Verifier for CosignatureV1 {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        let mut k = vec![COSIGNATURE_V1];
        k.extend_from_slice(self.key.as_bytes());
        signed_note::key_id(&self.name, &k)
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(parts) = <[u8; 72]>::try_from(sig) else {
            return false;
        };
        let time = u64::from_be_bytes(parts[..8].try_into().unwrap_or_default());
        let signature =
            ed25519_dalek::Signature::from_bytes(&parts[8..].try_into().unwrap_or([0u8; 64]));
        time < 1 << 63
            && self
                .key
                .verify_strict(&Self::message(time, msg), &signature)
                .is_ok()
    }
}

impl signed_note::Signer for CosignatureV1 {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        signed_note::Verifier::key_id(self)
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        use ed25519_dalek::Signer as _;
        let (key, time) = self
            .signing
            .as_ref()
            .ok_or_else(ed25519_dalek::SignatureError::new)?;
        let mut out = time.to_be_bytes().to_vec();
        out.extend_from_slice(&key.sign(&Self::message(*time, msg)).to_bytes());
        Ok(out)
    }
}

/// The time a cosignature/v1 line states (the first 8 bytes of its signature).
fn cosignature_time(sig: &signed_note::Signature) -> u64 {
    sig.signature()
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// A witness's cosignature (C2SP tlog-cosignature v1, made at `time`): the checkpoint note with
/// the witness's signature line added. A witness cosigns only a checkpoint it has checked is
/// consistent with the last one it cosigned.
pub fn cosign(
    note: &[u8],
    witness: &SigningKey,
    org_id: &str,
    time: u64,
) -> Result<Vec<u8>, ProtocolError> {
    let mut parsed = Note::from_bytes(note)
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    let s = CosignatureV1 {
        name: witness_key_name(org_id),
        key: witness.verifying_key(),
        signing: Some((witness.clone(), time)),
    };
    parsed
        .add_sigs(&[&s])
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    Ok(parsed.to_bytes())
}

/// One witness's cosignature on a checkpoint, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub witness: String,
    /// When the witness says it cosigned (seconds since the epoch).
    pub time: u64,
    /// The signature line as the note prints it (`— name base64\n`).
    pub line: Vec<u8>,
}

/// Checks a cosigned checkpoint: signed by the hub, and cosigned by the witness `witness_org`
/// at a time no later than `not_after`. Returns the checkpoint body and the witness's line.
pub fn verify_cosignature(
    note: &[u8],
    hub_key: &VerifyingKey,
    hub_id: &str,
    witness_key: &VerifyingKey,
    witness_org: &str,
    not_after: u64,
) -> Result<(Vec<u8>, Cosignature), ProtocolError> {
    let bad = |detail: String| ProtocolError::BadSignature {
        what: "cosigned checkpoint",
        detail,
    };
    let (text, found) = cosignatures(
        note,
        hub_key,
        hub_id,
        &[(witness_org.to_string(), *witness_key)],
    )?;
    let cosig = found
        .into_iter()
        .next()
        .ok_or_else(|| bad(format!("no valid cosignature by witness {witness_org}")))?;
    if cosig.time > not_after {
        return Err(bad(format!(
            "witness {witness_org} dated its cosignature {} s ahead of this clock",
            cosig.time - not_after
        )));
    }
    Ok((text, cosig))
}

/// The valid cosignatures on a checkpoint the hub signed, from the given witnesses (org id and
/// key); lines by anybody else are ignored, as C2SP asks of clients.
pub fn cosignatures(
    note: &[u8],
    hub_key: &VerifyingKey,
    hub_id: &str,
    witnesses: &[(String, VerifyingKey)],
) -> Result<(Vec<u8>, Vec<Cosignature>), ProtocolError> {
    let bad = |detail: String| ProtocolError::BadSignature {
        what: "cosigned checkpoint",
        detail,
    };
    let parsed = Note::from_bytes(note)
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    let hub = StandardVerifier::new(&signed_note::new_ed25519_verifier_key(
        &key_name(hub_id),
        hub_key,
    ))
    .map_err(|e| bad(format!("{e:?}")))?;
    let mut list: Vec<Box<dyn signed_note::Verifier>> = vec![Box::new(hub)];
    for (org, key) in witnesses {
        list.push(Box::new(CosignatureV1 {
            name: witness_key_name(org),
            key: *key,
            signing: None,
        }));
    }
    let (verified, _) = parsed
        .verify(&VerifierList::new(list))
        .map_err(|e| bad(format!("{e:?}")))?;
    let hub_name = key_name(hub_id);
    if !verified.iter().any(|s| s.name() == hub_name) {
        return Err(bad("the hub's signature is missing".into()));
    }
    let found = witnesses
        .iter()
        .filter_map(|(org, _)| {
            let name = witness_key_name(org);
            verified
                .iter()
                .find(|s| s.name() == name)
                .map(|s| Cosignature {
                    witness: org.clone(),
                    time: cosignature_time(s),
                    line: s.to_bytes(),
                })
        })
        .collect();
    Ok((parsed.text().to_vec(), found))
}

/// Adds stored witness signature lines to a checkpoint note.
pub fn with_cosignatures(note: &[u8], lines: &[Vec<u8>]) -> Result<Vec<u8>, ProtocolError> {
    let parsed = Note::from_bytes(note)
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    let mut text = parsed.to_bytes();
    for line in lines {
        // Each stored line is a whole signature line ("— name base64\n"), as the note prints it.
        // An empty line adds nothing (and `windows(0)` would panic: found by fuzzing).
        if !line.is_empty() && !text.windows(line.len()).any(|w| w == line.as_slice()) {
            text.extend_from_slice(line);
        }
    }
    Note::from_bytes(&text)
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    Ok(text)
}

/// A checkpoint whose signature has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The whole signed note, kept as evidence.
    pub note: Vec<u8>,
}

/// Signs a checkpoint for a tree of `size` leaves with root `root`.
pub fn sign_checkpoint(
    region: &str,
    size: u64,
    root: Hash,
    key: &SigningKey,
    hub_id: &str,
) -> Result<Vec<u8>, ProtocolError> {
    let cp = Checkpoint::new(&origin(region), size, root, "")
        .map_err(|_| ProtocolError::malformed("checkpoint", "origin is empty"))?;
    let mut note = Note::new(&cp.to_bytes(), &[])
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    let s = signer(key, &key_name(hub_id))?;
    note.add_sigs(&[&s])
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    Ok(note.to_bytes())
}

/// The size and root a checkpoint note claims, read without checking any signature: for
/// comparing numbers only. [`verify_checkpoint`] is what trusts a checkpoint.
pub fn checkpoint_claims(note: &[u8]) -> Result<(u64, Hash), ProtocolError> {
    let parsed = Note::from_bytes(note)
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    let cp = Checkpoint::from_bytes(parsed.text())
        .map_err(|_| ProtocolError::malformed("checkpoint", "not a tlog checkpoint"))?;
    Ok((cp.size(), *cp.hash()))
}

/// Verifies a checkpoint note: signed by the hub's key, for this region's log.
pub fn verify_checkpoint(
    note: &[u8],
    region: &str,
    hub_key: &VerifyingKey,
    hub_id: &str,
) -> Result<VerifiedCheckpoint, ProtocolError> {
    let bad = |detail: String| ProtocolError::BadSignature {
        what: "checkpoint",
        detail,
    };
    let parsed = Note::from_bytes(note)
        .map_err(|e| ProtocolError::malformed("checkpoint", format!("{e:?}")))?;
    let vkey = signed_note::new_ed25519_verifier_key(&key_name(hub_id), hub_key);
    let verifier = StandardVerifier::new(&vkey).map_err(|e| bad(format!("{e:?}")))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| bad(format!("not signed by the hub's key: {e:?}")))?;
    let cp = Checkpoint::from_bytes(parsed.text())
        .map_err(|_| ProtocolError::malformed("checkpoint", "not a tlog checkpoint"))?;
    if cp.origin() != origin(region) {
        return Err(ProtocolError::malformed(
            "checkpoint",
            format!(
                "origin {:?} is not this region's log {:?}",
                cp.origin(),
                origin(region)
            ),
        ));
    }
    Ok(VerifiedCheckpoint {
        size: cp.size(),
        root: *cp.hash(),
        note: note.to_vec(),
    })
}

/// Checks that the leaf at `index` is in the tree of `size` leaves with root `root`.
pub fn check_inclusion(
    proof: &RecordProof,
    size: u64,
    root: Hash,
    index: u64,
    leaf: Hash,
) -> Result<(), ProtocolError> {
    tlog_tiles::check_record(proof, size, root, index, leaf).map_err(|e| {
        ProtocolError::Envelope(format!(
            "inclusion proof for entry {index} in a tree of {size} fails: {e:?}"
        ))
    })
}

/// Checks that the tree of `old_size` leaves (root `old_root`) is a prefix of the tree of
/// `new_size` leaves (root `new_root`): the log was only appended to.
pub fn check_consistency(
    proof: &TreeProof,
    new_size: u64,
    new_root: Hash,
    old_size: u64,
    old_root: Hash,
) -> Result<(), ProtocolError> {
    tlog_tiles::check_tree(proof, new_size, new_root, old_size, old_root).map_err(|e| {
        ProtocolError::Envelope(format!(
            "the log of {new_size} entries is not an extension of the log of {old_size} it showed before: {e:?}"
        ))
    })
}

/// Decodes proof hashes as they travel (32 bytes each).
pub fn hashes_from_bytes(list: &[Vec<u8>]) -> Result<Vec<Hash>, ProtocolError> {
    list.iter()
        .map(|b| {
            <[u8; 32]>::try_from(b.as_slice()).map(Hash).map_err(|_| {
                ProtocolError::malformed(
                    "proof",
                    format!("a hash must be 32 bytes, got {}", b.len()),
                )
            })
        })
        .collect()
}

/// An in-memory tree: the stored hashes of every leaf so far. The hub keeps one (and persists
/// the hashes); tests and `log audit` rebuild one from the entries.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    hashes: Vec<Hash>,
    size: u64,
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.hashes
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl MemoryTree {
    /// Starts from stored hashes (in stored-hash order) for a tree of `size` leaves.
    pub fn from_stored(hashes: Vec<Hash>, size: u64) -> Self {
        MemoryTree { hashes, size }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Extends the tree to `size` leaves with stored hashes another process wrote (the hashes
    /// after the ones this tree holds, in index order).
    pub fn catch_up(&mut self, more: Vec<Hash>, size: u64) -> Result<(), ProtocolError> {
        let expected = stored_hash_count(size);
        if size < self.size || self.hashes.len() as u64 + more.len() as u64 != expected {
            return Err(ProtocolError::Envelope(format!(
                "the stored log does not extend this one: {} + {} hashes for a tree of {size} \
                 (which has {expected})",
                self.hashes.len(),
                more.len()
            )));
        }
        self.hashes.extend(more);
        self.size = size;
        Ok(())
    }

    /// Goes back to `size` leaves (no further than it holds): what was appended after that is
    /// forgotten. For a round whose commit failed.
    pub fn truncate(&mut self, size: u64) {
        if size < self.size {
            self.hashes.truncate(stored_hash_count(size) as usize);
            self.size = size;
        }
    }

    /// Appends a leaf; returns the stored hashes it added (to persist).
    pub fn append(&mut self, leaf: Hash) -> Result<Vec<Hash>, ProtocolError> {
        let added = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf, self)
            .map_err(|e| ProtocolError::Envelope(format!("log append failed: {e:?}")))?;
        self.hashes.extend_from_slice(&added);
        self.size += 1;
        Ok(added)
    }

    pub fn root(&self) -> Result<Hash, ProtocolError> {
        tlog_tiles::tree_hash(self.size, self)
            .map_err(|e| ProtocolError::Envelope(format!("{e:?}")))
    }

    pub fn root_at(&self, size: u64) -> Result<Hash, ProtocolError> {
        tlog_tiles::tree_hash(size, self).map_err(|e| ProtocolError::Envelope(format!("{e:?}")))
    }

    pub fn inclusion(&self, index: u64, size: u64) -> Result<RecordProof, ProtocolError> {
        tlog_tiles::prove_record(size, index, self)
            .map_err(|e| ProtocolError::Envelope(format!("{e:?}")))
    }

    pub fn consistency(&self, old_size: u64, new_size: u64) -> Result<TreeProof, ProtocolError> {
        tlog_tiles::prove_tree(new_size, old_size, self)
            .map_err(|e| ProtocolError::Envelope(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::generate_signing_key;
    use proptest::prelude::*;

    fn hex32(s: &str) -> Hash {
        Hash(hex::decode(s).unwrap().try_into().unwrap())
    }

    /// The leaves and roots of the RFC 6962 test tree (certificate-transparency-go
    /// merkle/testonly), where leaf i is the i-th input below.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn rfc_tree(n: usize) -> MemoryTree {
        let mut t = MemoryTree::default();
        for leaf in &LEAVES[..n] {
            t.append(record_hash(&hex::decode(leaf).unwrap())).unwrap();
        }
        t
    }

    #[test]
    fn a_truncated_tree_is_the_tree_it_was_and_grows_again_the_same_way() {
        for (from, to) in [(3usize, 8usize), (0, 5), (4, 4), (7, 8)] {
            let mut t = rfc_tree(to);
            t.truncate(from as u64);
            assert_eq!(t.size(), from as u64);
            assert_eq!(
                t.root().unwrap(),
                rfc_tree(from).root().unwrap(),
                "{from} of {to}"
            );
            for leaf in &LEAVES[from..to] {
                t.append(record_hash(&hex::decode(leaf).unwrap())).unwrap();
            }
            assert_eq!(
                t.root().unwrap(),
                rfc_tree(to).root().unwrap(),
                "{from} to {to}"
            );
        }
        let mut t = rfc_tree(3);
        t.truncate(5);
        assert_eq!(t.size(), 3, "a tree is never truncated upwards");
    }

    #[test]
    fn roots_match_the_rfc6962_test_vectors() {
        for n in 1..=8 {
            assert_eq!(
                rfc_tree(n).root().unwrap(),
                hex32(ROOTS[n - 1]),
                "tree of {n}"
            );
        }
        assert_eq!(
            MemoryTree::default().root().unwrap(),
            tlog_tiles::tlog::EMPTY_HASH
        );
    }

    #[test]
    fn inclusion_proof_of_leaf_0_in_the_tree_of_8_matches_the_vector() {
        // From the same test data: the audit path of leaf 0 in the tree of 8.
        let t = rfc_tree(8);
        let proof = t.inclusion(0, 8).unwrap();
        let expected = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, expected.map(hex32).to_vec());
        let leaf = record_hash(&hex::decode(LEAVES[0]).unwrap());
        check_inclusion(&proof, 8, t.root().unwrap(), 0, leaf).unwrap();
        assert!(check_inclusion(&proof, 8, t.root().unwrap(), 1, leaf).is_err());
    }

    #[test]
    fn consistency_proof_from_1_to_8_matches_the_vector() {
        let t = rfc_tree(8);
        let proof = t.consistency(1, 8).unwrap();
        let expected = [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ];
        assert_eq!(proof, expected.map(hex32).to_vec());
        check_consistency(&proof, 8, t.root().unwrap(), 1, hex32(ROOTS[0])).unwrap();
    }

    #[test]
    fn checkpoints_are_signed_notes_checked_against_the_hub_key() {
        let key = generate_signing_key();
        let t = rfc_tree(5);
        let note = sign_checkpoint("ijssel-vecht", 5, t.root().unwrap(), &key, "HUB").unwrap();
        let text = String::from_utf8(note.clone()).unwrap();
        assert!(text.starts_with("overstap/ijssel-vecht\n5\n"), "{text}");
        assert!(text.contains("\u{2014} overstap-hub-HUB "), "{text}");
        let cp = verify_checkpoint(&note, "ijssel-vecht", &key.verifying_key(), "HUB").unwrap();
        assert_eq!((cp.size, cp.root), (5, t.root().unwrap()));
        assert!(
            verify_checkpoint(
                &note,
                "ijssel-vecht",
                &generate_signing_key().verifying_key(),
                "HUB"
            )
            .is_err()
        );
        assert!(verify_checkpoint(&note, "elders", &key.verifying_key(), "HUB").is_err());
        let forged = text.replacen("\n5\n", "\n6\n", 1).into_bytes();
        assert!(verify_checkpoint(&forged, "ijssel-vecht", &key.verifying_key(), "HUB").is_err());
    }

    #[test]
    fn a_witness_cosignature_is_added_checked_and_merged() {
        let hub = generate_signing_key();
        let witness = generate_signing_key();
        let t = rfc_tree(3);
        let note = sign_checkpoint("r", 3, t.root().unwrap(), &hub, "HUB").unwrap();
        let cosigned = cosign(&note, &witness, "RMC1", 1_700_000_000).unwrap();
        let check = |note: &[u8], key: &SigningKey, not_after: u64| {
            verify_cosignature(
                note,
                &hub.verifying_key(),
                "HUB",
                &key.verifying_key(),
                "RMC1",
                not_after,
            )
        };
        let (text, cosig) = check(&cosigned, &witness, 1_700_000_000).unwrap();
        assert_eq!(cosig.time, 1_700_000_000);
        assert!(
            String::from_utf8(cosig.line.clone())
                .unwrap()
                .starts_with("\u{2014} overstap-witness-RMC1 ")
        );
        assert!(note.starts_with(&text));
        let merged = with_cosignatures(&note, std::slice::from_ref(&cosig.line)).unwrap();
        assert_eq!(merged, cosigned);
        assert_eq!(
            with_cosignatures(&merged, &[cosig.line]).unwrap(),
            merged,
            "no line twice"
        );
        // Still a valid checkpoint for anyone who only knows the hub's key.
        assert_eq!(
            verify_checkpoint(&merged, "r", &hub.verifying_key(), "HUB")
                .unwrap()
                .size,
            3
        );
        assert!(check(&cosigned, &generate_signing_key(), 1_700_000_000).is_err());
        let early = check(&cosigned, &witness, 1_699_999_000).unwrap_err();
        assert!(early.to_string().contains("1000 s ahead"), "{early}");
        // A plain note signature by the witness key is not a cosignature/v1.
        let plain = {
            let mut n = Note::from_bytes(&note).unwrap();
            n.add_sigs(&[&signer(&witness, &witness_key_name("RMC1")).unwrap()])
                .unwrap();
            n.to_bytes()
        };
        assert!(check(&plain, &witness, u64::MAX).is_err());
    }

    /// The C2SP tlog-cosignature v1 wire format, byte for byte: key id over name, newline, 0x04
    /// and the key; signature = timestamp (u64 BE) || Ed25519 over the header lines and body.
    #[test]
    fn cosignatures_follow_the_c2sp_cosignature_v1_format() {
        use base64::Engine;
        use ed25519_dalek::Verifier as _;
        use sha2::{Digest, Sha256};
        let hub = generate_signing_key();
        let witness = generate_signing_key();
        let note = sign_checkpoint("r", 3, rfc_tree(3).root().unwrap(), &hub, "HUB").unwrap();
        let cosigned = cosign(&note, &witness, "RMC1", 1_679_315_147).unwrap();
        let text = String::from_utf8(cosigned).unwrap();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("\u{2014} overstap-witness-RMC1 "))
            .unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(line)
            .unwrap();
        assert_eq!(raw.len(), 4 + 8 + 64);
        let mut id_input = b"overstap-witness-RMC1\n\x04".to_vec();
        id_input.extend_from_slice(witness.verifying_key().as_bytes());
        assert_eq!(raw[..4], Sha256::digest(&id_input)[..4]);
        assert_eq!(raw[4..12], 1_679_315_147u64.to_be_bytes());
        let body = text.split("\n\n").next().unwrap();
        let message = format!("cosignature/v1\ntime 1679315147\n{body}\n");
        let sig = ed25519_dalek::Signature::from_bytes(&raw[12..].try_into().unwrap());
        witness
            .verifying_key()
            .verify(message.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn entry_bytes_hold_no_more_than_the_metadata() {
        let e = LogEntry {
            event: "send".into(),
            envelope_kind: 1,
            from_org: "25LP".into(),
            to_org: "30RT".into(),
            envelope_id: vec![7; 16],
            body_sha256: vec![9; 32],
            at: 1_795_000_000,
        };
        let b = entry_bytes(&e);
        assert_eq!(b.len(), 22 + 4 * 5 + 4 + 4 + 4 + 16 + 32 + 4 + 8);
        let mut other = e.clone();
        other.to_org = "30R".into();
        other.from_org = "T25LP".into();
        assert_ne!(
            leaf_hash(&e),
            leaf_hash(&other),
            "length prefixes keep fields apart"
        );
    }

    proptest! {
        #[test]
        fn inclusion_and_consistency_hold_for_random_trees(n in 1u64..300, a in 0u64..300, b in 0u64..300) {
            let mut t = MemoryTree::default();
            let mut leaves = Vec::new();
            for i in 0..n {
                let leaf = record_hash(&i.to_be_bytes());
                leaves.push(leaf);
                t.append(leaf).unwrap();
            }
            let size = 1 + b % n;
            let index = a % size;
            let root = t.root_at(size).unwrap();
            let proof = t.inclusion(index, size).unwrap();
            prop_assert!(check_inclusion(&proof, size, root, index, leaves[index as usize]).is_ok());
            prop_assert!(check_inclusion(&proof, size, root, index, record_hash(b"other")).is_err());
            let old = 1 + a % size;
            let cproof = t.consistency(old, size).unwrap();
            prop_assert!(check_consistency(&cproof, size, root, old, t.root_at(old).unwrap()).is_ok());
            if old < size {
                prop_assert!(check_consistency(&cproof, size, root, old, record_hash(b"forged")).is_err());
            }
        }
    }

    /// Found by `fuzz/run` (target `checkpoint`): merging an empty cosignature line into a
    /// note panicked. Kept here as the input the fuzzer found.
    #[test]
    fn merging_an_empty_cosignature_line_does_not_panic() {
        let found = b"CC@g=0\n\n\xe2\x80\x94 ov /0kuS0vs\n";
        let _ = with_cosignatures(found, &[Vec::new()]);
        let hub = generate_signing_key();
        let note = sign_checkpoint("r", 1, rfc_tree(1).root().unwrap(), &hub, "HUB").unwrap();
        assert_eq!(with_cosignatures(&note, &[Vec::new()]).unwrap(), note);
    }
}

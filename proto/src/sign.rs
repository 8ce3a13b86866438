//! Domain-separated ed25519 signatures over exact bytes.
//!
//! A `Signed` carries the encoded inner message (`body`) and its signatures. The signed message
//! is `domain tag || 0x00 || body`, where the tag names the kind of object, so a signature made
//! for one kind can never be replayed as another. Verification uses `verify_strict`, which
//! rejects small-order keys and non-canonical signatures.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::ProtocolError;
use crate::pb::{Sig, Signed};

/// The kinds of signed objects, each with its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Directory,
    StudentCard,
    Manifest,
    Grant,
    Revocation,
    DeletionReceipt,
    EnvelopeHeader,
    Payload,
    Receipt,
    DashboardToken,
    /// A student's or guardian's browser signing the node's sign-in challenge: a tag of its
    /// own, so a sign-in signature can never count as a document signature.
    SignIn,
    /// A student's single-use pickup code for one grant (its hash, its end).
    PickupCode,
    /// A member's request to join the region or to rotate its keys.
    MembershipRequest,
}

impl Domain {
    /// The tag prepended to the body before signing.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Directory => b"overstap.v1/directory",
            Domain::StudentCard => b"overstap.v1/student-card",
            Domain::Manifest => b"overstap.v1/manifest",
            Domain::Grant => b"overstap.v1/consent-grant",
            Domain::Revocation => b"overstap.v1/revocation",
            Domain::DeletionReceipt => b"overstap.v1/deletion-receipt",
            Domain::EnvelopeHeader => b"overstap.v1/envelope-header",
            Domain::Payload => b"overstap.v1/payload",
            Domain::Receipt => b"overstap.v1/receipt",
            Domain::DashboardToken => b"overstap.v1/dashboard-token",
            Domain::SignIn => b"overstap.v1/sign-in",
            Domain::PickupCode => b"overstap.v1/pickup-code",
            Domain::MembershipRequest => b"overstap.v1/membership-request",
        }
    }

    /// A name for error messages.
    pub fn what(self) -> &'static str {
        match self {
            Domain::Directory => "directory",
            Domain::StudentCard => "student card",
            Domain::Manifest => "passport manifest",
            Domain::Grant => "consent grant",
            Domain::Revocation => "revocation",
            Domain::DeletionReceipt => "deletion receipt",
            Domain::EnvelopeHeader => "envelope header",
            Domain::Payload => "payload",
            Domain::Receipt => "receipt",
            Domain::DashboardToken => "dashboard token",
            Domain::SignIn => "sign-in challenge",
            Domain::PickupCode => "pickup code",
            Domain::MembershipRequest => "membership request",
        }
    }
}

/// The exact bytes a signature covers: `tag || 0x00 || body`.
pub fn signing_bytes(domain: Domain, body: &[u8]) -> Vec<u8> {
    let tag = domain.tag();
    let mut out = Vec::with_capacity(tag.len() + 1 + body.len());
    out.extend_from_slice(tag);
    out.push(0);
    out.extend_from_slice(body);
    out
}

/// Makes a fresh ed25519 key from the operating system's randomness.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// Parses a 32-byte ed25519 public key.
pub fn verifying_key(bytes: &[u8], what: &'static str) -> Result<VerifyingKey, ProtocolError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| ProtocolError::Malformed {
        what,
        detail: format!("public key must be 32 bytes, got {}", bytes.len()),
    })?;
    VerifyingKey::from_bytes(&arr).map_err(|e| ProtocolError::malformed(what, e))
}

/// Encodes `msg` and signs it with each of `keys`.
pub fn sign_message<M: Message>(domain: Domain, msg: &M, keys: &[&SigningKey]) -> Signed {
    let body = msg.encode_to_vec();
    let mut signed = Signed {
        body,
        sigs: Vec::new(),
    };
    for key in keys {
        add_signature(domain, &mut signed, key);
    }
    signed
}

/// Adds one more signature over the same body (a guardian's co-signature, for example).
pub fn add_signature(domain: Domain, signed: &mut Signed, key: &SigningKey) {
    let sig = key.sign(&signing_bytes(domain, &signed.body));
    signed.sigs.push(Sig {
        public_key: key.verifying_key().to_bytes().to_vec(),
        signature: sig.to_bytes().to_vec(),
    });
}

/// Checks that `key` signed `signed` (strictly); other signatures are ignored here.
pub fn verify_signed_by(
    domain: Domain,
    signed: &Signed,
    key: &VerifyingKey,
) -> Result<(), ProtocolError> {
    verify_signed_by_in(None, domain, signed, key)
}

/// [`verify_signed_by`], remembered in `memory`: a signature that verified is kept by the
/// SHA-256 of domain, key, signature and body (the whole input of the check), so the same
/// party does not check the same bytes twice.
pub fn verify_signed_by_in(
    memory: Option<&Memory>,
    domain: Domain,
    signed: &Signed,
    key: &VerifyingKey,
) -> Result<(), ProtocolError> {
    let key_bytes = key.as_bytes();
    let sig = signed
        .sigs
        .iter()
        .find(|s| s.public_key.as_slice() == key_bytes.as_slice())
        .ok_or_else(|| ProtocolError::MissingSignature {
            what: domain.what(),
            detail: format!("no signature by key {}", short_key(key_bytes)),
        })?;
    let sig_arr: [u8; 64] =
        sig.signature
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::BadSignature {
                what: domain.what(),
                detail: format!("signature must be 64 bytes, got {}", sig.signature.len()),
            })?;
    let remembered = memory.map(|m| {
        let mut h = Sha256::new();
        h.update(domain.tag());
        h.update([0]);
        h.update(key_bytes);
        h.update(sig_arr);
        h.update(&signed.body);
        (m, <[u8; 32]>::from(h.finalize()))
    });
    if let Some((m, id)) = &remembered
        && m.signatures.get(id).is_some()
    {
        return Ok(());
    }
    key.verify_strict(
        &signing_bytes(domain, &signed.body),
        &Signature::from_bytes(&sig_arr),
    )
    .map_err(|_| ProtocolError::BadSignature {
        what: domain.what(),
        detail: format!("signature by key {} does not verify", short_key(key_bytes)),
    })?;
    if let Some((m, id)) = remembered {
        m.signatures.keep(id, ());
    }
    Ok(())
}

/// What one party has checked and found good, for checks that are pure functions of their
/// input: signatures, and student cards under a home key. A manifest, a grant and a card travel
/// in every package and are checked at several steps inside one node; the answer is kept by the
/// SHA-256 of everything the check read, so other bytes, another key or another domain are
/// checked in full. Each party (a node) holds its own memory: a check another party made, even
/// in the same process, counts for nothing here. Bounded; emptied when full.
pub struct Memory {
    signatures: Remembered<()>,
    pub(crate) cards: Remembered<crate::pb::StudentCard>,
}

impl Memory {
    pub fn new() -> Self {
        Memory {
            signatures: Remembered::new(8_192),
            cards: Remembered::new(4_096),
        }
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memory")
    }
}

/// Answers of a check kept by the SHA-256 of everything the check read; at most `max`, and
/// emptied when full. Only for checks that are pure functions of what is hashed.
pub(crate) struct Remembered<V> {
    max: usize,
    answers: std::sync::Mutex<std::collections::HashMap<[u8; 32], V>>,
}

impl<V: Clone> Remembered<V> {
    pub(crate) fn new(max: usize) -> Self {
        Remembered {
            max,
            answers: Default::default(),
        }
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], V>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.answers().len()
    }

    pub(crate) fn get(&self, id: &[u8; 32]) -> Option<V> {
        self.answers().get(id).cloned()
    }

    pub(crate) fn keep(&self, id: [u8; 32], answer: V) {
        let mut answers = self.answers();
        if answers.len() >= self.max {
            answers.clear();
        }
        answers.insert(id, answer);
    }
}

/// Verifies the signature by `key`, then decodes the body as `M`.
pub fn open_signed<M: Message + Default>(
    domain: Domain,
    signed: &Signed,
    key: &VerifyingKey,
) -> Result<M, ProtocolError> {
    verify_signed_by(domain, signed, key)?;
    decode_body(domain, signed)
}

/// Decodes the body without checking any signature; only for reading who claims to have signed.
pub fn decode_body<M: Message + Default>(
    domain: Domain,
    signed: &Signed,
) -> Result<M, ProtocolError> {
    M::decode(signed.body.as_slice()).map_err(|e| ProtocolError::malformed(domain.what(), e))
}

/// The first eight hex digits of a key, for messages and logs.
pub fn short_key(key: &[u8]) -> String {
    hex::encode(&key[..key.len().min(4)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::Revocation;

    fn revocation() -> Revocation {
        Revocation {
            grant_id: "g1".into(),
            pseudonym: "p1".into(),
            revoked_at: 1_700_000_000,
        }
    }

    #[test]
    fn signed_message_verifies_and_decodes() {
        let key = generate_signing_key();
        let signed = sign_message(Domain::Revocation, &revocation(), &[&key]);
        let back: Revocation =
            open_signed(Domain::Revocation, &signed, &key.verifying_key()).unwrap();
        assert_eq!(back, revocation());
    }

    #[test]
    fn a_remembered_signature_counts_only_for_the_same_key_signature_body_and_domain() {
        let (key, other) = (generate_signing_key(), generate_signing_key());
        let signed = sign_message(Domain::Grant, &revocation(), &[&key]);
        let memory = Memory::new();
        for _ in 0..2 {
            verify_signed_by_in(Some(&memory), Domain::Grant, &signed, &key.verifying_key())
                .unwrap();
        }
        assert_eq!(memory.signatures.len(), 1);
        // Once remembered, each change is still checked and refused: the body, the signature,
        // the domain, and a signature claimed under the key by another key.
        let mut body = signed.clone();
        body.body.push(1);
        let mut sig = signed.clone();
        sig.sigs[0].signature[5] ^= 1;
        let mut forged = sign_message(Domain::Grant, &revocation(), &[&other]);
        forged.sigs[0].public_key = key.verifying_key().to_bytes().to_vec();
        for (what, s, d) in [
            ("body", &body, Domain::Grant),
            ("signature", &sig, Domain::Grant),
            ("domain", &signed, Domain::Manifest),
            ("signer", &forged, Domain::Grant),
        ] {
            assert!(
                verify_signed_by_in(Some(&memory), d, s, &key.verifying_key()).is_err(),
                "{what}"
            );
        }
    }

    #[test]
    fn signature_for_one_domain_does_not_verify_in_another() {
        let key = generate_signing_key();
        let signed = sign_message(Domain::Revocation, &revocation(), &[&key]);
        let err = verify_signed_by(Domain::Grant, &signed, &key.verifying_key()).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn tampered_body_is_refused() {
        let key = generate_signing_key();
        let mut signed = sign_message(Domain::Revocation, &revocation(), &[&key]);
        let last = signed.body.len() - 1;
        signed.body[last] ^= 1;
        assert!(matches!(
            verify_signed_by(Domain::Revocation, &signed, &key.verifying_key()),
            Err(ProtocolError::BadSignature { .. })
        ));
    }

    #[test]
    fn missing_signer_is_named() {
        let key = generate_signing_key();
        let other = generate_signing_key();
        let signed = sign_message(Domain::Revocation, &revocation(), &[&key]);
        let err =
            verify_signed_by(Domain::Revocation, &signed, &other.verifying_key()).unwrap_err();
        assert!(matches!(err, ProtocolError::MissingSignature { .. }));
    }

    #[test]
    fn domain_tags_are_distinct() {
        let all = [
            Domain::Directory,
            Domain::StudentCard,
            Domain::Manifest,
            Domain::Grant,
            Domain::Revocation,
            Domain::DeletionReceipt,
            Domain::EnvelopeHeader,
            Domain::Payload,
            Domain::Receipt,
            Domain::DashboardToken,
            Domain::SignIn,
            Domain::PickupCode,
            Domain::MembershipRequest,
        ];
        // Every variant is listed: adding one without a tag of its own fails to compile here.
        for d in all {
            match d {
                Domain::Directory
                | Domain::StudentCard
                | Domain::Manifest
                | Domain::Grant
                | Domain::Revocation
                | Domain::DeletionReceipt
                | Domain::EnvelopeHeader
                | Domain::Payload
                | Domain::Receipt
                | Domain::DashboardToken
                | Domain::SignIn
                | Domain::PickupCode
                | Domain::MembershipRequest => {}
            }
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.tag(), b.tag());
            }
        }
    }

    #[test]
    fn small_order_key_is_refused_by_verify_strict() {
        // The identity point: a weak key that plain `verify` would accept for crafted signatures.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = VerifyingKey::from_bytes(&identity).unwrap();
        let signed = Signed {
            body: b"x".to_vec(),
            sigs: vec![Sig {
                public_key: identity.to_vec(),
                signature: {
                    let mut s = [0u8; 64];
                    s[0] = 1;
                    s.to_vec()
                },
            }],
        };
        assert!(verify_signed_by(Domain::Receipt, &signed, &key).is_err());
    }
}

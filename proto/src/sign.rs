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

/// [`verifying_key`], each key's point decompressed once per memory: a card's keys are parsed
/// again at every check of what they signed. Kept by the key's own bytes.
pub fn verifying_key_in(
    memory: Option<&Memory>,
    bytes: &[u8],
    what: &'static str,
) -> Result<VerifyingKey, ProtocolError> {
    let (Some(m), Ok(id)) = (memory, <[u8; 32]>::try_from(bytes)) else {
        return verifying_key(bytes, what);
    };
    if let Some(key) = m.keys.get(&id) {
        return Ok(key);
    }
    let key = verifying_key(bytes, what)?;
    m.keys.keep(id, key);
    Ok(key)
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
    if let Some((m, id)) = &remembered
        && let Some(batch) = &m.batch
    {
        // Taken on trust until `settle`, which checks it with the others.
        batch.take(*id, *key, signing_bytes(domain, &signed.body), sig_arr);
        m.signatures.keep(*id, ());
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
    /// Keys by their bytes, decompressed (a pure function of the bytes, so any memory may).
    keys: Remembered<VerifyingKey>,
    /// Only in a memory for a batch: the signatures taken on trust until `settle`.
    batch: Option<Batch>,
}

impl Memory {
    pub fn new() -> Self {
        Memory {
            signatures: Remembered::new(8_192),
            cards: Remembered::new(4_096),
            keys: Remembered::new(4_096),
            batch: None,
        }
    }

    /// A memory for checking many signatures at once. Every check made through it answers yes
    /// and notes the signature; nothing it answered may be kept or acted on until [`settle`]
    /// has checked them all in one `verify_batch` and said yes. When `settle` says no, the
    /// work is undone and done again with a plain memory, one strict check at a time, which
    /// finds the bad signature and says which it is.
    ///
    /// `settle` refuses what `verify_strict` refuses besides its equation (a key or an R of
    /// small order, an R or s not in canonical form) before the batch equation: the one
    /// difference left is the equation itself. A batch checks `R = sB − kA` without the cofactor
    /// and with random weights, so a signature whose R or key has a component of small order
    /// (only the key's holder can make one) may pass a batch that `verify_strict` alone would
    /// refuse; an honest signer's signature passes or fails both alike.
    ///
    /// [`settle`]: Memory::settle
    pub fn for_batch() -> Self {
        Memory {
            batch: Some(Batch::default()),
            ..Memory::new()
        }
    }

    /// Checks every signature taken on trust since the last settle, in one batch. On yes, what
    /// this memory holds is true, and is kept in `into` (the party's own memory) as well.
    pub fn settle(&self, into: &Memory) -> Result<(), ProtocolError> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        let taken = std::mem::take(&mut *batch.lock());
        let refused = || ProtocolError::BadSignature {
            what: "batch",
            detail: format!(
                "of {} signatures checked together, at least one does not verify",
                taken.len()
            ),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let holds = taken.iter().all(Taken::strict_form) && {
            let messages: Vec<&[u8]> = taken.iter().map(|t| t.message.as_slice()).collect();
            let signatures: Vec<Signature> = taken
                .iter()
                .map(|t| Signature::from_bytes(&t.signature))
                .collect();
            let keys: Vec<VerifyingKey> = taken.iter().map(|t| t.key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        };
        if !holds {
            // Nothing taken on trust stays: checked again, each is checked for real.
            self.signatures.clear();
            self.cards.clear();
            return Err(refused());
        }
        for t in &taken {
            into.signatures.keep(t.id, ());
        }
        for (id, card) in self.cards.answers().iter() {
            into.cards.keep(*id, card.clone());
        }
        Ok(())
    }
}

impl Memory {
    /// Checks `checks` (each a domain, a signed object and the key that must have signed it)
    /// together in one batch, and keeps those that hold in this memory, so that each one's own
    /// check later finds it. A check that cannot be made (no signature by the key, one of the
    /// wrong length) is left to that own check; so is every one when the batch does not hold.
    pub fn check_together<'a>(
        &self,
        checks: impl IntoIterator<Item = (Domain, &'a Signed, VerifyingKey)>,
    ) -> Result<(), ProtocolError> {
        let batch = Memory::for_batch();
        for (domain, signed, key) in checks {
            // Taken on trust until the batch is settled just below.
            let _ = verify_signed_by_in(Some(&batch), domain, signed, &key);
        }
        batch.settle(self)
    }
}

/// Signatures a memory for a batch took on trust.
#[derive(Default)]
struct Batch(std::sync::Mutex<Vec<Taken>>);

struct Taken {
    id: [u8; 32],
    key: VerifyingKey,
    message: Vec<u8>,
    signature: [u8; 64],
}

impl Batch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Taken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    // Never inlined, so that `cli/bench/scripts/instructions` can count its calls.
    #[inline(never)]
    fn take(&self, id: [u8; 32], key: VerifyingKey, message: Vec<u8>, signature: [u8; 64]) {
        self.lock().push(Taken {
            id,
            key,
            message,
            signature,
        });
    }
}

impl Taken {
    /// What `verify_strict` refuses besides its equation: a key of small order, an R whose y is
    /// not reduced (it compares R's encoding), an R of small order. (`verify_batch` refuses an
    /// s that is not reduced, and an R that is no point.) Byte comparisons, no curve arithmetic.
    fn strict_form(&self) -> bool {
        let r: [u8; 32] = self.signature[..32].try_into().expect("64 bytes");
        !self.key.is_weak() && y_is_reduced(&r) && !small_order_ys().contains(&y_of(&r))
    }
}

/// The y coordinate of an encoded point: the encoding without x's sign bit.
fn y_of(encoded: &[u8; 32]) -> [u8; 32] {
    let mut y = *encoded;
    y[31] &= 0x7f;
    y
}

/// Whether the y of an encoded point is below p = 2^255 − 19 (the only y that encodes
/// canonically).
fn y_is_reduced(encoded: &[u8; 32]) -> bool {
    let y = y_of(encoded);
    // y ≥ p exactly when y = 2^255 − 19 + k for k in 0..19: bytes ed..ff, ff × 30, 7f.
    !(y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed)
}

/// The y of each of the eight points of small order: a point whose (reduced) y is one of these
/// is of small order whatever x's sign, as the negation of one is one too.
fn small_order_ys() -> &'static [[u8; 32]] {
    static YS: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    YS.get_or_init(|| {
        curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| y_of(&p.compress().to_bytes()))
            .collect()
    })
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

    fn clear(&self) {
        self.answers().clear();
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
    open_signed_in(None, domain, signed, key)
}

/// [`open_signed`], checked through `memory` ([`verify_signed_by_in`]).
pub fn open_signed_in<M: Message + Default>(
    memory: Option<&Memory>,
    domain: Domain,
    signed: &Signed,
    key: &VerifyingKey,
) -> Result<M, ProtocolError> {
    verify_signed_by_in(memory, domain, signed, key)?;
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
        let (signed, key) = by_the_identity();
        assert!(verify_signed_by(Domain::Receipt, &signed, &key).is_err());
    }

    /// The identity point as a key (a weak key that plain `verify` would accept for crafted
    /// signatures), with R the identity and s zero: the equation holds for any message.
    fn by_the_identity() -> (Signed, VerifyingKey) {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut signature = [0u8; 64];
        signature[0] = 1;
        let signed = Signed {
            body: b"x".to_vec(),
            sigs: vec![Sig {
                public_key: identity.to_vec(),
                signature: signature.to_vec(),
            }],
        };
        (signed, VerifyingKey::from_bytes(&identity).unwrap())
    }

    /// A signature by `key` over `body` whose R is the point encoded as `r` (one of small order,
    /// say): s = k·a, so that the equation R = sB − kA holds exactly when R is the identity.
    fn signed_with_r(key: &SigningKey, body: &[u8], r: [u8; 32]) -> Signed {
        use sha2::Sha512;
        let a = key.verifying_key().to_bytes();
        let mut h = Sha512::new();
        h.update(r);
        h.update(a);
        h.update(signing_bytes(Domain::Receipt, body));
        let k = curve25519_dalek::Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let s = k * key.to_scalar();
        let mut signature = r.to_vec();
        signature.extend_from_slice(s.as_bytes());
        Signed {
            body: body.to_vec(),
            sigs: vec![Sig {
                public_key: a.to_vec(),
                signature,
            }],
        }
    }

    #[test]
    fn signatures_checked_together_count_only_once_the_batch_settles() {
        let keys: Vec<SigningKey> = (0..5).map(|_| generate_signing_key()).collect();
        let signed: Vec<(Signed, VerifyingKey)> = (0..20)
            .map(|i| {
                let key = &keys[i % keys.len()];
                let r = Revocation {
                    grant_id: format!("g{i}"),
                    ..revocation()
                };
                (
                    sign_message(Domain::Revocation, &r, &[key]),
                    key.verifying_key(),
                )
            })
            .collect();
        let mine = Memory::new();
        let batch = Memory::for_batch();
        for (s, k) in &signed {
            verify_signed_by_in(Some(&batch), Domain::Revocation, s, k).unwrap();
        }
        assert_eq!(
            mine.signatures.len(),
            0,
            "nothing counts before the batch settles"
        );
        batch.settle(&mine).unwrap();
        assert_eq!(mine.signatures.len(), 20, "all of them count once it has");

        // One body changed after signing: every check answers yes, and the batch says no.
        let mut bad = signed.clone();
        bad[7].0.body.push(0);
        let batch = Memory::for_batch();
        for (s, k) in &bad {
            verify_signed_by_in(Some(&batch), Domain::Revocation, s, k).unwrap();
        }
        let mine = Memory::new();
        let e = batch.settle(&mine).unwrap_err();
        assert!(
            e.to_string().contains("of 20 signatures checked together"),
            "{e}"
        );
        assert_eq!(
            mine.signatures.len(),
            0,
            "nothing of a failed batch is kept"
        );
        assert_eq!(batch.signatures.len(), 0, "nor trusted in the batch itself");
        // Checked alone, the bad one is found, and only it.
        let alone: Vec<bool> = bad
            .iter()
            .map(|(s, k)| verify_signed_by(Domain::Revocation, s, k).is_ok())
            .collect();
        assert_eq!(alone.iter().filter(|ok| !**ok).count(), 1);
        assert!(!alone[7]);
    }

    #[test]
    fn a_batch_refuses_what_verify_strict_refuses_where_the_equation_holds() {
        let key = generate_signing_key();
        let good = sign_message(Domain::Receipt, &revocation(), &[&key]);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // The identity again, its y written as p + 1: not reduced.
        let mut unreduced = [0xffu8; 32];
        unreduced[0] = 0xee;
        unreduced[31] = 0x7f;
        assert!(!y_is_reduced(&unreduced));
        let mut p_minus_one = unreduced;
        p_minus_one[0] = 0xec;
        assert!(y_is_reduced(&p_minus_one) && y_is_reduced(&identity));
        let (by_weak_key, weak) = by_the_identity();
        let vk = key.verifying_key();
        let cases = [
            ("a key of small order", by_weak_key, weak),
            (
                "an R of small order",
                signed_with_r(&key, b"x", identity),
                vk,
            ),
            ("an R not reduced", signed_with_r(&key, b"x", unreduced), vk),
        ];
        for (what, bad, k) in cases {
            assert!(
                verify_signed_by(Domain::Receipt, &bad, &k).is_err(),
                "{what}: verify_strict refuses it"
            );
            // What the batch equation alone says: yes, which is why the form is checked first.
            let message = signing_bytes(Domain::Receipt, &bad.body);
            let sig = Signature::from_bytes(&bad.sigs[0].signature.clone().try_into().unwrap());
            assert!(
                ed25519_dalek::verify_batch(&[&message], &[sig], &[k]).is_ok(),
                "{what}: the equation holds"
            );
            let batch = Memory::for_batch();
            verify_signed_by_in(Some(&batch), Domain::Receipt, &good, &vk).unwrap();
            verify_signed_by_in(Some(&batch), Domain::Receipt, &bad, &k).unwrap();
            assert!(
                batch.settle(&Memory::new()).is_err(),
                "{what}: the batch refuses it"
            );
        }
    }

    #[test]
    fn a_key_is_decompressed_once_per_memory_and_a_bad_one_never_kept() {
        let m = Memory::new();
        let bytes = generate_signing_key().verifying_key().to_bytes();
        let first = verifying_key_in(Some(&m), &bytes, "student key").unwrap();
        let again = verifying_key_in(Some(&m), &bytes, "student key").unwrap();
        assert_eq!((first, m.keys.len()), (again, 1));
        assert_eq!(first, verifying_key(&bytes, "student key").unwrap());
        // Not a point, and too short: the same errors as without a memory, and nothing kept.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        for bad in [&not_a_point[..], &bytes[..31]] {
            let e = verifying_key_in(Some(&m), bad, "student key").unwrap_err();
            assert_eq!(
                e.to_string(),
                verifying_key(bad, "student key").unwrap_err().to_string()
            );
        }
        assert_eq!(m.keys.len(), 1);
    }
}

//! Envelopes: a header the hub can read (org ids, sizes, times, hashes) signed by the sending
//! node, and a body sealed with HPKE (RFC 9180, X25519-HKDF-SHA256, HKDF-SHA256,
//! ChaCha20-Poly1305) to the recipient node's key, with the header's routing fields as
//! associated data. Inside the body is a payload signed by the sending node that names the
//! recipient org and the purpose again, so a recipient cannot forward it as addressed to
//! someone else.

use ed25519_dalek::SigningKey;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::directory::VerifiedDirectory;
use crate::pb::{Envelope, EnvelopeHeader, EnvelopeKind, Member, Payload, Signed};
use crate::sign::{Domain, decode_body, open_signed, sign_message};
use crate::{ProtocolError, UnixTime};

const HPKE_INFO: &[u8] = b"overstap.v1/envelope-body";
const ENC_LEN: usize = 32;

type KemT = X25519HkdfSha256;

/// The operating system's randomness, in the rand_core version hpke takes.
fn hpke_rng() -> rand_core_09::UnwrapErr<rand_core_09::OsRng> {
    rand_core_09::UnwrapErr(rand_core_09::OsRng)
}

/// An X25519 key pair for receiving envelopes.
#[derive(Clone)]
pub struct EncryptionKeyPair {
    pub secret: [u8; 32],
    pub public: [u8; 32],
}

impl std::fmt::Debug for EncryptionKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKeyPair")
            .field("public", &hex::encode(self.public))
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl EncryptionKeyPair {
    pub fn generate() -> Self {
        let (sk, pk) = KemT::gen_keypair(&mut hpke_rng());
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&sk.to_bytes());
        let mut public = [0u8; 32];
        public.copy_from_slice(&pk.to_bytes());
        EncryptionKeyPair { secret, public }
    }

    pub fn from_secret(secret: &[u8]) -> Result<Self, ProtocolError> {
        let sk = <KemT as Kem>::PrivateKey::from_bytes(secret)
            .map_err(|e| ProtocolError::malformed("encryption key", e))?;
        let pk = KemT::sk_to_pk(&sk);
        let mut s = [0u8; 32];
        s.copy_from_slice(secret);
        let mut public = [0u8; 32];
        public.copy_from_slice(&pk.to_bytes());
        Ok(EncryptionKeyPair { secret: s, public })
    }

    /// A short key id derived from the public key.
    pub fn key_id(&self) -> String {
        key_id_of(&self.public)
    }
}

/// Key id of an X25519 public key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id_of(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The associated data that binds a ciphertext to its routing: explicit, length-prefixed bytes,
/// so no party depends on how protobuf re-encodes a header.
pub fn header_aad(h: &EnvelopeHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"overstap.v1/envelope-aad\0");
    for field in [
        h.envelope_id.as_slice(),
        h.from_org.as_bytes(),
        h.to_org.as_bytes(),
        h.recipient_key_id.as_bytes(),
    ] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&h.kind.to_be_bytes());
    out.extend_from_slice(&h.created_at.to_be_bytes());
    out
}

/// What a sender puts in an envelope.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub envelope_id: [u8; 16],
    pub from_org: &'a str,
    pub kind: EnvelopeKind,
    pub created_at: UnixTime,
    /// The payload; its `from_org`, `recipient_org` and `envelope_id` are filled in here.
    pub payload: Payload,
}

/// Signs the payload, seals it to `recipient`, and signs the header.
pub fn seal(
    out: Outgoing<'_>,
    sender_key: &SigningKey,
    recipient: &Member,
) -> Result<Envelope, ProtocolError> {
    let mut payload = out.payload.clone();
    payload.from_org = out.from_org.to_string();
    payload.recipient_org = recipient.org_id.clone();
    payload.envelope_id = out.envelope_id.to_vec();
    let signed_payload = sign_message(Domain::Payload, &payload, &[sender_key]);
    seal_with_reason(
        &out,
        &signed_payload,
        sender_key,
        recipient,
        Claims {
            erasure_reason: erasure_reason(&payload),
            about_package: about_package(&payload),
        },
    )
}

/// What a header says about its content, for coordinators: checked against the content by the
/// recipient.
#[derive(Default)]
struct Claims {
    erasure_reason: String,
    about_package: Vec<u8>,
}

/// The statuses of the intake itself, after the recipient took a passport in and read it.
pub const INTAKE_STATUSES: [&str; 3] = ["intake gepland", "gestart", "niet gestart"];

/// What the header of an envelope with this payload says about the package an intake status is
/// about: its envelope id for an intake status, or nothing.
pub fn about_package(payload: &Payload) -> Vec<u8> {
    match &payload.content {
        Some(crate::pb::payload::Content::Status(st))
            if INTAKE_STATUSES.contains(&st.status.as_str()) =>
        {
            st.package_envelope_id.clone()
        }
        _ => Vec::new(),
    }
}

/// What the header of an envelope with this payload says about an erasure: the reason of the
/// deletion receipt it carries, or nothing.
pub fn erasure_reason(payload: &Payload) -> String {
    match &payload.content {
        Some(crate::pb::payload::Content::DeletionReceipt(signed)) => {
            crate::sign::decode_body::<crate::pb::DeletionReceipt>(Domain::DeletionReceipt, signed)
                .map(|r| r.reason)
                .unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// Seals an already signed payload as it is. [`seal`] is the way to send; this exists so tests
/// can build what a dishonest member would (a payload re-sealed to someone else) and check that
/// recipients refuse it.
pub fn seal_signed(
    out: &Outgoing<'_>,
    signed_payload: &Signed,
    sender_key: &SigningKey,
    recipient: &Member,
) -> Result<Envelope, ProtocolError> {
    seal_with_reason(
        out,
        signed_payload,
        sender_key,
        recipient,
        Claims::default(),
    )
}

fn seal_with_reason(
    out: &Outgoing<'_>,
    signed_payload: &Signed,
    sender_key: &SigningKey,
    recipient: &Member,
    claims: Claims,
) -> Result<Envelope, ProtocolError> {
    let mut header = EnvelopeHeader {
        envelope_id: out.envelope_id.to_vec(),
        from_org: out.from_org.to_string(),
        to_org: recipient.org_id.clone(),
        recipient_key_id: recipient.encryption_key_id.clone(),
        kind: out.kind as i32,
        created_at: out.created_at,
        body_len: 0,
        body_sha256: Vec::new(),
        erasure_reason: claims.erasure_reason,
        about_package: claims.about_package,
    };
    let pk = <KemT as Kem>::PublicKey::from_bytes(&recipient.encryption_key)
        .map_err(|e| ProtocolError::malformed("recipient encryption key", e))?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, KemT, _>(
        &OpModeS::Base,
        &pk,
        HPKE_INFO,
        &signed_payload.encode_to_vec(),
        &header_aad(&header),
        &mut hpke_rng(),
    )
    .map_err(|e| ProtocolError::Envelope(format!("sealing failed: {e}")))?;
    let mut body = Vec::with_capacity(ENC_LEN + ciphertext.len());
    body.extend_from_slice(&encapped.to_bytes());
    body.extend_from_slice(&ciphertext);
    header.body_len = body.len() as u64;
    header.body_sha256 = Sha256::digest(&body).to_vec();
    Ok(Envelope {
        header: Some(sign_message(Domain::EnvelopeHeader, &header, &[sender_key])),
        body,
    })
}

/// Decodes the header and checks what anyone can check without opening the body: the sending
/// node's signature (from the directory), that both orgs are members, the body's length and
/// hash, and the size limit. The hub runs exactly this before it stores anything.
pub fn verify_header(
    envelope: &Envelope,
    directory: &VerifiedDirectory,
    max_body: usize,
) -> Result<EnvelopeHeader, ProtocolError> {
    let signed = envelope
        .header
        .as_ref()
        .ok_or_else(|| ProtocolError::Envelope("envelope has no header".into()))?;
    let claimed: EnvelopeHeader = decode_body(Domain::EnvelopeHeader, signed)?;
    if claimed.envelope_id.len() != 16 {
        return Err(ProtocolError::Envelope(format!(
            "envelope id must be 16 bytes, got {}",
            claimed.envelope_id.len()
        )));
    }
    let sender_key = directory.signing_key_of(&claimed.from_org)?;
    let header: EnvelopeHeader = open_signed(Domain::EnvelopeHeader, signed, &sender_key)?;
    directory.member(&header.to_org)?;
    if header.kind() == EnvelopeKind::Unspecified {
        return Err(ProtocolError::Envelope("envelope kind is not set".into()));
    }
    let reason_fits = if header.kind() == EnvelopeKind::DeletionReceipt {
        ERASURE_REASONS.contains(&header.erasure_reason.as_str())
    } else {
        header.erasure_reason.is_empty()
    };
    if !reason_fits {
        return Err(ProtocolError::Envelope(format!(
            "erasure reason {:?} on a {} envelope: a deletion receipt states one of {}, any other envelope none",
            header.erasure_reason,
            kind_name(header.kind),
            ERASURE_REASONS.join(", ")
        )));
    }
    let about_fits = match header.about_package.len() {
        0 => true,
        16 => header.kind() == EnvelopeKind::Status,
        _ => false,
    };
    if !about_fits {
        return Err(ProtocolError::Envelope(format!(
            "the header names a package of {} bytes on a {} envelope: only an intake status names one, by its 16-byte envelope id",
            header.about_package.len(),
            kind_name(header.kind)
        )));
    }
    if envelope.body.len() > max_body {
        return Err(ProtocolError::TooLarge {
            size: envelope.body.len(),
            limit: max_body,
        });
    }
    if header.body_len != envelope.body.len() as u64 {
        return Err(ProtocolError::Envelope(format!(
            "header says the body is {} bytes, it is {}",
            header.body_len,
            envelope.body.len()
        )));
    }
    if Sha256::digest(&envelope.body).as_slice() != header.body_sha256.as_slice() {
        return Err(ProtocolError::Envelope(
            "body does not match the SHA-256 in the signed header".into(),
        ));
    }
    Ok(header)
}

/// An envelope opened by its recipient.
#[derive(Debug, Clone)]
pub struct Opened {
    pub header: EnvelopeHeader,
    pub payload: Payload,
    /// The sender-signed payload exactly as it arrived, kept as evidence.
    pub signed_payload: Signed,
}

/// Verifies the header, opens the body with the recipient's key and checks the signed payload:
/// signed by the header's sender, addressed to `my_org`, for this envelope.
pub fn open(
    envelope: &Envelope,
    directory: &VerifiedDirectory,
    my_org: &str,
    keys: &[&EncryptionKeyPair],
    max_body: usize,
) -> Result<Opened, ProtocolError> {
    let header = verify_header(envelope, directory, max_body)?;
    open_verified(envelope, header, directory, my_org, keys)
}

/// [`open`] for an envelope whose header [`verify_header`] has just returned, under the same
/// directory: the header's signature is not checked a second time.
pub fn open_verified(
    envelope: &Envelope,
    header: EnvelopeHeader,
    directory: &VerifiedDirectory,
    my_org: &str,
    keys: &[&EncryptionKeyPair],
) -> Result<Opened, ProtocolError> {
    if header.to_org != my_org {
        return Err(ProtocolError::Open(format!(
            "envelope is addressed to {}, this node is {}",
            header.to_org, my_org
        )));
    }
    let key = keys
        .iter()
        .find(|k| k.key_id() == header.recipient_key_id)
        .ok_or_else(|| {
            ProtocolError::Open(format!(
                "envelope is sealed to key {}, which this node does not hold",
                header.recipient_key_id
            ))
        })?;
    if envelope.body.len() < ENC_LEN {
        return Err(ProtocolError::Open(
            "body is shorter than an HPKE key".into(),
        ));
    }
    let (enc, ciphertext) = envelope.body.split_at(ENC_LEN);
    let sk = <KemT as Kem>::PrivateKey::from_bytes(&key.secret)
        .map_err(|e| ProtocolError::malformed("encryption key", e))?;
    let encapped = <KemT as Kem>::EncappedKey::from_bytes(enc)
        .map_err(|e| ProtocolError::malformed("HPKE encapsulated key", e))?;
    let plaintext = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, KemT>(
        &OpModeR::Base,
        &sk,
        &encapped,
        HPKE_INFO,
        ciphertext,
        &header_aad(&header),
    )
    .map_err(|_| ProtocolError::Open("decryption failed: wrong key or tampered body".into()))?;
    let signed_payload =
        Signed::decode(plaintext.as_slice()).map_err(|e| ProtocolError::malformed("payload", e))?;
    let sender_key = directory.signing_key_of(&header.from_org)?;
    let payload: Payload =
        open_signed(Domain::Payload, &signed_payload, &sender_key).map_err(|e| {
            ProtocolError::Open(format!(
                "payload is not signed by the sender {}: {e}",
                header.from_org
            ))
        })?;
    if payload.from_org != header.from_org {
        return Err(ProtocolError::Open(format!(
            "payload names sender {}, the envelope came from {}",
            payload.from_org, header.from_org
        )));
    }
    if header.erasure_reason != erasure_reason(&payload) {
        return Err(ProtocolError::Open(format!(
            "the header says the erasure reason is {:?}, the receipt inside says {:?}",
            header.erasure_reason,
            erasure_reason(&payload)
        )));
    }
    if header.about_package != about_package(&payload) {
        return Err(ProtocolError::Open(format!(
            "the header says the status is about package {}, the status inside says {}",
            hex::encode(&header.about_package),
            hex::encode(about_package(&payload))
        )));
    }
    if payload.recipient_org != my_org {
        return Err(ProtocolError::Open(format!(
            "payload is addressed to {}, not to {}: it was forwarded",
            payload.recipient_org, my_org
        )));
    }
    if payload.envelope_id != header.envelope_id {
        return Err(ProtocolError::Open(
            "payload belongs to another envelope".into(),
        ));
    }
    Ok(Opened {
        header,
        payload,
        signed_payload,
    })
}

/// SHA-256 of the signed header bytes; what a receipt commits to.
pub fn header_hash(envelope: &Envelope) -> Vec<u8> {
    envelope
        .header
        .as_ref()
        .map(|h| Sha256::digest(&h.body).to_vec())
        .unwrap_or_default()
}

/// Why a recipient erases what it held: the reasons a deletion receipt may state.
pub const ERASURE_REASONS: [&str; 3] = ["revoked", "expired", "superseded"];

/// The short name of an envelope kind, as metrics, statistics and CLI output show it.
pub fn kind_name(kind: i32) -> &'static str {
    match EnvelopeKind::try_from(kind) {
        Ok(EnvelopeKind::Package) => "package",
        Ok(EnvelopeKind::Revocation) => "revocation",
        Ok(EnvelopeKind::DeletionReceipt) => "deletion_receipt",
        Ok(EnvelopeKind::Status) => "status",
        Ok(EnvelopeKind::PullRequest) => "pull_request",
        Ok(EnvelopeKind::Unspecified) | Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Directory, HandoverStatus, MemberKind, payload::Content};
    use crate::sign::generate_signing_key;

    struct Org {
        id: &'static str,
        sign: SigningKey,
        enc: EncryptionKeyPair,
    }

    fn org(id: &'static str) -> Org {
        Org {
            id,
            sign: generate_signing_key(),
            enc: EncryptionKeyPair::generate(),
        }
    }

    fn member(o: &Org) -> Member {
        Member {
            org_id: o.id.into(),
            kind: MemberKind::School as i32,
            display_name: o.id.into(),
            signing_key: o.sign.verifying_key().to_bytes().to_vec(),
            encryption_key: o.enc.public.to_vec(),
            encryption_key_id: o.enc.key_id(),
            tls_cert_sha256: vec![],
        }
    }

    fn region(orgs: &[&Org]) -> VerifiedDirectory {
        let authority = generate_signing_key();
        let d = Directory {
            region: "t".into(),
            version: 1,
            issued_at: 0,
            members: orgs.iter().map(|o| member(o)).collect(),
            ended_sessions: vec![],
        };
        VerifiedDirectory::verify(
            &sign_message(Domain::Directory, &d, &[&authority]),
            &authority.verifying_key(),
            0,
        )
        .unwrap()
    }

    fn status_payload(text: &str) -> Payload {
        Payload {
            purpose: "intake".into(),
            content: Some(Content::Status(HandoverStatus {
                grant_id: "g".into(),
                pseudonym: "p".into(),
                status: text.into(),
                at: 0,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn sealed(from: &Org, to: &Org, text: &str) -> Envelope {
        seal(
            Outgoing {
                envelope_id: [9; 16],
                from_org: from.id,
                kind: EnvelopeKind::Status,
                created_at: 5,
                payload: status_payload(text),
            },
            &from.sign,
            &member(to),
        )
        .unwrap()
    }

    #[test]
    fn recipient_opens_what_was_sealed_to_it() {
        let (s, m) = (org("25LP"), org("MBO1"));
        let dir = region(&[&s, &m]);
        let env = sealed(&s, &m, "gelezen");
        let opened = open(&env, &dir, "MBO1", &[&m.enc], 1 << 20).unwrap();
        assert_eq!(opened.header.from_org, "25LP");
        match opened.payload.content {
            Some(Content::Status(st)) => assert_eq!(st.status, "gelezen"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            !env.body.windows(7).any(|w| w == b"gelezen"),
            "plaintext visible in body"
        );
    }

    #[test]
    fn wrong_node_cannot_open() {
        let (s, m, g) = (org("25LP"), org("MBO1"), org("GM0193"));
        let dir = region(&[&s, &m, &g]);
        let env = sealed(&s, &m, "x");
        let err = open(&env, &dir, "GM0193", &[&g.enc], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("addressed to MBO1"), "{err}");
        // Even claiming to be the recipient, the wrong key does not open it.
        let err = open(&env, &dir, "MBO1", &[&g.enc], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("does not hold"), "{err}");
    }

    #[test]
    fn tampered_header_body_or_signature_is_refused() {
        let (s, m) = (org("25LP"), org("MBO1"));
        let dir = region(&[&s, &m]);
        let env = sealed(&s, &m, "x");

        let mut body = env.clone();
        let n = body.body.len() - 1;
        body.body[n] ^= 1;
        assert!(
            verify_header(&body, &dir, 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("SHA-256")
        );

        let mut hdr = env.clone();
        let h = hdr.header.as_mut().unwrap();
        let mut decoded = EnvelopeHeader::decode(h.body.as_slice()).unwrap();
        decoded.to_org = "25LP".into();
        h.body = decoded.encode_to_vec();
        assert!(matches!(
            verify_header(&hdr, &dir, 1 << 20),
            Err(ProtocolError::BadSignature { .. })
        ));

        let mut sig = env.clone();
        sig.header.as_mut().unwrap().sigs[0].signature[0] ^= 1;
        assert!(verify_header(&sig, &dir, 1 << 20).is_err());

        assert!(
            verify_header(&env, &dir, 10)
                .unwrap_err()
                .to_string()
                .contains("over the limit")
        );
    }

    #[test]
    fn forwarded_payload_is_refused() {
        // MBO1 receives a payload from the school, then re-seals the school's signed payload in
        // an envelope of its own to GM0193.
        let (s, m, g) = (org("25LP"), org("MBO1"), org("GM0193"));
        let dir = region(&[&s, &m, &g]);
        let env = sealed(&s, &m, "x");
        let opened = open(&env, &dir, "MBO1", &[&m.enc], 1 << 20).unwrap();
        // Re-signed by MBO1 it would be MBO1's own words. Splice the school's signed payload in:
        let spliced = seal_signed(
            &Outgoing {
                envelope_id: [9; 16],
                from_org: "MBO1",
                kind: EnvelopeKind::Status,
                created_at: 6,
                payload: Payload::default(),
            },
            &opened.signed_payload,
            &m.sign,
            &member(&g),
        )
        .unwrap();
        let err = open(&spliced, &dir, "GM0193", &[&g.enc], 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("not signed by the sender MBO1"),
            "{err}"
        );
    }

    #[test]
    fn body_moved_to_another_header_does_not_open() {
        let (s, m) = (org("25LP"), org("MBO1"));
        let dir = region(&[&s, &m]);
        let env = sealed(&s, &m, "x");
        // Re-sign a header with a new envelope id around the same body: the AAD differs.
        let mut header: EnvelopeHeader =
            decode_body(Domain::EnvelopeHeader, env.header.as_ref().unwrap()).unwrap();
        header.envelope_id = vec![1; 16];
        let moved = Envelope {
            header: Some(sign_message(Domain::EnvelopeHeader, &header, &[&s.sign])),
            body: env.body.clone(),
        };
        let err = open(&moved, &dir, "MBO1", &[&m.enc], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("decryption failed"), "{err}");
    }

    #[test]
    fn key_round_trips_from_secret() {
        let k = EncryptionKeyPair::generate();
        let back = EncryptionKeyPair::from_secret(&k.secret).unwrap();
        assert_eq!(back.public, k.public);
        assert_eq!(back.key_id().len(), 16);
        assert!(!format!("{k:?}").contains(&hex::encode(k.secret)));
    }

    /// A deletion receipt states its erasure reason in the header, for the coordinators'
    /// counts; no other envelope states one, and a header that disagrees is refused.
    #[test]
    fn a_deletion_receipt_states_its_reason_in_the_header_and_nothing_else_does() {
        use crate::pb::DeletionReceipt;
        let (a, b) = (org("25LP"), org("30RT"));
        let dir = region(&[&a, &b]);
        let receipt = |reason: &str| Payload {
            content: Some(Content::DeletionReceipt(sign_message(
                Domain::DeletionReceipt,
                &DeletionReceipt {
                    grant_id: "g".into(),
                    reason: reason.into(),
                    ..Default::default()
                },
                &[&b.sign],
            ))),
            ..Default::default()
        };
        let out = |kind, payload| Outgoing {
            envelope_id: [4; 16],
            from_org: b.id,
            kind,
            created_at: 5,
            payload,
        };
        let env = seal(
            out(EnvelopeKind::DeletionReceipt, receipt("expired")),
            &b.sign,
            &member(&a),
        )
        .unwrap();
        assert_eq!(
            verify_header(&env, &dir, 1 << 20).unwrap().erasure_reason,
            "expired"
        );
        assert!(open(&env, &dir, "25LP", &[&a.enc], 1 << 20).is_ok());
        // An unknown reason, a receipt sealed without its reason in the header, and a reason on
        // a status envelope are all refused before anything is opened.
        for (kind, payload, how) in [
            (EnvelopeKind::DeletionReceipt, receipt("bored"), "seal"),
            (
                EnvelopeKind::DeletionReceipt,
                receipt("revoked"),
                "seal_signed",
            ),
            (EnvelopeKind::Status, receipt("revoked"), "seal"),
            (EnvelopeKind::Status, receipt("bored"), "seal"),
        ] {
            let o = out(kind, payload.clone());
            let env = if how == "seal" {
                seal(o, &b.sign, &member(&a)).unwrap()
            } else {
                let signed = sign_message(Domain::Payload, &payload, &[&b.sign]);
                seal_signed(&o, &signed, &b.sign, &member(&a)).unwrap()
            };
            let err = verify_header(&env, &dir, 1 << 20).unwrap_err().to_string();
            assert!(err.contains("erasure reason"), "{how}: {err}");
        }
    }

    #[test]
    fn an_intake_status_names_its_package_in_the_header_and_the_content_must_agree() {
        let (a, b) = (org("25LP"), org("30RT"));
        let dir = region(&[&a, &b]);
        let status = |text: &str| {
            let mut p = status_payload(text);
            if let Some(Content::Status(st)) = p.content.as_mut() {
                st.package_envelope_id = vec![7; 16];
            }
            p
        };
        let out = |kind, payload| Outgoing {
            envelope_id: [4; 16],
            from_org: b.id,
            kind,
            created_at: 5,
            payload,
        };
        let env = seal(
            out(EnvelopeKind::Status, status("intake gepland")),
            &b.sign,
            &member(&a),
        )
        .unwrap();
        assert_eq!(
            verify_header(&env, &dir, 1 << 20).unwrap().about_package,
            vec![7; 16]
        );
        assert!(open(&env, &dir, "25LP", &[&a.enc], 1 << 20).is_ok());
        // "ontvangen" is no intake status: the header names nothing.
        let env = seal(
            out(EnvelopeKind::Status, status("ontvangen")),
            &b.sign,
            &member(&a),
        )
        .unwrap();
        assert!(
            verify_header(&env, &dir, 1 << 20)
                .unwrap()
                .about_package
                .is_empty()
        );
        // An intake status whose header leaves its package out does not open.
        let mut payload = status("gestart");
        payload.from_org = b.id.into();
        payload.recipient_org = a.id.into();
        payload.envelope_id = vec![4; 16];
        let signed = sign_message(Domain::Payload, &payload, &[&b.sign]);
        let env = seal_signed(
            &out(EnvelopeKind::Status, payload),
            &signed,
            &b.sign,
            &member(&a),
        )
        .unwrap();
        let err = open(&env, &dir, "25LP", &[&a.enc], 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the status inside says 0707"), "{err}");
        // A package that names a package, or a short id, is refused before anything is opened.
        for (kind, id) in [
            (EnvelopeKind::Package, vec![7; 16]),
            (EnvelopeKind::Status, vec![7; 5]),
        ] {
            let payload = status("gestart");
            let signed = sign_message(Domain::Payload, &payload, &[&b.sign]);
            let claims = Claims {
                about_package: id,
                ..Default::default()
            };
            let env = seal_with_reason(&out(kind, payload), &signed, &b.sign, &member(&a), claims)
                .unwrap();
            let err = verify_header(&env, &dir, 1 << 20).unwrap_err().to_string();
            assert!(err.contains("only an intake status names one"), "{err}");
        }
    }
}

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
use crate::sign::{Domain, Memory, decode_body, open_signed_in, sign_message};
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

/// The status a recipient reports when it took a package in and checked it.
pub const RECEIVED: &str = "ontvangen";

/// The most statuses one envelope carries (`HandoverStatuses`).
pub const MAX_STATUSES: usize = 256;

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
    verify_header_in(None, envelope, directory, max_body)
}

/// [`verify_header`], its signature checked through `memory` (a memory for a batch, say).
pub fn verify_header_in(
    memory: Option<&Memory>,
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
    let header: EnvelopeHeader =
        open_signed_in(memory, Domain::EnvelopeHeader, signed, &sender_key)?;
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
    open_verified_in(None, envelope, header, directory, my_org, keys)
}

/// [`open_verified`], the payload's signature checked through `memory`.
pub fn open_verified_in(
    memory: Option<&Memory>,
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
    let payload: Payload = open_signed_in(memory, Domain::Payload, &signed_payload, &sender_key)
        .map_err(|e| {
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
    if let Some(crate::pb::payload::Content::Statuses(run)) = &payload.content {
        if run.statuses.len() > MAX_STATUSES {
            return Err(ProtocolError::Open(format!(
                "{} statuses in one envelope, at most {MAX_STATUSES}",
                run.statuses.len()
            )));
        }
        if let Some(st) = run.statuses.iter().find(|s| s.status != RECEIVED) {
            return Err(ProtocolError::Open(format!(
                "a status {:?} among the statuses of a run: only \"{RECEIVED}\" travels together",
                st.status
            )));
        }
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
mod tests;

//! Envelopes as the hub and a recipient node take them in: decoding, the header checks, HPKE
//! open and the signed payload inside. The first byte picks who made the input: an outsider
//! (any bytes, as one envelope or as a `SendBatch` request), a member signing a header over any
//! body, or a member sealing any payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overstap_fuzz::{MAX_BODY, NOW, fixture};
use overstap_proto::envelope::{Outgoing, open, seal_signed, verify_header};
use overstap_proto::pb::{Envelope, EnvelopeHeader, EnvelopeKind, SendBatchRequest, Signed};
use overstap_proto::sign::{Domain, sign_message};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let envelope = match mode % 4 {
        0 => match Envelope::decode(rest) {
            Ok(e) => e,
            Err(_) => return,
        },
        3 => {
            // Any bytes as a batch: each envelope in it is checked as one sent alone.
            let Ok(batch) = SendBatchRequest::decode(rest) else {
                return;
            };
            for envelope in batch.envelopes.iter().take(64) {
                let _ = verify_header(envelope, &f.directory, MAX_BODY);
                let _ = open(envelope, &f.directory, "30RT", &[&f.mbo_enc], MAX_BODY);
            }
            return;
        }
        1 => {
            // A member signs a header over a body of its choosing.
            use sha2::Digest;
            let mbo = f.directory.member("30RT").unwrap();
            let header = EnvelopeHeader {
                envelope_id: vec![1; 16],
                from_org: "25LP".into(),
                to_org: "30RT".into(),
                recipient_key_id: mbo.encryption_key_id.clone(),
                kind: EnvelopeKind::Status as i32,
                created_at: NOW,
                body_len: rest.len() as u64,
                body_sha256: sha2::Sha256::digest(rest).to_vec(),
                erasure_reason: String::new(),
                // A package named or not, of any length up to 19 bytes.
                about_package: rest.iter().take(rest.len() % 20).copied().collect(),
            };
            Envelope {
                header: Some(sign_message(Domain::EnvelopeHeader, &header, &[&f.school])),
                body: rest.to_vec(),
            }
        }
        _ => {
            // A member seals a payload of its choosing to the recipient's key.
            let Ok(payload) = Signed::decode(rest) else {
                return;
            };
            let out = Outgoing {
                envelope_id: [2; 16],
                from_org: "25LP",
                kind: EnvelopeKind::Status,
                created_at: NOW,
                payload: Default::default(),
            };
            match seal_signed(
                &out,
                &payload,
                &f.school,
                f.directory.member("30RT").unwrap(),
            ) {
                Ok(e) => e,
                Err(_) => return,
            }
        }
    };
    let _ = verify_header(&envelope, &f.directory, MAX_BODY);
    let _ = open(&envelope, &f.directory, "30RT", &[&f.mbo_enc], MAX_BODY);
});

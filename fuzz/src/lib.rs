//! A fixed region for the fuzz targets (an authority, a hub and two members with keys made from
//! fixed bytes), and valid inputs to seed each target's corpus with.

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::{EncryptionKeyPair, Outgoing, seal};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    Directory, EnvelopeKind, HandoverStatus, Member, MemberKind, Payload, Receipt,
};
use overstap_proto::sign::{Domain, sign_message};
use prost::Message;

/// The clock every target checks against.
pub const NOW: i64 = 1_790_000_000;
pub const MAX_BODY: usize = 1 << 20;

pub struct Fixture {
    pub authority: SigningKey,
    /// A student of 17 (no guardian needed) and the card the school issued.
    pub student: SigningKey,
    pub card: overstap_proto::pb::StudentCard,
    /// The student's earlier key, which the card retires (reported lost at NOW - 500).
    pub lost: SigningKey,
    pub hub: SigningKey,
    pub school: SigningKey,
    pub mbo: SigningKey,
    pub mbo_enc: EncryptionKeyPair,
    pub directory: VerifiedDirectory,
}

fn member(id: &str, kind: MemberKind, key: &SigningKey, enc: &EncryptionKeyPair) -> Member {
    Member {
        org_id: id.into(),
        kind: kind as i32,
        display_name: id.into(),
        signing_key: key.verifying_key().to_bytes().to_vec(),
        encryption_key: enc.public.to_vec(),
        encryption_key_id: enc.key_id(),
        tls_cert_sha256: vec![7; 32],
    }
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let authority = SigningKey::from_bytes(&[1; 32]);
        let hub = SigningKey::from_bytes(&[2; 32]);
        let school = SigningKey::from_bytes(&[3; 32]);
        let mbo = SigningKey::from_bytes(&[4; 32]);
        let enc = |b: u8| EncryptionKeyPair::from_secret(&[b; 32]).expect("a key");
        let mbo_enc = enc(6);
        let directory = Directory {
            region: "fuzz".into(),
            version: 1,
            issued_at: NOW,
            members: vec![
                member("HUB", MemberKind::Hub, &hub, &enc(5)),
                member("25LP", MemberKind::School, &school, &enc(7)),
                member("30RT", MemberKind::Mbo, &mbo, &mbo_enc),
            ],
            ended_sessions: vec![],
        };
        let signed = sign_message(Domain::Directory, &directory, &[&authority]);
        let directory = VerifiedDirectory::verify(&signed, &authority.verifying_key(), 0)
            .expect("the fixture's directory verifies");
        let student = SigningKey::from_bytes(&[10; 32]);
        let lost = SigningKey::from_bytes(&[11; 32]);
        let card = overstap_proto::pb::StudentCard {
            pseudonym: "pvs-fuzz".into(),
            home_org: "25LP".into(),
            student_key: student.verifying_key().to_bytes().to_vec(),
            birth_month: "2009-01".into(),
            guardian_keys: vec![],
            device_keys: vec![],
            issued_at: NOW - 1_000,
            retired_keys: vec![overstap_proto::pb::RetiredKey {
                key: lost.verifying_key().to_bytes().to_vec(),
                role: "student".into(),
                retired_at: NOW - 1_000,
            }],
        };
        Fixture {
            authority,
            student,
            card,
            lost,
            hub,
            school,
            mbo,
            mbo_enc,
            directory,
        }
    })
}

/// Valid inputs for each target, to start its corpus from.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let f = fixture();
    let status = Payload {
        purpose: "intake".into(),
        content: Some(Content::Status(HandoverStatus {
            grant_id: "g-1".into(),
            pseudonym: "pvs-1".into(),
            status: "ontvangen".into(),
            at: NOW,
            ..Default::default()
        })),
        ..Default::default()
    };
    let envelope = seal(
        Outgoing {
            envelope_id: [9; 16],
            from_org: "25LP",
            kind: EnvelopeKind::Status,
            created_at: NOW,
            payload: status,
        },
        &f.school,
        f.directory.member("30RT").expect("member"),
    )
    .expect("seal");
    let receipt = sign_message(
        Domain::Receipt,
        &Receipt {
            envelope_id: vec![9; 16],
            log_index: 3,
            received_at: NOW,
            header_sha256: vec![1; 32],
            hub_id: "HUB".into(),
        },
        &[&f.hub],
    );
    let checkpoint = overstap_proto::log::sign_checkpoint(
        "fuzz",
        3,
        overstap_proto::log::Hash([8; 32]),
        &f.hub,
        "HUB",
    )
    .expect("checkpoint");
    let mut proofs = vec![0u8, 5, 0, 9];
    proofs.extend([3u8; 96]);
    // The first byte of an `envelope` or `signed_objects` input picks its mode; 0 is "as is".
    let as_is = |bytes: Vec<u8>| [vec![0u8], bytes].concat();
    vec![
        ("envelope", as_is(envelope.encode_to_vec())),
        ("signed_objects", as_is(receipt.encode_to_vec())),
        ("signed_objects", as_is(f.directory.signed.encode_to_vec())),
        ("checkpoint", checkpoint),
        ("proofs", proofs),
    ]
}

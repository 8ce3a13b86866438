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
        let env =
            seal_with_reason(&out(kind, payload), &signed, &b.sign, &member(&a), claims).unwrap();
        let err = verify_header(&env, &dir, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("only an intake status names one"), "{err}");
    }
}

#[test]
fn the_statuses_of_a_run_travel_together_only_as_ontvangen_and_at_most_256() {
    let (a, b) = (org("25LP"), org("30RT"));
    let dir = region(&[&a, &b]);
    let run = |statuses: &[&str], n: usize| {
        let statuses = statuses
            .iter()
            .cycle()
            .take(n)
            .enumerate()
            .map(|(i, s)| HandoverStatus {
                grant_id: format!("g{i}"),
                status: s.to_string(),
                package_envelope_id: vec![7; 16],
                ..Default::default()
            })
            .collect();
        let env = seal(
            Outgoing {
                envelope_id: [5; 16],
                from_org: b.id,
                kind: EnvelopeKind::Status,
                created_at: 5,
                payload: Payload {
                    content: Some(Content::Statuses(crate::pb::HandoverStatuses { statuses })),
                    ..Default::default()
                },
            },
            &b.sign,
            &member(&a),
        )
        .unwrap();
        // The header names no package: the hub counts no intake from a run.
        assert!(
            verify_header(&env, &dir, 1 << 20)
                .unwrap()
                .about_package
                .is_empty()
        );
        open(&env, &dir, "25LP", &[&a.enc], 1 << 20).map(|o| o.payload)
    };
    let opened = run(&["ontvangen"], 3).unwrap();
    let Some(Content::Statuses(s)) = opened.content else {
        panic!("not a run of statuses: {opened:?}");
    };
    assert_eq!(s.statuses.len(), 3);
    assert!(run(&["ontvangen"], MAX_STATUSES).is_ok());
    // An intake status names its package in the header, so it travels alone.
    let err = run(&["ontvangen", "intake gepland"], 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a status \"intake gepland\" among the statuses of a run"),
        "{err}"
    );
    let err = run(&["ontvangen"], MAX_STATUSES + 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("257 statuses in one envelope, at most 256"),
        "{err}"
    );
}

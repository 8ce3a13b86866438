//! Bad input at a node: envelopes the hub passes on that the recipient must refuse (sealed to
//! another key, forwarded, under a bad grant), bad grants at the school's own API, and the
//! local API's guards (malformed protobuf, a missing token, another school's data). Every case
//! gets a clear refusal and changes no stored data.

use overstap_proto::envelope::{Outgoing, seal, seal_signed};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    ConsentGrant, Envelope, EnvelopeKind, NodeStatusRequest, Payload, Revocation, RevocationNotice,
    SendPassportRequest, StudentCard,
};
use overstap_proto::sign::{Domain, sign_message};
use overstap_region::client::connect;
use overstap_region::passport::make_grant;
use overstap_tests::cast::{GEMEENTE, MBO, OTHER_MBO, SCHOOL, birth_month};
use overstap_tests::*;
use tonic::Code;

use crate::bad_input::RawCodec;

#[tokio::test]
async fn an_envelope_sealed_to_another_nodes_key_is_refused_by_its_recipient() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    // Addressed to the mbo, with the mbo's key id, but sealed to the municipality's key.
    let mut wrong = member(&region, MBO);
    wrong.encryption_key = member(&region, GEMEENTE).encryption_key;
    let env = envelope_of_kind(&school, &wrong, EnvelopeKind::Package);
    hub_client(&school)
        .send(env)
        .await
        .expect("the hub cannot tell, and routes it");
    eventually("the school hears of the refusal", || async {
        node_processed(&region, SCHOOL)
            .await
            .iter()
            .any(|(o, _)| o == "refusal")
    })
    .await;
    let at_mbo = node_processed(&region, MBO).await;
    assert_eq!(at_mbo.len(), 1);
    assert_eq!(at_mbo[0].0, "refused");
    assert!(at_mbo[0].1.contains("decryption failed"), "{}", at_mbo[0].1);
    assert_eq!(node_count(&region, MBO, "received").await, 0);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_forwarded_payload_is_refused() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mbo = creds(&region, MBO);
    // The school's signed words to the mbo...
    let original = status_envelope(&school, &member(&region, MBO));
    let opened = overstap_proto::envelope::open(
        &original,
        &directory(&region),
        MBO,
        &[&mbo.encryption],
        1 << 20,
    )
    .unwrap();
    // ...re-sealed by the mbo to the municipality.
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let forwarded = seal_signed(
        &Outgoing {
            envelope_id: id,
            from_org: MBO,
            kind: EnvelopeKind::Status,
            created_at: now(),
            payload: Payload::default(),
        },
        &opened.signed_payload,
        &mbo.signing,
        &member(&region, GEMEENTE),
    )
    .unwrap();
    hub_client(&mbo).send(forwarded).await.unwrap();
    eventually("the municipality refuses it", || async {
        node_count(&region, GEMEENTE, "processed").await == 1
    })
    .await;
    let rows = node_processed(&region, GEMEENTE).await;
    assert_eq!(rows[0].0, "refused");
    assert!(
        rows[0]
            .1
            .contains("payload is not signed by the sender 30RT"),
        "{}",
        rows[0].1
    );
    assert_eq!(node_count(&region, GEMEENTE, "received").await, 0);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_senders_cli_refuses_bad_grants_with_clear_messages() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let w = &sam.wallet;

    let expired = grant_request(MBO, &["wie-ben-ik"], "intake", -1);
    let e = make_grant(w, "pvs-mbo-v1", &expired, None, now())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is in the past"), "{e}");

    let out_of_scope = grant_request(MBO, &["wie-ben-ik", "mijn-cijfers"], "intake", 30);
    let e = make_grant(w, "pvs-mbo-v1", &out_of_scope, None, now())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("section \"mijn-cijfers\" is not in pvs-mbo-v1"),
        "{e}"
    );

    let purpose = grant_request(MBO, &["wie-ben-ik"], "reclame", 30);
    let e = make_grant(w, "pvs-mbo-v1", &purpose, None, now())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("purpose \"reclame\" is not one of intake, begeleiding, werk, nazorg"),
        "{e}"
    );

    let guardian = overstap_proto::sign::generate_signing_key();
    let noor = student(&region, &birth_month(15), Some(&guardian)).await;
    let e = make_grant(
        &noor.wallet,
        "pvs-mbo-v1",
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
        now(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("is under 16") && e.contains("a guardian must co-sign this consent"),
        "{e}"
    );

    let mut api = region.api(SCHOOL).await.unwrap();
    let mut later = grant_request(MBO, &["wie-ben-ik"], "intake", 60);
    later.not_before = now() + 10 * 86_400;
    let id = grant(&region, w, &later, None).await;
    let waits = api
        .send_passport(SendPassportRequest {
            grant_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        waits.envelope_id.is_empty(),
        "nothing is sealed before the grant starts"
    );
    assert_eq!(waits.waits_until, later.not_before);

    let err = api
        .send_passport(SendPassportRequest {
            grant_id: "g-nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no grant g-nope at 25LP");

    let stranger = grant_request("99ZZ", &["wie-ben-ik"], "intake", 30);
    let signed = make_grant(w, "pvs-mbo-v1", &stranger, None, now()).unwrap();
    let err = overstap_region::passport::upload_grant(&mut api, signed)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown member 99ZZ"), "{err}");

    let outbox = api
        .outbox(overstap_proto::pb::OutboxRequest {})
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(outbox.len(), 1, "only the waiting package is in the outbox");
    assert_eq!(outbox[0].state, "waiting");
    assert_eq!(
        hub_count(&region, "envelopes").await,
        0,
        "nothing left the school"
    );
    region.shutdown().await.unwrap();
}

/// Signs a grant directly with the student's (and guardian's) key, skipping the CLI's checks.
pub(crate) fn raw_grant(
    w: &overstap_region::wallet::Wallet,
    to: &str,
    sections: &[&str],
    purpose: &str,
    from: i64,
    until: i64,
    guardian: Option<&ed25519_dalek::SigningKey>,
) -> overstap_proto::pb::Signed {
    let grant = ConsentGrant {
        grant_id: format!("g-raw-{to}-{from}-{until}-{}", sections.len()),
        pseudonym: w.pseudonym.clone(),
        home_org: w.home_org.clone(),
        recipient_org: to.into(),
        sections: sections.iter().map(|s| s.to_string()).collect(),
        purpose: purpose.into(),
        not_before: from,
        not_after: until,
        live: false,
        issued_at: now(),
        may_fetch: false,
    };
    let mut keys = vec![&w.key];
    keys.extend(guardian);
    sign_message(Domain::Grant, &grant, &keys)
}

#[tokio::test]
async fn a_recipient_refuses_a_package_under_a_bad_grant_stores_nothing_and_tells_the_sender() {
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut hub = hub_client(&school);
    let sam = student(&region, &birth_month(17), None).await;
    let guardian = overstap_proto::sign::generate_signing_key();
    let noor = student(&region, &birth_month(15), Some(&guardian)).await;
    let day = 86_400;
    let cases: Vec<(&str, Envelope)> = vec![
        (
            "expired on",
            package_envelope(
                &region,
                &school,
                MBO,
                &sam,
                &raw_grant(
                    &sam.wallet,
                    MBO,
                    &["wie-ben-ik"],
                    "intake",
                    now() - 10 * day,
                    now() - day,
                    None,
                ),
                &["wie-ben-ik"],
                "intake",
            ),
        ),
        (
            "is not valid until",
            package_envelope(
                &region,
                &school,
                MBO,
                &sam,
                &raw_grant(
                    &sam.wallet,
                    MBO,
                    &["wie-ben-ik"],
                    "intake",
                    now() + day,
                    now() + 10 * day,
                    None,
                ),
                &["wie-ben-ik"],
                "intake",
            ),
        ),
        (
            "section wat-wil-ik is outside grant",
            package_envelope(
                &region,
                &school,
                MBO,
                &sam,
                &raw_grant(
                    &sam.wallet,
                    MBO,
                    &["wie-ben-ik"],
                    "intake",
                    now() - 60,
                    now() + day,
                    None,
                ),
                &["wie-ben-ik", "wat-wil-ik"],
                "intake",
            ),
        ),
        (
            "is for GM0193, not for 30RT",
            package_envelope(
                &region,
                &school,
                MBO,
                &sam,
                &raw_grant(
                    &sam.wallet,
                    GEMEENTE,
                    &["wie-ben-ik"],
                    "intake",
                    now() - 60,
                    now() + 2 * day,
                    None,
                ),
                &["wie-ben-ik"],
                "intake",
            ),
        ),
        (
            "is for purpose begeleiding, not intake",
            package_envelope(
                &region,
                &school,
                MBO,
                &sam,
                &raw_grant(
                    &sam.wallet,
                    MBO,
                    &["wie-ben-ik"],
                    "begeleiding",
                    now() - 60,
                    now() + 3 * day,
                    None,
                ),
                &["wie-ben-ik"],
                "intake",
            ),
        ),
        (
            "a guardian must co-sign",
            package_envelope(
                &region,
                &school,
                MBO,
                &noor,
                &raw_grant(
                    &noor.wallet,
                    MBO,
                    &["wie-ben-ik"],
                    "intake",
                    now() - 60,
                    now() + day,
                    None,
                ),
                &["wie-ben-ik"],
                "intake",
            ),
        ),
    ];
    let n = cases.len();
    for (_, env) in &cases {
        hub.send(env.clone())
            .await
            .expect("the hub routes it; it cannot see the grant");
    }
    eventually("every refusal reaches the school", || async {
        node_processed(&region, SCHOOL)
            .await
            .iter()
            .filter(|(o, _)| o == "refusal")
            .count()
            == n
    })
    .await;
    let refusals: Vec<String> = node_processed(&region, SCHOOL)
        .await
        .into_iter()
        .filter(|(o, _)| o == "refusal")
        .map(|(_, d)| d)
        .collect();
    for (reason, _) in &cases {
        assert!(
            refusals.iter().any(|r| r.contains(reason)),
            "no refusal saying {reason:?} in {refusals:#?}"
        );
    }
    assert_eq!(
        node_count(&region, MBO, "received").await,
        0,
        "the mbo stored a passport"
    );
    assert_eq!(node_count(&region, MBO, "received_sections").await, 0);
    region.shutdown().await.unwrap();
}

/// A run of packages taken in together has its signatures checked together, in one batch. One
/// forged signature in the run fails the batch: nothing of it is kept, the run is taken in
/// again one envelope at a time, the forged package is refused with its signature named, and
/// the packages around it are stored.
#[tokio::test]
async fn a_forged_signature_in_a_run_is_found_alone_and_holds_up_no_other_package() {
    let (_tmp, mut region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut hub = hub_client(&school);
    let mut students = Vec::new();
    for _ in 0..3 {
        students.push(student(&region, &birth_month(17), None).await);
    }
    let grants: Vec<_> = students
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let from = now() - 60 - i as i64;
            raw_grant(
                &s.wallet,
                MBO,
                &["wie-ben-ik"],
                "intake",
                from,
                now() + 86_400,
                None,
            )
        })
        .collect();
    let mut forged = grants[1].clone();
    forged.sigs[0].signature[10] ^= 1;
    let envelopes: Vec<Envelope> = students
        .iter()
        .zip([&grants[0], &forged, &grants[2]])
        .map(|(s, g)| package_envelope(&region, &school, MBO, s, g, &["wie-ben-ik"], "intake"))
        .collect();
    // The mbo is away while they arrive, so it finds them waiting, as one run.
    region.stop_node(MBO).await.unwrap();
    let results = hub
        .send_batch(overstap_proto::pb::SendBatchRequest { envelopes })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.receipt.is_some()), "{results:?}");
    region.start_node(MBO).await.unwrap();
    eventually("the refusal reaches the school", || async {
        node_processed(&region, SCHOOL)
            .await
            .iter()
            .any(|(o, _)| o == "refusal")
    })
    .await;
    let refusal = node_processed(&region, SCHOOL)
        .await
        .into_iter()
        .find(|(o, _)| o == "refusal")
        .unwrap()
        .1;
    assert!(refusal.contains("does not verify"), "{refusal}");
    let pool = node_pool(&region, MBO).await;
    let mut stored: Vec<String> = sqlx::query_scalar("SELECT grant_id FROM received")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    stored.sort();
    let id = |g: &overstap_proto::pb::Signed| {
        overstap_proto::sign::decode_body::<ConsentGrant>(Domain::Grant, g)
            .unwrap()
            .grant_id
    };
    let mut expected = vec![id(&grants[0]), id(&grants[2])];
    expected.sort();
    assert_eq!(
        stored, expected,
        "the packages around the forged one are stored"
    );
    region.shutdown().await.unwrap();
}

/// The node's local API answers bytes that do not decode with `INVALID_ARGUMENT` and a reason,
/// as the hub does, and takes nothing in.
#[tokio::test]
async fn the_local_api_refuses_malformed_protobuf() {
    let (_tmp, region) = region().await;
    let dir = region.node_dir(SCHOOL);
    let url = std::fs::read_to_string(dir.join("api.url")).unwrap();
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(url.trim().to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let grants_before = node_count(&region, SCHOOL, "grants").await;
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in [
        "/overstap.v1.Node/AddGrant",
        "/overstap.v1.Node/RegisterStudent",
        "/overstap.v1.Node/SendPassports",
    ] {
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.trim()).parse().unwrap(),
        );
        let err = grpc
            .unary(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(
            err.message().starts_with("malformed protobuf message"),
            "{path}: {}",
            err.message()
        );
    }
    assert_eq!(node_count(&region, SCHOOL, "grants").await, grants_before);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_local_api_wants_its_token() {
    let (_tmp, region) = region().await;
    let url = std::fs::read_to_string(region.node_dir(OTHER_MBO).join("api.url")).unwrap();
    let mut api = connect(url.trim(), "not-the-token").await.unwrap();
    let err = api.status(NodeStatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "missing or wrong API token for this node");
    region.shutdown().await.unwrap();
}

/// A member that names a grant id (as if it were the student's school revoking it) gets the
/// same answer whether the recipient holds that grant for another school or never heard of it:
/// a deletion receipt. What is held for the other school stays.
#[tokio::test]
async fn a_school_cannot_learn_what_is_held_for_another_school() {
    let (_tmp, region) = region().await;
    let held = hand_over(&region, MBO).await;
    eventually("the mbo holds the package", || async {
        !held_sections(&region, MBO, &held).await.is_empty()
    })
    .await;
    // 27XK plays a school: its own card for a made-up student, and that student's revocation.
    let prober = creds(&region, OTHER_MBO);
    let fake_student = overstap_proto::sign::generate_signing_key();
    let card = StudentCard {
        device_keys: Vec::new(),
        pseudonym: "pvs-0123456789abcdef".into(),
        home_org: OTHER_MBO.into(),
        student_key: fake_student.verifying_key().to_bytes().to_vec(),
        birth_month: birth_month(17),
        guardian_keys: Vec::new(),
        issued_at: now() - 60,
        retired_keys: Vec::new(),
    };
    let card = sign_message(Domain::StudentCard, &card, &[&prober.signing]);
    let probe = |grant_id: &str| {
        let rev = Revocation {
            grant_id: grant_id.into(),
            pseudonym: "pvs-0123456789abcdef".into(),
            revoked_at: now(),
        };
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        seal(
            Outgoing {
                envelope_id: id,
                from_org: OTHER_MBO,
                kind: EnvelopeKind::Revocation,
                created_at: now(),
                payload: Payload {
                    content: Some(Content::Revocation(RevocationNotice {
                        revocation: Some(sign_message(Domain::Revocation, &rev, &[&fake_student])),
                        card: Some(card.clone()),
                    })),
                    ..Default::default()
                },
            },
            &prober.signing,
            &member(&region, MBO),
        )
        .expect("seal")
    };
    let mut hub = hub_client(&prober);
    hub.send(probe(&held)).await.unwrap();
    hub.send(probe("g-00000000deadbeef")).await.unwrap();
    // Both answers are deletion receipts, and the prober's node takes both the same way.
    eventually("both answers reach the prober", || async {
        node_processed(&region, OTHER_MBO).await.len() == 2
    })
    .await;
    let answers = node_processed(&region, OTHER_MBO).await;
    assert_eq!(
        answers[0], answers[1],
        "the two answers differ: {answers:#?}"
    );
    assert!(
        answers[0].0.contains("deletion receipt"),
        "not a deletion receipt: {answers:#?}"
    );
    assert!(
        !node_processed(&region, MBO)
            .await
            .iter()
            .any(|(o, _)| o == "refusal" || o == "refused"),
        "the mbo refused one of the probes, which tells them apart"
    );
    // The package held for the real school is untouched.
    assert!(!held_sections(&region, MBO, &held).await.is_empty());
    assert_eq!(
        handover(&region, &held).await.unwrap().grant_state,
        "active"
    );
    region.shutdown().await.unwrap();
}

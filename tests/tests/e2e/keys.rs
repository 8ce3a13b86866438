//! A student's lost key: the home node issues a new card for the same pseudonym, the lost key
//! signs nothing new (at home, whatever date it carries; at a recipient, nothing dated after the
//! report), and what it signed before stays in force. A member's own keys: rotated through the
//! directory, or the member removed from the region when it is compromised.

use overstap_proto::passport::verify_card;
use overstap_proto::pb::{ReplaceStudentKeyRequest, StudentCard};
use overstap_proto::sign::{
    Domain, decode_body, generate_signing_key, sign_message, verifying_key,
};
use overstap_region::member;
use overstap_region::passport::{make_grant, make_revocation, revoke, upload_grant};
use overstap_region::wallet::Wallet;
use overstap_tests::cast::{GEMEENTE, MBO, SCHOOL, birth_month};
use overstap_tests::*;

fn new_key_request(pseudonym: &str, key: &ed25519_dalek::SigningKey) -> ReplaceStudentKeyRequest {
    ReplaceStudentKeyRequest {
        pseudonym: pseudonym.into(),
        new_student_key: key.verifying_key().to_bytes().to_vec(),
        replace_guardians: false,
        guardian_keys: Vec::new(),
        staff_user: "mentor Jansen".into(),
    }
}

#[tokio::test]
async fn a_student_who_lost_a_key_gets_a_new_card_and_the_old_key_signs_nothing_new() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    // Before the loss: a consent signed with the key that will be lost, handed over.
    let before = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &before).await;
    eventually("the mbo holds the first package", || async {
        !held_sections(&region, MBO, &before).await.is_empty()
    })
    .await;
    // The thief's copy of the lost wallet.
    let thief = Wallet::new(sam.wallet.key.clone(), sam.wallet.card.clone()).unwrap();

    // The mentor checks the student in person and the school issues a new card.
    let mut api = region.api(SCHOOL).await.unwrap();
    let reported = now();
    let new_key = generate_signing_key();
    let reply = api
        .replace_student_key(new_key_request(&sam.wallet.pseudonym, &new_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.grants_kept, 1, "the consent given before stays");
    let new_wallet = Wallet::new(new_key.clone(), reply.card.clone().unwrap()).unwrap();
    let card: StudentCard = decode_body(Domain::StudentCard, &new_wallet.card).unwrap();
    assert_eq!(
        card.pseudonym, sam.wallet.pseudonym,
        "the pseudonym is kept"
    );
    assert_eq!(
        card.student_key,
        new_key.verifying_key().to_bytes().to_vec()
    );
    assert_eq!(card.retired_keys.len(), 1);
    assert_eq!(
        card.retired_keys[0].key,
        sam.wallet.key.verifying_key().to_bytes().to_vec()
    );
    assert!(card.retired_keys[0].retired_at >= reported);
    // The school's store holds the new card, and the trail says what happened.
    let mut stored = api
        .get_student(overstap_proto::pb::GetStudentRequest {
            pseudonym: sam.wallet.pseudonym.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.card.take(), reply.card);
    let trail = api
        .trail(overstap_proto::pb::TrailRequest {
            pseudonym: sam.wallet.pseudonym.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let event = trail
        .iter()
        .find(|e| e.event == "new key")
        .expect("a new-key event in the trail");
    assert!(
        event.detail.contains("mentor Jansen") && event.detail.contains("student key"),
        "{}",
        event.detail
    );
    // The same key cannot come back as the "new" one.
    let err = api
        .replace_student_key(new_key_request(&sam.wallet.pseudonym, &sam.wallet.key))
        .await
        .unwrap_err();
    assert!(err.message().contains("must be a new key"), "{err:?}");

    // The thief signs a consent with the lost key, dated now and dated before the report: the
    // school refuses both by name and stores nothing.
    let grants_before = node_count(&region, SCHOOL, "grants").await;
    for dated in [now(), reported - 3_600] {
        let signed = make_grant(
            &thief,
            "pvs-mbo-v1",
            &grant_request(MBO, &["wie-ben-ik", "wat-kan-ik"], "intake", 30),
            None,
            dated,
        )
        .unwrap();
        let err = upload_grant(&mut api, signed).await.unwrap_err();
        assert!(
            err.to_string().contains("student key reported lost on"),
            "{err:#}"
        );
    }
    // A withdrawal signed with the lost key is refused as well; the first consent stays.
    let rev = make_revocation(&thief, &before, None, now()).unwrap();
    let err = revoke(&mut api, rev).await.unwrap_err();
    assert!(err.to_string().contains("reported lost"), "{err:#}");
    assert_eq!(node_count(&region, SCHOOL, "grants").await, grants_before);
    assert_eq!(
        handover(&region, &before).await.unwrap().grant_state,
        "active"
    );

    // The student signs with the new key: a new consent goes out under the new card, and the mbo
    // (which holds the old card) takes the new one because it retires the old key.
    let after = grant(
        &region,
        &new_wallet,
        &grant_request(MBO, &["wat-kan-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &after).await;
    eventually("the mbo holds the package under the new card", || async {
        !held_sections(&region, MBO, &after).await.is_empty()
    })
    .await;

    // A recipient refuses a package whose grant the lost key signed after the report, even when
    // a (dishonest or broken) school sends it with the new card.
    let school = creds(&region, SCHOOL);
    let mut hub = hub_client(&school);
    let smuggled = Student {
        wallet: Wallet::new(sam.wallet.key.clone(), reply.card.clone().unwrap()).unwrap(),
        manifest: sam.manifest.clone(),
        disclosures: sam.disclosures.clone(),
    };
    // Dated a few seconds after the report (the lost key counts up to the second of the report).
    let thief_grant = make_grant(
        &thief,
        "pvs-mbo-v1",
        &grant_request(MBO, &["wie-ben-ik"], "begeleiding", 30),
        None,
        reported + 5,
    )
    .unwrap();
    let received_before = node_count(&region, MBO, "received").await;
    hub.send(package_envelope(
        &region,
        &school,
        MBO,
        &smuggled,
        &thief_grant,
        &["wie-ben-ik"],
        "begeleiding",
    ))
    .await
    .expect("the hub routes it; it cannot see the grant");
    eventually("the mbo's refusal reaches the school", || async {
        node_processed(&region, SCHOOL)
            .await
            .iter()
            .any(|(o, d)| o == "refusal" && d.contains("reported lost"))
    })
    .await;
    assert_eq!(node_count(&region, MBO, "received").await, received_before);

    // The first consent, signed with the lost key before the report, is still withdrawn with
    // the new key, and the mbo erases it.
    let rev = make_revocation(&new_wallet, &before, None, now()).unwrap();
    revoke(&mut api, rev).await.unwrap();
    eventually("the mbo erases the first package", || async {
        held_sections(&region, MBO, &before).await.is_empty()
            && handover(&region, &before).await.unwrap().grant_state == "erased"
    })
    .await;
    assert!(!held_sections(&region, MBO, &after).await.is_empty());
    region.shutdown().await.unwrap();
}

/// Key transparency for students: every card the school issues is in the hub's log under the
/// student's card index (a keyed hash; the log holds no pseudonym), so the student sees a new
/// key was made, and a card another member logs under their index shows as one the school did
/// not issue. A malformed record is refused with the reason and logs nothing.
#[tokio::test]
async fn every_card_of_a_student_is_in_the_hubs_log_and_one_someone_else_logged_shows() {
    use overstap_proto::pb::{LogCardRequest, LogEntriesRequest, StudentCardsRequest};
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let pseudonym = sam.wallet.pseudonym.clone();
    let mut api = region.api(SCHOOL).await.unwrap();
    let new_key = generate_signing_key();
    let reply = api
        .replace_student_key(new_key_request(&pseudonym, &new_key))
        .await
        .unwrap()
        .into_inner();
    let cards = || {
        let mut api = api.clone();
        let pseudonym = pseudonym.clone();
        async move {
            api.student_cards(StudentCardsRequest { pseudonym })
                .await
                .unwrap()
                .into_inner()
        }
    };
    eventually("both cards are in the hub's log", || async {
        cards().await.cards.len() == 2
    })
    .await;
    let listed = cards().await;
    let first = overstap_proto::passport::card_sha256(&sam.wallet.card).to_vec();
    let second = overstap_proto::passport::card_sha256(reply.card.as_ref().unwrap()).to_vec();
    let seen: Vec<_> = listed
        .cards
        .iter()
        .map(|c| {
            (
                c.card_sha256.clone(),
                c.from_org.as_str(),
                c.issued_here,
                c.current,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [(first, SCHOOL, true, false), (second, SCHOOL, true, true)]
    );
    assert!(listed.missing.is_empty());

    // The mbo (which knows Sam's pseudonym from a handover) logs a card of its own under Sam's
    // index: Sam's listing shows it, from the mbo, not issued by the school.
    let mut mbo_hub = hub_client(&creds(&region, MBO));
    let index = overstap_proto::passport::card_index(&pseudonym).to_vec();
    mbo_hub
        .log_card(LogCardRequest {
            card_index: index.clone(),
            card_sha256: vec![9; 32],
        })
        .await
        .unwrap();
    let e = mbo_hub
        .log_card(LogCardRequest {
            card_index: index[..31].to_vec(),
            card_sha256: vec![9; 32],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("32-byte card index"),
        "{}",
        e.message()
    );
    let listed = cards().await;
    assert_eq!(listed.cards.len(), 3, "the malformed record logged nothing");
    let rogue = &listed.cards[2];
    assert_eq!(
        (rogue.from_org.as_str(), rogue.issued_here, rogue.current),
        (MBO, false, false)
    );

    // The log's entries (once the hub took them into its tree) hold the index and the hashes,
    // never the pseudonym.
    let entries = || {
        let mut hub = mbo_hub.clone();
        async move {
            hub.get_log_entries(LogEntriesRequest {
                start: 0,
                limit: 1_000,
            })
            .await
            .unwrap()
            .into_inner()
            .entries
        }
    };
    eventually("the three cards are in the log's tree", || async {
        entries().await.iter().filter(|e| e.event == "card").count() == 3
    })
    .await;
    let entries = entries().await;
    for e in &entries {
        let bytes = overstap_proto::log::entry_bytes(e);
        assert!(
            !bytes
                .windows(pseudonym.len())
                .any(|w| w == pseudonym.as_bytes()),
            "a log entry holds the pseudonym"
        );
    }
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_student_under_16_keeps_a_guardian_on_the_new_card() {
    let (_tmp, region) = region().await;
    let guardian = generate_signing_key();
    let noor = student(&region, &birth_month(15), Some(&guardian)).await;
    let mut api = region.api(SCHOOL).await.unwrap();
    // Dropping every guardian of a 15-year-old is refused.
    let mut req = new_key_request(&noor.wallet.pseudonym, &generate_signing_key());
    req.replace_guardians = true;
    let err = api.replace_student_key(req).await.unwrap_err();
    assert!(err.message().contains("under 16"), "{err:?}");
    // The guardian lost a key too: the new card names the new guardian and retires the old.
    let new_guardian = generate_signing_key();
    let new_key = generate_signing_key();
    let mut req = new_key_request(&noor.wallet.pseudonym, &new_key);
    req.replace_guardians = true;
    req.guardian_keys = vec![new_guardian.verifying_key().to_bytes().to_vec()];
    let card = api
        .replace_student_key(req)
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    let wallet = Wallet::new(new_key, card).unwrap();
    // A consent co-signed with the old guardian key: the student's own command refuses to make
    // it, and the school refuses it when it is made by hand.
    let req = grant_request(MBO, &["wie-ben-ik"], "intake", 30);
    let err = make_grant(&wallet, "pvs-mbo-v1", &req, Some(&guardian), now() + 5).unwrap_err();
    assert!(
        format!("{err:#}").contains("guardian key reported lost"),
        "{err:#}"
    );
    let signed = make_grant(&wallet, "pvs-mbo-v1", &req, Some(&new_guardian), now()).unwrap();
    let body: overstap_proto::pb::ConsentGrant = decode_body(Domain::Grant, &signed).unwrap();
    let by_hand = sign_message(Domain::Grant, &body, &[&wallet.key, &guardian]);
    let err = upload_grant(&mut api, by_hand).await.unwrap_err();
    assert!(
        err.to_string().contains("guardian key reported lost"),
        "{err:#}"
    );
    // With the new guardian it is taken.
    upload_grant(&mut api, signed).await.unwrap();
    // An unknown pseudonym gets the same answer as any unknown student.
    let err = api
        .replace_student_key(new_key_request(
            "pvs-0000000000000000",
            &generate_signing_key(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    region.shutdown().await.unwrap();
}

/// A member's keys are rotated through the directory: what was sealed to its old encryption key
/// before the rotation (in flight) still opens, and a header signed with a rotated member's old
/// signing key afterwards is refused by the hub, with a reason, and stored nowhere.
#[tokio::test]
async fn after_a_rotation_the_old_signing_key_is_refused_and_what_was_in_flight_still_opens() {
    let (_tmp, mut region) = region().await;
    let school_before = creds(&region, SCHOOL);
    // In flight: sealed to the mbo's key of now, waiting at the hub while the mbo is away.
    region.stop_node(MBO).await.unwrap();
    let mut hub = hub_client(&school_before);
    let mbo_before = member(&region, MBO);
    hub.send(status_envelope(&school_before, &mbo_before))
        .await
        .unwrap();

    for org in [MBO, SCHOOL] {
        member::rotate_and_accept(&region.authority, &region.node_dir(org), org).unwrap();
    }
    let v = region.publish_directory().await.unwrap();
    assert_ne!(
        member(&region, MBO).encryption_key,
        mbo_before.encryption_key
    );
    // The mbo comes back already holding the new directory (as if it had fetched it before the
    // envelope reached it), so the envelope must be taken as one in flight across the school's
    // rotation, not merely checked against the directory of before.
    let pool = node_pool(&region, MBO).await;
    sqlx::query("INSERT INTO directory (version, signed) VALUES ($1, $2)")
        .bind(v as i64)
        .bind(prost::Message::encode_to_vec(
            &region.authority.signed_directory().unwrap(),
        ))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    region.start_node(MBO).await.unwrap();
    region
        .wait_for(
            SCHOOL,
            std::time::Duration::from_secs(20),
            "the school fetching the rotated directory",
            |s| s.directory_version == v,
        )
        .await
        .unwrap();
    eventually(
        "the mbo takes in what was sealed to its old key",
        || async { !node_processed(&region, MBO).await.is_empty() },
    )
    .await;
    let taken = node_processed(&region, MBO).await;
    // Opened and read: the status inside is about a grant the mbo does not hold.
    assert_eq!(
        taken,
        vec![(
            "status for a grant not held here".to_string(),
            String::new()
        )],
        "the envelope sealed to the old key did not open"
    );

    // The school's old signing key, used after the rotation (with the school's own certificate):
    // the hub refuses it with a reason and stores nothing.
    let before = hub_envelopes_from(&region, SCHOOL).await;
    let err = hub
        .send(status_envelope(&school_before, &member(&region, MBO)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("signature"), "{err:?}");
    assert_eq!(hub_envelopes_from(&region, SCHOOL).await, before);
    region.shutdown().await.unwrap();
}

/// The school's own signing key is rotated. The cards it issued before are signed again with
/// the new key (same body), so its students' consents still travel: a package sent after the
/// rotation reaches the mbo, which holds the old copy of the card and takes the new one as the
/// same card; and a withdrawal after the rotation still erases at the mbo.
#[tokio::test]
async fn after_the_schools_key_rotation_its_students_cards_still_hold() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let before = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &before).await;
    eventually(
        "the mbo holds the package sent before the rotation",
        || async { !held_sections(&region, MBO, &before).await.is_empty() },
    )
    .await;
    let mut api = region.api(SCHOOL).await.unwrap();
    let get = overstap_proto::pb::GetStudentRequest {
        pseudonym: sam.wallet.pseudonym.clone(),
    };
    let card_before = api
        .get_student(get.clone())
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();

    member::rotate_and_accept(&region.authority, &region.node_dir(SCHOOL), SCHOOL).unwrap();
    region.publish_directory_to(&[SCHOOL]).await.unwrap();
    let new_key = verifying_key(&member(&region, SCHOOL).signing_key, "school key").unwrap();
    let card_after = api
        .get_student(get)
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    assert_eq!(
        card_after.body, card_before.body,
        "the card itself is unchanged"
    );
    assert_ne!(
        card_after.sigs, card_before.sigs,
        "the card was signed again"
    );
    verify_card(&card_after, &new_key).expect("the new key signed the card");

    // A consent given after the rotation travels with the card signed again.
    let after = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "begeleiding", 30),
        None,
    )
    .await;
    send(&region, &after).await;
    eventually(
        "the mbo holds the package sent after the rotation",
        || async { !held_sections(&region, MBO, &after).await.is_empty() },
    )
    .await;
    assert!(
        !node_processed(&region, MBO)
            .await
            .iter()
            .any(|(o, _)| o == "refused" || o == "dropped"),
        "the mbo refused something: {:?}",
        node_processed(&region, MBO).await
    );
    // The first consent, withdrawn after the rotation, is erased at the mbo.
    let rev = make_revocation(&sam.wallet, &before, None, now()).unwrap();
    revoke(&mut api, rev).await.unwrap();
    eventually(
        "the mbo erases the package sent before the rotation",
        || async {
            held_sections(&region, MBO, &before).await.is_empty()
                && handover(&region, &before).await.unwrap().grant_state == "erased"
        },
    )
    .await;
    assert!(!held_sections(&region, MBO, &after).await.is_empty());
    region.shutdown().await.unwrap();
}

/// A compromised member is removed from the region: once the authority publishes the directory
/// without it, the hub refuses its certificate for every call but fetching the directory (which
/// tells it that it is out), stores nothing more from it, and an envelope it left waiting in a
/// mailbox is dropped by its recipient, with the reason on record, instead of taken in.
#[tokio::test]
async fn a_removed_member_is_refused_everything_but_the_directory() {
    use overstap_proto::pb::{
        AckRequest, GetCheckpointRequest, GetDirectoryRequest, StatsRequest, SubscribeRequest,
    };
    let (_tmp, mut region) = region().await;
    let removed = creds(&region, GEMEENTE);
    // While still a member, it leaves an envelope in the mbo's mailbox.
    region.stop_node(MBO).await.unwrap();
    hub_client(&removed)
        .send(status_envelope(&removed, &member(&region, MBO)))
        .await
        .expect("a member may send");
    region.stop_node(GEMEENTE).await.unwrap();
    region.authority.remove(GEMEENTE).unwrap();
    let version = region.publish_directory_to(&[SCHOOL]).await.unwrap();

    let denied = "the client certificate is not registered to any member of the directory";
    let mut hub = hub_client(&removed);
    let mut refusals = vec![
        (
            "Send",
            hub.send(status_envelope(&removed, &member(&region, SCHOOL)))
                .await
                .map(drop),
        ),
        (
            "Subscribe",
            hub.subscribe(SubscribeRequest { after_seq: 0 })
                .await
                .map(drop),
        ),
        (
            "Ack",
            hub.ack(AckRequest {
                envelope_ids: vec![vec![0; 16]],
            })
            .await
            .map(drop),
        ),
        (
            "GetCheckpoint",
            hub.get_checkpoint(GetCheckpointRequest {}).await.map(drop),
        ),
    ];
    refusals.push((
        "GetStats",
        overstap_proto::pb::stats_client::StatsClient::new(removed.link.channel().unwrap())
            .get_stats(StatsRequest::default())
            .await
            .map(drop),
    ));
    for (call, answer) in refusals {
        let err = answer.expect_err(call);
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{call}: {err:?}");
        assert_eq!(err.message(), denied, "{call}");
    }
    assert_eq!(
        hub_envelopes_from(&region, GEMEENTE).await,
        1,
        "the hub stored nothing from the removed member after its removal"
    );
    // The directory it may still fetch: the one that no longer lists it.
    let signed = hub
        .get_directory(GetDirectoryRequest { known_version: 0 })
        .await
        .expect("a removed member may still read the directory")
        .into_inner()
        .directory
        .expect("a directory");
    let served = overstap_proto::directory::VerifiedDirectory::verify(
        &signed,
        &region.authority.key.verifying_key(),
        0,
    )
    .unwrap();
    assert_eq!(served.version(), version);
    assert!(
        served.member(GEMEENTE).is_err(),
        "the removed member is out"
    );

    // The mbo comes back: it fetches the directory first, cannot verify what the removed
    // member left, drops it with the reason, and empties its mailbox.
    region.start_node(MBO).await.unwrap();
    eventually("the mbo drops the removed member's envelope", || async {
        node_processed(&region, MBO).await.contains(&(
            "dropped".to_string(),
            format!("sender {GEMEENTE} does not check out against the directory"),
        ))
    })
    .await;
    eventually("the mbo's mailbox is empty", || async {
        hub_count(&region, "mailbox").await == 0
    })
    .await;
    assert_eq!(node_count(&region, MBO, "processed").await, 1);
    // And the region goes on without it.
    let id = hand_over(&region, MBO).await;
    eventually("an honest package arrives", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    region.shutdown().await.unwrap();
}

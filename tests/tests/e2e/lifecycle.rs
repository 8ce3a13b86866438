//! The consent lifecycle across the region: revoke, expire, wait for the start, follow new
//! versions, and the student's trail of it. The helpers here serve `delivery` too.

use std::time::{Duration, Instant};

use overstap_proto::pb::{DeletionReceipt, SendPassportRequest, ShowPassportRequest, TrailRequest};
use overstap_proto::sign::{Domain, open_signed, verifying_key};
use overstap_region::passport::{GrantRequest, make_revocation, revoke};
use overstap_tests::cast::{GEMEENTE, MBO, SCHOOL, birth_month};
use overstap_tests::*;

pub(crate) fn request(
    to: &str,
    sections: &[&str],
    purpose: &str,
    from: i64,
    until: i64,
    live: bool,
) -> GrantRequest {
    GrantRequest {
        to: to.into(),
        sections: sections.iter().map(|s| s.to_string()).collect(),
        purpose: purpose.into(),
        not_before: from,
        not_after: until,
        live,
        may_fetch: false,
    }
}

pub(crate) async fn trail_events(
    region: &overstap_region::region::Region,
    pseudonym: &str,
) -> Vec<overstap_proto::pb::TrailEvent> {
    let mut api = region.api(SCHOOL).await.unwrap();
    api.trail(TrailRequest {
        pseudonym: pseudonym.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .events
}

/// A live grant to the mbo for one section, in force from a minute ago for a day.
pub(crate) async fn live_grant(
    region: &overstap_region::region::Region,
    wallet: &overstap_region::wallet::Wallet,
) -> String {
    grant(
        region,
        wallet,
        &request(
            MBO,
            &["wat-wil-ik"],
            "intake",
            now() - 60,
            now() + 86_400,
            true,
        ),
        None,
    )
    .await
}

/// Sam changes his mind about what he wants, and signs version 2 at the school.
pub(crate) async fn sign_version_2(
    region: &overstap_region::region::Region,
    wallet: &overstap_region::wallet::Wallet,
) {
    let mut answers: overstap_region::passport::Answers =
        serde_json::from_str(cast::SAM_ANSWERS).unwrap();
    answers.get_mut("wat-wil-ik").unwrap().insert(
        "opleiding".into(),
        overstap_region::passport::AnswerInput::Text(
            "Toch liever de opleiding tot fietstechnicus.".into(),
        ),
    );
    let draft = overstap_region::passport::draft_from_answers("pvs-mbo-v1", &answers).unwrap();
    let mut school = region.api(SCHOOL).await.unwrap();
    let v = overstap_region::passport::sign_passport(&mut school, wallet, &draft, None, now())
        .await
        .unwrap();
    assert_eq!(v, 2);
}

#[tokio::test]
async fn a_revocation_erases_at_the_recipient_and_a_signed_receipt_comes_back() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request(
            GEMEENTE,
            &["wat-heb-ik-nodig", "ondersteuning-vo"],
            "begeleiding",
            60,
        ),
        None,
    )
    .await;
    send(&region, &id).await;
    eventually("the municipality holds it", || async {
        held_sections(&region, GEMEENTE, &id).await.len() == 2
    })
    .await;
    assert_eq!(node_count(&region, GEMEENTE, "received_sections").await, 2);

    let started = Instant::now();
    let mut school = region.api(SCHOOL).await.unwrap();
    revoke(
        &mut school,
        make_revocation(&sam.wallet, &id, None, now()).unwrap(),
    )
    .await
    .unwrap();
    eventually("the receipt is back at the school", || async {
        handover(&region, &id)
            .await
            .is_some_and(|h| h.grant_state == "erased")
    })
    .await;
    println!(
        "erasure delay, revoke to receipt at the school: {} ms",
        started.elapsed().as_millis()
    );

    // Gone at the municipality, every row of it.
    assert!(held_sections(&region, GEMEENTE, &id).await.is_empty());
    assert_eq!(node_count(&region, GEMEENTE, "received").await, 0);
    assert_eq!(node_count(&region, GEMEENTE, "received_sections").await, 0);

    // The trail shows it, with the recipient's signed receipt and the hub's receipts checked.
    let events = trail_events(&region, &sam.wallet.pseudonym).await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    for needed in [
        "consent",
        "sent",
        "delivered",
        "revoked",
        "revocation sent",
        "erased",
    ] {
        assert!(names.contains(&needed), "no {needed} in {names:?}");
    }
    let erased = events.iter().find(|e| e.event == "erased").unwrap();
    assert!(
        erased.receipt_verified,
        "the hub's receipt for the deletion receipt checks out"
    );
    let receipt = erased
        .evidence
        .as_ref()
        .expect("the signed deletion receipt is kept");
    let key = verifying_key(&member(&region, GEMEENTE).signing_key, "key").unwrap();
    let r: DeletionReceipt =
        open_signed(Domain::DeletionReceipt, receipt, &key).expect("signed by the municipality");
    assert_eq!(
        (
            r.grant_id.as_str(),
            r.reason.as_str(),
            r.recipient_org.as_str()
        ),
        (id.as_str(), "revoked", GEMEENTE)
    );
    for e in events.iter().filter(|e| e.hub_receipt.is_some()) {
        assert!(
            e.receipt_verified,
            "{} has a receipt that does not check out",
            e.event
        );
    }

    // The same package sent again under the revoked grant is refused, and nothing is stored.
    let err = school
        .send_passport(SendPassportRequest {
            grant_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("is erased") || err.message().contains("is revoked"),
        "{}",
        err.message()
    );
    let replay = package_envelope(
        &region,
        &creds(&region, SCHOOL),
        GEMEENTE,
        &sam,
        &stored_grant(&region, &id).await,
        &["wat-heb-ik-nodig"],
        "begeleiding",
    );
    hub_client(&creds(&region, SCHOOL))
        .send(replay)
        .await
        .unwrap();
    eventually("the municipality refuses the replay", || async {
        node_processed(&region, GEMEENTE)
            .await
            .iter()
            .any(|(o, d)| o == "refused" && d.contains("was erased here"))
    })
    .await;
    assert_eq!(node_count(&region, GEMEENTE, "received").await, 0);
    region.shutdown().await.unwrap();
}

/// The grant as the school stored it.
async fn stored_grant(
    region: &overstap_region::region::Region,
    id: &str,
) -> overstap_proto::pb::Signed {
    let pool = node_pool(region, SCHOOL).await;
    let bytes: Vec<u8> = sqlx::Row::get(
        &sqlx::query("SELECT signed FROM grants WHERE grant_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
    );
    pool.close().await;
    prost::Message::decode(bytes.as_slice()).unwrap()
}

#[tokio::test]
async fn a_revocation_while_the_recipient_is_away_is_carried_out_when_it_returns() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 60),
        None,
    )
    .await;
    send(&region, &id).await;
    eventually("the mbo holds it", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    region.stop_node(MBO).await.unwrap();
    let mut school = region.api(SCHOOL).await.unwrap();
    revoke(
        &mut school,
        make_revocation(&sam.wallet, &id, None, now()).unwrap(),
    )
    .await
    .unwrap();
    region
        .wait_for(
            SCHOOL,
            Duration::from_secs(20),
            "the revocation leaving",
            |s| s.outbox_pending == 0,
        )
        .await
        .unwrap();
    assert_eq!(
        node_count(&region, MBO, "received").await,
        1,
        "still there while the mbo is away"
    );
    assert_eq!(handover(&region, &id).await.unwrap().grant_state, "revoked");

    region.start_node(MBO).await.unwrap();
    eventually(
        "erased and the receipt back, within one sync round",
        || async {
            handover(&region, &id)
                .await
                .is_some_and(|h| h.grant_state == "erased")
        },
    )
    .await;
    assert_eq!(node_count(&region, MBO, "received").await, 0);
    assert_eq!(node_count(&region, MBO, "erased").await, 1);
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn expiry_erases_with_a_receipt_and_the_school_sees_it_end() {
    let (_tmp, region, clock) = region_with_clock().await;
    let sam = student(&region, &birth_month(17), None).await;
    let t = clock.now();
    let id = grant(
        &region,
        &sam.wallet,
        &request(MBO, &["wie-ben-ik"], "intake", t - 60, t + 3600, false),
        None,
    )
    .await;
    send(&region, &id).await;
    eventually("the mbo holds it", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    clock.advance(3601);
    eventually("the reaper erased it and the receipt is back", || async {
        handover(&region, &id)
            .await
            .is_some_and(|h| h.grant_state == "erased")
    })
    .await;
    assert_eq!(node_count(&region, MBO, "received").await, 0);
    let events = trail_events(&region, &sam.wallet.pseudonym).await;
    let erased = events
        .iter()
        .find(|e| e.event == "erased")
        .expect("erased in the trail");
    assert!(erased.detail.contains("expired"), "{}", erased.detail);
    // Nothing can be sent under it any more.
    let mut school = region.api(SCHOOL).await.unwrap();
    assert!(
        school
            .send_passport(SendPassportRequest {
                grant_id: id,
                ..Default::default()
            })
            .await
            .is_err()
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_grant_that_is_not_yet_valid_waits_in_the_outbox_until_it_starts() {
    let (_tmp, region, clock) = region_with_clock().await;
    let sam = student(&region, &birth_month(17), None).await;
    let t = clock.now();
    let id = grant(
        &region,
        &sam.wallet,
        &request(
            MBO,
            &["wat-wil-ik"],
            "intake",
            t + 86_400,
            t + 30 * 86_400,
            false,
        ),
        None,
    )
    .await;
    let r = send(&region, &id).await;
    assert!(r.envelope_id.is_empty());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hub_envelopes_from(&region, SCHOOL).await,
        0,
        "nothing leaves before the start"
    );
    clock.advance(86_401);
    eventually("it leaves once the grant starts, and arrives", || async {
        held_sections(&region, MBO, &id).await == ["wat-wil-ik"]
    })
    .await;
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_live_grant_follows_new_versions_and_the_old_version_is_erased_there() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let live = live_grant(&region, &sam.wallet).await;
    let fixed = grant(
        &region,
        &sam.wallet,
        &request(
            GEMEENTE,
            &["wat-wil-ik"],
            "begeleiding",
            now() - 60,
            now() + 86_400,
            false,
        ),
        None,
    )
    .await;
    send(&region, &live).await;
    send(&region, &fixed).await;
    eventually("both hold version 1", || async {
        !held_sections(&region, MBO, &live).await.is_empty()
            && !held_sections(&region, GEMEENTE, &fixed).await.is_empty()
    })
    .await;
    // Sam changes his mind about what he wants, and signs version 2.
    sign_version_2(&region, &sam.wallet).await;
    let shown = |org: &'static str, grant: String| {
        let region = &region;
        async move {
            let mut api = region.api(org).await.unwrap();
            api.show_passport(ShowPassportRequest {
                grant_id: grant,
                staff_user: "test".into(),
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    eventually("the live grant's holder gets version 2", || async {
        let mut api = region.api(MBO).await.unwrap();
        api.inbox(overstap_proto::pb::InboxRequest {})
            .await
            .unwrap()
            .into_inner()
            .items
            .iter()
            .any(|i| i.grant_id == live && i.status == "ontvangen" && { true })
            && node_count(&region, MBO, "received").await == 1
            && {
                let pool = node_pool(&region, MBO).await;
                let v: i64 = sqlx::Row::get(
                    &sqlx::query("SELECT version FROM received")
                        .fetch_one(&pool)
                        .await
                        .unwrap(),
                    0,
                );
                pool.close().await;
                v == 2
            }
    })
    .await;
    let at_mbo = shown(MBO, live.clone()).await;
    assert_eq!(at_mbo.version, 2);
    let text: Vec<String> = at_mbo
        .sections
        .iter()
        .flat_map(|s| s.answers.iter().map(|a| a.answer.clone()))
        .collect();
    assert!(text.iter().any(|t| t.contains("fietstechnicus")));
    assert!(
        !text.iter().any(|t| t.contains("Monteur mobiliteit")),
        "the superseded answer is gone"
    );
    assert_eq!(
        node_count(&region, MBO, "received_sections").await,
        1,
        "exactly the consented section"
    );
    // The grant that does not follow keeps version 1.
    let at_gm = shown(GEMEENTE, fixed.clone()).await;
    assert_eq!(at_gm.version, 1);
    let events = trail_events(&region, &sam.wallet.pseudonym).await;
    assert!(
        events.iter().any(|e| e.event == "replaced" && e.org == MBO),
        "the mbo's erasure of version 1 is in the trail"
    );
    region.shutdown().await.unwrap();
}

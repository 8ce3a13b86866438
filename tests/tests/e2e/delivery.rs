//! How the exchange keeps its order and its record: statuses and views travel back to the
//! school, a gap in a sender's order is filled by a resend, directory changes are picked up
//! without a restart, a revocation racing a push leaves a true record, and a full mailbox is
//! taken in in runs.

use std::time::Duration;

use overstap_proto::pb::{MemberKind, SendPassportRequest, SetStatusRequest, ShowPassportRequest};
use overstap_region::member;
use overstap_region::passport::{make_revocation, revoke};
use overstap_tests::cast::{GEMEENTE, MBO, SCHOOL, birth_month};
use overstap_tests::*;

use crate::lifecycle::{live_grant, sign_version_2, trail_events};

#[tokio::test]
async fn status_and_views_travel_back_to_the_school() {
    let (_tmp, region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 60),
        None,
    )
    .await;
    send(&region, &id).await;
    eventually("ontvangen reaches the school", || async {
        handover(&region, &id)
            .await
            .is_some_and(|h| h.status == "ontvangen")
    })
    .await;
    let mut mbo = region.api(MBO).await.unwrap();
    mbo.show_passport(ShowPassportRequest {
        grant_id: id.clone(),
        staff_user: "intake.jansen".into(),
    })
    .await
    .unwrap();
    mbo.show_passport(ShowPassportRequest {
        grant_id: id.clone(),
        staff_user: "coach.de.vries".into(),
    })
    .await
    .unwrap();
    eventually("gelezen and two views reach the school", || async {
        handover(&region, &id)
            .await
            .is_some_and(|h| h.status == "gelezen" && h.views == 2)
    })
    .await;
    mbo.set_status(SetStatusRequest {
        grant_id: id.clone(),
        status: "intake gepland".into(),
        staff_user: "intake.jansen".into(),
    })
    .await
    .unwrap();
    eventually("intake gepland reaches the school", || async {
        handover(&region, &id)
            .await
            .is_some_and(|h| h.status == "intake gepland")
    })
    .await;
    let err = mbo
        .set_status(SetStatusRequest {
            grant_id: id.clone(),
            status: "geweldig".into(),
            staff_user: "x".into(),
        })
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("is not one of ontvangen, gelezen, intake gepland, gestart, niet gestart"),
        "{}",
        err.message()
    );
    // The access log at the mbo names the staff; the school learns when, and by which org.
    assert_eq!(node_count(&region, MBO, "access_log").await, 2);
    let events = trail_events(&region, &sam.wallet.pseudonym).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == "viewed" && e.org == MBO)
            .count(),
        2
    );
    assert!(
        events.iter().all(|e| !e.detail.contains("intake.jansen")),
        "staff names stay at the recipient"
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_gap_left_by_a_dishonest_hub_is_filled_by_a_resend() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    region.stop_node(MBO).await.unwrap();
    let first = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 60),
        None,
    )
    .await;
    let second = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wat-kan-ik"], "intake", 60),
        None,
    )
    .await;
    send(&region, &first).await;
    send(&region, &second).await;
    region
        .wait_for(SCHOOL, Duration::from_secs(20), "both pushed", |s| {
            s.outbox_pending == 0
        })
        .await
        .unwrap();
    // The hub drops the first one from the mailbox: the receipt was given, the envelope is gone.
    let dropped = hub_execute(
        &region,
        "DELETE FROM mailbox WHERE seq = (SELECT MIN(seq) FROM mailbox WHERE to_org = $1)",
        &[MBO],
    )
    .await;
    assert_eq!(dropped, 1);
    region.start_node(MBO).await.unwrap();
    eventually(
        "the mbo notices the gap, asks again, and gets both",
        || async {
            !held_sections(&region, MBO, &first).await.is_empty()
                && !held_sections(&region, MBO, &second).await.is_empty()
        },
    )
    .await;
    assert_eq!(
        node_count(&region, MBO, "held").await,
        0,
        "nothing left waiting"
    );
    assert_eq!(
        hub_envelopes_from(&region, SCHOOL).await,
        3,
        "the first was sealed again under a new envelope id"
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn directory_changes_reach_every_node_without_a_restart() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    // A new member joins while everything runs.
    region
        .admit_and_start(overstap_region::region::Org::new(
            "26AB",
            MemberKind::Mbo,
            "Groene College",
        ))
        .await
        .unwrap();
    let v = region.authority.directory().unwrap().version();
    region
        .wait_for(
            SCHOOL,
            Duration::from_secs(20),
            "the school fetching the new directory",
            |s| s.directory_version == v,
        )
        .await
        .unwrap();
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request("26AB", &["wie-ben-ik"], "intake", 60),
        None,
    )
    .await;
    send(&region, &id).await;
    eventually("the new member receives", || async {
        !held_sections(&region, "26AB", &id).await.is_empty()
    })
    .await;

    // The mbo's keys are rotated; it follows without a restart and keeps receiving.
    member::rotate_and_accept(&region.authority, &region.node_dir(MBO), MBO).unwrap();
    region.publish_directory_to(&[SCHOOL, MBO]).await.unwrap();
    let after = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wat-kan-ik"], "intake", 60),
        None,
    )
    .await;
    send(&region, &after).await;
    eventually("sealed to the new key, opened with it", || async {
        !held_sections(&region, MBO, &after).await.is_empty()
    })
    .await;

    // A member is removed: the school can no longer send to it, and says why.
    let to_removed = grant(
        &region,
        &sam.wallet,
        &grant_request(GEMEENTE, &["wie-ben-ik"], "begeleiding", 60),
        None,
    )
    .await;
    let old_gm = member(&region, GEMEENTE);
    region.authority.remove(GEMEENTE).unwrap();
    region.publish_directory_to(&[SCHOOL]).await.unwrap();
    let mut school = region.api(SCHOOL).await.unwrap();
    let err = school
        .send_passport(SendPassportRequest {
            grant_id: to_removed,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("unknown member GM0193"),
        "{}",
        err.message()
    );
    // And the hub refuses an envelope to it outright, sealed with what the school knew before.
    let school_creds = creds(&region, SCHOOL);
    let env = overstap_proto::envelope::seal(
        overstap_proto::envelope::Outgoing {
            envelope_id: [7; 16],
            from_org: SCHOOL,
            kind: overstap_proto::pb::EnvelopeKind::Status,
            created_at: now(),
            payload: overstap_proto::pb::Payload::default(),
        },
        &school_creds.signing,
        &old_gm,
    )
    .unwrap();
    let err = hub_client(&school_creds).send(env).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        err.message(),
        "unknown member GM0193: not in the signed directory"
    );
    region.shutdown().await.unwrap();
}

/// A student withdraws consent while the school's push of a whole class is under way. Whatever
/// the timing, the school's record must say what happened: a package its trail says was sent is
/// one the recipient stored (and then erased), and one it says was withdrawn before it left is
/// one the recipient never stored. (A revocation that raced a push used to turn a package that
/// had already reached the hub into a "withdrawn" skip, and drop its receipt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_a_push_leaves_a_true_record() {
    use overstap_proto::pb::SendPassportsRequest;
    let (_tmp, region) = region().await;
    let mut class = Vec::new();
    for _ in 0..80 {
        let s = student(&region, &birth_month(17), None).await;
        let id = grant(
            &region,
            &s.wallet,
            &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
            None,
        )
        .await;
        class.push((s, id));
    }
    let mut api = region.api(SCHOOL).await.unwrap();
    api.send_passports(SendPassportsRequest {
        grant_ids: class.iter().map(|(_, id)| id.clone()).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Withdrawals spread over the push, as it goes: the last of the class first, so some are
    // withdrawn before they leave and some after.
    let withdrawn: Vec<usize> = (3..80).step_by(8).rev().collect();
    for &i in &withdrawn {
        let (s, id) = &class[i];
        revoke(
            &mut api,
            make_revocation(&s.wallet, id, None, now()).unwrap(),
        )
        .await
        .unwrap();
    }
    eventually(
        "every package and withdrawal has left the school",
        || async {
            let pool = node_pool(&region, SCHOOL).await;
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'waiting')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            left == 0
        },
    )
    .await;
    // 80 numbered envelopes (a package, or a skip in its place) and the withdrawals.
    eventually("the mbo has taken in every envelope", || async {
        node_count(&region, MBO, "held").await == 0
            && node_count(&region, MBO, "processed").await >= (80 + withdrawn.len()) as i64
    })
    .await;
    let stored: Vec<String> = node_processed(&region, MBO)
        .await
        .into_iter()
        .filter(|(outcome, _)| outcome == "stored")
        .map(|(_, grant_id)| grant_id)
        .collect();
    let mut arrived_anyway = 0;
    for &i in &withdrawn {
        let (s, id) = &class[i];
        let events = trail_events(&region, &s.wallet.pseudonym).await;
        let said_sent = events
            .iter()
            .any(|e| e.grant_id == *id && e.event == "sent");
        let was_stored = stored.contains(id);
        assert_eq!(
            said_sent,
            was_stored,
            "grant {id}: the school's trail says {} but the mbo {} it; trail: {:?}",
            if said_sent { "sent" } else { "not sent" },
            if was_stored { "stored" } else { "never stored" },
            events.iter().map(|e| &e.event).collect::<Vec<_>>()
        );
        arrived_anyway += usize::from(was_stored);
    }
    println!(
        "{arrived_anyway} of {} withdrawn packages had left before the withdrawal",
        withdrawn.len()
    );
    region.shutdown().await.unwrap();
}

/// A node that was away takes in its mailbox in runs (a commit for every stretch that comes in
/// its sender's order), with the same result as one envelope at a time: a new version behind
/// the one it replaces, a revocation behind its package, and a gap the hub left, each handled
/// as it comes, and every envelope acked.
#[tokio::test]
async fn a_full_mailbox_is_taken_in_in_runs_with_the_same_result() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    region.stop_node(MBO).await.unwrap();
    let live = live_grant(&region, &sam.wallet).await;
    send(&region, &live).await;
    let sections = ["wie-ben-ik", "wat-kan-ik", "wat-heb-ik-nodig"];
    let mut others = Vec::new();
    for i in 0..10 {
        let id = grant(
            &region,
            &sam.wallet,
            &grant_request(MBO, &[sections[i % 3]], "intake", 60),
            None,
        )
        .await;
        send(&region, &id).await;
        others.push(id);
    }
    region
        .wait_for(SCHOOL, Duration::from_secs(20), "all pushed", |s| {
            s.outbox_pending == 0
        })
        .await
        .unwrap();
    // One is revoked while its package waits in the mailbox, and Sam signs version 2, which the
    // live grant follows.
    let mut school = region.api(SCHOOL).await.unwrap();
    revoke(
        &mut school,
        make_revocation(&sam.wallet, &others[2], None, now()).unwrap(),
    )
    .await
    .unwrap();
    sign_version_2(&region, &sam.wallet).await;
    region
        .wait_for(SCHOOL, Duration::from_secs(20), "all pushed", |s| {
            s.outbox_pending == 0
        })
        .await
        .unwrap();
    assert_eq!(
        hub_mailbox(&region, MBO).await.len(),
        13,
        "version 1, ten packages, a revocation and version 2 wait for the mbo"
    );
    // The hub loses the sixth: the five behind it wait for the school to send it again.
    let dropped = hub_execute(
        &region,
        "DELETE FROM mailbox WHERE seq = \
         (SELECT seq FROM mailbox WHERE to_org = $1 ORDER BY seq LIMIT 1 OFFSET 5)",
        &[MBO],
    )
    .await;
    assert_eq!(dropped, 1);
    region.start_node(MBO).await.unwrap();
    eventually(
        "the mbo has taken in everything, the lost one again",
        || async {
            node_count(&region, MBO, "received").await == 10
                && node_count(&region, MBO, "held").await == 0
                && hub_mailbox(&region, MBO).await.is_empty()
        },
    )
    .await;
    for (i, id) in others.iter().enumerate() {
        let held = held_sections(&region, MBO, id).await;
        if i == 2 {
            assert!(held.is_empty(), "the revoked grant's package is erased");
        } else {
            assert_eq!(held, vec![sections[i % 3].to_string()], "grant {i}");
        }
    }
    let pool = node_pool(&region, MBO).await;
    let version: i64 = sqlx::Row::get(
        &sqlx::query("SELECT version FROM received WHERE grant_id = $1")
            .bind(&live)
            .fetch_one(&pool)
            .await
            .unwrap(),
        0,
    );
    pool.close().await;
    assert_eq!(version, 2, "the live grant holds the new version");
    eventually("the school hears of the erasure", || async {
        handover(&region, &others[2])
            .await
            .is_some_and(|h| h.grant_state == "erased")
    })
    .await;
    let outcomes = node_processed(&region, MBO).await;
    assert!(
        outcomes.iter().all(|(o, _)| o == "stored" || o == "erased"),
        "each envelope taken in once, the lost one asked for once: {outcomes:?}"
    );
    assert_eq!(outcomes.len(), 13, "{outcomes:?}");
    let metrics = scrape(&region.metrics_url(MBO).unwrap()).await;
    let commits = metrics
        .get("overstap_node_inbox_commit_envelopes_count")
        .copied()
        .unwrap_or(0.0);
    println!(
        "{commits} commits took in {} envelopes in runs",
        metrics
            .get("overstap_node_inbox_commit_envelopes_sum")
            .copied()
            .unwrap_or(0.0)
    );
    assert!(commits > 0.0, "the inbox took its mailbox in through runs");
    region.shutdown().await.unwrap();
}

/// Two versions of one passport that wait back to back in the mailbox are taken in in one
/// stretch (one commit): the second is checked against what the first stored in the same
/// transaction, not against what the stretch read before it began. The newer version is kept,
/// the school hears the first was replaced, and a student the mbo took in nothing of before,
/// sent beside them, is stored without a lookup going wrong.
#[tokio::test]
async fn two_versions_in_one_stretch_keep_the_newer() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let ann = student(&region, &birth_month(16), None).await;
    region.stop_node(MBO).await.unwrap();
    let live = live_grant(&region, &sam.wallet).await;
    send(&region, &live).await;
    let other = live_grant(&region, &ann.wallet).await;
    send(&region, &other).await;
    sign_version_2(&region, &sam.wallet).await;
    region
        .wait_for(SCHOOL, Duration::from_secs(20), "all pushed", |s| {
            s.outbox_pending == 0
        })
        .await
        .unwrap();
    assert_eq!(
        hub_mailbox(&region, MBO).await.len(),
        3,
        "Sam's version 1, Ann's passport and Sam's version 2 wait for the mbo"
    );
    region.start_node(MBO).await.unwrap();
    eventually("the mbo has taken in its mailbox", || async {
        node_count(&region, MBO, "processed").await == 3
            && hub_mailbox(&region, MBO).await.is_empty()
    })
    .await;
    let pool = node_pool(&region, MBO).await;
    let held: Vec<(String, i64)> =
        sqlx::query("SELECT grant_id, version FROM received ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (sqlx::Row::get(r, 0), sqlx::Row::get(r, 1)))
            .collect();
    pool.close().await;
    let mut want = vec![(other.clone(), 1), (live.clone(), 2)];
    want.sort_by_key(|(_, v)| *v);
    assert_eq!(held, want, "Ann's passport, and Sam's version 2 alone");
    let outcomes = node_processed(&region, MBO).await;
    assert_eq!(
        outcomes.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(),
        ["stored", "stored", "stored"],
        "{outcomes:?}"
    );
    let metrics = scrape(&region.metrics_url(MBO).unwrap()).await;
    assert_eq!(
        (
            metrics
                .get("overstap_node_inbox_commit_envelopes_count")
                .copied(),
            metrics
                .get("overstap_node_inbox_commit_envelopes_sum")
                .copied()
        ),
        (Some(1.0), Some(3.0)),
        "all three in one stretch, one commit"
    );
    eventually("the school's trail says version 1 was replaced", || async {
        trail_events(&region, &sam.wallet.pseudonym)
            .await
            .iter()
            .any(|e| e.event == "replaced")
    })
    .await;
    region.shutdown().await.unwrap();
}

/// A hub that signs its receipts with a key the directory does not list: the school checks
/// every receipt against the directory's hub key, refuses them, and marks nothing sent; the
/// envelopes wait in its outbox with the reason.
#[tokio::test]
async fn receipts_not_signed_by_the_directorys_hub_are_refused_and_nothing_is_marked_sent() {
    let (_tmp, mut region) = region().await;
    region
        .run_hub_with(|mut config, listener, stop| async move {
            config.signing_key = overstap_proto::sign::generate_signing_key();
            overstap_hub::serve(config, listener, stop).await
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let s = student(&region, &birth_month(17), None).await;
        let request = grant_request(MBO, &["wie-ben-ik"], "intake", 30);
        ids.push(grant(&region, &s.wallet, &request, None).await);
    }
    let mut api = region.api(SCHOOL).await.unwrap();
    api.send_passports(overstap_proto::pb::SendPassportsRequest {
        grant_ids: ids.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let school = node_pool(&region, SCHOOL).await;
    eventually("the school refused a receipt", || async {
        let refused: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE detail LIKE 'receipt refused%'")
                .fetch_one(&school)
                .await
                .unwrap();
        refused > 0
    })
    .await;
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM outbox WHERE detail LIKE 'receipt refused%'")
            .fetch_one(&school)
            .await
            .unwrap();
    assert!(detail.contains("no signature by key"), "{detail}");
    for (sql, expected) in [
        ("SELECT COUNT(*) FROM outbox WHERE state = 'sent'", 0),
        ("SELECT COUNT(*) FROM outbox WHERE receipt IS NOT NULL", 0),
        ("SELECT COUNT(*) FROM trail WHERE event = 'sent'", 0),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&school).await.unwrap();
        assert_eq!(n, expected, "{sql}");
    }
    school.close().await;
    region.shutdown().await.unwrap();
}

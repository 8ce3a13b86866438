//! Limits under abuse: while one member floods the hub with calls, holds idle connections and
//! fills a mailbox, an honest member's handover still completes. Every limit answers with
//! `RESOURCE_EXHAUSTED` and a reason, and says when to try again where waiting helps.

use std::time::Duration;

use overstap_hub::limits::Limits;
use overstap_tests::demo::{GEMEENTE, MBO, OTHER_MBO, SCHOOL};
use overstap_tests::*;

#[tokio::test]
async fn a_flooding_member_is_held_back_and_an_honest_handover_still_completes() {
    let (_tmp, mut region) = region().await;
    region
        .set_hub_limits(Limits {
            requests_per_second: 40,
            subscriptions_per_member: 2,
            mailbox_quota: 3,
            ..Limits::default()
        })
        .await
        .unwrap();
    // The flood: four tasks calling as fast as they can, as the municipality's stolen identity.
    let flooder = creds(&region, GEMEENTE);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut hub = hub_client(&flooder);
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..150 {
                if let Err(s) = hub
                    .get_checkpoint(overstap_proto::pb::GetCheckpointRequest {})
                    .await
                    && s.code() == tonic::Code::ResourceExhausted
                {
                    refused.push(s);
                }
            }
            refused
        }));
    }
    // And fifty connections that never say a word (a slow client holding sockets).
    let hub_addr = region.hub_url.trim_start_matches("https://").to_string();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(&hub_addr).await.unwrap());
    }
    // Meanwhile, an honest handover.
    let id = hand_over(&region, MBO).await;
    eventually("the honest handover arrives", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(t.await.unwrap());
    }
    assert!(
        !refused.is_empty(),
        "600 calls at once must meet the limit of 40 per second"
    );
    let s = &refused[0];
    assert!(
        s.message()
            .contains("GM0193 made more than 40 calls per second"),
        "{}",
        s.message()
    );
    assert!(
        s.metadata().get("retry-after").is_some(),
        "waiting helps: say when"
    );
    drop(idle);

    // Subscriptions: the other mbo's node holds one, a second opens, a third is refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let other = creds(&region, OTHER_MBO);
    let second = hub_client(&other)
        .subscribe(overstap_proto::pb::SubscribeRequest { after_seq: 0 })
        .await
        .unwrap();
    let err = hub_client(&other)
        .subscribe(overstap_proto::pb::SubscribeRequest { after_seq: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("already has 2 subscriptions open"),
        "{}",
        err.message()
    );
    drop(second);

    // A mailbox nobody empties: past the quota, senders are asked to wait, and nothing is
    // stored; once the recipient picks up, sending works again.
    region.stop_node(MBO).await.unwrap();
    let school = creds(&region, SCHOOL);
    let to = member(&region, MBO);
    let mut sent = 0;
    let err = loop {
        tokio::time::sleep(Duration::from_millis(30)).await;
        match hub_client(&school)
            .send(status_envelope(&school, &to))
            .await
        {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 3, "the quota of 3 was not applied");
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message()
            .contains("the mailbox of 30RT holds 3 envelopes not yet picked up"),
        "{}",
        err.message()
    );
    assert_eq!(err.metadata().get("retry-after").unwrap(), "60");
    let stored = hub_count(&region, "mailbox").await;
    assert_eq!(stored, 3, "the refused envelope was not stored");
    // The school's node meets the full mailbox too: a package to the mbo waits, and one queued
    // after it for the other mbo still goes.
    let waits = hand_over(&region, MBO).await;
    let goes = hand_over(&region, OTHER_MBO).await;
    eventually(
        "the other mbo gets its package past the full mailbox",
        || async { !held_sections(&region, OTHER_MBO, &goes).await.is_empty() },
    )
    .await;
    region.start_node(MBO).await.unwrap();
    eventually(
        "the waiting package follows once the mbo picks up",
        || async { !held_sections(&region, MBO, &waits).await.is_empty() },
    )
    .await;
    eventually("the mbo empties its mailbox", || async {
        hub_count(&region, "mailbox").await == 0
    })
    .await;
    hub_client(&school)
        .send(status_envelope(&school, &to))
        .await
        .expect("room again once the mailbox is picked up");
    region.shutdown().await.unwrap();
}

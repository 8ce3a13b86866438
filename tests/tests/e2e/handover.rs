//! The story itself: the demo passes, the hub holds no plaintext, and handovers survive a node
//! that is away and a hub that restarts.

use std::time::Duration;

use overstap_proto::pb::{
    InboxRequest, NodeStatusRequest, SendPassportRequest, SendPassportsRequest, ShowPassportRequest,
};
use overstap_tests::cast::{self, GEMEENTE, MBO, SCHOOL, birth_month};
use overstap_tests::*;

#[tokio::test]
async fn the_demo_story_passes_and_the_hub_holds_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let passed = overstap_cli::demo::run(tmp.path(), &mut out, false)
        .await
        .expect("the demo passes");
    let text = String::from_utf8(out).unwrap();
    assert!(passed >= 16, "{text}");
    assert!(
        text.contains(&format!("{passed} checks passed, 0 failed")),
        "{text}"
    );
    // An independent look at the hub's files, with the texts a person would search for.
    let hub = overstap_region::region::hub_contents(tmp.path())
        .await
        .unwrap();
    // (Well over a few kilobytes: the directory, every envelope's receipt and hashes, the log.)
    assert!(
        hub.len() > 4_000,
        "only {} bytes read from the hub",
        hub.len()
    );
    let mut needles = cast::answer_texts(cast::SAM_ANSWERS);
    needles.extend(cast::answer_texts(cast::NOOR_ANSWERS));
    needles.extend(
        [
            "Wie ben ik?",
            "Wat heb ik nodig?",
            "Hoe zou je jezelf beschrijven",
            "brommers",
        ]
        .map(String::from),
    );
    for n in &needles {
        assert!(
            !hub.windows(n.len()).any(|w| w == n.as_bytes()),
            "the hub's database contains {n:?}"
        );
    }
    // The log entries themselves, byte for byte as the hub hashes them into its tree and serves
    // them: no pseudonym of any student of the demo, and no answer.
    let school = overstap_tests::database_pool(
        &overstap_region::region::node_database_url(tmp.path(), SCHOOL).unwrap(),
    )
    .await;
    let pseudonyms: Vec<String> = sqlx::query_scalar("SELECT pseudonym FROM students")
        .fetch_all(&school)
        .await
        .unwrap();
    school.close().await;
    assert!(pseudonyms.len() >= 2);
    sqlx::any::install_default_drivers();
    let hub_pool =
        sqlx::AnyPool::connect(&overstap_region::region::hub_database_url(tmp.path()).unwrap())
            .await
            .unwrap();
    let entries: Vec<Vec<u8>> = sqlx::query_as::<_, (String, i64, String, String, Vec<u8>, Vec<u8>, i64)>(
        "SELECT event, CAST(envelope_kind AS BIGINT), from_org, to_org, envelope_id, body_sha256, at FROM events ORDER BY log_index",
    )
    .fetch_all(&hub_pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at)| {
        overstap_proto::log::entry_bytes(&overstap_proto::log::LogEntry {
            event,
            envelope_kind: envelope_kind as i32,
            from_org,
            to_org,
            envelope_id,
            body_sha256,
            at,
        })
    })
    .collect();
    hub_pool.close().await;
    assert!(entries.len() >= 10, "a full demo logs its envelopes");
    for n in pseudonyms.iter().chain(&needles) {
        for e in &entries {
            assert!(
                !e.windows(n.len()).any(|w| w == n.as_bytes()),
                "a log entry contains {n:?}"
            );
        }
    }
    // And the same texts did arrive at the mbo: the check above can find them where they are.
    let mbo = overstap_region::region::node_contents(tmp.path(), MBO)
        .await
        .unwrap();
    assert!(
        mbo.windows(8).any(|w| w == b"brommers"),
        "the mbo's database should hold Sam's answer"
    );

    // Every member made its keys in its own folder: no file the authority holds has a private
    // key of any member, in the hex of the key files, as raw bytes, or as a TLS key.
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for member in std::fs::read_dir(tmp.path()).unwrap() {
        let folder = member.unwrap().path();
        for file in ["keys/signing.key", "keys/encryption.key", "tls/key.pem"] {
            let Ok(text) = std::fs::read_to_string(folder.join(file)) else {
                continue;
            };
            let name = format!("{}/{file}", folder.display());
            if let Ok(raw) = hex::decode(text.trim()) {
                secrets.push((name.clone(), raw));
            } else {
                let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                use base64::Engine;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .unwrap();
                // The private scalar, in the PKCS#8 DER: ECPrivateKey's version 1, then an
                // octet string of 32 bytes.
                let at = der
                    .windows(5)
                    .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
                    .expect("an EC private key")
                    + 5;
                secrets.push((format!("{name} (scalar)"), der[at..at + 32].to_vec()));
                secrets.push((name.clone(), body.into_bytes()));
            }
            secrets.push((format!("{name} (hex)"), text.trim().as_bytes().to_vec()));
        }
    }
    let members_with_keys = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("keys/signing.key").exists())
        .count();
    assert!(
        members_with_keys >= 4,
        "the hub and every node hold their own keys"
    );
    let mut authority_files = vec![tmp.path().join("authority")];
    let mut scanned = 0;
    while let Some(path) = authority_files.pop() {
        if path.is_dir() {
            authority_files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        for (name, secret) in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "{} holds the private key {name}",
                path.display()
            );
        }
    }
    assert!(scanned >= 5, "the authority's folder holds its files");
}

#[tokio::test]
async fn a_node_that_was_away_gets_its_passport_when_it_returns() {
    let (_tmp, mut region) = region().await;
    region.stop_node(MBO).await.unwrap();
    let sam = student(&region, &birth_month(17), None).await;
    let id = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik", "wat-heb-ik-nodig"], "intake", 30),
        None,
    )
    .await;
    let mut school = region.api(SCHOOL).await.unwrap();
    school
        .send_passport(SendPassportRequest {
            grant_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    region
        .wait_for(SCHOOL, Duration::from_secs(20), "the push", |s| {
            s.outbox_pending == 0
        })
        .await
        .unwrap();
    assert_eq!(
        hub_count(&region, "mailbox").await,
        1,
        "the hub keeps it while the mbo is away"
    );
    region.start_node(MBO).await.unwrap();
    region
        .wait_for(MBO, Duration::from_secs(20), "the delivery", |s| {
            s.inbox_count == 1
        })
        .await
        .unwrap();
    let mut mbo = region.api(MBO).await.unwrap();
    let p = mbo
        .show_passport(ShowPassportRequest {
            grant_id: id,
            staff_user: "intake".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = p.sections.iter().map(|s| s.section_id.as_str()).collect();
    assert_eq!(ids, ["wie-ben-ik", "wat-heb-ik-nodig"]);
    eventually("the hub's mailbox empties after the ack", || async {
        hub_count(&region, "mailbox").await == 0
    })
    .await;
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn handovers_continue_across_a_hub_restart() {
    let (_tmp, mut region) = region().await;
    let sam = student(&region, &birth_month(17), None).await;
    let mut school = region.api(SCHOOL).await.unwrap();
    let first = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    school
        .send_passport(SendPassportRequest {
            grant_id: first,
            ..Default::default()
        })
        .await
        .unwrap();
    region
        .wait_for(MBO, Duration::from_secs(20), "the first delivery", |s| {
            s.inbox_count == 1
        })
        .await
        .unwrap();
    region.restart_hub().await.unwrap();
    let second = grant(
        &region,
        &sam.wallet,
        &grant_request(MBO, &["wat-kan-ik"], "intake", 30),
        None,
    )
    .await;
    school
        .send_passport(SendPassportRequest {
            grant_id: second,
            ..Default::default()
        })
        .await
        .unwrap();
    region
        .wait_for(MBO, Duration::from_secs(30), "the second delivery", |s| {
            s.inbox_count == 2
        })
        .await
        .unwrap();
    let mut mbo = region.api(MBO).await.unwrap();
    let items = mbo.inbox(InboxRequest {}).await.unwrap().into_inner().items;
    assert_eq!(items.len(), 2);
    let s = mbo.status(NodeStatusRequest {}).await.unwrap().into_inner();
    assert!(s.hub_connected);
    assert_eq!(
        hub_envelopes_from(&region, SCHOOL).await,
        2,
        "each package stored once"
    );
    region.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_hub_answers_the_grpc_health_check_over_mtls() {
    let (_tmp, region) = region().await;
    let channel = creds(&region, SCHOOL).link.channel().unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "overstap.v1.Hub".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    region.shutdown().await.unwrap();
}

/// A mentor sends a whole class at once: 32 passports, 16 calls at a time, each answered (none
/// with "database is locked"), and every one arrives. Before the node queued its writers itself,
/// writers waiting inside SQLite held the pool's connections while the one holding the lock
/// needed another, and calls failed after the 10 s busy timeout.
#[tokio::test]
async fn a_class_sent_at_once_is_answered_and_arrives() {
    let (_tmp, region) = region().await;
    let grants = class_with_consents(&region, 32).await;
    let mut sending = tokio::task::JoinSet::new();
    for pair in grants.chunks(2) {
        let mut api = region.api(SCHOOL).await.unwrap();
        let pair = pair.to_vec();
        sending.spawn(async move {
            for grant_id in pair {
                api.send_passport(overstap_proto::pb::SendPassportRequest {
                    grant_id,
                    ..Default::default()
                })
                .await?;
            }
            Ok::<_, tonic::Status>(())
        });
    }
    while let Some(done) = sending.join_next().await {
        done.unwrap().expect("every send is answered");
    }
    eventually("the mbo holds all 32 packages", || async {
        node_count(&region, MBO, "received").await == 32
    })
    .await;
    region.shutdown().await.unwrap();
}

/// A mentor pushes a whole class in one call (`SendPassports`, `overstap send --grant … --grant
/// …`): more than one transaction's worth, with a grant id that does not exist in the middle and
/// a grant to a member that has left the region (found only while sealing, inside the batch's
/// transaction). Every other passport is sealed and arrives, each bad one gets its own error in
/// its place and leaves nothing behind, and a call that names a grant twice, or none, is
/// refused before anything is sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_pushed_in_one_call_arrives_and_a_bad_grant_holds_up_no_other() {
    let (_tmp, region) = region().await;
    let class = overstap_node::core::SEND_BATCH + 2;
    let mut grant_ids = class_with_consents(&region, class).await;
    let leaver = student(&region, &birth_month(17), None).await;
    let to_removed = grant(
        &region,
        &leaver.wallet,
        &grant_request(GEMEENTE, &["wie-ben-ik"], "begeleiding", 30),
        None,
    )
    .await;
    region.authority.remove(GEMEENTE).unwrap();
    region.publish_directory_to(&[SCHOOL]).await.unwrap();
    let mut api = region.api(SCHOOL).await.unwrap();
    use overstap_proto::pb::SendPassportsRequest;
    for (ids, says) in [
        (vec![], "name at least one grant"),
        (
            vec![
                grant_ids[0].clone(),
                grant_ids[1].clone(),
                grant_ids[0].clone(),
            ],
            "is named twice",
        ),
    ] {
        let refused = api
            .send_passports(SendPassportsRequest {
                grant_ids: ids,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    assert_eq!(
        node_count(&region, SCHOOL, "outbox").await,
        0,
        "nothing sealed"
    );

    let mut asked = grant_ids.clone();
    asked.insert(50, "g-nobody-gave-this".into());
    asked.insert(20, to_removed.clone());
    let results = api
        .send_passports(SendPassportsRequest {
            grant_ids: asked.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        results
            .iter()
            .map(|r| r.grant_id.clone())
            .collect::<Vec<_>>(),
        asked,
        "one result per grant, in the order asked"
    );
    for r in &results {
        if r.grant_id == "g-nobody-gave-this" {
            assert!(r.sent.is_none());
            assert!(
                r.error.contains("no grant g-nobody-gave-this"),
                "{}",
                r.error
            );
        } else if r.grant_id == to_removed {
            assert!(r.sent.is_none());
            assert!(r.error.contains("unknown member GM0193"), "{}", r.error);
        } else {
            assert!(r.error.is_empty(), "{}: {}", r.grant_id, r.error);
            let sent = r.sent.as_ref().unwrap();
            assert_eq!(sent.to_org, MBO);
            assert_eq!(sent.envelope_id.len(), 16);
        }
    }
    eventually("the mbo holds the whole class", || async {
        node_count(&region, MBO, "received").await == class as i64
    })
    .await;
    // Nothing of the grant to the municipality was kept: no row, no sequence number used.
    let school = node_pool(&region, SCHOOL).await;
    for (sql, expected) in [
        ("SELECT COUNT(*) FROM outbox WHERE to_org = 'GM0193'", 0),
        ("SELECT COUNT(*) FROM peers WHERE org = 'GM0193'", 0),
        ("SELECT COUNT(*) FROM outbox", class as i64),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&school).await.unwrap();
        assert_eq!(n, expected, "{sql}");
    }
    // Sealed on several threads, written in multi-row inserts: the recipient's sequence numbers
    // still run 1, 2, 3 … in the outbox's (sending) order, with no gap where a grant failed.
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT peer_seq FROM outbox ORDER BY seq")
        .fetch_all(&school)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=class as i64).collect::<Vec<_>>());
    // Each grant sent is marked sent with its version (a class in one statement); the one to
    // the municipality is not.
    let marked: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT grant_id, sent_version FROM grants ORDER BY grant_id")
            .fetch_all(&school)
            .await
            .unwrap();
    for (grant_id, version) in marked {
        let expected = (grant_id != to_removed).then_some(1);
        assert_eq!(version, expected, "the version marked sent for {grant_id}");
    }
    school.close().await;
    let pool = node_pool(&region, MBO).await;
    let mut arrived: Vec<String> = sqlx::query_scalar("SELECT grant_id FROM received")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    arrived.sort();
    grant_ids.sort();
    assert_eq!(arrived, grant_ids);

    // The school hears of each arrival ("ontvangen", and "delivered" in each student's trail),
    // while the college answered the runs it took in with one status envelope per run.
    let school = node_pool(&region, SCHOOL).await;
    let count = |sql: &'static str| {
        let school = school.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&school)
                .await
                .unwrap()
        }
    };
    eventually("the school hears that each passport arrived", || async {
        count("SELECT COUNT(*) FROM grants WHERE status = 'ontvangen'").await == class as i64
    })
    .await;
    assert_eq!(
        count("SELECT COUNT(*) FROM trail WHERE event = 'delivered'").await,
        class as i64
    );
    assert!(
        count("SELECT COUNT(*) FROM run_statuses").await >= 1,
        "at least one run was answered in one envelope"
    );
    school.close().await;
    let mbo = node_pool(&region, MBO).await;
    let statuses: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = $1")
        .bind(overstap_proto::pb::EnvelopeKind::Status as i32)
        .fetch_one(&mbo)
        .await
        .unwrap();
    mbo.close().await;
    assert!(
        statuses < class as i64,
        "{statuses} status envelopes for {class} packages"
    );
    region.shutdown().await.unwrap();
}

/// `n` students of 17 at the school, each with a passport and a consent for the mbo: their
/// grant ids.
async fn class_with_consents(region: &overstap_region::region::Region, n: usize) -> Vec<String> {
    let mut grants = Vec::with_capacity(n);
    for _ in 0..n {
        let s = student(region, &birth_month(17), None).await;
        grants.push(
            grant(
                region,
                &s.wallet,
                &grant_request(MBO, &["wie-ben-ik"], "intake", 30),
                None,
            )
            .await,
        );
    }
    grants
}

/// An operator's ordinary SQLite client (python's `sqlite3`, read-only) that reads the live hub
/// database while envelopes flow, and the region's own look at the hub's files between sends
/// (what the demo's plaintext check does), do no harm: every package arrives, the hub keeps
/// running, and the database stays whole. Reading the files with `std::fs::read` inside the
/// hub's process dropped the hub's POSIX locks, the outside reader rebuilt the `-shm` index
/// under it, and the whole region died of SIGBUS within a few sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_sqlite_reader_of_the_live_hub_database_does_no_harm() {
    const READER: &str = r#"
import select, sqlite3, sys
db, reads = sys.argv[1], 0
while True:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    c.execute("SELECT count(*) FROM events").fetchone()
    c.close()
    reads += 1
    ready, _, _ = select.select([sys.stdin], [], [], 0.005)
    if ready and not sys.stdin.read(1):
        break
c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
print(reads, c.execute("PRAGMA quick_check").fetchone()[0])
"#;
    let tmp = tempfile::tempdir().unwrap();
    // The hub on SQLite in both passes of ./test: this test is about its files.
    let region = overstap_region::Region::start_hub_with_database(
        tmp.path(),
        &cast::demo_orgs(),
        overstap_node::system_clock(),
        true,
        None,
    )
    .await
    .unwrap()
    .start_nodes()
    .await
    .unwrap();
    let mut reader = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(READER)
        .arg(region.hub_db())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 starts (./test installs it)");
    for _ in 0..6 {
        let id = hand_over(&region, MBO).await;
        overstap_region::region::hub_contents(tmp.path())
            .await
            .expect("the hub's files read");
        eventually("the package arrives at the mbo college", || async {
            !held_sections(&region, MBO, &id).await.is_empty()
        })
        .await;
    }
    drop(reader.stdin.take());
    let out = reader.wait_with_output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the outside reader failed: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (reads, check) = said.trim().split_once(' ').expect("reads and check");
    assert!(reads.parse::<u32>().unwrap() > 0, "the reader read: {said}");
    assert_eq!(check, "ok", "the hub's database after the reads");
    region.shutdown().await.unwrap();
}

/// Sending a grant twice seals once: the second answer says the version was sent already and
/// nothing leaves; `again` seals it anew. A new version under a live grant is not "already".
#[tokio::test]
async fn sending_a_grant_twice_seals_once_unless_asked_again() {
    let (_tmp, region) = region().await;
    let id = hand_over(&region, MBO).await;
    let mut api = region.api(SCHOOL).await.unwrap();
    let outbox = || async { node_count(&region, SCHOOL, "outbox").await };
    let before = outbox().await;
    let twice = api
        .send_passport(SendPassportRequest {
            grant_id: id.clone(),
            again: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(twice.already_sent, "{twice:?}");
    assert!(twice.envelope_id.is_empty(), "nothing was sealed");
    assert_eq!((twice.version, twice.to_org.as_str()), (1, MBO));
    assert_eq!(outbox().await, before, "no new outbox row");
    let again = api
        .send_passport(SendPassportRequest {
            grant_id: id.clone(),
            again: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !again.already_sent && !again.envelope_id.is_empty(),
        "{again:?}"
    );
    assert_eq!(outbox().await, before + 1, "sealed anew");
    // A class asked twice: each grant is named as sent already, none sealed.
    let class = api
        .send_passports(SendPassportsRequest {
            grant_ids: vec![id.clone()],
            again: false,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        class[0].sent.as_ref().is_some_and(|s| s.already_sent),
        "{class:?}"
    );
    assert_eq!(outbox().await, before + 1);
}

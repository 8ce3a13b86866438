//! Limits under abuse: while one member floods the hub with calls, holds idle connections and
//! fills a mailbox, an honest member's handover still completes. Every limit answers with
//! `RESOURCE_EXHAUSTED` and a reason, and says when to try again where waiting helps.

use std::time::Duration;

use overstap_hub::limits::Limits;
use overstap_tests::cast::{GEMEENTE, MBO, OTHER_MBO, SCHOOL};
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

/// A member that sends envelopes with sequence numbers far ahead fills at most
/// `max_held_per_sender` rows of the recipient's `held` table; the rest are dropped (and would be
/// asked for again once the gap is filled), and an honest handover to the same node completes.
#[tokio::test]
async fn a_sender_far_ahead_of_itself_fills_only_its_share_of_the_held_table() {
    let (_tmp, mut region) = region().await;
    region.stop_node(MBO).await.unwrap();
    let toml = region.node_dir(MBO).join("node.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.insert_str(0, "max_held_per_sender = 3\n");
    std::fs::write(&toml, text).unwrap();
    region.start_node(MBO).await.unwrap();

    let prober = creds(&region, OTHER_MBO);
    let mut hub = hub_client(&prober);
    let to = member(&region, MBO);
    for seq in 100..108u64 {
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let envelope = overstap_proto::envelope::seal(
            overstap_proto::envelope::Outgoing {
                envelope_id: id,
                from_org: OTHER_MBO,
                kind: overstap_proto::pb::EnvelopeKind::Status,
                created_at: now(),
                payload: overstap_proto::pb::Payload {
                    seq,
                    ..status_payload()
                },
            },
            &prober.signing,
            &to,
        )
        .unwrap();
        hub.send(envelope).await.unwrap();
    }
    eventually("the mbo has taken all eight off its mailbox", || async {
        let processed = node_processed(&region, MBO).await;
        processed.iter().filter(|(o, _)| o == "dropped").count() == 5
    })
    .await;
    assert_eq!(node_count(&region, MBO, "held").await, 3);
    let dropped = node_processed(&region, MBO).await;
    let (_, detail) = dropped.iter().find(|(o, _)| o == "dropped").unwrap();
    assert!(
        detail.contains("3 envelopes from 27XK already wait for sequence number 1"),
        "{detail}"
    );
    // The school's handover to the same node is not held back.
    let id = hand_over(&region, MBO).await;
    eventually("the honest package arrives", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    region.shutdown().await.unwrap();
}

/// Starts a call whose request never arrives (the headers come, the body does not), the way a
/// slow or stalled client holds a stream; returns how the server ended it.
async fn stalled_call(
    channel: tonic::transport::Channel,
    path: &'static str,
    token: Option<&str>,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("the server takes calls");
    let mut request = tonic::Request::new(tokio_stream::pending::<overstap_proto::pb::Envelope>());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.trim()).parse().unwrap(),
        );
    }
    let codec = tonic_prost::ProstCodec::<overstap_proto::pb::Envelope, overstap_proto::pb::Signed>::default();
    tokio::time::timeout(
        Duration::from_secs(15),
        grpc.client_streaming(request, http::uri::PathAndQuery::from_static(path), codec),
    )
    .await
    .expect("the server held the stalled call open for 15 s")
    .expect_err("a request that never arrives cannot be answered")
}

/// A client that starts a call and never finishes sending it is cut off with
/// `DEADLINE_EXCEEDED` and a reason, at the hub and at a node's local API, while an honest
/// handover completes beside it.
#[tokio::test]
async fn a_stalled_request_ends_with_deadline_exceeded_at_hub_and_node() {
    let (_tmp, mut region) = region().await;
    region
        .set_hub_limits(Limits {
            request_timeout_secs: 1,
            ..Limits::default()
        })
        .await
        .unwrap();
    region.stop_node(MBO).await.unwrap();
    let toml = region.node_dir(MBO).join("node.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.insert_str(0, "api_request_timeout_secs = 1\n");
    std::fs::write(&toml, text).unwrap();
    region.start_node(MBO).await.unwrap();

    let slow = creds(&region, GEMEENTE);
    let hub_stall = tokio::spawn(stalled_call(
        slow.link.channel().unwrap(),
        "/overstap.v1.Hub/Send",
        None,
    ));
    let url = std::fs::read_to_string(region.node_dir(MBO).join("api.url")).unwrap();
    let token = std::fs::read_to_string(region.node_dir(MBO).join("api.token")).unwrap();
    let node_channel = tonic::transport::Endpoint::from_shared(url.trim().to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let node_stall = tokio::spawn(async move {
        stalled_call(node_channel, "/overstap.v1.Node/AddGrant", Some(&token)).await
    });
    // The honest handover goes on meanwhile.
    let id = hand_over(&region, MBO).await;
    eventually("the honest package arrives", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    for status in [hub_stall.await.unwrap(), node_stall.await.unwrap()] {
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        assert!(
            status.message().contains("request_timeout_secs"),
            "{status:?}"
        );
        assert_eq!(
            status
                .metadata()
                .get("overstap-limit")
                .and_then(|v| v.to_str().ok()),
            Some("request_timeout")
        );
    }
    region.shutdown().await.unwrap();
}

/// A connection gets no more concurrent calls than `streams_per_connection`: with two allowed,
/// a third call on the same connection only starts once one of the first two has ended, while
/// another member's handover goes on.
#[tokio::test]
async fn a_connection_gets_no_more_concurrent_calls_than_its_stream_limit() {
    let (_tmp, mut region) = region().await;
    region
        .set_hub_limits(Limits {
            streams_per_connection: 2,
            request_timeout_secs: 2,
            ..Limits::default()
        })
        .await
        .unwrap();
    let channel = creds(&region, GEMEENTE).link.channel().unwrap();
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for _ in 0..3 {
        let channel = channel.clone();
        calls.push(tokio::spawn(async move {
            let status = stalled_call(channel, "/overstap.v1.Hub/Send", None).await;
            (status, started.elapsed())
        }));
        // In order: the third is the one that must wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = hand_over(&region, MBO).await;
    eventually("the honest package arrives", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    let mut ended = Vec::new();
    for call in calls {
        let (status, at) = call.await.unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        ended.push(at);
    }
    // Each call ends 2 s after it started on the server; the third could start only when one of
    // the first two ended, so it ends about 2 s after them, not with them.
    let first_two = ended[0].max(ended[1]);
    assert!(
        ended[2] > first_two + Duration::from_millis(1000),
        "the third call was not held back: ended at {ended:?}"
    );
    region.shutdown().await.unwrap();
}

/// Opens a TLS connection to `addr` (a port of the hub) with `member`'s certificate, offering
/// `alpn`, and returns the stream without saying a word on it.
async fn tls_to_hub(
    addr: &str,
    alpn: &[u8],
    member: &Creds,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&member.link.ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_slice_iter(&member.link.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&member.link.key_pem).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(member.link.server_name.clone().try_into().unwrap(), tcp)
        .await
        .expect("a member's certificate passes the handshake")
}

/// How long until the hub closes `stream` (reading, never writing), or `None` if it held the
/// connection open for `patience`.
async fn closed_within(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    patience: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(patience, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A member's connection that goes silent is closed: one that says nothing at all once TLS is up
/// (after `greeting_timeout_secs`, at the gRPC port and at the dashboard's), and one that opens
/// HTTP/2 and then answers none of the hub's keep-alive pings (after `idle_timeout_secs`).
/// Meanwhile an honest handover completes.
#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let (_tmp, mut region) = region().await;
    region
        .set_hub_limits(Limits {
            idle_timeout_secs: 2,
            greeting_timeout_secs: 2,
            ..Limits::default()
        })
        .await
        .unwrap();
    let member = creds(&region, GEMEENTE);
    let grpc = region.hub_url.trim_start_matches("https://").to_string();
    let web = region.dashboard_url().unwrap();
    let web = web.trim_start_matches("https://").trim_end_matches('/');
    let mute = tls_to_hub(&grpc, b"h2", &member).await;
    let mute_web = tls_to_hub(web, b"http/1.1", &member).await;
    let mut deaf = tls_to_hub(&grpc, b"h2", &member).await;
    // The client preface and an empty SETTINGS frame, then nothing: no ACK, no ping answered.
    deaf.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    deaf.flush().await.unwrap();
    let patience = Duration::from_secs(20);
    let mute = tokio::spawn(closed_within(mute, patience));
    let mute_web = tokio::spawn(closed_within(mute_web, patience));
    let deaf = tokio::spawn(closed_within(deaf, patience));
    let id = hand_over(&region, MBO).await;
    eventually("the honest package arrives", || async {
        !held_sections(&region, MBO, &id).await.is_empty()
    })
    .await;
    for (what, closed) in [
        ("silent after TLS", mute),
        ("to the dashboard silent after TLS", mute_web),
        ("deaf to pings", deaf),
    ] {
        let after = closed
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("a connection {what} was held open for {patience:?}"));
        assert!(
            after >= Duration::from_millis(900),
            "a connection {what} was closed after {after:?}, before any timeout could pass"
        );
    }
    region.shutdown().await.unwrap();
}

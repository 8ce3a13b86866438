//! Monitoring: the hub's and the nodes' Prometheus `/metrics` parse as OpenMetrics text, and
//! their counters match the envelopes that were really sent, refused and waiting.

use std::collections::BTreeMap;

use overstap_tests::cast::{MBO, OTHER_MBO, SCHOOL, birth_month};
use overstap_tests::*;

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {samples:?}"))
}

#[tokio::test]
async fn metrics_parse_and_their_counters_match_the_envelopes_sent() {
    let (_tmp, mut region) = region().await;
    let mut ids = Vec::new();
    for to in [MBO, MBO, OTHER_MBO] {
        ids.push((to, hand_over(&region, to).await));
    }
    for (to, id) in &ids {
        eventually("the package is held", || async {
            !held_sections(&region, to, id).await.is_empty()
        })
        .await;
    }
    // A member that claims to be another is refused, and counted by reason.
    let mut impostor = creds(&region, SCHOOL);
    impostor.org = MBO.into();
    let envelope = status_envelope(&impostor, &member(&region, OTHER_MBO));
    let err = hub_client(&creds(&region, SCHOOL))
        .send(envelope)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let hub_url = region.metrics_url("hub").unwrap();
    // Statuses ("ontvangen") flow back after each package; wait until everything is acked, then
    // the hub's counters must equal what its database holds.
    eventually("the hub's counters match its envelopes", || async {
        let m = scrape(&hub_url).await;
        let accepted: f64 = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with("overstap_hub_envelopes_total{") && k.contains("outcome=\"accepted\"")
            })
            .map(|(_, v)| v)
            .sum();
        accepted == hub_count(&region, "envelopes").await as f64
            && hub_count(&region, "mailbox").await == 0
            && get(&m, "overstap_hub_send_to_ack_seconds_count") == accepted
    })
    .await;
    let hub = scrape(&hub_url).await;
    assert_eq!(
        get(
            &hub,
            "overstap_hub_envelopes_total{kind=\"package\",outcome=\"accepted\"}"
        ),
        3.0
    );
    assert_eq!(
        get(
            &hub,
            "overstap_hub_envelopes_total{kind=\"status\",outcome=\"refused\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &hub,
            "overstap_hub_rejections_total{reason=\"wrong_sender\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &hub,
            &format!("overstap_hub_mailbox_depth{{recipient=\"{MBO}\"}}")
        ),
        0.0
    );
    assert_eq!(
        get(&hub, "overstap_hub_subscribers"),
        4.0,
        "one subscription per node"
    );
    // The sequencer signs a checkpoint every 250 ms; on a loaded machine, give it time.
    eventually("the hub's log size shows its entries", || async {
        get(&scrape(&hub_url).await, "overstap_hub_log_entries") > 0.0
    })
    .await;

    let school = scrape(&region.metrics_url(SCHOOL).unwrap()).await;
    assert_eq!(
        get(
            &school,
            "overstap_node_envelopes_sent_total{kind=\"package\"}"
        ),
        3.0
    );
    assert_eq!(get(&school, "overstap_node_log_alarm"), 0.0);
    assert_eq!(get(&school, "overstap_node_hub_connected"), 1.0);
    let mbo = scrape(&region.metrics_url(MBO).unwrap()).await;
    assert_eq!(
        get(
            &mbo,
            "overstap_node_envelopes_received_total{kind=\"package\"}"
        ),
        2.0
    );

    // With the mbo's node down, a package waits in its mailbox, and the hub shows it.
    region.stop_node(MBO).await.unwrap();
    hand_over(&region, MBO).await;
    eventually("the hub shows the waiting package", || async {
        get(
            &scrape(&hub_url).await,
            &format!("overstap_hub_mailbox_depth{{recipient=\"{MBO}\"}}"),
        ) == 1.0
    })
    .await;
    region.shutdown().await.unwrap();
}

#[test]
fn the_metrics_parser_refuses_what_prometheus_would_refuse() {
    let ok = "# HELP a_total A.\n# TYPE a counter\na_total{k=\"v\"} 3\n# EOF\n";
    assert_eq!(parse_metrics(ok).unwrap()["a_total{k=\"v\"}"], 3.0);
    for bad in [
        "# TYPE a counter\na_total 3\n",
        "# TYPE a counter\na_total three\n# EOF\n",
        "# TYPE a counter\nb_total 3\n# EOF\n",
        "# TYPE a counter\na_total{k=v} 3\n# EOF\n",
        "# TYPE a counter\na_total{k=\"v\" 3\n# EOF\n",
        "# SOMETHING\n# EOF\n",
    ] {
        assert!(parse_metrics(bad).is_err(), "{bad:?}");
    }
}

/// A coordinator sees the known mix the region routed, with small counts as "<5" and a count
/// that would give one away as "x"; any other member is refused.
#[tokio::test]
async fn a_coordinator_sees_the_known_mix_and_small_counts_read_below_five() {
    let (_tmp, mut region) = region().await;
    admit_coordinator(&mut region).await;
    // Six packages to the mbo and two to the other mbo.
    let mut to_mbo = Vec::new();
    for _ in 0..6 {
        to_mbo.push(hand_over(&region, MBO).await);
    }
    for _ in 0..2 {
        hand_over(&region, OTHER_MBO).await;
    }
    for id in &to_mbo {
        eventually("the mbo holds it", || async {
            !held_sections(&region, MBO, id).await.is_empty()
        })
        .await;
    }
    // A student withdraws one consent: the mbo erases and its receipt states why in the header,
    // which the hub keeps for the counts.
    let sam = student(&region, &birth_month(17), None).await;
    let withdrawn = grant(
        &region,
        &sam.wallet,
        &grant_request(OTHER_MBO, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(&region, &withdrawn).await;
    eventually("the other mbo holds it", || async {
        !held_sections(&region, OTHER_MBO, &withdrawn)
            .await
            .is_empty()
    })
    .await;
    overstap_region::passport::revoke(
        &mut region.api(SCHOOL).await.unwrap(),
        overstap_region::passport::make_revocation(&sam.wallet, &withdrawn, None, now()).unwrap(),
    )
    .await
    .unwrap();
    eventually("the deletion receipt is back at the school", || async {
        handover(&region, &withdrawn)
            .await
            .is_some_and(|h| h.grant_state == "erased")
    })
    .await;
    let pool = hub_pool(&region).await;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT erasure_reason FROM envelopes WHERE kind = 3")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(reasons, ["revoked"]);
    pool.close().await;
    // The mbo is away: a seventh package waits in its mailbox.
    region.stop_node(MBO).await.unwrap();
    hand_over(&region, MBO).await;
    eventually("the hub holds the waiting package", || async {
        hub_count(&region, "mailbox").await >= 1
    })
    .await;

    let stats = overstap_cli::stats::fetch(&region.node_dir("RMC01"), 0, 0)
        .await
        .unwrap();
    assert_eq!(stats.threshold, 5);
    let pair = |to: &str| {
        stats
            .pairs
            .iter()
            .find(|p| p.from_org == SCHOOL && p.to_org == to)
            .unwrap_or_else(|| panic!("no pair {SCHOOL} → {to}: {:?}", stats.pairs))
    };
    // Seven beside the week's ten would give away the other mbo's three: hidden to protect it.
    let seven = pair(MBO).packages.unwrap();
    assert!(
        seven.suppressed && seven.protects && seven.value == 0,
        "{stats:?}"
    );
    assert_eq!(pair(MBO).from_kind, "school");
    assert_eq!(pair(MBO).to_kind, "mbo");
    assert!(pair(OTHER_MBO).packages.unwrap().suppressed);
    assert!(stats.erasures.unwrap().suppressed && stats.revocations.unwrap().suppressed);
    let waiting = stats.waiting.iter().find(|w| w.org_id == MBO).unwrap();
    assert!(waiting.under_1_day.unwrap().suppressed && !waiting.at_risk);
    let week = stats
        .volume
        .iter()
        .find(|v| v.granularity == "week" && v.from_kind == "school" && v.to_kind == "mbo")
        .unwrap();
    assert_eq!(week.packages.unwrap().value, 10);
    // Every format shows the small counts as "<5".
    let json = overstap_cli::stats::render(
        &stats,
        overstap_cli::stats::By::Pair,
        overstap_cli::stats::ReportFormat::Json,
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let other = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["to_org"] == OTHER_MBO)
        .unwrap();
    assert_eq!(other["packages"], "<5");
    let mbo = json["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["to_org"] == MBO)
        .unwrap();
    assert_eq!(mbo["packages"], "x");
    let csv = overstap_cli::stats::render(
        &stats,
        overstap_cli::stats::By::Pair,
        overstap_cli::stats::ReportFormat::Csv,
    )
    .unwrap();
    assert!(
        csv.lines().any(|l| l.starts_with(&format!("{SCHOOL},"))
            && l.contains(&format!(",{OTHER_MBO},"))
            && l.ends_with(",<5,<5")),
        "{csv}"
    );

    // A school is not a coordinator.
    let school = creds(&region, SCHOOL);
    let err = overstap_proto::pb::stats_client::StatsClient::new(school.link.channel().unwrap())
        .get_stats(overstap_proto::pb::StatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message()
            .contains("only coordinators see the region's statistics"),
        "{}",
        err.message()
    );
    region.shutdown().await.unwrap();
}

/// An operator's grpcurl can list the hub's services: reflection answers over mTLS.
#[tokio::test]
async fn the_hub_answers_grpc_reflection_over_mtls() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let (_tmp, region) = region().await;
    let school = creds(&region, SCHOOL);
    let mut client = ServerReflectionClient::new(school.link.channel().unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in [
        "overstap.v1.Hub",
        "overstap.v1.Stats",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&service), "{service} missing from {names:?}");
    }
    region.shutdown().await.unwrap();
}

/// `overstap health`, which the container health checks and Kubernetes probes run: it says a
/// running hub and node serve, and names the problem when the hub is down.
#[tokio::test]
async fn the_health_command_says_whether_hub_and_node_serve() {
    use overstap_cli::commands::HealthCmd;
    let (_tmp, mut region) = region().await;
    let hub_toml = region.dir.join("hub").join("hub.toml");
    overstap_cli::health::health(HealthCmd::Hub {
        config: hub_toml.clone(),
        name: "localhost".into(),
    })
    .await
    .expect("the hub serves");
    // The node chose its API port (api_listen port 0): the command finds it in api.url.
    let probe = region.node_dir(MBO).join("node.toml");
    overstap_cli::health::health(HealthCmd::Node { config: probe })
        .await
        .expect("the node serves");

    region.stop_hub().await.unwrap();
    let err = overstap_cli::health::health(HealthCmd::Hub {
        config: hub_toml,
        name: "localhost".into(),
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("the hub on port") && err.to_string().contains("did not answer"),
        "{err:#}"
    );
    region.start_hub().await.unwrap();
    region.shutdown().await.unwrap();
}

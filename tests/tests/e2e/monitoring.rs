//! Monitoring: the hub's and the nodes' Prometheus `/metrics` parse as OpenMetrics text, and
//! their counters match the envelopes that were really sent, refused and waiting.

use std::collections::BTreeMap;

use overstap_tests::demo::{MBO, OTHER_MBO, SCHOOL, birth_month};
use overstap_tests::*;

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

async fn hand_over(region: &overstap_cli::region::Region, to: &str) -> String {
    let s = student(region, &birth_month(17), None).await;
    let id = grant(
        region,
        &s.wallet,
        &grant_request(to, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(region, &id).await;
    id
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
    assert!(get(&hub, "overstap_hub_log_entries") > 0.0);

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

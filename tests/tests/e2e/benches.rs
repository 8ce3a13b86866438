//! The load commands run, small, and report what they measured: a figure that BENCHMARKS.md
//! records must come from a command that still works.

use overstap_bench::handover::handover_bench;
use overstap_bench::hub::{HubPlan, hub_bench};
use overstap_bench::subscribers::subscribers_bench;

/// The routing bench, with NATS JetStream when one listens on 127.0.0.1:4222 (it does on these
/// machines and in CI) and PostgreSQL when `OVERSTAP_TEST_POSTGRES` names one.
#[tokio::test]
async fn the_hub_benchmark_runs_and_reports_every_figure_it_was_asked_for() {
    let nats = tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .is_ok()
        .then(|| "127.0.0.1:4222".to_string());
    let postgres = std::env::var("OVERSTAP_TEST_POSTGRES").ok();
    let mut out = Vec::new();
    let plan = HubPlan {
        envelopes: 64,
        senders: 4,
        rounds: 1,
        sizes: vec![4096],
        batches: vec![1, 64],
        postgres: postgres.clone(),
        nats: nats.clone(),
    };
    let b = hub_bench(plan, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        b.figures.iter().map(|f| f.per_call).collect::<Vec<_>>(),
        [1, 64],
        "one by one, then in SendBatch calls as a school pushes: {text}"
    );
    assert!(text.contains("64 per SendBatch"), "{text}");
    for f in &b.figures {
        assert!(f.baseline_per_s > 0.0 && f.sqlite_per_s > 0.0, "{text}");
        assert!(
            (f.sqlite_over_baseline - f.sqlite_per_s / f.baseline_per_s).abs() < 1e-9,
            "{f:?}"
        );
        assert_eq!(f.nats_per_s.is_some(), nats.is_some(), "{f:?}");
        assert_eq!(
            f.postgres_two_replicas_per_s.is_some(),
            postgres.is_some(),
            "{f:?}"
        );
    }
    assert!(text.contains("envelopes per commit"), "{text}");
    if nats.is_some() {
        assert!(text.contains("NATS JetStream"), "{text}");
    }
}

#[tokio::test]
async fn the_handover_benchmark_stores_every_passport_it_sends() {
    let _heavy = overstap_tests::HEAVY.lock().await;
    let mut out = Vec::new();
    let b = handover_bench(20, 5, None, None, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!((b.cohort, b.samples, b.mbo_nodes), (20, 5, 5), "{text}");
    assert!(b.cohort_seconds > 0.0, "{text}");
    assert!(
        b.latency_p50_ms > 0.0 && b.latency_p50_ms <= b.latency_p99_ms,
        "{b:?}"
    );
    assert!(text.contains("all stored at the mbo nodes"), "{text}");
}

#[tokio::test]
async fn the_pull_benchmark_stores_every_passport_pulled_and_pushed() {
    let _heavy = overstap_tests::HEAVY.lock().await;
    let mut out = Vec::new();
    let b = overstap_bench::pull::pull_bench(20, 5, &mut out)
        .await
        .unwrap();
    let said = String::from_utf8(out).unwrap();
    assert!(said.contains("all stored at the colleges"), "{said}");
    assert!(b.pull_per_s > 0.0 && b.push_per_s > 0.0);
    assert!((b.pull_to_push - b.pull_per_s / b.push_per_s).abs() < 1e-9);
    assert!(b.latency_p50_ms > 0.0 && b.latency_p99_ms >= b.latency_p50_ms);
}

#[tokio::test]
async fn the_subscribers_benchmark_counts_every_subscription_at_the_hub() {
    let mut out = Vec::new();
    let b = subscribers_bench(
        30,
        Some(env!("CARGO_BIN_EXE_hub-under-test").into()),
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    // The bench waits until the hub's own gauge counts all 30 before it reads the memory.
    assert_eq!(b.subscribed, 30, "{text}");
    assert!(
        b.hub_rss_idle_mib > 0.0 && b.hub_rss_subscribed_mib > 0.0,
        "{b:?}"
    );
}

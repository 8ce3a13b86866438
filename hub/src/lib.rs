//! `overstap-hub`: the regional hub. It routes sealed envelopes between member nodes, keeps each
//! recipient's mailbox until the recipient acknowledges, appends every routing event to a log,
//! and serves the authority-signed directory. It can read no content.
//!
//! Layout:
//! - [`settings`]: the typed settings (file, environment, flags) and the resolved [`HubConfig`].
//! - [`tls`]: TLS 1.3 with required client certificates from the region CA.
//! - [`deadline`]: the time limit on every call.
//! - [`limits`]: the limits under abuse (call rates, mailbox quota, open subscriptions).
//! - [`service`]: the `Hub` gRPC service; decodes, checks, calls the store, maps errors.
//!   - `service/mod.rs`: the shared state, the constructor, the errors and their one mapping to
//!     statuses, the caller's check, and the `Hub` trait handing each call to its room.
//!   - `service/send.rs`: `Send` and `SendBatch`, the mailbox quota, and the group commit.
//!   - `service/mailbox.rs`: `Subscribe` and `Ack`, and waking subscribers on arrivals.
//!   - `service/directory.rs`: installing the authority-signed directory; `GetDirectory` and
//!     `PublishDirectory`.
//!   - `service/log.rs`: integrating the log and signing checkpoints; checkpoints,
//!     cosignatures, proofs and entries.
//!   - `service/metrics.rs`: the metrics scrape, its gauges read fresh.
//! - [`stats`]: the `Stats` service: aggregates for coordinators, small counts suppressed.
//! - [`store`]: the storage trait and its SQLite and PostgreSQL implementations.
//! - [`sqlite_pool`]: the one way hub and node open a SQLite pool.
//! - [`dashboard`]: the coordinators' web dashboard (HTTPS, assets in the binary).
//! - [`metrics`]: the Prometheus metrics, served by [`metrics_http`] on a plain-HTTP port of
//!   their own.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests and the demo run a hub
//! in-process on `127.0.0.1:0`.
#![forbid(unsafe_code)]

pub mod dashboard;
pub mod deadline;
pub mod limits;
pub mod metrics;
pub mod metrics_http;
pub mod service;
pub mod settings;
pub mod sqlite_pool;
pub mod stats;
pub mod store;
pub mod tls;

use std::future::Future;

use anyhow::Context;
use overstap_proto::pb::hub_server::{Hub, HubServer};
use overstap_proto::pb::stats_server::StatsServer;
use tokio::net::TcpListener;

pub use service::{HubError, HubService};
pub use settings::{HubConfig, Settings};
pub use store::{HubStore, PostgresStore, SqliteStore};

/// Room for the header and protobuf framing on top of the largest body; anything beyond four
/// times the body limit is refused by the transport before it is buffered.
const TRANSPORT_LIMIT_FACTOR: usize = 4;

/// Runs the hub on `listener` until `shutdown` completes, then drains and returns.
pub async fn serve(
    config: HubConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let url = config.database_url.clone();
    let opening = || format!("opening hub database {}", store::redact(&url));
    if store::is_postgres(&url) {
        let store = PostgresStore::open(&url).await.with_context(opening)?;
        serve_with_store(config, store, listener, shutdown).await
    } else {
        let store = SqliteStore::open(&url).await.with_context(opening)?;
        serve_with_store(config, store, listener, shutdown).await
    }
}

/// Like [`serve`], with a store the caller opened.
pub async fn serve_with_store<S: HubStore>(
    config: HubConfig,
    store: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_wrapped(config, store, listener, shutdown, |honest| honest).await
}

/// Like [`serve_with_store`], with the `Hub` service passed through `wrap` before it is served
/// (TLS, limits, sequencer and health as always). The tests put a dishonest hub in front of the
/// honest one this way.
pub async fn serve_wrapped<S: HubStore, H: Hub>(
    config: HubConfig,
    store: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    wrap: impl FnOnce(HubService<S>) -> H,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let service = HubService::new(store, &config, stop_rx.clone()).await?;
    // Hubs sharing one PostgreSQL database hear of each other's arrivals (LISTEN/NOTIFY).
    if let Some(arrivals) = service.state().store.arrivals().await? {
        service.watch_arrivals(arrivals);
    }
    if let Some(signed) = &config.directory {
        match service.publish_directory(signed).await {
            Ok(v) => tracing::info!(version = v, "directory from file installed"),
            Err(e) => tracing::info!(reason = %e, "directory file not installed"),
        }
    }
    let svc = service.clone();
    let render = move || {
        let svc = svc.clone();
        async move { svc.metrics_text().await.map_err(|e| e.to_string()) }
    };
    let metrics = metrics_http::start(
        config.metrics_listen,
        config.metrics_addr_file.as_deref(),
        render,
        stop_rx.clone(),
    )
    .await
    .context("serving metrics")?;
    let dashboard = dashboard::start(
        config.dashboard_listen,
        config.dashboard_addr_file.as_deref(),
        tls::web_config(&config.tls)?,
        std::time::Duration::from_secs(config.limits.greeting_timeout_secs.max(1)),
        stats::StatsService::new(service.clone(), config.stats_threshold),
        config.authority,
        stop_rx.clone(),
    )
    .await
    .context("serving the dashboard")?;
    let sequencer = if config.integrate_log {
        tokio::spawn(sequence(service.clone(), config.integrate_every, stop_rx))
    } else {
        tokio::spawn(async {})
    };
    let stats = stats::StatsService::new(service.clone(), config.stats_threshold);
    let tls = tls::server_config(&config.tls)?;
    // Reflection, so an operator's grpcurl can list and describe the hub's services.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(overstap_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<HubServer<H>>().await;
    let limit = config
        .max_envelope_bytes
        .saturating_mul(TRANSPORT_LIMIT_FACTOR);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, hub = %config.hub_id, "hub listening (TLS 1.3, client certificates required)");
    let shutdown = async move {
        shutdown.await;
        tracing::info!("hub shutting down");
        // Ends the subscription streams so the server can drain.
        let _ = stop_tx.send(true);
    };
    let limits = config.limits;
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.streams_per_connection)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(
            (limits.idle_timeout_secs / 2).max(1),
        )))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(
            (limits.idle_timeout_secs / 2).max(1),
        )))
        .layer(deadline::Deadline::new(std::time::Duration::from_secs(
            limits.request_timeout_secs.max(1),
        )))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(StatsServer::new(stats))
        .add_service(
            HubServer::new(wrap(service))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .serve_with_incoming_shutdown(
            tls::incoming(
                listener,
                tls,
                tls::Greeting::Http2,
                std::time::Duration::from_secs(limits.greeting_timeout_secs.max(1)),
            ),
            shutdown,
        )
        .await
        .context("hub server failed")?;
    let _ = sequencer.await;
    for task in [metrics, dashboard].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(())
}

/// How often new events are integrated into the log and a checkpoint signed: every entry is in
/// a signed checkpoint well within a second of its `Send`.
pub const INTEGRATE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The most events one integration round takes in (one checkpoint signature each).
pub const INTEGRATE_BATCH: u32 = 10_000;

/// The log's sequencer: integrates events in batches, one signature per checkpoint.
async fn sequence<S: HubStore>(
    service: HubService<S>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut round: u64 = 0;
    let mut size = 0;
    loop {
        // A round that took in a full batch (a backlog, after a restart or on a busy hub) is
        // followed at once by the next.
        let mut behind = false;
        match service.integrate().await {
            Ok(now) => {
                behind = now >= size + INTEGRATE_BATCH as u64;
                size = now;
            }
            Err(e) => tracing::error!(error = %e, "integrating the log failed; trying again"),
        }
        round += 1;
        // Every 5 s: a directory another hub process sharing the store was handed.
        if round.is_multiple_of(20)
            && let Err(e) = service.refresh_directory().await
        {
            tracing::warn!(error = %e, "reading the directory from the store failed");
        }
        // About once a minute, the quota's mailbox counts are taken from the store again.
        if round.is_multiple_of(240)
            && let Err(e) = service.recount_mailboxes().await
        {
            tracing::warn!(error = %e, "recounting the mailboxes failed");
        }
        let pause = if behind {
            std::time::Duration::ZERO
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {
                let _ = service.integrate().await;
                return;
            }
        }
    }
}

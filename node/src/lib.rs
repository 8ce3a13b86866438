//! `overstap-node`: an organisation's own node. It keeps the organisation's data (students,
//! passport versions, grants on the home side; received passports and who viewed them on the
//! recipient side), syncs with the hub, and serves a local API for the CLI and school systems.
//!
//! Layout, a room a line (each file says in its first lines what it owns):
//! - [`settings`]: typed settings (file, environment) and the resolved [`NodeConfig`].
//! - [`store`]: the store (SQLite or PostgreSQL); one transaction per change.
//!   - `store/mod.rs`: [`NodeStore`], its transaction `Tx`, opening, the directory versions.
//!   - `store/students.rs`: the student cards issued here, and passport versions.
//!   - `store/grants.rs`: grants (home side) and the student's trail.
//!   - `store/outbox.rs`: the outbox, in sending order, and what became of each row.
//!   - `store/inbox.rs`: envelopes taken in, peers' sequence numbers, held envelopes.
//!   - `store/received.rs`: received passports, erasures and views (recipient side).
//!   - `store/log.rs`: the hub's log as this node sees it: checkpoints, proofs, the alarm.
//! - [`core`]: the domain operations on [`NodeCore`], built on the rules of `overstap-proto`.
//!   - `core/mod.rs`: [`NodeCore`], [`NodeError`], [`Outcome`], the clock, shared helpers.
//!   - `core/directory.rs`: installing the directory, following a rotation of this node's keys.
//!   - `core/students.rs`: student cards (new, or after a lost key) and passport versions.
//!   - `core/consent.rs`: grants, revocation, erasure with a deletion receipt, the reaper.
//!   - `core/send.rs`: sealing into the outbox, sending passports, the outbox side of a push.
//!   - `core/ingest.rs`: taking in from the hub, in each sender's order, in runs.
//!   - `core/checks.rs`: what an envelope taken in does, and the checks before it may.
//!   - `core/status.rs`: handovers, the student's trail, views and status reports.
//!   - `core/log.rs`: the hub's receipts and checkpoints, the log alarm, the metrics text.
//! - [`sync`]: the engine that talks to the hub.
//!   - `sync/mod.rs`: the hub link, the run loop, the directory and reaper loops.
//!   - `sync/push.rs`: the outbox loop, pushing to the hub in rounds.
//!   - `sync/inbox.rs`: the mailbox subscription, taking in, and the acks.
//!   - `sync/log_watch.rs`: the log loop, checking the hub's log and raising the alarm.
//! - [`api`]: the local gRPC API for the CLI and school systems, behind a bearer token.
//! - [`metrics`]: the Prometheus metrics, served on a plain-HTTP port of their own.
//!
//! - [`web`]: the people's web app (students, guardians, staff in a browser): another door onto
//!   the same [`NodeCore`] beside [`api`], so every rule and every transaction stays in `core`
//!   and `store`, and neither door holds rules of its own.
//!   - `web/i18n.rs` and `web/messages.toml`: the words, Dutch and English;
//!   - `web/page.rs`: the frame of every page and the kind error page;
//!   - `web/staff.rs`: staff sign-in, sessions, CSRF;
//!   - `web/enrol.rs`: a mentor invites a student, the student's browser makes the key, the
//!     mentor compares the short code, the card is issued.
//!
//! [`run`] takes a bound API listener and a shutdown future, so tests and the demo run nodes
//! in-process on `127.0.0.1:0`.
#![forbid(unsafe_code)]

pub mod api;
pub mod core;
/// The same time limit on calls as the hub's: one source file, compiled in both daemons.
#[path = "../../hub/src/deadline.rs"]
pub mod deadline;
pub mod metrics;
/// The same `/metrics` endpoint as the hub's: one source file, compiled in both daemons.
#[path = "../../hub/src/metrics_http.rs"]
pub mod metrics_http;
pub mod settings;
#[path = "../../hub/src/sqlite_pool.rs"]
pub mod sqlite_pool;
pub mod store;
pub mod sync;
pub mod web;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use overstap_proto::pb::node_server::NodeServer;
use tokio::net::TcpListener;

pub use crate::core::{Clock, NodeCore, NodeError, Outcome, system_clock};
pub use settings::{NodeConfig, Settings};
pub use store::NodeStore;

/// Writes a secret file readable by its owner only (0600).
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Opens the store, builds the core, and runs the local API and the sync engine until
/// `shutdown` completes.
pub async fn run(
    config: NodeConfig,
    api_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_clock(config, api_listener, shutdown, system_clock()).await
}

/// How many calls one connection to the local API may have open at once.
pub const API_STREAMS_PER_CONNECTION: u32 = 64;

/// [`run`] with an injected clock.
pub async fn run_with_clock(
    config: NodeConfig,
    api_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    clock: Clock,
) -> anyhow::Result<()> {
    let store = NodeStore::open(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "opening node database {}",
                sqlite_pool::redact(&config.database_url)
            )
        })?;
    let mut core = NodeCore::new(
        config.org_id.clone(),
        config.signing_key.clone(),
        config.encryption_keys.clone(),
        config.key_files.clone(),
        config.authority,
        store,
        config.max_envelope_bytes,
        clock,
    )
    .await?;
    core.max_held_per_sender = config.max_held_per_sender;
    let core = Arc::new(core);
    let link = sync::HubLink {
        url: config.hub_url.clone(),
        server_name: config.hub_name.clone(),
        ca_pem: config.ca_pem.clone(),
        cert_pem: config.cert_pem.clone(),
        key_pem: config.key_pem.clone(),
    };
    let channel = link.channel()?;
    let hub_channel = channel.clone();
    let addr = api_listener.local_addr()?;
    if let Some(path) = &config.api_url_file {
        std::fs::write(path, format!("http://{addr}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(org = %config.org_id, %addr, hub = %config.hub_url, "node running");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let intervals = sync::Intervals {
        directory: config.directory_interval,
        reaper: config.reaper_interval,
        log: config.log_interval,
    };
    let metrics_core = core.clone();
    let render = move || {
        let metrics_core = metrics_core.clone();
        async move { metrics_core.metrics_text().await.map_err(|e| e.to_string()) }
    };
    let metrics = metrics_http::start(
        config.metrics_listen,
        config.metrics_addr_file.as_deref(),
        render,
        stop_rx.clone(),
    )
    .await
    .context("serving metrics")?;
    let web = match config.web_listen {
        Some(listen) => Some(
            web::start(
                listen,
                config.web_url_file.as_deref(),
                config.web_tls.as_ref(),
                config.oidc.clone(),
                core.clone(),
                hub_channel.clone(),
                stop_rx.clone(),
            )
            .await
            .context("serving the web app")?,
        ),
        None => None,
    };
    let engine = tokio::spawn(sync::run(core.clone(), channel, intervals, stop_rx));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NodeServer<api::NodeApi>>().await;
    let api = tonic::service::interceptor::InterceptedService::new(
        NodeServer::new(api::NodeApi::new(core, hub_channel))
            .max_decoding_message_size(config.max_envelope_bytes * 4),
        api::TokenCheck::new(config.api_token.clone()),
    );
    // The local API is on loopback behind a token, but a stuck client must not hold it either.
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(API_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .layer(deadline::Deadline::new(config.api_request_timeout))
        .add_service(health_service)
        .add_service(api)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(api_listener),
            async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            },
        )
        .await;
    let _ = engine.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Some(w) = web {
        let _ = w.await;
    }
    result.context("node API server failed")
}

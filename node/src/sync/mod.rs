//! The sync engine: one TLS channel to the hub, and five loops.
//! - directory: fetch the authority-signed directory now and then; install newer versions.
//! - outbox: push pending envelopes, each recipient's in order and the recipients side by side;
//!   retry with back-off while the hub is away; a refusal by the hub is final and recorded with
//!   its reason.
//! - inbox: subscribe to this node's mailbox; ingest each envelope (verify, open, check,
//!   commit) and only then acknowledge it.
//! - reaper: erase received passports whose grant ran out, with a deletion receipt.
//! - log: check the hub's log (its checkpoints, and that this node's envelopes are in it).
//!
//! The loops that talk most with the hub have files of their own: `push` (the outbox), `inbox`
//! (the mailbox, with its acks) and `log_watch` (the hub's log). This file holds the link to the
//! hub, the run loop that starts them all, the directory and reaper loops, and the shared
//! helpers.

use std::sync::Arc;
use std::time::Duration;

use overstap_proto::ProtocolError;
use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{Envelope, GetDirectoryRequest};

use tokio::sync::watch;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::core::{NodeCore, NodeError};

mod inbox;
mod log_watch;
mod push;

pub use log_watch::check_log;
pub use push::PUSH_BATCH;

/// TLS settings for reaching the hub.
#[derive(Clone)]
pub struct HubLink {
    pub url: String,
    pub server_name: String,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl HubLink {
    /// A lazily connecting channel: it (re)connects on use, so a hub that is down at start or
    /// restarts later needs no special handling here.
    pub fn channel(&self) -> anyhow::Result<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(self.server_name.clone());
        Ok(Endpoint::from_shared(self.url.clone())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy())
    }
}

/// Runs the loops until `shutdown` turns true.
/// How often the engine's timed loops run.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    pub directory: Duration,
    pub reaper: Duration,
    /// How often the hub's newest checkpoint is fetched and checked.
    pub log: Duration,
}

/// Runs the loops until `shutdown` turns true.
pub async fn run(
    core: Arc<NodeCore>,
    channel: Channel,
    intervals: Intervals,
    shutdown: watch::Receiver<bool>,
) {
    let limit = core.max_body * 4;
    let client = HubClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let d = tokio::spawn(directory_loop(
        core.clone(),
        client.clone(),
        intervals.directory,
        shutdown.clone(),
    ));
    let o = tokio::spawn(push::outbox_loop(
        core.clone(),
        client.clone(),
        shutdown.clone(),
    ));
    let r = tokio::spawn(reaper_loop(
        core.clone(),
        intervals.reaper,
        shutdown.clone(),
    ));
    let l = tokio::spawn(log_watch::log_loop(
        core.clone(),
        client.clone(),
        intervals.log,
        shutdown.clone(),
    ));
    let i = tokio::spawn(inbox::inbox_loop(core, client, shutdown));
    let _ = tokio::join!(d, o, r, l, i);
}

async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(8)).min(15_000))
}

/// Fetches the directory once; returns whether a newer one was installed.
pub async fn refresh_directory(
    core: &NodeCore,
    client: &mut HubClient<Channel>,
) -> Result<bool, tonic::Status> {
    let resp = client
        .get_directory(GetDirectoryRequest {
            known_version: core.directory_version(),
        })
        .await?
        .into_inner();
    match resp.directory {
        Some(signed) => match core.install_directory(&signed).await {
            Ok(_) => Ok(true),
            // The version this node holds already: another fetch (the directory loop's and the
            // inbox loop's run side by side) installed it while this one was on its way.
            Err(NodeError::Protocol(ProtocolError::StaleDirectory { offered, held }))
                if offered == held =>
            {
                tracing::debug!(org = %core.org_id, version = held, "directory from the hub already installed");
                Ok(false)
            }
            Err(e @ NodeError::Protocol(ProtocolError::StaleDirectory { .. })) => {
                // An older directory than the one held is ignored, and worth a look.
                tracing::warn!(org = %core.org_id, error = %e, "directory from the hub refused");
                Ok(false)
            }
            Err(e) => {
                // Anything else (a forged directory, or one this node cannot take in) is ignored,
                // loudly.
                tracing::error!(org = %core.org_id, error = %e, "directory from the hub refused");
                Ok(false)
            }
        },
        None => Ok(false),
    }
}

async fn directory_loop(
    core: Arc<NodeCore>,
    mut client: HubClient<Channel>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempt = 0;
    loop {
        let wait = match refresh_directory(&core, &mut client).await {
            Ok(_) => {
                attempt = 0;
                interval
            }
            Err(e) => {
                attempt += 1;
                tracing::debug!(org = %core.org_id, error = %e, "directory fetch failed");
                backoff(attempt).min(interval)
            }
        };
        if sleep_or_stop(wait, &mut shutdown).await {
            return;
        }
    }
}

/// Erases what ran out, on this node's own clock, every `interval`.
async fn reaper_loop(core: Arc<NodeCore>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = core.drain_all_held().await {
            tracing::warn!(org = %core.org_id, error = %e, "taking in held envelopes failed; it runs again");
        }
        match core.reap().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(org = %core.org_id, erased = n, "expired passports erased"),
            Err(e) => {
                tracing::error!(org = %core.org_id, error = %e, "the reaper failed; it tries again")
            }
        }
        if sleep_or_stop(interval, &mut shutdown).await {
            return;
        }
    }
}

/// The header an envelope claims (unverified: for ids and counting only).
fn claimed_header(envelope: &Envelope) -> Option<overstap_proto::pb::EnvelopeHeader> {
    envelope.header.as_ref().and_then(|h| {
        overstap_proto::sign::decode_body(overstap_proto::sign::Domain::EnvelopeHeader, h).ok()
    })
}

fn envelope_id(envelope: &Envelope) -> Vec<u8> {
    claimed_header(envelope)
        .map(|h| h.envelope_id)
        .unwrap_or_default()
}

fn envelope_kind(envelope: &Envelope) -> i32 {
    claimed_header(envelope).map_or(0, |h| h.kind)
}

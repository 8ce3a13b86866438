//! The inbox loop: subscribing to this node's mailbox, taking in what arrives (in runs, with
//! the directory fetched again for a sender that does not check out), and acknowledging it in
//! batches once it is committed.

use std::sync::Arc;

use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{AckRequest, Envelope, SubscribeRequest};

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::core::{NodeCore, NodeError, Outcome};

use super::{backoff, envelope_id, envelope_kind, refresh_directory, sleep_or_stop};

/// Acks what `inbox_loop` has taken in, in batches: a run taken in together is acked in one
/// call, and every run waiting when the previous ack returned goes into the next one, so one
/// `Ack` (one transaction at the hub) covers many envelopes, and taking in the next run does not
/// wait for the hub. An ack that fails is tried again, with backoff up to 15 s, until it
/// succeeds or the node stops; meanwhile the envelopes stay in the hub's mailbox (a new
/// subscription would deliver them again, which `ingest` recognises as done), and a full queue
/// of runs makes the inbox loop wait.
async fn ack_loop(
    org: String,
    mut client: HubClient<Channel>,
    mut runs: tokio::sync::mpsc::Receiver<Vec<Vec<u8>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut waiting = Vec::new();
    while runs.recv_many(&mut waiting, 16).await > 0 {
        let batch: Vec<Vec<u8>> = waiting.drain(..).flatten().collect();
        let mut attempt = 0;
        loop {
            match client
                .ack(AckRequest {
                    envelope_ids: batch.clone(),
                })
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::debug!(%org, error = %e, envelopes = batch.len(), "ack failed; trying again");
                    if sleep_or_stop(backoff(attempt), &mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }
}

pub(super) async fn inbox_loop(
    core: Arc<NodeCore>,
    mut client: HubClient<Channel>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (acks, ack_ids) = tokio::sync::mpsc::channel(200);
    tokio::spawn(ack_loop(
        core.org_id.clone(),
        client.clone(),
        ack_ids,
        shutdown.clone(),
    ));
    let mut attempt: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // A node that was away takes its mailbox in under the region as it is now: a member
        // removed meanwhile (a compromised node, say) no longer checks out.
        tokio::select! {
            _ = refresh_directory(&core, &mut client) => {}
            _ = shutdown.changed() => return,
        }
        // A fresh subscription starts at 0: whatever is still in the mailbox was not acked,
        // so it must be taken in (again; ingest is idempotent).
        let stream = tokio::select! {
            s = client.subscribe(SubscribeRequest { after_seq: 0 }) => s,
            _ = shutdown.changed() => return,
        };
        let mut stream = match stream {
            Ok(s) => {
                core.mark_connected(true);
                s.into_inner()
            }
            Err(e) => {
                core.mark_connected(false);
                attempt += 1;
                tracing::debug!(org = %core.org_id, error = %e, "subscribe failed");
                if sleep_or_stop(backoff(attempt), &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        'stream: loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = shutdown.changed() => return,
            };
            let Ok(Some(first)) = next else {
                break;
            };
            attempt = 0;
            // Whatever else has arrived already is taken in with it: a run of envelopes from
            // one sender commits once (see `NodeCore::ingest_run`).
            let mut deliveries = vec![first];
            let mut ended = false;
            while deliveries.len() < RUN {
                let ready = tokio::select! {
                    biased;
                    m = stream.message() => Some(m),
                    () = std::future::ready(()) => None,
                };
                match ready {
                    Some(Ok(Some(d))) => deliveries.push(d),
                    Some(Ok(None) | Err(_)) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let mut run = Vec::with_capacity(deliveries.len());
            let mut seqs = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                if let Some(envelope) = d.envelope {
                    run.push((envelope, d.receipt));
                    seqs.push(d.seq);
                }
            }
            let mut at = 0;
            while at < run.len() {
                let (outcomes, error) = core.ingest_run(&run[at..]).await;
                let mut done = Vec::with_capacity(outcomes.len() + 1);
                for outcome in &outcomes {
                    done.push(taken_in(&core, &run[at].0, seqs[at], outcome));
                    at += 1;
                }
                let error = match error {
                    // A sender this node does not know (yet), or whose signature does not
                    // verify: the directory is fetched again first.
                    Some(NodeError::StaleDirectory(_) | NodeError::NoDirectory)
                        if at < run.len() =>
                    {
                        let (envelope, receipt) = &run[at];
                        match ingest_with_refresh(&core, &mut client, envelope, receipt.as_ref())
                            .await
                        {
                            Ok(outcome) => {
                                done.push(taken_in(&core, envelope, seqs[at], &outcome));
                                at += 1;
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                    other => other,
                };
                // What was committed is acked in one call (queued for the ack task), before
                // an error below starts over.
                if !done.is_empty() && acks.send(done).await.is_err() {
                    return;
                }
                if let Some(e) = error {
                    tracing::warn!(org = %core.org_id, error = %e, "ingest failed; will retry");
                    break 'stream;
                }
            }
            if ended {
                break;
            }
        }
        core.mark_connected(false);
        attempt += 1;
        if sleep_or_stop(backoff(attempt), &mut shutdown).await {
            return;
        }
    }
}

/// The most envelopes the inbox loop takes in together, when that many have arrived.
const RUN: usize = 64;

/// Counts an envelope taken in (after the transaction that took it in); returns its id, to ack.
fn taken_in(core: &NodeCore, envelope: &Envelope, seq: u64, outcome: &Outcome) -> Vec<u8> {
    tracing::debug!(org = %core.org_id, ?outcome, "ingested");
    if !matches!(outcome, Outcome::Duplicate) {
        core.metrics.received(envelope_kind(envelope));
    }
    core.last_seq
        .store(seq, std::sync::atomic::Ordering::Relaxed);
    envelope_id(envelope)
}

async fn ingest_with_refresh(
    core: &NodeCore,
    client: &mut HubClient<Channel>,
    envelope: &Envelope,
    receipt: Option<&overstap_proto::pb::Signed>,
) -> Result<Outcome, NodeError> {
    match core.ingest(envelope, receipt).await {
        Err(NodeError::StaleDirectory(_) | NodeError::NoDirectory) => {
            let _ = refresh_directory(core, client).await;
            match core.ingest(envelope, receipt).await {
                // Still unknown (or still not verifying) with the hub's newest directory.
                Err(NodeError::StaleDirectory(org)) => {
                    tracing::warn!(org = %core.org_id, sender = %org, "envelope dropped: its sender does not check out");
                    let reason = format!("sender {org} does not check out against the directory");
                    core.record_dropped(envelope, receipt, &reason).await?;
                    Ok(Outcome::Dropped(reason))
                }
                other => other,
            }
        }
        other => other,
    }
}

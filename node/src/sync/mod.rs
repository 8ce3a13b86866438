//! The sync engine: one TLS channel to the hub, and four loops.
//! - directory: fetch the authority-signed directory now and then; install newer versions.
//! - outbox: push pending envelopes, each recipient's in order and the recipients side by side;
//!   retry with back-off while the hub is away; a refusal by the hub is final and recorded with
//!   its reason.
//! - inbox: subscribe to this node's mailbox; ingest each envelope (verify, open, check,
//!   commit) and only then acknowledge it.
//! - reaper: erase received passports whose grant ran out, with a deletion receipt.

use std::sync::Arc;
use std::time::Duration;

use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{
    AckRequest, Envelope, GetDirectoryRequest, SendBatchRequest, SendResult, Signed,
    SubscribeRequest,
};
use prost::Message;

use tokio::sync::watch;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::core::{NodeCore, NodeError, Outcome};
use crate::store::OutboxEntry;

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
    let o = tokio::spawn(outbox_loop(core.clone(), client.clone(), shutdown.clone()));
    let r = tokio::spawn(reaper_loop(
        core.clone(),
        intervals.reaper,
        shutdown.clone(),
    ));
    let l = tokio::spawn(log_loop(
        core.clone(),
        client.clone(),
        intervals.log,
        shutdown.clone(),
    ));
    let i = tokio::spawn(inbox_loop(core, client, shutdown));
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
            Err(e) => {
                // A hub that serves a forged or older directory is ignored, loudly.
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

/// Answers that may only mean the hub and this node hold different directory versions for a
/// moment; they are retried a few times before they count as final.
fn maybe_directory_lag(code: Code) -> bool {
    matches!(
        code,
        Code::NotFound | Code::PermissionDenied | Code::Unauthenticated
    )
}

/// Whether a hub answer means "this envelope will never be accepted".
fn is_final(status: &tonic::Status) -> bool {
    match status.code() {
        // The hub's limits under abuse: with `retry-after`, waiting helps (a busy mailbox, too
        // many calls); without it, the envelope itself is too large.
        Code::ResourceExhausted => status.metadata().get("retry-after").is_none(),
        code => matches!(
            code,
            Code::InvalidArgument
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::AlreadyExists
                | Code::Unauthenticated
                | Code::OutOfRange
        ),
    }
}

/// Envelopes taken from the outbox per round.
const OUTBOX_ROUND: u32 = 256;
/// Envelopes to one recipient per round, so that one long queue leaves room for the others.
const OUTBOX_PER_RECIPIENT: u32 = 32;
/// Recipients whose envelopes go out side by side in one round; the rest wait for the next.
const OUTBOX_PARALLEL: usize = 32;
/// How long a recipient whose mailbox at the hub is full is left out of the rounds.
const MAILBOX_FULL_PAUSE: Duration = Duration::from_secs(1);

/// How one recipient's envelopes of a round went.
#[derive(Default)]
struct Pushed {
    /// Accepted by the hub (and recorded, unless `stop` says the store failed).
    sent: usize,
    /// Why the rest of this recipient's envelopes wait, if they do.
    stop: Option<Stop>,
}

enum Stop {
    /// This recipient's mailbox at the hub is full: only its envelopes wait.
    MailboxFull,
    /// The hub asks this node to wait (it called too often), for this long if it says.
    HubWait(Option<Duration>),
    /// The hub is away, a receipt did not verify, or the store failed: back off.
    Failed,
}

/// Pushes the outbox. Each round takes the oldest pending envelopes (at most
/// `OUTBOX_PER_RECIPIENT` to one recipient) and sends each recipient's in order, one at a time
/// (nothing to a recipient overtakes what was sealed before it), with the recipients side by
/// side; each recipient's receipts are recorded in one transaction when its envelopes of the
/// round are out. A cohort pushed to five colleges thus has five envelopes in flight, which the
/// hub commits together, and the school pays a commit per recipient per round rather than one
/// per envelope. A recipient whose mailbox is full sits out the rounds for a second; the others
/// go on.
///
/// A crash before the receipts are recorded loses nothing: the envelopes are still pending,
/// are sent again, and the hub answers a duplicate with the receipt it gave the first time.
async fn outbox_loop(
    core: Arc<NodeCore>,
    client: HubClient<Channel>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    // Recipients whose mailbox was full, and until when they sit out.
    let mut paused: std::collections::HashMap<String, tokio::time::Instant> = Default::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = core.seal_due().await {
            tracing::error!(error = %e, "sealing waiting packages failed");
        }
        match core.log_alarm().await {
            Ok(Some(reason)) => {
                tracing::error!(org = %core.org_id, %reason, "not sending: the hub's log does not add up");
                if sleep_or_stop(Duration::from_secs(5), &mut shutdown).await {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "reading the log state failed"),
        }
        let now = tokio::time::Instant::now();
        paused.retain(|_, until| *until > now);
        let left_out: Vec<String> = paused.keys().cloned().collect();
        // From reading the rows until their receipts are recorded: a revocation waits for this
        // round rather than withdraw a package that is on its way.
        let round = core.push_gate.read().await;
        let pending = match core
            .store
            .pending(OUTBOX_ROUND, OUTBOX_PER_RECIPIENT, &left_out)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading the outbox failed");
                Vec::new()
            }
        };
        // A full round, or a recipient's full share: there may be more right away.
        let mut more = pending.len() == OUTBOX_ROUND as usize;
        // Each recipient's envelopes, in outbox order; recipients in order of their oldest.
        let mut queues: Vec<Vec<OutboxEntry>> = Vec::new();
        let mut place: std::collections::HashMap<String, usize> = Default::default();
        for entry in pending {
            let i = *place.entry(entry.to_org.clone()).or_insert_with(|| {
                queues.push(Vec::new());
                queues.len() - 1
            });
            queues[i].push(entry);
        }
        more |= queues.len() > OUTBOX_PARALLEL
            || queues
                .iter()
                .any(|q| q.len() == OUTBOX_PER_RECIPIENT as usize);
        // Set by the first push the hub turns away as a whole (too many calls, or gone): the
        // others stop before their next envelope rather than be turned away too.
        let halt = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pushes = tokio::task::JoinSet::new();
        for entries in queues.into_iter().take(OUTBOX_PARALLEL) {
            pushes.spawn(push_in_order(
                core.clone(),
                client.clone(),
                entries,
                halt.clone(),
            ));
        }
        let (mut stalled, mut hub_wait, mut sent) = (false, None, 0);
        while let Some(pushed) = pushes.join_next().await {
            let Ok((to_org, pushed)) = pushed else {
                stalled = true;
                continue;
            };
            sent += pushed.sent;
            match pushed.stop {
                None => {}
                Some(Stop::MailboxFull) => {
                    paused.insert(to_org, tokio::time::Instant::now() + MAILBOX_FULL_PAUSE);
                }
                Some(Stop::HubWait(wait)) => {
                    stalled = true;
                    hub_wait = hub_wait.max(wait);
                }
                Some(Stop::Failed) => stalled = true,
            }
        }
        drop(round);
        if sent > 0 && !stalled {
            attempt = 0;
        }
        let wait = if let Some(w) = hub_wait {
            w
        } else if stalled {
            attempt += 1;
            backoff(attempt)
        } else if more {
            continue;
        } else if let Some(until) = paused.values().min() {
            // Only recipients with a full mailbox have envelopes left: look again when the
            // first of them may take more.
            until.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = core.outbox_wake.notified(), if !stalled => {},
            _ = tokio::time::sleep(wait) => {},
            _ = shutdown.changed() => return,
        }
    }
}

/// Sends one recipient's envelopes in order, in `SendBatch` calls of up to `PUSH_BATCH` (the
/// hub commits them in that order), stopping at the first that must wait, then records their
/// receipts in one transaction. A refusal for good is recorded and the next goes on. Returns the
/// recipient and how it went.
async fn push_in_order(
    core: Arc<NodeCore>,
    mut client: HubClient<Channel>,
    entries: Vec<OutboxEntry>,
    halt: Arc<std::sync::atomic::AtomicBool>,
) -> (String, Pushed) {
    use std::sync::atomic::Ordering;
    let to_org = entries
        .first()
        .map(|e| e.to_org.clone())
        .unwrap_or_default();
    let mut out = Pushed::default();
    // What may go: a package whose consent ended meanwhile goes as a skip, or not at all.
    let mut ready: Vec<(OutboxEntry, Envelope)> = Vec::with_capacity(entries.len());
    for entry in entries {
        match core.envelope_to_push(&entry).await {
            Ok(Some(envelope)) => ready.push((entry, envelope)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "preparing an envelope failed");
                out.stop = Some(Stop::Failed);
                break;
            }
        }
    }
    let budget = core.max_body.saturating_mul(2);
    let mut sent: Vec<(OutboxEntry, Signed)> = Vec::new();
    let mut ready: std::collections::VecDeque<_> = ready.into();
    'calls: while !ready.is_empty() {
        if halt.load(Ordering::Relaxed) {
            break;
        }
        // One call: up to PUSH_BATCH envelopes within the byte budget (at least one).
        let mut call: Vec<(OutboxEntry, Envelope)> = Vec::new();
        let mut bytes = 0;
        while let Some((_, envelope)) = ready.front() {
            let size = envelope.encoded_len();
            if !call.is_empty() && (call.len() == PUSH_BATCH || bytes + size > budget) {
                break;
            }
            bytes += size;
            call.extend(ready.pop_front());
        }
        let results =
            send_in_order(&mut client, call.iter().map(|(_, e)| e.clone()).collect()).await;
        if results.is_empty() {
            // The hub answered for none of them (it should have): they wait for a round.
            out.stop = Some(Stop::Failed);
            break;
        }
        // What the hub did not look at, after one it refused for good, goes in the next call.
        for untaken in call.split_off(results.len()).into_iter().rev() {
            ready.push_front(untaken);
        }
        for ((entry, envelope), result) in call.into_iter().zip(results) {
            let id = envelope_id(&envelope);
            match result {
                Ok(receipt) => {
                    if let Err(e) = core.check_receipt(&receipt, &id) {
                        tracing::error!(error = %e, "the hub's receipt does not verify");
                        let _ = core
                            .push_failed(&entry, &format!("receipt refused: {e}"), false)
                            .await;
                        out.stop = Some(Stop::Failed);
                        break 'calls;
                    }
                    core.mark_connected(true);
                    let mut entry = entry;
                    entry.envelope_id = id;
                    sent.push((entry, receipt));
                }
                Err(status)
                    if is_final(&status)
                        && !(maybe_directory_lag(status.code()) && entry.attempts < 5) =>
                {
                    tracing::warn!(to = %entry.to_org, reason = %status.message(), "the hub refused an envelope");
                    let detail = format!(
                        "refused by the hub ({:?}): {}",
                        status.code(),
                        status.message()
                    );
                    let _ = core.push_failed(&entry, &detail, true).await;
                    core.metrics.refused(entry.kind);
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    // The hub asks us to wait: for this recipient only when its mailbox is
                    // full, for everything when we called too often. It says for how long.
                    let _ = core
                        .push_failed(&entry, &format!("waiting: {}", status.message()), false)
                        .await;
                    let limit = status.metadata().get("overstap-limit");
                    out.stop = Some(if limit.is_some_and(|l| l == "mailbox_full") {
                        Stop::MailboxFull
                    } else {
                        halt.store(true, Ordering::Relaxed);
                        Stop::HubWait(
                            status
                                .metadata()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok()?.parse().ok())
                                .map(|s: u64| Duration::from_secs(s.min(300))),
                        )
                    });
                    break 'calls;
                }
                Err(status) => {
                    // Keep the order: nothing behind this envelope goes before it.
                    halt.store(true, Ordering::Relaxed);
                    core.mark_connected(false);
                    let _ = core
                        .push_failed(&entry, &format!("will retry: {}", status.message()), false)
                        .await;
                    out.stop = Some(Stop::Failed);
                    break 'calls;
                }
            }
        }
    }
    if !sent.is_empty() {
        match core.after_sent(&sent).await {
            Ok(()) => {
                for (entry, _) in &sent {
                    core.metrics.sent(entry.kind);
                }
                out.sent = sent.len();
            }
            Err(e) => {
                tracing::error!(error = %e, "recording receipts failed");
                out.stop = Some(Stop::Failed);
            }
        }
    }
    (to_org, out)
}

/// The most envelopes in one `SendBatch` call (the hub takes up to 64).
const PUSH_BATCH: usize = 64;

/// Sends envelopes in order in one `SendBatch` call, and returns the hub's answer for each
/// envelope it took up, in order (fewer when it stopped at one it did not take, whose answer is
/// the last). An error for the whole call is the answer for the first envelope. A hub that does
/// not know `SendBatch` yet, or that finds the call too large, gets them one `Send` at a time,
/// up to the first it does not take.
async fn send_in_order(
    client: &mut HubClient<Channel>,
    envelopes: Vec<Envelope>,
) -> Vec<Result<Signed, tonic::Status>> {
    let many = envelopes.len() > 1;
    let status = match client
        .send_batch(SendBatchRequest {
            envelopes: envelopes.clone(),
        })
        .await
    {
        Ok(response) => {
            return response
                .into_inner()
                .results
                .into_iter()
                .map(|r| match r.receipt {
                    Some(receipt) if r.code == 0 => Ok(receipt),
                    None if r.code == 0 => Err(tonic::Status::unknown(
                        "the hub answered an envelope with neither a receipt nor a reason",
                    )),
                    _ => Err(status_of(r)),
                })
                .collect();
        }
        Err(status) => status,
    };
    let one_at_a_time = status.code() == Code::Unimplemented
        || (many && matches!(status.code(), Code::OutOfRange | Code::InvalidArgument));
    if !one_at_a_time {
        return vec![Err(status)];
    }
    let mut results = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let result = client.send(envelope).await.map(tonic::Response::into_inner);
        let taken = result.is_ok();
        results.push(result);
        if !taken {
            break;
        }
    }
    results
}

/// The status `Send` would have answered with, from a `SendBatch` result.
fn status_of(r: SendResult) -> tonic::Status {
    let mut status = tonic::Status::new(Code::from_i32(r.code), r.message);
    if !r.limit.is_empty()
        && let Ok(v) = r.limit.parse()
    {
        status.metadata_mut().insert("overstap-limit", v);
    }
    if r.retry_after > 0
        && let Ok(v) = r.retry_after.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

/// Watches the hub's log: every `interval`, fetch the newest checkpoint, check its signature
/// and that it extends the last one this node verified (consistency proof), then prove the
/// inclusion of every envelope this node sent or received. A hub that shows a log that does not
/// add up raises the alarm: the evidence is kept and the node stops sending.
async fn log_loop(
    core: Arc<NodeCore>,
    mut client: HubClient<Channel>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = check_log(&core, &mut client).await {
            tracing::warn!(org = %core.org_id, error = %e, "the log check did not complete; it runs again");
        }
        if sleep_or_stop(interval, &mut shutdown).await {
            return;
        }
    }
}

async fn alarm(core: &NodeCore, reason: String, held: &[u8], shown: &[u8]) -> anyhow::Result<()> {
    tracing::error!(org = %core.org_id, %reason, "LOG ALARM: the hub's log does not add up; sending stops");
    core.store
        .raise_log_alarm(&reason, held, shown, core.now())
        .await?;
    Ok(())
}

/// One round of log checking.
pub async fn check_log(core: &NodeCore, client: &mut HubClient<Channel>) -> anyhow::Result<()> {
    use overstap_proto::log::{check_consistency, check_inclusion, hashes_from_bytes, leaf_hash};
    use overstap_proto::pb::{ConsistencyRequest, GetCheckpointRequest, InclusionRequest};
    let note = match client.get_checkpoint(GetCheckpointRequest {}).await {
        Ok(r) => r.into_inner().note,
        Err(s) if s.code() == Code::NotFound => return Ok(()),
        Err(s) => return Err(s.into()),
    };
    let shown = core.verify_checkpoint(&note)?;
    let held = core.store.log_state().await?;
    // Once the alarm is raised it stays, with its evidence, until a person looks: no new rounds.
    if held.as_ref().is_some_and(|h| h.alarm.is_some()) {
        return Ok(());
    }
    if let Some(h) = held.as_ref().filter(|h| h.size > 0) {
        let held_root = overstap_proto::log::Hash(h.root);
        if shown.size < h.size {
            let reason = format!(
                "the hub's log shrank from {} to {} entries",
                h.size, shown.size
            );
            return alarm(core, reason, &h.note, &note).await;
        }
        if shown.size == h.size && shown.root != held_root {
            let reason = format!("the hub signed two different logs of {} entries", h.size);
            return alarm(core, reason, &h.note, &note).await;
        }
        if shown.size > h.size {
            let proof = client
                .get_consistency_proof(ConsistencyRequest {
                    old_size: h.size,
                    new_size: shown.size,
                })
                .await?
                .into_inner();
            if let Err(e) = check_consistency(
                &hashes_from_bytes(&proof.hashes)?,
                shown.size,
                shown.root,
                h.size,
                held_root,
            ) {
                return alarm(core, e.to_string(), &h.note, &note).await;
            }
        }
    }
    let grown = held.as_ref().is_none_or(|h| h.size != shown.size);
    // The same checkpoint again may come with more cosignatures than the copy held: keep the
    // fuller one, so `log checkpoint` shows who witnessed it.
    if grown || held.as_ref().is_some_and(|h| h.note != note) {
        core.store
            .save_log_state(shown.size, shown.root.0, &note, core.now())
            .await?;
    }
    if grown {
        // A coordinator witnesses the log: it cosigns each checkpoint it has just checked to be
        // consistent with the last one it accepted (and so with the last one it cosigned).
        if core.is_coordinator() {
            let cosigned = overstap_proto::log::cosign(
                &note,
                &core.witness_key(),
                &core.org_id,
                core.now().max(0) as u64,
            )?;
            client
                .add_cosignature(overstap_proto::pb::CheckpointResponse { note: cosigned })
                .await?;
        }
    }
    // Compare with what the hub showed other members: a hub that shows two members two
    // different histories cannot prove both consistent with one log.
    for (id, from, peer_note) in core.store.peer_checkpoints().await? {
        let peer = match core.verify_checkpoint(&peer_note) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(org = %core.org_id, %from, error = %e, "a member passed on a checkpoint that does not verify");
                core.store.peer_checkpoint_checked(id).await?;
                continue;
            }
        };
        let split = if peer.size == shown.size {
            (peer.root != shown.root).then(|| {
                format!(
                    "the hub showed {from} a different log of {} entries than it showed us",
                    peer.size
                )
            })
        } else {
            let (small, large) = if peer.size < shown.size {
                (&peer, &shown)
            } else {
                (&shown, &peer)
            };
            let proof = client
                .get_consistency_proof(ConsistencyRequest {
                    old_size: small.size,
                    new_size: large.size,
                })
                .await;
            match proof {
                Ok(p) => check_consistency(
                    &hashes_from_bytes(&p.into_inner().hashes)?,
                    large.size,
                    large.root,
                    small.size,
                    small.root,
                )
                .err()
                .map(|e| format!("the logs the hub showed {from} and us do not fit together: {e}")),
                // The hub cannot prove a larger tree than it holds: it showed that member more.
                Err(s) if s.code() == Code::OutOfRange => Some(format!(
                    "the hub showed {from} a log of {} entries but cannot prove it to us ({})",
                    peer.size,
                    s.message()
                )),
                Err(s) => return Err(s.into()),
            }
        };
        if let Some(reason) = split {
            return alarm(core, reason, &note, &peer_note).await;
        }
        core.store.peer_checkpoint_checked(id).await?;
    }
    for item in core.store.unproven(&core.org_id, 256).await? {
        if item.log_index >= shown.size {
            continue;
        }
        let proof = client
            .get_inclusion_proof(InclusionRequest {
                log_index: item.log_index,
                tree_size: shown.size,
            })
            .await?
            .into_inner();
        let hashes = hashes_from_bytes(&proof.hashes)?;
        match check_inclusion(
            &hashes,
            shown.size,
            shown.root,
            item.log_index,
            leaf_hash(&item.entry),
        ) {
            Ok(()) => {
                core.store
                    .mark_proven(&item.envelope_id, item.log_index, shown.size, core.now())
                    .await?
            }
            Err(e) => {
                let reason = format!(
                    "envelope {} is not at log entry {} as the hub's receipt promised: {e}",
                    hex::encode(&item.envelope_id),
                    item.log_index
                );
                return alarm(core, reason, &note, &note).await;
            }
        }
    }
    Ok(())
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

/// Acks what `inbox_loop` has taken in, in batches: every id waiting when the previous ack
/// returned goes into the next one, so under load one `Ack` (one transaction at the hub) covers
/// many envelopes, and taking in the next envelope does not wait for the hub. An ack that fails
/// is tried again, with backoff up to 15 s, until it succeeds or the node stops; meanwhile the
/// envelopes stay in the hub's mailbox (a new subscription would deliver them again, which
/// `ingest` recognises as done), and a full queue of ids makes the inbox loop wait.
async fn ack_loop(
    org: String,
    mut client: HubClient<Channel>,
    mut ids: tokio::sync::mpsc::Receiver<Vec<u8>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut batch = Vec::new();
    while ids.recv_many(&mut batch, 1_000).await > 0 {
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
        batch.clear();
    }
}

async fn inbox_loop(
    core: Arc<NodeCore>,
    mut client: HubClient<Channel>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (acks, ack_ids) = tokio::sync::mpsc::channel(10_000);
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
                for outcome in &outcomes {
                    if !taken_in(&core, &acks, &run[at].0, seqs[at], outcome).await {
                        return;
                    }
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
                                if !taken_in(&core, &acks, envelope, seqs[at], &outcome).await {
                                    return;
                                }
                                at += 1;
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                    other => other,
                };
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

/// Counts an envelope taken in and queues its ack (after the transaction that took it in);
/// false when the ack task has stopped.
async fn taken_in(
    core: &NodeCore,
    acks: &tokio::sync::mpsc::Sender<Vec<u8>>,
    envelope: &Envelope,
    seq: u64,
    outcome: &Outcome,
) -> bool {
    tracing::debug!(org = %core.org_id, ?outcome, "ingested");
    if !matches!(outcome, Outcome::Duplicate) {
        core.metrics.received(envelope_kind(envelope));
    }
    core.last_seq
        .store(seq, std::sync::atomic::Ordering::Relaxed);
    acks.send(envelope_id(envelope)).await.is_ok()
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

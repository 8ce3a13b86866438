//! The outbox loop: pushing pending envelopes to the hub in rounds, each recipient's in order
//! and the recipients side by side, in `SendBatch` calls; back-off while the hub is away, a
//! recipient with a full mailbox sitting out, and a refusal by the hub recorded for good.

use std::sync::Arc;
use std::time::Duration;

use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{Envelope, SendBatchRequest, SendResult, Signed};
use prost::Message;

use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

use crate::core::NodeCore;
use crate::store::OutboxEntry;

use super::{backoff, envelope_id, sleep_or_stop};

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
pub(super) async fn outbox_loop(
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
    let prepared = match core.envelopes_to_push(&entries).await {
        Ok(prepared) => prepared,
        Err(e) => vec![Err(e)],
    };
    for (entry, prepared) in entries.into_iter().zip(prepared) {
        match prepared {
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
        core.check_receipts_together(results.iter().filter_map(|r| r.as_ref().ok()));
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

/// The most envelopes in one `SendBatch` call (the hub takes up to 64); a call also holds at
/// most twice the largest envelope body in bytes (and at least one envelope).
pub const PUSH_BATCH: usize = 64;

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

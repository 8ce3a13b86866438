//! Routing: `Send` and `SendBatch`. Each envelope is checked against the directory and the
//! sender's certificate, takes a place under the recipient's quota, and is handed to the group
//! commit, which stores waiting envelopes in shared transactions; the caller's answer (its
//! receipt, or the refusal) comes back from there.

use std::sync::Arc;

use overstap_proto::envelope::{header_hash, verify_header_in};
use overstap_proto::pb::{
    Envelope, EnvelopeHeader, Member, MemberKind, Receipt, SendResult, Signed,
};
use overstap_proto::sign::{Domain, decode_body, sign_message};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use super::{HubError, HubService, HubState};
use crate::store::{Accepted, HubStore, NewEnvelope, ReceiptSigner, StoreError};

/// The most envelopes one commit takes.
pub(super) const MAX_COMMIT_BATCH: usize = 256;

/// One envelope waiting for the group commit, with what makes its receipt and where its answer
/// goes.
pub(super) struct CommitJob {
    env: NewEnvelope,
    sign: ReceiptSigner,
    answer: tokio::sync::oneshot::Sender<Result<Accepted, StoreError>>,
    /// Shared by the envelopes of one `SendBatch`: set when a commit with one of them failed,
    /// so that none after it is stored ahead of it.
    batch: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Group commit: every envelope waiting when a commit ends goes into the next one, so under
/// load many envelopes share one transaction and one fsync instead of taking one each. A
/// receipt is still handed out only after its envelope's commit. The batch runs in this task,
/// not in the calls that asked: a caller that hangs up cannot cancel a transaction half-way.
/// The task ends when the service is dropped (its channel closes).
pub(super) async fn group_commit<S: HubStore>(
    state: std::sync::Weak<HubState<S>>,
    mut jobs: mpsc::Receiver<CommitJob>,
) {
    use std::sync::atomic::Ordering;
    let mut batch = Vec::with_capacity(MAX_COMMIT_BATCH);
    while jobs.recv_many(&mut batch, MAX_COMMIT_BATCH).await > 0 {
        let Some(state) = state.upgrade() else {
            break;
        };
        let mut envs = Vec::with_capacity(batch.len());
        let mut signs = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        let mut flags = Vec::new();
        for job in batch.drain(..) {
            if job
                .batch
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                // An earlier envelope of its SendBatch was not stored: this one is not either.
                state.waiting.sub(&job.env.to_org, 1);
                let _ = job.answer.send(Err(StoreError::Failed(
                    "an envelope before it in its batch could not be stored".into(),
                )));
                continue;
            }
            envs.push(job.env);
            signs.push(job.sign);
            answers.push(job.answer);
            flags.extend(job.batch);
        }
        if envs.is_empty() {
            continue;
        }
        let to: Vec<String> = envs.iter().map(|e| e.to_org.clone()).collect();
        let items: Vec<(NewEnvelope, ReceiptSigner)> = envs.into_iter().zip(signs).collect();
        state.metrics.commit_batch(items.len());
        match state.store.accept_batch(items).await {
            Ok(results) => {
                for ((result, answer), to_org) in results.into_iter().zip(answers).zip(&to) {
                    match &result {
                        Ok(Accepted::New { seq, .. }) => {
                            state.mailbox_signal(to_org).send_replace(*seq);
                        }
                        // Nothing new in the mailbox: the sender's place goes back.
                        _ => state.waiting.sub(to_org, 1),
                    }
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                for flag in &flags {
                    flag.store(true, Ordering::Relaxed);
                }
                tracing::error!(error = %e, envelopes = answers.len(), "a group commit failed; none of it was stored");
                for to_org in &to {
                    state.waiting.sub(to_org, 1);
                }
                let text = e.to_string();
                let mut first = Some(e);
                for answer in answers {
                    let e = first
                        .take()
                        .unwrap_or_else(|| StoreError::Failed(text.clone()));
                    let _ = answer.send(Err(e));
                }
            }
        }
    }
}

impl<S: HubStore> HubService<S> {
    /// Accepts one envelope; `kind` is set as soon as the header says what it is, and the
    /// outcome (`accepted` or `duplicate`) comes back with the receipt.
    pub(super) async fn do_send(
        &self,
        caller: Member,
        env: Envelope,
        kind: &mut &'static str,
    ) -> Result<(Signed, &'static str), HubError> {
        self.enqueue(caller, env, kind, None).await?.finish().await
    }

    /// Checks one envelope and hands it to the group commit: envelopes handed over one after
    /// another are committed in that order. `kind` is set as soon as the header says what it is.
    async fn enqueue(
        &self,
        caller: Member,
        env: Envelope,
        kind: &mut &'static str,
        batch: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<Pending, HubError> {
        let directory = self.directory()?;
        // Who the envelope claims to be from is checked against the certificate before the
        // body is looked at.
        let signed_header = env
            .header
            .as_ref()
            .ok_or_else(|| HubError::Invalid("envelope has no header".into()))?;
        let claimed: EnvelopeHeader = decode_body(Domain::EnvelopeHeader, signed_header)?;
        *kind = overstap_proto::envelope::kind_name(claimed.kind);
        if claimed.from_org != caller.org_id {
            return Err(HubError::WrongSender {
                cert_org: caller.org_id,
                claimed: claimed.from_org,
            });
        }
        let header = verify_header_in(
            Some(&self.state.checked),
            &env,
            &directory,
            self.state.max_body,
        )?;
        let recipient = directory.member(&header.to_org)?;
        if matches!(recipient.kind(), MemberKind::Hub | MemberKind::Coordinator) {
            return Err(HubError::BadRecipient(format!(
                "{} is a {} and receives no envelopes",
                recipient.org_id,
                overstap_proto::directory::kind_name(recipient.kind())
            )));
        }
        if header.to_org == header.from_org {
            return Err(HubError::BadRecipient(
                "an envelope cannot be sent to its own sender".into(),
            ));
        }
        let header_sha256 = header_hash(&env);
        let new = NewEnvelope {
            envelope_id: header.envelope_id.clone(),
            header_sha256: header_sha256.clone(),
            from_org: header.from_org.clone(),
            to_org: header.to_org.clone(),
            kind: header.kind,
            body_len: header.body_len,
            body_sha256: header.body_sha256.clone(),
            encoded: env.encode_to_vec(),
            received_at: self.state.now(),
            erasure_reason: header.erasure_reason.clone(),
            about_package: header.about_package.clone(),
        };
        let hub_id = self.state.hub_id.clone();
        let key = self.state.key.clone();
        let envelope_id = header.envelope_id.clone();
        let signer = move |log_index: u64, received_at: i64| {
            let receipt = Receipt {
                envelope_id: envelope_id.clone(),
                log_index,
                received_at,
                header_sha256: header_sha256.clone(),
                hub_id: hub_id.clone(),
            };
            sign_message(Domain::Receipt, &receipt, &[&key]).encode_to_vec()
        };
        // A recipient that picks nothing up cannot make the hub hold without end: past the quota,
        // senders are asked to wait.
        let quota = self.state.limits.mailbox_quota;
        let place = match self.state.waiting.reserve(&header.to_org, quota) {
            Ok(place) => place,
            Err(held) => {
                return Err(HubError::Exhausted {
                    reason: "mailbox_full",
                    detail: format!(
                        "the mailbox of {} holds {held} envelopes not yet picked up; try again later",
                        header.to_org
                    ),
                    retry_after: Some(60),
                });
            }
        };
        // Given back if the call ends before its envelope reaches the group commit. From there
        // the commit happens whether or not the caller still waits, so the place is kept, and
        // the commit task gives it back for anything that did not add to the mailbox.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = CommitJob {
            env: new,
            sign: Arc::new(signer),
            answer,
            batch,
        };
        self.state.commits.send(job).await.map_err(|_| closed())?;
        place.keep();
        Ok(Pending { answered, header })
    }

    /// `SendBatch`: each envelope as `Send` would take it, handed to the group commit in the
    /// order sent; the answers come back in that order. It stops at the first envelope it does
    /// not take (refused, or it must wait): the ones after it are not looked at, so nothing
    /// overtakes an envelope its sender will send again. If a commit fails, the envelopes of
    /// the batch after it are not stored either.
    pub(super) async fn do_send_batch(
        &self,
        caller: Member,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<SendResult>, HubError> {
        if envelopes.len() > MAX_SEND_BATCH {
            return Err(HubError::Invalid(format!(
                "a batch holds at most {MAX_SEND_BATCH} envelopes, not {}",
                envelopes.len()
            )));
        }
        self.check_together(&envelopes);
        let mut taken = Vec::with_capacity(envelopes.len());
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for (i, env) in envelopes.into_iter().enumerate() {
            let mut kind = "unknown";
            // The call took one of the member's calls; every further envelope takes one more.
            let queued = match i {
                0 => Ok(()),
                _ => self.take_call(&caller.org_id),
            };
            let queued = match queued {
                Ok(()) => {
                    self.enqueue(caller.clone(), env, &mut kind, Some(flag.clone()))
                        .await
                }
                Err(e) => Err(e),
            };
            let refused = queued.is_err();
            taken.push((kind, queued));
            if refused {
                break;
            }
        }
        let mut results = Vec::with_capacity(taken.len());
        for (kind, queued) in taken {
            let sent = match queued {
                Ok(pending) => pending.finish().await,
                Err(e) => Err(e),
            };
            results.push(match self.answer(kind, sent) {
                Ok(receipt) => SendResult {
                    receipt: Some(receipt),
                    ..Default::default()
                },
                Err(status) => {
                    let meta = |key: &str| {
                        status
                            .metadata()
                            .get(key)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    SendResult {
                        receipt: None,
                        code: status.code() as i32,
                        message: status.message().to_string(),
                        limit: meta(crate::limits::LIMIT).unwrap_or_default(),
                        retry_after: meta(crate::limits::RETRY_AFTER)
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                    }
                }
            });
        }
        Ok(results)
    }

    /// Checks the header signatures of a call's envelopes together, in one `verify_batch`, so
    /// that each envelope's own check ([`verify_header_in`]) finds its signature checked. When
    /// the batch does not hold, nothing of it is kept and each envelope is checked alone, which
    /// names the bad one; an envelope whose sender is unknown is left to its own check.
    fn check_together(&self, envelopes: &[Envelope]) {
        if envelopes.len() < 2 {
            return;
        }
        let Ok(directory) = self.directory() else {
            return;
        };
        let checks = envelopes.iter().filter_map(|e| {
            let signed = e.header.as_ref()?;
            let claimed = decode_body::<EnvelopeHeader>(Domain::EnvelopeHeader, signed).ok()?;
            let key = directory.signing_key_of(&claimed.from_org).ok()?;
            Some((Domain::EnvelopeHeader, signed, key))
        });
        if let Err(e) = self.state.checked.check_together(checks) {
            tracing::info!(error = %e, "a call's headers did not verify together; each is checked alone");
        }
    }

    /// Counts how one envelope's send went, by kind and outcome, and gives the caller's answer:
    /// the receipt, or the refusal as a status.
    pub(super) fn answer(
        &self,
        kind: &'static str,
        sent: Result<(Signed, &'static str), HubError>,
    ) -> Result<Signed, Status> {
        match sent {
            Ok((receipt, outcome)) => {
                self.state.metrics.routed(kind, outcome);
                Ok(receipt)
            }
            Err(e) => {
                self.state.metrics.routed(kind, "refused");
                Err(self.refuse(e))
            }
        }
    }
}

/// The most envelopes one `SendBatch` call may carry.
pub const MAX_SEND_BATCH: usize = 64;

/// An envelope handed to the group commit, waiting for its commit.
struct Pending {
    answered: tokio::sync::oneshot::Receiver<Result<Accepted, StoreError>>,
    header: EnvelopeHeader,
}

fn closed() -> HubError {
    HubError::Store(StoreError::Failed("the hub is shutting down".into()))
}

impl Pending {
    /// The receipt once the envelope is committed, and whether it was new or a duplicate.
    async fn finish(self) -> Result<(Signed, &'static str), HubError> {
        let header = self.header;
        let accepted = self.answered.await.map_err(|_| closed())??;
        let (receipt, outcome) = match accepted {
            Accepted::New { receipt, .. } => {
                tracing::info!(
                    from = %header.from_org, to = %header.to_org, kind = header.kind,
                    bytes = header.body_len, "envelope accepted"
                );
                (receipt, "accepted")
            }
            Accepted::Duplicate { receipt } => {
                tracing::info!(from = %header.from_org, "duplicate envelope; same receipt again");
                (receipt, "duplicate")
            }
        };
        let receipt = Signed::decode(receipt.as_slice())
            .map_err(|e| HubError::Invalid(format!("stored receipt: {e}")))?;
        Ok((receipt, outcome))
    }
}

//! The `Hub` gRPC service: decode, check with the protocol rules, call the store, map errors.
//! No SQL here, and no key that opens a body: the hub routes sealed envelopes and logs metadata.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::{header_hash, verify_header};
use overstap_proto::pb::hub_server::Hub;
use overstap_proto::pb::{
    AckRequest, AckResponse, Delivery, Envelope, EnvelopeHeader, GetDirectoryRequest,
    GetDirectoryResponse, Member, MemberKind, PublishDirectoryResponse, Receipt, Signed,
    SubscribeRequest,
};
use overstap_proto::pb::{SendBatchRequest, SendBatchResponse, SendResult};
use overstap_proto::sign::{Domain, decode_body, sign_message};
use overstap_proto::{ProtocolError, UnixTime};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::limits::{Counter, Limits, RateLimiter};
use crate::metrics::HubMetrics;
use crate::store::{
    Accepted, Checkpoint as StoredCheckpoint, Event, HubStore, NewEnvelope, ReceiptSigner,
    StoreError,
};
use overstap_proto::log::{
    Hash, LogEntry, MemoryTree, leaf_hash, sign_checkpoint, stored_hash_count,
};
use overstap_proto::pb::{
    AddCosignatureResponse, CheckpointResponse, ConsistencyRequest, GetCheckpointRequest,
    InclusionRequest, LogEntriesRequest, LogEntriesResponse, ProofResponse,
};

/// Why the hub refused a call. Exactly one conversion to `tonic::Status` below.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the client certificate is not registered to any member of the directory")]
    NotAMember,
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("certificate belongs to {cert_org}, but the envelope claims to be from {claimed}")]
    WrongSender { cert_org: String, claimed: String },
    #[error("the hub has no directory yet; the authority must publish one")]
    NoDirectory,
    #[error("{0}")]
    BadRecipient(String),
    #[error("{0}")]
    Invalid(String),
    /// A limit under abuse; `retry_after` (seconds) when waiting helps.
    #[error("{detail}")]
    Exhausted {
        reason: &'static str,
        detail: String,
        retry_after: Option<u64>,
    },
}

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match &e {
            HubError::Protocol(p) => match p {
                ProtocolError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
                ProtocolError::BadSignature { .. } | ProtocolError::MissingSignature { .. } => {
                    Status::unauthenticated(e.to_string())
                }
                ProtocolError::UnknownMember(_) => Status::not_found(e.to_string()),
                ProtocolError::StaleDirectory { .. } => Status::failed_precondition(e.to_string()),
                _ => Status::invalid_argument(e.to_string()),
            },
            HubError::Store(StoreError::IdConflict) => Status::already_exists(e.to_string()),
            HubError::Store(inner) => {
                // Database text never reaches a client; it is logged instead.
                tracing::error!(error = %inner, "store failure");
                Status::unavailable("the hub could not store this right now; try again")
            }
            HubError::NotAMember | HubError::WrongSender { .. } | HubError::NoCertificate => {
                Status::permission_denied(e.to_string())
            }
            HubError::NoDirectory => Status::unavailable(e.to_string()),
            HubError::BadRecipient(_) => Status::failed_precondition(e.to_string()),
            HubError::Invalid(_) => Status::invalid_argument(e.to_string()),
            HubError::Exhausted {
                retry_after,
                reason,
                ..
            } => {
                let mut status = Status::resource_exhausted(e.to_string());
                if let Ok(v) = reason.parse() {
                    status.metadata_mut().insert(crate::limits::LIMIT, v);
                }
                if let Some(secs) = retry_after
                    && let Ok(v) = secs.to_string().parse()
                {
                    status.metadata_mut().insert(crate::limits::RETRY_AFTER, v);
                }
                status
            }
        }
    }
}

impl HubError {
    /// A short, stable name for why: the `reason` label of the rejection metric.
    pub fn reason(&self) -> &'static str {
        match self {
            HubError::Protocol(p) => match p {
                ProtocolError::TooLarge { .. } => "too_large",
                ProtocolError::BadSignature { .. } | ProtocolError::MissingSignature { .. } => {
                    "bad_signature"
                }
                ProtocolError::UnknownMember(_) => "unknown_member",
                ProtocolError::StaleDirectory { .. } => "stale_directory",
                _ => "malformed",
            },
            HubError::Store(StoreError::IdConflict) => "id_conflict",
            HubError::Store(_) => "store_unavailable",
            HubError::NotAMember => "not_a_member",
            HubError::NoCertificate => "no_certificate",
            HubError::WrongSender { .. } => "wrong_sender",
            HubError::NoDirectory => "no_directory",
            HubError::BadRecipient(_) => "bad_recipient",
            HubError::Invalid(_) => "invalid",
            HubError::Exhausted { reason, .. } => reason,
        }
    }
}

/// Everything the service needs, shared by all connections.
pub struct HubState<S> {
    pub store: S,
    pub hub_id: String,
    pub key: SigningKey,
    pub authority: VerifyingKey,
    pub max_body: usize,
    directory: RwLock<Option<Arc<VerifiedDirectory>>>,
    /// Per recipient, the newest mailbox sequence number; subscribers wait on it.
    mailboxes: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The log's tree, integrated up to the newest checkpoint.
    log: tokio::sync::Mutex<MemoryTree>,
    shutdown: watch::Receiver<bool>,
    pub metrics: HubMetrics,
    pub limits: Limits,
    rate: RateLimiter,
    /// Open subscriptions per member, and envelopes waiting per recipient.
    subscriptions: Counter,
    waiting: Counter,
    /// Envelopes on their way to the group commit.
    commits: mpsc::Sender<CommitJob>,
}

impl<S> HubState<S> {
    /// The signal subscribers to `org`'s mailbox wait on.
    fn mailbox_signal(&self, org: &str) -> watch::Sender<u64> {
        let mut map = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(org.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

/// The most envelopes one commit takes.
const MAX_COMMIT_BATCH: usize = 256;

/// One envelope waiting for the group commit, with what makes its receipt and where its answer
/// goes.
struct CommitJob {
    env: NewEnvelope,
    sign: Box<dyn Fn(u64, i64) -> Vec<u8> + Send + Sync>,
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
async fn group_commit<S: HubStore>(
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
        let items: Vec<(NewEnvelope, ReceiptSigner<'_>)> = envs
            .into_iter()
            .zip(signs.iter().map(|s| &**s as ReceiptSigner<'_>))
            .collect();
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

/// A directory as the store keeps it, decoded and checked against the authority's key.
fn stored_directory(bytes: &[u8], authority: &VerifyingKey) -> Result<VerifiedDirectory, HubError> {
    let signed = Signed::decode(bytes)
        .map_err(|e| HubError::Invalid(format!("the stored directory does not decode: {e}")))?;
    Ok(VerifiedDirectory::verify(&signed, authority, 0)?)
}

/// The gRPC service; cheap to clone.
pub struct HubService<S> {
    state: Arc<HubState<S>>,
}

impl<S> Clone for HubService<S> {
    fn clone(&self) -> Self {
        HubService {
            state: self.state.clone(),
        }
    }
}

pub(crate) fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl<S: HubStore> HubService<S> {
    /// Builds the service and loads the newest stored directory.
    pub async fn new(
        store: S,
        hub_id: String,
        key: SigningKey,
        authority: VerifyingKey,
        max_body: usize,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, HubError> {
        let waiting = Counter::default();
        for (org, depth) in store.mailbox_depths().await? {
            waiting.set(&org, depth);
        }
        let hashes = store.log_hashes().await?;
        let size = store
            .latest_checkpoint()
            .await?
            .map(|c| c.size)
            .unwrap_or(0);
        let log = MemoryTree::from_stored(hashes.into_iter().map(Hash).collect(), size);
        let directory = match store.directory().await? {
            Some(bytes) => Some(Arc::new(stored_directory(&bytes, &authority)?)),
            None => None,
        };
        let (commits, jobs) = mpsc::channel(4 * MAX_COMMIT_BATCH);
        let service = HubService {
            state: Arc::new(HubState {
                store,
                hub_id,
                key,
                authority,
                max_body,
                directory: RwLock::new(directory),
                mailboxes: Mutex::new(HashMap::new()),
                log: tokio::sync::Mutex::new(log),
                shutdown,
                metrics: HubMetrics::default(),
                limits,
                rate: RateLimiter::default(),
                subscriptions: Counter::default(),
                waiting,
                commits,
            }),
        };
        tokio::spawn(group_commit(Arc::downgrade(&service.state), jobs));
        Ok(service)
    }

    pub fn state(&self) -> &HubState<S> {
        &self.state
    }

    pub(crate) fn directory(&self) -> Result<Arc<VerifiedDirectory>, HubError> {
        self.state
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(HubError::NoDirectory)
    }

    /// Installs a directory if the authority signed it and it is newer than the current one.
    pub async fn publish_directory(&self, signed: &Signed) -> Result<u64, HubError> {
        let held = self.directory().map(|d| d.version()).unwrap_or(0);
        let verified = VerifiedDirectory::verify(signed, &self.state.authority, held)?;
        let version = verified.version();
        self.state
            .store
            .save_directory(version, &signed.encode_to_vec(), now())
            .await?;
        self.install(verified);
        tracing::info!(version, "directory installed");
        Ok(version)
    }

    /// Puts `verified` in place of the directory held, unless that one is as new or newer.
    fn install(&self, verified: VerifiedDirectory) -> bool {
        let mut slot = self
            .state
            .directory
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let newer = slot.as_ref().map(|d| d.version()).unwrap_or(0) < verified.version();
        if newer {
            *slot = Some(Arc::new(verified));
        }
        newer
    }

    /// Installs the newest directory in the store if it is newer than the one held: another hub
    /// process sharing the store may have been handed it. Returns the version now held.
    pub async fn refresh_directory(&self) -> Result<u64, HubError> {
        let held = self.directory().map(|d| d.version()).unwrap_or(0);
        let Some(bytes) = self.state.store.directory().await? else {
            return Ok(held);
        };
        let verified = stored_directory(&bytes, &self.state.authority)?;
        let version = verified.version();
        if version > held && self.install(verified) {
            tracing::info!(
                version,
                "directory installed (published through another hub)"
            );
        }
        Ok(version.max(held))
    }

    /// Maps the caller's TLS client certificate to a directory member.
    pub(crate) fn caller<T>(&self, req: &Request<T>) -> Result<Member, HubError> {
        let certs = req.peer_certs().ok_or(HubError::NoCertificate)?;
        let leaf = certs.first().ok_or(HubError::NoCertificate)?;
        let fingerprint = Sha256::digest(leaf.as_ref());
        let member = self
            .directory()?
            .member_by_cert(&fingerprint)
            .cloned()
            .ok_or(HubError::NotAMember)?;
        self.take_call(&member.org_id)?;
        Ok(member)
    }

    /// Takes one of `org`'s calls: every member has its own budget, so one cannot starve the
    /// others (each envelope of a `SendBatch` counts as a call).
    fn take_call(&self, org: &str) -> Result<(), HubError> {
        let per_second = self.state.limits.requests_per_second;
        self.state
            .rate
            .take(org, per_second)
            .map_err(|wait| HubError::Exhausted {
                reason: "rate_limited",
                detail: format!(
                    "{org} made more than {per_second} calls per second; slow down and try again"
                ),
                retry_after: Some(wait.ceil().max(1.0) as u64),
            })
    }

    /// The id checkpoints are signed under: the hub's id in the directory, since that is what
    /// nodes check against (the settings' id only if the directory lists no hub).
    fn log_hub_id(&self, directory: &VerifiedDirectory) -> String {
        directory
            .hub()
            .map(|h| h.org_id.clone())
            .unwrap_or_else(|| self.state.hub_id.clone())
    }

    /// Integrates new events into the log and signs a checkpoint for them, in one transaction
    /// with their stored hashes. Returns the new size (unchanged when nothing was new).
    pub async fn integrate(&self) -> Result<u64, HubError> {
        let mut tree = self.state.log.lock().await;
        // Another hub process sharing the store may have integrated (it may have been the
        // sequencer until now): this tree first takes in what the store holds.
        self.follow_in(&mut tree).await?;
        if !self.state.store.sequencer_lease().await? {
            return Ok(tree.size());
        }
        let start = tree.size();
        let events = self
            .state
            .store
            .events(start, crate::INTEGRATE_BATCH)
            .await?;
        if events.is_empty() {
            return Ok(start);
        }
        let directory = self.directory()?;
        let region = directory.directory.region.clone();
        let hub_id = self.log_hub_id(&directory);
        let first_hash = stored_hash_count(start);
        // Appended in place (a copy of a tree of a million entries would be 64 MB per round).
        // If anything fails, the tree goes back to where it was; should the commit have happened
        // after all, the next round's `follow_in` takes it in from the store.
        let appended = async {
            let mut added = Vec::new();
            for e in &events {
                for h in tree.append(leaf_hash(&entry_of(e)))? {
                    added.push(h.0);
                }
            }
            let root = tree.root()?;
            let note = sign_checkpoint(&region, tree.size(), root, &self.state.key, &hub_id)?;
            let cp = StoredCheckpoint {
                size: tree.size(),
                root: root.0,
                note,
                at: now(),
            };
            self.state.store.integrate(first_hash, &added, &cp).await?;
            Ok::<_, HubError>(cp.size)
        }
        .await;
        if appended.is_err() {
            tree.truncate(start);
        }
        appended
    }

    /// Brings the in-memory tree up to the newest checkpoint in the store.
    async fn follow_in(&self, tree: &mut MemoryTree) -> Result<(), HubError> {
        let Some(cp) = self.state.store.latest_checkpoint().await? else {
            return Ok(());
        };
        if cp.size <= tree.size() {
            return Ok(());
        }
        let first = stored_hash_count(tree.size());
        let more = self
            .state
            .store
            .log_hashes_between(first, stored_hash_count(cp.size))
            .await?;
        tree.catch_up(more.into_iter().map(Hash).collect(), cp.size)?;
        Ok(())
    }

    /// The log's tree, brought up to the store's newest checkpoint first when `size` is more
    /// than this process has integrated (another hub process may be the sequencer).
    async fn tree_of_size(
        &self,
        size: u64,
    ) -> Result<tokio::sync::MutexGuard<'_, MemoryTree>, HubError> {
        let mut tree = self.state.log.lock().await;
        if size > tree.size() {
            self.follow_in(&mut tree).await?;
        }
        Ok(tree)
    }

    /// Wakes the subscribers of envelopes that other hub processes put in a mailbox.
    pub fn watch_arrivals(&self, mut arrivals: tokio::sync::mpsc::Receiver<(String, u64)>) {
        let svc = self.clone();
        let mut shutdown = self.state.shutdown.clone();
        tokio::spawn(async move {
            loop {
                // Ends with the hub, so that nothing keeps its store (and the sequencer's lock
                // with it) alive after it stopped.
                let (org, seq) = tokio::select! {
                    a = arrivals.recv() => match a {
                        Some(a) => a,
                        None => return,
                    },
                    _ = shutdown.changed() => return,
                };
                if org.is_empty() {
                    let signals: Vec<_> = svc
                        .state
                        .mailboxes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    for s in signals {
                        s.send_modify(|_| {});
                    }
                } else {
                    svc.state.mailbox_signal(&org).send_if_modified(|v| {
                        let newer = seq > *v;
                        *v = (*v).max(seq);
                        newer
                    });
                }
            }
        });
    }

    /// Sets the mailbox counts behind the quota from the store again, so an ack cancelled after
    /// its commit cannot leave a recipient counted fuller than it is for long.
    pub async fn recount_mailboxes(&self) -> Result<(), HubError> {
        let depths: HashMap<String, u64> = self
            .state
            .store
            .mailbox_depths()
            .await?
            .into_iter()
            .collect();
        self.state.waiting.reset(depths);
        Ok(())
    }

    /// The metrics as OpenMetrics text, with the gauges read fresh from the store.
    pub async fn metrics_text(&self) -> Result<String, HubError> {
        let metrics = &self.state.metrics;
        // Every member that receives envelopes has a depth, zero included; so does any
        // recipient with envelopes waiting.
        let mut depths: HashMap<String, u64> = HashMap::new();
        if let Ok(directory) = self.directory() {
            for m in &directory.directory.members {
                if !matches!(m.kind(), MemberKind::Hub | MemberKind::Coordinator) {
                    depths.insert(m.org_id.clone(), 0);
                }
            }
        }
        depths.extend(self.state.store.mailbox_depths().await?);
        for (recipient, depth) in depths {
            metrics
                .mailbox_depth
                .get_or_create(&crate::metrics::Recipient { recipient })
                .set(depth as i64);
        }
        metrics
            .log_size
            .set(self.state.log.lock().await.size() as i64);
        Ok(metrics.encode())
    }

    /// Counts a refusal and turns it into the status the caller gets.
    fn refuse(&self, e: HubError) -> Status {
        self.state.metrics.rejected(e.reason());
        e.into()
    }

    /// Accepts one envelope; `kind` is set as soon as the header says what it is, and the
    /// outcome (`accepted` or `duplicate`) comes back with the receipt.
    async fn do_send(
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
        let header = verify_header(&env, &directory, self.state.max_body)?;
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
            received_at: now(),
            erasure_reason: header.erasure_reason.clone(),
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
            sign: Box::new(signer),
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
    async fn do_send_batch(
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

    /// Counts how one envelope's send went, by kind and outcome, and gives the caller's answer:
    /// the receipt, or the refusal as a status.
    fn answer(
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

/// One of a member's subscriptions, given back when the stream ends.
struct Slot<S>(HubService<S>, String);

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        self.0.state.subscriptions.sub(&self.1, 1);
    }
}

/// Counts an open subscription for as long as it lives.
struct Subscribed(prometheus_client::metrics::gauge::Gauge);

impl Subscribed {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Subscribed(gauge.clone())
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery, Status>> + Send>>;

/// The log leaf of a stored event.
pub fn entry_of(e: &Event) -> LogEntry {
    LogEntry {
        event: e.event.clone(),
        envelope_kind: e.envelope_kind,
        from_org: e.from_org.clone(),
        to_org: e.to_org.clone(),
        envelope_id: e.envelope_id.clone(),
        body_sha256: e.body_sha256.clone(),
        at: e.at,
    }
}

fn proof_response(hashes: Vec<Hash>) -> ProofResponse {
    ProofResponse {
        hashes: hashes.into_iter().map(|h| h.0.to_vec()).collect(),
    }
}

#[tonic::async_trait]
impl<S: HubStore> Hub for HubService<S> {
    async fn send(&self, request: Request<Envelope>) -> Result<Response<Signed>, Status> {
        let mut kind = "unknown";
        let sent = match self.caller(&request) {
            Ok(caller) => self.do_send(caller, request.into_inner(), &mut kind).await,
            Err(e) => Err(e),
        };
        self.answer(kind, sent).map(Response::new)
    }

    async fn send_batch(
        &self,
        request: Request<SendBatchRequest>,
    ) -> Result<Response<SendBatchResponse>, Status> {
        let caller = self.caller(&request).map_err(|e| self.refuse(e))?;
        let results = self
            .do_send_batch(caller, request.into_inner().envelopes)
            .await
            .map_err(|e| self.refuse(e))?;
        Ok(Response::new(SendBatchResponse { results }))
    }

    type SubscribeStream = DeliveryStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let org = self.caller(&request).map_err(|e| self.refuse(e))?.org_id;
        let cap = u64::from(self.state.limits.subscriptions_per_member);
        if let Err(open) = self.state.subscriptions.try_add(&org, cap) {
            return Err(self.refuse(HubError::Exhausted {
                reason: "too_many_subscriptions",
                detail: format!(
                    "{org} already has {open} subscriptions open; close one before opening another"
                ),
                retry_after: None,
            }));
        }
        let mut cursor = request.into_inner().after_seq;
        let svc = self.clone();
        let (tx, rx) = mpsc::channel::<Result<Delivery, Status>>(32);
        tokio::spawn(async move {
            // Subscribing to the signal before reading the mailbox means no arrival between
            // the read and the wait is missed.
            let mut signal = svc.state.mailbox_signal(&org).subscribe();
            let mut shutdown = svc.state.shutdown.clone();
            let _counted = Subscribed::new(&svc.state.metrics.subscribers);
            let _slot = Slot(svc.clone(), org.clone());
            tracing::info!(%org, cursor, "subscriber connected");
            loop {
                let batch = match svc.state.store.mailbox(&org, cursor, 64).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(HubError::from(e).into())).await;
                        return;
                    }
                };
                let full = batch.len() == 64;
                for entry in batch {
                    cursor = entry.seq;
                    let delivery = match (
                        Envelope::decode(entry.envelope.as_slice()),
                        Signed::decode(entry.receipt.as_slice()),
                    ) {
                        (Ok(envelope), Ok(receipt)) => Delivery {
                            seq: entry.seq,
                            envelope: Some(envelope),
                            receipt: Some(receipt),
                        },
                        _ => {
                            tracing::error!(seq = entry.seq, "stored envelope does not decode");
                            continue;
                        }
                    };
                    if tx.send(Ok(delivery)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = signal.changed() => if changed.is_err() { return },
                    _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let org = self.caller(&request).map_err(|e| self.refuse(e))?.org_id;
        let ids = request.into_inner().envelope_ids;
        if ids.len() > 10_000 {
            return Err(
                HubError::Invalid(format!("at most 10000 ids per ack, got {}", ids.len())).into(),
            );
        }
        let at = now();
        let accepted_at = self
            .state
            .store
            .ack(&org, &ids, at)
            .await
            .map_err(|e| self.refuse(e.into()))?;
        self.state.waiting.sub(&org, accepted_at.len() as u64);
        for received in &accepted_at {
            self.state
                .metrics
                .send_to_ack
                .observe((at - received).max(0) as f64);
        }
        Ok(Response::new(AckResponse {
            acked: accepted_at.len() as u32,
        }))
    }

    async fn get_directory(
        &self,
        request: Request<GetDirectoryRequest>,
    ) -> Result<Response<GetDirectoryResponse>, Status> {
        let known = request.get_ref().known_version;
        let directory = self.directory()?;
        Ok(Response::new(GetDirectoryResponse {
            directory: (directory.version() > known).then(|| directory.signed.clone()),
        }))
    }

    async fn publish_directory(
        &self,
        request: Request<Signed>,
    ) -> Result<Response<PublishDirectoryResponse>, Status> {
        // Anyone with a region certificate may hand in a directory; only the authority's
        // signature makes it count.
        if request.peer_certs().is_none() {
            return Err(HubError::NoCertificate.into());
        }
        let version = self.publish_directory(request.get_ref()).await?;
        Ok(Response::new(PublishDirectoryResponse { version }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        self.caller(&request)?;
        let cp = self
            .state
            .store
            .latest_checkpoint()
            .await
            .map_err(HubError::from)?;
        let cp = cp.ok_or_else(|| Status::not_found("the log is empty: no checkpoint yet"))?;
        let lines = self
            .state
            .store
            .cosignatures(cp.size)
            .await
            .map_err(HubError::from)?;
        let note =
            overstap_proto::log::with_cosignatures(&cp.note, &lines).map_err(HubError::from)?;
        Ok(Response::new(CheckpointResponse { note }))
    }

    async fn add_cosignature(
        &self,
        request: Request<CheckpointResponse>,
    ) -> Result<Response<AddCosignatureResponse>, Status> {
        let caller = self.caller(&request)?;
        if caller.kind() != MemberKind::Coordinator {
            return Err(Status::permission_denied(format!(
                "{} is not a coordinator; only coordinators witness the log",
                caller.org_id
            )));
        }
        let directory = self.directory()?;
        let hub_id = self.log_hub_id(&directory);
        let witness_key = overstap_proto::sign::verifying_key(&caller.signing_key, "witness key")
            .map_err(HubError::from)?;
        // A witness's clock may run a little ahead of the hub's; five minutes is plenty.
        let (text, cosig) = overstap_proto::log::verify_cosignature(
            &request.get_ref().note,
            &self.state.key.verifying_key(),
            &hub_id,
            &witness_key,
            &caller.org_id,
            now().max(0) as u64 + 300,
        )
        .map_err(HubError::from)?;
        let (size, _) = overstap_proto::log::checkpoint_claims(&request.get_ref().note)
            .map_err(HubError::from)?;
        let ours = self
            .state
            .store
            .checkpoint(size)
            .await
            .map_err(HubError::from)?;
        if !ours.is_some_and(|c| c.note.starts_with(&text)) {
            return Err(Status::invalid_argument(format!(
                "the hub signed no such checkpoint of {size} entries"
            )));
        }
        self.state
            .store
            .add_cosignature(size, &caller.org_id, &cosig.line, now())
            .await
            .map_err(HubError::from)?;
        tracing::info!(witness = %caller.org_id, size, "checkpoint cosigned");
        Ok(Response::new(AddCosignatureResponse { size }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<InclusionRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let tree = self.tree_of_size(r.tree_size).await?;
        if r.tree_size == 0 || r.tree_size > tree.size() || r.log_index >= r.tree_size {
            return Err(Status::out_of_range(format!(
                "no entry {} in a tree of {} (the log holds {})",
                r.log_index,
                r.tree_size,
                tree.size()
            )));
        }
        Ok(Response::new(proof_response(
            tree.inclusion(r.log_index, r.tree_size)
                .map_err(HubError::from)?,
        )))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<ConsistencyRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let tree = self.tree_of_size(r.new_size).await?;
        if r.old_size == 0 || r.old_size > r.new_size || r.new_size > tree.size() {
            return Err(Status::out_of_range(format!(
                "no consistency proof from {} to {} (the log holds {})",
                r.old_size,
                r.new_size,
                tree.size()
            )));
        }
        Ok(Response::new(proof_response(
            tree.consistency(r.old_size, r.new_size)
                .map_err(HubError::from)?,
        )))
    }

    async fn get_log_entries(
        &self,
        request: Request<LogEntriesRequest>,
    ) -> Result<Response<LogEntriesResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let size = self.tree_of_size(u64::MAX).await?.size();
        let limit = r.limit.clamp(1, 10_000);
        let events = self
            .state
            .store
            .events(r.start, limit)
            .await
            .map_err(HubError::from)?;
        Ok(Response::new(LogEntriesResponse {
            entries: events
                .iter()
                .filter(|e| e.log_index < size)
                .map(entry_of)
                .collect(),
        }))
    }
}

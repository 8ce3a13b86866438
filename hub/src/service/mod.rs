//! The `Hub` gRPC service: decode, check with the protocol rules, call the store, map errors.
//! No SQL here, and no key that opens a body: the hub routes sealed envelopes and logs metadata.
//!
//! This file holds the service's state, its constructor, the one mapping of errors to
//! statuses, the shared checks (who is calling, within what budget) and the `Hub` trait, whose
//! calls each hand over to the room that owns them: `send` (routing and the group commit),
//! `mailbox` (subscriptions and acks), `directory`, `log` (checkpoints and proofs) and
//! `metrics` (the scrape).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::pb::hub_server::Hub;
use overstap_proto::pb::{
    AckRequest, AckResponse, Envelope, GetDirectoryRequest, GetDirectoryResponse, Member,
    PublishDirectoryResponse, Signed, SubscribeRequest,
};
use overstap_proto::pb::{SendBatchRequest, SendBatchResponse};
use overstap_proto::{ProtocolError, UnixTime};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::limits::{Counter, Limits, RateLimiter};
use crate::metrics::HubMetrics;
use crate::store::{HubStore, StoreError};
use overstap_proto::log::{Hash, MemoryTree};
use overstap_proto::pb::{
    AddCosignatureResponse, CardHistoryRequest, CardHistoryResponse, CheckpointResponse,
    ConsistencyRequest, GetCheckpointRequest, InclusionRequest, LogCardRequest, LogCardResponse,
    LogEntriesRequest, LogEntriesResponse, ProofResponse,
};

mod directory;
mod log;
mod mailbox;
mod metrics;
mod send;

use directory::stored_directory;
use send::{CommitJob, MAX_COMMIT_BATCH, group_commit};

pub use log::entry_of;
pub use send::MAX_SEND_BATCH;

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
    clock: Clock,
    /// Header signatures this hub checked, the headers of a `SendBatch` call together.
    checked: overstap_proto::sign::Memory,
}

impl<S> HubState<S> {
    /// The hub's time now, in whole seconds.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The signal subscribers to `org`'s mailbox wait on.
    fn mailbox_signal(&self, org: &str) -> watch::Sender<u64> {
        let mut map = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(org.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
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

/// The hub's clock: the wall clock in service; the demo's school year moves it.
#[derive(Clone)]
pub struct Clock(pub Arc<dyn Fn() -> UnixTime + Send + Sync>);

impl Clock {
    /// The wall clock, in whole seconds.
    pub fn system() -> Self {
        Clock(Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        }))
    }

    pub fn now(&self) -> UnixTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl<S: HubStore> HubService<S> {
    /// Builds the service and loads the newest stored directory.
    pub async fn new(
        store: S,
        config: &crate::HubConfig,
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
            Some(bytes) => Some(Arc::new(stored_directory(&bytes, &config.authority)?)),
            None => None,
        };
        let (commits, jobs) = mpsc::channel(4 * MAX_COMMIT_BATCH);
        let service = HubService {
            state: Arc::new(HubState {
                store,
                hub_id: config.hub_id.clone(),
                key: config.signing_key.clone(),
                authority: config.authority,
                max_body: config.max_envelope_bytes,
                directory: RwLock::new(directory),
                mailboxes: Mutex::new(HashMap::new()),
                log: tokio::sync::Mutex::new(log),
                shutdown,
                metrics: HubMetrics::default(),
                limits: config.limits,
                rate: RateLimiter::default(),
                subscriptions: Counter::default(),
                waiting,
                commits,
                clock: config.clock.clone(),
                checked: overstap_proto::sign::Memory::new(),
            }),
        };
        tokio::spawn(group_commit(Arc::downgrade(&service.state), jobs));
        Ok(service)
    }

    pub fn state(&self) -> &HubState<S> {
        &self.state
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

    /// Counts a refusal and turns it into the status the caller gets.
    fn refuse(&self, e: HubError) -> Status {
        self.state.metrics.rejected(e.reason());
        e.into()
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

    type SubscribeStream = mailbox::DeliveryStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.do_subscribe(request).await
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        self.do_ack(request).await
    }

    async fn get_directory(
        &self,
        request: Request<GetDirectoryRequest>,
    ) -> Result<Response<GetDirectoryResponse>, Status> {
        self.do_get_directory(request).await
    }

    async fn publish_directory(
        &self,
        request: Request<Signed>,
    ) -> Result<Response<PublishDirectoryResponse>, Status> {
        self.do_publish_directory(request).await
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        self.do_get_checkpoint(request).await
    }

    async fn add_cosignature(
        &self,
        request: Request<CheckpointResponse>,
    ) -> Result<Response<AddCosignatureResponse>, Status> {
        self.do_add_cosignature(request).await
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<InclusionRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        self.do_get_inclusion_proof(request).await
    }

    async fn get_consistency_proof(
        &self,
        request: Request<ConsistencyRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        self.do_get_consistency_proof(request).await
    }

    async fn get_log_entries(
        &self,
        request: Request<LogEntriesRequest>,
    ) -> Result<Response<LogEntriesResponse>, Status> {
        self.do_get_log_entries(request).await
    }

    async fn log_card(
        &self,
        request: Request<LogCardRequest>,
    ) -> Result<Response<LogCardResponse>, Status> {
        self.do_log_card(request).await
    }

    async fn card_history(
        &self,
        request: Request<CardHistoryRequest>,
    ) -> Result<Response<CardHistoryResponse>, Status> {
        self.do_card_history(request).await
    }
}

//! The node's domain operations, shared by the local API and the sync engine.
//!
//! Home side: issuing student cards, keeping passport versions and grants, sealing packages into
//! the outbox (only under a valid, in-scope grant), revoking, and keeping the student's trail.
//! Recipient side: taking in what arrives (in each sender's order), storing only consented
//! sections, erasing on revocation and expiry with a signed deletion receipt, and reporting the
//! handover's status and views back. Every rule comes from `overstap-proto`; every change is one
//! store transaction.
//!
//! The operations are kept in rooms by concern, each with its own `impl NodeCore` block:
//! - `directory`: installing a newer directory, following a rotation of this node's keys
//!   ([`KeyFiles`]), signing the student cards again after one.
//! - `students`: student cards (issued, re-issued after a lost key) and passport versions.
//! - `invite`: one-time links (a mentor's invitation of a student, a parent's link, a link for
//!   another device) and their tokens.
//! - `keys`: more keys on a card through one-time links (a guardian's, another device's, a new
//!   one after a loss), and what a student under 16 signed, held until a guardian co-signs.
//! - `consent`: grants, revocation, erasure with a deletion receipt, and the reaper.
//! - `send`: sealing into the outbox, sending passports, and the outbox's side of a push.
//! - `ingest`: taking in from the hub in each sender's order, with held envelopes and runs.
//! - `checks`: what an envelope taken in does, and the checks a package or revocation passes.
//! - `status`: handovers, the student's trail, views and status reports.
//! - `log`: the hub's receipts and log checkpoints, the log alarm, and the metrics text.
//!
//! This file holds the [`NodeCore`] itself, its errors and outcomes, the clock and the shared
//! helpers.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};

use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::EncryptionKeyPair;
use overstap_proto::pb::Signed;
use overstap_proto::{ProtocolError, UnixTime};
use prost::Message;
use rand_core::RngCore;
use tokio::sync::Notify;

use crate::store::{NodeStore, StoreError};

mod checks;
mod consent;
mod directory;
mod ingest;
pub mod invite;
pub mod keys;
mod log;
pub mod people;
mod pull;
mod send;
mod status;
mod stretch;

pub use pull::{PULL_REFUSED, lets_fetch};
pub use status::TERMINAL_ROLE;
mod students;

pub use directory::KeyFiles;

/// The node's clock; tests inject their own.
pub type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// The wall clock, in whole seconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}

/// Handover statuses a recipient can report.
pub const STATUSES: &[&str] = &[
    "ontvangen",
    "gelezen",
    "intake gepland",
    "gestart",
    "niet gestart",
];

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this node has no directory yet; it gets one from the hub once connected")]
    NoDirectory,
    #[error("the directory does not know {0} yet; it will be fetched again")]
    StaleDirectory(String),
    /// Stored data that no longer decodes: a damaged database, never the caller's fault.
    #[error("stored {0} does not decode")]
    Corrupt(String),
}

/// Decodes a protobuf message this node stored itself.
pub fn stored<T: Message + Default>(bytes: &[u8], what: &str) -> Result<T, NodeError> {
    T::decode(bytes).map_err(|e| NodeError::Corrupt(format!("{what}: {e}")))
}

/// What became of an envelope taken in from the hub. Every outcome may be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A passport (or a new version of one) is stored.
    Stored { grant_id: String },
    /// What a grant brought is erased, and the receipt is on its way.
    Erased { grant_id: String },
    /// A status, receipt, refusal, resend request or skip was recorded.
    Noted(&'static str),
    /// Taken in before (same envelope, or the same sequence number under another envelope).
    Duplicate,
    /// It came ahead of a gap; kept until the gap is filled.
    Held { seq: u64 },
    /// Refused; the sender was told why.
    Refused(String),
    /// Refused without a reply: the sender could not be authenticated.
    Dropped(String),
    /// One of our envelopes was refused by its recipient, for this reason.
    RefusalNoted(String),
}

pub struct NodeCore {
    pub org_id: String,
    signing_key: RwLock<SigningKey>,
    encryption_keys: RwLock<Vec<EncryptionKeyPair>>,
    key_files: Option<KeyFiles>,
    authority: VerifyingKey,
    pub store: NodeStore,
    directory: RwLock<Option<Arc<VerifiedDirectory>>>,
    /// Woken when something is put in the outbox.
    pub outbox_wake: Notify,
    /// Held (read) by each outbox round from reading its rows until their receipts are recorded;
    /// taken (write) by whatever withdraws packages not yet out (a revocation, an expiry), so it
    /// waits for the round on its way instead of withdrawing a package that has reached the hub
    /// already (whose receipt would then match no row).
    pub push_gate: tokio::sync::RwLock<()>,
    pub hub_connected: AtomicBool,
    pub last_seq: AtomicU64,
    pub max_body: usize,
    /// How many envelopes from one sender wait for a gap at most (`max_held_per_sender`).
    pub max_held_per_sender: u64,
    clock: Clock,
    pub metrics: crate::metrics::NodeMetrics,
    /// Cards and signatures this node checked and found good (see `sign::Memory`).
    checked: overstap_proto::sign::Memory,
}

/// The default for `max_held_per_sender`: far more than an honest sender has in flight.
pub const DEFAULT_MAX_HELD_PER_SENDER: u64 = 1_000;

/// Grants [`NodeCore::send_passports`] seals in one transaction: a class costs a few commits,
/// and other writers (receipts, answers coming in) wait at most one batch.
pub const SEND_BATCH: usize = 100;

/// Grants one `SendPassports` call may name: a call must end within the API's deadline (60 s),
/// and 2,000 take about 6 s on SQLite on a small machine, twice that on PostgreSQL.
pub const MAX_SEND_PASSPORTS: usize = 2_000;

/// What became of one grant asked to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The sealed envelope's id; empty while the package waits for its grant to start, and
    /// when nothing was sealed because the version had been sent already.
    pub envelope_id: Vec<u8>,
    pub to_org: String,
    /// When the package will leave, if it waits for its grant to start (0 if it does not).
    pub waits_until: i64,
    /// The passport version sealed (or sealed before).
    pub version: u32,
    /// Nothing was sealed: this version was sealed under this grant before and is delivered,
    /// on its way, or waiting for the grant's start. Sending it again takes `again`.
    pub already_sent: bool,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

fn read_lock<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

impl NodeCore {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        org_id: String,
        signing_key: SigningKey,
        encryption_keys: Vec<EncryptionKeyPair>,
        key_files: Option<KeyFiles>,
        authority: VerifyingKey,
        store: NodeStore,
        max_body: usize,
        clock: Clock,
    ) -> Result<Self, NodeError> {
        let directory = match store.directory().await? {
            Some(bytes) => {
                let signed = stored::<Signed>(&bytes, "directory")?;
                Some(Arc::new(VerifiedDirectory::verify(&signed, &authority, 0)?))
            }
            None => None,
        };
        Ok(NodeCore {
            org_id,
            signing_key: RwLock::new(signing_key),
            encryption_keys: RwLock::new(encryption_keys),
            key_files,
            authority,
            store,
            directory: RwLock::new(directory),
            outbox_wake: Notify::new(),
            push_gate: tokio::sync::RwLock::new(()),
            hub_connected: AtomicBool::new(false),
            last_seq: AtomicU64::new(0),
            max_body,
            max_held_per_sender: DEFAULT_MAX_HELD_PER_SENDER,
            clock,
            metrics: Default::default(),
            checked: Default::default(),
        })
    }

    pub fn now(&self) -> UnixTime {
        (self.clock)()
    }

    fn key(&self) -> SigningKey {
        read_lock(&self.signing_key)
    }

    pub fn directory(&self) -> Result<Arc<VerifiedDirectory>, NodeError> {
        read_lock(&self.directory).ok_or(NodeError::NoDirectory)
    }

    pub fn directory_version(&self) -> u64 {
        self.directory().map(|d| d.version()).unwrap_or(0)
    }
}

//! The hub's storage, behind a trait so the service never sees SQL. SQLite is the one
//! implementation today; a PostgreSQL one will implement the same trait.

mod sqlite;

pub use sqlite::SqliteStore;

/// What the hub knows of an envelope it accepted, as recorded at `Send` time.
#[derive(Debug, Clone)]
pub struct NewEnvelope {
    pub envelope_id: Vec<u8>,
    pub header_sha256: Vec<u8>,
    pub from_org: String,
    pub to_org: String,
    pub kind: i32,
    pub body_len: u64,
    pub body_sha256: Vec<u8>,
    /// The whole envelope, encoded, as it will be delivered.
    pub encoded: Vec<u8>,
    pub received_at: i64,
    /// Deletion receipts only: the erasure reason their header states.
    pub erasure_reason: String,
}

/// What the statistics count of one envelope: who, what kind, when, and whether it was picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeMeta {
    pub from_org: String,
    pub to_org: String,
    pub kind: i32,
    pub received_at: i64,
    pub acked_at: Option<i64>,
    pub erasure_reason: String,
}

/// The outcome of storing an envelope.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// Stored now; the receipt was made for this log index.
    New { receipt: Vec<u8>, seq: u64 },
    /// The same envelope was stored before; here is its receipt again, nothing stored twice.
    Duplicate { receipt: Vec<u8> },
}

/// One mailbox entry waiting for its recipient.
#[derive(Debug, Clone)]
pub struct MailboxEntry {
    pub seq: u64,
    pub envelope: Vec<u8>,
    pub receipt: Vec<u8>,
}

/// One row of the append-only event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub log_index: u64,
    pub event: String,
    pub envelope_kind: i32,
    pub from_org: String,
    pub to_org: String,
    pub envelope_id: Vec<u8>,
    pub body_sha256: Vec<u8>,
    pub at: i64,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub size: u64,
    pub root: [u8; 32],
    pub note: Vec<u8>,
    pub at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The envelope id was already used for a different envelope.
    #[error("envelope id is already used for a different envelope")]
    IdConflict,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Makes the signed receipt for an envelope once its log index and time are known.
pub type ReceiptSigner<'a> = &'a (dyn Fn(u64, i64) -> Vec<u8> + Send + Sync);

#[async_trait::async_trait]
pub trait HubStore: Send + Sync + 'static {
    /// The newest signed directory, encoded, if any.
    async fn directory(&self) -> Result<Option<Vec<u8>>, StoreError>;
    async fn save_directory(&self, version: u64, signed: &[u8], at: i64) -> Result<(), StoreError>;

    /// Stores the envelope in its recipient's mailbox and appends a `send` event, in one
    /// transaction; or, if this exact envelope was stored before, returns its receipt.
    async fn accept(
        &self,
        env: NewEnvelope,
        sign: ReceiptSigner<'_>,
    ) -> Result<Accepted, StoreError>;

    /// Mailbox entries for `to_org` with a sequence number above `after_seq`, oldest first.
    async fn mailbox(
        &self,
        to_org: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<MailboxEntry>, StoreError>;

    /// Deletes acknowledged envelopes from `to_org`'s mailbox and appends a `delivery` event for
    /// each; ids that are not in that mailbox are ignored. Returns when the hub accepted each
    /// envelope it removed.
    async fn ack(
        &self,
        to_org: &str,
        envelope_ids: &[Vec<u8>],
        at: i64,
    ) -> Result<Vec<i64>, StoreError>;

    /// Every envelope the hub accepted in `since..until` (seconds).
    async fn envelopes_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<EnvelopeMeta>, StoreError>;

    /// Every envelope not yet acknowledged by its recipient, however old.
    async fn unacked(&self) -> Result<Vec<EnvelopeMeta>, StoreError>;

    /// How many envelopes wait in each recipient's mailbox (recipients with none left out).
    async fn mailbox_depths(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Events from `start`, at most `limit`.
    async fn events(&self, start: u64, limit: u32) -> Result<Vec<Event>, StoreError>;

    /// Every stored hash of the log's tree, in index order.
    async fn log_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError>;

    /// Appends stored hashes (from index `first`) and a signed checkpoint, in one transaction.
    async fn integrate(
        &self,
        first: u64,
        hashes: &[[u8; 32]],
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError>;

    /// The newest checkpoint, if any.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// The checkpoint of a given size, if the hub signed one.
    async fn checkpoint(&self, size: u64) -> Result<Option<Checkpoint>, StoreError>;

    /// Keeps a witness's signature line on the checkpoint of `size` (once per witness).
    async fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        line: &[u8],
        at: i64,
    ) -> Result<(), StoreError>;

    /// The witness signature lines on the checkpoint of `size`.
    async fn cosignatures(&self, size: u64) -> Result<Vec<Vec<u8>>, StoreError>;
}

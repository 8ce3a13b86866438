//! The hub's storage, behind a trait so the service never sees SQL: SQLite for a region on one
//! machine, PostgreSQL for one that has outgrown it (and for several hub processes sharing one
//! database).

mod postgres;
mod sqlite;

use tokio::sync::mpsc;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub use crate::sqlite_pool::{is_postgres, redact};

/// A stored 32-byte hash, or an error if the row holds anything else.
pub(crate) fn hash32(bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| {
        StoreError::Database(sqlx::Error::Protocol(
            "a stored log hash is not 32 bytes".into(),
        ))
    })
}

/// Makes a new, empty PostgreSQL database next to the one `admin_url` names and returns its
/// URL: each test (and each benchmark run) gets a database of its own. `admin_url` is what
/// `OVERSTAP_TEST_POSTGRES` holds, for example `postgres://postgres@127.0.0.1:5432/test`.
pub async fn fresh_postgres_database(admin_url: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    let mut id = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let name = format!("overstap_{}", hex::encode(id));
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let (base, _) = admin_url.rsplit_once('/').ok_or_else(|| {
        StoreError::Database(sqlx::Error::Configuration("no database in the URL".into()))
    })?;
    Ok(format!("{base}/{name}"))
}

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
    /// Intake statuses only: the package the status is about.
    pub about_package: Vec<u8>,
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
    pub envelope_id: Vec<u8>,
    /// Intake statuses only: the package the status is about (empty otherwise).
    pub about_package: Vec<u8>,
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
    /// A database error met by a batch this call was part of (the error itself went to the
    /// batch's first call).
    #[error("database error: {0}")]
    Failed(String),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// One envelope of a batch that is new: its log index, its place in the batch, and what signs
/// its receipt (made once the index is known, see [`Signing`]).
pub(crate) struct NewRow {
    pub place: usize,
    pub log_index: i64,
    pub receipt: Vec<u8>,
    pub sign: ReceiptSigner,
    pub env: NewEnvelope,
}

/// What a group commit does, decided before it writes: for each envelope in order, its answer
/// if it has one already (a duplicate's receipt again, or `IdConflict`), or a new row with the
/// next log index. `stored` maps the ids of the batch the store already holds to their header
/// hash and receipt; an id sent twice in one batch is new the first time and a duplicate of
/// that row after (the third list: its place, and the row whose receipt it gets).
pub(crate) struct Plan {
    pub answers: Vec<Option<Result<Accepted, StoreError>>>,
    pub rows: Vec<NewRow>,
    pub again: Vec<(usize, usize)>,
}

pub(crate) fn plan_batch(
    batch: Vec<(NewEnvelope, ReceiptSigner)>,
    stored: std::collections::HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)>,
    mut next_index: i64,
) -> Plan {
    let mut plan = Plan {
        answers: Vec::with_capacity(batch.len()),
        rows: Vec::new(),
        again: Vec::new(),
    };
    // The ids new in this batch: their header hash and row.
    let mut new = std::collections::HashMap::new();
    for (place, (env, sign)) in batch.into_iter().enumerate() {
        let same = |header: &Vec<u8>| {
            if *header == env.header_sha256 {
                Ok(())
            } else {
                Err(StoreError::IdConflict)
            }
        };
        if let Some((header, receipt)) = stored.get(&env.envelope_id) {
            plan.answers
                .push(Some(same(header).map(|()| Accepted::Duplicate {
                    receipt: receipt.clone(),
                })));
            continue;
        }
        if let Some((header, row)) = new.get(&env.envelope_id) {
            match same(header) {
                Ok(()) => {
                    plan.again.push((place, *row));
                    plan.answers.push(None);
                }
                Err(e) => plan.answers.push(Some(Err(e))),
            }
            continue;
        }
        new.insert(
            env.envelope_id.clone(),
            (env.header_sha256.clone(), plan.rows.len()),
        );
        plan.answers.push(None);
        plan.rows.push(NewRow {
            place,
            log_index: next_index,
            receipt: Vec::new(),
            sign,
            env,
        });
        next_index += 1;
    }
    plan
}

/// The receipts of a batch's new rows, signed on the blocking threads, one share per core,
/// while the commit writes what does not need them.
pub(crate) struct Signing(Vec<tokio::task::JoinHandle<Vec<Vec<u8>>>>);

/// Rows below this many are signed in one share.
const SIGN_ALONE: usize = 16;

impl Signing {
    /// Starts signing the receipts of `rows`.
    pub fn start(rows: &[NewRow]) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = rows.len().div_ceil(cores).max(SIGN_ALONE);
        Signing(
            rows.chunks(share.max(1))
                .map(|chunk| {
                    let work: Vec<_> = chunk
                        .iter()
                        .map(|r| (r.sign.clone(), r.log_index as u64, r.env.received_at))
                        .collect();
                    tokio::task::spawn_blocking(move || {
                        work.into_iter()
                            .map(|(sign, index, at)| sign(index, at))
                            .collect()
                    })
                })
                .collect(),
        )
    }

    /// Waits for the receipts and puts them into `rows`, in order.
    pub async fn finish(self, rows: &mut [NewRow]) -> Result<(), StoreError> {
        let mut rows = rows.iter_mut();
        for share in self.0 {
            let receipts = share
                .await
                .map_err(|e| StoreError::Failed(format!("signing receipts failed: {e}")))?;
            for receipt in receipts {
                let row = rows
                    .next()
                    .ok_or_else(|| StoreError::Failed("more receipts than envelopes".into()))?;
                row.receipt = receipt;
            }
        }
        Ok(())
    }
}

/// The multi-row inserts of a group commit, for either database: `events`, `mailbox` (which
/// returns each envelope id's mailbox number and recipient) and, once the receipts are signed,
/// `envelopes`. At most 256 rows of 11 values: inside SQLite's 32,766 variables and
/// PostgreSQL's 65,535.
#[derive(Clone, Copy)]
pub(crate) enum Insert {
    Events,
    Mailbox,
    Envelopes,
}

/// The multi-row insert of `rows` into the table `which` names.
pub(crate) fn batch_insert<'a, DB>(rows: &'a [NewRow], which: Insert) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a Vec<u8>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a Vec<u8>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    match which {
        Insert::Events => {
            let mut events = sqlx::QueryBuilder::new(
                "INSERT INTO events (log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at) ",
            );
            events.push_values(rows, |mut b, r| {
                b.push_bind(r.log_index)
                    .push_bind("send")
                    .push_bind(r.env.kind)
                    .push_bind(&r.env.from_org)
                    .push_bind(&r.env.to_org)
                    .push_bind(&r.env.envelope_id)
                    .push_bind(&r.env.body_sha256)
                    .push_bind(r.env.received_at);
            });
            events
        }
        Insert::Mailbox => {
            let mut mailbox =
                sqlx::QueryBuilder::new("INSERT INTO mailbox (to_org, envelope_id, envelope) ");
            mailbox.push_values(rows, |mut b, r| {
                b.push_bind(&r.env.to_org)
                    .push_bind(&r.env.envelope_id)
                    .push_bind(&r.env.encoded);
            });
            mailbox.push(" RETURNING envelope_id, seq, to_org");
            mailbox
        }
        Insert::Envelopes => {
            let mut envelopes = sqlx::QueryBuilder::new(
                "INSERT INTO envelopes (envelope_id, header_sha256, from_org, to_org, kind, body_len, received_at, log_index, receipt, erasure_reason, about_package) ",
            );
            envelopes.push_values(rows, |mut b, r| {
                b.push_bind(&r.env.envelope_id)
                    .push_bind(&r.env.header_sha256)
                    .push_bind(&r.env.from_org)
                    .push_bind(&r.env.to_org)
                    .push_bind(r.env.kind)
                    .push_bind(r.env.body_len as i64)
                    .push_bind(r.env.received_at)
                    .push_bind(r.log_index)
                    .push_bind(&r.receipt)
                    .push_bind(&r.env.erasure_reason)
                    .push_bind((!r.env.about_package.is_empty()).then_some(&r.env.about_package));
            });
            envelopes
        }
    }
}

/// The envelopes an ack removed from the mailbox, in the order they were asked for (each once),
/// with the log index of each one's `delivery` event from `next` on.
pub(crate) fn deliveries(
    asked: &[Vec<u8>],
    mut removed: std::collections::HashSet<Vec<u8>>,
    next: i64,
) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::with_capacity(removed.len());
    for id in asked {
        if removed.remove(id) {
            out.push((next + out.len() as i64, id.clone()));
        }
    }
    out
}

/// The answers of a planned batch once its rows are in: `seqs` maps each new envelope id to
/// its mailbox sequence number.
pub(crate) fn finish_batch(
    plan: Plan,
    seqs: &std::collections::HashMap<Vec<u8>, i64>,
) -> Result<Vec<Result<Accepted, StoreError>>, StoreError> {
    let Plan {
        mut answers,
        rows,
        again,
    } = plan;
    for (place, row) in again {
        answers[place] = Some(Ok(Accepted::Duplicate {
            receipt: rows[row].receipt.clone(),
        }));
    }
    for row in rows {
        let seq = seqs
            .get(&row.env.envelope_id)
            .ok_or_else(|| StoreError::Failed("a stored envelope got no mailbox number".into()))?;
        answers[row.place] = Some(Ok(Accepted::New {
            receipt: row.receipt,
            seq: *seq as u64,
        }));
    }
    Ok(answers
        .into_iter()
        .map(|a| {
            a.unwrap_or(Err(StoreError::Failed(
                "an envelope went unanswered".into(),
            )))
        })
        .collect())
}

/// Makes the signed receipt for an envelope once its log index and time are known.
pub type ReceiptSigner = std::sync::Arc<dyn Fn(u64, i64) -> Vec<u8> + Send + Sync>;

#[async_trait::async_trait]
pub trait HubStore: Send + Sync + 'static {
    /// The newest signed directory, encoded, if any.
    async fn directory(&self) -> Result<Option<Vec<u8>>, StoreError>;
    async fn save_directory(&self, version: u64, signed: &[u8], at: i64) -> Result<(), StoreError>;

    /// Stores the envelope in its recipient's mailbox and appends a `send` event, in one
    /// transaction; or, if this exact envelope was stored before, returns its receipt.
    async fn accept(&self, env: NewEnvelope, sign: ReceiptSigner) -> Result<Accepted, StoreError> {
        self.accept_batch(vec![(env, sign)])
            .await?
            .pop()
            .unwrap_or(Err(StoreError::Failed("an empty batch answer".into())))
    }

    /// [`HubStore::accept`] for several envelopes in one transaction and one commit (group
    /// commit): one answer per envelope, in order. An envelope id already used for another
    /// envelope is refused on its own; a database error fails the whole batch, and then none of
    /// it is stored.
    async fn accept_batch(
        &self,
        batch: Vec<(NewEnvelope, ReceiptSigner)>,
    ) -> Result<Vec<Result<Accepted, StoreError>>, StoreError>;

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

    /// Logs a student card `from_org` issued (event `card`, the index in `envelope_id`, the
    /// card's hash in `body_sha256`) and returns its log index; the same record again returns
    /// the index it got the first time.
    async fn log_card(
        &self,
        from_org: &str,
        card_index: &[u8],
        card_sha256: &[u8],
        at: i64,
    ) -> Result<u64, StoreError>;

    /// Every card logged under `card_index`, oldest first.
    async fn card_events(&self, card_index: &[u8]) -> Result<Vec<Event>, StoreError>;

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

    /// The stored hashes of the log's tree with index in `first..end`, in index order.
    async fn log_hashes_between(&self, first: u64, end: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let all = self.log_hashes().await?;
        let end = (end as usize).min(all.len());
        Ok(all.get(first as usize..end).unwrap_or_default().to_vec())
    }

    /// Envelopes that other hub processes sharing this store put in a mailbox, as they commit:
    /// (recipient, mailbox sequence number), or `("", 0)` when some may have been missed and
    /// every subscriber should look again. `None` when no other process writes to this store
    /// (SQLite: one hub per file).
    async fn arrivals(&self) -> Result<Option<mpsc::Receiver<(String, u64)>>, StoreError> {
        Ok(None)
    }

    /// Whether this process is, or has now become, the log's one sequencer. Of the hub
    /// processes sharing a store, at most one holds this at a time; when it dies, another takes
    /// over at its next call. With a store no one else shares, always true.
    async fn sequencer_lease(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// The behaviour every store must show, run against each implementation by its own tests.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    pub fn env(id: u8, to: &str) -> NewEnvelope {
        NewEnvelope {
            envelope_id: vec![id; 16],
            header_sha256: vec![id; 32],
            from_org: "25LP".into(),
            to_org: to.into(),
            kind: 1,
            body_len: 3,
            body_sha256: vec![0; 32],
            encoded: vec![1, 2, 3],
            received_at: 100,
            erasure_reason: String::new(),
            about_package: Vec::new(),
        }
    }

    fn signer() -> ReceiptSigner {
        std::sync::Arc::new(|i: u64, at: i64| format!("receipt {i} {at}").into_bytes())
    }

    pub async fn accept_once(s: &impl HubStore) {
        s.accept(env(1, "MBO1"), signer()).await.unwrap();
    }

    /// One group commit: new envelopes get dense log indexes in order, an envelope sent twice in
    /// the batch is stored once (the second gets the first's receipt), and an id reused for a
    /// different envelope is refused on its own, without failing the rest.
    pub async fn a_batch_answers_each_envelope_on_its_own(s: &impl HubStore) {
        s.accept(env(1, "MBO1"), signer()).await.unwrap();
        let mut conflict = env(1, "MBO1");
        conflict.header_sha256 = vec![9; 32];
        let batch: Vec<(NewEnvelope, ReceiptSigner)> = vec![
            (env(2, "MBO1"), signer()),
            (conflict, signer()),
            (env(3, "GM0193"), signer()),
            (env(2, "MBO1"), signer()),
            (env(1, "MBO1"), signer()),
        ];
        let answers = s.accept_batch(batch).await.unwrap();
        let seen: Vec<String> = answers
            .iter()
            .map(|a| match a {
                Ok(Accepted::New { receipt, .. }) => {
                    format!("new {}", String::from_utf8_lossy(receipt))
                }
                Ok(Accepted::Duplicate { receipt }) => {
                    format!("again {}", String::from_utf8_lossy(receipt))
                }
                Err(e) => format!("refused: {e}"),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "new receipt 1 100",
                "refused: envelope id is already used for a different envelope",
                "new receipt 2 100",
                "again receipt 1 100",
                "again receipt 0 100",
            ]
        );
        let events = s.events(0, 10).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.log_index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(s.mailbox("MBO1", 0, 10).await.unwrap().len(), 2);
        assert_eq!(s.mailbox("GM0193", 0, 10).await.unwrap().len(), 1);
    }

    /// A batch larger than one share of receipt signing: each envelope's receipt is for its own
    /// log index, in the order sent, stored with it (sent again, it comes back the same), and a
    /// repeat late in the batch gets the receipt of its first place.
    pub async fn a_large_batch_gets_each_receipt_for_its_own_index(s: &impl HubStore) {
        let mut batch: Vec<(NewEnvelope, ReceiptSigner)> = (1..=200u8)
            .map(|i| (env(i, if i % 2 == 0 { "MBO1" } else { "GM0193" }), signer()))
            .collect();
        batch.push((env(150, "MBO1"), signer()));
        let answers = s.accept_batch(batch).await.unwrap();
        assert_eq!(answers.len(), 201);
        for (place, answer) in answers.iter().enumerate() {
            let (expected, receipt) = match answer {
                Ok(Accepted::New { receipt, .. }) => (place, receipt),
                Ok(Accepted::Duplicate { receipt }) => (149, receipt),
                Err(e) => panic!("envelope {place} refused: {e}"),
            };
            assert_eq!(
                String::from_utf8_lossy(receipt),
                format!("receipt {expected} 100"),
                "the receipt answered for place {place}"
            );
        }
        assert!(matches!(answers[200], Ok(Accepted::Duplicate { .. })));
        let again = s.accept(env(77, "GM0193"), signer()).await.unwrap();
        let Accepted::Duplicate { receipt } = again else {
            panic!("the same envelope again was stored twice");
        };
        assert_eq!(String::from_utf8_lossy(&receipt), "receipt 76 100");
        let events = s.events(0, 300).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.log_index).collect::<Vec<_>>(),
            (0..200).collect::<Vec<u64>>()
        );
    }

    /// One ack of many: each envelope of the recipient's mailbox is delivered once, its
    /// `delivery` events in the order asked; an id asked twice, one unknown and one in another
    /// mailbox change nothing.
    pub async fn an_ack_of_many_logs_each_delivery_once_in_the_order_asked(s: &impl HubStore) {
        for i in 1..=4u8 {
            s.accept(env(i, if i == 4 { "GM0193" } else { "MBO1" }), signer())
                .await
                .unwrap();
        }
        let asked = [
            vec![3; 16],
            vec![1; 16],
            vec![3; 16],
            vec![9; 16],
            vec![4; 16],
            vec![2; 16],
        ];
        let accepted_at = s.ack("MBO1", &asked, 200).await.unwrap();
        assert_eq!(accepted_at, vec![100, 100, 100], "one answer per delivery");
        let events = s.events(0, 20).await.unwrap();
        let delivered: Vec<(u64, &str, Vec<u8>)> = events
            .iter()
            .filter(|e| e.event == "delivery")
            .map(|e| (e.log_index, e.to_org.as_str(), e.envelope_id.clone()))
            .collect();
        assert_eq!(
            delivered,
            [
                (4, "MBO1", vec![3; 16]),
                (5, "MBO1", vec![1; 16]),
                (6, "MBO1", vec![2; 16]),
            ]
        );
        assert!(s.mailbox("MBO1", 0, 10).await.unwrap().is_empty());
        assert_eq!(s.mailbox("GM0193", 0, 10).await.unwrap().len(), 1);
        assert_eq!(s.ack("MBO1", &asked, 300).await.unwrap(), Vec::<i64>::new());
        assert_eq!(
            s.events(0, 20).await.unwrap().len(),
            7,
            "nothing logged twice"
        );
        let unacked = s.unacked().await.unwrap();
        assert_eq!(unacked.len(), 1);
        assert_eq!(unacked[0].to_org, "GM0193");
    }

    /// A card is logged once (the same record again gets its first log index), after what the
    /// log held, and listed by its index only, oldest first.
    pub async fn cards_are_logged_once_and_listed_by_index(s: &impl HubStore) {
        accept_once(s).await;
        let first = s.log_card("25LP", &[1; 32], &[7; 32], 100).await.unwrap();
        assert_eq!(first, 1, "after the envelope's send event");
        assert_eq!(
            s.log_card("25LP", &[1; 32], &[7; 32], 101).await.unwrap(),
            first
        );
        let other = s.log_card("25LP", &[2; 32], &[8; 32], 102).await.unwrap();
        let again = s.log_card("25LP", &[1; 32], &[9; 32], 103).await.unwrap();
        assert_eq!((other, again), (2, 3));
        let listed = s.card_events(&[1; 32]).await.unwrap();
        let seen: Vec<_> = listed
            .iter()
            .map(|e| (e.log_index, e.event.as_str(), e.body_sha256[0], e.at))
            .collect();
        assert_eq!(seen, [(1, "card", 7, 100), (3, "card", 9, 103)]);
        assert!(s.card_events(&[3; 32]).await.unwrap().is_empty());
        assert_eq!(s.events(0, 10).await.unwrap().len(), 4);
    }

    pub async fn accept_is_idempotent_and_ack_logs_delivery(s: &impl HubStore) {
        let Accepted::New { receipt, .. } = s.accept(env(1, "MBO1"), signer()).await.unwrap()
        else {
            panic!("first send must be new")
        };
        assert_eq!(receipt, b"receipt 0 100");
        let Accepted::Duplicate { receipt: again } =
            s.accept(env(1, "MBO1"), signer()).await.unwrap()
        else {
            panic!("second send must be a duplicate")
        };
        assert_eq!(again, receipt);
        let mut other = env(1, "MBO1");
        other.header_sha256 = vec![9; 32];
        assert!(matches!(
            s.accept(other, signer()).await,
            Err(StoreError::IdConflict)
        ));

        assert_eq!(s.mailbox("MBO1", 0, 10).await.unwrap().len(), 1);
        assert_eq!(s.mailbox("GM0193", 0, 10).await.unwrap().len(), 0);
        assert_eq!(
            s.mailbox_depths().await.unwrap(),
            vec![("MBO1".to_string(), 1)]
        );
        assert_eq!(s.unacked().await.unwrap().len(), 1);
        assert_eq!(
            s.ack("GM0193", &[vec![1; 16]], 200).await.unwrap(),
            Vec::<i64>::new(),
            "only the recipient can ack"
        );
        let accepted_at = s.ack("MBO1", &[vec![1; 16]], 200).await.unwrap();
        assert_eq!(accepted_at, vec![100]);
        assert_eq!(s.mailbox_depths().await.unwrap(), vec![]);
        assert!(s.mailbox("MBO1", 0, 10).await.unwrap().is_empty());
        let events = s.events(0, 10).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["send", "delivery"]);
        assert_eq!(events[1].log_index, 1);
        let meta = s.envelopes_between(0, 1_000).await.unwrap();
        assert_eq!(meta.len(), 1);
        assert_eq!(meta[0].acked_at, Some(200));
        assert_eq!(
            (meta[0].envelope_id.clone(), meta[0].about_package.len()),
            (vec![1; 16], 0)
        );
        // An intake status keeps the package it names, for the statistics.
        let mut status = env(2, "25LP");
        status.kind = 4;
        status.about_package = vec![1; 16];
        s.accept(status, signer()).await.unwrap();
        let meta = s.envelopes_between(0, 1_000).await.unwrap();
        let status = meta.iter().find(|m| m.kind == 4).unwrap();
        assert_eq!(status.about_package, vec![1; 16]);

        // The Merkle log: hashes and a checkpoint go in together, then cosignatures once each.
        let cp = Checkpoint {
            size: 2,
            root: [7; 32],
            note: b"note".to_vec(),
            at: 300,
        };
        s.integrate(0, &[[1; 32], [2; 32], [3; 32]], &cp)
            .await
            .unwrap();
        assert_eq!(
            s.log_hashes().await.unwrap(),
            vec![[1; 32], [2; 32], [3; 32]]
        );
        assert_eq!(s.latest_checkpoint().await.unwrap(), Some(cp.clone()));
        assert_eq!(s.checkpoint(2).await.unwrap(), Some(cp));
        assert_eq!(s.checkpoint(1).await.unwrap(), None);
        s.add_cosignature(2, "RMC01", b"line", 301).await.unwrap();
        s.add_cosignature(2, "RMC01", b"other", 302).await.unwrap();
        assert_eq!(s.cosignatures(2).await.unwrap(), vec![b"line".to_vec()]);
        s.save_directory(3, b"dir3", 1).await.unwrap();
        s.save_directory(2, b"dir2", 1).await.unwrap();
        assert_eq!(s.directory().await.unwrap(), Some(b"dir3".to_vec()));
    }
}

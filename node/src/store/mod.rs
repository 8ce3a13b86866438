//! The node's store: SQLite for a school on one server, PostgreSQL (`postgres://…`) for a node
//! that shares its organisation's database server. Row types stay here; the rest of the node sees
//! plain structs.
//!
//! Reads go through [`NodeStore`]; every change goes through a [`Tx`] (one transaction), so an
//! operation that touches several tables (erase a grant, sign a receipt, queue it, advance the
//! peer's sequence number) commits all of it or none of it.
//!
//! One set of SQL serves both databases, through sqlx's `Any` driver: `$1`-style parameters
//! (which SQLite takes too), `ON CONFLICT` instead of `INSERT OR IGNORE`, `CASE` instead of
//! SQLite's two-argument `MAX`, and integers for flags. The schemas are
//! `migrations/node/sqlite` and `migrations/node/postgres`; `tests` runs the whole suite on
//! each.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone)]
pub struct NodeStore {
    pool: AnyPool,
    /// The statement that starts a write transaction: `BEGIN IMMEDIATE` on SQLite (the write
    /// lock up front, so two writers queue instead of failing on upgrade), `BEGIN` on PostgreSQL.
    begin: &'static str,
    /// One writer at a time, queued here rather than inside SQLite (see [`NodeStore::begin`]).
    /// The writes outside a [`Tx`] take it too: a writer that waits inside SQLite sleeps in its
    /// busy handler (up to 100 ms at a time) while the queued ones go first.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// One write transaction; this node's other writers wait until it ends.
pub struct Tx(
    Transaction<'static, Any>,
    #[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>,
    /// The log note, once read: the log state is written only under the writer lock, outside
    /// any `Tx`, so it cannot change while a `Tx` lives.
    Option<LogNote>,
);

/// The newest checkpoint note this node verified, and the log alarm if one is raised.
type LogNote = Option<(Vec<u8>, Option<String>)>;

#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: u32,
    pub question_set: String,
    pub manifest: Vec<u8>,
    pub disclosures: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct GrantRow {
    pub grant_id: String,
    pub pseudonym: String,
    pub recipient_org: String,
    pub purpose: String,
    pub sections: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub live: bool,
    pub passport_version: u32,
    pub signed: Vec<u8>,
    pub state: String,
    pub sent_version: Option<u32>,
    pub sent_at: Option<i64>,
    pub status: String,
    pub status_at: Option<i64>,
    pub views: u32,
}

/// A new outbox row. `envelope` is `None` while the row waits for its grant's start.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub envelope_id: Option<Vec<u8>>,
    pub to_org: String,
    pub kind: i32,
    pub grant_id: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub envelope: Option<Vec<u8>>,
    pub peer_seq: Option<u64>,
    pub not_before: i64,
    pub version: Option<u32>,
    pub state: &'static str,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub seq: i64,
    pub envelope_id: Vec<u8>,
    pub to_org: String,
    pub kind: i32,
    pub grant_id: Option<String>,
    pub payload: Vec<u8>,
    pub envelope: Vec<u8>,
    pub peer_seq: Option<u64>,
    pub not_before: i64,
    pub version: Option<u32>,
    pub state: String,
    pub attempts: i64,
    pub detail: String,
    pub created_at: i64,
}

/// What the node records of every envelope it took in.
#[derive(Debug, Clone)]
pub struct Processed {
    pub envelope_id: Vec<u8>,
    pub from_org: String,
    pub kind: i32,
    pub outcome: String,
    pub detail: String,
    pub receipt: Option<Vec<u8>>,
    pub body_sha256: Option<Vec<u8>>,
    pub at: i64,
}

/// A received passport: only the consented sections, with the signed evidence.
#[derive(Debug, Clone)]
pub struct Received {
    pub grant_id: String,
    pub pseudonym: String,
    pub from_org: String,
    pub purpose: String,
    pub sections: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub live: bool,
    pub version: u32,
    pub question_set: String,
    pub card: Vec<u8>,
    pub manifest: Vec<u8>,
    pub grant_signed: Vec<u8>,
    pub envelope_id: Vec<u8>,
    pub received_at: i64,
    pub status: String,
    /// (section id, encoded disclosure)
    pub disclosures: Vec<(String, Vec<u8>)>,
}

/// What this node erased, and the receipt it signed for it.
#[derive(Debug, Clone)]
pub struct Erased {
    pub grant_id: String,
    pub from_org: String,
    pub reason: String,
    pub erased_at: i64,
    pub receipt: Vec<u8>,
}

/// An envelope that came early and waits for a gap to be filled.
#[derive(Debug, Clone)]
pub struct Held {
    pub from_org: String,
    pub seq: u64,
    pub envelope: Vec<u8>,
    pub receipt: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub sent_seq: u64,
    pub received_seq: u64,
    pub requested_seq: u64,
}

/// One event of a student's trail.
#[derive(Debug, Clone, Default)]
pub struct TrailRow {
    pub pseudonym: String,
    pub grant_id: String,
    pub org: String,
    pub event: String,
    pub at: i64,
    pub detail: String,
    pub envelope_id: Option<Vec<u8>>,
    pub hub_receipt: Option<Vec<u8>>,
    pub evidence: Option<Vec<u8>>,
}

fn sections_text(s: &[String]) -> String {
    s.join(",")
}

fn sections_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn conflict(e: sqlx::Error, what: String) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(e),
    }
}

const GRANT_COLUMNS: &str = "grant_id, pseudonym, recipient_org, purpose, sections, not_before, not_after, live, \
     passport_version, signed, state, sent_version, sent_at, status, status_at, views";

fn grant_row(r: &AnyRow) -> GrantRow {
    GrantRow {
        grant_id: r.get(0),
        pseudonym: r.get(1),
        recipient_org: r.get(2),
        purpose: r.get(3),
        sections: sections_list(&r.get::<String, _>(4)),
        not_before: r.get(5),
        not_after: r.get(6),
        live: r.get::<i64, _>(7) != 0,
        passport_version: r.get::<i64, _>(8) as u32,
        signed: r.get(9),
        state: r.get(10),
        sent_version: r.get::<Option<i64>, _>(11).map(|v| v as u32),
        sent_at: r.get(12),
        status: r.get(13),
        status_at: r.get(14),
        views: r.get::<i64, _>(15) as u32,
    }
}

const OUTBOX_COLUMNS: &str = "seq, envelope_id, to_org, kind, grant_id, payload, envelope, peer_seq, not_before, version, \
     state, attempts, detail, created_at";

fn outbox_entry(r: &AnyRow) -> OutboxEntry {
    OutboxEntry {
        seq: r.get(0),
        envelope_id: r.get::<Option<Vec<u8>>, _>(1).unwrap_or_default(),
        to_org: r.get(2),
        kind: r.get(3),
        grant_id: r.get(4),
        payload: r.get::<Option<Vec<u8>>, _>(5).unwrap_or_default(),
        envelope: r.get::<Option<Vec<u8>>, _>(6).unwrap_or_default(),
        peer_seq: r.get::<Option<i64>, _>(7).map(|v| v as u64),
        not_before: r.get(8),
        version: r.get::<Option<i64>, _>(9).map(|v| v as u32),
        state: r.get(10),
        attempts: r.get(11),
        detail: r.get(12),
        created_at: r.get(13),
    }
}

/// Connections of a node's PostgreSQL pool: one writer at a time (the writer lock) and a few
/// readers; a database server serves many nodes.
const POSTGRES_CONNECTIONS: u32 = 4;

const RECEIVED_COLUMNS: &str = "grant_id, pseudonym, from_org, purpose, sections, not_before, not_after, live, version, \
     question_set, card, manifest, grant_signed, envelope_id, received_at, status";

impl NodeStore {
    /// Opens the database at `url` (`sqlite://path`, created if needed, or `postgres://…`, which
    /// must exist) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if crate::sqlite_pool::is_postgres(url) {
            // The same check on release as on SQLite: sqlx can hand back a connection still
            // inside a transaction when a `begin` is cancelled half-way, and on PostgreSQL every
            // statement that later ran on it would join that transaction and never commit.
            let pool = AnyPoolOptions::new()
                .max_connections(POSTGRES_CONNECTIONS)
                .after_release(|conn, _meta| Box::pin(crate::sqlite_pool::still_usable(conn)))
                .connect(url)
                .await?;
            sqlx::migrate!("../migrations/node/postgres")
                .run(&pool)
                .await?;
            return Ok(NodeStore {
                pool,
                begin: "BEGIN",
                writer: Default::default(),
            });
        }
        let pool = crate::sqlite_pool::open_any(url, 8).await?;
        sqlx::migrate!("../migrations/node/sqlite")
            .run(&pool)
            .await?;
        Ok(NodeStore {
            pool,
            begin: "BEGIN IMMEDIATE",
            writer: Default::default(),
        })
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.begin == "BEGIN"
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        // Writers queue on this lock without holding a connection. Queued inside SQLite instead,
        // each would hold one of the pool's connections while it waits; with the pool taken up
        // by waiters, the one writer that holds the lock and reads through the pool (as many
        // operations do) would wait for them, and they for it, until the busy timeout failed
        // them all ("database is locked" after 10 s, seen with 16 concurrent sends).
        let gate = self.writer.clone().lock_owned().await;
        Ok(Tx(self.pool.begin_with(self.begin).await?, gate, None))
    }

    pub async fn directory(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT signed FROM directory ORDER BY version DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    /// Every directory version this node installed, newest first.
    pub async fn directories(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT signed FROM directory ORDER BY version DESC")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect(),
        )
    }

    pub async fn save_directory(&self, version: u64, signed: &[u8]) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO directory (version, signed) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(version as i64)
        .bind(signed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every student card this node issued, by pseudonym.
    pub async fn student_cards(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(
            sqlx::query("SELECT pseudonym, card FROM students ORDER BY pseudonym")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    pub async fn student_card(&self, pseudonym: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT card FROM students WHERE pseudonym = $1")
                .bind(pseudonym)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub async fn latest_version(
        &self,
        pseudonym: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.version_where(pseudonym, None).await
    }

    pub async fn version(
        &self,
        pseudonym: &str,
        version: u32,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.version_where(pseudonym, Some(version)).await
    }

    async fn version_where(
        &self,
        pseudonym: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let row = match version {
            Some(v) => {
                sqlx::query("SELECT version, question_set, manifest FROM passport_versions WHERE pseudonym = $1 AND version = $2")
                    .bind(pseudonym)
                    .bind(v as i64)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(
                    "SELECT version, question_set, manifest FROM passport_versions WHERE pseudonym = $1 ORDER BY version DESC LIMIT 1",
                )
                .bind(pseudonym)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.get(0);
        let disclosures = sqlx::query(
            "SELECT disclosure FROM passport_sections WHERE pseudonym = $1 AND version = $2 ORDER BY section_id",
        )
        .bind(pseudonym)
        .bind(version)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
        Ok(Some(StoredVersion {
            version: version as u32,
            question_set: row.get(1),
            manifest: row.get(2),
            disclosures,
        }))
    }

    pub async fn grant(&self, grant_id: &str) -> Result<Option<GrantRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| grant_row(&r)))
    }

    /// Every grant, or one student's, oldest first.
    pub async fn grants(&self, pseudonym: Option<&str>) -> Result<Vec<GrantRow>, StoreError> {
        let rows = match pseudonym {
            Some(p) => {
                sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE pseudonym = $1 ORDER BY created_at, grant_id"))
                    .bind(p)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY created_at, grant_id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(grant_row).collect())
    }

    /// Active grants whose time is up.
    pub async fn grants_expired(&self, now: i64) -> Result<Vec<GrantRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE state = 'active' AND not_after <= $1"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(grant_row)
        .collect())
    }

    /// Pending envelopes for one round of the outbox, oldest first: at most `per_recipient` to
    /// any one recipient (so a recipient with a long queue leaves room for the others), `limit`
    /// in all, none to the recipients in `paused`.
    pub async fn pending(
        &self,
        limit: u32,
        per_recipient: u32,
        paused: &[String],
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // $1 the limit, $2 the share of one recipient, $3… the paused recipients.
        let not_paused = if paused.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..paused.len()).map(|i| format!("${}", i + 3)).collect();
            format!(" AND to_org NOT IN ({})", list.join(", "))
        };
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY to_org ORDER BY seq) AS place
                 FROM outbox WHERE state = 'pending'{not_paused}
             ) AS queued WHERE place <= $2 ORDER BY seq LIMIT $1"
        );
        let mut query = sqlx::query(&sql)
            .bind(limit as i64)
            .bind(per_recipient as i64);
        for org in paused {
            query = query.bind(org);
        }
        Ok(query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(outbox_entry)
            .collect())
    }

    /// Rows waiting for their grant to start whose time has come.
    pub async fn due(&self, now: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'waiting' AND not_before <= $1 ORDER BY seq"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox_entry)
        .collect())
    }

    pub async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_where("1 = 1", limit).await
    }

    async fn outbox_where(&self, filter: &str, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {filter} ORDER BY seq LIMIT $1"
        ))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(outbox_entry)
        .collect())
    }

    /// When the oldest envelope that is due (not waiting for its start) but not yet accepted
    /// by the hub was put in the outbox.
    pub async fn oldest_due(&self, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query(
            "SELECT MIN(CASE WHEN created_at > not_before THEN created_at ELSE not_before END) FROM outbox WHERE state = 'pending' AND not_before <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }

    /// Envelopes held until a gap in their sender's sequence fills.
    pub async fn held_count(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM held")
            .fetch_one(&self.pool)
            .await?
            .get::<i64, _>(0) as u64)
    }

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'waiting')")
                .fetch_one(&self.pool)
                .await?
                .get::<i64, _>(0) as u64,
        )
    }

    pub async fn is_processed(&self, envelope_id: &[u8]) -> Result<bool, StoreError> {
        is_processed(&self.pool, envelope_id).await
    }

    pub async fn peer(&self, org: &str) -> Result<Peer, StoreError> {
        peer(&self.pool, org).await
    }

    pub async fn held(&self, from_org: &str, seq: u64) -> Result<Option<Held>, StoreError> {
        Ok(sqlx::query(
            "SELECT from_org, seq, envelope, receipt FROM held WHERE from_org = $1 AND seq = $2",
        )
        .bind(from_org)
        .bind(seq as i64)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| Held {
            from_org: r.get(0),
            seq: r.get::<i64, _>(1) as u64,
            envelope: r.get(2),
            receipt: r.get(3),
        }))
    }

    pub async fn inbox(&self) -> Result<Vec<Received>, StoreError> {
        let ids: Vec<String> =
            sqlx::query("SELECT grant_id FROM received ORDER BY received_at, grant_id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(x) = self.received(&id).await? {
                out.push(x);
            }
        }
        Ok(out)
    }

    /// How many envelopes from `from_org` wait for a gap in its sequence.
    pub async fn held_from(&self, from_org: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM held WHERE from_org = $1")
            .bind(from_org)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n as u64)
    }

    /// The student cards held for a student, from the packages received from their school.
    pub async fn held_cards(
        &self,
        from_org: &str,
        pseudonym: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        held_cards(&mut *self.pool.acquire().await?, from_org, pseudonym).await
    }

    pub async fn received(&self, grant_id: &str) -> Result<Option<Received>, StoreError> {
        received(&mut *self.pool.acquire().await?, grant_id).await
    }

    /// Received grants whose time is up.
    pub async fn received_expired(&self, now: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query(
            "SELECT grant_id, from_org FROM received WHERE not_after <= $1 ORDER BY not_after",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    pub async fn erased(&self, grant_id: &str) -> Result<Option<Erased>, StoreError> {
        erased(&mut *self.pool.acquire().await?, grant_id).await
    }

    pub async fn views(&self, grant_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query(
            "SELECT staff_user, viewed_at FROM access_log WHERE grant_id = $1 ORDER BY id",
        )
        .bind(grant_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    pub async fn inbox_count(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM received")
            .fetch_one(&self.pool)
            .await?
            .get::<i64, _>(0) as u64)
    }

    pub async fn trail(&self, pseudonym: &str) -> Result<Vec<TrailRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT pseudonym, grant_id, org, event, at, detail, envelope_id, hub_receipt, evidence
             FROM trail WHERE pseudonym = $1 ORDER BY at, id",
        )
        .bind(pseudonym)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| TrailRow {
            pseudonym: r.get(0),
            grant_id: r.get(1),
            org: r.get(2),
            event: r.get(3),
            at: r.get(4),
            detail: r.get(5),
            envelope_id: r.get(6),
            hub_receipt: r.get(7),
            evidence: r.get(8),
        })
        .collect())
    }
}

/// How many verified checkpoints a node keeps for audits (about 1.5 MB).
pub const CHECKPOINT_HISTORY: i64 = 10_000;

/// The newest checkpoint a node verified.
#[derive(Debug, Clone)]
pub struct LogState {
    pub size: u64,
    pub root: [u8; 32],
    pub note: Vec<u8>,
    pub alarm: Option<String>,
}

/// An envelope whose place in the log is still to be proven: the leaf it should be, and the
/// index the hub's receipt promised.
#[derive(Debug, Clone)]
pub struct Unproven {
    pub envelope_id: Vec<u8>,
    pub log_index: u64,
    pub entry: overstap_proto::log::LogEntry,
}

/// Which envelopes' log leaves to list.
enum Which<'a> {
    One(&'a [u8]),
    Unproven,
    All,
}

impl NodeStore {
    pub async fn log_state(&self) -> Result<Option<LogState>, StoreError> {
        Ok(
            sqlx::query("SELECT size, root, note, alarm FROM log_state WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| LogState {
                    size: r.get::<i64, _>(0) as u64,
                    root: r.get::<Vec<u8>, _>(1).try_into().unwrap_or([0; 32]),
                    note: r.get(2),
                    alarm: r.get(3),
                }),
        )
    }

    /// Saves the newest verified checkpoint and adds it to the history the audit checks,
    /// keeping the newest [`CHECKPOINT_HISTORY`] of them.
    pub async fn save_log_state(
        &self,
        size: u64,
        root: [u8; 32],
        note: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(self.begin).await?;
        sqlx::query(
            "INSERT INTO log_state (id, size, root, note) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root, note = excluded.note",
        )
        .bind(size as i64)
        .bind(root.as_slice())
        .bind(note)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO log_checkpoints (size, root, note, verified_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(size as i64)
        .bind(root.as_slice())
        .bind(note)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM log_checkpoints WHERE size < (SELECT size FROM log_checkpoints ORDER BY size DESC LIMIT 1 OFFSET $1)",
        )
        .bind(CHECKPOINT_HISTORY - 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The checkpoints this node verified, oldest first, and the notes kept as evidence.
    pub async fn checkpoint_history(&self) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>), StoreError> {
        let verified = sqlx::query("SELECT note FROM log_checkpoints ORDER BY size")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut evidence = Vec::new();
        for r in sqlx::query("SELECT held_note, shown_note FROM log_evidence ORDER BY id")
            .fetch_all(&self.pool)
            .await?
        {
            evidence.push(r.get(0));
            evidence.push(r.get(1));
        }
        Ok((verified, evidence))
    }

    /// Raises the alarm and keeps the evidence, in one transaction.
    pub async fn raise_log_alarm(
        &self,
        reason: &str,
        held: &[u8],
        shown: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin_with(self.begin).await?;
        sqlx::query(
            "INSERT INTO log_state (id, size, root, note, alarm) VALUES (1, 0, $2, $2, $1)
             ON CONFLICT (id) DO UPDATE SET alarm = COALESCE(log_state.alarm, excluded.alarm)",
        )
        .bind(reason)
        .bind(&[] as &[u8])
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO log_evidence (reason, held_note, shown_note, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(reason)
        .bind(held)
        .bind(shown)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checkpoints other members sent us that are not compared yet: (id, from, note).
    pub async fn peer_checkpoints(&self) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
        Ok(sqlx::query("SELECT id, from_org, note FROM peer_checkpoints WHERE checked = 0 ORDER BY id LIMIT 64")
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    pub async fn peer_checkpoint_checked(&self, id: i64) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query("UPDATE peer_checkpoints SET checked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn mark_proven(
        &self,
        envelope_id: &[u8],
        log_index: u64,
        tree_size: u64,
        at: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query("INSERT INTO log_proofs (envelope_id, log_index, tree_size, proven_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(envelope_id)
            .bind(log_index as i64)
            .bind(tree_size as i64)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn is_proven(&self, envelope_id: &[u8]) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM log_proofs WHERE envelope_id = $1")
                .bind(envelope_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// (proven, unproven) envelopes with a hub receipt.
    pub async fn proof_counts(&self) -> Result<(u64, u64), StoreError> {
        let proven: i64 = sqlx::query("SELECT COUNT(*) FROM log_proofs")
            .fetch_one(&self.pool)
            .await?
            .get(0);
        let with_receipt: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE receipt IS NOT NULL)
                  + (SELECT COUNT(*) FROM processed WHERE receipt IS NOT NULL AND body_sha256 IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok((proven as u64, (with_receipt - proven).max(0) as u64))
    }

    /// Sent and received envelopes with a receipt but no inclusion proof yet.
    pub async fn unproven(&self, me: &str, limit: u32) -> Result<Vec<Unproven>, StoreError> {
        self.log_items(me, Which::Unproven, limit).await
    }

    /// The log leaf of one envelope this node sent or received (proven or not).
    pub async fn log_item(
        &self,
        me: &str,
        envelope_id: &[u8],
    ) -> Result<Option<Unproven>, StoreError> {
        Ok(self
            .log_items(me, Which::One(envelope_id), 1)
            .await?
            .into_iter()
            .next())
    }

    /// Every envelope this node sent or received with a hub receipt, proven or not: its own
    /// record of what the log should hold, for the audit.
    pub async fn own_log_entries(&self, me: &str) -> Result<Vec<Unproven>, StoreError> {
        self.log_items(me, Which::All, u32::MAX).await
    }

    async fn log_items(
        &self,
        me: &str,
        which: Which<'_>,
        limit: u32,
    ) -> Result<Vec<Unproven>, StoreError> {
        use overstap_proto::pb::{Envelope, EnvelopeHeader, Receipt, Signed};
        use overstap_proto::sign::{Domain, decode_body};
        use prost::Message;
        let mut out = Vec::new();
        // $1 is the limit; $2 the one envelope's id, if one was asked for.
        let (filter, only) = match which {
            Which::One(id) => ("envelope_id = $2", Some(id)),
            Which::Unproven => (
                "envelope_id NOT IN (SELECT envelope_id FROM log_proofs)",
                None,
            ),
            Which::All => ("1 = 1", None),
        };
        let sent_sql = format!(
            "SELECT envelope, receipt FROM outbox WHERE receipt IS NOT NULL AND {filter} ORDER BY seq LIMIT $1"
        );
        let mut sent = sqlx::query(&sent_sql).bind(limit as i64);
        if let Some(id) = only {
            sent = sent.bind(id);
        }
        let sent = sent.fetch_all(&self.pool).await?;
        for r in sent {
            let (Ok(env), Ok(receipt)) = (
                Envelope::decode(r.get::<Vec<u8>, _>(0).as_slice()),
                Signed::decode(r.get::<Vec<u8>, _>(1).as_slice()),
            ) else {
                continue;
            };
            let (Some(Ok(h)), Ok(rc)) = (
                env.header
                    .as_ref()
                    .map(|h| decode_body::<EnvelopeHeader>(Domain::EnvelopeHeader, h)),
                decode_body::<Receipt>(Domain::Receipt, &receipt),
            ) else {
                continue;
            };
            out.push(Unproven {
                envelope_id: h.envelope_id.clone(),
                log_index: rc.log_index,
                entry: overstap_proto::log::LogEntry {
                    event: "send".into(),
                    envelope_kind: h.kind,
                    from_org: h.from_org,
                    to_org: h.to_org,
                    envelope_id: h.envelope_id,
                    body_sha256: h.body_sha256,
                    at: rc.received_at,
                },
            });
        }
        let received_sql = format!(
            "SELECT envelope_id, from_org, kind, body_sha256, receipt FROM processed
             WHERE receipt IS NOT NULL AND body_sha256 IS NOT NULL AND {filter} ORDER BY processed_at LIMIT $1"
        );
        let mut received = sqlx::query(&received_sql).bind(limit as i64);
        if let Some(id) = only {
            received = received.bind(id);
        }
        let received = received.fetch_all(&self.pool).await?;
        for r in received {
            let Ok(receipt) = Signed::decode(r.get::<Vec<u8>, _>(4).as_slice()) else {
                continue;
            };
            let Ok(rc) = decode_body::<Receipt>(Domain::Receipt, &receipt) else {
                continue;
            };
            let envelope_id: Vec<u8> = r.get(0);
            out.push(Unproven {
                envelope_id: envelope_id.clone(),
                log_index: rc.log_index,
                entry: overstap_proto::log::LogEntry {
                    event: "send".into(),
                    envelope_kind: r.get(2),
                    from_org: r.get(1),
                    to_org: me.to_string(),
                    envelope_id,
                    body_sha256: r.get(3),
                    at: rc.received_at,
                },
            });
        }
        Ok(out)
    }
}

async fn is_processed<'e>(
    on: impl sqlx::Executor<'e, Database = Any>,
    envelope_id: &[u8],
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("SELECT 1 FROM processed WHERE envelope_id = $1")
            .bind(envelope_id)
            .fetch_optional(on)
            .await?
            .is_some(),
    )
}

async fn peer<'e>(
    on: impl sqlx::Executor<'e, Database = Any>,
    org: &str,
) -> Result<Peer, StoreError> {
    Ok(
        sqlx::query("SELECT sent_seq, received_seq, requested_seq FROM peers WHERE org = $1")
            .bind(org)
            .fetch_optional(on)
            .await?
            .map(|r| Peer {
                sent_seq: r.get::<i64, _>(0) as u64,
                received_seq: r.get::<i64, _>(1) as u64,
                requested_seq: r.get::<i64, _>(2) as u64,
            })
            .unwrap_or_default(),
    )
}

async fn held_cards(
    on: &mut AnyConnection,
    from_org: &str,
    pseudonym: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query("SELECT card FROM received WHERE from_org = $1 AND pseudonym = $2")
            .bind(from_org)
            .bind(pseudonym)
            .fetch_all(&mut *on)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect(),
    )
}

async fn received(on: &mut AnyConnection, grant_id: &str) -> Result<Option<Received>, StoreError> {
    let Some(r) = sqlx::query(&format!(
        "SELECT {RECEIVED_COLUMNS} FROM received WHERE grant_id = $1"
    ))
    .bind(grant_id)
    .fetch_optional(&mut *on)
    .await?
    else {
        return Ok(None);
    };
    let disclosures = sqlx::query(
        "SELECT section_id, disclosure FROM received_sections WHERE grant_id = $1 ORDER BY section_id",
    )
    .bind(grant_id)
    .fetch_all(&mut *on)
    .await?
    .into_iter()
    .map(|s| (s.get(0), s.get(1)))
    .collect();
    Ok(Some(Received {
        grant_id: r.get(0),
        pseudonym: r.get(1),
        from_org: r.get(2),
        purpose: r.get(3),
        sections: sections_list(&r.get::<String, _>(4)),
        not_before: r.get(5),
        not_after: r.get(6),
        live: r.get::<i64, _>(7) != 0,
        version: r.get::<i64, _>(8) as u32,
        question_set: r.get(9),
        card: r.get(10),
        manifest: r.get(11),
        grant_signed: r.get(12),
        envelope_id: r.get(13),
        received_at: r.get(14),
        status: r.get(15),
        disclosures,
    }))
}

async fn erased(on: &mut AnyConnection, grant_id: &str) -> Result<Option<Erased>, StoreError> {
    Ok(sqlx::query(
        "SELECT grant_id, from_org, reason, erased_at, receipt FROM erased WHERE grant_id = $1",
    )
    .bind(grant_id)
    .fetch_optional(&mut *on)
    .await?
    .map(|r| Erased {
        grant_id: r.get(0),
        from_org: r.get(1),
        reason: r.get(2),
        erased_at: r.get(3),
        receipt: r.get(4),
    }))
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }

    /// [`NodeStore::is_processed`], as this transaction sees it.
    pub async fn is_processed(&mut self, envelope_id: &[u8]) -> Result<bool, StoreError> {
        is_processed(&mut *self.0, envelope_id).await
    }

    /// [`NodeStore::peer`], as this transaction sees it.
    pub async fn peer(&mut self, org: &str) -> Result<Peer, StoreError> {
        peer(&mut *self.0, org).await
    }

    /// [`NodeStore::held_cards`], as this transaction sees it.
    pub async fn held_cards(
        &mut self,
        from_org: &str,
        pseudonym: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        held_cards(&mut self.0, from_org, pseudonym).await
    }

    /// [`NodeStore::received`], as this transaction sees it.
    pub async fn received(&mut self, grant_id: &str) -> Result<Option<Received>, StoreError> {
        received(&mut self.0, grant_id).await
    }

    /// [`NodeStore::erased`], as this transaction sees it.
    pub async fn erased(&mut self, grant_id: &str) -> Result<Option<Erased>, StoreError> {
        erased(&mut self.0, grant_id).await
    }

    /// Marks a point inside this transaction to go back to, so that one item of a batch can
    /// fail alone; end it with [`Tx::release_savepoint`] or [`Tx::rollback_to_savepoint`].
    pub async fn savepoint(&mut self) -> Result<(), StoreError> {
        sqlx::query("SAVEPOINT item").execute(&mut *self.0).await?;
        Ok(())
    }

    /// Keeps what was written since [`Tx::savepoint`].
    pub async fn release_savepoint(&mut self) -> Result<(), StoreError> {
        sqlx::query("RELEASE SAVEPOINT item")
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Undoes what was written since [`Tx::savepoint`] (on PostgreSQL, also after an error).
    pub async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        sqlx::query("ROLLBACK TO SAVEPOINT item")
            .execute(&mut *self.0)
            .await?;
        self.release_savepoint().await
    }

    pub async fn insert_student(
        &mut self,
        pseudonym: &str,
        card: &[u8],
        staff: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO students (pseudonym, card, registered_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(pseudonym)
        .bind(card)
        .bind(staff)
        .bind(at)
        .execute(&mut *self.0)
        .await
        .map_err(|e| conflict(e, format!("student {pseudonym}")))?;
        Ok(())
    }

    /// Puts a re-issued card in place of the student's current one.
    pub async fn replace_card(&mut self, pseudonym: &str, card: &[u8]) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE students SET card = $1 WHERE pseudonym = $2")
            .bind(card)
            .bind(pseudonym)
            .execute(&mut *self.0)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        Ok(())
    }

    pub async fn insert_version(
        &mut self,
        pseudonym: &str,
        version: u32,
        question_set: &str,
        manifest: &[u8],
        sections: &[(String, Vec<u8>)],
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO passport_versions (pseudonym, version, question_set, manifest, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(pseudonym)
        .bind(version as i64)
        .bind(question_set)
        .bind(manifest)
        .bind(at)
        .execute(&mut *self.0)
        .await
        .map_err(|e| conflict(e, format!("passport version {version} of {pseudonym}")))?;
        for (id, disclosure) in sections {
            sqlx::query("INSERT INTO passport_sections (pseudonym, version, section_id, disclosure) VALUES ($1, $2, $3, $4)")
                .bind(pseudonym)
                .bind(version as i64)
                .bind(id)
                .bind(disclosure)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }

    pub async fn insert_grant(&mut self, g: &GrantRow, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grants (grant_id, pseudonym, recipient_org, purpose, sections, not_before, not_after, live,
                                 passport_version, signed, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&g.grant_id)
        .bind(&g.pseudonym)
        .bind(&g.recipient_org)
        .bind(&g.purpose)
        .bind(sections_text(&g.sections))
        .bind(g.not_before)
        .bind(g.not_after)
        .bind(g.live as i64)
        .bind(g.passport_version as i64)
        .bind(&g.signed)
        .bind(&g.state)
        .bind(at)
        .execute(&mut *self.0)
        .await
        .map_err(|e| conflict(e, format!("grant {}", g.grant_id)))?;
        Ok(())
    }

    pub async fn set_grant_state(&mut self, grant_id: &str, state: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE grants SET state = $1 WHERE grant_id = $2")
            .bind(state)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn revoke_grant(&mut self, grant_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE grants SET state = 'revoked', revoked_at = $1 WHERE grant_id = $2")
            .bind(at)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn set_deletion_receipt(
        &mut self,
        grant_id: &str,
        receipt: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE grants SET state = 'erased', erased_at = $1, deletion_receipt = $2 WHERE grant_id = $3")
            .bind(at)
            .bind(receipt)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn set_grant_sent(&mut self, grant_id: &str, version: u32) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE grants SET sent_version = CASE WHEN COALESCE(sent_version, 0) > $1 THEN sent_version ELSE $1 END
             WHERE grant_id = $2",
        )
        .bind(version as i64)
        .bind(grant_id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn set_grant_status(
        &mut self,
        grant_id: &str,
        status: &str,
        at: i64,
        views: u32,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE grants SET status = CASE WHEN $1 = '' THEN status ELSE $2 END, status_at = $3, views = views + $4 WHERE grant_id = $5",
        )
        .bind(status)
        .bind(status)
        .bind(at)
        .bind(views as i64)
        .bind(grant_id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    /// Reserves the next sequence number for envelopes to `org`.
    pub async fn next_sent_seq(&mut self, org: &str) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query(
            "INSERT INTO peers (org, sent_seq) VALUES ($1, 1)
             ON CONFLICT (org) DO UPDATE SET sent_seq = peers.sent_seq + 1 RETURNING sent_seq",
        )
        .bind(org)
        .fetch_one(&mut *self.0)
        .await?
        .get(0);
        Ok(seq as u64)
    }

    pub async fn set_received_seq(&mut self, org: &str, seq: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO peers (org, received_seq) VALUES ($1, $2)
             ON CONFLICT (org) DO UPDATE
             SET received_seq = CASE WHEN excluded.received_seq > peers.received_seq THEN excluded.received_seq ELSE peers.received_seq END",
        )
        .bind(org)
        .bind(seq as i64)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn set_requested_seq(&mut self, org: &str, seq: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO peers (org, requested_seq) VALUES ($1, $2)
             ON CONFLICT (org) DO UPDATE
             SET requested_seq = CASE WHEN excluded.requested_seq > peers.requested_seq THEN excluded.requested_seq ELSE peers.requested_seq END",
        )
        .bind(org)
        .bind(seq as i64)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn enqueue(&mut self, row: &OutboxRow) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "INSERT INTO outbox (envelope_id, to_org, kind, grant_id, payload, envelope, peer_seq, not_before, version, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq",
        )
        .bind(&row.envelope_id)
        .bind(&row.to_org)
        .bind(row.kind)
        .bind(&row.grant_id)
        .bind(&row.payload)
        .bind(&row.envelope)
        .bind(row.peer_seq.map(|s| s as i64))
        .bind(row.not_before)
        .bind(row.version.map(|v| v as i64))
        .bind(row.state)
        .bind(row.created_at)
        .fetch_one(&mut *self.0)
        .await?
        .get(0))
    }

    /// Replaces a row's envelope (sealed again under a new id), and makes it pending.
    pub async fn reseal(
        &mut self,
        seq: i64,
        envelope_id: &[u8],
        payload: &[u8],
        envelope: &[u8],
        kind: i32,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET envelope_id = $1, payload = $2, envelope = $3, kind = $4, state = 'pending', detail = '', receipt = NULL
             WHERE seq = $5",
        )
        .bind(envelope_id)
        .bind(payload)
        .bind(envelope)
        .bind(kind)
        .bind(seq)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn delete_outbox(&mut self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox WHERE seq = $1")
            .bind(seq)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn set_outbox_state(
        &mut self,
        seq: i64,
        state: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET state = $1, detail = $2 WHERE seq = $3")
            .bind(state)
            .bind(detail)
            .bind(seq)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Outbox rows of a grant in the given states.
    pub async fn outbox_of_grant(
        &mut self,
        grant_id: &str,
        states: &[&str],
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let list = states
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE grant_id = $1 AND state IN ({list}) ORDER BY seq"
        ))
        .bind(grant_id)
        .fetch_all(&mut *self.0)
        .await?
        .iter()
        .map(outbox_entry)
        .collect())
    }

    /// Sealed rows to `org` with a peer sequence number in `from..=to`.
    pub async fn outbox_by_peer_seq(
        &mut self,
        org: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE to_org = $1 AND peer_seq BETWEEN $2 AND $3 AND state != 'failed' ORDER BY peer_seq"
        ))
        .bind(org)
        .bind(from as i64)
        .bind(to as i64)
        .fetch_all(&mut *self.0)
        .await?
        .iter()
        .map(outbox_entry)
        .collect())
    }

    /// Marks a row sent with the hub's receipt, if it still holds the envelope that was pushed
    /// (it may have been sealed again meanwhile) and its recipient has not refused it already
    /// (the refusal can come back before the receipts of a round are recorded); returns whether
    /// it did.
    pub async fn mark_sent(
        &mut self,
        seq: i64,
        envelope_id: &[u8],
        receipt: &[u8],
        at: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET state = 'sent', receipt = $1, sent_at = $2, attempts = attempts + 1, detail = ''
             WHERE seq = $3 AND envelope_id = $4 AND state != 'refused'",
        )
        .bind(receipt)
        .bind(at)
        .bind(seq)
        .bind(envelope_id)
        .execute(&mut *self.0)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The log state, read inside this transaction.
    /// The newest checkpoint note and the alarm, read once per transaction (every envelope
    /// sealed in it carries the note).
    pub async fn log_note(&mut self) -> Result<LogNote, StoreError> {
        if let Some(note) = &self.2 {
            return Ok(note.clone());
        }
        let note: LogNote = sqlx::query("SELECT note, alarm FROM log_state WHERE id = 1")
            .fetch_optional(&mut *self.0)
            .await?
            .map(|r| (r.get(0), r.get(1)));
        self.2 = Some(note.clone());
        Ok(note)
    }

    /// Senders with envelopes waiting for a gap to be filled.
    pub async fn held_senders(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query("SELECT DISTINCT from_org FROM held")
            .fetch_all(&mut *self.0)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub async fn set_grant_sent_at(&mut self, grant_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE grants SET sent_at = COALESCE(sent_at, $1) WHERE grant_id = $2")
            .bind(at)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Records a failed attempt; `give_up` marks it failed for good (the hub refused it).
    pub async fn mark_attempt(
        &mut self,
        seq: i64,
        detail: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let state = if give_up { "failed" } else { "pending" };
        sqlx::query(
            "UPDATE outbox SET state = $1, attempts = attempts + 1, detail = $2 WHERE seq = $3",
        )
        .bind(state)
        .bind(detail)
        .bind(seq)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    /// A refusal came back for an envelope this node sent. Returns the refused row's grant id.
    pub async fn mark_refused(
        &mut self,
        to_org: &str,
        envelope_id: &[u8],
        reason: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("UPDATE outbox SET state = 'refused', detail = $1 WHERE envelope_id = $2 AND to_org = $3 RETURNING grant_id")
            .bind(reason)
            .bind(envelope_id)
            .bind(to_org)
            .fetch_optional(&mut *self.0)
            .await?
            .and_then(|r| r.get(0)))
    }

    /// Marks an envelope processed; false if it already was (then nothing else may change).
    pub async fn insert_processed(&mut self, p: &Processed) -> Result<bool, StoreError> {
        let done = sqlx::query(
                        "INSERT INTO processed (envelope_id, from_org, kind, outcome, detail, receipt, body_sha256, processed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&p.envelope_id)
        .bind(&p.from_org)
        .bind(p.kind)
        .bind(&p.outcome)
        .bind(&p.detail)
        .bind(&p.receipt)
        .bind(&p.body_sha256)
        .bind(p.at)
        .execute(&mut *self.0)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Keeps a checkpoint another member sent, to compare with ours (only a changed one).
    pub async fn add_peer_checkpoint(
        &mut self,
        from_org: &str,
        note: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO peer_checkpoints (from_org, note, at)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM peer_checkpoints WHERE from_org = $4 AND note = $5)",
        )
        .bind(from_org)
        .bind(note)
        .bind(at)
        .bind(from_org)
        .bind(note)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn hold(&mut self, h: &Held, envelope_id: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO held (from_org, seq, envelope_id, envelope, receipt) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
            .bind(&h.from_org)
            .bind(h.seq as i64)
            .bind(envelope_id)
            .bind(&h.envelope)
            .bind(&h.receipt)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn unhold(&mut self, from_org: &str, seq: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM held WHERE from_org = $1 AND seq = $2")
            .bind(from_org)
            .bind(seq as i64)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Stores a received passport, replacing what the same grant brought before.
    pub async fn store_received(&mut self, r: &Received) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM received WHERE grant_id = $1")
            .bind(&r.grant_id)
            .execute(&mut *self.0)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO received ({RECEIVED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(&r.grant_id)
        .bind(&r.pseudonym)
        .bind(&r.from_org)
        .bind(&r.purpose)
        .bind(sections_text(&r.sections))
        .bind(r.not_before)
        .bind(r.not_after)
        .bind(r.live as i64)
        .bind(r.version as i64)
        .bind(&r.question_set)
        .bind(&r.card)
        .bind(&r.manifest)
        .bind(&r.grant_signed)
        .bind(&r.envelope_id)
        .bind(r.received_at)
        .bind(&r.status)
        .execute(&mut *self.0)
        .await?;
        for (id, d) in &r.disclosures {
            sqlx::query(
                "INSERT INTO received_sections (grant_id, section_id, disclosure) VALUES ($1, $2, $3)",
            )
            .bind(&r.grant_id)
            .bind(id)
            .bind(d)
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    /// Erases everything a grant brought (the passport and its sections) and records the
    /// erasure with the receipt this node signed.
    pub async fn erase_received(&mut self, e: &Erased) -> Result<bool, StoreError> {
        let removed = sqlx::query("DELETE FROM received WHERE grant_id = $1")
            .bind(&e.grant_id)
            .execute(&mut *self.0)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO erased (grant_id, from_org, reason, erased_at, receipt) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&e.grant_id)
        .bind(&e.from_org)
        .bind(&e.reason)
        .bind(e.erased_at)
        .bind(&e.receipt)
        .execute(&mut *self.0)
        .await?;
        Ok(removed > 0)
    }

    pub async fn set_received_status(
        &mut self,
        grant_id: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE received SET status = $1 WHERE grant_id = $2")
            .bind(status)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn log_view(
        &mut self,
        grant_id: &str,
        staff_user: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO access_log (grant_id, staff_user, viewed_at) VALUES ($1, $2, $3)")
            .bind(grant_id)
            .bind(staff_user)
            .bind(at)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn add_trail(&mut self, t: &TrailRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO trail (pseudonym, grant_id, org, event, at, detail, envelope_id, hub_receipt, evidence)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&t.pseudonym)
        .bind(&t.grant_id)
        .bind(&t.org)
        .bind(&t.event)
        .bind(t.at)
        .bind(&t.detail)
        .bind(&t.envelope_id)
        .bind(&t.hub_receipt)
        .bind(&t.evidence)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn grant(&mut self, grant_id: &str) -> Result<Option<GrantRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(&mut *self.0)
        .await?
        .map(|r| grant_row(&r)))
    }

    pub async fn received_status(
        &mut self,
        grant_id: &str,
    ) -> Result<Option<(String, String, String, u32)>, StoreError> {
        Ok(sqlx::query(
            "SELECT status, from_org, pseudonym, version FROM received WHERE grant_id = $1",
        )
        .bind(grant_id)
        .fetch_optional(&mut *self.0)
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get::<i64, _>(3) as u32)))
    }
}

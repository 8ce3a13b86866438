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
//!
//! Each area keeps its row types, its reads (`impl NodeStore`) and its writes (`impl Tx`) in a
//! file of its own: `students`, `grants` (with the trail), `outbox`, `inbox` (what was taken in,
//! peers' sequence numbers, held envelopes), `received` (received passports, erasures, views)
//! and `log`. This file holds the store itself, its transaction, the directory versions and the
//! shared helpers.

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Row, Transaction};

mod audit;
mod class;
mod grants;
mod inbox;
mod keys;
mod log;
mod outbox;
mod pull;
mod received;
mod students;
mod web;

pub use audit::AuditRow;
pub use class::ClassReads;
pub use grants::{GrantRow, StatusUpdate, TrailRow};
pub use inbox::{Held, Peer, Processed};
pub use keys::{HeldRow, KeyLinkRow, LinkRole};
pub use log::{CHECKPOINT_HISTORY, LogState, Unproven};
pub use outbox::{OutboxEntry, OutboxRow};
pub use pull::{Fetchable, PickupRow};
pub use received::{Erased, Received};
pub use students::StoredVersion;
pub use web::{InvitationRow, PersonRow, SessionRow, StaffRow};

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

/// Connections of a node's PostgreSQL pool: one writer at a time (the writer lock) and a few
/// readers; a database server serves many nodes.
const POSTGRES_CONNECTIONS: u32 = 4;

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
        let writer = crate::sqlite_pool::Writer::default();
        let pool = crate::sqlite_pool::open_any(url, 8, &writer).await?;
        sqlx::migrate!("../migrations/node/sqlite")
            .run(&pool)
            .await?;
        Ok(NodeStore {
            pool,
            begin: "BEGIN IMMEDIATE",
            writer,
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
}

/// `sql` as this connection's database reads it fastest. On SQLite, parameters written `$1`,
/// `$2`, … once each and in that order become plain `?`s: SQLite finds a numbered parameter by
/// searching those before it, when it parses the statement and again as each value is bound,
/// so a multi-row insert of 2,000 parameters costs millions of string comparisons (about 5 % of
/// a handover's instructions); plain `?`s cost none. Anything else stays as written.
pub(super) fn for_db(on: &sqlx::AnyConnection, sql: String) -> String {
    if on.backend_name() != "SQLite" {
        return sql;
    }
    plain_parameters(&sql).unwrap_or(sql)
}

/// `sql` with its parameters `$1`, `$2`, … as plain `?`s, if each comes once and in order.
fn plain_parameters(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let (mut next, mut copied, mut at) = (1u64, 0, 0);
    let bytes = sql.as_bytes();
    while at < bytes.len() {
        if bytes[at] == b'$' {
            let digits = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 {
                if sql[at + 1..at + 1 + digits].parse::<u64>() != Ok(next) {
                    return None;
                }
                out.push_str(&sql[copied..at]);
                out.push('?');
                next += 1;
                at += 1 + digits;
                copied = at;
                continue;
            }
        }
        at += 1;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// Keys asked for in one `IN (…)` list; well under either database's limit on parameters.
const KEYS_PER_QUERY: usize = 500;

/// The rows `{select} WHERE {key} IN (…)` finds for `keys`, [`KEYS_PER_QUERY`] keys a statement.
pub(super) async fn rows_where_in<T>(
    on: &mut sqlx::AnyConnection,
    select: &str,
    key: &str,
    keys: &[T],
) -> Result<Vec<sqlx::any::AnyRow>, StoreError>
where
    T: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + Sync + Clone,
{
    let mut rows = Vec::new();
    for chunk in keys.chunks(KEYS_PER_QUERY) {
        let sql = format!(
            "{select} WHERE {key} IN ({})",
            outbox::params(1, chunk.len())
        );
        let sql = for_db(on, sql);
        let mut query = sqlx::query(&sql);
        for k in chunk {
            query = query.bind(k.clone());
        }
        rows.extend(query.fetch_all(&mut *on).await?);
    }
    Ok(rows)
}

impl Tx {
    /// Which of `keys` the rows of `table` hold in `column`, as this transaction sees it.
    pub(super) async fn present<T>(
        &mut self,
        table: &str,
        column: &str,
        keys: &[T],
    ) -> Result<std::collections::HashSet<T>, StoreError>
    where
        T: for<'q> sqlx::Encode<'q, Any>
            + for<'r> sqlx::Decode<'r, Any>
            + sqlx::Type<Any>
            + Send
            + Sync
            + Clone
            + std::hash::Hash
            + Eq,
    {
        rows_where_in(
            &mut self.0,
            &format!("SELECT {column} FROM {table}"),
            column,
            keys,
        )
        .await?
        .iter()
        .map(|r| Ok(r.try_get::<T, _>(0)?))
        .collect()
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
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
}

#[cfg(test)]
mod tests {
    use super::plain_parameters;

    #[test]
    fn parameters_once_each_and_in_order_become_plain() {
        assert_eq!(
            plain_parameters("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)").as_deref(),
            Some("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)")
        );
        assert_eq!(
            plain_parameters(
                "UPDATE t SET a = $1 WHERE b IN ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )
            .as_deref(),
            Some("UPDATE t SET a = ? WHERE b IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        );
        // A parameter used twice, or out of order, keeps its number: a plain `?` would take
        // the next value.
        assert_eq!(plain_parameters("SELECT $1 WHERE x > $1"), None);
        assert_eq!(plain_parameters("VALUES ($2, $1)"), None);
        assert_eq!(plain_parameters("SELECT 1").as_deref(), Some("SELECT 1"));
    }
}

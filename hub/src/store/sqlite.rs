//! SQLite implementation of [`HubStore`]: one file, WAL mode, migrations run at open.

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{
    Accepted, Checkpoint, EnvelopeMeta, Event, HubStore, MailboxEntry, NewEnvelope, ReceiptSigner,
    StoreError,
};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held by the one writer of this process at a time, from before its `BEGIN IMMEDIATE` to
    /// after its commit (see [`SqliteStore::begin_write`]).
    writer: crate::sqlite_pool::Writer,
}

/// A write transaction and this process's turn to write, given back together when it ends.
type Writing = (
    tokio::sync::OwnedMutexGuard<()>,
    sqlx::Transaction<'static, Sqlite>,
);

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and runs the migrations under `migrations/hub/sqlite`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let writer = crate::sqlite_pool::Writer::default();
        let pool = crate::sqlite_pool::open(url, 4, &writer).await?;
        sqlx::migrate!("../migrations/hub/sqlite")
            .run(&pool)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    /// Starts a write transaction once the writers of this process before it are done. They
    /// queue here, and the next one starts as soon as the one before commits. Left to SQLite,
    /// a writer that finds the lock taken sleeps in its busy handler, up to 100 ms at a time,
    /// and finds out late that the lock is free: group commits waited 180 ms behind a log
    /// integration that took a few. Another process on the same file still waits in SQLite.
    async fn begin_write(&self) -> Result<Writing, StoreError> {
        let turn = self.writer.clone().lock_owned().await;
        Ok((turn, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }
}

/// Log hashes written by one statement when the log integrates.
const LOG_HASHES_PER_INSERT: usize = 4_096;

const META_COLUMNS: &str =
    "from_org, to_org, kind, received_at, acked_at, erasure_reason, envelope_id, about_package";

fn envelope_meta(r: &sqlx::sqlite::SqliteRow) -> EnvelopeMeta {
    EnvelopeMeta {
        from_org: r.get(0),
        to_org: r.get(1),
        kind: r.get(2),
        received_at: r.get(3),
        acked_at: r.get(4),
        erasure_reason: r.get(5),
        envelope_id: r.get(6),
        about_package: r.get::<Option<Vec<u8>>, _>(7).unwrap_or_default(),
    }
}

#[async_trait::async_trait]
impl HubStore for SqliteStore {
    async fn directory(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT signed FROM directory ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    async fn save_directory(&self, version: u64, signed: &[u8], at: i64) -> Result<(), StoreError> {
        let _turn = self.writer.lock().await;
        sqlx::query(
            "INSERT OR IGNORE INTO directory (version, signed, stored_at) VALUES (?, ?, ?)",
        )
        .bind(version as i64)
        .bind(signed)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn accept_batch(
        &self,
        batch: Vec<(NewEnvelope, ReceiptSigner)>,
    ) -> Result<Vec<Result<Accepted, StoreError>>, StoreError> {
        // BEGIN IMMEDIATE takes the write lock up front, so two sends of the same id serialise
        // here and the second one sees the first.
        let (_turn, mut tx) = self.begin_write().await?;
        let mut lookup = QueryBuilder::<Sqlite>::new(
            "SELECT envelope_id, header_sha256, receipt FROM envelopes WHERE envelope_id IN (",
        );
        let mut ids = lookup.separated(", ");
        for (env, _) in &batch {
            ids.push_bind(env.envelope_id.clone());
        }
        ids.push_unseparated(")");
        let stored = lookup
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(log_index) + 1, 0) FROM events")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let mut plan = super::plan_batch(batch, stored, next);
        let mut seqs = std::collections::HashMap::new();
        if !plan.rows.is_empty() {
            let signing = super::Signing::start(&plan.rows);
            // The mailbox rows go in before the envelopes they refer to (which wait for their
            // receipts); the reference is checked when the transaction commits.
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut *tx)
                .await?;
            super::batch_insert::<Sqlite>(&plan.rows, super::Insert::Events)
                .build()
                .execute(&mut *tx)
                .await?;
            for r in super::batch_insert::<Sqlite>(&plan.rows, super::Insert::Mailbox)
                .build()
                .fetch_all(&mut *tx)
                .await?
            {
                seqs.insert(r.get::<Vec<u8>, _>(0), r.get::<i64, _>(1));
            }
            signing.finish(&mut plan.rows).await?;
            super::batch_insert::<Sqlite>(&plan.rows, super::Insert::Envelopes)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        super::finish_batch(plan, &seqs)
    }

    async fn mailbox(
        &self,
        to_org: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.seq, m.envelope, e.receipt FROM mailbox m JOIN envelopes e USING (envelope_id)
             WHERE m.to_org = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
        )
        .bind(to_org)
        .bind(after_seq as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| MailboxEntry {
                seq: r.get::<i64, _>(0) as u64,
                envelope: r.get(1),
                receipt: r.get(2),
            })
            .collect())
    }

    async fn ack(
        &self,
        to_org: &str,
        envelope_ids: &[Vec<u8>],
        at: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if envelope_ids.is_empty() {
            return Ok(Vec::new());
        }
        let (_turn, mut tx) = self.begin_write().await?;
        let next: i64 = sqlx::query("SELECT COALESCE(MAX(log_index) + 1, 0) FROM events")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        // Three statements for the whole ack: the mailbox rows out, the envelopes marked, one
        // `delivery` event each.
        let mut delete = QueryBuilder::<Sqlite>::new("DELETE FROM mailbox WHERE to_org = ");
        delete.push_bind(to_org).push(" AND envelope_id IN (");
        let mut ids = delete.separated(", ");
        for id in envelope_ids {
            ids.push_bind(id);
        }
        ids.push_unseparated(") RETURNING envelope_id");
        let removed = delete
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get::<Vec<u8>, _>(0))
            .collect();
        let delivered = super::deliveries(envelope_ids, removed, next);
        if delivered.is_empty() {
            return Ok(Vec::new());
        }
        let mut mark = QueryBuilder::<Sqlite>::new("UPDATE envelopes SET acked_at = ");
        mark.push_bind(at).push(" WHERE envelope_id IN (");
        let mut ids = mark.separated(", ");
        for (_, id) in &delivered {
            ids.push_bind(id);
        }
        ids.push_unseparated(") RETURNING envelope_id, received_at");
        let received: std::collections::HashMap<Vec<u8>, i64> = mark
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut events = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at)
             SELECT v.column1, 'delivery', e.kind, e.from_org, e.to_org, e.envelope_id, x'', ",
        );
        events.push_bind(at).push(" FROM (");
        events.push_values(&delivered, |mut b, (index, id)| {
            b.push_bind(*index).push_bind(id);
        });
        events.push(") AS v JOIN envelopes e ON e.envelope_id = v.column2");
        events.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(delivered
            .iter()
            .filter_map(|(_, id)| received.get(id).copied())
            .collect())
    }

    async fn envelopes_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<EnvelopeMeta>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {META_COLUMNS} FROM envelopes WHERE received_at >= ? AND received_at < ?"
        ))
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(envelope_meta).collect())
    }

    async fn unacked(&self) -> Result<Vec<EnvelopeMeta>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {META_COLUMNS} FROM envelopes WHERE acked_at IS NULL"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(envelope_meta).collect())
    }

    async fn mailbox_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(
            sqlx::query("SELECT to_org, COUNT(*) FROM mailbox GROUP BY to_org")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get::<i64, _>(1) as u64))
                .collect(),
        )
    }

    async fn events(&self, start: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at
             FROM events WHERE log_index >= ? ORDER BY log_index LIMIT ?",
        )
        .bind(start as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_of).collect())
    }

    async fn log_card(
        &self,
        from_org: &str,
        card_index: &[u8],
        card_sha256: &[u8],
        at: i64,
    ) -> Result<u64, StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT log_index FROM events WHERE event = 'card' AND envelope_id = ? AND from_org = ? AND body_sha256 = ?",
        )
        .bind(card_index)
        .bind(from_org)
        .bind(card_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(i) = before {
            return Ok(i as u64);
        }
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(log_index) + 1, 0) FROM events")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO events (log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at)
             VALUES (?, 'card', 0, ?, '', ?, ?, ?)",
        )
        .bind(next)
        .bind(from_org)
        .bind(card_index)
        .bind(card_sha256)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(next as u64)
    }

    async fn card_events(&self, card_index: &[u8]) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at
             FROM events WHERE event = 'card' AND envelope_id = ? ORDER BY log_index",
        )
        .bind(card_index)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(event_of).collect())
    }

    async fn log_hashes(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let rows = sqlx::query("SELECT hash FROM log_hashes ORDER BY idx")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| super::hash32(r.get(0))).collect()
    }

    async fn integrate(
        &self,
        first: u64,
        hashes: &[[u8; 32]],
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let (_turn, mut tx) = self.begin_write().await?;
        // Many rows a statement (two values each, inside SQLite's 32,766), so the write lock is
        // held for a few statements, not one per hash.
        for (c, chunk) in hashes.chunks(LOG_HASHES_PER_INSERT).enumerate() {
            let start = first + (c * LOG_HASHES_PER_INSERT) as u64;
            let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO log_hashes (idx, hash) ");
            insert.push_values(chunk.iter().enumerate(), |mut b, (i, h)| {
                b.push_bind((start + i as u64) as i64)
                    .push_bind(h.as_slice());
            });
            insert.build().execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO checkpoints (size, root, note, at) VALUES (?, ?, ?, ?)")
            .bind(checkpoint.size as i64)
            .bind(checkpoint.root.as_slice())
            .bind(&checkpoint.note)
            .bind(checkpoint.at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query("SELECT size, root, note, at FROM checkpoints WHERE size = ?")
            .bind(size as i64)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(checkpoint_row))
    }

    async fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        line: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.writer.lock().await;
        sqlx::query(
            "INSERT OR IGNORE INTO cosignatures (size, witness, line, at) VALUES (?, ?, ?, ?)",
        )
        .bind(size as i64)
        .bind(witness)
        .bind(line)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cosignatures(&self, size: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT line FROM cosignatures WHERE size = ? ORDER BY witness")
                .bind(size as i64)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect(),
        )
    }

    async fn log_hashes_between(&self, first: u64, end: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let rows =
            sqlx::query("SELECT hash FROM log_hashes WHERE idx >= ? AND idx < ? ORDER BY idx")
                .bind(first as i64)
                .bind(end as i64)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|r| super::hash32(r.get(0))).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row =
            sqlx::query("SELECT size, root, note, at FROM checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(checkpoint_row))
    }
}

/// A `checkpoints` row (size, root, note, at).
fn checkpoint_row(r: &sqlx::sqlite::SqliteRow) -> Checkpoint {
    Checkpoint {
        size: r.get::<i64, _>(0) as u64,
        root: r.get::<Vec<u8>, _>(1).try_into().unwrap_or([0; 32]),
        note: r.get(2),
        at: r.get(3),
    }
}

/// An `events` row, selected as `log_index, event, envelope_kind, from_org, to_org,
/// envelope_id, body_sha256, at`.
fn event_of(r: &sqlx::sqlite::SqliteRow) -> Event {
    Event {
        log_index: r.get::<i64, _>(0) as u64,
        event: r.get(1),
        envelope_kind: r.get(2),
        from_org: r.get(3),
        to_org: r.get(4),
        envelope_id: r.get(5),
        body_sha256: r.get(6),
        at: r.get(7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accept_is_idempotent_and_ack_logs_delivery() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        super::super::conformance::accept_is_idempotent_and_ack_logs_delivery(&s).await;
    }

    #[tokio::test]
    async fn cards_are_logged_once_and_listed_by_index() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        super::super::conformance::cards_are_logged_once_and_listed_by_index(&s).await;
    }

    #[tokio::test]
    async fn a_batch_answers_each_envelope_on_its_own() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        super::super::conformance::a_batch_answers_each_envelope_on_its_own(&s).await;
    }

    #[tokio::test]
    async fn an_ack_of_many_logs_each_delivery_once_in_the_order_asked() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        super::super::conformance::an_ack_of_many_logs_each_delivery_once_in_the_order_asked(&s)
            .await;
    }

    #[tokio::test]
    async fn a_large_batch_gets_each_receipt_for_its_own_index() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        super::super::conformance::a_large_batch_gets_each_receipt_for_its_own_index(&s).await;
    }

    #[tokio::test]
    async fn events_are_append_only() {
        let s = SqliteStore::open("sqlite::memory:").await.unwrap();
        super::super::conformance::accept_once(&s).await;
        let err = sqlx::query("DELETE FROM events")
            .execute(&s.pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
}

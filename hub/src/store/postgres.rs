//! PostgreSQL implementation of [`HubStore`], for a region that has outgrown one machine: the
//! same tables and rules as the SQLite store, in PostgreSQL's own SQL. Migrations under
//! `migrations/hub/postgres` run at open.
//!
//! Every transaction that hands out log indexes (`accept`, `ack`) or appends to the Merkle log
//! (`integrate`) first takes one transaction-scoped advisory lock, so indexes stay dense and in
//! commit order however many hub processes share the database; SQLite gets the same from
//! `BEGIN IMMEDIATE`.

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, Row, Transaction};
use tokio::sync::{Mutex, mpsc};

use super::{
    Accepted, Checkpoint, EnvelopeMeta, Event, HubStore, MailboxEntry, NewEnvelope, ReceiptSigner,
    StoreError,
};

/// The advisory lock key that serialises writers of the event log ("OVERSTAP" in ASCII).
const LOG_LOCK: i64 = 0x4f56_4552_5354_4150;
/// The session advisory lock the log's one sequencer holds ("OVERSEQ" in ASCII).
const SEQUENCER_LOCK: i64 = 0x004f_5645_5253_4551;
/// The channel on which a hub announces an envelope it put in a mailbox ("TO_ORG SEQ").
const ARRIVALS: &str = "overstap_arrivals";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// This process's own session for the sequencer lock, and whether it holds the lock.
    lease: std::sync::Arc<Mutex<Option<(PgConnection, bool)>>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and runs the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/hub/postgres")
            .run(&pool)
            .await?;
        Ok(PostgresStore {
            pool,
            lease: Default::default(),
        })
    }

    /// A transaction that holds the log's write lock until it ends.
    async fn log_writer(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOG_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

const META_COLUMNS: &str =
    "from_org, to_org, kind, received_at, acked_at, erasure_reason, envelope_id, about_package";

fn envelope_meta(r: &PgRow) -> EnvelopeMeta {
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

async fn next_log_index(tx: &mut Transaction<'static, Postgres>) -> Result<i64, StoreError> {
    Ok(
        sqlx::query("SELECT COALESCE(MAX(log_index) + 1, 0) FROM events")
            .fetch_one(&mut **tx)
            .await?
            .get(0),
    )
}

#[async_trait::async_trait]
impl HubStore for PostgresStore {
    async fn directory(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT signed FROM directory ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    async fn save_directory(&self, version: u64, signed: &[u8], at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO directory (version, signed, stored_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
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
        let mut tx = self.log_writer().await?;
        let ids: Vec<Vec<u8>> = batch.iter().map(|(e, _)| e.envelope_id.clone()).collect();
        let stored = sqlx::query(
            "SELECT envelope_id, header_sha256, receipt FROM envelopes WHERE envelope_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
        let next = next_log_index(&mut tx).await?;
        let mut plan = super::plan_batch(batch, stored, next);
        let mut seqs = std::collections::HashMap::new();
        if !plan.rows.is_empty() {
            let signing = super::Signing::start(&plan.rows);
            super::batch_insert::<Postgres>(&plan.rows, super::Insert::Events)
                .build()
                .execute(&mut *tx)
                .await?;
            // The mailbox rows refer to the envelopes, which wait for their receipts.
            signing.finish(&mut plan.rows).await?;
            super::batch_insert::<Postgres>(&plan.rows, super::Insert::Envelopes)
                .build()
                .execute(&mut *tx)
                .await?;
            let mut notes = Vec::with_capacity(plan.rows.len());
            for r in super::batch_insert::<Postgres>(&plan.rows, super::Insert::Mailbox)
                .build()
                .fetch_all(&mut *tx)
                .await?
            {
                let seq: i64 = r.get(1);
                notes.push(format!("{} {seq}", r.get::<String, _>(2)));
                seqs.insert(r.get::<Vec<u8>, _>(0), seq);
            }
            // Delivered to every listening hub when (and only if) this transaction commits.
            sqlx::query("SELECT pg_notify($1, note) FROM UNNEST($2::text[]) AS note")
                .bind(ARRIVALS)
                .bind(&notes)
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
             WHERE m.to_org = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
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
        let mut tx = self.log_writer().await?;
        let next = next_log_index(&mut tx).await?;
        // Three statements for the whole ack: the mailbox rows out, the envelopes marked, one
        // `delivery` event each.
        let removed = sqlx::query(
            "DELETE FROM mailbox WHERE to_org = $1 AND envelope_id = ANY($2) RETURNING envelope_id",
        )
        .bind(to_org)
        .bind(envelope_ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get::<Vec<u8>, _>(0))
        .collect();
        let delivered = super::deliveries(envelope_ids, removed, next);
        if delivered.is_empty() {
            return Ok(Vec::new());
        }
        let (indexes, ids): (Vec<i64>, Vec<Vec<u8>>) = delivered.iter().cloned().unzip();
        let received: std::collections::HashMap<Vec<u8>, i64> = sqlx::query(
            "UPDATE envelopes SET acked_at = $1 WHERE envelope_id = ANY($2) RETURNING envelope_id, received_at",
        )
        .bind(at)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        sqlx::query(
            "INSERT INTO events (log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at)
             SELECT v.idx, 'delivery', e.kind, e.from_org, e.to_org, e.envelope_id, ''::bytea, $1
             FROM UNNEST($2::bigint[], $3::bytea[]) AS v(idx, id) JOIN envelopes e ON e.envelope_id = v.id",
        )
        .bind(at)
        .bind(&indexes)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids
            .iter()
            .filter_map(|id| received.get(id).copied())
            .collect())
    }

    async fn envelopes_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<EnvelopeMeta>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {META_COLUMNS} FROM envelopes WHERE received_at >= $1 AND received_at < $2"
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
             FROM events WHERE log_index >= $1 ORDER BY log_index LIMIT $2",
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
        let mut tx = self.log_writer().await?;
        let before: Option<i64> = sqlx::query_scalar(
            "SELECT log_index FROM events WHERE event = 'card' AND envelope_id = $1 AND from_org = $2 AND body_sha256 = $3",
        )
        .bind(card_index)
        .bind(from_org)
        .bind(card_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(i) = before {
            return Ok(i as u64);
        }
        let next = next_log_index(&mut tx).await?;
        sqlx::query(
            "INSERT INTO events (log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at)
             VALUES ($1, 'card', 0, $2, '', $3, $4, $5)",
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
             FROM events WHERE event = 'card' AND envelope_id = $1 ORDER BY log_index",
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
        let mut tx = self.log_writer().await?;
        // One statement for the whole batch: a round of the sequencer may store thousands.
        let idx: Vec<i64> = (0..hashes.len())
            .map(|i| (first + i as u64) as i64)
            .collect();
        let hash: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_vec()).collect();
        sqlx::query(
            "INSERT INTO log_hashes (idx, hash) SELECT * FROM UNNEST($1::BIGINT[], $2::BYTEA[])",
        )
        .bind(&idx)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO checkpoints (size, root, note, at) VALUES ($1, $2, $3, $4)")
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
        let row = sqlx::query("SELECT size, root, note, at FROM checkpoints WHERE size = $1")
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
        sqlx::query(
            "INSERT INTO cosignatures (size, witness, line, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
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
            sqlx::query("SELECT line FROM cosignatures WHERE size = $1 ORDER BY witness")
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
            sqlx::query("SELECT hash FROM log_hashes WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                .bind(first as i64)
                .bind(end as i64)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|r| super::hash32(r.get(0))).collect()
    }

    async fn arrivals(&self) -> Result<Option<mpsc::Receiver<(String, u64)>>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(ARRIVALS).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    r = listener.try_recv() => r,
                    // The hub that listened has stopped.
                    _ = tx.closed() => return,
                };
                let arrival = match received {
                    Ok(Some(n)) => match n.payload().split_once(' ') {
                        Some((org, seq)) => (org.to_string(), seq.parse().unwrap_or(0)),
                        None => continue,
                    },
                    // The connection dropped and was made again: something may be missed.
                    Ok(None) => (String::new(), 0),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other hubs' arrivals failed; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        (String::new(), 0)
                    }
                };
                if tx.send(arrival).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn sequencer_lease(&self) -> Result<bool, StoreError> {
        let mut lease = self.lease.lock().await;
        if let Some((conn, held)) = lease.as_mut() {
            let alive = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
            if !alive {
                // The session (and the lock with it) is gone; another hub may take over now.
                *lease = None;
                return Ok(false);
            }
            if *held {
                return Ok(true);
            }
        } else {
            let conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
            *lease = Some((conn, false));
        }
        let Some((conn, held)) = lease.as_mut() else {
            return Ok(false);
        };
        *held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SEQUENCER_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if *held {
            tracing::info!("this hub is now the log's sequencer");
        }
        Ok(*held)
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
fn checkpoint_row(r: &PgRow) -> Checkpoint {
    Checkpoint {
        size: r.get::<i64, _>(0) as u64,
        root: r.get::<Vec<u8>, _>(1).try_into().unwrap_or([0; 32]),
        note: r.get(2),
        at: r.get(3),
    }
}

/// Run only where PostgreSQL is (`./test`'s PostgreSQL pass); the module's name is how the
/// SQLite pass leaves them out.
/// An `events` row, selected as `log_index, event, envelope_kind, from_org, to_org,
/// envelope_id, body_sha256, at`.
fn event_of(r: &sqlx::postgres::PgRow) -> Event {
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
mod on_postgres {
    use super::*;

    /// A fresh database next to the server `OVERSTAP_TEST_POSTGRES` names. Without it these
    /// tests fail rather than pass having tested nothing.
    async fn store() -> PostgresStore {
        let admin = std::env::var("OVERSTAP_TEST_POSTGRES")
            .expect("this test needs PostgreSQL: set OVERSTAP_TEST_POSTGRES (./test does)");
        let url = super::super::fresh_postgres_database(&admin).await.unwrap();
        PostgresStore::open(&url).await.unwrap()
    }

    #[tokio::test]
    async fn accept_is_idempotent_and_ack_logs_delivery() {
        let s = store().await;
        super::super::conformance::accept_is_idempotent_and_ack_logs_delivery(&s).await;
    }

    #[tokio::test]
    async fn cards_are_logged_once_and_listed_by_index() {
        let s = store().await;
        super::super::conformance::cards_are_logged_once_and_listed_by_index(&s).await;
    }

    #[tokio::test]
    async fn a_batch_answers_each_envelope_on_its_own() {
        let s = store().await;
        super::super::conformance::a_batch_answers_each_envelope_on_its_own(&s).await;
    }

    #[tokio::test]
    async fn an_ack_of_many_logs_each_delivery_once_in_the_order_asked() {
        let s = store().await;
        super::super::conformance::an_ack_of_many_logs_each_delivery_once_in_the_order_asked(&s)
            .await;
    }

    #[tokio::test]
    async fn a_large_batch_gets_each_receipt_for_its_own_index() {
        let s = store().await;
        super::super::conformance::a_large_batch_gets_each_receipt_for_its_own_index(&s).await;
    }

    #[tokio::test]
    async fn events_are_append_only() {
        let s = store().await;
        super::super::conformance::accept_once(&s).await;
        for statement in ["DELETE FROM events", "UPDATE events SET at = 0"] {
            let err = sqlx::query(statement).execute(&s.pool).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
    }

    /// Two writers at once (two hub processes, say) still get dense, distinct log indexes.
    #[tokio::test]
    async fn concurrent_accepts_get_distinct_dense_log_indexes() {
        let s = store().await;
        let mut tasks = Vec::new();
        for i in 0..40u8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let env = super::super::conformance::env(i, "30RT");
                s.accept(
                    env,
                    std::sync::Arc::new(|i: u64, _| i.to_be_bytes().to_vec()),
                )
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut indexes: Vec<u64> = s
            .events(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_index)
            .collect();
        indexes.sort();
        assert_eq!(indexes, (0..40).collect::<Vec<u64>>());
    }
}

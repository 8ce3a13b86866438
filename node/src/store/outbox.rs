//! The outbox: what this node sealed (or queued until a grant starts), in sending order, with
//! each recipient's sequence numbers, the rounds the sync engine pushes, and what became of
//! each row (sent with the hub's receipt, failed, refused).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{NodeStore, StoreError, Tx};

/// Rows per multi-row insert: 11 parameters each, well under SQLite's and PostgreSQL's limits.
const ROWS_PER_INSERT: usize = 200;

const INSERT_OUTBOX: &str = "INSERT INTO outbox (envelope_id, to_org, kind, grant_id, payload, \
     envelope, peer_seq, not_before, version, state, created_at) VALUES";
const OUTBOX_ROW_COLUMNS: usize = 11;

/// `$first, $first+1, …` for `n` parameters.
pub(super) fn params(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` rows of `columns` parameters each, numbered on from `first`, for a multi-row
/// `VALUES` list: `($1, $2), ($3, $4)`.
pub(super) fn value_rows(first: usize, n: usize, columns: usize) -> String {
    (0..n)
        .map(|i| format!("({})", params(first + i * columns, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows marked sent in one statement (3 parameters each).
const SENT_PER_UPDATE: usize = 300;

/// Binds a new row's columns in `INSERT_OUTBOX`'s order.
fn bind_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    row: &'q OutboxRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
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

pub(super) const OUTBOX_COLUMNS: &str = "seq, envelope_id, to_org, kind, grant_id, payload, envelope, peer_seq, not_before, version, \
     state, attempts, detail, created_at";

pub(super) fn outbox_entry(r: &AnyRow) -> OutboxEntry {
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

impl NodeStore {
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

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'waiting')")
                .fetch_one(&self.pool)
                .await?
                .get::<i64, _>(0) as u64,
        )
    }
}

impl Tx {
    /// Takes the next `n` sequence numbers for `org` in one statement; returns the first.
    pub async fn reserve_sent_seqs(&mut self, org: &str, n: u64) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query(
            "INSERT INTO peers (org, sent_seq) VALUES ($1, $2)
             ON CONFLICT (org) DO UPDATE SET sent_seq = peers.sent_seq + $2 RETURNING sent_seq",
        )
        .bind(org)
        .bind(n as i64)
        .fetch_one(&mut *self.0)
        .await?
        .get(0);
        Ok(last as u64 + 1 - n)
    }

    pub async fn enqueue(&mut self, row: &OutboxRow) -> Result<i64, StoreError> {
        let sql = format!(
            "{INSERT_OUTBOX} ({}) RETURNING seq",
            params(1, OUTBOX_ROW_COLUMNS)
        );
        Ok(bind_row(sqlx::query(&sql), row)
            .fetch_one(&mut *self.0)
            .await?
            .get(0))
    }

    /// Inserts rows in a few multi-row statements, in order (so their outbox order is theirs).
    pub async fn enqueue_all(&mut self, rows: &[OutboxRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let values = value_rows(1, chunk.len(), OUTBOX_ROW_COLUMNS);
            let sql = format!("{INSERT_OUTBOX} {values}");
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = bind_row(query, row);
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
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

    /// Whether this node sent the package `envelope_id` for `grant_id`.
    pub async fn sent_package(
        &mut self,
        grant_id: &str,
        envelope_id: &[u8],
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 FROM outbox WHERE envelope_id = $1 AND grant_id = $2 AND kind = $3",
        )
        .bind(envelope_id)
        .bind(grant_id)
        .bind(overstap_proto::pb::EnvelopeKind::Package as i32)
        .fetch_optional(&mut *self.0)
        .await?
        .is_some())
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

    /// Marks rows (`(seq, envelope_id, receipt)`) sent with the hub's receipts, each if it still
    /// holds the envelope that was pushed (it may have been sealed again meanwhile) and its
    /// recipient has not refused it already (the refusal can come back before the receipts of a
    /// round are recorded); [`SENT_PER_UPDATE`] rows a statement. Returns the numbers of the
    /// rows it marked.
    pub async fn mark_all_sent(
        &mut self,
        rows: &[(i64, &[u8], &[u8])],
        at: i64,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        let mut marked = std::collections::HashSet::new();
        for chunk in rows.chunks(SENT_PER_UPDATE) {
            let values = value_rows(2, chunk.len(), 3);
            // VALUES names its columns column1, column2, … on SQLite and PostgreSQL alike.
            let sql = format!(
                "UPDATE outbox SET state = 'sent', receipt = v.column3, sent_at = $1,
                        attempts = attempts + 1, detail = ''
                 FROM (VALUES {}) AS v
                 WHERE outbox.seq = v.column1 AND outbox.envelope_id = v.column2
                   AND outbox.state != 'refused'
                 RETURNING outbox.seq",
                values
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql).bind(at);
            for (seq, envelope_id, receipt) in chunk {
                query = query.bind(*seq).bind(*envelope_id).bind(*receipt);
            }
            for r in query.fetch_all(&mut *self.0).await? {
                marked.insert(r.get::<i64, _>(0));
            }
        }
        Ok(marked)
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
}

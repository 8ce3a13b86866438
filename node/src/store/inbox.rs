//! Taking in, in each sender's order: the record of every envelope taken in (`processed`), each
//! peer's sequence numbers, and the envelopes held until a gap in their sender's order fills.

use sqlx::{Any, Row};

use super::{NodeStore, StoreError, Tx};

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

/// Rows of `processed` in one insert (8 columns each: 1,600 parameters).
const PROCESSED_PER_INSERT: usize = 200;

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

impl NodeStore {
    /// Envelopes held until a gap in their sender's sequence fills.
    pub async fn held_count(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM held")
            .fetch_one(&self.pool)
            .await?
            .get::<i64, _>(0) as u64)
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

    /// How many envelopes from `from_org` wait for a gap in its sequence.
    pub async fn held_from(&self, from_org: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM held WHERE from_org = $1")
            .bind(from_org)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok(n as u64)
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

impl Tx {
    /// [`NodeStore::is_processed`], as this transaction sees it.
    pub async fn is_processed(&mut self, envelope_id: &[u8]) -> Result<bool, StoreError> {
        is_processed(&mut *self.0, envelope_id).await
    }

    /// [`NodeStore::peer`], as this transaction sees it.
    pub async fn peer(&mut self, org: &str) -> Result<Peer, StoreError> {
        peer(&mut *self.0, org).await
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

    /// Senders with envelopes waiting for a gap to be filled.
    pub async fn held_senders(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query("SELECT DISTINCT from_org FROM held")
            .fetch_all(&mut *self.0)
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Marks an envelope processed; false if it already was (then nothing else may change).
    pub async fn insert_processed(&mut self, p: &Processed) -> Result<bool, StoreError> {
        Ok(self.insert_processed_all(std::slice::from_ref(p)).await? == 1)
    }

    /// Which of `envelope_ids` were taken in before, as this transaction sees it.
    pub async fn processed_among(
        &mut self,
        envelope_ids: &[Vec<u8>],
    ) -> Result<std::collections::HashSet<Vec<u8>>, StoreError> {
        self.present("processed", "envelope_id", envelope_ids).await
    }

    /// Records many envelopes taken in, [`PROCESSED_PER_INSERT`] to a statement; returns how
    /// many rows went in (fewer than `rows` if some were recorded before).
    pub async fn insert_processed_all(&mut self, rows: &[Processed]) -> Result<u64, StoreError> {
        const COLUMNS: usize = 8;
        let mut inserted = 0;
        for chunk in rows.chunks(PROCESSED_PER_INSERT) {
            let values = super::outbox::value_rows(1, chunk.len(), COLUMNS);
            let sql = format!(
                "INSERT INTO processed (envelope_id, from_org, kind, outcome, detail, receipt, body_sha256, processed_at)
                 VALUES {} ON CONFLICT DO NOTHING",
                values
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql);
            for p in chunk {
                query = query
                    .bind(&p.envelope_id)
                    .bind(&p.from_org)
                    .bind(p.kind)
                    .bind(&p.outcome)
                    .bind(&p.detail)
                    .bind(&p.receipt)
                    .bind(&p.body_sha256)
                    .bind(p.at);
            }
            inserted += query.execute(&mut *self.0).await?.rows_affected();
        }
        Ok(inserted)
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
}

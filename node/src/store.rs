//! The node's SQLite store. Row types stay here; the rest of the node sees plain structs.
//! Every multi-row change is one transaction, so a crash leaves either all of it or none.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

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
    pool: SqlitePool,
}

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
    pub signed: Vec<u8>,
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub envelope_id: Vec<u8>,
    pub to_org: String,
    pub kind: i32,
    pub grant_id: Option<String>,
    pub envelope: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub seq: i64,
    pub envelope_id: Vec<u8>,
    pub to_org: String,
    pub kind: i32,
    pub grant_id: Option<String>,
    pub envelope: Vec<u8>,
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

fn sections_text(s: &[String]) -> String {
    s.join(",")
}

fn sections_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

impl NodeStore {
    /// Opens (creating if needed) the database and runs `migrations/node/sqlite`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the node acks an envelope only after its commit is on disk.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let connections = if url.contains(":memory:") { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/node/sqlite")
            .run(&pool)
            .await?;
        Ok(NodeStore { pool })
    }

    pub async fn directory(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT signed FROM directory ORDER BY version DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub async fn save_directory(&self, version: u64, signed: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO directory (version, signed) VALUES (?, ?)")
            .bind(version as i64)
            .bind(signed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- home side: students, passports, grants -------------------------------------------

    pub async fn insert_student(
        &self,
        pseudonym: &str,
        card: &[u8],
        staff: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO students (pseudonym, card, registered_by, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(pseudonym)
        .bind(card)
        .bind(staff)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("student {pseudonym}")))?;
        Ok(())
    }

    pub async fn student_card(&self, pseudonym: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query("SELECT card FROM students WHERE pseudonym = ?")
            .bind(pseudonym)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0)))
    }

    pub async fn latest_version(
        &self,
        pseudonym: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT version, question_set, manifest FROM passport_versions WHERE pseudonym = ? ORDER BY version DESC LIMIT 1",
        )
        .bind(pseudonym)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let version: i64 = row.get(0);
        let disclosures = sqlx::query("SELECT disclosure FROM passport_sections WHERE pseudonym = ? AND version = ? ORDER BY section_id")
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

    pub async fn insert_version(
        &self,
        pseudonym: &str,
        version: u32,
        question_set: &str,
        manifest: &[u8],
        sections: &[(String, Vec<u8>)],
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO passport_versions (pseudonym, version, question_set, manifest, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(pseudonym)
            .bind(version as i64)
            .bind(question_set)
            .bind(manifest)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("passport version {version} of {pseudonym}")))?;
        for (id, disclosure) in sections {
            sqlx::query("INSERT INTO passport_sections (pseudonym, version, section_id, disclosure) VALUES (?, ?, ?, ?)")
                .bind(pseudonym)
                .bind(version as i64)
                .bind(id)
                .bind(disclosure)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_grant(&self, g: &GrantRow, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grants (grant_id, pseudonym, recipient_org, purpose, sections, not_before, not_after, live, signed, state, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&g.grant_id)
        .bind(&g.pseudonym)
        .bind(&g.recipient_org)
        .bind(&g.purpose)
        .bind(sections_text(&g.sections))
        .bind(g.not_before)
        .bind(g.not_after)
        .bind(g.live)
        .bind(&g.signed)
        .bind(&g.state)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("grant {}", g.grant_id)))?;
        Ok(())
    }

    pub async fn grant(&self, grant_id: &str) -> Result<Option<GrantRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT grant_id, pseudonym, recipient_org, purpose, sections, not_before, not_after, live, signed, state FROM grants WHERE grant_id = ?",
        )
        .bind(grant_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| GrantRow {
            grant_id: r.get(0),
            pseudonym: r.get(1),
            recipient_org: r.get(2),
            purpose: r.get(3),
            sections: sections_list(&r.get::<String, _>(4)),
            not_before: r.get(5),
            not_after: r.get(6),
            live: r.get(7),
            signed: r.get(8),
            state: r.get(9),
        }))
    }

    // ---- outbox -----------------------------------------------------------------------------

    pub async fn enqueue(&self, row: &OutboxRow) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let seq = enqueue_in(&mut tx, row).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Pending envelopes, oldest first.
    pub async fn pending(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_where("state = 'pending'", limit).await
    }

    pub async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_where("1 = 1", limit).await
    }

    async fn outbox_where(&self, filter: &str, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        let sql = format!(
            "SELECT seq, envelope_id, to_org, kind, grant_id, envelope, state, attempts, detail, created_at
             FROM outbox WHERE {filter} ORDER BY seq LIMIT ?"
        );
        Ok(sqlx::query(&sql)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| OutboxEntry {
                seq: r.get(0),
                envelope_id: r.get(1),
                to_org: r.get(2),
                kind: r.get(3),
                grant_id: r.get(4),
                envelope: r.get(5),
                state: r.get(6),
                attempts: r.get(7),
                detail: r.get(8),
                created_at: r.get(9),
            })
            .collect())
    }

    pub async fn mark_sent(&self, seq: i64, receipt: &[u8], at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET state = 'sent', receipt = ?, sent_at = ?, attempts = attempts + 1, detail = '' WHERE seq = ?")
            .bind(receipt)
            .bind(at)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a failed attempt; `give_up` marks it failed for good (the hub refused it).
    pub async fn mark_attempt(
        &self,
        seq: i64,
        detail: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        let state = if give_up { "failed" } else { "pending" };
        sqlx::query(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, detail = ? WHERE seq = ?",
        )
        .bind(state)
        .bind(detail)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?
                .get::<i64, _>(0) as u64,
        )
    }

    // ---- recipient side ---------------------------------------------------------------------

    pub async fn is_processed(&self, envelope_id: &[u8]) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM processed WHERE envelope_id = ?")
            .bind(envelope_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Records an envelope's outcome, and optionally an envelope to send back, in one transaction.
    pub async fn record(&self, p: &Processed, reply: Option<&OutboxRow>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if !insert_processed(&mut tx, p).await? {
            return Ok(());
        }
        if let Some(r) = reply {
            enqueue_in(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a received passport (replacing what the same grant brought before) and marks the
    /// envelope processed, in one transaction. Returns false if it was processed already.
    pub async fn store_received(&self, p: &Processed, r: &Received) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !insert_processed(&mut tx, p).await? {
            return Ok(false);
        }
        sqlx::query("DELETE FROM received WHERE grant_id = ?")
            .bind(&r.grant_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO received (grant_id, pseudonym, from_org, purpose, sections, not_before, not_after, live, version,
                                   question_set, card, manifest, grant_signed, envelope_id, received_at, status)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.grant_id)
        .bind(&r.pseudonym)
        .bind(&r.from_org)
        .bind(&r.purpose)
        .bind(sections_text(&r.sections))
        .bind(r.not_before)
        .bind(r.not_after)
        .bind(r.live)
        .bind(r.version as i64)
        .bind(&r.question_set)
        .bind(&r.card)
        .bind(&r.manifest)
        .bind(&r.grant_signed)
        .bind(&r.envelope_id)
        .bind(r.received_at)
        .bind(&r.status)
        .execute(&mut *tx)
        .await?;
        for (id, d) in &r.disclosures {
            sqlx::query(
                "INSERT INTO received_sections (grant_id, section_id, disclosure) VALUES (?, ?, ?)",
            )
            .bind(&r.grant_id)
            .bind(id)
            .bind(d)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A refusal came back for an envelope this node sent.
    pub async fn mark_refused(
        &self,
        p: &Processed,
        refused_envelope_id: &[u8],
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if !insert_processed(&mut tx, p).await? {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox SET state = 'refused', detail = ? WHERE envelope_id = ? AND to_org = ?",
        )
        .bind(reason)
        .bind(refused_envelope_id)
        .bind(&p.from_org)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn inbox(&self) -> Result<Vec<Received>, StoreError> {
        let rows = sqlx::query("SELECT grant_id FROM received ORDER BY received_at, grant_id")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(x) = self.received(&r.get::<String, _>(0)).await? {
                out.push(x);
            }
        }
        Ok(out)
    }

    pub async fn received(&self, grant_id: &str) -> Result<Option<Received>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT grant_id, pseudonym, from_org, purpose, sections, not_before, not_after, live, version, question_set,
                    card, manifest, grant_signed, envelope_id, received_at, status FROM received WHERE grant_id = ?",
        )
        .bind(grant_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let disclosures = sqlx::query("SELECT section_id, disclosure FROM received_sections WHERE grant_id = ? ORDER BY section_id")
            .bind(grant_id)
            .fetch_all(&self.pool)
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
            live: r.get(7),
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

    /// Logs a view by a staff member; the first view moves the status from ontvangen to gelezen.
    pub async fn record_view(
        &self,
        grant_id: &str,
        staff_user: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO access_log (grant_id, staff_user, viewed_at) VALUES (?, ?, ?)")
            .bind(grant_id)
            .bind(staff_user)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE received SET status = 'gelezen' WHERE grant_id = ? AND status = 'ontvangen'",
        )
        .bind(grant_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn views(&self, grant_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query(
            "SELECT staff_user, viewed_at FROM access_log WHERE grant_id = ? ORDER BY id",
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
}

async fn insert_processed(
    tx: &mut sqlx::SqliteConnection,
    p: &Processed,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT OR IGNORE INTO processed (envelope_id, from_org, kind, outcome, detail, receipt, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&p.envelope_id)
    .bind(&p.from_org)
    .bind(p.kind)
    .bind(&p.outcome)
    .bind(&p.detail)
    .bind(&p.receipt)
    .bind(p.at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(done == 1)
}

async fn enqueue_in(tx: &mut sqlx::SqliteConnection, row: &OutboxRow) -> Result<i64, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO outbox (envelope_id, to_org, kind, grant_id, envelope, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
    )
    .bind(&row.envelope_id)
    .bind(&row.to_org)
    .bind(row.kind)
    .bind(&row.grant_id)
    .bind(&row.envelope)
    .bind(row.created_at)
    .fetch_one(&mut *tx)
    .await?
    .get(0))
}

fn conflict(e: sqlx::Error, what: String) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(e),
    }
}

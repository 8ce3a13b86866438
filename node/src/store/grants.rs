//! Grants (home side) and the student's trail: each grant as this node keeps it, with its state,
//! what was sent under it and the status its recipient reported, and the trail of events.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{NodeStore, StoreError, Tx, conflict, sections_list, sections_text};

/// The grants of `grant_ids` that exist, by id.
async fn grants_by_id(
    on: &mut sqlx::AnyConnection,
    grant_ids: &[String],
) -> Result<std::collections::HashMap<String, GrantRow>, StoreError> {
    let select = format!("SELECT {GRANT_COLUMNS} FROM grants");
    Ok(super::rows_where_in(on, &select, "grant_id", grant_ids)
        .await?
        .iter()
        .map(grant_row)
        .map(|g| (g.grant_id.clone(), g))
        .collect())
}

/// Grants named in one statement (well inside SQLite's 32,766 variables and PostgreSQL's 65,535).
const GRANTS_PER_UPDATE: usize = 500;

/// Grants whose status is set in one statement (4 parameters each).
const STATUSES_PER_UPDATE: usize = 250;

/// What a recipient reported of a grant: its status (empty: kept as it is), when, and how many
/// more times it was viewed.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub grant_id: String,
    pub status: String,
    pub at: i64,
    pub views: u32,
}

/// Trail rows in one insert (nine values each).
const TRAIL_ROWS_PER_INSERT: usize = 200;

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
    /// When the recipient last fetched under this grant (a pull), if it did.
    pub fetched_at: Option<i64>,
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

pub(super) const GRANT_COLUMNS: &str = "grant_id, pseudonym, recipient_org, purpose, sections, not_before, not_after, live, \
     passport_version, signed, state, sent_version, sent_at, status, status_at, views, fetched_at";

pub(super) fn grant_row(r: &AnyRow) -> GrantRow {
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
        fetched_at: r.get(16),
    }
}

impl NodeStore {
    /// [`Tx::grants_by_id`], outside a transaction.
    pub async fn grants_by_id(
        &self,
        grant_ids: &[String],
    ) -> Result<std::collections::HashMap<String, GrantRow>, StoreError> {
        grants_by_id(&mut *self.pool.acquire().await?, grant_ids).await
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

impl Tx {
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

    /// [`Tx::set_grant_sent`] for many grants, one statement for each version among them (a
    /// class is mostly one).
    pub async fn set_grants_sent(&mut self, sent: &[(String, u32)]) -> Result<(), StoreError> {
        let mut by_version: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
        for (grant_id, version) in sent {
            by_version.entry(*version).or_default().push(grant_id);
        }
        for (version, ids) in by_version {
            for chunk in ids.chunks(GRANTS_PER_UPDATE) {
                let sql = format!(
                    "UPDATE grants SET sent_version = CASE WHEN COALESCE(sent_version, 0) > $1 THEN sent_version ELSE $1 END
                     WHERE grant_id IN ({})",
                    super::outbox::params(2, chunk.len())
                );
                let sql = super::for_db(&self.0, sql);
                let mut query = sqlx::query(&sql).bind(version as i64);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.execute(&mut *self.0).await?;
            }
        }
        Ok(())
    }

    pub async fn set_grant_sent(&mut self, grant_id: &str, version: u32) -> Result<(), StoreError> {
        self.set_grants_sent(&[(grant_id.to_string(), version)])
            .await
    }

    /// The recipient fetched under `grant_id` at `at`.
    pub async fn set_fetched(&mut self, grant_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE grants SET fetched_at = $1 WHERE grant_id = $2")
            .bind(at)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Sets what recipients reported of grants: each one's status (an empty status keeps the
    /// one it has), when, and how many more views; [`STATUSES_PER_UPDATE`] grants a statement.
    /// Each grant must come once.
    pub async fn set_grant_statuses(&mut self, updates: &[StatusUpdate]) -> Result<(), StoreError> {
        for chunk in updates.chunks(STATUSES_PER_UPDATE) {
            let values = super::outbox::value_rows(1, chunk.len(), 4);
            // VALUES names its columns column1, column2, … on SQLite and PostgreSQL alike.
            let sql = format!(
                "UPDATE grants SET status = CASE WHEN v.column2 = '' THEN grants.status ELSE v.column2 END,
                        status_at = v.column3, views = grants.views + v.column4
                 FROM (VALUES {}) AS v WHERE grants.grant_id = v.column1",
                values
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql);
            for u in chunk {
                query = query
                    .bind(&u.grant_id)
                    .bind(&u.status)
                    .bind(u.at)
                    .bind(u.views as i64);
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    /// Notes when each of `grant_ids` was first sent (a time already noted stays).
    pub async fn set_grants_sent_at(
        &mut self,
        grant_ids: &[String],
        at: i64,
    ) -> Result<(), StoreError> {
        for chunk in grant_ids.chunks(GRANTS_PER_UPDATE) {
            let sql = format!(
                "UPDATE grants SET sent_at = COALESCE(sent_at, $1) WHERE grant_id IN ({})",
                super::outbox::params(2, chunk.len())
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql).bind(at);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    /// Keeps the signed statuses of a run (one envelope, many packages) once, by envelope id.
    pub async fn keep_run_statuses(
        &mut self,
        envelope_id: &[u8],
        from_org: &str,
        signed: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO run_statuses (envelope_id, from_org, signed, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(envelope_id)
        .bind(from_org)
        .bind(signed)
        .bind(at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn add_trail(&mut self, t: &TrailRow) -> Result<(), StoreError> {
        self.add_trails(std::slice::from_ref(t)).await
    }

    /// Adds trail rows in order, many a statement.
    pub async fn add_trails(&mut self, rows: &[TrailRow]) -> Result<(), StoreError> {
        const COLUMNS: usize = 9;
        for chunk in rows.chunks(TRAIL_ROWS_PER_INSERT) {
            let values = super::outbox::value_rows(1, chunk.len(), COLUMNS);
            let sql = format!(
                "INSERT INTO trail (pseudonym, grant_id, org, event, at, detail, envelope_id, hub_receipt, evidence)
                 VALUES {}",
                values
            );
            let sql = super::for_db(&self.0, sql);
            let mut query = sqlx::query(&sql);
            for t in chunk {
                query = query
                    .bind(&t.pseudonym)
                    .bind(&t.grant_id)
                    .bind(&t.org)
                    .bind(&t.event)
                    .bind(t.at)
                    .bind(&t.detail)
                    .bind(&t.envelope_id)
                    .bind(&t.hub_receipt)
                    .bind(&t.evidence);
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    /// The grants of `grant_ids` that exist, by id.
    pub async fn grants_by_id(
        &mut self,
        grant_ids: &[String],
    ) -> Result<std::collections::HashMap<String, GrantRow>, StoreError> {
        grants_by_id(&mut self.0, grant_ids).await
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
}

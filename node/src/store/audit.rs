//! What staff did at this node (`staff_audit`), for its admin: who, in which role, what, about
//! whom, and when. Written in the same transaction as the action where the action is one (a
//! view, a status); read newest first.

use sqlx::Row;

use super::{NodeStore, StoreError, Tx};

/// One staff action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at: i64,
    pub who: String,
    pub role: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

const INSERT: &str = "INSERT INTO staff_audit (at, who, role, action, subject, detail)
     VALUES ($1, $2, $3, $4, $5, $6)";

impl NodeStore {
    /// Notes a staff action that is not part of a transaction of its own (a sign-in).
    pub async fn audit(&self, a: &AuditRow) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query(INSERT)
            .bind(a.at)
            .bind(&a.who)
            .bind(&a.role)
            .bind(&a.action)
            .bind(&a.subject)
            .bind(&a.detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The staff actions since `since` (unix seconds), newest first, at most `limit`.
    pub async fn audit_log(&self, since: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT at, who, role, action, subject, detail FROM staff_audit
             WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| AuditRow {
            at: r.get(0),
            who: r.get(1),
            role: r.get(2),
            action: r.get(3),
            subject: r.get(4),
            detail: r.get(5),
        })
        .collect())
    }
}

impl Tx {
    /// Notes a staff action with the change it is about.
    pub async fn audit(&mut self, a: &AuditRow) -> Result<(), StoreError> {
        sqlx::query(INSERT)
            .bind(a.at)
            .bind(&a.who)
            .bind(&a.role)
            .bind(&a.action)
            .bind(&a.subject)
            .bind(&a.detail)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

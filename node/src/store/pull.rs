//! Recipients pull (recipient side): the grants the student let this node fetch, from the home
//! school's notices, and whether this node asked and what the school answered.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{NodeStore, StoreError, Tx, sections_list, sections_text};

/// A grant that lets this node fetch a passport.
#[derive(Debug, Clone)]
pub struct Fetchable {
    pub grant_id: String,
    pub from_org: String,
    pub pseudonym: String,
    pub purpose: String,
    pub sections: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub card: Vec<u8>,
    pub grant_signed: Vec<u8>,
    pub noticed_at: i64,
    pub asked_at: Option<i64>,
    pub refused: Option<String>,
}

const COLUMNS: &str = "grant_id, from_org, pseudonym, purpose, sections, not_before, not_after, \
     card, grant_signed, noticed_at, asked_at, refused";

fn fetchable(r: &AnyRow) -> Fetchable {
    Fetchable {
        grant_id: r.get(0),
        from_org: r.get(1),
        pseudonym: r.get(2),
        purpose: r.get(3),
        sections: sections_list(&r.get::<String, _>(4)),
        not_before: r.get(5),
        not_after: r.get(6),
        card: r.get(7),
        grant_signed: r.get(8),
        noticed_at: r.get(9),
        asked_at: r.get(10),
        refused: r.get(11),
    }
}

impl NodeStore {
    /// Every grant this node may fetch under, newest notice first.
    pub async fn fetchables(&self) -> Result<Vec<Fetchable>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM fetchable ORDER BY noticed_at DESC, grant_id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(fetchable)
        .collect())
    }

    pub async fn fetchable(&self, grant_id: &str) -> Result<Option<Fetchable>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM fetchable WHERE grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(fetchable))
    }
}

impl Tx {
    /// Keeps a notice; one that came again (a resend) leaves what this node did with it.
    pub async fn keep_fetchable(&mut self, f: &Fetchable) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO fetchable ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL)
             ON CONFLICT (grant_id) DO NOTHING"
        ))
        .bind(&f.grant_id)
        .bind(&f.from_org)
        .bind(&f.pseudonym)
        .bind(&f.purpose)
        .bind(sections_text(&f.sections))
        .bind(f.not_before)
        .bind(f.not_after)
        .bind(&f.card)
        .bind(&f.grant_signed)
        .bind(f.noticed_at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    pub async fn fetchable(&mut self, grant_id: &str) -> Result<Option<Fetchable>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM fetchable WHERE grant_id = $1"
        ))
        .bind(grant_id)
        .fetch_optional(&mut *self.0)
        .await?
        .as_ref()
        .map(fetchable))
    }

    /// This node asked for the passport under `grant_id` at `at`.
    pub async fn pull_asked(&mut self, grant_id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE fetchable SET asked_at = $1, refused = NULL WHERE grant_id = $2")
            .bind(at)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// The home school said no to a pull under `grant_id`.
    pub async fn pull_refused(&mut self, grant_id: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE fetchable SET refused = $1 WHERE grant_id = $2")
            .bind(reason)
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Grants that ran out by `now`: nothing is left to fetch under them.
    pub async fn drop_fetchables_ended(&mut self, now: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM fetchable WHERE not_after <= $1")
            .bind(now)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// The grant ended (withdrawn, run out, erased): nothing is left to fetch under it.
    pub async fn drop_fetchable(&mut self, grant_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM fetchable WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

/// A student's pickup code as the home node keeps it.
#[derive(Debug, Clone)]
pub struct PickupRow {
    pub grant_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

impl NodeStore {
    /// The recipient's pulls with a code: (envelope id, school, asked at, refusal), newest first.
    pub async fn code_pulls(
        &self,
    ) -> Result<Vec<(Vec<u8>, String, i64, Option<String>)>, StoreError> {
        Ok(sqlx::query(
            "SELECT envelope_id, home_org, asked_at, refused FROM code_pulls ORDER BY asked_at DESC",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
    }
}

impl Tx {
    /// Keeps a pickup code; the same code twice is a conflict.
    pub async fn add_pickup_code(
        &mut self,
        digest: &[u8],
        grant_id: &str,
        signed: &[u8],
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pickup_codes (code_sha256, grant_id, signed, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest)
        .bind(grant_id)
        .bind(signed)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *self.0)
        .await
        .map_err(|e| super::conflict(e, "this pickup code".into()))?;
        Ok(())
    }

    pub async fn pickup_code(&mut self, digest: &[u8]) -> Result<Option<PickupRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT grant_id, expires_at, used_at FROM pickup_codes WHERE code_sha256 = $1",
        )
        .bind(digest)
        .fetch_optional(&mut *self.0)
        .await?
        .map(|r| PickupRow {
            grant_id: r.get(0),
            expires_at: r.get(1),
            used_at: r.get(2),
        }))
    }

    pub async fn use_pickup_code(
        &mut self,
        digest: &[u8],
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE pickup_codes SET used_at = $1, used_by = $2 WHERE code_sha256 = $3")
            .bind(at)
            .bind(by)
            .bind(digest)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Notes a wrong code from `org`, and how many it brought since `since` (this one too).
    pub async fn pickup_failed(
        &mut self,
        org: &str,
        at: i64,
        since: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query("DELETE FROM pickup_failures WHERE at < $1")
            .bind(since)
            .execute(&mut *self.0)
            .await?;
        sqlx::query("INSERT INTO pickup_failures (org, at) VALUES ($1, $2)")
            .bind(org)
            .bind(at)
            .execute(&mut *self.0)
            .await?;
        self.pickup_failures(org, since).await
    }

    pub async fn pickup_failures(&mut self, org: &str, since: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM pickup_failures WHERE org = $1 AND at >= $2")
                .bind(org)
                .bind(since)
                .fetch_one(&mut *self.0)
                .await?,
        )
    }

    /// Recipient side: this node asked `home_org` with a code, in envelope `envelope_id`.
    pub async fn code_pull_asked(
        &mut self,
        envelope_id: &[u8],
        home_org: &str,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO code_pulls (envelope_id, home_org, asked_at, asked_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(envelope_id)
        .bind(home_org)
        .bind(at)
        .bind(by)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    /// Recipient side: the school refused the pull in `envelope_id` (if it was one with a code).
    pub async fn code_pull_refused(
        &mut self,
        envelope_id: &[u8],
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE code_pulls SET refused = $1 WHERE envelope_id = $2")
            .bind(reason)
            .bind(envelope_id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

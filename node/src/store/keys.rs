//! More keys on a student's card (a guardian's, another device's, a new one after a loss), each
//! through a one-time link, and what a student under 16 signed that waits for a guardian.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{NodeStore, StoreError, Tx};

/// What a key link adds to a student's card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRole {
    /// A parent's key.
    Guardian,
    /// The student's key on another device of theirs.
    Device,
    /// A new student key after the student lost theirs: every student key is retired.
    Replace,
}

impl LinkRole {
    pub fn word(self) -> &'static str {
        match self {
            LinkRole::Guardian => "guardian",
            LinkRole::Device => "device",
            LinkRole::Replace => "replace",
        }
    }

    pub fn parse(word: &str) -> Option<LinkRole> {
        [LinkRole::Guardian, LinkRole::Device, LinkRole::Replace]
            .into_iter()
            .find(|r| r.word() == word)
    }
}

/// A link for one more key.
#[derive(Debug, Clone)]
pub struct KeyLinkRow {
    pub id: i64,
    pub role: LinkRole,
    /// The enrolment it belongs to, while the student has no card yet.
    pub invitation_id: Option<i64>,
    /// The student, once they have a card.
    pub pseudonym: Option<String>,
    /// The staff member who made it, or "student".
    pub made_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The public key the browser made, once handed in.
    pub key: Option<Vec<u8>>,
    pub used_at: Option<i64>,
    /// The link's token, until a key is handed in.
    pub link_token: Option<String>,
}

/// What waits for a guardian's co-signature.
#[derive(Debug, Clone)]
pub struct HeldRow {
    pub id: i64,
    pub pseudonym: String,
    /// "passport" or "consent".
    pub kind: String,
    /// The encoded `Signed`, with the student's signature.
    pub signed: Vec<u8>,
    /// For a passport: the encoded `StorePassportRequest` with its sections.
    pub sections: Option<Vec<u8>>,
    pub held_at: i64,
    pub declined_at: Option<i64>,
}

const LINK_COLUMNS: &str = "id, role, invitation_id, pseudonym, made_by, created_at, expires_at, \
     key, used_at, link_token";

fn link(r: &AnyRow) -> KeyLinkRow {
    KeyLinkRow {
        id: r.get(0),
        role: LinkRole::parse(&r.get::<String, _>(1)).unwrap_or(LinkRole::Device),
        invitation_id: r.get(2),
        pseudonym: r.get(3),
        made_by: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
        key: r.get(7),
        used_at: r.get(8),
        link_token: r.get(9),
    }
}

const HELD_COLUMNS: &str = "id, pseudonym, kind, signed, sections, held_at, declined_at";

fn held(r: &AnyRow) -> HeldRow {
    HeldRow {
        id: r.get(0),
        pseudonym: r.get(1),
        kind: r.get(2),
        signed: r.get(3),
        sections: r.get(4),
        held_at: r.get(5),
        declined_at: r.get(6),
    }
}

impl NodeStore {
    /// Keeps a new key link under the SHA-256 of its token; returns its id.
    pub async fn insert_key_link(
        &self,
        token_hash: &[u8],
        l: &KeyLinkRow,
    ) -> Result<i64, StoreError> {
        let _writer = self.writer.lock().await;
        Ok(sqlx::query(
            "INSERT INTO key_links (token_hash, link_token, role, invitation_id, pseudonym, made_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(token_hash)
        .bind(&l.link_token)
        .bind(l.role.word())
        .bind(l.invitation_id)
        .bind(&l.pseudonym)
        .bind(&l.made_by)
        .bind(l.created_at)
        .bind(l.expires_at)
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }

    pub async fn key_link_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<KeyLinkRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM key_links WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(link))
    }

    pub async fn key_link(&self, id: i64) -> Result<Option<KeyLinkRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM key_links WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(link))
    }

    /// The key links of an enrolment, oldest first.
    pub async fn key_links_of_invitation(
        &self,
        invitation_id: i64,
    ) -> Result<Vec<KeyLinkRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM key_links WHERE invitation_id = $1 ORDER BY id"
        ))
        .bind(invitation_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(link)
        .collect())
    }

    /// The key links of an enrolled student, newest first.
    pub async fn key_links_of_student(
        &self,
        pseudonym: &str,
    ) -> Result<Vec<KeyLinkRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM key_links WHERE pseudonym = $1 ORDER BY id DESC"
        ))
        .bind(pseudonym)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(link)
        .collect())
    }

    /// Hands in the key a browser made for a link, once: only while the link has none, is
    /// unused and has not run out. Returns whether it was taken.
    pub async fn set_link_key(&self, id: i64, key: &[u8], now: i64) -> Result<bool, StoreError> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE key_links SET key = $1, key_at = $2, link_token = NULL
             WHERE id = $3 AND key IS NULL AND used_at IS NULL AND expires_at > $2",
        )
        .bind(key)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What waits for a guardian for this student, oldest first.
    pub async fn held_for_guardian(&self, pseudonym: &str) -> Result<Vec<HeldRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {HELD_COLUMNS} FROM held_for_guardian WHERE pseudonym = $1 ORDER BY id"
        ))
        .bind(pseudonym)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(held)
        .collect())
    }
}

impl Tx {
    pub async fn key_link(&mut self, id: i64) -> Result<Option<KeyLinkRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM key_links WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?
        .as_ref()
        .map(link))
    }

    /// The guardian links of an enrolment whose key was handed in and not yet used.
    pub async fn guardian_keys_of_invitation(
        &mut self,
        invitation_id: i64,
        now: i64,
    ) -> Result<Vec<KeyLinkRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM key_links
             WHERE invitation_id = $1 AND role = 'guardian' AND key IS NOT NULL
               AND used_at IS NULL AND expires_at > $2 ORDER BY id"
        ))
        .bind(invitation_id)
        .bind(now)
        .fetch_all(&mut *self.0)
        .await?
        .iter()
        .map(link)
        .collect())
    }

    /// Marks a link used, for the student whose card now names its key.
    pub async fn use_key_link(
        &mut self,
        id: i64,
        pseudonym: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE key_links SET used_at = $1, pseudonym = $2 WHERE id = $3")
            .bind(now)
            .bind(pseudonym)
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    /// Holds what a student signed for a guardian. A new passport version takes the place of
    /// one still waiting, and of a declined one: only the newest is for the guardian to sign.
    pub async fn hold_for_guardian(
        &mut self,
        pseudonym: &str,
        kind: &str,
        signed: &[u8],
        sections: Option<&[u8]>,
        now: i64,
    ) -> Result<i64, StoreError> {
        if kind == "passport" {
            sqlx::query("DELETE FROM held_for_guardian WHERE pseudonym = $1 AND kind = 'passport'")
                .bind(pseudonym)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(sqlx::query(
            "INSERT INTO held_for_guardian (pseudonym, kind, signed, sections, held_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(pseudonym)
        .bind(kind)
        .bind(signed)
        .bind(sections)
        .bind(now)
        .fetch_one(&mut *self.0)
        .await?
        .get(0))
    }

    /// The held item `id` of `pseudonym`, read under the writer lock.
    pub async fn held(&mut self, id: i64, pseudonym: &str) -> Result<Option<HeldRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {HELD_COLUMNS} FROM held_for_guardian WHERE id = $1 AND pseudonym = $2"
        ))
        .bind(id)
        .bind(pseudonym)
        .fetch_optional(&mut *self.0)
        .await?
        .as_ref()
        .map(held))
    }

    pub async fn drop_held(&mut self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM held_for_guardian WHERE id = $1")
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    pub async fn decline_held(&mut self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE held_for_guardian SET declined_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }
}

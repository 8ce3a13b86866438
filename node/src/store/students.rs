//! Students and their passports (home side): the student cards this node issued, and the
//! passport versions with their sections.

use sqlx::Row;

use super::{NodeStore, StoreError, Tx, conflict};

#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: u32,
    pub question_set: String,
    pub manifest: Vec<u8>,
    pub disclosures: Vec<Vec<u8>>,
}

/// The cards of the students of `pseudonyms` that are registered here, by pseudonym.
pub(super) async fn cards_by_pseudonym(
    on: &mut sqlx::AnyConnection,
    pseudonyms: &[String],
) -> Result<std::collections::HashMap<String, Vec<u8>>, StoreError> {
    let select = "SELECT pseudonym, card FROM students";
    Ok(super::rows_where_in(on, select, "pseudonym", pseudonyms)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

impl NodeStore {
    /// The cards of the students of `pseudonyms`, by pseudonym.
    pub async fn cards_by_pseudonym(
        &self,
        pseudonyms: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, StoreError> {
        cards_by_pseudonym(&mut *self.pool.acquire().await?, pseudonyms).await
    }

    /// Every student card this node issued, by pseudonym.
    pub async fn student_cards(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(
            sqlx::query("SELECT pseudonym, card FROM students ORDER BY pseudonym")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    pub async fn student_card(&self, pseudonym: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT card FROM students WHERE pseudonym = $1")
                .bind(pseudonym)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub async fn latest_version(
        &self,
        pseudonym: &str,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.version_where(pseudonym, None).await
    }

    pub async fn version(
        &self,
        pseudonym: &str,
        version: u32,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.version_where(pseudonym, Some(version)).await
    }

    async fn version_where(
        &self,
        pseudonym: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let row = match version {
            Some(v) => {
                sqlx::query("SELECT version, question_set, manifest FROM passport_versions WHERE pseudonym = $1 AND version = $2")
                    .bind(pseudonym)
                    .bind(v as i64)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(
                    "SELECT version, question_set, manifest FROM passport_versions WHERE pseudonym = $1 ORDER BY version DESC LIMIT 1",
                )
                .bind(pseudonym)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.get(0);
        let disclosures = sqlx::query(
            "SELECT disclosure FROM passport_sections WHERE pseudonym = $1 AND version = $2 ORDER BY section_id",
        )
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
}

/// A card this node issued, as its log records it.
#[derive(Debug, Clone)]
pub struct LoggedCard {
    pub card_sha256: Vec<u8>,
    pub card_index: Vec<u8>,
    pub made_at: i64,
    /// The hub's log index, once recorded there.
    pub log_index: Option<u64>,
}

fn logged_card(r: &sqlx::any::AnyRow) -> LoggedCard {
    LoggedCard {
        card_sha256: r.get(0),
        card_index: r.get(1),
        made_at: r.get(2),
        log_index: r.get::<Option<i64>, _>(3).map(|i| i as u64),
    }
}

impl NodeStore {
    /// Cards not yet recorded at the hub, oldest first, at most `limit`.
    pub async fn cards_to_log(&self, limit: i64) -> Result<Vec<LoggedCard>, StoreError> {
        Ok(sqlx::query(
            "SELECT card_sha256, card_index, made_at, log_index FROM card_log WHERE log_index IS NULL ORDER BY made_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(logged_card)
        .collect())
    }

    /// Every card this node issued to `pseudonym`, oldest first.
    pub async fn cards_of(&self, pseudonym: &str) -> Result<Vec<LoggedCard>, StoreError> {
        Ok(sqlx::query(
            "SELECT card_sha256, card_index, made_at, log_index FROM card_log WHERE pseudonym = $1 ORDER BY made_at, log_index",
        )
        .bind(pseudonym)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(logged_card)
        .collect())
    }

    /// The hub recorded the card `card_sha256` at `log_index`.
    pub async fn card_logged(&self, card_sha256: &[u8], log_index: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE card_log SET log_index = $1 WHERE card_sha256 = $2")
            .bind(log_index as i64)
            .bind(card_sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Tx {
    pub async fn insert_student(
        &mut self,
        pseudonym: &str,
        card: &[u8],
        staff: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO students (pseudonym, card, registered_by, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(pseudonym)
        .bind(card)
        .bind(staff)
        .bind(at)
        .execute(&mut *self.0)
        .await
        .map_err(|e| conflict(e, format!("student {pseudonym}")))?;
        self.card_made(pseudonym, card, at).await
    }

    /// Notes a card this node issued, to be recorded in the hub's log by the log loop.
    async fn card_made(&mut self, pseudonym: &str, card: &[u8], at: i64) -> Result<(), StoreError> {
        use sha2::Digest;
        sqlx::query(
            "INSERT INTO card_log (card_sha256, card_index, pseudonym, made_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (card_sha256) DO NOTHING",
        )
        .bind(sha2::Sha256::digest(card).to_vec())
        .bind(overstap_proto::passport::card_index(pseudonym).to_vec())
        .bind(pseudonym)
        .bind(at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    /// Puts a re-issued card in place of the student's current one.
    /// The student's card, read under the writer lock.
    pub async fn student_card(&mut self, pseudonym: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT card FROM students WHERE pseudonym = $1")
                .bind(pseudonym)
                .fetch_optional(&mut *self.0)
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub async fn replace_card(
        &mut self,
        pseudonym: &str,
        card: &[u8],
        at: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE students SET card = $1 WHERE pseudonym = $2")
            .bind(card)
            .bind(pseudonym)
            .execute(&mut *self.0)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        self.card_made(pseudonym, card, at).await
    }

    pub async fn insert_version(
        &mut self,
        pseudonym: &str,
        version: u32,
        question_set: &str,
        manifest: &[u8],
        sections: &[(String, Vec<u8>)],
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO passport_versions (pseudonym, version, question_set, manifest, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(pseudonym)
        .bind(version as i64)
        .bind(question_set)
        .bind(manifest)
        .bind(at)
        .execute(&mut *self.0)
        .await
        .map_err(|e| conflict(e, format!("passport version {version} of {pseudonym}")))?;
        for (id, disclosure) in sections {
            sqlx::query("INSERT INTO passport_sections (pseudonym, version, section_id, disclosure) VALUES ($1, $2, $3, $4)")
                .bind(pseudonym)
                .bind(version as i64)
                .bind(id)
                .bind(disclosure)
                .execute(&mut *self.0)
                .await?;
        }
        Ok(())
    }
}

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

impl NodeStore {
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

    pub async fn replace_card(&mut self, pseudonym: &str, card: &[u8]) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE students SET card = $1 WHERE pseudonym = $2")
            .bind(card)
            .bind(pseudonym)
            .execute(&mut *self.0)
            .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Database(sqlx::Error::RowNotFound));
        }
        Ok(())
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

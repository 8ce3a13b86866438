//! The web app's own rows (home side): staff accounts, signed-in sessions, the mentors'
//! invitations of students, and who each student is at the school (name, class, mentor). None
//! of it ever leaves the node.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{NodeStore, StoreError, Tx, conflict};

/// A staff account: the argon2id hash of its password and its role.
#[derive(Debug, Clone)]
pub struct StaffRow {
    pub username: String,
    /// The name students and parents read.
    pub display_name: String,
    pub password_hash: String,
    pub role: String,
}

/// A signed-in browser's session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub who: String,
    pub role: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// A mentor's invitation of a student.
#[derive(Debug, Clone)]
pub struct InvitationRow {
    pub id: i64,
    pub name: String,
    pub class_name: String,
    pub birth_month: String,
    pub mentor: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The public key the student's browser made, once it has handed it in.
    pub student_key: Option<Vec<u8>>,
    /// The student's pseudonym, once the card is issued (the invitation is used then).
    pub pseudonym: Option<String>,
    pub used_at: Option<i64>,
    /// The link's token, until a key is handed in.
    pub link_token: Option<String>,
}

/// A student of this school as its people know them.
#[derive(Debug, Clone)]
pub struct PersonRow {
    pub pseudonym: String,
    pub name: String,
    pub class_name: String,
    pub mentor: String,
}

const INVITATION_COLUMNS: &str = "id, name, class_name, birth_month, mentor, created_at, \
     expires_at, student_key, pseudonym, used_at, link_token";

fn invitation(r: &AnyRow) -> InvitationRow {
    InvitationRow {
        id: r.get(0),
        name: r.get(1),
        class_name: r.get(2),
        birth_month: r.get(3),
        mentor: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
        student_key: r.get(7),
        pseudonym: r.get(8),
        used_at: r.get(9),
        link_token: r.get(10),
    }
}

impl NodeStore {
    /// Adds a staff account; an existing username is a conflict.
    pub async fn add_staff(&self, s: &StaffRow, now: i64) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO staff (username, display_name, password_hash, role, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.username)
        .bind(&s.display_name)
        .bind(&s.password_hash)
        .bind(&s.role)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("a staff account {} exists already", s.username)))?;
        Ok(())
    }

    pub async fn staff(&self, username: &str) -> Result<Option<StaffRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT username, display_name, password_hash, role FROM staff WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| StaffRow {
            username: r.get(0),
            display_name: r.get(1),
            password_hash: r.get(2),
            role: r.get(3),
        }))
    }

    /// Keeps a new session under the SHA-256 of its id.
    pub async fn insert_session(
        &self,
        id_hash: &[u8],
        s: &SessionRow,
        now: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        // Sessions that ended are dropped on the way, so the table holds only live ones.
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, who, role, csrf, created_at, expires_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $5)",
        )
        .bind(id_hash)
        .bind(&s.who)
        .bind(&s.role)
        .bind(&s.csrf)
        .bind(now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live session with this id hash, if any: not past its end, and used within the last
    /// `idle` seconds. Using it keeps it alive (noted at most once a minute, so reading a page
    /// seldom writes).
    pub async fn session(
        &self,
        id_hash: &[u8],
        now: i64,
        idle: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let Some(r) = sqlx::query(
            "SELECT who, role, csrf, expires_at, last_seen FROM web_sessions
             WHERE id_hash = $1 AND expires_at > $2 AND last_seen > $3",
        )
        .bind(id_hash)
        .bind(now)
        .bind(now - idle)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let last_seen: i64 = r.get(4);
        if now - last_seen >= 60 {
            let _writer = self.writer.lock().await;
            sqlx::query("UPDATE web_sessions SET last_seen = $1 WHERE id_hash = $2")
                .bind(now)
                .bind(id_hash)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(SessionRow {
            who: r.get(0),
            role: r.get(1),
            csrf: r.get(2),
            expires_at: r.get(3),
        }))
    }

    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps a new invitation under the SHA-256 of its link's token; returns its id.
    pub async fn insert_invitation(
        &self,
        token_hash: &[u8],
        i: &InvitationRow,
    ) -> Result<i64, StoreError> {
        let _writer = self.writer.lock().await;
        Ok(sqlx::query(
            "INSERT INTO invitations (token_hash, link_token, name, class_name, birth_month, mentor, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(token_hash)
        .bind(&i.link_token)
        .bind(&i.name)
        .bind(&i.class_name)
        .bind(&i.birth_month)
        .bind(&i.mentor)
        .bind(i.created_at)
        .bind(i.expires_at)
        .fetch_one(&self.pool)
        .await?
        .get(0))
    }

    pub async fn invitation_by_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<InvitationRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(invitation))
    }

    pub async fn invitation(&self, id: i64) -> Result<Option<InvitationRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(invitation))
    }

    /// A mentor's invitations, newest first.
    pub async fn invitations_of(&self, mentor: &str) -> Result<Vec<InvitationRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE mentor = $1 ORDER BY id DESC"
        ))
        .bind(mentor)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(invitation)
        .collect())
    }

    /// Hands in the key a student's browser made, once: only while the invitation has none,
    /// is unused and has not run out. Returns whether it was taken.
    pub async fn set_invitation_key(
        &self,
        id: i64,
        key: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        let _writer = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE invitations SET student_key = $1, key_at = $2, link_token = NULL
             WHERE id = $3 AND student_key IS NULL AND used_at IS NULL AND expires_at > $2",
        )
        .bind(key)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A mentor's students, by class and name.
    pub async fn people_of(&self, mentor: &str) -> Result<Vec<PersonRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT pseudonym, name, class_name, mentor FROM people WHERE mentor = $1 ORDER BY class_name, name",
        )
        .bind(mentor)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| PersonRow {
            pseudonym: r.get(0),
            name: r.get(1),
            class_name: r.get(2),
            mentor: r.get(3),
        })
        .collect())
    }

    /// Every student of this school, by class and name.
    pub async fn all_people(&self) -> Result<Vec<PersonRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT pseudonym, name, class_name, mentor FROM people ORDER BY class_name, name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| PersonRow {
            pseudonym: r.get(0),
            name: r.get(1),
            class_name: r.get(2),
            mentor: r.get(3),
        })
        .collect())
    }

    /// Who the student with `pseudonym` is at this school.
    pub async fn person(&self, pseudonym: &str) -> Result<Option<PersonRow>, StoreError> {
        Ok(sqlx::query(
            "SELECT pseudonym, name, class_name, mentor FROM people WHERE pseudonym = $1",
        )
        .bind(pseudonym)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| PersonRow {
            pseudonym: r.get(0),
            name: r.get(1),
            class_name: r.get(2),
            mentor: r.get(3),
        }))
    }
}

impl NodeStore {
    /// Keeps a student's draft answers (JSON), replacing the one before.
    pub async fn save_draft(
        &self,
        pseudonym: &str,
        question_set: &str,
        answers: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO drafts (pseudonym, question_set, answers, saved_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pseudonym) DO UPDATE SET question_set = excluded.question_set,
                 answers = excluded.answers, saved_at = excluded.saved_at",
        )
        .bind(pseudonym)
        .bind(question_set)
        .bind(answers)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A student's draft: its question set, the answers (JSON) and when it was saved.
    pub async fn draft(
        &self,
        pseudonym: &str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        Ok(
            sqlx::query("SELECT question_set, answers, saved_at FROM drafts WHERE pseudonym = $1")
                .bind(pseudonym)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| (r.get(0), r.get(1), r.get(2))),
        )
    }
}

impl Tx {
    /// The invitation, read under the writer lock.
    pub async fn invitation(&mut self, id: i64) -> Result<Option<InvitationRow>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?
        .as_ref()
        .map(invitation))
    }

    /// Marks an invitation used by the student whose card was issued, and keeps who they are.
    pub async fn use_invitation(
        &mut self,
        i: &InvitationRow,
        pseudonym: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE invitations SET pseudonym = $1, used_at = $2 WHERE id = $3")
            .bind(pseudonym)
            .bind(now)
            .bind(i.id)
            .execute(&mut *self.0)
            .await?;
        sqlx::query(
            "INSERT INTO people (pseudonym, name, class_name, mentor, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(pseudonym)
        .bind(&i.name)
        .bind(&i.class_name)
        .bind(&i.mentor)
        .bind(now)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

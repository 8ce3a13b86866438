//! The people at a home node: staff accounts of the web app (a role each, the password kept as
//! an argon2id hash only), and a student's draft answers while they fill in the passport. Names
//! and classes come with enrolment (`students`).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use std::collections::BTreeMap;

use overstap_proto::passport::{PassportVersion, build_version};
use overstap_proto::pb::{Answer, Section};
use overstap_proto::questions::{SMILEYS, question_set};
use serde::{Deserialize, Serialize};

use crate::store::StaffRow;

use super::{NodeCore, NodeError};

/// The roles a staff account can have. At a school: a mentor enrols and follows their own
/// students, a decaan follows every handover of the school. At a college or municipality: an
/// intaker (or doorstroomcoach) and a consultant (werkconsulent) read the passports that
/// arrived and set their status. An admin reads the audit of what staff did.
pub const ROLES: &[&str] = &["mentor", "decaan", "intaker", "consultant", "admin"];

/// The roles that read received passports.
pub const READERS: &[&str] = &["intaker", "consultant"];
/// The roles that follow handovers from the school.
pub const FOLLOWERS: &[&str] = &["mentor", "decaan"];

/// The shortest password a staff account may have.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// The argon2id hash of `password`, as a PHC string with a salt of its own.
pub fn hash_password(password: &str) -> Result<String, NodeError> {
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| NodeError::Invalid(format!("the password cannot be hashed: {e}")))
}

/// Whether `password` is the one `hash` was made from.
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The longest answer a draft takes (a few paragraphs).
pub const MAX_ANSWER_CHARS: usize = 2_000;

/// A student's answers while they fill in the passport: per section, per question.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub question_set: String,
    pub answers: BTreeMap<String, BTreeMap<String, DraftAnswer>>,
    /// When it was last saved (0 for a draft never saved).
    #[serde(default)]
    pub saved_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DraftAnswer {
    pub answer: String,
    /// `blij`, `neutraal`, `verdrietig`, or empty.
    #[serde(default)]
    pub smiley: String,
}

impl NodeCore {
    /// Saves a student's draft after checking it against its question set: every section and
    /// question exists, a smiley only where the question has one, no answer too long.
    pub async fn save_draft(&self, pseudonym: &str, draft: &Draft) -> Result<i64, NodeError> {
        let set =
            question_set(&draft.question_set).map_err(|e| NodeError::Invalid(e.to_string()))?;
        for (section_id, answers) in &draft.answers {
            let Some(section) = set.sections.iter().find(|s| &s.id == section_id) else {
                return Err(NodeError::Invalid(format!(
                    "{} has no section {section_id:?}",
                    set.id
                )));
            };
            for (question_id, a) in answers {
                let Some(q) = section.questions.iter().find(|q| &q.id == question_id) else {
                    return Err(NodeError::Invalid(format!(
                        "section {section_id} has no question {question_id:?}"
                    )));
                };
                if a.answer.chars().count() > MAX_ANSWER_CHARS {
                    return Err(NodeError::Invalid(format!(
                        "the answer to {question_id} is longer than {MAX_ANSWER_CHARS} characters"
                    )));
                }
                let known = SMILEYS.iter().any(|(s, _)| *s == a.smiley);
                if !a.smiley.is_empty() && (!q.smiley || !known) {
                    return Err(NodeError::Invalid(format!(
                        "question {question_id} takes no smiley {:?}",
                        a.smiley
                    )));
                }
            }
        }
        let json = serde_json::to_string(draft)
            .map_err(|e| NodeError::Invalid(format!("the draft cannot be kept: {e}")))?;
        let now = self.now();
        self.store
            .save_draft(pseudonym, &draft.question_set, &json, now)
            .await?;
        Ok(now)
    }

    /// A student's saved draft, if any.
    pub async fn draft(&self, pseudonym: &str) -> Result<Option<Draft>, NodeError> {
        match self.store.draft(pseudonym).await? {
            Some((_, json, saved_at)) => {
                let mut d: Draft = serde_json::from_str(&json)
                    .map_err(|e| NodeError::Corrupt(format!("a stored draft: {e}")))?;
                d.saved_at = saved_at;
                Ok(Some(d))
            }
            None => Ok(None),
        }
    }

    /// The next passport version made from a student's draft, unsigned: the sections with an
    /// answer or a smiley, in the question set's order, each question as the student saw it.
    pub async fn prepare_version(
        &self,
        pseudonym: &str,
        draft: &Draft,
    ) -> Result<PassportVersion, NodeError> {
        let set =
            question_set(&draft.question_set).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let mut sections = Vec::new();
        for s in &set.sections {
            let Some(given) = draft.answers.get(&s.id) else {
                continue;
            };
            let answers: Vec<Answer> = s
                .questions
                .iter()
                .filter_map(|q| {
                    let a = given.get(&q.id)?;
                    (!a.answer.trim().is_empty() || !a.smiley.is_empty()).then(|| Answer {
                        question_id: q.id.clone(),
                        question: q.text.clone(),
                        answer: a.answer.trim().to_string(),
                        smiley: a.smiley.clone(),
                    })
                })
                .collect();
            if !answers.is_empty() {
                sections.push(Section {
                    section_id: s.id.clone(),
                    title: s.title.clone(),
                    answers,
                });
            }
        }
        if sections.is_empty() {
            return Err(NodeError::Precondition(
                "nothing is filled in yet: there is nothing to sign".into(),
            ));
        }
        let next = self
            .store
            .latest_version(pseudonym)
            .await?
            .map(|v| v.version + 1)
            .unwrap_or(1);
        Ok(build_version(
            pseudonym,
            next,
            &set.id,
            self.now(),
            &sections,
        )?)
    }

    /// Adds a staff account for the web app.
    pub async fn add_staff(
        &self,
        username: &str,
        display_name: &str,
        password: &str,
        role: &str,
    ) -> Result<(), NodeError> {
        let display_name = match display_name.trim() {
            "" => username,
            name if name.chars().count() <= 100 => name,
            _ => {
                return Err(NodeError::Invalid(
                    "the display name is longer than 100 characters".into(),
                ));
            }
        };
        let ok_name = !username.is_empty()
            && username.len() <= 64
            && username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
        if !ok_name {
            return Err(NodeError::Invalid(format!(
                "user name {username:?}: use 1 to 64 letters, digits and . - _ @"
            )));
        }
        if !ROLES.contains(&role) {
            return Err(NodeError::Invalid(format!(
                "role {role:?}: expected one of {}",
                ROLES.join(", ")
            )));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(NodeError::Invalid(format!(
                "the password has {} characters; use at least {MIN_PASSWORD_CHARS}",
                password.chars().count()
            )));
        }
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| NodeError::Invalid(format!("hashing the password failed: {e}")))??;
        self.store
            .add_staff(
                &StaffRow {
                    username: username.to_string(),
                    display_name: display_name.to_string(),
                    password_hash: hash,
                    role: role.to_string(),
                },
                self.now(),
            )
            .await?;
        tracing::info!(user = %username, %role, "staff account added");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_hash_is_argon2id_and_checks_only_its_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches(&h, "correct horse"));
        assert!(!password_matches(&h, "correct hors"));
        assert!(!password_matches("not a hash", "correct horse"));
    }
}

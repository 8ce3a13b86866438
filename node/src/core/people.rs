//! The people at a home node: staff accounts of the web app (a role each, the password kept as
//! an argon2id hash only). Students' names and classes come with their enrolment (`students`).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::store::StaffRow;

use super::{NodeCore, NodeError};

/// The roles a staff account can have: a mentor enrols and follows their own students, a
/// decaan follows every handover of the school, an admin manages accounts.
pub const ROLES: &[&str] = &["mentor", "decaan", "admin"];

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

impl NodeCore {
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

//! Home side, one-time links: a mentor's invitation of a student (and, under 16, the link for a
//! parent that comes with it), and a link for one more key on a card. Only the SHA-256 of a
//! link's token is looked up; the token itself is kept until a key is handed in, so the page of
//! the one who made it can show it again.

use base64::Engine;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{InvitationRow, KeyLinkRow, LinkRole};

use super::{NodeCore, NodeError};

/// How long an invitation link works (and a parent's or the mentor's key link).
pub const INVITATION_HOURS: i64 = 72;
/// A link a student makes on one device for the other device in their hand.
pub const DEVICE_LINK_SECS: i64 = 3600;

/// 32 random bytes, base64url: a session id, a CSRF token or a link's token.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What a link is looked up by.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new invitation: its id, the student's link token and, under 16, the parent's.
#[derive(Debug, Clone)]
pub struct Invited {
    pub id: i64,
    pub student_token: String,
    pub parent_token: Option<String>,
    pub expires_at: i64,
}

impl NodeCore {
    /// Invites a student for `mentor` (a staff account): a one-time link, and under 16 a link
    /// for a parent with it, both valid for [`INVITATION_HOURS`].
    pub async fn invite_student(
        &self,
        name: &str,
        class_name: &str,
        birth_month: &str,
        mentor: &str,
    ) -> Result<Invited, NodeError> {
        let (name, class_name, birth_month) = (name.trim(), class_name.trim(), birth_month.trim());
        if name.is_empty() || name.chars().count() > 100 {
            return Err(NodeError::Invalid(
                "give the student's name, at most 100 characters".into(),
            ));
        }
        if class_name.is_empty() || class_name.chars().count() > 20 {
            return Err(NodeError::Invalid(
                "give the student's class, at most 20 characters".into(),
            ));
        }
        let now = self.now();
        let young = overstap_proto::passport::under_16(birth_month, now)?;
        if self.store.staff(mentor).await?.is_none() {
            return Err(NodeError::Invalid(format!(
                "{mentor:?} has no staff account at this school; add it with `overstap staff add`"
            )));
        }
        let token = random_token();
        let row = InvitationRow {
            id: 0,
            name: name.to_string(),
            class_name: class_name.to_string(),
            birth_month: birth_month.to_string(),
            mentor: mentor.to_string(),
            created_at: now,
            expires_at: now + INVITATION_HOURS * 3600,
            student_key: None,
            pseudonym: None,
            used_at: None,
            link_token: Some(token.clone()),
        };
        let id = self
            .store
            .insert_invitation(&token_hash(&token), &row)
            .await?;
        // Under 16 the card needs a parent's key too: their link is made with the student's.
        let parent_token = if young {
            Some(
                self.new_key_link(LinkRole::Guardian, Some(id), None, mentor)
                    .await?
                    .1,
            )
        } else {
            None
        };
        tracing::info!(%mentor, invitation = id, "a student was invited");
        Ok(Invited {
            id,
            student_token: token,
            parent_token,
            expires_at: row.expires_at,
        })
    }

    /// Makes a link for one more key; returns its id and token. A link a student makes is
    /// for the device in their hand and works for [`DEVICE_LINK_SECS`]; others for
    /// [`INVITATION_HOURS`].
    pub async fn new_key_link(
        &self,
        role: LinkRole,
        invitation_id: Option<i64>,
        pseudonym: Option<&str>,
        made_by: &str,
    ) -> Result<(i64, String), NodeError> {
        let token = random_token();
        let now = self.now();
        let valid = if made_by == "student" {
            DEVICE_LINK_SECS
        } else {
            INVITATION_HOURS * 3600
        };
        let row = KeyLinkRow {
            id: 0,
            role,
            invitation_id,
            pseudonym: pseudonym.map(str::to_string),
            made_by: made_by.to_string(),
            created_at: now,
            expires_at: now + valid,
            key: None,
            used_at: None,
            link_token: Some(token.clone()),
        };
        let id = self
            .store
            .insert_key_link(&token_hash(&token), &row)
            .await?;
        tracing::info!(role = role.word(), link = id, "a key link was made");
        Ok((id, token))
    }
}

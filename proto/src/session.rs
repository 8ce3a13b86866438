//! Dashboard sessions: the authority vouches, with a signed token, that a coordinator may see
//! the region's statistics in a browser until a given time. The hub accepts a token only while
//! it has not expired, the directory does not list it as ended, and the directory still lists
//! its holder as a coordinator.

use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;

use crate::directory::{VerifiedDirectory, kind_name};
use crate::pb::{DashboardToken, EndedSessions, MemberKind, Signed};
use crate::sign::{Domain, open_signed, sign_message};
use crate::{ProtocolError, UnixTime, format_time};

/// No session lasts longer than a week.
pub const MAX_HOURS: u32 = 168;

/// Longer text is refused before it is decoded.
const MAX_TOKEN_LEN: usize = 1_024;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Reads a token's fields after checking the authority's signature (not its time): which
/// session `authority end-sessions --token` ends.
pub fn read_token(text: &str, authority: &VerifyingKey) -> Result<DashboardToken, ProtocolError> {
    let text = text.trim();
    if text.len() > MAX_TOKEN_LEN {
        return Err(ProtocolError::malformed(
            "dashboard token",
            format!("{} characters is longer than any token", text.len()),
        ));
    }
    let bytes = b64()
        .decode(text)
        .map_err(|e| ProtocolError::malformed("dashboard token", e))?;
    let signed = Signed::decode(bytes.as_slice())
        .map_err(|e| ProtocolError::malformed("dashboard token", e))?;
    open_signed(Domain::DashboardToken, &signed, authority)
}

/// A token for `org_id`, valid from `now` for `hours`, as URL-safe text.
pub fn issue_token(
    authority: &SigningKey,
    org_id: &str,
    now: UnixTime,
    hours: u32,
    nonce: [u8; 16],
) -> Result<String, ProtocolError> {
    if hours == 0 || hours > MAX_HOURS {
        return Err(ProtocolError::malformed(
            "dashboard token",
            format!("a session lasts 1 to {MAX_HOURS} hours, not {hours}"),
        ));
    }
    let token = DashboardToken {
        org_id: org_id.to_string(),
        issued_at: now,
        expires_at: now + i64::from(hours) * 3_600,
        nonce: nonce.to_vec(),
    };
    Ok(b64().encode(sign_message(Domain::DashboardToken, &token, &[authority]).encode_to_vec()))
}

/// Whether `e` ends the session `token`.
pub fn ends(e: &EndedSessions, token: &DashboardToken) -> bool {
    e.org_id == token.org_id
        && ((!e.nonce.is_empty() && e.nonce == token.nonce)
            || (e.issued_up_to > 0 && token.issued_at <= e.issued_up_to))
}

/// Checks a token: the authority's signature, its time, that the authority did not end it,
/// and that the directory lists its holder as a coordinator now.
pub fn verify_token(
    text: &str,
    authority: &VerifyingKey,
    directory: &VerifiedDirectory,
    now: UnixTime,
) -> Result<DashboardToken, ProtocolError> {
    let token = read_token(text, authority)?;
    if now >= token.expires_at {
        return Err(ProtocolError::malformed(
            "dashboard token",
            format!("the session ended at {}", format_time(token.expires_at)),
        ));
    }
    if token.issued_at > now + crate::passport::MAX_CLOCK_SKEW {
        return Err(ProtocolError::malformed(
            "dashboard token",
            "it was issued in the future",
        ));
    }
    if let Some(e) = directory
        .directory
        .ended_sessions
        .iter()
        .find(|e| ends(e, &token))
    {
        return Err(ProtocolError::malformed(
            "dashboard token",
            format!(
                "the region's authority ended this session at {}",
                format_time(e.ended_at)
            ),
        ));
    }
    let member = directory.member(&token.org_id)?;
    if member.kind() != MemberKind::Coordinator {
        return Err(ProtocolError::malformed(
            "dashboard token",
            format!(
                "{} is a {}; only coordinators see the dashboard",
                token.org_id,
                kind_name(member.kind())
            ),
        ));
    }
    Ok(token)
}

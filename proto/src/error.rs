//! The one error type of the protocol rules; every message names what was expected and what came.

/// Why a protocol object was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("bad signature on {what}: {detail}")]
    BadSignature { what: &'static str, detail: String },
    #[error("missing signature on {what}: {detail}")]
    MissingSignature { what: &'static str, detail: String },
    #[error("unknown member {0}: not in the signed directory")]
    UnknownMember(String),
    #[error("stale directory: version {offered} is not newer than version {held}")]
    StaleDirectory { offered: u64, held: u64 },
    #[error("consent refused: {0}")]
    Consent(String),
    #[error("disclosure refused: {0}")]
    Disclosure(String),
    #[error("envelope too large: body of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("envelope refused: {0}")]
    Envelope(String),
    #[error("cannot open envelope: {0}")]
    Open(String),
}

impl ProtocolError {
    pub(crate) fn malformed(what: &'static str, e: impl std::fmt::Display) -> Self {
        ProtocolError::Malformed {
            what,
            detail: e.to_string(),
        }
    }
}

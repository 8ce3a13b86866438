//! Overstap's wire format (`overstap.v1`) and the protocol rules every party checks.
//!
//! Layout:
//! - [`pb`]: the generated protobuf types and the tonic service stubs.
//! - [`sign`]: domain-separated signatures over exact bytes (`Signed`), `verify_strict` only.
//! - [`directory`]: the authority-signed member directory and its lookups.
//! - [`passport`]: sections, salted digests, the signed manifest and selective disclosure.
//! - [`consent`]: consent grants and revocations, and when they are valid.
//! - [`envelope`]: envelope headers, HPKE sealing to the recipient node, the signed payload inside.
//! - [`questions`]: the question sets (`pvs-mbo-v1`, `pvs-werk-v1`) as data.
//!
//! Architecture invariant: this crate does no I/O. No tokio, no sqlx, no network, no files; the
//! only clock it knows is the `now` its callers pass in.
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod consent;
pub mod directory;
pub mod envelope;
pub mod error;
pub mod log;
pub mod passport;
pub mod questions;
pub mod session;
pub mod sign;

pub use error::ProtocolError;

/// Generated protobuf types and service stubs for package `overstap.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("overstap.v1");
}

/// The encoded `FileDescriptorSet` of `overstap.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/overstap_descriptor.bin"));

/// Largest envelope body the protocol accepts by default (1 MiB), before sealing overhead.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 1024 * 1024;

/// Seconds since the Unix epoch. The protocol works in whole seconds, UTC.
pub type UnixTime = i64;

/// Formats a Unix time as `YYYY-MM-DD HH:MM UTC` for people.
pub fn format_time(t: UnixTime) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute()
        ),
        Err(_) => format!("@{t}"),
    }
}

/// A CSV field for a spreadsheet: quoted when it holds a separator, a quote or a line break
/// (RFC 4180), and a field a spreadsheet would run as a formula starts with an apostrophe. The
/// web app's and the dashboard's exports use it.
pub fn spreadsheet_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Formats a Unix time as `YYYY-MM-DD` for people.
pub fn format_date(t: UnixTime) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day()
        ),
        Err(_) => format!("@{t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_field;

    #[test]
    fn a_spreadsheet_field_is_quoted_and_never_a_formula() {
        assert_eq!(spreadsheet_field("Sam"), "Sam");
        assert_eq!(spreadsheet_field("de Vries, Sam"), "\"de Vries, Sam\"");
        assert_eq!(spreadsheet_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(spreadsheet_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(spreadsheet_field("<5"), "<5");
        assert_eq!(spreadsheet_field("-1"), "'-1");
        assert_eq!(
            spreadsheet_field("=HYPERLINK(\"x\")"),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
    }
}

//! Pure helpers for the binaries' settings and key files. The files are read by the callers;
//! these only parse text, so the protocol crate stays free of I/O.

use crate::ProtocolError;

/// Parses a key file: 64 hex digits (32 bytes), surrounding whitespace ignored.
pub fn parse_key_hex(text: &str, what: &'static str) -> Result<[u8; 32], ProtocolError> {
    let bytes = hex::decode(text.trim()).map_err(|e| ProtocolError::malformed(what, e))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| ProtocolError::Malformed {
            what,
            detail: format!(
                "expected 32 bytes (64 hex digits), got {} bytes",
                bytes.len()
            ),
        })
}

/// Makes a relative `sqlite://` path relative to `base` (the settings file's folder); other
/// URLs are returned as they are.
pub fn rebase_sqlite_url(url: &str, base: &std::path::Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.contains(":memory:") => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => url.to_string(),
    }
}

/// Layers settings: a TOML file's table, then `OVERSTAP_*` environment variables on top
/// (`OVERSTAP_DATABASE_URL` sets `database_url`). Values that parse as TOML integers or
/// booleans are taken as such; everything else is a string.
pub fn overlay_env(
    mut table: toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> toml::Table {
    for (k, v) in vars {
        let Some(key) = k.strip_prefix("OVERSTAP_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = if let Ok(i) = v.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(b) = v.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(v)
        };
        table.insert(key, value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_round_trip_and_errors() {
        let k = parse_key_hex(&format!("{}\n", "ab".repeat(32)), "key").unwrap();
        assert_eq!(k, [0xab; 32]);
        let e = parse_key_hex("abcd", "signing key")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 32 bytes"), "{e}");
        assert!(parse_key_hex("zz", "key").is_err());
    }

    #[test]
    fn sqlite_paths_follow_the_settings_file() {
        let base = std::path::Path::new("/etc/overstap");
        assert_eq!(
            rebase_sqlite_url("sqlite://hub.db", base),
            "sqlite:///etc/overstap/hub.db"
        );
        assert_eq!(
            rebase_sqlite_url("sqlite:///var/x.db", base),
            "sqlite:///var/x.db"
        );
        assert_eq!(
            rebase_sqlite_url("sqlite::memory:", base),
            "sqlite::memory:"
        );
        assert_eq!(
            rebase_sqlite_url("postgres://h/db", base),
            "postgres://h/db"
        );
    }

    #[test]
    fn environment_overrides_file() {
        let file: toml::Table =
            toml::from_str("listen = \"127.0.0.1:1\"\nmax_envelope_bytes = 5").unwrap();
        let t = overlay_env(
            file,
            [
                ("OVERSTAP_LISTEN".to_string(), "0.0.0.0:2".to_string()),
                ("HOME".to_string(), "/x".to_string()),
                ("OVERSTAP_MAX_ENVELOPE_BYTES".to_string(), "7".to_string()),
            ],
        );
        assert_eq!(t["listen"].as_str(), Some("0.0.0.0:2"));
        assert_eq!(t["max_envelope_bytes"].as_integer(), Some(7));
        assert!(!t.contains_key("home"));
    }
}

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

/// The type of a settings field, so an environment variable's text is read the right way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Integer,
}

/// Layers settings: a TOML file's table, then `OVERSTAP_*` environment variables on top
/// (`OVERSTAP_DATABASE_URL` sets `database_url`). Only the named fields are taken, so other
/// `OVERSTAP_*` variables (the CLI's, say) never disturb a program.
pub fn overlay_env(
    mut table: toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
    fields: &[(&str, FieldKind)],
) -> Result<toml::Table, ProtocolError> {
    for (k, v) in vars {
        let Some(key) = k.strip_prefix("OVERSTAP_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        let Some((name, kind)) = fields.iter().find(|(f, _)| *f == key) else {
            continue;
        };
        let value = match kind {
            FieldKind::Text => toml::Value::String(v),
            FieldKind::Integer => {
                toml::Value::Integer(v.trim().parse().map_err(|_| ProtocolError::Malformed {
                    what: "setting",
                    detail: format!("{k} must be a whole number, got {v:?}"),
                })?)
            }
        };
        table.insert(name.to_string(), value);
    }
    Ok(table)
}

/// The fields of a settings table and their kinds, for a test that keeps a field list true to
/// its struct.
pub fn table_fields(table: &toml::Table) -> Vec<(String, FieldKind)> {
    let mut out: Vec<_> = table
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                if v.is_integer() {
                    FieldKind::Integer
                } else {
                    FieldKind::Text
                },
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
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
        let fields = [
            ("listen", FieldKind::Text),
            ("org_id", FieldKind::Text),
            ("max_envelope_bytes", FieldKind::Integer),
        ];
        let var = |k: &str, v: &str| (k.to_string(), v.to_string());
        let t = overlay_env(
            file.clone(),
            [
                var("OVERSTAP_LISTEN", "0.0.0.0:2"),
                var("HOME", "/x"),
                var("OVERSTAP_MAX_ENVELOPE_BYTES", "7"),
                var("OVERSTAP_ORG_ID", "0123"),
                var("OVERSTAP_NODE_DIR", "/somewhere"),
            ],
            &fields,
        )
        .unwrap();
        assert_eq!(t["listen"].as_str(), Some("0.0.0.0:2"));
        assert_eq!(t["max_envelope_bytes"].as_integer(), Some(7));
        assert_eq!(
            t["org_id"].as_str(),
            Some("0123"),
            "an all-digit id stays text"
        );
        assert!(!t.contains_key("home") && !t.contains_key("node_dir"));
        let err =
            overlay_env(file, [var("OVERSTAP_MAX_ENVELOPE_BYTES", "lots")], &fields).unwrap_err();
        assert!(err.to_string().contains("must be a whole number"), "{err}");
    }
}

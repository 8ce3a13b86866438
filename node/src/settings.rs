//! The node's one typed settings struct: defaults, then a TOML file, then `OVERSTAP_*`
//! environment variables. Relative paths are relative to the file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::config::{FieldKind, overlay_env, parse_key_hex, rebase_sqlite_url};
use overstap_proto::envelope::EncryptionKeyPair;
use serde::{Deserialize, Serialize};

use crate::core::KeyFiles;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This organisation's id in the directory (BRIN code, municipality code).
    pub org_id: String,
    #[serde(default = "default_hub_url")]
    pub hub_url: String,
    /// The name in the hub's TLS certificate.
    #[serde(default = "default_hub_name")]
    pub hub_name: String,
    /// `sqlite://path` (relative to the settings file) or `postgres://…`, a database of this
    /// node's own.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    #[serde(default = "d_ca")]
    pub ca_cert: PathBuf,
    #[serde(default = "d_cert")]
    pub tls_cert: PathBuf,
    #[serde(default = "d_key")]
    pub tls_key: PathBuf,
    #[serde(default = "d_sign")]
    pub signing_key: PathBuf,
    #[serde(default = "d_enc")]
    pub encryption_key: PathBuf,
    #[serde(default = "d_auth")]
    pub authority_key: PathBuf,
    /// Where the local API (CLI, school systems) listens; loopback only by default.
    #[serde(default = "d_api")]
    pub api_listen: SocketAddr,
    /// The bearer token of the local API; made at first start (mode 0600) if missing.
    #[serde(default = "d_token")]
    pub api_token_file: PathBuf,
    /// Written at start with the local API's address, for the CLI.
    #[serde(default = "d_url")]
    pub api_url_file: PathBuf,
    #[serde(default = "d_dir_interval")]
    pub directory_interval_secs: u64,
    /// How often expired passports are looked for and erased (at least every minute).
    #[serde(default = "d_reaper_interval")]
    pub reaper_interval_secs: u64,
    #[serde(default = "d_max")]
    pub max_envelope_bytes: usize,
    /// How many envelopes from one sender may wait here for a gap in its sequence to fill;
    /// past that they are dropped and asked for again once the gap is filled.
    #[serde(default = "d_held")]
    pub max_held_per_sender: u64,
    /// How long a call to the local API may take before it ends with `DEADLINE_EXCEEDED`.
    #[serde(default = "d_api_timeout")]
    pub api_request_timeout_secs: u64,
    /// Where to serve Prometheus `/metrics` over plain HTTP (off when unset).
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// A file to write the metrics address to once bound (useful with port 0).
    #[serde(default)]
    pub metrics_addr_file: Option<PathBuf>,
    /// Where the people's web app listens (off when unset): plain HTTP on loopback, behind
    /// the school's own reverse proxy for anyone not on this machine.
    #[serde(default)]
    pub web_listen: Option<SocketAddr>,
    /// A file to write the web app's address to once bound (useful with port 0).
    #[serde(default)]
    pub web_url_file: Option<PathBuf>,
    /// The school's own certificate chain and key for the web app (PEM), for HTTPS without a
    /// reverse proxy; then `web_listen` may be any address. Both or neither.
    #[serde(default)]
    pub web_tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub web_tls_key: Option<PathBuf>,
    /// Staff sign in with their organisation's own account (OpenID Connect) when set; local
    /// accounts stay as a fallback. Set in node.toml only (a table, not an environment variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<crate::web::oidc::OidcSettings>,
}

/// Every field of [`Settings`] and its kind, for the `OVERSTAP_*` environment variables.
pub const FIELDS: &[(&str, FieldKind)] = &[
    ("api_listen", FieldKind::Text),
    ("api_request_timeout_secs", FieldKind::Integer),
    ("api_token_file", FieldKind::Text),
    ("api_url_file", FieldKind::Text),
    ("authority_key", FieldKind::Text),
    ("ca_cert", FieldKind::Text),
    ("database_url", FieldKind::Text),
    ("directory_interval_secs", FieldKind::Integer),
    ("encryption_key", FieldKind::Text),
    ("hub_name", FieldKind::Text),
    ("hub_url", FieldKind::Text),
    ("max_envelope_bytes", FieldKind::Integer),
    ("max_held_per_sender", FieldKind::Integer),
    ("metrics_addr_file", FieldKind::Text),
    ("metrics_listen", FieldKind::Text),
    ("org_id", FieldKind::Text),
    ("reaper_interval_secs", FieldKind::Integer),
    ("signing_key", FieldKind::Text),
    ("tls_cert", FieldKind::Text),
    ("tls_key", FieldKind::Text),
    ("web_listen", FieldKind::Text),
    ("web_tls_cert", FieldKind::Text),
    ("web_tls_key", FieldKind::Text),
    ("web_url_file", FieldKind::Text),
];

fn default_hub_url() -> String {
    "https://127.0.0.1:7443".into()
}
fn default_hub_name() -> String {
    "localhost".into()
}
fn default_database_url() -> String {
    "sqlite://node.db".into()
}
fn d_ca() -> PathBuf {
    "tls/ca.pem".into()
}
fn d_cert() -> PathBuf {
    "tls/cert.pem".into()
}
fn d_key() -> PathBuf {
    "tls/key.pem".into()
}
fn d_sign() -> PathBuf {
    "keys/signing.key".into()
}
fn d_enc() -> PathBuf {
    "keys/encryption.key".into()
}
fn d_auth() -> PathBuf {
    "authority.pub".into()
}
fn d_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7500))
}
fn d_token() -> PathBuf {
    "api.token".into()
}
fn d_url() -> PathBuf {
    "api.url".into()
}
fn d_dir_interval() -> u64 {
    30
}
fn d_reaper_interval() -> u64 {
    60
}
fn d_api_timeout() -> u64 {
    60
}

fn d_held() -> u64 {
    crate::core::DEFAULT_MAX_HELD_PER_SENDER
}

fn d_max() -> usize {
    overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES
}

impl Settings {
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading node config {}", file.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("parsing node config {}", file.display()))?;
        let table = overlay_env(table, std::env::vars(), FIELDS)?;
        let mut s: Settings = table.try_into().context("invalid node settings")?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        for p in [
            &mut s.ca_cert,
            &mut s.tls_cert,
            &mut s.tls_key,
            &mut s.signing_key,
            &mut s.encryption_key,
            &mut s.authority_key,
            &mut s.api_token_file,
            &mut s.api_url_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            &mut s.metrics_addr_file,
            &mut s.web_url_file,
            &mut s.web_tls_cert,
            &mut s.web_tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(o) = s.oidc.as_mut()
            && o.client_secret_file.is_relative()
        {
            o.client_secret_file = base.join(&o.client_secret_file);
        }
        s.database_url = rebase_sqlite_url(&s.database_url, &base);
        Ok(s)
    }

    pub fn key_files(&self) -> KeyFiles {
        KeyFiles {
            signing: self.signing_key.clone(),
            encryption: self.encryption_key.clone(),
        }
    }

    /// Reads every file the settings name (and makes the API token if there is none).
    pub fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
        };
        let text = |p: &Path, what: &str| -> anyhow::Result<String> {
            Ok(String::from_utf8(read(p, what)?)?)
        };
        let authority = VerifyingKey::from_bytes(&parse_key_hex(
            &text(&self.authority_key, "authority public key")?,
            "authority key",
        )?)
        .context("the authority key is not a valid ed25519 key")?;
        let enc = parse_key_hex(
            &text(&self.encryption_key, "encryption key")?,
            "encryption key",
        )?;
        let api_token = match std::fs::read_to_string(&self.api_token_file) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let token = crate::api::new_token();
                crate::write_secret(&self.api_token_file, token.as_bytes())?;
                token
            }
        };
        Ok(NodeConfig {
            org_id: self.org_id.clone(),
            hub_url: self.hub_url.clone(),
            hub_name: self.hub_name.clone(),
            database_url: self.database_url.clone(),
            ca_pem: read(&self.ca_cert, "CA certificate")?,
            cert_pem: read(&self.tls_cert, "node certificate")?,
            key_pem: read(&self.tls_key, "node TLS key")?,
            signing_key: SigningKey::from_bytes(&parse_key_hex(
                &text(&self.signing_key, "signing key")?,
                "signing key",
            )?),
            encryption_keys: {
                let mut keys = vec![EncryptionKeyPair::from_secret(&enc)?];
                let files = self.key_files();
                if let Ok(prev) = std::fs::read_to_string(files.previous_encryption()) {
                    keys.push(EncryptionKeyPair::from_secret(&parse_key_hex(
                        &prev,
                        "previous encryption key",
                    )?)?);
                }
                keys
            },
            key_files: Some(self.key_files()),
            reaper_interval: std::time::Duration::from_secs(self.reaper_interval_secs.clamp(1, 60)),
            log_interval: std::time::Duration::from_secs(2),
            authority,
            api_token,
            api_url_file: Some(self.api_url_file.clone()),
            directory_interval: std::time::Duration::from_secs(self.directory_interval_secs.max(1)),
            max_envelope_bytes: self.max_envelope_bytes,
            max_held_per_sender: self.max_held_per_sender.max(1),
            api_request_timeout: std::time::Duration::from_secs(
                self.api_request_timeout_secs.max(1),
            ),
            metrics_listen: self.metrics_listen,
            metrics_addr_file: self.metrics_addr_file.clone(),
            web_listen: self.web_listen,
            web_url_file: self.web_url_file.clone(),
            oidc: match &self.oidc {
                Some(o) => Some(o.resolve()?),
                None => None,
            },
            web_tls: match (&self.web_tls_cert, &self.web_tls_key) {
                (Some(cert), Some(key)) => Some(crate::web::tls::WebTls {
                    cert_pem: read(cert, "web app certificate")?,
                    key_pem: read(key, "web app key")?,
                }),
                (None, None) => None,
                _ => anyhow::bail!(
                    "set both web_tls_cert and web_tls_key (the school's certificate and key), or neither"
                ),
            },
        })
    }
}

/// Everything a node needs to run, already read from disk.
#[derive(Clone)]
pub struct NodeConfig {
    pub org_id: String,
    pub hub_url: String,
    pub hub_name: String,
    pub database_url: String,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub signing_key: SigningKey,
    /// The current key first; older keys stay for envelopes already in flight.
    pub encryption_keys: Vec<EncryptionKeyPair>,
    pub authority: VerifyingKey,
    pub api_token: String,
    pub api_url_file: Option<PathBuf>,
    pub directory_interval: std::time::Duration,
    pub reaper_interval: std::time::Duration,
    /// How often the hub's log is checked (its newest checkpoint and the inclusion proofs).
    pub log_interval: std::time::Duration,
    pub max_envelope_bytes: usize,
    pub max_held_per_sender: u64,
    pub api_request_timeout: std::time::Duration,
    /// Where the node's own keys are, to follow a rotation without a restart.
    pub key_files: Option<KeyFiles>,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_addr_file: Option<PathBuf>,
    pub web_listen: Option<SocketAddr>,
    pub web_url_file: Option<PathBuf>,
    /// The school's certificate and key for HTTPS, when the web app is to speak it itself.
    pub web_tls: Option<crate::web::tls::WebTls>,
    /// Sign-in through the organisation's identity provider, with its client secret read.
    pub oidc: Option<crate::web::oidc::OidcConfig>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("org_id", &self.org_id)
            .field("hub_url", &self.hub_url)
            .field(
                "database_url",
                &crate::sqlite_pool::redact(&self.database_url),
            )
            .field("secrets", &"<hidden>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_field_list_matches_the_struct() {
        let t: toml::Table = toml::from_str("org_id = \"25LP\"").unwrap();
        let mut s: Settings = t.try_into().unwrap();
        s.metrics_listen = Some(d_api());
        s.metrics_addr_file = Some("m".into());
        s.web_listen = Some(d_api());
        s.web_url_file = Some("w".into());
        s.web_tls_cert = Some("c".into());
        s.web_tls_key = Some("k".into());
        let table = toml::Table::try_from(&s).unwrap();
        let mut expected: Vec<(String, FieldKind)> =
            FIELDS.iter().map(|(k, t)| (k.to_string(), *t)).collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(overstap_proto::config::table_fields(&table), expected);
    }
}

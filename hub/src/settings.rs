//! The hub's one typed settings struct: defaults, then a TOML file, then `OVERSTAP_*`
//! environment variables, then the `--listen` flag. Relative paths are relative to the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::config::{FieldKind, overlay_env, parse_key_hex, rebase_sqlite_url};
use overstap_proto::pb::Signed;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::tls::ServerTls;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The hub's org id in the directory.
    #[serde(default = "default_hub_id")]
    pub hub_id: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_database_url")]
    pub database_url: String,
    #[serde(default = "default_ca")]
    pub ca_cert: PathBuf,
    #[serde(default = "default_cert")]
    pub tls_cert: PathBuf,
    #[serde(default = "default_key")]
    pub tls_key: PathBuf,
    /// The hub's ed25519 receipt-signing key (hex).
    #[serde(default = "default_signing_key")]
    pub signing_key: PathBuf,
    /// The authority's ed25519 public key (hex), the only key a directory is accepted from.
    #[serde(default = "default_authority")]
    pub authority_key: PathBuf,
    /// A signed directory to install at start-up if it is newer than the stored one.
    #[serde(default)]
    pub directory_file: Option<PathBuf>,
    #[serde(default = "default_max_envelope")]
    pub max_envelope_bytes: usize,
    /// Where to serve Prometheus `/metrics` over plain HTTP (off when unset). Bind it to an
    /// address only the monitoring can reach.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// A file to write the metrics address to once bound (useful with port 0).
    #[serde(default)]
    pub metrics_addr_file: Option<PathBuf>,
    /// Where to serve the coordinators' web dashboard over HTTPS, with the hub's certificate
    /// (off when unset).
    #[serde(default)]
    pub dashboard_listen: Option<SocketAddr>,
    /// A file to write the dashboard address to once bound (useful with port 0).
    #[serde(default)]
    pub dashboard_addr_file: Option<PathBuf>,
    /// Calls per second one member may make on average (bursts of twice as many).
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Open mailbox subscriptions per member.
    #[serde(default = "default_subscriptions_per_member")]
    pub subscriptions_per_member: u32,
    /// Envelopes that may wait in one recipient's mailbox before senders are asked to wait.
    #[serde(default = "default_mailbox_quota")]
    pub mailbox_quota: u64,
    /// Concurrent HTTP/2 streams on one connection.
    #[serde(default = "default_streams_per_connection")]
    pub streams_per_connection: u32,
    /// Seconds before an unanswered call ends with DEADLINE_EXCEEDED.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Seconds without an answer to keep-alive pings before a connection is closed.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Seconds a client has from connecting to finishing TLS and sending its first bytes.
    #[serde(default = "default_greeting_timeout_secs")]
    pub greeting_timeout_secs: u64,
    /// Counts below this are shown to coordinators as "<N>" (default 5).
    #[serde(default = "default_threshold")]
    pub stats_threshold: u32,
}

/// Every field of [`Settings`] and its kind, for the `OVERSTAP_*` environment variables.
pub const FIELDS: &[(&str, FieldKind)] = &[
    ("authority_key", FieldKind::Text),
    ("ca_cert", FieldKind::Text),
    ("dashboard_addr_file", FieldKind::Text),
    ("dashboard_listen", FieldKind::Text),
    ("database_url", FieldKind::Text),
    ("directory_file", FieldKind::Text),
    ("greeting_timeout_secs", FieldKind::Integer),
    ("hub_id", FieldKind::Text),
    ("idle_timeout_secs", FieldKind::Integer),
    ("listen", FieldKind::Text),
    ("mailbox_quota", FieldKind::Integer),
    ("max_envelope_bytes", FieldKind::Integer),
    ("metrics_addr_file", FieldKind::Text),
    ("metrics_listen", FieldKind::Text),
    ("request_timeout_secs", FieldKind::Integer),
    ("requests_per_second", FieldKind::Integer),
    ("signing_key", FieldKind::Text),
    ("stats_threshold", FieldKind::Integer),
    ("streams_per_connection", FieldKind::Integer),
    ("subscriptions_per_member", FieldKind::Integer),
    ("tls_cert", FieldKind::Text),
    ("tls_key", FieldKind::Text),
];

fn default_hub_id() -> String {
    "HUB".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}
fn default_database_url() -> String {
    "sqlite://hub.db".into()
}
fn default_ca() -> PathBuf {
    "tls/ca.pem".into()
}
fn default_cert() -> PathBuf {
    "tls/cert.pem".into()
}
fn default_key() -> PathBuf {
    "tls/key.pem".into()
}
fn default_signing_key() -> PathBuf {
    "keys/signing.key".into()
}
fn default_authority() -> PathBuf {
    "authority.pub".into()
}
fn default_requests_per_second() -> u32 {
    crate::limits::Limits::default().requests_per_second
}
fn default_subscriptions_per_member() -> u32 {
    crate::limits::Limits::default().subscriptions_per_member
}
fn default_mailbox_quota() -> u64 {
    crate::limits::Limits::default().mailbox_quota
}
fn default_streams_per_connection() -> u32 {
    crate::limits::Limits::default().streams_per_connection
}
fn default_request_timeout_secs() -> u64 {
    crate::limits::Limits::default().request_timeout_secs
}
fn default_idle_timeout_secs() -> u64 {
    crate::limits::Limits::default().idle_timeout_secs
}
fn default_greeting_timeout_secs() -> u64 {
    crate::limits::Limits::default().greeting_timeout_secs
}
fn default_threshold() -> u32 {
    crate::stats::DEFAULT_THRESHOLD
}
fn default_max_envelope() -> usize {
    overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES
}

impl Settings {
    /// Reads the file (if given), overlays the environment, and makes paths absolute.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let (table, base) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading hub config {}", path.display()))?;
                let table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("parsing hub config {}", path.display()))?;
                (
                    table,
                    path.parent().map(Path::to_path_buf).unwrap_or_default(),
                )
            }
            None => (toml::Table::new(), PathBuf::from(".")),
        };
        let table = overlay_env(table, std::env::vars(), FIELDS)?;
        let mut s: Settings = table.try_into().context("invalid hub settings")?;
        s.rebase(&base);
        Ok(s)
    }

    fn rebase(&mut self, base: &Path) {
        for p in [
            &mut self.ca_cert,
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.signing_key,
            &mut self.authority_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            &mut self.directory_file,
            &mut self.metrics_addr_file,
            &mut self.dashboard_addr_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        self.database_url = rebase_sqlite_url(&self.database_url, base);
    }

    /// Reads every file the settings name.
    pub fn resolve(&self) -> anyhow::Result<HubConfig> {
        let read = |p: &Path, what: &str| {
            std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
        };
        let key_text = String::from_utf8(read(&self.signing_key, "hub signing key")?)?;
        let authority_text = String::from_utf8(read(&self.authority_key, "authority public key")?)?;
        let authority = VerifyingKey::from_bytes(&parse_key_hex(&authority_text, "authority key")?)
            .context("authority key is not a valid ed25519 key")?;
        let directory = match &self.directory_file {
            Some(p) => Some(
                Signed::decode(read(p, "directory file")?.as_slice())
                    .with_context(|| format!("{} is not a signed directory", p.display()))?,
            ),
            None => None,
        };
        Ok(HubConfig {
            hub_id: self.hub_id.clone(),
            database_url: self.database_url.clone(),
            signing_key: SigningKey::from_bytes(&parse_key_hex(&key_text, "hub signing key")?),
            authority,
            tls: ServerTls {
                ca_pem: read(&self.ca_cert, "CA certificate")?,
                cert_pem: read(&self.tls_cert, "hub certificate")?,
                key_pem: read(&self.tls_key, "hub TLS key")?,
            },
            max_envelope_bytes: self.max_envelope_bytes,
            directory,
            integrate_log: true,
            integrate_every: crate::INTEGRATE_EVERY,
            metrics_listen: self.metrics_listen,
            metrics_addr_file: self.metrics_addr_file.clone(),
            stats_threshold: self.stats_threshold,
            dashboard_listen: self.dashboard_listen,
            dashboard_addr_file: self.dashboard_addr_file.clone(),
            limits: crate::limits::Limits {
                requests_per_second: self.requests_per_second,
                subscriptions_per_member: self.subscriptions_per_member,
                mailbox_quota: self.mailbox_quota,
                streams_per_connection: self.streams_per_connection,
                request_timeout_secs: self.request_timeout_secs,
                idle_timeout_secs: self.idle_timeout_secs,
                greeting_timeout_secs: self.greeting_timeout_secs,
            },
            clock: crate::service::Clock::system(),
        })
    }
}

/// Everything `serve` needs, already read from disk.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub hub_id: String,
    pub database_url: String,
    pub signing_key: SigningKey,
    pub authority: VerifyingKey,
    pub tls: ServerTls,
    pub max_envelope_bytes: usize,
    pub directory: Option<Signed>,
    /// Whether the sequencer integrates the log. Always on in service; off only to measure
    /// what the log costs (`overstap bench log`).
    pub integrate_log: bool,
    /// How often the sequencer integrates new events and signs a checkpoint
    /// ([`crate::INTEGRATE_EVERY`]; longer only where a measurement slows the whole program
    /// down, so that a round comes as often per envelope as at full speed).
    pub integrate_every: std::time::Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_addr_file: Option<PathBuf>,
    pub stats_threshold: u32,
    pub dashboard_listen: Option<SocketAddr>,
    pub dashboard_addr_file: Option<PathBuf>,
    pub limits: crate::limits::Limits,
    /// The wall clock, unless a demo or test moves time.
    pub clock: crate::service::Clock,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_field_list_matches_the_struct() {
        let mut s: Settings = toml::Table::new().try_into().unwrap();
        s.directory_file = Some("d".into());
        s.metrics_listen = Some(default_listen());
        s.metrics_addr_file = Some("m".into());
        s.dashboard_listen = Some(default_listen());
        s.dashboard_addr_file = Some("d".into());
        let table = toml::Table::try_from(&s).unwrap();
        let mut expected: Vec<(String, FieldKind)> =
            FIELDS.iter().map(|(k, t)| (k.to_string(), *t)).collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(overstap_proto::config::table_fields(&table), expected);
    }
}

//! `overstap health`: asks a hub's or a node's gRPC health service whether it serves, for
//! container engines and systemd, which read the exit code.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum HealthCmd {
    /// The hub whose settings file this is, on 127.0.0.1 at its `listen` port, asked with the
    /// hub's own certificate (mutual TLS, as every caller).
    Hub {
        /// The hub's settings file.
        #[arg(long, default_value = "/etc/overstap/hub.toml")]
        config: PathBuf,
        /// The name the hub's certificate carries (it was admitted with it as a host).
        #[arg(long, default_value = "localhost")]
        name: String,
    },
    /// The node whose settings file this is, at its local API (`api_listen`).
    Node {
        /// The node's settings file.
        #[arg(long, default_value = "/etc/overstap/node/node.toml")]
        config: PathBuf,
    },
}

/// Asks a hub's or a node's gRPC health service whether it serves; an error names what is
/// wrong (for `overstap health`, whose exit code container engines read).
pub async fn health(cmd: HealthCmd) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let (channel, service, what) = match cmd {
        HealthCmd::Hub { config, name } => {
            let settings = overstap_hub::Settings::load(Some(&config))?;
            let port = settings.listen.port();
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let link = overstap_node::sync::HubLink {
                url: format!("https://127.0.0.1:{port}"),
                server_name: name,
                ca_pem: read(&settings.ca_cert)?,
                cert_pem: read(&settings.tls_cert)?,
                key_pem: read(&settings.tls_key)?,
            };
            (
                link.channel()?,
                "overstap.v1.Hub",
                format!("the hub on port {port}"),
            )
        }
        HealthCmd::Node { config } => {
            let settings = overstap_node::Settings::load(&config)?;
            // Port 0 means the node chose one and wrote it to its api.url file.
            let addr = if settings.api_listen.port() == 0 {
                std::fs::read_to_string(&settings.api_url_file)
                    .with_context(|| {
                        format!(
                            "the node listens on a port of its choosing, and {} is missing",
                            settings.api_url_file.display()
                        )
                    })?
                    .trim()
                    .trim_start_matches("http://")
                    .to_string()
            } else {
                settings.api_listen.to_string()
            };
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy();
            (
                channel,
                "overstap.v1.Node",
                format!("the node's local API on {addr}"),
            )
        }
    };
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .with_context(|| format!("{what} did not answer within 10 s"))?
    .map_err(|s| anyhow::anyhow!("{what} did not answer: {}", s.message()))?;
    match reply.into_inner().status() {
        ServingStatus::Serving => {
            println!("{what} serves");
            Ok(())
        }
        other => anyhow::bail!("{what} answers, but is {}", other.as_str_name()),
    }
}

//! Reaching a node's local API: its address and bearer token, from the node's folder
//! (`api.url`, `api.token`) or given directly.

use std::path::Path;

use anyhow::Context;
use overstap_proto::pb::node_client::NodeClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Api = NodeClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Connects to the local API at `url` with `token`.
pub async fn connect(url: &str, token: &str) -> anyhow::Result<Api> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the node at {url}; is overstap-node running?"))?;
    let value = format!("Bearer {}", token.trim())
        .parse()
        .context("the API token is not valid text")?;
    Ok(NodeClient::with_interceptor(channel, Bearer(value)))
}

/// Connects using the node folder's `api.url` and `api.token`.
pub async fn connect_dir(dir: &Path) -> anyhow::Result<Api> {
    let url = std::fs::read_to_string(dir.join("api.url")).with_context(|| {
        format!(
            "{} has no api.url: start the node first (overstap-node --config {}/node.toml)",
            dir.display(),
            dir.display()
        )
    })?;
    let token = std::fs::read_to_string(dir.join("api.token"))
        .with_context(|| format!("reading {}/api.token", dir.display()))?;
    connect(url.trim(), &token).await
}

/// Turns a gRPC error from the node into a message for people: the node's reason, plainly.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// How the node in `dir` reaches the hub: the hub's address and the node's TLS identity, from
/// its `node.toml`. Commands that ask the hub directly (the log audit, statistics) go this way.
pub fn hub_link_of(dir: &Path) -> anyhow::Result<overstap_node::sync::HubLink> {
    let settings = overstap_node::Settings::load(&dir.join("node.toml"))?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(overstap_node::sync::HubLink {
        url: settings.hub_url.clone(),
        server_name: settings.hub_name.clone(),
        ca_pem: read(&settings.ca_cert)?,
        cert_pem: read(&settings.tls_cert)?,
        key_pem: read(&settings.tls_key)?,
    })
}

/// Asks a hub's or a node's gRPC health service whether it serves; an error names what is
/// wrong (for `overstap health`, whose exit code container engines read).
pub async fn health(cmd: crate::commands::HealthCmd) -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let (channel, service, what) = match cmd {
        crate::commands::HealthCmd::Hub { config, name } => {
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
        crate::commands::HealthCmd::Node { config } => {
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

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

/// Turns a gRPC error from the node into a message for people: the node's reason, plainly, or,
/// when the connection broke (the node stopped, say), that it did, rather than tonic's bare
/// "transport error".
pub fn explain(status: tonic::Status) -> anyhow::Error {
    let message = status.message();
    // The CLI never cancels a call itself: a cancelled one is a connection that went away.
    let broken = matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled
    ) || (status.code() == tonic::Code::Unknown
        && (message.contains("transport error") || message.contains("h2 protocol error")));
    if broken {
        anyhow::anyhow!(
            "the node stopped answering ({message}); check that it runs (overstap node status)"
        )
    } else {
        anyhow::anyhow!("{message}")
    }
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

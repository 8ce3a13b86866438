//! `overstap log audit`: fetch every entry of the hub's log, rebuild the Merkle tree, and check
//! it against the checkpoint this node verified and against the hub's newest checkpoint.

use std::path::Path;

use anyhow::Context;
use overstap_proto::log::{MemoryTree, leaf_hash};
use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{GetCheckpointRequest, LogEntriesRequest, LogStatusRequest};
use serde::Serialize;

use crate::client::{connect_dir, explain};

#[derive(Debug, Serialize)]
pub struct Audit {
    pub entries: u64,
    /// The size of the checkpoint this node had verified, and whether the entries make it.
    pub node_checkpoint: u64,
    pub node_checkpoint_matches: bool,
    /// The hub's newest checkpoint, and whether the entries make it.
    pub hub_checkpoint: u64,
    pub hub_checkpoint_matches: bool,
    /// Entries that are not routing metadata as the protocol defines it.
    pub malformed_entries: u64,
}

impl Audit {
    pub fn ok(&self) -> bool {
        self.node_checkpoint_matches && self.hub_checkpoint_matches && self.malformed_entries == 0
    }
}

/// Audits the log as seen by the node in `node_dir` (its API for the verified checkpoint, its
/// TLS identity to reach the hub).
pub async fn audit(node_dir: &Path) -> anyhow::Result<Audit> {
    let mut api = connect_dir(node_dir).await?;
    let status = api
        .log_status(LogStatusRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let settings = overstap_node::Settings::load(&node_dir.join("node.toml"))?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let link = overstap_node::sync::HubLink {
        url: settings.hub_url.clone(),
        server_name: settings.hub_name.clone(),
        ca_pem: read(&settings.ca_cert)?,
        cert_pem: read(&settings.tls_cert)?,
        key_pem: read(&settings.tls_key)?,
    };
    let mut hub = HubClient::new(link.channel()?).max_decoding_message_size(64 << 20);
    let hub_note = hub
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .note;
    let hub_cp = claims(&hub_note)?;
    let mut tree = MemoryTree::default();
    let mut malformed = 0;
    loop {
        let page = hub
            .get_log_entries(LogEntriesRequest {
                start: tree.size(),
                limit: 5_000,
            })
            .await
            .map_err(explain)?
            .into_inner()
            .entries;
        if page.is_empty() {
            break;
        }
        for e in page {
            if !matches!(e.event.as_str(), "send" | "delivery") || e.envelope_id.len() != 16 {
                malformed += 1;
            }
            tree.append(leaf_hash(&e))?;
        }
    }
    let matches = |size: u64, root: [u8; 32]| {
        size == 0 || (size <= tree.size() && tree.root_at(size).map(|h| h.0) == Ok(root))
    };
    let node_cp = if status.checkpoint.is_empty() {
        (0, [0; 32])
    } else {
        claims(&status.checkpoint)?
    };
    Ok(Audit {
        entries: tree.size(),
        node_checkpoint: node_cp.0,
        node_checkpoint_matches: matches(node_cp.0, node_cp.1),
        hub_checkpoint: hub_cp.0,
        hub_checkpoint_matches: matches(hub_cp.0, hub_cp.1),
        malformed_entries: malformed,
    })
}

/// Size and root a checkpoint claims (the node already checked its signature; here only the
/// numbers are compared with the rebuilt tree).
fn claims(note: &[u8]) -> anyhow::Result<(u64, [u8; 32])> {
    let (size, root) = overstap_proto::log::checkpoint_claims(note)?;
    Ok((size, root.0))
}

//! The hub's verifiable log as this node checks it: the newest checkpoint, a proof for one
//! envelope, and a full audit of the log's entries.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use overstap_proto::pb::LogStatusRequest;
use overstap_region::client::explain;

use super::{Format, NodeOpts, json};

#[derive(Subcommand)]
pub enum LogCmd {
    /// The newest checkpoint this node verified, its proofs, and any alarm.
    Checkpoint {
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Prove that an envelope this node sent or received is in the hub's log (hex id, as
    /// `overstap outbox` shows it).
    Prove {
        /// The envelope's id in hex, as `overstap outbox` shows it.
        envelope: String,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        node: NodeOpts,
    },
    /// Fetch every log entry from the hub, rebuild the tree, and check it against the
    /// checkpoint this node verified and the hub's newest one.
    Audit {
        /// The node's folder: its API, its settings and its TLS identity.
        #[arg(long, env = "OVERSTAP_NODE_DIR")]
        node_dir: PathBuf,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub(super) async fn log(cmd: LogCmd) -> anyhow::Result<()> {
    match cmd {
        LogCmd::Checkpoint { format, node } => {
            let s = node
                .api()
                .await?
                .log_status(LogStatusRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            match format {
                Format::Json => json(&serde_json::json!({
                    "checkpoint": String::from_utf8_lossy(&s.checkpoint), "size": s.size, "proven": s.proven,
                    "unproven": s.unproven, "alarm": s.alarm, "alarm_reason": s.alarm_reason,
                }))?,
                Format::Table => {
                    if s.checkpoint.is_empty() {
                        println!("This node has not verified a checkpoint of the hub's log yet.");
                    } else {
                        print!("{}", String::from_utf8_lossy(&s.checkpoint));
                        println!(
                            "Verified: {} entries. Envelopes of this node proven in the log: {}, not yet: {}.",
                            s.size, s.proven, s.unproven
                        );
                    }
                    if s.alarm {
                        println!(
                            "ALARM: {}. This node has stopped sending; the evidence is kept.",
                            s.alarm_reason
                        );
                    }
                }
            }
            Ok(())
        }

        LogCmd::Prove {
            envelope,
            format,
            node,
        } => {
            let id = hex::decode(envelope.trim())
                .with_context(|| format!("{envelope:?} is not an envelope id in hex"))?;
            let p = node
                .api()
                .await?
                .prove_envelope(overstap_proto::pb::ProveEnvelopeRequest { envelope_id: id })
                .await
                .map_err(explain)?
                .into_inner();
            let e = p.entry.unwrap_or_default();
            match format {
                Format::Json => json(&serde_json::json!({
                    "log_index": p.log_index, "tree_size": p.tree_size,
                    "proof": p.proof.iter().map(hex::encode).collect::<Vec<_>>(),
                    "entry": { "event": e.event, "from_org": e.from_org, "to_org": e.to_org,
                               "envelope_id": hex::encode(&e.envelope_id), "at": e.at },
                    "checkpoint": String::from_utf8_lossy(&p.checkpoint),
                }))?,
                Format::Table => println!(
                    "Envelope {} ({} from {} to {}, {}) is entry {} of the hub's log of {} entries: proven with {} hashes against the checkpoint this node verified.",
                    hex::encode(&e.envelope_id),
                    e.event,
                    e.from_org,
                    e.to_org,
                    overstap_proto::format_time(e.at),
                    p.log_index,
                    p.tree_size,
                    p.proof.len()
                ),
            }
            Ok(())
        }

        LogCmd::Audit { node_dir, format } => {
            let a = crate::audit::audit(&node_dir).await?;
            match format {
                Format::Json => json(&a)?,
                Format::Table => {
                    let verdict = |ok: bool| if ok { "matches" } else { "DOES NOT MATCH" };
                    println!(
                        "{} entries fetched and hashed. The checkpoint this node verified ({} entries): {}. The hub's newest checkpoint ({} entries): {}.",
                        a.entries,
                        a.node_checkpoint,
                        verdict(a.node_checkpoint_matches),
                        a.hub_checkpoint,
                        verdict(a.hub_checkpoint_matches),
                    );
                    println!(
                        "{} of the {} checkpoints this node stored match; {} entries of this node's own envelopes were compared.",
                        a.checkpoints_matching, a.checkpoints_checked, a.own_entries_checked
                    );
                    if a.malformed_entries > 0 {
                        println!("{} entries are malformed.", a.malformed_entries);
                    }
                    if let Some(d) = &a.first_divergence {
                        println!(
                            "First divergence{}: {}.",
                            match d.entry {
                                Some(e) => format!(" at entry {e}"),
                                None => format!(
                                    " between entries {} and {}",
                                    d.last_matching_size,
                                    d.first_failing_size.unwrap_or(a.entries)
                                ),
                            },
                            d.detail
                        );
                    }
                }
            }
            if !a.ok() {
                bail!("the log audit failed: the hub's entries do not make its checkpoints");
            }
            Ok(())
        }
    }
}

//! `overstap log audit`: fetch every entry of the hub's log, rebuild the Merkle tree, check it
//! against every checkpoint the node has stored (each one it verified, the evidence of an alarm)
//! and the hub's newest, and compare the entries with the node's own record of the envelopes it
//! sent and received. Where they disagree, report the first divergence.

use std::collections::BTreeSet;
use std::path::Path;

use overstap_proto::log::{LogEntry, MemoryTree, leaf_hash};
use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{
    GetCheckpointRequest, LogEntriesRequest, LogHistoryRequest, LogStatusRequest,
};
use serde::Serialize;

use overstap_region::client::{connect_dir, explain, hub_link_of as hub_link};

#[derive(Debug, Serialize)]
pub struct Audit {
    pub entries: u64,
    /// The size of the checkpoint this node had verified, and whether the entries make it.
    pub node_checkpoint: u64,
    pub node_checkpoint_matches: bool,
    /// The hub's newest checkpoint, and whether the entries make it.
    pub hub_checkpoint: u64,
    pub hub_checkpoint_matches: bool,
    /// Every checkpoint the node has stored (verified ones and evidence), and how many of them
    /// the entries make.
    pub checkpoints_checked: u64,
    pub checkpoints_matching: u64,
    /// Envelopes this node sent or received, compared entry by entry with what the hub serves.
    pub own_entries_checked: u64,
    /// Entries that are not routing metadata as the protocol defines it.
    pub malformed_entries: u64,
    /// Where the hub's entries first stop agreeing with what the node holds; none when they
    /// agree everywhere.
    pub first_divergence: Option<Divergence>,
}

/// The first place the served log and the node's records part ways.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Divergence {
    /// The largest stored checkpoint the entries still make (0 when none does).
    pub last_matching_size: u64,
    /// The smallest stored checkpoint they do not make: the divergence is in the entries from
    /// `last_matching_size` up to this size.
    pub first_failing_size: Option<u64>,
    /// The first entry known to differ, when the node's own records pin it down.
    pub entry: Option<u64>,
    /// What differs, in words.
    pub detail: String,
}

impl Audit {
    pub fn ok(&self) -> bool {
        self.node_checkpoint_matches
            && self.hub_checkpoint_matches
            && self.malformed_entries == 0
            && self.first_divergence.is_none()
    }
}

/// Audits the log as seen by the node in `node_dir` (its API for the checkpoints and its own
/// records, its TLS identity to reach the hub).
pub async fn audit(node_dir: &Path) -> anyhow::Result<Audit> {
    // The history can run to megabytes (10,000 checkpoints and every own envelope).
    let mut api = connect_dir(node_dir)
        .await?
        .max_decoding_message_size(64 << 20);
    let status = api
        .log_status(LogStatusRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let history = api
        .log_history(LogHistoryRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    let link = hub_link(node_dir)?;
    let mut hub = HubClient::new(link.channel()?).max_decoding_message_size(64 << 20);
    let hub_note = hub
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .note;
    let hub_cp = claims(&hub_note)?;
    let mut tree = MemoryTree::default();
    let mut served = Vec::new();
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
            let well_formed = match e.event.as_str() {
                "send" | "delivery" => e.envelope_id.len() == 16,
                // A student card a home node issued: its index and its hash.
                "card" => e.envelope_id.len() == 32 && e.body_sha256.len() == 32,
                _ => false,
            };
            if !well_formed {
                malformed += 1;
            }
            tree.append(leaf_hash(&e))?;
            served.push(e);
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
    // Every stored checkpoint, once per (size, root), smallest first.
    let stored: BTreeSet<(u64, [u8; 32])> = history
        .checkpoints
        .iter()
        .chain(&history.evidence)
        .chain(std::iter::once(&status.checkpoint).filter(|n| !n.is_empty()))
        .map(|n| claims(n))
        .collect::<anyhow::Result<_>>()?;
    let failing: Vec<u64> = stored
        .iter()
        .filter(|(size, root)| !matches(*size, *root))
        .map(|(size, _)| *size)
        .collect();
    // Only entries some stored checkpoint covers: a receipt's entry may not be integrated yet.
    let covered = stored.iter().map(|(size, _)| *size).max().unwrap_or(0);
    let own: Vec<(u64, LogEntry)> = history
        .own_entries
        .iter()
        .filter(|i| i.log_index < covered)
        .filter_map(|i| i.entry.clone().map(|e| (i.log_index, e)))
        .collect();
    let first_divergence = divergence(&stored, &failing, &own, &served, &matches);
    Ok(Audit {
        entries: tree.size(),
        node_checkpoint: node_cp.0,
        node_checkpoint_matches: matches(node_cp.0, node_cp.1),
        hub_checkpoint: hub_cp.0,
        hub_checkpoint_matches: matches(hub_cp.0, hub_cp.1),
        checkpoints_checked: stored.len() as u64,
        checkpoints_matching: (stored.len() - failing.len()) as u64,
        own_entries_checked: own.len() as u64,
        malformed_entries: malformed,
        first_divergence,
    })
}

/// Finds the first divergence: the stored checkpoints bound it to a range of entries, and the
/// node's own record of an entry, where it has one, pins it down.
fn divergence(
    stored: &BTreeSet<(u64, [u8; 32])>,
    failing: &[u64],
    own: &[(u64, LogEntry)],
    served: &[LogEntry],
    matches: &dyn Fn(u64, [u8; 32]) -> bool,
) -> Option<Divergence> {
    let first_failing = failing.iter().min().copied();
    let last_matching = stored
        .iter()
        .filter(|(size, root)| first_failing.is_none_or(|f| *size < f) && matches(*size, *root))
        .map(|(size, _)| *size)
        .max()
        .unwrap_or(0);
    let differs = own
        .iter()
        .filter_map(|(index, mine)| match served.get(*index as usize) {
            Some(theirs) if theirs == mine => None,
            Some(theirs) => Some((*index, describe(*index, mine, Some(theirs)))),
            None => Some((*index, describe(*index, mine, None))),
        })
        .min_by_key(|(index, _)| *index);
    // The node's own record pins the first divergence down to one entry.
    if let Some((index, detail)) = differs
        .as_ref()
        .filter(|(index, _)| first_failing.is_none_or(|f| *index < f))
    {
        return Some(Divergence {
            last_matching_size: last_matching.min(*index),
            first_failing_size: first_failing,
            entry: Some(*index),
            detail: detail.clone(),
        });
    }
    let first = first_failing?;
    let removed = (served.len() as u64) < first;
    Some(Divergence {
        last_matching_size: last_matching,
        first_failing_size: Some(first),
        entry: removed.then_some(served.len() as u64),
        detail: if removed {
            format!(
                "the hub serves {} entries, but this node holds a checkpoint of {first}: entries were removed",
                served.len()
            )
        } else {
            format!(
                "the hub's entries {last_matching}..{first} no longer make the checkpoint of {first} entries this node holds{}",
                match differs {
                    Some((_, d)) => format!("; later, {d}"),
                    None => "; none of them is an envelope of this node, so which one changed is for the members it concerns to find".into(),
                }
            )
        },
    })
}

fn describe(index: u64, mine: &LogEntry, theirs: Option<&LogEntry>) -> String {
    let what = format!(
        "entry {index} (envelope {} from {} to {})",
        hex::encode(&mine.envelope_id),
        mine.from_org,
        mine.to_org
    );
    let Some(theirs) = theirs else {
        return format!("{what} is missing from the hub's log");
    };
    let mut fields = Vec::new();
    for (name, a, b) in [
        ("event", mine.event.clone(), theirs.event.clone()),
        ("from", mine.from_org.clone(), theirs.from_org.clone()),
        ("to", mine.to_org.clone(), theirs.to_org.clone()),
        (
            "envelope",
            hex::encode(&mine.envelope_id),
            hex::encode(&theirs.envelope_id),
        ),
        (
            "body hash",
            hex::encode(&mine.body_sha256),
            hex::encode(&theirs.body_sha256),
        ),
        (
            "kind",
            mine.envelope_kind.to_string(),
            theirs.envelope_kind.to_string(),
        ),
        ("time", mine.at.to_string(), theirs.at.to_string()),
    ] {
        if a != b {
            fields.push(format!(
                "{name} reads {b:?} where this node's record says {a:?}"
            ));
        }
    }
    format!("{what} was rewritten: {}", fields.join("; "))
}

/// Size and root a checkpoint claims (the node already checked its signature; here only the
/// numbers are compared with the rebuilt tree).
fn claims(note: &[u8]) -> anyhow::Result<(u64, [u8; 32])> {
    let (size, root) = overstap_proto::log::checkpoint_claims(note)?;
    Ok((size, root.0))
}

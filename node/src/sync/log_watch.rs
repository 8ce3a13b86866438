//! The log loop: fetching the hub's newest checkpoint, checking that it extends the last one
//! verified and fits what other members were shown, proving this node's envelopes are in it,
//! cosigning it at a coordinator, and raising the alarm when the log does not add up.

use std::sync::Arc;
use std::time::Duration;

use overstap_proto::pb::hub_client::HubClient;

use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

use crate::core::NodeCore;

use super::sleep_or_stop;

/// Watches the hub's log: every `interval`, fetch the newest checkpoint, check its signature
/// and that it extends the last one this node verified (consistency proof), then prove the
/// inclusion of every envelope this node sent or received. A hub that shows a log that does not
/// add up raises the alarm: the evidence is kept and the node stops sending.
pub(super) async fn log_loop(
    core: Arc<NodeCore>,
    mut client: HubClient<Channel>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = log_cards(&core, &mut client).await {
            tracing::warn!(org = %core.org_id, error = %e, "student cards were not all recorded in the log; again next round");
        }
        if let Err(e) = check_log(&core, &mut client).await {
            tracing::warn!(org = %core.org_id, error = %e, "the log check did not complete; it runs again");
        }
        if sleep_or_stop(interval, &mut shutdown).await {
            return;
        }
    }
}

/// Records at the hub every student card this node issued that is not in the log yet (by its
/// card index and hash), and keeps the log index each got. A card is noted in the same
/// transaction that issues it, so a crash in between only delays its record.
pub async fn log_cards(core: &NodeCore, client: &mut HubClient<Channel>) -> anyhow::Result<usize> {
    let mut recorded = 0;
    loop {
        let waiting = core.store.cards_to_log(100).await?;
        if waiting.is_empty() {
            return Ok(recorded);
        }
        for card in waiting {
            let log_index = client
                .log_card(overstap_proto::pb::LogCardRequest {
                    card_index: card.card_index,
                    card_sha256: card.card_sha256.clone(),
                })
                .await?
                .into_inner()
                .log_index;
            core.store.card_logged(&card.card_sha256, log_index).await?;
            recorded += 1;
        }
    }
}

async fn alarm(core: &NodeCore, reason: String, held: &[u8], shown: &[u8]) -> anyhow::Result<()> {
    tracing::error!(org = %core.org_id, %reason, "LOG ALARM: the hub's log does not add up; sending stops");
    core.store
        .raise_log_alarm(&reason, held, shown, core.now())
        .await?;
    Ok(())
}

/// One round of log checking.
pub async fn check_log(core: &NodeCore, client: &mut HubClient<Channel>) -> anyhow::Result<()> {
    use overstap_proto::log::{check_consistency, check_inclusion, hashes_from_bytes, leaf_hash};
    use overstap_proto::pb::{ConsistencyRequest, GetCheckpointRequest, InclusionRequest};
    let note = match client.get_checkpoint(GetCheckpointRequest {}).await {
        Ok(r) => r.into_inner().note,
        Err(s) if s.code() == Code::NotFound => return Ok(()),
        Err(s) => return Err(s.into()),
    };
    let shown = core.verify_checkpoint(&note)?;
    let held = core.store.log_state().await?;
    // Once the alarm is raised it stays, with its evidence, until a person looks: no new rounds.
    if held.as_ref().is_some_and(|h| h.alarm.is_some()) {
        return Ok(());
    }
    if let Some(h) = held.as_ref().filter(|h| h.size > 0) {
        let held_root = overstap_proto::log::Hash(h.root);
        if shown.size < h.size {
            let reason = format!(
                "the hub's log shrank from {} to {} entries",
                h.size, shown.size
            );
            return alarm(core, reason, &h.note, &note).await;
        }
        if shown.size == h.size && shown.root != held_root {
            let reason = format!("the hub signed two different logs of {} entries", h.size);
            return alarm(core, reason, &h.note, &note).await;
        }
        if shown.size > h.size {
            let proof = client
                .get_consistency_proof(ConsistencyRequest {
                    old_size: h.size,
                    new_size: shown.size,
                })
                .await?
                .into_inner();
            if let Err(e) = check_consistency(
                &hashes_from_bytes(&proof.hashes)?,
                shown.size,
                shown.root,
                h.size,
                held_root,
            ) {
                return alarm(core, e.to_string(), &h.note, &note).await;
            }
        }
    }
    let grown = held.as_ref().is_none_or(|h| h.size != shown.size);
    // The same checkpoint again may come with more cosignatures than the copy held: keep the
    // fuller one, so `log checkpoint` shows who witnessed it.
    if grown || held.as_ref().is_some_and(|h| h.note != note) {
        core.store
            .save_log_state(shown.size, shown.root.0, &note, core.now())
            .await?;
    }
    if grown {
        // A coordinator witnesses the log: it cosigns each checkpoint it has just checked to be
        // consistent with the last one it accepted (and so with the last one it cosigned).
        if core.is_coordinator() {
            let cosigned = overstap_proto::log::cosign(
                &note,
                &core.witness_key(),
                &core.org_id,
                core.now().max(0) as u64,
            )?;
            client
                .add_cosignature(overstap_proto::pb::CheckpointResponse { note: cosigned })
                .await?;
        }
    }
    // Compare with what the hub showed other members: a hub that shows two members two
    // different histories cannot prove both consistent with one log.
    for (id, from, peer_note) in core.store.peer_checkpoints().await? {
        let peer = match core.verify_checkpoint(&peer_note) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(org = %core.org_id, %from, error = %e, "a member passed on a checkpoint that does not verify");
                core.store.peer_checkpoint_checked(id).await?;
                continue;
            }
        };
        let split = if peer.size == shown.size {
            (peer.root != shown.root).then(|| {
                format!(
                    "the hub showed {from} a different log of {} entries than it showed us",
                    peer.size
                )
            })
        } else {
            let (small, large) = if peer.size < shown.size {
                (&peer, &shown)
            } else {
                (&shown, &peer)
            };
            let proof = client
                .get_consistency_proof(ConsistencyRequest {
                    old_size: small.size,
                    new_size: large.size,
                })
                .await;
            match proof {
                Ok(p) => check_consistency(
                    &hashes_from_bytes(&p.into_inner().hashes)?,
                    large.size,
                    large.root,
                    small.size,
                    small.root,
                )
                .err()
                .map(|e| format!("the logs the hub showed {from} and us do not fit together: {e}")),
                // The hub cannot prove a larger tree than it holds: it showed that member more.
                Err(s) if s.code() == Code::OutOfRange => Some(format!(
                    "the hub showed {from} a log of {} entries but cannot prove it to us ({})",
                    peer.size,
                    s.message()
                )),
                Err(s) => return Err(s.into()),
            }
        };
        if let Some(reason) = split {
            return alarm(core, reason, &note, &peer_note).await;
        }
        core.store.peer_checkpoint_checked(id).await?;
    }
    // The round's proofs are recorded together, in one commit: those before a failed one too,
    // whether the hub misses a proof or shows one that does not hold.
    let mut proven = Vec::new();
    let mut wrong = None;
    let mut asked = Ok(());
    for item in core.store.unproven(&core.org_id, 256).await? {
        if item.log_index >= shown.size {
            continue;
        }
        let hashes = match client
            .get_inclusion_proof(InclusionRequest {
                log_index: item.log_index,
                tree_size: shown.size,
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|p| Ok(hashes_from_bytes(&p.into_inner().hashes)?))
        {
            Ok(hashes) => hashes,
            Err(e) => {
                asked = Err(e);
                break;
            }
        };
        match check_inclusion(
            &hashes,
            shown.size,
            shown.root,
            item.log_index,
            leaf_hash(&item.entry),
        ) {
            Ok(()) => proven.push((item.envelope_id, item.log_index)),
            Err(e) => {
                wrong = Some(format!(
                    "envelope {} is not at log entry {} as the hub's receipt promised: {e}",
                    hex::encode(&item.envelope_id),
                    item.log_index
                ));
                break;
            }
        }
    }
    core.store
        .mark_proven(&proven, shown.size, core.now())
        .await?;
    if let Some(reason) = wrong {
        return alarm(core, reason, &note, &note).await;
    }
    asked
}

//! The event log: the sequencer's integration of new events into the tree with a signed
//! checkpoint, and the calls that read the log (checkpoints and their cosignatures, inclusion
//! and consistency proofs, entries).

use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::log::{
    Hash, LogEntry, MemoryTree, leaf_hash, sign_checkpoint, stored_hash_count,
};
use overstap_proto::pb::{
    AddCosignatureResponse, CardHistoryRequest, CardHistoryResponse, CheckpointResponse,
    ConsistencyRequest, GetCheckpointRequest, InclusionRequest, LogCardRequest, LogCardResponse,
    LogEntriesRequest, LogEntriesResponse, MemberKind, ProofResponse,
};
use tonic::{Request, Response, Status};

use super::{HubError, HubService};
use crate::store::{Checkpoint as StoredCheckpoint, Event, HubStore};

impl<S: HubStore> HubService<S> {
    /// The id checkpoints are signed under: the hub's id in the directory, since that is what
    /// nodes check against (the settings' id only if the directory lists no hub).
    fn log_hub_id(&self, directory: &VerifiedDirectory) -> String {
        directory
            .hub()
            .map(|h| h.org_id.clone())
            .unwrap_or_else(|| self.state.hub_id.clone())
    }

    /// Integrates new events into the log and signs a checkpoint for them, in one transaction
    /// with their stored hashes. Returns the new size (unchanged when nothing was new).
    pub async fn integrate(&self) -> Result<u64, HubError> {
        let mut tree = self.state.log.lock().await;
        // Another hub process sharing the store may have integrated (it may have been the
        // sequencer until now): this tree first takes in what the store holds.
        self.follow_in(&mut tree).await?;
        if !self.state.store.sequencer_lease().await? {
            return Ok(tree.size());
        }
        let start = tree.size();
        let events = self
            .state
            .store
            .events(start, crate::INTEGRATE_BATCH)
            .await?;
        if events.is_empty() {
            return Ok(start);
        }
        let directory = self.directory()?;
        let region = directory.directory.region.clone();
        let hub_id = self.log_hub_id(&directory);
        let first_hash = stored_hash_count(start);
        // Appended in place (a copy of a tree of a million entries would be 64 MB per round).
        // If anything fails, the tree goes back to where it was; should the commit have happened
        // after all, the next round's `follow_in` takes it in from the store.
        let appended = async {
            let mut added = Vec::new();
            for e in &events {
                for h in tree.append(leaf_hash(&entry_of(e)))? {
                    added.push(h.0);
                }
            }
            let root = tree.root()?;
            let note = sign_checkpoint(&region, tree.size(), root, &self.state.key, &hub_id)?;
            let cp = StoredCheckpoint {
                size: tree.size(),
                root: root.0,
                note,
                at: self.state.now(),
            };
            self.state.store.integrate(first_hash, &added, &cp).await?;
            Ok::<_, HubError>(cp.size)
        }
        .await;
        if appended.is_err() {
            tree.truncate(start);
        }
        appended
    }

    /// Brings the in-memory tree up to the newest checkpoint in the store.
    async fn follow_in(&self, tree: &mut MemoryTree) -> Result<(), HubError> {
        let Some(cp) = self.state.store.latest_checkpoint().await? else {
            return Ok(());
        };
        if cp.size <= tree.size() {
            return Ok(());
        }
        let first = stored_hash_count(tree.size());
        let more = self
            .state
            .store
            .log_hashes_between(first, stored_hash_count(cp.size))
            .await?;
        tree.catch_up(more.into_iter().map(Hash).collect(), cp.size)?;
        Ok(())
    }

    /// The log's tree, brought up to the store's newest checkpoint first when `size` is more
    /// than this process has integrated (another hub process may be the sequencer).
    async fn tree_of_size(
        &self,
        size: u64,
    ) -> Result<tokio::sync::MutexGuard<'_, MemoryTree>, HubError> {
        let mut tree = self.state.log.lock().await;
        if size > tree.size() {
            self.follow_in(&mut tree).await?;
        }
        Ok(tree)
    }

    pub(super) async fn do_get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        self.caller(&request)?;
        let cp = self
            .state
            .store
            .latest_checkpoint()
            .await
            .map_err(HubError::from)?;
        let cp = cp.ok_or_else(|| Status::not_found("the log is empty: no checkpoint yet"))?;
        let lines = self
            .state
            .store
            .cosignatures(cp.size)
            .await
            .map_err(HubError::from)?;
        let note =
            overstap_proto::log::with_cosignatures(&cp.note, &lines).map_err(HubError::from)?;
        Ok(Response::new(CheckpointResponse { note }))
    }

    pub(super) async fn do_add_cosignature(
        &self,
        request: Request<CheckpointResponse>,
    ) -> Result<Response<AddCosignatureResponse>, Status> {
        let caller = self.caller(&request)?;
        if caller.kind() != MemberKind::Coordinator {
            return Err(Status::permission_denied(format!(
                "{} is not a coordinator; only coordinators witness the log",
                caller.org_id
            )));
        }
        let directory = self.directory()?;
        let hub_id = self.log_hub_id(&directory);
        let witness_key = overstap_proto::sign::verifying_key(&caller.signing_key, "witness key")
            .map_err(HubError::from)?;
        // A witness's clock may run a little ahead of the hub's; five minutes is plenty.
        let (text, cosig) = overstap_proto::log::verify_cosignature(
            &request.get_ref().note,
            &self.state.key.verifying_key(),
            &hub_id,
            &witness_key,
            &caller.org_id,
            self.state.now().max(0) as u64 + 300,
        )
        .map_err(HubError::from)?;
        let (size, _) = overstap_proto::log::checkpoint_claims(&request.get_ref().note)
            .map_err(HubError::from)?;
        let ours = self
            .state
            .store
            .checkpoint(size)
            .await
            .map_err(HubError::from)?;
        if !ours.is_some_and(|c| c.note.starts_with(&text)) {
            return Err(Status::invalid_argument(format!(
                "the hub signed no such checkpoint of {size} entries"
            )));
        }
        self.state
            .store
            .add_cosignature(size, &caller.org_id, &cosig.line, self.state.now())
            .await
            .map_err(HubError::from)?;
        tracing::info!(witness = %caller.org_id, size, "checkpoint cosigned");
        Ok(Response::new(AddCosignatureResponse { size }))
    }

    pub(super) async fn do_get_inclusion_proof(
        &self,
        request: Request<InclusionRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let tree = self.tree_of_size(r.tree_size).await?;
        if r.tree_size == 0 || r.tree_size > tree.size() || r.log_index >= r.tree_size {
            return Err(Status::out_of_range(format!(
                "no entry {} in a tree of {} (the log holds {})",
                r.log_index,
                r.tree_size,
                tree.size()
            )));
        }
        Ok(Response::new(proof_response(
            tree.inclusion(r.log_index, r.tree_size)
                .map_err(HubError::from)?,
        )))
    }

    pub(super) async fn do_get_consistency_proof(
        &self,
        request: Request<ConsistencyRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let tree = self.tree_of_size(r.new_size).await?;
        if r.old_size == 0 || r.old_size > r.new_size || r.new_size > tree.size() {
            return Err(Status::out_of_range(format!(
                "no consistency proof from {} to {} (the log holds {})",
                r.old_size,
                r.new_size,
                tree.size()
            )));
        }
        Ok(Response::new(proof_response(
            tree.consistency(r.old_size, r.new_size)
                .map_err(HubError::from)?,
        )))
    }

    pub(super) async fn do_get_log_entries(
        &self,
        request: Request<LogEntriesRequest>,
    ) -> Result<Response<LogEntriesResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        let size = self.tree_of_size(u64::MAX).await?.size();
        let limit = r.limit.clamp(1, 10_000);
        let events = self
            .state
            .store
            .events(r.start, limit)
            .await
            .map_err(HubError::from)?;
        Ok(Response::new(LogEntriesResponse {
            entries: events
                .iter()
                .filter(|e| e.log_index < size)
                .map(entry_of)
                .collect(),
        }))
    }
}

impl<S: HubStore> HubService<S> {
    /// A home node logs a student card it issued: a card index and a card hash, 32 bytes each.
    /// Only nodes (schools, colleges, municipalities) issue cards.
    pub(super) async fn do_log_card(
        &self,
        request: Request<LogCardRequest>,
    ) -> Result<Response<LogCardResponse>, Status> {
        let caller = self.caller(&request)?;
        if matches!(caller.kind(), MemberKind::Hub | MemberKind::Coordinator) {
            return Err(HubError::Invalid(format!(
                "{} is a {}; only a node that issues student cards logs them",
                caller.org_id,
                overstap_proto::directory::kind_name(caller.kind())
            ))
            .into());
        }
        let r = request.into_inner();
        if r.card_index.len() != 32 || r.card_sha256.len() != 32 {
            return Err(HubError::Invalid(format!(
                "a card record is a 32-byte card index and a 32-byte card hash, not {} and {} bytes",
                r.card_index.len(),
                r.card_sha256.len()
            ))
            .into());
        }
        let log_index = self
            .state
            .store
            .log_card(
                &caller.org_id,
                &r.card_index,
                &r.card_sha256,
                self.state.now(),
            )
            .await
            .map_err(HubError::from)?;
        Ok(Response::new(LogCardResponse { log_index }))
    }

    /// Every card logged under one index, with its log index, oldest first.
    pub(super) async fn do_card_history(
        &self,
        request: Request<CardHistoryRequest>,
    ) -> Result<Response<CardHistoryResponse>, Status> {
        self.caller(&request)?;
        let r = request.into_inner();
        if r.card_index.len() != 32 {
            return Err(HubError::Invalid(format!(
                "a card index is 32 bytes, not {}",
                r.card_index.len()
            ))
            .into());
        }
        let events = self
            .state
            .store
            .card_events(&r.card_index)
            .await
            .map_err(HubError::from)?;
        Ok(Response::new(CardHistoryResponse {
            log_indexes: events.iter().map(|e| e.log_index).collect(),
            entries: events.iter().map(entry_of).collect(),
        }))
    }
}

/// The log leaf of a stored event.
pub fn entry_of(e: &Event) -> LogEntry {
    LogEntry {
        event: e.event.clone(),
        envelope_kind: e.envelope_kind,
        from_org: e.from_org.clone(),
        to_org: e.to_org.clone(),
        envelope_id: e.envelope_id.clone(),
        body_sha256: e.body_sha256.clone(),
        at: e.at,
    }
}

fn proof_response(hashes: Vec<Hash>) -> ProofResponse {
    ProofResponse {
        hashes: hashes.into_iter().map(|h| h.0.to_vec()).collect(),
    }
}

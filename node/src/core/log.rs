//! The hub's log and this node's link to the hub: checking the hub's receipts and checkpoints,
//! the witness key of a coordinator, the log alarm, the hub connection, and the metrics text.

use std::sync::atomic::Ordering;

use ed25519_dalek::SigningKey;
use overstap_proto::pb::{MemberKind, Receipt, Signed};
use overstap_proto::sign::{Domain, open_signed_in};

use super::{NodeCore, NodeError};

impl NodeCore {
    /// Whether a receipt handed back by the hub is signed by the directory's hub and is for
    /// this envelope.
    pub fn check_receipt(&self, receipt: &Signed, envelope_id: &[u8]) -> Result<(), NodeError> {
        let dir = self.directory()?;
        let hub = dir
            .hub()
            .ok_or_else(|| NodeError::Invalid("the directory lists no hub".into()))?;
        // Decompressed once, when the directory was verified.
        let key = dir.signing_key_of(&hub.org_id)?;
        let r: Receipt = open_signed_in(Some(&self.checked), Domain::Receipt, receipt, &key)?;
        if r.envelope_id != envelope_id {
            return Err(NodeError::Invalid(
                "the hub's receipt is for another envelope".into(),
            ));
        }
        Ok(())
    }

    /// Checks the signatures of the hub's receipts for one call together (one `verify_batch`),
    /// so that each receipt's own check ([`NodeCore::check_receipt`]) finds its signature
    /// checked. If the batch does not hold, nothing of it is kept and each receipt is checked
    /// alone, which finds the bad one.
    pub fn check_receipts_together<'a>(&self, receipts: impl Iterator<Item = &'a Signed>) {
        let Ok(dir) = self.directory() else {
            return;
        };
        let Some(key) = dir
            .hub()
            .and_then(|hub| dir.signing_key_of(&hub.org_id).ok())
        else {
            return;
        };
        let checks = receipts.map(|receipt| (Domain::Receipt, receipt, key));
        if let Err(e) = self.checked.check_together(checks) {
            tracing::warn!(error = %e, "the hub's receipts did not verify together; each is checked alone");
        }
    }

    /// Checks a checkpoint note against the hub key and region in the signed directory.
    pub fn verify_checkpoint(
        &self,
        note: &[u8],
    ) -> Result<overstap_proto::log::VerifiedCheckpoint, NodeError> {
        let dir = self.directory()?;
        let hub = dir
            .hub()
            .ok_or_else(|| NodeError::Invalid("the directory lists no hub".into()))?;
        // Decompressed once, when the directory was verified.
        let key = dir.signing_key_of(&hub.org_id)?;
        Ok(overstap_proto::log::verify_checkpoint(
            note,
            &dir.directory.region,
            &key,
            &hub.org_id,
        )?)
    }

    /// Whether this node is a coordinator's, which witnesses the hub's log.
    pub fn is_coordinator(&self) -> bool {
        self.directory()
            .ok()
            .and_then(|d| {
                d.member(&self.org_id)
                    .ok()
                    .map(|m| m.kind() == MemberKind::Coordinator)
            })
            .unwrap_or(false)
    }

    /// The key a witness cosigns with: the node's own signing key from the directory.
    pub fn witness_key(&self) -> SigningKey {
        self.key()
    }

    /// Whether this node has caught the hub showing a log that does not add up. While it has,
    /// it sends nothing.
    pub async fn log_alarm(&self) -> Result<Option<String>, NodeError> {
        Ok(self.store.log_state().await?.and_then(|s| s.alarm))
    }

    pub fn mark_connected(&self, up: bool) {
        self.hub_connected.store(up, Ordering::Relaxed);
    }

    /// The metrics as OpenMetrics text, with the gauges read fresh from the store.
    pub async fn metrics_text(&self) -> Result<String, NodeError> {
        let m = &self.metrics;
        let now = self.now();
        m.outbox_waiting
            .set(self.store.pending_count().await? as i64);
        m.sync_lag_seconds.set(
            self.store
                .oldest_due(now)
                .await?
                .map_or(0, |t| (now - t).max(0)),
        );
        m.hub_connected
            .set(self.hub_connected.load(Ordering::Relaxed) as i64);
        m.inbox_held.set(self.store.held_count().await? as i64);
        let log = self.store.log_state().await?;
        m.log_alarm
            .set(log.as_ref().is_some_and(|l| l.alarm.is_some()) as i64);
        m.log_entries.set(log.as_ref().map_or(0, |l| l.size) as i64);
        m.log_unproven
            .set(self.store.proof_counts().await?.1 as i64);
        Ok(m.encode())
    }
}

impl NodeCore {
    /// Key transparency for a student: every card the hub's log holds under the student's card
    /// index, each marked as issued here (and whether it is the card now), and the cards this
    /// node recorded there that the log's listing leaves out. A card from another node, or one
    /// with a hash this node never issued, is a key the student should not find.
    pub async fn student_cards(
        &self,
        pseudonym: &str,
        hub: tonic::transport::Channel,
    ) -> Result<overstap_proto::pb::StudentCardsResponse, NodeError> {
        use overstap_proto::pb::{CardHistoryRequest, LoggedCard, StudentCardsResponse};
        let current = self
            .store
            .student_card(pseudonym)
            .await?
            .map(|c| <sha2::Sha256 as sha2::Digest>::digest(c).to_vec());
        let ours = self.store.cards_of(pseudonym).await?;
        let history = overstap_proto::pb::hub_client::HubClient::new(hub)
            .card_history(CardHistoryRequest {
                card_index: overstap_proto::passport::card_index(pseudonym).to_vec(),
            })
            .await
            .map_err(|s| {
                NodeError::Invalid(format!("the hub did not list the cards: {}", s.message()))
            })?
            .into_inner();
        let cards: Vec<LoggedCard> = history
            .entries
            .iter()
            .zip(&history.log_indexes)
            .map(|(e, i)| LoggedCard {
                log_index: *i,
                from_org: e.from_org.clone(),
                card_sha256: e.body_sha256.clone(),
                at: e.at,
                issued_here: e.from_org == self.org_id
                    && ours.iter().any(|c| c.card_sha256 == e.body_sha256),
                current: current.as_ref() == Some(&e.body_sha256),
            })
            .collect();
        let missing = ours
            .iter()
            .filter(|c| c.log_index.is_some())
            .filter(|c| !cards.iter().any(|l| l.card_sha256 == c.card_sha256))
            .map(|c| c.card_sha256.clone())
            .collect();
        Ok(StudentCardsResponse { cards, missing })
    }
}

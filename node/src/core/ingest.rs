//! Taking in from the hub: each sender's order (sequence numbers, envelopes held for a gap, and
//! asking for what is missing), runs of envelopes taken in under one transaction, and the record
//! of every envelope taken in.

use overstap_proto::ProtocolError;
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::{
    EncryptionKeyPair, Opened, open, open_verified, open_verified_in, verify_header,
    verify_header_in,
};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{Envelope, EnvelopeHeader, EnvelopeKind, Payload, ResendRequest, Signed};
use overstap_proto::sign::{Domain, Memory, decode_body};
use prost::Message;

use crate::store::{Held, Processed, Tx};

use super::status::Owed;
use super::stretch::Stretch;
use super::{NodeCore, NodeError, Outcome, read_lock, stored};

impl NodeCore {
    /// Takes in one envelope from the hub: verify, open, put in the sender's order, check,
    /// commit — all before the caller acks. `Err` means "try again later" (do not ack).
    pub async fn ingest(
        &self,
        envelope: &Envelope,
        receipt: Option<&Signed>,
    ) -> Result<Outcome, NodeError> {
        let (outcome, from) = self.ingest_one(envelope, receipt, false).await?;
        if let Some(from) = from {
            self.drain_held(&from).await?;
        }
        if !matches!(outcome, Outcome::Duplicate | Outcome::Dropped(_)) {
            self.outbox_wake.notify_one();
        }
        Ok(outcome)
    }

    /// Takes in a run of envelopes, in the order the hub delivered them. Every stretch of them
    /// that checks out against the current directory and comes next in its sender's order (what
    /// a cohort push brings) is taken in under one transaction, with one commit; any other
    /// envelope is taken in alone between stretches, as [`NodeCore::ingest`] does. Returns the
    /// outcomes of the first envelopes of the run, in order, each committed and safe to ack;
    /// with an error, the envelopes after those were not taken in (nothing of the stretch the
    /// error came in was kept).
    pub async fn ingest_run(
        &self,
        run: &[(Envelope, Option<Signed>)],
    ) -> (Vec<Outcome>, Option<NodeError>) {
        let mut outcomes = Vec::with_capacity(run.len());
        let error = self.ingest_run_into(run, &mut outcomes).await.err();
        (outcomes, error)
    }

    async fn ingest_run_into(
        &self,
        run: &[(Envelope, Option<Signed>)],
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), NodeError> {
        let dir = self.directory()?;
        // The run's signatures are checked together: each stretch's before it commits.
        let batch = Memory::for_batch();
        // What needs no database, for the whole run and before its transaction: the header's
        // signature, and opening the payload.
        let prepared: Vec<Option<(EnvelopeHeader, Opened)>> = {
            let keys = read_lock(&self.encryption_keys);
            let key_refs: Vec<&EncryptionKeyPair> = keys.iter().collect();
            run.iter()
                .map(|(envelope, _)| {
                    let claimed = decode_body::<EnvelopeHeader>(
                        Domain::EnvelopeHeader,
                        envelope.header.as_ref()?,
                    )
                    .ok()?;
                    // Checked once: `open_verified` does not check the header again.
                    let header =
                        verify_header_in(Some(&batch), envelope, &dir, self.max_body).ok()?;
                    let opened = open_verified_in(
                        Some(&batch),
                        envelope,
                        header,
                        &dir,
                        &self.org_id,
                        &key_refs,
                    )
                    .ok()?;
                    Some((claimed, opened))
                })
                .collect()
        };
        let mut i = 0;
        while i < run.len() {
            let start = i;
            let (mut stretch, senders) = match self
                .take_in_stretch(run, &prepared, &dir, &batch, &mut i)
                .await
            {
                Ok(taken) => taken,
                Err(e) => {
                    // Nothing of the stretch was kept. The rest of the run goes one at a time,
                    // so what comes before the envelope that fails is kept (and acked).
                    tracing::warn!(org = %self.org_id, error = %e, "a run could not be taken in together; one at a time");
                    for (envelope, receipt) in &run[start..] {
                        outcomes.push(self.ingest(envelope, receipt.as_ref()).await?);
                    }
                    return Ok(());
                }
            };
            if stretch.iter().any(|o| *o != Outcome::Duplicate) {
                self.outbox_wake.notify_one();
            }
            outcomes.append(&mut stretch);
            for from in senders {
                self.drain_held(&from).await?;
            }
            if let Some((envelope, receipt)) = run.get(i) {
                outcomes.push(self.ingest(envelope, receipt.as_ref()).await?);
                i += 1;
            }
        }
        Ok(())
    }

    /// Takes in, from `run[*i]` on, the envelopes that checked out (`prepared`) and come next
    /// in their senders' order, in one transaction; `*i` ends at the first that does not. Returns
    /// their outcomes and their senders.
    async fn take_in_stretch(
        &self,
        run: &[(Envelope, Option<Signed>)],
        prepared: &[Option<(EnvelopeHeader, Opened)>],
        dir: &VerifiedDirectory,
        batch: &Memory,
        i: &mut usize,
    ) -> Result<(Vec<Outcome>, std::collections::BTreeSet<String>), NodeError> {
        let mut tx: Option<(Tx, Stretch)> = None;
        let mut owed = Owed::default();
        let mut stretch = Vec::new();
        let mut senders = std::collections::BTreeSet::new();
        // Senders with envelopes held for a gap: theirs go alone, so that what waited is taken
        // in right after the envelope that fills the gap (`drain_held`), before a copy sent
        // again can take its place.
        let mut holding: std::collections::HashMap<String, bool> = Default::default();
        while let Some((claimed, opened)) = prepared.get(*i).and_then(Option::as_ref) {
            let from = &claimed.from_org;
            if !holding.contains_key(from) {
                // Only the inbox loop holds envelopes (the reaper takes held ones in, which can
                // only make the count smaller), and it is here.
                holding.insert(from.clone(), self.store.held_from(from).await? > 0);
            }
            if holding[from] {
                break;
            }
            let (t, known) = match &mut tx {
                Some(t) => t,
                None => {
                    let mut t = self.store.begin().await?;
                    let known = Stretch::start(&mut t, &prepared[*i..]).await?;
                    tx.insert((t, known))
                }
            };
            if known.is_processed(&claimed.envelope_id) {
                stretch.push(Outcome::Duplicate);
            } else {
                let seq = opened.payload.seq;
                if seq != 0 && seq != known.received_seq(t, from).await? + 1 {
                    // Taken in before under another envelope, or ahead of a gap.
                    break;
                }
                let receipt = run[*i].1.as_ref();
                let outcome = self
                    .take_in_next(
                        t,
                        dir,
                        dir,
                        claimed,
                        opened,
                        receipt,
                        false,
                        &mut owed,
                        batch,
                        Some(known),
                    )
                    .await?
                    .ok_or_else(|| {
                        NodeError::Invalid(format!(
                            "envelope {} was taken in twice in one transaction",
                            hex::encode(&claimed.envelope_id)
                        ))
                    })?;
                stretch.push(outcome);
            }
            senders.insert(from.clone());
            *i += 1;
        }
        if let Some((mut t, known)) = tx {
            // Nothing of the stretch is kept unless every signature it was taken in on holds:
            // if one does not, the transaction is dropped and the stretch taken in again one
            // envelope at a time, each signature checked alone.
            batch.settle(&self.checked)?;
            known.finish(&mut t).await?;
            // The packages' senders are answered, one envelope each for the stretch.
            self.send_owed_in(&mut t, owed).await?;
            t.commit().await?;
            if !stretch.is_empty() {
                self.metrics.inbox_commit.observe(stretch.len() as f64);
            }
        }
        Ok((stretch, senders))
    }

    /// Records an envelope dropped because its sender does not check out even against the
    /// hub's newest directory (a removed member, say), so the node's record says what was
    /// dropped and why, and a copy delivered again is known.
    pub async fn record_dropped(
        &self,
        envelope: &Envelope,
        receipt: Option<&Signed>,
        reason: &str,
    ) -> Result<(), NodeError> {
        let Some(Ok(claimed)) = envelope
            .header
            .as_ref()
            .map(|h| decode_body::<EnvelopeHeader>(Domain::EnvelopeHeader, h))
        else {
            return Ok(());
        };
        let mut tx = self.store.begin().await?;
        tx.insert_processed(&Processed {
            envelope_id: claimed.envelope_id,
            from_org: claimed.from_org,
            kind: claimed.kind,
            outcome: "dropped".into(),
            detail: reason.to_string(),
            receipt: receipt.map(|r| r.encode_to_vec()),
            body_sha256: Some(claimed.body_sha256),
            at: self.now(),
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes in, for every sender, what waited for a gap that has been filled since.
    pub async fn drain_all_held(&self) -> Result<(), NodeError> {
        let mut tx = self.store.begin().await?;
        let senders = tx.held_senders().await?;
        drop(tx);
        for from in senders {
            self.drain_held(&from).await?;
        }
        Ok(())
    }

    /// Takes in envelopes that waited for a gap, now that it is filled.
    async fn drain_held(&self, from: &str) -> Result<(), NodeError> {
        loop {
            let next = self.store.peer(from).await?.received_seq + 1;
            let Some(h) = self.store.held(from, next).await? else {
                return Ok(());
            };
            let envelope = stored::<Envelope>(&h.envelope, "held envelope")?;
            let receipt = h
                .receipt
                .as_deref()
                .map(|r| stored::<Signed>(r, "receipt"))
                .transpose()?;
            self.ingest_one(&envelope, receipt.as_ref(), true).await?;
            // A held envelope that can no longer be taken in (its sender's key changed while it
            // waited, say) must not block its sender for ever: pass its number, and say so.
            if self.store.peer(from).await?.received_seq < next {
                tracing::warn!(org = %self.org_id, %from, seq = next, "a held envelope could not be taken in; moving on");
                let mut tx = self.store.begin().await?;
                tx.unhold(from, next).await?;
                tx.set_received_seq(from, next).await?;
                tx.commit().await?;
            }
        }
    }

    /// Returns the outcome, and the sender if its sequence moved on (so held ones may follow).
    async fn ingest_one(
        &self,
        envelope: &Envelope,
        receipt: Option<&Signed>,
        from_held: bool,
    ) -> Result<(Outcome, Option<String>), NodeError> {
        let claimed: EnvelopeHeader = match envelope
            .header
            .as_ref()
            .map(|h| decode_body(Domain::EnvelopeHeader, h))
        {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Ok((Outcome::Dropped(e.to_string()), None)),
            None => return Ok((Outcome::Dropped("envelope has no header".into()), None)),
        };
        if !from_held && self.store.is_processed(&claimed.envelope_id).await? {
            // Taken in before; what waited behind it may not have been (a failed drain).
            return Ok((Outcome::Duplicate, Some(claimed.from_org.clone())));
        }
        let dir = self.directory()?;
        let processed =
            |outcome: &str, detail: String| self.processed_row(&claimed, receipt, outcome, detail);
        // Checks anyone can make. A sender the directory does not know yet may be a new member:
        // fetch the directory again before refusing.
        // The directory the envelope was sealed under: the current one, or the one before the
        // sender's key rotation for an envelope that was in flight across it.
        let mut sealed_under = None;
        let checked = match verify_header(envelope, &dir, self.max_body) {
            Ok(header) => Ok(Some(header)),
            Err(
                e @ (ProtocolError::MissingSignature { .. } | ProtocolError::BadSignature { .. }),
            ) => {
                match self
                    .signed_before_rotation(envelope, &dir, &claimed, receipt)
                    .await?
                {
                    Some(older) => {
                        sealed_under = Some(older);
                        Ok(None)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let verified = match checked {
            Ok(header) => header,
            Err(e) => {
                // An unknown sender may be a new member, and a signature that does not verify may be
                // a rotated key: both mean "fetch the directory and try once more" first.
                if let ProtocolError::UnknownMember(org) = &e {
                    return Err(NodeError::StaleDirectory(org.clone()));
                }
                if matches!(
                    e,
                    ProtocolError::BadSignature { .. } | ProtocolError::MissingSignature { .. }
                ) && !from_held
                {
                    return Err(NodeError::StaleDirectory(claimed.from_org.clone()));
                }
                let reason = e.to_string();
                let mut tx = self.store.begin().await?;
                tx.insert_processed(&processed("dropped", reason.clone()))
                    .await?;
                tx.commit().await?;
                tracing::warn!(org = %self.org_id, %reason, "envelope dropped");
                return Ok((Outcome::Dropped(reason), None));
            }
        };
        let keys = read_lock(&self.encryption_keys);
        let key_refs: Vec<&EncryptionKeyPair> = keys.iter().collect();
        // The header was checked just above under the current directory: not a second time.
        let opened = match verified {
            Some(header) => open_verified(envelope, header, &dir, &self.org_id, &key_refs),
            None => open(
                envelope,
                sealed_under.as_ref().unwrap_or(&dir),
                &self.org_id,
                &key_refs,
                self.max_body,
            ),
        };
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                let mut tx = self.store.begin().await?;
                if !tx
                    .insert_processed(&processed("refused", e.to_string()))
                    .await?
                {
                    return Ok((Outcome::Duplicate, None));
                }
                let outcome = self
                    .refuse_in(&mut tx, &dir, &claimed, None, e.to_string())
                    .await?;
                tx.commit().await?;
                return Ok((outcome, None));
            }
        };
        let from = claimed.from_org.clone();
        let seq = opened.payload.seq;
        let peer = self.store.peer(&from).await?;
        if seq != 0 && seq <= peer.received_seq {
            let mut tx = self.store.begin().await?;
            tx.insert_processed(&processed(
                "duplicate",
                format!("sequence number {seq} was taken in before"),
            ))
            .await?;
            if from_held {
                tx.unhold(&from, seq).await?;
            }
            tx.commit().await?;
            return Ok((Outcome::Duplicate, None));
        }
        if seq > peer.received_seq + 1 {
            // A gap: keep this one, sealed, and ask the sender for what is missing.
            if !from_held && self.store.held_from(&from).await? >= self.max_held_per_sender {
                // A sender far ahead of itself (or one filling this node's disk): this one is
                // not kept. Once the gap is filled, the next envelope from the sender opens a
                // gap that covers it, and it is asked for again.
                let mut tx = self.store.begin().await?;
                tx.insert_processed(&processed(
                    "dropped",
                    format!(
                        "{} envelopes from {from} already wait for sequence number {}; number \
                         {seq} will be asked for again",
                        self.max_held_per_sender,
                        peer.received_seq + 1
                    ),
                ))
                .await?;
                tx.commit().await?;
                tracing::warn!(org = %self.org_id, %from, seq, "too many envelopes held from one sender; one dropped");
                return Ok((Outcome::Duplicate, None));
            }
            let mut tx = self.store.begin().await?;
            tx.hold(
                &Held {
                    from_org: from.clone(),
                    seq,
                    envelope: envelope.encode_to_vec(),
                    receipt: receipt.map(|r| r.encode_to_vec()),
                },
                &claimed.envelope_id,
            )
            .await?;
            // When the number just before is held, everything below it was asked for when that
            // one was held: only a new gap is asked for (before, every envelope behind a gap
            // asked again for the one before it, which was waiting here already).
            if peer.requested_seq < seq - 1 && self.store.held(&from, seq - 1).await?.is_some() {
                tx.set_requested_seq(&from, seq - 1).await?;
            } else if peer.requested_seq < seq - 1 {
                let from_seq = peer.received_seq.max(peer.requested_seq) + 1;
                self.seal_in(
                    &mut tx,
                    &from,
                    EnvelopeKind::Status,
                    None,
                    Payload {
                        content: Some(Content::Resend(ResendRequest {
                            from_seq,
                            to_seq: seq - 1,
                        })),
                        ..Default::default()
                    },
                    None,
                )
                .await?;
                tx.set_requested_seq(&from, seq - 1).await?;
                tracing::warn!(org = %self.org_id, %from, from_seq, to_seq = seq - 1, "gap in the sender's sequence; asked to send again");
            }
            tx.commit().await?;
            return Ok((Outcome::Held { seq }, None));
        }
        let mut tx = self.store.begin().await?;
        let mut owed = Owed::default();
        let Some(outcome) = self
            .take_in_next(
                &mut tx,
                &dir,
                sealed_under.as_ref().unwrap_or(&dir),
                &claimed,
                &opened,
                receipt,
                from_held,
                &mut owed,
                &self.checked,
                None,
            )
            .await?
        else {
            return Ok((Outcome::Duplicate, None));
        };
        self.send_owed_in(&mut tx, owed).await?;
        tx.commit().await?;
        Ok((outcome, Some(from)))
    }

    /// The record of an envelope taken in, with what became of it.
    fn processed_row(
        &self,
        claimed: &EnvelopeHeader,
        receipt: Option<&Signed>,
        outcome: &str,
        detail: String,
    ) -> Processed {
        Processed {
            envelope_id: claimed.envelope_id.clone(),
            from_org: claimed.from_org.clone(),
            kind: claimed.kind,
            outcome: outcome.to_string(),
            detail,
            receipt: receipt.map(|r| r.encode_to_vec()),
            body_sha256: Some(claimed.body_sha256.clone()),
            at: self.now(),
        }
    }

    /// Takes in, inside `tx`, an opened envelope that is next in its sender's order (or carries
    /// no number): the sender's number moves on, the envelope has its effect, and it is marked
    /// processed, last. `None`: it was processed before, and `tx` holds an effect that must be
    /// rolled back. Inside a stretch (`known`), the number and the record are written at the
    /// stretch's end, and the stretch has made sure the envelope is new.
    #[allow(clippy::too_many_arguments)]
    async fn take_in_next(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        sealed_under: &VerifiedDirectory,
        claimed: &EnvelopeHeader,
        opened: &Opened,
        receipt: Option<&Signed>,
        from_held: bool,
        owed: &mut Owed,
        memory: &Memory,
        mut known: Option<&mut Stretch>,
    ) -> Result<Option<Outcome>, NodeError> {
        let from = &claimed.from_org;
        let seq = opened.payload.seq;
        let checkpoint = &opened.payload.checkpoint;
        if !checkpoint.is_empty()
            && known
                .as_mut()
                .is_none_or(|k| k.new_checkpoint(from, checkpoint))
        {
            tx.add_peer_checkpoint(from, checkpoint, self.now()).await?;
        }
        if seq != 0 {
            match known.as_mut() {
                Some(k) => k.set_received_seq(from, seq),
                None => tx.set_received_seq(from, seq).await?,
            }
        }
        if from_held {
            tx.unhold(from, seq).await?;
        }
        let outcome = self
            .apply_in(
                tx,
                dir,
                sealed_under,
                claimed,
                opened,
                receipt,
                owed,
                memory,
                known.as_deref_mut(),
            )
            .await?;
        let (label, detail) = match &outcome {
            Outcome::Stored { grant_id } => ("stored", grant_id.clone()),
            Outcome::Erased { grant_id } => ("erased", grant_id.clone()),
            Outcome::Noted(what) => (*what, String::new()),
            Outcome::Refused(reason) => ("refused", reason.clone()),
            Outcome::RefusalNoted(reason) => ("refusal", reason.clone()),
            Outcome::Duplicate | Outcome::Held { .. } | Outcome::Dropped(_) => {
                ("taken in", String::new())
            }
        };
        let row = self.processed_row(claimed, receipt, label, detail);
        if let Some(k) = known {
            k.processed(row);
            return Ok(Some(outcome));
        }
        // Marking it processed last, in the same transaction: if it was processed before, the
        // whole effect is rolled back.
        if !tx.insert_processed(&row).await? {
            return Ok(None);
        }
        Ok(Some(outcome))
    }
}

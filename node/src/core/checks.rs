//! What an envelope taken in does (`apply_in`, by kind of content), and everything
//! a recipient checks before it keeps anything: a package's or a revocation's signatures against
//! the pinned student card, an envelope in flight across a key rotation, and refusing with a
//! reason.

use overstap_proto::consent::{check_covers, check_in_force, verify_grant_by, verify_revocation};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::{Opened, RECEIVED, verify_header};
use overstap_proto::passport::{
    Signers, check_card_follows, verify_card_in, verify_disclosures, verify_manifest_by,
};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    ConsentGrant, DeletionReceipt, Envelope, EnvelopeHeader, EnvelopeKind, HandoverStatus, Package,
    Payload, Receipt, Refusal, Revocation, RevocationNotice, Signed, StudentCard,
};
use overstap_proto::sign::{Domain, Memory, decode_body, open_signed, verifying_key};
use overstap_proto::{ProtocolError, format_date};
use prost::Message;

use crate::store::{GrantRow, Received, StatusUpdate, TrailRow, Tx};

use super::consent::Erase;
use super::status::Owed;
use super::stretch::Stretch;
use super::{NodeCore, NodeError, Outcome, stored};

impl NodeCore {
    /// The effect of one opened envelope, inside the transaction that marks it processed.
    /// `signed_under` is the directory the envelope was sealed under (the one before its
    /// sender's key rotation, for one in flight across it): what the sender signed inside, such
    /// as a student card, is checked against that. Signatures are checked through `memory`: the
    /// node's own, or one for a batch, settled before the transaction commits.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_in(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        signed_under: &VerifiedDirectory,
        header: &EnvelopeHeader,
        opened: &Opened,
        receipt: Option<&Signed>,
        owed: &mut Owed,
        memory: &Memory,
        mut known: Option<&mut Stretch>,
    ) -> Result<Outcome, NodeError> {
        let from = &header.from_org;
        if let Some(k) = known.as_mut()
            && !matches!(opened.payload.content, Some(Content::Package(_)))
        {
            // What the stretch kept to write goes in before anything else reads the tables.
            k.flush(tx).await?;
            k.unsure();
        }
        match &opened.payload.content {
            Some(Content::Package(p)) => {
                match self
                    .check_package(tx, signed_under, opened, p, memory, known.as_deref_mut())
                    .await?
                {
                    Ok((received, superseded)) => {
                        let grant_id = received.grant_id.clone();
                        match known {
                            // New here: written with the stretch's others, at its end.
                            Some(k) if k.surely_new_grant(&grant_id) => {
                                k.stored(received.clone());
                            }
                            Some(k) => {
                                k.flush(tx).await?;
                                tx.store_received(&received).await?;
                                k.held(&received);
                            }
                            None => tx.store_received(&received).await?,
                        }
                        if superseded {
                            self.erase_in(
                                tx,
                                &grant_id,
                                from,
                                &received.pseudonym,
                                "superseded",
                                Erase::Yes,
                            )
                            .await?;
                        }
                        owed.push(&received, self.now());
                        tracing::info!(org = %self.org_id, %from, version = received.version, "passport stored");
                        Ok(Outcome::Stored { grant_id })
                    }
                    Err(e) => {
                        let grant_id = p
                            .grant
                            .as_ref()
                            .and_then(|g| decode_body::<ConsentGrant>(Domain::Grant, g).ok())
                            .map(|g| g.grant_id);
                        self.refuse_in(tx, dir, header, grant_id, e.to_string())
                            .await
                    }
                }
            }
            Some(Content::Revocation(notice)) => {
                match self
                    .check_revocation(tx, signed_under, from, notice)
                    .await?
                {
                    Ok((rev, held_elsewhere)) => {
                        let erase = if held_elsewhere {
                            Erase::AnswerOnly
                        } else {
                            Erase::Yes
                        };
                        self.erase_in(tx, &rev.grant_id, from, &rev.pseudonym, "revoked", erase)
                            .await?;
                        if held_elsewhere {
                            return Ok(Outcome::Noted(
                                "revocation of a grant held for another school: answered as not held",
                            ));
                        }
                        Ok(Outcome::Erased {
                            grant_id: rev.grant_id,
                        })
                    }
                    Err(e) => self.refuse_in(tx, dir, header, None, e.to_string()).await,
                }
            }
            Some(Content::DeletionReceipt(signed)) => {
                let key = dir.signing_key_of(from)?;
                let Ok(r) = open_signed::<DeletionReceipt>(Domain::DeletionReceipt, signed, &key)
                else {
                    tracing::warn!(%from, "a deletion receipt that does not verify was ignored");
                    return Ok(Outcome::Noted("deletion receipt that does not verify"));
                };
                let Some(g) = tx
                    .grant(&r.grant_id)
                    .await?
                    .filter(|g| g.recipient_org == *from && r.recipient_org == *from)
                else {
                    return Ok(Outcome::Noted("deletion receipt for a grant not held here"));
                };
                if r.reason != "superseded" {
                    tx.set_deletion_receipt(&g.grant_id, &signed.encode_to_vec(), r.erased_at)
                        .await?;
                }
                tx.add_trail(&TrailRow {
                    pseudonym: g.pseudonym.clone(),
                    grant_id: g.grant_id.clone(),
                    org: from.clone(),
                    event: if r.reason == "superseded" { "replaced".into() } else { "erased".into() },
                    at: r.erased_at,
                    detail: match r.reason.as_str() {
                        "superseded" => format!("{from} erased the older version it held"),
                        reason => format!("{from} erased everything this consent brought ({reason}); signed deletion receipt kept"),
                    },
                    envelope_id: Some(header.envelope_id.clone()),
                    hub_receipt: receipt.map(|r| r.encode_to_vec()),
                    evidence: Some(signed.encode_to_vec()),
                })
                .await?;
                Ok(Outcome::Noted("deletion receipt"))
            }
            Some(Content::Status(st)) => {
                let evidence = opened.signed_payload.encode_to_vec();
                self.apply_status_in(tx, header, receipt, st, Some(evidence))
                    .await
            }
            Some(Content::Statuses(run)) => {
                // What the recipient signed for the run is kept once; each trail row names the
                // envelope.
                tx.keep_run_statuses(
                    &header.envelope_id,
                    from,
                    &opened.signed_payload.encode_to_vec(),
                    self.now(),
                )
                .await?;
                self.apply_statuses_in(tx, header, receipt, &run.statuses)
                    .await?;
                Ok(Outcome::Noted("statuses"))
            }
            Some(Content::Refusal(r)) => {
                let grant_id = tx
                    .mark_refused(from, &r.refused_envelope_id, &r.reason)
                    .await?;
                if let Some(id) = &grant_id {
                    tx.pull_refused(id, &r.reason).await?;
                }
                tx.code_pull_refused(&r.refused_envelope_id, &r.reason)
                    .await?;
                if let Some(g) = match grant_id {
                    Some(id) => tx.grant(&id).await?,
                    None => None,
                } {
                    tx.add_trail(&TrailRow {
                        pseudonym: g.pseudonym.clone(),
                        grant_id: g.grant_id.clone(),
                        org: from.clone(),
                        event: "refused".into(),
                        at: self.now(),
                        detail: format!("{from} refused it: {}", r.reason),
                        envelope_id: Some(header.envelope_id.clone()),
                        hub_receipt: receipt.map(|r| r.encode_to_vec()),
                        evidence: Some(opened.signed_payload.encode_to_vec()),
                    })
                    .await?;
                }
                tracing::warn!(org = %self.org_id, by = %from, reason = %r.reason, "our envelope was refused");
                Ok(Outcome::RefusalNoted(r.reason.clone()))
            }
            Some(Content::Resend(req)) => {
                let to = req.to_seq.min(req.from_seq.saturating_add(10_000));
                for entry in tx.outbox_by_peer_seq(from, req.from_seq, to).await? {
                    let payload = stored::<Payload>(&entry.payload, "payload")?;
                    let kind = EnvelopeKind::try_from(entry.kind).unwrap_or(EnvelopeKind::Status);
                    let still_allowed = match (&payload.content, &entry.grant_id) {
                        (Some(Content::Package(_)), Some(id)) => match tx.grant(id).await? {
                            Some(g) => self.grant_allows(&g).await.is_ok(),
                            None => false,
                        },
                        _ => true,
                    };
                    if still_allowed {
                        self.reseal_in(tx, &entry, payload, kind).await?;
                    } else {
                        self.withdraw_in(tx, &entry, "consent ended before it could be sent again")
                            .await?;
                    }
                }
                tracing::info!(org = %self.org_id, to = %from, from_seq = req.from_seq, to_seq = to, "sending again on request");
                Ok(Outcome::Noted("resend request"))
            }
            Some(Content::Skip(_)) => Ok(Outcome::Noted("skip")),
            Some(Content::Pull(req)) => {
                let evidence = (
                    receipt.map(|r| r.encode_to_vec()),
                    opened.signed_payload.encode_to_vec(),
                );
                self.answer_pull_in(tx, header, req, evidence).await
            }
            Some(Content::Notice(n)) => match self.check_notice(signed_under, from, n) {
                Ok(f) => {
                    tx.keep_fetchable(&f).await?;
                    tracing::info!(org = %self.org_id, %from, grant = %f.grant_id, "a passport may be fetched");
                    Ok(Outcome::Noted("notice"))
                }
                Err(e) => self.refuse_in(tx, dir, header, None, e.to_string()).await,
            },
            None => {
                self.refuse_in(tx, dir, header, None, "payload has no content".into())
                    .await
            }
        }
    }

    /// The effect of one status from a recipient (alone, or one of a run's): the grant's status
    /// and the trail, with `evidence` (what the recipient signed) where it came alone.
    async fn apply_status_in(
        &self,
        tx: &mut Tx,
        header: &EnvelopeHeader,
        receipt: Option<&Signed>,
        st: &HandoverStatus,
        evidence: Option<Vec<u8>>,
    ) -> Result<Outcome, NodeError> {
        let g = tx.grant(&st.grant_id).await?;
        match self
            .status_effect(tx, header, receipt, st, evidence, g.as_ref())
            .await?
        {
            Err(noted) => Ok(Outcome::Noted(noted)),
            Ok((update, trail)) => {
                tx.set_grant_statuses(&[update]).await?;
                tx.add_trails(&trail).await?;
                Ok(Outcome::Noted("status"))
            }
        }
    }

    /// The statuses of a run, each with the effect [`NodeCore::apply_status_in`] gives it: the
    /// grants read in one query, their statuses set in one statement and the trail written in
    /// one. A run that names a grant twice goes one status at a time, in order, as the second
    /// depends on what the first set.
    async fn apply_statuses_in(
        &self,
        tx: &mut Tx,
        header: &EnvelopeHeader,
        receipt: Option<&Signed>,
        statuses: &[HandoverStatus],
    ) -> Result<(), NodeError> {
        let mut ids: Vec<String> = statuses.iter().map(|st| st.grant_id.clone()).collect();
        ids.sort();
        ids.dedup();
        if ids.len() < statuses.len() {
            for st in statuses {
                self.apply_status_in(tx, header, receipt, st, None).await?;
            }
            return Ok(());
        }
        let grants = tx.grants_by_id(&ids).await?;
        let (mut updates, mut trail) = (Vec::new(), Vec::new());
        for st in statuses {
            if let Ok((update, rows)) = self
                .status_effect(tx, header, receipt, st, None, grants.get(&st.grant_id))
                .await?
            {
                updates.push(update);
                trail.extend(rows);
            }
        }
        tx.set_grant_statuses(&updates).await?;
        tx.add_trails(&trail).await?;
        Ok(())
    }

    /// What a status does to grant `g` (as read in this transaction): its new status (empty:
    /// kept), time and views, and the trail rows. `Err` says why it does nothing.
    async fn status_effect(
        &self,
        tx: &mut Tx,
        header: &EnvelopeHeader,
        receipt: Option<&Signed>,
        st: &HandoverStatus,
        evidence: Option<Vec<u8>>,
        g: Option<&GrantRow>,
    ) -> Result<Result<(StatusUpdate, Vec<TrailRow>), &'static str>, NodeError> {
        let from = &header.from_org;
        let Some(g) = g.filter(|g| g.recipient_org == *from) else {
            return Ok(Err("status for a grant not held here"));
        };
        // An intake status names the package it is about (for the coordinators' counts,
        // see `EnvelopeHeader.about_package`): one this school sent for the grant.
        if !header.about_package.is_empty()
            && !tx.sent_package(&g.grant_id, &header.about_package).await?
        {
            return Ok(Err(
                "intake status about a package this node did not send for the grant",
            ));
        }
        // A version received again ("ontvangen") does not undo what the recipient set
        // since (gelezen, an intake planned): the trail still gets the delivery.
        let status = if st.status == RECEIVED && !matches!(g.status.as_str(), "" | RECEIVED) {
            ""
        } else {
            st.status.as_str()
        };
        let update = StatusUpdate {
            grant_id: g.grant_id.clone(),
            status: status.to_string(),
            at: st.at,
            views: st.viewed_at.len() as u32,
        };
        let mut events: Vec<(String, i64, String)> = Vec::new();
        for at in &st.viewed_at {
            events.push((
                "viewed".into(),
                *at,
                format!("{from} opened version {}", st.version),
            ));
        }
        if st.viewed_at.is_empty() {
            let (event, detail) = match st.status.as_str() {
                RECEIVED => (
                    "delivered",
                    format!("{from} received version {} and checked it", st.version),
                ),
                other => ("status", format!("{from}: {other}")),
            };
            events.push((event.into(), st.at, detail));
        }
        let trail = events
            .into_iter()
            .map(|(event, at, detail)| TrailRow {
                pseudonym: g.pseudonym.clone(),
                grant_id: g.grant_id.clone(),
                org: from.clone(),
                event,
                at,
                detail,
                envelope_id: Some(header.envelope_id.clone()),
                hub_receipt: receipt.map(|r| r.encode_to_vec()),
                evidence: evidence.clone(),
            })
            .collect();
        Ok(Ok((update, trail)))
    }

    /// Everything a recipient checks before it stores one byte of a package. The outer error is
    /// the node's own trouble (retry later); the inner one is a refusal. The flag says the
    /// package replaces an older version held under the same grant; a package under a grant
    /// held already (fetched or sent again) keeps the status the staff set there.
    async fn check_package(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        opened: &Opened,
        p: &Package,
        memory: &Memory,
        mut known: Option<&mut Stretch>,
    ) -> Result<Result<(Received, bool), ProtocolError>, NodeError> {
        let held = self
            .held_card(
                tx,
                &opened.header.from_org,
                p.card.as_ref(),
                known.as_deref_mut(),
            )
            .await?;
        let mut received = match self.check_package_rules(dir, opened, p, held, memory) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // A grant id this node knows from another school gets one answer, whatever it knows of
        // it, so the sender learns nothing of what is held (or was) for others.
        let taken = || {
            ProtocolError::Consent(format!(
                "grant {} cannot be taken in from {}: its id is in use",
                received.grant_id, received.from_org
            ))
        };
        // What the stretch asked at its start says the grant is new here: nothing to look up.
        match known {
            Some(k) if k.surely_new_grant(&received.grant_id) => return Ok(Ok((received, false))),
            // The lookups below must see what the stretch kept to write.
            Some(k) => k.flush(tx).await?,
            None => {}
        }
        if let Some(e) = tx.erased(&received.grant_id).await? {
            if e.from_org != received.from_org {
                return Ok(Err(taken()));
            }
            return Ok(Err(ProtocolError::Consent(format!(
                "grant {} was erased here on {} ({}); it is not taken in again",
                e.grant_id,
                format_date(e.erased_at),
                e.reason
            ))));
        }
        let mut superseded = false;
        if let Some(held) = tx.received(&received.grant_id).await? {
            if held.from_org != received.from_org || held.pseudonym != received.pseudonym {
                return Ok(Err(taken()));
            }
            if held.version > received.version {
                return Ok(Err(ProtocolError::Consent(format!(
                    "version {} is older than version {} already held under grant {}",
                    received.version, held.version, received.grant_id
                ))));
            }
            superseded = held.version < received.version;
            received.status = held.status;
        }
        Ok(Ok((received, superseded)))
    }

    /// Whether an envelope whose header the sender's current key did not sign was signed, and
    /// accepted by the hub, before that key was rotated in: in flight across the rotation. The
    /// header must verify under the key of the directory version before the rotation, and the
    /// hub's signed receipt must date its arrival before the rotation was issued (with an hour
    /// of grace for publishing it). After that, the old key counts for nothing: a thief who
    /// holds it meets a hub that refuses it.
    pub(super) async fn signed_before_rotation(
        &self,
        envelope: &Envelope,
        dir: &VerifiedDirectory,
        claimed: &EnvelopeHeader,
        receipt: Option<&Signed>,
    ) -> Result<Option<VerifiedDirectory>, NodeError> {
        const GRACE: i64 = 3_600;
        let Some(receipt) = receipt else {
            return Ok(None);
        };
        let Some(hub_key) = dir
            .hub()
            .and_then(|h| verifying_key(&h.signing_key, "hub key").ok())
        else {
            return Ok(None);
        };
        let Ok(r) = open_signed::<Receipt>(Domain::Receipt, receipt, &hub_key) else {
            return Ok(None);
        };
        let Ok(current) = dir.member(&claimed.from_org).map(|m| m.signing_key.clone()) else {
            return Ok(None);
        };
        // Newest first: the versions with the current key, then the one before the rotation.
        let mut rotated_at = None;
        for bytes in self.store.directories().await? {
            let Ok(signed) = Signed::decode(bytes.as_slice()) else {
                continue;
            };
            let Ok(older) = VerifiedDirectory::verify(&signed, &self.authority, 0) else {
                continue;
            };
            let Ok(key) = older
                .member(&claimed.from_org)
                .map(|m| m.signing_key.clone())
            else {
                return Ok(None);
            };
            if key == current {
                rotated_at = Some(older.directory.issued_at);
                continue;
            }
            let Some(rotated_at) = rotated_at else {
                return Ok(None);
            };
            let in_flight = r.envelope_id == claimed.envelope_id
                && r.received_at < rotated_at + GRACE
                && verify_header(envelope, &older, self.max_body).is_ok();
            return Ok(in_flight.then_some(older));
        }
        Ok(None)
    }

    /// The newest card this node holds for the student an incoming card names, if any.
    async fn held_card(
        &self,
        tx: &mut Tx,
        home: &str,
        incoming: Option<&Signed>,
        known: Option<&mut Stretch>,
    ) -> Result<Option<StudentCard>, NodeError> {
        let Some(Ok(probe)) = incoming.map(|c| decode_body::<StudentCard>(Domain::StudentCard, c))
        else {
            return Ok(None);
        };
        match known {
            Some(k) if k.surely_no_card(&probe.pseudonym) => return Ok(None),
            Some(k) => k.flush(tx).await?,
            None => {}
        }
        Ok(tx
            .held_cards(home, &probe.pseudonym)
            .await?
            .iter()
            .filter_map(|bytes| Signed::decode(bytes.as_slice()).ok())
            .filter_map(|s| decode_body::<StudentCard>(Domain::StudentCard, &s).ok())
            .max_by_key(|c| c.issued_at))
    }

    fn check_package_rules(
        &self,
        dir: &VerifiedDirectory,
        opened: &Opened,
        p: &Package,
        held: Option<StudentCard>,
        memory: &Memory,
    ) -> Result<Received, ProtocolError> {
        let home = &opened.header.from_org;
        let missing = |what: &'static str| ProtocolError::Malformed {
            what,
            detail: "missing from package".into(),
        };
        let card_signed = p.card.as_ref().ok_or_else(|| missing("student card"))?;
        let manifest_signed = p.manifest.as_ref().ok_or_else(|| missing("manifest"))?;
        let grant_signed = p.grant.as_ref().ok_or_else(|| missing("consent grant"))?;
        let card = verify_card_in(memory, card_signed, &dir.signing_key_of(home)?)?;
        if card.home_org != *home {
            return Err(ProtocolError::Consent(format!(
                "the student's card was issued by {}, the package came from {home}",
                card.home_org
            )));
        }
        let card = pinned_card(held, card)?;
        let memory = Some(memory);
        let rule = Signers::StudentAndGuardian;
        let manifest = verify_manifest_by(manifest_signed, &card, self.now(), rule, memory)?;
        let grant = verify_grant_by(grant_signed, &card, self.now(), rule, memory)?;
        check_in_force(&grant, self.now())?;
        let sections = verify_disclosures(&manifest, &p.sections)?;
        let ids: Vec<String> = sections.iter().map(|s| s.section_id.clone()).collect();
        check_covers(&grant, &self.org_id, &opened.payload.purpose, &ids)?;
        let disclosures = ids
            .iter()
            .cloned()
            .zip(p.sections.iter().map(|d| d.encode_to_vec()))
            .collect();
        Ok(Received {
            grant_id: grant.grant_id.clone(),
            pseudonym: card.pseudonym.clone(),
            from_org: home.clone(),
            purpose: grant.purpose.clone(),
            sections: ids,
            not_before: grant.not_before,
            not_after: grant.not_after,
            live: grant.live,
            version: manifest.version,
            question_set: manifest.question_set.clone(),
            card: card_signed.encode_to_vec(),
            manifest: manifest_signed.encode_to_vec(),
            grant_signed: grant_signed.encode_to_vec(),
            envelope_id: opened.header.envelope_id.clone(),
            received_at: self.now(),
            status: "ontvangen".into(),
            disclosures,
        })
    }

    /// A revocation must be the student's (checked against the card the home school signed),
    /// and for a grant held from that school, if one is held at all.
    async fn check_revocation(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        home: &str,
        notice: &RevocationNotice,
    ) -> Result<Result<(Revocation, bool), ProtocolError>, NodeError> {
        let held = self.held_card(tx, home, notice.card.as_ref(), None).await?;
        let check = || -> Result<Revocation, ProtocolError> {
            let card_signed = notice.card.as_ref().ok_or(ProtocolError::Malformed {
                what: "revocation",
                detail: "no card".into(),
            })?;
            let rev_signed = notice.revocation.as_ref().ok_or(ProtocolError::Malformed {
                what: "revocation",
                detail: "empty".into(),
            })?;
            let card = verify_card_in(&self.checked, card_signed, &dir.signing_key_of(home)?)?;
            if card.home_org != home {
                return Err(ProtocolError::Consent(format!(
                    "the card was issued by {}, not {home}",
                    card.home_org
                )));
            }
            verify_revocation(rev_signed, &pinned_card(held, card)?, self.now())
        };
        let rev = match check() {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(held) = tx.received(&rev.grant_id).await?
            && (held.from_org != home || held.pseudonym != rev.pseudonym)
        {
            // Held for another school or student: answered exactly as a grant never held here
            // (a deletion receipt), so the sender learns nothing of what this node holds; the
            // grant itself is left alone.
            return Ok(Ok((rev, true)));
        }
        Ok(Ok((rev, false)))
    }

    /// Records a refusal and tells the (authenticated) sender why, in the same transaction.
    /// Status envelopes (refusals among them) are never answered with a refusal: no loops.
    pub(super) async fn refuse_in(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        header: &EnvelopeHeader,
        grant_id: Option<String>,
        reason: String,
    ) -> Result<Outcome, NodeError> {
        tracing::warn!(org = %self.org_id, from = %header.from_org, %reason, "envelope refused");
        if dir.member(&header.from_org).is_ok() && header.kind() != EnvelopeKind::Status {
            self.seal_in(
                tx,
                &header.from_org,
                EnvelopeKind::Status,
                None,
                Payload {
                    content: Some(Content::Refusal(Refusal {
                        refused_envelope_id: header.envelope_id.clone(),
                        grant_id: grant_id.unwrap_or_default(),
                        reason: reason.clone(),
                    })),
                    ..Default::default()
                },
                None,
            )
            .await?;
        }
        Ok(Outcome::Refused(reason))
    }
}

/// The card to check a student's signatures against, when `held` is the newest card this node
/// already holds for the student and `incoming` came with an envelope: whichever is newer, once
/// the newer is shown to follow from the older (so a school cannot swap a student's key
/// unnoticed, and an old card cannot bring a lost key back).
fn pinned_card(
    held: Option<StudentCard>,
    incoming: StudentCard,
) -> Result<StudentCard, ProtocolError> {
    match held {
        None => Ok(incoming),
        Some(held) if incoming.issued_at >= held.issued_at => {
            check_card_follows(&held, &incoming)?;
            Ok(incoming)
        }
        Some(held) => {
            check_card_follows(&incoming, &held)?;
            Ok(held)
        }
    }
}

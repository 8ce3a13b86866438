//! Consent and its end: keeping a grant, checking that it still allows sending, revoking it,
//! erasing what a grant brought (with a signed deletion receipt), and the reaper that ends what
//! ran out.

use overstap_proto::consent::verify_grant_by;
use overstap_proto::consent::{
    GrantTime, check_in_force, grant_time, verify_revocation, window_time,
};
use overstap_proto::passport::{Signers, refuse_retired_keys};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    ConsentGrant, DeletionReceipt, EnvelopeKind, MemberKind, Payload, Revocation, RevocationNotice,
    Signed,
};
use overstap_proto::sign::{Domain, decode_body, sign_message};
use overstap_proto::{UnixTime, format_date};
use prost::Message;

use crate::store::{Erased, GrantRow, TrailRow, Tx};

use super::{NodeCore, NodeError, stored};

impl NodeCore {
    /// Keeps a grant signed by the student (and guardian under 16).
    pub async fn add_grant(&self, signed: &Signed) -> Result<String, NodeError> {
        self.keep_grant(signed, Signers::StudentAndGuardian, None)
            .await
    }

    /// Checks a grant with the signatures `rule` asks for; with `held`, it is held for a
    /// guardian (and not kept yet), and without, kept. With `drop_held`, the grant a guardian
    /// just co-signed leaves the held ones in the same transaction.
    pub(super) async fn keep_grant(
        &self,
        signed: &Signed,
        rule: Signers,
        drop_held: Option<i64>,
    ) -> Result<String, NodeError> {
        let probe: ConsentGrant = decode_body(Domain::Grant, signed)?;
        let (card_signed, card) = self.card(&probe.pseudonym).await?;
        refuse_retired_keys(Domain::Grant, signed, &card)?;
        let grant = verify_grant_by(signed, &card, self.now(), rule, Some(&self.checked))?;
        if grant.recipient_org == self.org_id {
            return Err(NodeError::Invalid(
                "a grant to the home school itself is not needed".into(),
            ));
        }
        let dir = self.directory()?;
        let recipient = dir.member(&grant.recipient_org)?;
        if matches!(recipient.kind(), MemberKind::Hub | MemberKind::Coordinator) {
            return Err(NodeError::Invalid(format!(
                "{} is a {} and cannot receive passports",
                grant.recipient_org,
                overstap_proto::directory::kind_name(recipient.kind())
            )));
        }
        if grant_time(&grant, self.now()) == GrantTime::Expired {
            check_in_force(&grant, self.now())?;
        }
        let version = self
            .store
            .latest_version(&grant.pseudonym)
            .await?
            .ok_or_else(|| {
                NodeError::Precondition(format!(
                    "student {} has no signed passport yet",
                    grant.pseudonym
                ))
            })?;
        let mut tx = self.store.begin().await?;
        if rule == Signers::StudentFirst {
            tx.hold_for_guardian(
                &grant.pseudonym,
                "consent",
                &signed.encode_to_vec(),
                None,
                self.now(),
            )
            .await?;
            tx.commit().await?;
            return Ok(grant.grant_id);
        }
        if let Some(id) = drop_held {
            tx.drop_held(id).await?;
        }
        tx.insert_grant(
            &GrantRow {
                grant_id: grant.grant_id.clone(),
                pseudonym: grant.pseudonym.clone(),
                recipient_org: grant.recipient_org.clone(),
                purpose: grant.purpose.clone(),
                sections: grant.sections.clone(),
                not_before: grant.not_before,
                not_after: grant.not_after,
                live: grant.live,
                passport_version: version.version,
                signed: signed.encode_to_vec(),
                state: "active".into(),
                sent_version: None,
                sent_at: None,
                status: String::new(),
                status_at: None,
                views: 0,
                fetched_at: None,
            },
            self.now(),
        )
        .await?;
        tx.add_trail(&TrailRow {
            pseudonym: grant.pseudonym.clone(),
            grant_id: grant.grant_id.clone(),
            org: grant.recipient_org.clone(),
            event: "consent".into(),
            at: self.now(),
            detail: format!(
                "{} may read {} for {}, until {}{}",
                grant.recipient_org,
                grant.sections.join(", "),
                grant.purpose,
                format_date(grant.not_after),
                if grant.live {
                    " (later versions follow)"
                } else {
                    ""
                }
            ),
            evidence: Some(signed.encode_to_vec()),
            ..Default::default()
        })
        .await?;
        if grant.may_fetch {
            self.notice_in(&mut tx, &grant, signed, &card_signed)
                .await?;
        }
        tx.commit().await?;
        if grant.may_fetch {
            self.outbox_wake.notify_one();
        }
        Ok(grant.grant_id)
    }

    /// Checks that the grant still allows sending: active, signed, in force. Returns the grant
    /// and the student's card it was checked against.
    pub(super) async fn grant_allows(
        &self,
        g: &GrantRow,
    ) -> Result<(ConsentGrant, Signed), NodeError> {
        let card = match g.state.as_str() {
            "active" => self.store.student_card(&g.pseudonym).await?,
            _ => None,
        };
        self.grant_allows_with(g, card.as_deref())
    }

    /// [`NodeCore::grant_allows`], with the student's card as stored (read beforehand).
    pub(super) fn grant_allows_with(
        &self,
        g: &GrantRow,
        card: Option<&[u8]>,
    ) -> Result<(ConsentGrant, Signed), NodeError> {
        if g.state != "active" {
            return Err(NodeError::Precondition(format!(
                "grant {} is {}",
                g.grant_id, g.state
            )));
        }
        let (card_signed, card) = self.card_from(&g.pseudonym, card)?;
        let grant = verify_grant_by(
            &stored::<Signed>(&g.signed, "grant")?,
            &card,
            self.now(),
            Signers::StudentAndGuardian,
            Some(&self.checked),
        )?;
        check_in_force(&grant, self.now()).map_err(|e| NodeError::Precondition(e.to_string()))?;
        Ok((grant, card_signed))
    }

    /// Revokes a grant on the student's signed word: packages not yet out are withdrawn and a
    /// revocation goes to the recipient, which erases and answers with a deletion receipt.
    pub async fn revoke(&self, signed: &Signed) -> Result<(String, Vec<u8>), NodeError> {
        let probe: Revocation = decode_body(Domain::Revocation, signed)?;
        let (card_signed, card) = self.card(&probe.pseudonym).await?;
        refuse_retired_keys(Domain::Revocation, signed, &card)?;
        let rev = verify_revocation(signed, &card, self.now())?;
        let g = self
            .store
            .grant(&rev.grant_id)
            .await?
            .filter(|g| g.pseudonym == rev.pseudonym)
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "no grant {} of student {} here",
                    rev.grant_id, rev.pseudonym
                ))
            })?;
        if g.state != "active" {
            return Err(NodeError::Precondition(format!(
                "grant {} has already ended: it is {}",
                g.grant_id, g.state
            )));
        }
        if grant_time_of(&g, self.now()) == GrantTime::Expired {
            return Err(NodeError::Precondition(format!(
                "grant {} has already ended: it expired on {}",
                g.grant_id,
                format_date(g.not_after)
            )));
        }
        // No package of this grant may be on its way while it is withdrawn.
        let _no_push = self.push_gate.write().await;
        let mut tx = self.store.begin().await?;
        // It may have ended since it was read (expired, or erased by a receipt).
        if let Some(now) = tx.grant(&g.grant_id).await?
            && now.state != "active"
        {
            return Err(NodeError::Precondition(format!(
                "grant {} has already ended: it is {}",
                g.grant_id, now.state
            )));
        }
        for entry in tx
            .outbox_of_grant(&g.grant_id, &["pending", "waiting"])
            .await?
        {
            if entry.kind == EnvelopeKind::Package as i32 {
                self.withdraw_in(&mut tx, &entry, "consent was revoked before it left")
                    .await?;
            }
        }
        tx.revoke_grant(&g.grant_id, self.now()).await?;
        let sealed = self
            .seal_in(
                &mut tx,
                &g.recipient_org,
                EnvelopeKind::Revocation,
                Some(&g.grant_id),
                Payload {
                    purpose: g.purpose.clone(),
                    content: Some(Content::Revocation(RevocationNotice {
                        revocation: Some(signed.clone()),
                        card: Some(card_signed),
                    })),
                    ..Default::default()
                },
                None,
            )
            .await?;
        tx.add_trail(&TrailRow {
            pseudonym: g.pseudonym.clone(),
            grant_id: g.grant_id.clone(),
            org: g.recipient_org.clone(),
            event: "revoked".into(),
            at: self.now(),
            detail: format!("the student withdrew the consent for {}", g.recipient_org),
            evidence: Some(signed.encode_to_vec()),
            ..Default::default()
        })
        .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok((g.grant_id, sealed.envelope_id))
    }

    /// Erases what a grant brought, signs a deletion receipt and queues it for the home school.
    pub(super) async fn erase_in(
        &self,
        tx: &mut Tx,
        grant_id: &str,
        home: &str,
        pseudonym: &str,
        reason: &str,
        erase: Erase,
    ) -> Result<(), NodeError> {
        let receipt = DeletionReceipt {
            grant_id: grant_id.to_string(),
            pseudonym: pseudonym.to_string(),
            recipient_org: self.org_id.clone(),
            erased_at: self.now(),
            reason: reason.to_string(),
        };
        let signed = sign_message(Domain::DeletionReceipt, &receipt, &[&self.key()]);
        if reason != "superseded" {
            tx.drop_fetchable(grant_id).await?;
        }
        if reason != "superseded" && erase == Erase::Yes {
            tx.erase_received(&Erased {
                grant_id: grant_id.to_string(),
                from_org: home.to_string(),
                reason: reason.to_string(),
                erased_at: self.now(),
                receipt: signed.encode_to_vec(),
            })
            .await?;
        }
        if self.directory()?.member(home).is_ok() {
            self.seal_in(
                tx,
                home,
                EnvelopeKind::DeletionReceipt,
                Some(grant_id),
                Payload {
                    content: Some(Content::DeletionReceipt(signed)),
                    ..Default::default()
                },
                None,
            )
            .await?;
        } else {
            tracing::warn!(org = %self.org_id, %home, "erased, but the home school left the region: the receipt is kept here");
        }
        tracing::info!(org = %self.org_id, grant = %grant_id, %reason, "erased; deletion receipt queued");
        Ok(())
    }

    /// Erases every received passport whose grant has run out, and marks this node's own
    /// grants that ran out as expired. Returns how many received passports were erased.
    pub async fn reap(&self) -> Result<usize, NodeError> {
        let now = self.now();
        let mut erased = 0;
        for (grant_id, from) in self.store.received_expired(now).await? {
            let Some(r) = self.store.received(&grant_id).await? else {
                continue;
            };
            // One item's trouble must not keep the others from being erased.
            let mut tx = self.store.begin().await?;
            match self
                .erase_in(
                    &mut tx,
                    &grant_id,
                    &from,
                    &r.pseudonym,
                    "expired",
                    Erase::Yes,
                )
                .await
            {
                Ok(()) => {
                    tx.commit().await?;
                    erased += 1;
                }
                Err(e) => {
                    tracing::error!(org = %self.org_id, grant = %grant_id, error = %e, "erasing an expired passport failed; it is tried again")
                }
            }
        }
        let mut tx = self.store.begin().await?;
        tx.drop_fetchables_ended(now).await?;
        tx.commit().await?;
        for g in self.store.grants_expired(now).await? {
            let _no_push = self.push_gate.write().await;
            let mut tx = self.store.begin().await?;
            // Read again under the writer lock: the recipient, erasing on its own clock, may
            // have sent its deletion receipt, and this node taken it in ("erased"), since the
            // list was read. Marking it "expired" now would undo that.
            if tx
                .grant(&g.grant_id)
                .await?
                .is_none_or(|now| now.state != "active")
            {
                continue;
            }
            for entry in tx
                .outbox_of_grant(&g.grant_id, &["pending", "waiting"])
                .await?
            {
                if entry.kind == EnvelopeKind::Package as i32
                    && let Err(e) = self
                        .withdraw_in(&mut tx, &entry, "consent expired before it left")
                        .await
                {
                    tracing::error!(org = %self.org_id, grant = %g.grant_id, error = %e, "withdrawing a package failed");
                }
            }
            tx.set_grant_state(&g.grant_id, "expired").await?;
            tx.add_trail(&TrailRow {
                pseudonym: g.pseudonym.clone(),
                grant_id: g.grant_id.clone(),
                org: g.recipient_org.clone(),
                event: "expired".into(),
                at: now,
                detail: format!(
                    "consent for {} ran out on {}",
                    g.recipient_org,
                    format_date(g.not_after)
                ),
                ..Default::default()
            })
            .await?;
            tx.commit().await?;
        }
        if erased > 0 {
            self.outbox_wake.notify_one();
        }
        Ok(erased)
    }
}

pub(super) fn grant_time_of(g: &GrantRow, now: UnixTime) -> GrantTime {
    window_time(g.not_before, g.not_after, now)
}

/// Whether `erase_in` removes what is held, or only answers as if it had (for a grant held here
/// for another school, whose existence the asking school must not learn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Erase {
    Yes,
    AnswerOnly,
}

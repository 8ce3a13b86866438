//! Recipients pull. At the home school: a grant the student let the recipient fetch
//! (`ConsentGrant.may_fetch`) sends the recipient a notice without content; a pull request is
//! answered on its own with the package a push would send (the newest version for a live grant,
//! the consented one otherwise), or with one refusal whatever the reason. At the recipient: the
//! notice is checked and kept, and a pull is an envelope to the home school like any other.

use overstap_proto::consent::{
    check_in_force, pickup_code_digest, plain_pickup_code, verify_grant_by, verify_pickup_code,
};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::passport::{Signers, refuse_retired_keys, verify_card_in};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    ConsentGrant, EnvelopeHeader, EnvelopeKind, GrantNotice, Payload, PickupCode, PullRequest,
    Refusal, Signed,
};
use overstap_proto::sign::{Domain, decode_body};
use overstap_proto::{ProtocolError, format_date};
use prost::Message;

use crate::store::{Fetchable, GrantRow, TrailRow, Tx};

use super::status::audit_row;
use super::{NodeCore, NodeError, Outcome, stored};

/// Whether a stored signed grant lets its recipient fetch (`may_fetch`).
pub fn lets_fetch(grant_signed: &[u8]) -> Result<bool, NodeError> {
    let grant: ConsentGrant =
        decode_body(Domain::Grant, &stored::<Signed>(grant_signed, "grant")?)?;
    Ok(grant.may_fetch)
}

/// How many symbols a pickup code has (after the school's id).
const PICKUP_CODE_LEN: usize = 8;
/// Wrong pickup codes one member may bring in a quarter of an hour before its codes pause.
const PICKUP_MAX_FAILURES: i64 = 5;
const PICKUP_PAUSE_SECS: i64 = 15 * 60;

/// The one answer to a pull the home node will not serve, whatever the reason: no such grant,
/// another recipient's, another purpose, withdrawn, run out, not fetchable. So a pull tells
/// nothing about students the requester may not see.
pub const PULL_REFUSED: &str = "nothing to fetch: no grant here lets you fetch this passport now";

impl NodeCore {
    /// Home side, inside the transaction that keeps `grant`: tells the recipient it may fetch.
    pub(super) async fn notice_in(
        &self,
        tx: &mut Tx,
        grant: &ConsentGrant,
        grant_signed: &Signed,
        card: &Signed,
    ) -> Result<(), NodeError> {
        self.seal_in(
            tx,
            &grant.recipient_org,
            EnvelopeKind::Status,
            Some(&grant.grant_id),
            Payload {
                purpose: grant.purpose.clone(),
                content: Some(Content::Notice(GrantNotice {
                    card: Some(card.clone()),
                    grant: Some(grant_signed.clone()),
                })),
                ..Default::default()
            },
            None,
        )
        .await?;
        Ok(())
    }

    /// Recipient side: a home school's notice that this node may fetch. The card must be the
    /// school's, the grant the student's (and a guardian's under 16), for this node.
    pub(super) fn check_notice(
        &self,
        dir: &VerifiedDirectory,
        home: &str,
        n: &GrantNotice,
    ) -> Result<Fetchable, ProtocolError> {
        let missing = |what: &'static str| ProtocolError::Malformed {
            what,
            detail: "missing from the notice".into(),
        };
        let card_signed = n.card.as_ref().ok_or_else(|| missing("student card"))?;
        let grant_signed = n.grant.as_ref().ok_or_else(|| missing("consent grant"))?;
        let card = verify_card_in(&self.checked, card_signed, &dir.signing_key_of(home)?)?;
        if card.home_org != home {
            return Err(ProtocolError::Consent(format!(
                "the student's card was issued by {}, the notice came from {home}",
                card.home_org
            )));
        }
        let grant = verify_grant_by(
            grant_signed,
            &card,
            self.now(),
            Signers::StudentAndGuardian,
            Some(&self.checked),
        )?;
        if grant.recipient_org != self.org_id || !grant.may_fetch {
            return Err(ProtocolError::Consent(format!(
                "grant {} does not let {} fetch",
                grant.grant_id, self.org_id
            )));
        }
        check_in_force(&grant, self.now())?;
        Ok(Fetchable {
            grant_id: grant.grant_id,
            from_org: home.to_string(),
            pseudonym: card.pseudonym,
            purpose: grant.purpose,
            sections: grant.sections,
            not_before: grant.not_before,
            not_after: grant.not_after,
            card: card_signed.encode_to_vec(),
            grant_signed: grant_signed.encode_to_vec(),
            noticed_at: self.now(),
            asked_at: None,
            refused: None,
        })
    }

    /// Recipient side: asks the home school for the passport under `grant_id`, which a notice
    /// (or a passport held under a grant that lets this node fetch) names. Returns the request's
    /// envelope id and the home school asked; the package comes back like a push.
    pub async fn pull(
        &self,
        grant_id: &str,
        staff_user: &str,
        role: &str,
    ) -> Result<(Vec<u8>, String), NodeError> {
        let now = self.now();
        let (home, purpose, not_after) = match self.store.fetchable(grant_id).await? {
            Some(f) => (f.from_org, f.purpose, f.not_after),
            None => {
                let r = self.store.received(grant_id).await?.ok_or_else(|| {
                    NodeError::NotFound(format!("no grant {grant_id} lets this node fetch"))
                })?;
                if !lets_fetch(&r.grant_signed)? {
                    return Err(NodeError::Precondition(format!(
                        "the student did not let this node fetch under grant {grant_id}: ask the school to send it"
                    )));
                }
                (r.from_org, r.purpose, r.not_after)
            }
        };
        if now >= not_after {
            return Err(NodeError::Precondition(format!(
                "grant {grant_id} ran out on {}",
                format_date(not_after)
            )));
        }
        let mut tx = self.store.begin().await?;
        let sealed = self
            .seal_in(
                &mut tx,
                &home,
                EnvelopeKind::PullRequest,
                Some(grant_id),
                Payload {
                    purpose: purpose.clone(),
                    content: Some(Content::Pull(PullRequest {
                        grant_id: grant_id.to_string(),
                        purpose,
                        pickup_code: String::new(),
                    })),
                    ..Default::default()
                },
                None,
            )
            .await?;
        tx.pull_asked(grant_id, now).await?;
        tx.audit(&audit_row(now, staff_user, role, "pull", grant_id, &home))
            .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok((sealed.envelope_id, home))
    }

    /// Home side: keeps a student's signed pickup code for one of their grants that is in
    /// force. Returns when it ends.
    pub async fn add_pickup_code(&self, signed: &Signed) -> Result<i64, NodeError> {
        let probe: PickupCode = decode_body(Domain::PickupCode, signed)?;
        let (_, card) = self.card(&probe.pseudonym).await?;
        refuse_retired_keys(Domain::PickupCode, signed, &card)?;
        let code = verify_pickup_code(signed, &card, self.now())?;
        let mut tx = self.store.begin().await?;
        let g = tx
            .grant(&code.grant_id)
            .await?
            .filter(|g| g.pseudonym == code.pseudonym)
            .ok_or_else(|| {
                NodeError::NotFound(format!("no grant {} of this student", code.grant_id))
            })?;
        self.grant_allows(&g).await?;
        tx.add_pickup_code(
            &code.code_sha256,
            &code.grant_id,
            &signed.encode_to_vec(),
            code.expires_at,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(code.expires_at)
    }

    /// Recipient side: redeems a student's pickup code as they show it ("25LP-K7QM-3XPA": the
    /// school's id, then the code) with a pull to that school. Returns the request's envelope
    /// id and the school.
    pub async fn redeem_pickup_code(
        &self,
        shown: &str,
        staff_user: &str,
        role: &str,
    ) -> Result<(Vec<u8>, String), NodeError> {
        let plain = plain_pickup_code(shown);
        let not_a_code = || {
            NodeError::Invalid(
                "a pickup code is the school's id and eight letters and digits, like 25LP-K7QM-3XPA"
                    .into(),
            )
        };
        if plain.len() <= PICKUP_CODE_LEN {
            return Err(not_a_code());
        }
        let (school, code) = plain.split_at(plain.len() - PICKUP_CODE_LEN);
        let dir = self.directory()?;
        let home = dir
            .directory
            .members
            .iter()
            .find(|m| plain_pickup_code(&m.org_id) == school)
            .map(|m| m.org_id.clone())
            .ok_or_else(|| NodeError::NotFound(format!("no school {school} in this region")))?;
        if home == self.org_id {
            return Err(not_a_code());
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let sealed = self
            .seal_in(
                &mut tx,
                &home,
                EnvelopeKind::PullRequest,
                None,
                Payload {
                    content: Some(Content::Pull(PullRequest {
                        pickup_code: code.to_string(),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                None,
            )
            .await?;
        tx.code_pull_asked(&sealed.envelope_id, &home, staff_user, now)
            .await?;
        tx.audit(&audit_row(now, staff_user, role, "pull-code", "", &home))
            .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok((sealed.envelope_id, home))
    }

    /// Home side: the grant a pull with a pickup code names, if the code is good for `from`
    /// now (it is then used up); why not otherwise. Wrong codes count against `from`.
    async fn grant_of_code(
        &self,
        tx: &mut Tx,
        from: &str,
        code: &str,
    ) -> Result<Result<GrantRow, String>, NodeError> {
        let now = self.now();
        let since = now - PICKUP_PAUSE_SECS;
        if tx.pickup_failures(from, since).await? >= PICKUP_MAX_FAILURES {
            return Ok(Err("too many wrong pickup codes from this member".into()));
        }
        let digest = pickup_code_digest(code);
        let row = tx.pickup_code(&digest).await?;
        let found = match &row {
            Some(r) if r.used_at.is_some() => Err("the code was used already".to_string()),
            Some(r) if now >= r.expires_at => Err("the code ran out".to_string()),
            Some(r) => match tx.grant(&r.grant_id).await? {
                Some(g) if g.recipient_org == from => Ok(g),
                Some(_) => Err("the code is for another recipient".to_string()),
                None => Err("the code's grant is gone".to_string()),
            },
            None => Err("no such code".to_string()),
        };
        match found {
            Ok(g) => {
                tx.use_pickup_code(&digest, from, now).await?;
                Ok(Ok(g))
            }
            Err(why) => {
                tx.pickup_failed(from, now, since).await?;
                Ok(Err(why))
            }
        }
    }

    /// Home side: answers a pull on its own, with the package a push would send, or refuses
    /// with [`PULL_REFUSED`] whatever the reason (the reason is logged here only).
    pub(super) async fn answer_pull_in(
        &self,
        tx: &mut Tx,
        header: &EnvelopeHeader,
        req: &PullRequest,
        receipt_and_evidence: (Option<Vec<u8>>, Vec<u8>),
    ) -> Result<Outcome, NodeError> {
        let from = &header.from_org;
        let with_code = !req.pickup_code.is_empty();
        let (g, code_refused) = if with_code {
            match self.grant_of_code(tx, from, &req.pickup_code).await? {
                Ok(g) => (Some(g), None),
                Err(why) => (None, Some(why)),
            }
        } else {
            let g = match tx.grant(&req.grant_id).await? {
                Some(g) if g.recipient_org == *from && g.purpose == req.purpose => Some(g),
                _ => None,
            };
            (g, None)
        };
        let why_not = match &g {
            None => Some(
                code_refused.unwrap_or_else(|| "no grant of this recipient and purpose".into()),
            ),
            // The student's code is their say-so for this fetch, whatever the grant says of
            // fetching; the grant must still be in force.
            Some(g) if with_code => self.grant_allows(g).await.err().map(|e| e.to_string()),
            Some(g) => {
                if !lets_fetch(&g.signed)? {
                    Some("the student did not let it fetch".into())
                } else {
                    self.grant_allows(g).await.err().map(|e| e.to_string())
                }
            }
        };
        if let Some(why) = why_not {
            tracing::warn!(org = %self.org_id, by = %from, grant = %req.grant_id, reason = %why, "a pull was refused");
            self.seal_in(
                tx,
                from,
                EnvelopeKind::Status,
                None,
                Payload {
                    content: Some(Content::Refusal(Refusal {
                        refused_envelope_id: header.envelope_id.clone(),
                        grant_id: req.grant_id.clone(),
                        reason: PULL_REFUSED.into(),
                    })),
                    ..Default::default()
                },
                None,
            )
            .await?;
            return Ok(Outcome::Refused(PULL_REFUSED.into()));
        }
        let g = g.expect("a grant that allows the pull");
        let sent = self.send_now_in(tx, &g, true).await?;
        tx.set_fetched(&g.grant_id, self.now()).await?;
        let (hub_receipt, evidence) = receipt_and_evidence;
        tx.add_trail(&TrailRow {
            pseudonym: g.pseudonym.clone(),
            grant_id: g.grant_id.clone(),
            org: from.clone(),
            event: "fetched".into(),
            at: self.now(),
            detail: if with_code {
                format!(
                    "{from} fetched version {} with your pickup code",
                    sent.version
                )
            } else {
                format!("{from} fetched version {}", sent.version)
            },
            envelope_id: Some(header.envelope_id.clone()),
            hub_receipt,
            evidence: Some(evidence),
        })
        .await?;
        tracing::info!(org = %self.org_id, by = %from, grant = %g.grant_id, version = sent.version, "a pull was answered");
        Ok(Outcome::Noted("pull answered"))
    }
}

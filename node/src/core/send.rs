//! Sealing and sending: sealing payloads into the outbox under each recipient's sequence
//! numbers (again, or as a skip, when they may no longer leave), sending passports under their
//! grants, and what the sync engine calls around a push (due packages, the envelope to push, the
//! hub's receipts, a failed push).

use overstap_proto::consent::{GrantTime, check_covers};
use overstap_proto::envelope::{Outgoing, seal};
use overstap_proto::passport::select_disclosures;
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{Disclosure, Envelope, EnvelopeKind, Package, Payload, Signed, Skip};
use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use overstap_proto::pb::Member;
use prost::Message;

use crate::store::{ClassReads, GrantRow, OutboxEntry, OutboxRow, StoredVersion, TrailRow, Tx};

use super::consent::grant_time_of;
use super::{NodeCore, NodeError, SEND_BATCH, Sent, random_bytes, stored};

/// Below this many payloads, sealing them on other threads costs more than it saves.
const SEAL_ALONE: usize = 8;

/// The parts of a package envelope other than the grant's own row.
pub(super) struct Sealed {
    pub(super) envelope_id: Vec<u8>,
}

/// A payload to seal for one recipient, and the outbox row it goes in.
struct ToSeal {
    recipient: Member,
    kind: EnvelopeKind,
    envelope_id: [u8; 16],
    payload: Payload,
    grant_id: Option<String>,
    version: Option<u32>,
}

/// What one grant of a send comes to: done without sealing (sent before), queued unsealed
/// until its start, or a package to seal with the others of its transaction.
enum Step {
    Done(Sent),
    Wait(Sent, OutboxRow),
    Seal(Sent, Box<ToSeal>),
}

/// The outbox states in which a package counts as sent or on its way.
const SENT_OR_ON_ITS_WAY: &[&str] = &["waiting", "pending", "sent"];

impl ToSeal {
    /// Signs the payload (under the sequence number and checkpoint it now holds) and seals it
    /// for the recipient. Pure: it runs on any thread.
    fn envelope(&self, from_org: &str, key: &SigningKey, now: i64) -> Result<Envelope, NodeError> {
        Ok(seal(
            Outgoing {
                envelope_id: self.envelope_id,
                from_org,
                kind: self.kind,
                created_at: now,
                payload: self.payload.clone(),
            },
            key,
            &self.recipient,
        )?)
    }

    /// [`ToSeal::envelope`], and the outbox row it goes in.
    fn seal(self, from_org: &str, key: &SigningKey, now: i64) -> Result<OutboxRow, NodeError> {
        let envelope = self.envelope(from_org, key, now)?;
        Ok(OutboxRow {
            envelope_id: Some(self.envelope_id.to_vec()),
            to_org: self.recipient.org_id,
            kind: self.kind as i32,
            grant_id: self.grant_id,
            payload: Some(self.payload.encode_to_vec()),
            envelope: Some(envelope.encode_to_vec()),
            peer_seq: Some(self.payload.seq),
            not_before: 0,
            version: self.version,
            state: "pending",
            created_at: now,
        })
    }
}

impl NodeCore {
    /// What sealing `payload` for `to_org` needs, once it has a sequence number.
    fn to_seal(
        &self,
        to_org: &str,
        kind: EnvelopeKind,
        grant_id: Option<&str>,
        payload: Payload,
        version: Option<u32>,
    ) -> Result<ToSeal, NodeError> {
        Ok(ToSeal {
            recipient: self.directory()?.member(to_org)?.clone(),
            kind,
            envelope_id: random_bytes::<16>(),
            payload,
            grant_id: grant_id.map(str::to_string),
            version,
        })
    }

    /// Seals `payload` for `to_org` under the next sequence number, inside `tx`.
    pub(super) async fn seal_in(
        &self,
        tx: &mut Tx,
        to_org: &str,
        kind: EnvelopeKind,
        grant_id: Option<&str>,
        payload: Payload,
        version: Option<u32>,
    ) -> Result<Sealed, NodeError> {
        let item = self.to_seal(to_org, kind, grant_id, payload, version)?;
        let envelope_id = item.envelope_id.to_vec();
        self.seal_all_in(tx, vec![item]).await?;
        Ok(Sealed { envelope_id })
    }

    /// Seals many payloads inside `tx`: each recipient's sequence numbers taken in one
    /// statement, in order; each payload carrying this node's newest checkpoint (unless the log
    /// is in alarm); the sealing spread over every core; the rows written in multi-row inserts,
    /// in the same order (sealing order is sending order).
    async fn seal_all_in(&self, tx: &mut Tx, mut items: Vec<ToSeal>) -> Result<(), NodeError> {
        if items.is_empty() {
            return Ok(());
        }
        let checkpoint = match tx.log_note().await? {
            Some((note, None)) => Some(note),
            _ => None,
        };
        let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
        for item in &items {
            *wanted.entry(item.recipient.org_id.clone()).or_default() += 1;
        }
        let mut next = BTreeMap::new();
        for (org, n) in wanted {
            let first = tx.reserve_sent_seqs(&org, n).await?;
            next.insert(org, first);
        }
        for item in &mut items {
            let seq = next
                .get_mut(&item.recipient.org_id)
                .expect("reserved above");
            item.payload.seq = *seq;
            if let Some(note) = &checkpoint {
                item.payload.checkpoint = note.clone();
            }
            *seq += 1;
        }
        let (from, key, now) = (self.org_id.clone(), self.key(), self.now());
        if items.len() <= SEAL_ALONE {
            let rows = items
                .into_iter()
                .map(|item| item.seal(&from, &key, now))
                .collect::<Result<Vec<_>, _>>()?;
            tx.enqueue_all(&rows).await?;
            return Ok(());
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_task = items.len().div_ceil(cores).max(SEAL_ALONE);
        let mut tasks = Vec::new();
        while !items.is_empty() {
            let rest = items.split_off(per_task.min(items.len()));
            let part = std::mem::replace(&mut items, rest);
            let (from, key) = (from.clone(), key.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|item| item.seal(&from, &key, now))
                    .collect::<Result<Vec<_>, _>>()
            }));
        }
        let mut rows = Vec::new();
        for task in tasks {
            let sealed = task
                .await
                .map_err(|e| NodeError::Invalid(format!("sealing stopped: {e}")))?;
            rows.extend(sealed?);
        }
        tx.enqueue_all(&rows).await?;
        Ok(())
    }

    /// Seals an outbox row again under a new envelope id, with the same sequence number: for a
    /// recipient that asked for it again, or to replace a package whose grant ended with a skip.
    pub(super) async fn reseal_in(
        &self,
        tx: &mut Tx,
        entry: &OutboxEntry,
        payload: Payload,
        kind: EnvelopeKind,
    ) -> Result<Envelope, NodeError> {
        let item = self.to_seal(&entry.to_org, kind, None, payload, None)?;
        let envelope = item.envelope(&self.org_id, &self.key(), self.now())?;
        tx.reseal(
            entry.seq,
            &item.envelope_id,
            &item.payload.encode_to_vec(),
            &envelope.encode_to_vec(),
            kind as i32,
        )
        .await?;
        Ok(envelope)
    }

    /// Replaces a package that may no longer leave with a skip under the same sequence number
    /// (returned), or cancels it if it was never sealed.
    pub(super) async fn withdraw_in(
        &self,
        tx: &mut Tx,
        entry: &OutboxEntry,
        reason: &str,
    ) -> Result<Option<Envelope>, NodeError> {
        if entry.state == "waiting" {
            tx.set_outbox_state(entry.seq, "cancelled", reason).await?;
            return Ok(None);
        }
        let payload = Payload {
            seq: entry.peer_seq.unwrap_or(0),
            content: Some(Content::Skip(Skip {
                reason: reason.to_string(),
            })),
            ..Default::default()
        };
        if self.directory()?.member(&entry.to_org).is_err() {
            // The recipient left the region: nothing can go to it any more.
            tx.set_outbox_state(
                entry.seq,
                "cancelled",
                &format!("{reason}; {} is no longer a member", entry.to_org),
            )
            .await?;
            return Ok(None);
        }
        Ok(Some(
            self.reseal_in(tx, entry, payload, EnvelopeKind::Status)
                .await?,
        ))
    }

    /// The package for a grant and passport version: the card, the signed manifest, the grant,
    /// and the disclosures of exactly the granted sections.
    async fn package_payload(&self, g: &GrantRow, version: u32) -> Result<Payload, NodeError> {
        let card = self.store.student_card(&g.pseudonym).await?;
        let v = self.store.version(&g.pseudonym, version).await?;
        self.package_payload_from(g, version, card.as_deref(), v.as_ref())
    }

    /// [`NodeCore::package_payload`] from what was read beforehand: the student's card and
    /// the passport version, as stored.
    fn package_payload_from(
        &self,
        g: &GrantRow,
        version: u32,
        card: Option<&[u8]>,
        v: Option<&StoredVersion>,
    ) -> Result<Payload, NodeError> {
        let (grant, card_signed) = self.grant_allows_with(g, card)?;
        let v = v.ok_or_else(|| {
            NodeError::Precondition(format!(
                "student {} has no passport version {version}",
                g.pseudonym
            ))
        })?;
        let all: Vec<Disclosure> = v
            .disclosures
            .iter()
            .map(|d| stored::<Disclosure>(d, "section"))
            .collect::<Result<_, _>>()?;
        let chosen = select_disclosures(&all, &grant.sections)?;
        check_covers(&grant, &g.recipient_org, &grant.purpose, &grant.sections)?;
        Ok(Payload {
            purpose: grant.purpose.clone(),
            content: Some(Content::Package(Package {
                card: Some(card_signed),
                manifest: Some(stored::<Signed>(&v.manifest, "manifest")?),
                grant: Some(stored::<Signed>(&g.signed, "grant")?),
                sections: chosen,
            })),
            ..Default::default()
        })
    }

    pub(super) async fn send_package_in(
        &self,
        tx: &mut Tx,
        g: &GrantRow,
        version: u32,
    ) -> Result<Sealed, NodeError> {
        let payload = self.package_payload(g, version).await?;
        let sealed = self
            .seal_in(
                tx,
                &g.recipient_org,
                EnvelopeKind::Package,
                Some(&g.grant_id),
                payload,
                Some(version),
            )
            .await?;
        tx.set_grant_sent(&g.grant_id, version).await?;
        Ok(sealed)
    }

    /// Seals the consented sections for the grant's recipient and puts the envelope in the
    /// outbox; a grant that is not in force yet waits there until it is. A version sealed
    /// under this grant before (delivered, on its way, or waiting) is not sealed again unless
    /// `again` says so: sending twice sends once, so a send cut off mid-way is finished by
    /// asking again.
    pub async fn send_passport(&self, grant_id: &str, again: bool) -> Result<Sent, NodeError> {
        self.send_in_one_transaction(std::slice::from_ref(&grant_id.to_string()), again)
            .await?
            .pop()
            .unwrap_or_else(|| Err(NodeError::NotFound(format!("no grant {grant_id}"))))
    }

    /// [`NodeCore::send_passport`] for many grants: up to [`SEND_BATCH`] sealed in one
    /// transaction, so a class costs a few commits rather than one per student. Each grant gets
    /// its result, in order; a batch the store failed gives each of its grants that error.
    pub async fn send_passports(
        &self,
        grant_ids: &[String],
        again: bool,
    ) -> Vec<Result<Sent, NodeError>> {
        let mut out = Vec::with_capacity(grant_ids.len());
        for chunk in grant_ids.chunks(SEND_BATCH) {
            match self.send_in_one_transaction(chunk, again).await {
                Ok(results) => out.extend(results),
                Err(e) => out.extend(chunk.iter().map(|_| {
                    Err(NodeError::Precondition(format!(
                        "not sent: storing its batch failed ({e})"
                    )))
                })),
            }
        }
        out
    }

    /// Seals (or, for a grant not in force yet, queues) each grant in one transaction. What the
    /// grants need is read first, in a handful of queries for all of them ([`Tx::class_reads`]),
    /// under the writer lock, so a revocation cannot commit in between; each grant is then
    /// checked on its own, and one that cannot go (its recipient left the directory, say) gets
    /// its error and writes nothing, while the others go on. Those that can go are sealed
    /// together ([`NodeCore::seal_all_in`]). An error of the store fails the whole transaction.
    async fn send_in_one_transaction(
        &self,
        grant_ids: &[String],
        again: bool,
    ) -> Result<Vec<Result<Sent, NodeError>>, NodeError> {
        let mut out = Vec::with_capacity(grant_ids.len());
        let (mut to_seal, mut marked) = (Vec::new(), Vec::new());
        let mut tx = self.store.begin().await?;
        let reads = tx.class_reads(grant_ids, SENT_OR_ON_ITS_WAY).await?;
        for grant_id in grant_ids {
            let Some(g) = reads.grants.get(grant_id) else {
                out.push(Err(NodeError::NotFound(format!(
                    "no grant {grant_id} at {}",
                    self.org_id
                ))));
                continue;
            };
            out.push(match self.send_step(g, again, &reads) {
                Ok(step) => Ok(self
                    .take_step_in(&mut tx, g, step, &mut to_seal, &mut marked)
                    .await?),
                Err(e) => Err(e),
            });
        }
        let sealed_any = !to_seal.is_empty();
        tx.set_grants_sent(&marked).await?;
        self.seal_all_in(&mut tx, to_seal).await?;
        tx.commit().await?;
        if sealed_any {
            self.outbox_wake.notify_one();
        }
        Ok(out)
    }

    /// [`NodeCore::send_step`] for one grant inside `tx`, sealed at once.
    pub(super) async fn send_now_in(
        &self,
        tx: &mut Tx,
        g: &GrantRow,
        again: bool,
    ) -> Result<Sent, NodeError> {
        let reads = tx
            .class_reads(std::slice::from_ref(&g.grant_id), SENT_OR_ON_ITS_WAY)
            .await?;
        let step = self.send_step(g, again, &reads)?;
        let (mut to_seal, mut marked) = (Vec::new(), Vec::new());
        let sent = self
            .take_step_in(tx, g, step, &mut to_seal, &mut marked)
            .await?;
        tx.set_grants_sent(&marked).await?;
        self.seal_all_in(tx, to_seal).await?;
        Ok(sent)
    }

    /// Writes what a step needs before sealing: a waiting row; or the package joins `to_seal`
    /// and its grant and version join `marked`, to be marked sent together.
    async fn take_step_in(
        &self,
        tx: &mut Tx,
        g: &GrantRow,
        step: Step,
        to_seal: &mut Vec<ToSeal>,
        marked: &mut Vec<(String, u32)>,
    ) -> Result<Sent, NodeError> {
        Ok(match step {
            Step::Done(sent) => sent,
            Step::Wait(sent, row) => {
                tx.enqueue(&row).await?;
                sent
            }
            Step::Seal(sent, item) => {
                marked.push((g.grant_id.clone(), sent.version));
                to_seal.push(*item);
                sent
            }
        })
    }

    /// What one grant comes to, from what was read for it (nothing is written here): sent
    /// before, queued until it starts, or a package to seal. A live grant sends the student's
    /// newest passport version, any other the version it was given for.
    fn send_step(&self, g: &GrantRow, again: bool, reads: &ClassReads) -> Result<Step, NodeError> {
        let version = if g.live {
            reads
                .latest
                .get(&g.pseudonym)
                .copied()
                .unwrap_or(g.passport_version)
        } else {
            g.passport_version
        };
        let sent = |envelope_id, waits_until, already_sent| Sent {
            envelope_id,
            to_org: g.recipient_org.clone(),
            waits_until,
            version,
            already_sent,
        };
        // A grant that ended goes on to its refusal below; only a live one can have been sent.
        if !again && g.state == "active" {
            let before = reads
                .outbox
                .get(&g.grant_id)
                .into_iter()
                .flatten()
                .find(|e| e.kind == EnvelopeKind::Package as i32 && e.version == Some(version));
            if let Some(e) = before {
                let waits = if e.state == "waiting" {
                    e.not_before
                } else {
                    0
                };
                return Ok(Step::Done(sent(Vec::new(), waits, true)));
            }
        }
        if g.state == "active" && grant_time_of(g, self.now()) == GrantTime::NotYetValid {
            let row = OutboxRow {
                envelope_id: None,
                to_org: g.recipient_org.clone(),
                kind: EnvelopeKind::Package as i32,
                grant_id: Some(g.grant_id.clone()),
                payload: None,
                envelope: None,
                peer_seq: None,
                not_before: g.not_before,
                version: Some(version),
                state: "waiting",
                created_at: self.now(),
            };
            return Ok(Step::Wait(sent(Vec::new(), g.not_before, false), row));
        }
        let payload = self.package_payload_from(
            g,
            version,
            reads.cards.get(&g.pseudonym).map(Vec::as_slice),
            reads.versions.get(&(g.pseudonym.clone(), version)),
        )?;
        let item = self.to_seal(
            &g.recipient_org,
            EnvelopeKind::Package,
            Some(&g.grant_id),
            payload,
            Some(version),
        )?;
        Ok(Step::Seal(
            sent(item.envelope_id.to_vec(), 0, false),
            Box::new(item),
        ))
    }

    /// Seals the packages that waited for their grant to start.
    pub async fn seal_due(&self) -> Result<usize, NodeError> {
        let due = self.store.due(self.now()).await?;
        let mut n = 0;
        for entry in due {
            let Some(grant_id) = entry.grant_id.as_deref() else {
                continue;
            };
            let Some(g) = self.store.grant(grant_id).await? else {
                continue;
            };
            let mut tx = self.store.begin().await?;
            // The sealed envelope goes to the end of the outbox: sealing order is sending order.
            tx.delete_outbox(entry.seq).await?;
            match self
                .send_package_in(&mut tx, &g, entry.version.unwrap_or(g.passport_version))
                .await
            {
                Ok(_) => {
                    tx.commit().await?;
                    n += 1;
                }
                Err(e) => {
                    // Nothing of the failed attempt is kept (no sequence number is used up).
                    drop(tx);
                    tracing::info!(grant = %grant_id, reason = %e, "a waiting package will not leave");
                    let mut tx = self.store.begin().await?;
                    tx.set_outbox_state(entry.seq, "cancelled", &e.to_string())
                        .await?;
                    tx.commit().await?;
                }
            }
        }
        if n > 0 {
            self.outbox_wake.notify_one();
        }
        Ok(n)
    }

    /// The envelopes to push for a round of outbox rows, each in its place. A package whose
    /// grant ended while it waited to leave is replaced by a skip first: nothing leaves without
    /// a valid grant. The round's grants and their students' cards are read in a query each.
    pub async fn envelopes_to_push(
        &self,
        entries: &[OutboxEntry],
    ) -> Result<Vec<Result<Option<Envelope>, NodeError>>, NodeError> {
        let package = |e: &OutboxEntry| e.kind == EnvelopeKind::Package as i32;
        let ids: Vec<String> = entries
            .iter()
            .filter(|e| package(e))
            .filter_map(|e| e.grant_id.clone())
            .collect();
        let grants = self.store.grants_by_id(&ids).await?;
        let mut students: Vec<String> = grants.values().map(|g| g.pseudonym.clone()).collect();
        students.sort();
        students.dedup();
        let cards = self.store.cards_by_pseudonym(&students).await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let grant = entry
                .grant_id
                .as_ref()
                .filter(|_| package(entry))
                .and_then(|id| grants.get(id));
            // A grant that is no longer active is refused before its card is looked at.
            let ended = grant.and_then(|g| {
                self.grant_allows_with(g, cards.get(&g.pseudonym).map(Vec::as_slice))
                    .err()
            });
            out.push(match ended {
                Some(e) => self.withdraw(entry, &e.to_string()).await,
                None => stored::<Envelope>(&entry.envelope, "envelope").map(Some),
            });
        }
        Ok(out)
    }

    /// [`NodeCore::withdraw_in`] in a transaction of its own.
    async fn withdraw(
        &self,
        entry: &OutboxEntry,
        reason: &str,
    ) -> Result<Option<Envelope>, NodeError> {
        let mut tx = self.store.begin().await?;
        let skip = self.withdraw_in(&mut tx, entry, reason).await?;
        tx.commit().await?;
        Ok(skip)
    }

    /// Records the hub's receipts for pushed envelopes, and the trail events they make, in one
    /// transaction.
    pub async fn after_sent(&self, sent: &[(OutboxEntry, Signed)]) -> Result<(), NodeError> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let receipts: Vec<Vec<u8>> = sent.iter().map(|(_, r)| r.encode_to_vec()).collect();
        let rows: Vec<(i64, &[u8], &[u8])> = sent
            .iter()
            .zip(&receipts)
            .map(|((e, _), r)| (e.seq, e.envelope_id.as_slice(), r.as_slice()))
            .collect();
        // Not if it was sealed again while this one was on its way (a skip, or a resend): the
        // new envelope goes out under the same sequence number and the recipient takes only one.
        let marked = tx.mark_all_sent(&rows, now).await?;
        let recorded: Vec<(&OutboxEntry, Vec<u8>)> = sent
            .iter()
            .zip(receipts)
            .filter(|((e, _), _)| marked.contains(&e.seq))
            .map(|((e, _), r)| (e, r))
            .collect();
        // What a round sent is written into the grants and the trail in a statement each.
        let ids: Vec<String> = recorded
            .iter()
            .filter_map(|(e, _)| e.grant_id.clone())
            .collect();
        let grants = tx.grants_by_id(&ids).await?;
        let (mut trail, mut sent_at) = (Vec::new(), Vec::new());
        for (entry, receipt) in recorded {
            let Some(g) = entry.grant_id.as_ref().and_then(|id| grants.get(id)) else {
                continue;
            };
            let (event, detail) = match EnvelopeKind::try_from(entry.kind) {
                Ok(EnvelopeKind::Package) => {
                    sent_at.push(g.grant_id.clone());
                    (
                        "sent",
                        format!(
                            "version {} with {} sealed for {}",
                            entry.version.unwrap_or_default(),
                            g.sections.join(", "),
                            g.recipient_org
                        ),
                    )
                }
                Ok(EnvelopeKind::Revocation) => (
                    "revocation sent",
                    format!("{} is asked to erase", g.recipient_org),
                ),
                _ => continue,
            };
            trail.push(TrailRow {
                pseudonym: g.pseudonym.clone(),
                grant_id: g.grant_id.clone(),
                org: g.recipient_org.clone(),
                event: event.into(),
                at: now,
                detail,
                envelope_id: Some(entry.envelope_id.clone()),
                hub_receipt: Some(receipt),
                evidence: None,
            });
        }
        tx.set_grants_sent_at(&sent_at, now).await?;
        tx.add_trails(&trail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed push; `give_up` when the hub refused it for good.
    pub async fn push_failed(
        &self,
        entry: &OutboxEntry,
        detail: &str,
        give_up: bool,
    ) -> Result<(), NodeError> {
        let mut tx = self.store.begin().await?;
        tx.mark_attempt(entry.seq, detail, give_up).await?;
        // A refused envelope still holds a sequence number, so a skip under that number goes in
        // its place: the recipient sees no gap that nothing could ever fill.
        // A refused skip is not replaced by another one (that would go round for ever).
        let is_skip = matches!(
            Payload::decode(entry.payload.as_slice()).map(|p| p.content),
            Ok(Some(Content::Skip(_)))
        );
        if give_up
            && !is_skip
            && let Some(seq) = entry.peer_seq
        {
            let payload = Payload {
                seq,
                content: Some(Content::Skip(Skip {
                    reason: format!("the hub refused what was sealed here: {detail}"),
                })),
                ..Default::default()
            };
            if self.directory()?.member(&entry.to_org).is_ok() {
                let item =
                    self.to_seal(&entry.to_org, EnvelopeKind::Status, None, payload, None)?;
                tx.enqueue(&item.seal(&self.org_id, &self.key(), self.now())?)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

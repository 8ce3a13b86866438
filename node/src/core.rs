//! The node's domain operations, shared by the local API and the sync engine: issuing student
//! cards, keeping passport versions and grants, sealing packages into the outbox, and taking in
//! what arrives. Every rule comes from `overstap-proto`; every write goes through the store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::consent::{check_covers, check_in_force, verify_grant};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::{EncryptionKeyPair, Opened, Outgoing, open, seal, verify_header};
use overstap_proto::passport::{
    parse_birth_month, select_disclosures, verify_card, verify_disclosures, verify_manifest,
};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    Disclosure, Envelope, EnvelopeHeader, EnvelopeKind, Package, Payload, Refusal, Signed,
    StudentCard,
};
use overstap_proto::sign::{Domain, decode_body, sign_message, verifying_key};
use overstap_proto::{ProtocolError, UnixTime};
use prost::Message;
use rand_core::RngCore;
use tokio::sync::Notify;

use crate::store::{GrantRow, NodeStore, OutboxRow, Processed, Received, StoreError};

/// The node's clock; tests inject their own.
pub type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// The wall clock, in whole seconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this node has no directory yet; it gets one from the hub once connected")]
    NoDirectory,
    #[error("the directory does not know {0} yet; it will be fetched again")]
    StaleDirectory(String),
    /// Stored data that no longer decodes: a damaged database, never the caller's fault.
    #[error("stored {0} does not decode")]
    Corrupt(String),
}

/// Decodes a protobuf message this node stored itself.
pub fn stored<T: Message + Default>(bytes: &[u8], what: &str) -> Result<T, NodeError> {
    T::decode(bytes).map_err(|e| NodeError::Corrupt(format!("{what}: {e}")))
}

/// What became of an envelope taken in from the hub. Every outcome is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        grant_id: String,
    },
    Duplicate,
    /// Refused; the sender was told why.
    Refused(String),
    /// Refused without a reply: the sender could not be authenticated.
    Dropped(String),
    /// A refusal of one of our envelopes, recorded.
    RefusalNoted,
}

pub struct NodeCore {
    pub org_id: String,
    signing_key: SigningKey,
    encryption_keys: Vec<EncryptionKeyPair>,
    authority: VerifyingKey,
    pub store: NodeStore,
    directory: RwLock<Option<Arc<VerifiedDirectory>>>,
    /// Woken when something is put in the outbox.
    pub outbox_wake: Notify,
    pub hub_connected: AtomicBool,
    pub last_seq: AtomicU64,
    pub max_body: usize,
    clock: Clock,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

impl NodeCore {
    pub async fn new(
        org_id: String,
        signing_key: SigningKey,
        encryption_keys: Vec<EncryptionKeyPair>,
        authority: VerifyingKey,
        store: NodeStore,
        max_body: usize,
        clock: Clock,
    ) -> Result<Self, NodeError> {
        let directory = match store.directory().await? {
            Some(bytes) => {
                let signed = Signed::decode(bytes.as_slice())
                    .map_err(|e| NodeError::Invalid(format!("stored directory: {e}")))?;
                Some(Arc::new(VerifiedDirectory::verify(&signed, &authority, 0)?))
            }
            None => None,
        };
        Ok(NodeCore {
            org_id,
            signing_key,
            encryption_keys,
            authority,
            store,
            directory: RwLock::new(directory),
            outbox_wake: Notify::new(),
            hub_connected: AtomicBool::new(false),
            last_seq: AtomicU64::new(0),
            max_body,
            clock,
        })
    }

    pub fn now(&self) -> UnixTime {
        (self.clock)()
    }

    pub fn directory(&self) -> Result<Arc<VerifiedDirectory>, NodeError> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(NodeError::NoDirectory)
    }

    pub fn directory_version(&self) -> u64 {
        self.directory().map(|d| d.version()).unwrap_or(0)
    }

    /// Installs a directory if the authority signed it and it is newer than the one held.
    pub async fn install_directory(&self, signed: &Signed) -> Result<u64, NodeError> {
        let verified =
            VerifiedDirectory::verify(signed, &self.authority, self.directory_version())?;
        let version = verified.version();
        self.store
            .save_directory(version, &signed.encode_to_vec())
            .await?;
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(verified));
        tracing::info!(org = %self.org_id, version, "directory installed");
        Ok(version)
    }

    // ---- home side ------------------------------------------------------------------------

    /// Issues a pseudonym and a signed student card for a key made on the student's device.
    pub async fn register_student(
        &self,
        student_key: &[u8],
        birth_month: &str,
        guardian_keys: &[Vec<u8>],
        staff_user: &str,
    ) -> Result<Signed, NodeError> {
        verifying_key(student_key, "student key")?;
        parse_birth_month(birth_month)?;
        for g in guardian_keys {
            verifying_key(g, "guardian key")?;
            if g.as_slice() == student_key {
                return Err(NodeError::Invalid(
                    "a guardian key must differ from the student's key".into(),
                ));
            }
        }
        if staff_user.trim().is_empty() {
            return Err(NodeError::Invalid(
                "name the staff member who checked the student in person".into(),
            ));
        }
        let now = self.now();
        let card = StudentCard {
            pseudonym: format!("pvs-{}", hex::encode(random_bytes::<8>())),
            home_org: self.org_id.clone(),
            student_key: student_key.to_vec(),
            birth_month: birth_month.to_string(),
            guardian_keys: guardian_keys.to_vec(),
            issued_at: now,
        };
        if overstap_proto::passport::under_16(birth_month, now)? && guardian_keys.is_empty() {
            return Err(NodeError::Invalid(format!(
                "a student born in {birth_month} is under 16: register at least one guardian key"
            )));
        }
        let signed = sign_message(Domain::StudentCard, &card, &[&self.signing_key]);
        self.store
            .insert_student(&card.pseudonym, &signed.encode_to_vec(), staff_user, now)
            .await?;
        tracing::info!(org = %self.org_id, "student card issued");
        Ok(signed)
    }

    /// The student's card as issued by this node.
    pub async fn card(&self, pseudonym: &str) -> Result<(Signed, StudentCard), NodeError> {
        let bytes = self.store.student_card(pseudonym).await?.ok_or_else(|| {
            NodeError::NotFound(format!("no student {pseudonym} at {}", self.org_id))
        })?;
        let signed = stored::<Signed>(&bytes, "student card")?;
        let card = verify_card(&signed, &self.signing_key.verifying_key())?;
        Ok((signed, card))
    }

    /// Keeps a new passport version signed by the student (and guardian under 16).
    pub async fn store_passport(
        &self,
        manifest: &Signed,
        disclosures: &[Disclosure],
    ) -> Result<u32, NodeError> {
        let probe: overstap_proto::pb::Manifest = decode_body(Domain::Manifest, manifest)?;
        let (_, card) = self.card(&probe.pseudonym).await?;
        let m = verify_manifest(manifest, &card, self.now())?;
        let sections = verify_disclosures(&m, disclosures)?;
        if sections.len() != m.digests.len() {
            return Err(NodeError::Invalid(format!(
                "the home school keeps the whole passport: {} of {} sections were sent",
                sections.len(),
                m.digests.len()
            )));
        }
        if let Some(prev) = self.store.latest_version(&m.pseudonym).await?
            && m.version <= prev.version
        {
            return Err(NodeError::Precondition(format!(
                "version {} is not newer than the stored version {}",
                m.version, prev.version
            )));
        }
        // Disclosures are matched to sections by digest; keep them in manifest order.
        let mut rows = Vec::with_capacity(disclosures.len());
        for d in disclosures {
            let s = overstap_proto::pb::Section::decode(d.section.as_slice())
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            rows.push((s.section_id, d.encode_to_vec()));
        }
        self.store
            .insert_version(
                &m.pseudonym,
                m.version,
                &m.question_set,
                &manifest.encode_to_vec(),
                &rows,
                self.now(),
            )
            .await?;
        Ok(m.version)
    }

    /// Keeps a grant signed by the student (and guardian under 16).
    pub async fn add_grant(&self, signed: &Signed) -> Result<String, NodeError> {
        let probe: overstap_proto::pb::ConsentGrant = decode_body(Domain::Grant, signed)?;
        let (_, card) = self.card(&probe.pseudonym).await?;
        let grant = verify_grant(signed, &card, self.now())?;
        if grant.recipient_org == self.org_id {
            return Err(NodeError::Invalid(
                "a grant to the home school itself is not needed".into(),
            ));
        }
        let dir = self.directory()?;
        let recipient = dir.member(&grant.recipient_org)?;
        use overstap_proto::pb::MemberKind;
        if matches!(recipient.kind(), MemberKind::Hub | MemberKind::Coordinator) {
            return Err(NodeError::Invalid(format!(
                "{} is a {} and cannot receive passports",
                grant.recipient_org,
                overstap_proto::directory::kind_name(recipient.kind())
            )));
        }
        if grant.not_after <= self.now() {
            check_in_force(&grant, self.now())?;
        }
        self.store
            .insert_grant(
                &GrantRow {
                    grant_id: grant.grant_id.clone(),
                    pseudonym: grant.pseudonym.clone(),
                    recipient_org: grant.recipient_org.clone(),
                    purpose: grant.purpose.clone(),
                    sections: grant.sections.clone(),
                    not_before: grant.not_before,
                    not_after: grant.not_after,
                    live: grant.live,
                    signed: signed.encode_to_vec(),
                    state: "active".into(),
                },
                self.now(),
            )
            .await?;
        Ok(grant.grant_id)
    }

    /// Seals the consented sections of the newest passport version for the grant's recipient
    /// and puts the envelope in the outbox. Nothing is sealed without a valid, in-scope grant.
    pub async fn send_passport(&self, grant_id: &str) -> Result<(Vec<u8>, String), NodeError> {
        let row = self.store.grant(grant_id).await?.ok_or_else(|| {
            NodeError::NotFound(format!("no grant {grant_id} at {}", self.org_id))
        })?;
        if row.state != "active" {
            return Err(NodeError::Precondition(format!(
                "grant {grant_id} is {}",
                row.state
            )));
        }
        let (card_signed, card) = self.card(&row.pseudonym).await?;
        let grant_signed = stored::<Signed>(&row.signed, "grant")?;
        let grant = verify_grant(&grant_signed, &card, self.now())?;
        check_in_force(&grant, self.now()).map_err(|e| NodeError::Precondition(e.to_string()))?;
        let version = self
            .store
            .latest_version(&row.pseudonym)
            .await?
            .ok_or_else(|| {
                NodeError::Precondition(format!(
                    "student {} has no signed passport yet; sign one first",
                    row.pseudonym
                ))
            })?;
        let manifest = stored::<Signed>(&version.manifest, "manifest")?;
        let all: Vec<Disclosure> = version
            .disclosures
            .iter()
            .map(|d| stored::<Disclosure>(d, "section"))
            .collect::<Result<_, _>>()?;
        let chosen = select_disclosures(&all, &grant.sections)?;
        let dir = self.directory()?;
        let recipient = dir.member(&grant.recipient_org)?.clone();
        check_covers(&grant, &recipient.org_id, &grant.purpose, &grant.sections)?;
        let envelope_id = random_bytes::<16>();
        let envelope = seal(
            Outgoing {
                envelope_id,
                from_org: &self.org_id,
                kind: EnvelopeKind::Package,
                created_at: self.now(),
                payload: Payload {
                    purpose: grant.purpose.clone(),
                    content: Some(Content::Package(Package {
                        card: Some(card_signed),
                        manifest: Some(manifest),
                        grant: Some(grant_signed),
                        sections: chosen,
                    })),
                    ..Default::default()
                },
            },
            &self.signing_key,
            &recipient,
        )?;
        self.store
            .enqueue(&OutboxRow {
                envelope_id: envelope_id.to_vec(),
                to_org: recipient.org_id.clone(),
                kind: EnvelopeKind::Package as i32,
                grant_id: Some(grant.grant_id.clone()),
                envelope: envelope.encode_to_vec(),
                created_at: self.now(),
            })
            .await?;
        self.outbox_wake.notify_one();
        Ok((envelope_id.to_vec(), recipient.org_id))
    }

    // ---- recipient side -------------------------------------------------------------------

    /// Takes in one envelope from the hub: verify, open, check, store, all before the caller
    /// acks. `Err` means "try again later" (do not ack); every `Ok` may be acked.
    pub async fn ingest(
        &self,
        envelope: &Envelope,
        receipt: Option<&Signed>,
    ) -> Result<Outcome, NodeError> {
        let claimed: EnvelopeHeader = match envelope
            .header
            .as_ref()
            .map(|h| decode_body(Domain::EnvelopeHeader, h))
        {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Ok(Outcome::Dropped(e.to_string())),
            None => return Ok(Outcome::Dropped("envelope has no header".into())),
        };
        if self.store.is_processed(&claimed.envelope_id).await? {
            return Ok(Outcome::Duplicate);
        }
        let dir = self.directory()?;
        let processed = |outcome: &str, detail: String| Processed {
            envelope_id: claimed.envelope_id.clone(),
            from_org: claimed.from_org.clone(),
            kind: claimed.kind,
            outcome: outcome.to_string(),
            detail,
            receipt: receipt.map(|r| r.encode_to_vec()),
            at: self.now(),
        };
        // Checks anyone can make. A sender the directory does not know yet may be a new member:
        // fetch the directory again before refusing.
        if let Err(e) = verify_header(envelope, &dir, self.max_body) {
            if let ProtocolError::UnknownMember(org) = &e {
                return Err(NodeError::StaleDirectory(org.clone()));
            }
            let reason = e.to_string();
            self.store
                .record(&processed("dropped", reason.clone()), None)
                .await?;
            tracing::warn!(org = %self.org_id, %reason, "envelope dropped");
            return Ok(Outcome::Dropped(reason));
        }
        let keys: Vec<&EncryptionKeyPair> = self.encryption_keys.iter().collect();
        let opened = match open(envelope, &dir, &self.org_id, &keys, self.max_body) {
            Ok(o) => o,
            Err(e) => {
                return self
                    .refuse(
                        &dir,
                        &claimed,
                        None,
                        e.to_string(),
                        processed("refused", e.to_string()),
                    )
                    .await;
            }
        };
        match &opened.payload.content {
            Some(Content::Package(p)) => match self.check_package(&opened, p).await? {
                Ok(received) => {
                    let grant_id = received.grant_id.clone();
                    self.store
                        .store_received(&processed("stored", grant_id.clone()), &received)
                        .await?;
                    tracing::info!(org = %self.org_id, from = %claimed.from_org, "passport stored");
                    Ok(Outcome::Stored { grant_id })
                }
                Err(e) => {
                    let grant_id = p
                        .grant
                        .as_ref()
                        .and_then(|g| {
                            decode_body::<overstap_proto::pb::ConsentGrant>(Domain::Grant, g).ok()
                        })
                        .map(|g| g.grant_id);
                    self.refuse(
                        &dir,
                        &claimed,
                        grant_id,
                        e.to_string(),
                        processed("refused", e.to_string()),
                    )
                    .await
                }
            },
            Some(Content::Refusal(r)) => {
                self.store
                    .mark_refused(
                        &processed("refusal", r.reason.clone()),
                        &r.refused_envelope_id,
                        &r.reason,
                    )
                    .await?;
                tracing::warn!(org = %self.org_id, by = %claimed.from_org, reason = %r.reason, "our envelope was refused");
                Ok(Outcome::RefusalNoted)
            }
            Some(_) => {
                let reason = format!(
                    "{} does not take {:?} envelopes in this version",
                    self.org_id,
                    opened.header.kind()
                );
                self.refuse(
                    &dir,
                    &claimed,
                    None,
                    reason.clone(),
                    processed("refused", reason),
                )
                .await
            }
            None => {
                let reason = "payload has no content".to_string();
                self.refuse(
                    &dir,
                    &claimed,
                    None,
                    reason.clone(),
                    processed("refused", reason),
                )
                .await
            }
        }
    }

    /// Everything a recipient checks before it stores one byte of a package. The outer error is
    /// the node's own trouble (retry later); the inner one is a refusal.
    async fn check_package(
        &self,
        opened: &Opened,
        p: &Package,
    ) -> Result<Result<Received, ProtocolError>, NodeError> {
        let received = match self.check_package_rules(opened, p) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(held) = self.store.received(&received.grant_id).await? {
            if held.from_org != received.from_org {
                return Ok(Err(ProtocolError::Consent(format!(
                    "grant {} is already held here from {}, not from {}",
                    received.grant_id, held.from_org, received.from_org
                ))));
            }
            if held.version > received.version {
                return Ok(Err(ProtocolError::Consent(format!(
                    "version {} is older than version {} already held under grant {}",
                    received.version, held.version, received.grant_id
                ))));
            }
        }
        Ok(Ok(received))
    }

    fn check_package_rules(&self, opened: &Opened, p: &Package) -> Result<Received, ProtocolError> {
        let dir = self
            .directory()
            .map_err(|e| ProtocolError::Envelope(e.to_string()))?;
        let home = &opened.header.from_org;
        let missing = |what: &'static str| ProtocolError::Malformed {
            what,
            detail: "missing from package".into(),
        };
        let card_signed = p.card.as_ref().ok_or_else(|| missing("student card"))?;
        let manifest_signed = p.manifest.as_ref().ok_or_else(|| missing("manifest"))?;
        let grant_signed = p.grant.as_ref().ok_or_else(|| missing("consent grant"))?;
        let card = verify_card(card_signed, &dir.signing_key_of(home)?)?;
        if card.home_org != *home {
            return Err(ProtocolError::Consent(format!(
                "the student's card was issued by {}, the package came from {home}",
                card.home_org
            )));
        }
        let manifest = verify_manifest(manifest_signed, &card, self.now())?;
        let grant = verify_grant(grant_signed, &card, self.now())?;
        check_in_force(&grant, self.now())?;
        let sections = verify_disclosures(&manifest, &p.sections)?;
        let ids: Vec<String> = sections.iter().map(|s| s.section_id.clone()).collect();
        check_covers(&grant, &self.org_id, &opened.payload.purpose, &ids)?;
        let disclosures = p
            .sections
            .iter()
            .zip(sections.iter())
            .map(|(d, _)| d)
            .map(|d| {
                let s =
                    overstap_proto::pb::Section::decode(d.section.as_slice()).map(|s| s.section_id);
                (s.unwrap_or_default(), d.encode_to_vec())
            })
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

    /// Records a refusal and tells the (authenticated) sender why, in one transaction.
    async fn refuse(
        &self,
        dir: &VerifiedDirectory,
        header: &EnvelopeHeader,
        grant_id: Option<String>,
        reason: String,
        processed: Processed,
    ) -> Result<Outcome, NodeError> {
        tracing::warn!(org = %self.org_id, from = %header.from_org, %reason, "envelope refused");
        let reply = match dir.member(&header.from_org) {
            Ok(sender) if header.kind() != EnvelopeKind::Status || grant_id.is_some() => {
                let envelope_id = random_bytes::<16>();
                let envelope = seal(
                    Outgoing {
                        envelope_id,
                        from_org: &self.org_id,
                        kind: EnvelopeKind::Status,
                        created_at: self.now(),
                        payload: Payload {
                            content: Some(Content::Refusal(Refusal {
                                refused_envelope_id: header.envelope_id.clone(),
                                grant_id: grant_id.unwrap_or_default(),
                                reason: reason.clone(),
                            })),
                            ..Default::default()
                        },
                    },
                    &self.signing_key,
                    sender,
                )?;
                Some(OutboxRow {
                    envelope_id: envelope_id.to_vec(),
                    to_org: sender.org_id.clone(),
                    kind: EnvelopeKind::Status as i32,
                    grant_id: None,
                    envelope: envelope.encode_to_vec(),
                    created_at: self.now(),
                })
            }
            _ => None,
        };
        self.store.record(&processed, reply.as_ref()).await?;
        if reply.is_some() {
            self.outbox_wake.notify_one();
        }
        Ok(Outcome::Refused(reason))
    }

    /// Signs as this node; used for receipts the node issues.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// Whether a receipt handed back by the hub is signed by the directory's hub and is for
    /// this envelope.
    pub fn check_receipt(&self, receipt: &Signed, envelope_id: &[u8]) -> Result<(), NodeError> {
        let dir = self.directory()?;
        let hub = dir
            .hub()
            .ok_or_else(|| NodeError::Invalid("the directory lists no hub".into()))?;
        let key = verifying_key(&hub.signing_key, "hub key")?;
        let r: overstap_proto::pb::Receipt =
            overstap_proto::sign::open_signed(Domain::Receipt, receipt, &key)?;
        if r.envelope_id != envelope_id {
            return Err(NodeError::Invalid(
                "the hub's receipt is for another envelope".into(),
            ));
        }
        Ok(())
    }

    pub fn mark_connected(&self, up: bool) {
        self.hub_connected.store(up, Ordering::Relaxed);
    }
}

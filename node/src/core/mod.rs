//! The node's domain operations, shared by the local API and the sync engine.
//!
//! Home side: issuing student cards, keeping passport versions and grants, sealing packages into
//! the outbox (only under a valid, in-scope grant), revoking, and keeping the student's trail.
//! Recipient side: taking in what arrives (in each sender's order), storing only consented
//! sections, erasing on revocation and expiry with a signed deletion receipt, and reporting the
//! handover's status and views back. Every rule comes from `overstap-proto`; every change is one
//! store transaction.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ed25519_dalek::{SigningKey, VerifyingKey};
use overstap_proto::config::parse_key_hex;
use overstap_proto::consent::{
    GrantTime, check_covers, check_in_force, grant_time, verify_grant, verify_revocation,
    window_time,
};
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::{EncryptionKeyPair, Opened, Outgoing, open, seal, verify_header};
use overstap_proto::passport::{
    ROLE_GUARDIAN, ROLE_STUDENT, check_card_follows, parse_birth_month, refuse_retired_keys,
    select_disclosures, verify_card, verify_disclosures, verify_manifest,
};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    ConsentGrant, DeletionReceipt, Disclosure, Envelope, EnvelopeHeader, EnvelopeKind,
    HandoverStatus, Manifest, MemberKind, Package, Payload, Receipt, Refusal, ResendRequest,
    Revocation, RevocationNotice, Section, Signed, Skip, StudentCard,
};
use overstap_proto::sign::{
    Domain, add_signature, decode_body, open_signed, sign_message, verifying_key,
};
use overstap_proto::{ProtocolError, UnixTime, format_date};
use prost::Message;
use rand_core::RngCore;
use tokio::sync::Notify;

use crate::store::{
    Erased, GrantRow, Held, NodeStore, OutboxEntry, OutboxRow, Processed, Received, StoreError,
    TrailRow, Tx,
};

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

/// Handover statuses a recipient can report.
pub const STATUSES: &[&str] = &[
    "ontvangen",
    "gelezen",
    "intake gepland",
    "gestart",
    "niet gestart",
];

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

/// What became of an envelope taken in from the hub. Every outcome may be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A passport (or a new version of one) is stored.
    Stored { grant_id: String },
    /// What a grant brought is erased, and the receipt is on its way.
    Erased { grant_id: String },
    /// A status, receipt, refusal, resend request or skip was recorded.
    Noted(&'static str),
    /// Taken in before (same envelope, or the same sequence number under another envelope).
    Duplicate,
    /// It came ahead of a gap; kept until the gap is filled.
    Held { seq: u64 },
    /// Refused; the sender was told why.
    Refused(String),
    /// Refused without a reply: the sender could not be authenticated.
    Dropped(String),
    /// One of our envelopes was refused by its recipient, for this reason.
    RefusalNoted(String),
}

/// Where the node's own key files are, so a rotated key is picked up without a restart.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub signing: PathBuf,
    pub encryption: PathBuf,
}

impl KeyFiles {
    /// The previous encryption key is kept beside the current one after a rotation.
    pub fn previous_encryption(&self) -> PathBuf {
        let mut p = self.encryption.clone().into_os_string();
        p.push(".previous");
        PathBuf::from(p)
    }

    fn read(path: &std::path::Path, what: &'static str) -> Result<[u8; 32], NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Invalid(format!("reading {what} {}: {e}", path.display())))?;
        Ok(parse_key_hex(&text, what)?)
    }
}

pub struct NodeCore {
    pub org_id: String,
    signing_key: RwLock<SigningKey>,
    encryption_keys: RwLock<Vec<EncryptionKeyPair>>,
    key_files: Option<KeyFiles>,
    authority: VerifyingKey,
    pub store: NodeStore,
    directory: RwLock<Option<Arc<VerifiedDirectory>>>,
    /// Woken when something is put in the outbox.
    pub outbox_wake: Notify,
    /// Held (read) by each outbox round from reading its rows until their receipts are recorded;
    /// taken (write) by whatever withdraws packages not yet out (a revocation, an expiry), so it
    /// waits for the round on its way instead of withdrawing a package that has reached the hub
    /// already (whose receipt would then match no row).
    pub push_gate: tokio::sync::RwLock<()>,
    pub hub_connected: AtomicBool,
    pub last_seq: AtomicU64,
    pub max_body: usize,
    /// How many envelopes from one sender wait for a gap at most (`max_held_per_sender`).
    pub max_held_per_sender: u64,
    clock: Clock,
    pub metrics: crate::metrics::NodeMetrics,
}

/// The default for `max_held_per_sender`: far more than an honest sender has in flight.
pub const DEFAULT_MAX_HELD_PER_SENDER: u64 = 1_000;

/// Grants [`NodeCore::send_passports`] seals in one transaction: a class costs a few commits,
/// and other writers (receipts, answers coming in) wait at most one batch.
pub const SEND_BATCH: usize = 100;

/// Grants one `SendPassports` call may name: a call must end within the API's deadline (60 s),
/// and 2,000 take about 6 s on SQLite on a small machine, twice that on PostgreSQL.
pub const MAX_SEND_PASSPORTS: usize = 2_000;

/// A passport sent: the envelope id (empty while it waits for the grant's start), the
/// recipient, and when it will leave if it waits (0 if not).
pub type Sent = (Vec<u8>, String, i64);

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

fn read_lock<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The parts of a package envelope other than the grant's own row.
struct Sealed {
    envelope_id: Vec<u8>,
}

impl NodeCore {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        org_id: String,
        signing_key: SigningKey,
        encryption_keys: Vec<EncryptionKeyPair>,
        key_files: Option<KeyFiles>,
        authority: VerifyingKey,
        store: NodeStore,
        max_body: usize,
        clock: Clock,
    ) -> Result<Self, NodeError> {
        let directory = match store.directory().await? {
            Some(bytes) => {
                let signed = stored::<Signed>(&bytes, "directory")?;
                Some(Arc::new(VerifiedDirectory::verify(&signed, &authority, 0)?))
            }
            None => None,
        };
        Ok(NodeCore {
            org_id,
            signing_key: RwLock::new(signing_key),
            encryption_keys: RwLock::new(encryption_keys),
            key_files,
            authority,
            store,
            directory: RwLock::new(directory),
            outbox_wake: Notify::new(),
            push_gate: tokio::sync::RwLock::new(()),
            hub_connected: AtomicBool::new(false),
            last_seq: AtomicU64::new(0),
            max_body,
            max_held_per_sender: DEFAULT_MAX_HELD_PER_SENDER,
            clock,
            metrics: Default::default(),
        })
    }

    pub fn now(&self) -> UnixTime {
        (self.clock)()
    }

    fn key(&self) -> SigningKey {
        read_lock(&self.signing_key)
    }

    pub fn directory(&self) -> Result<Arc<VerifiedDirectory>, NodeError> {
        read_lock(&self.directory).ok_or(NodeError::NoDirectory)
    }

    pub fn directory_version(&self) -> u64 {
        self.directory().map(|d| d.version()).unwrap_or(0)
    }

    /// Installs a directory if the authority signed it and it is newer than the one held. If it
    /// lists new keys for this node (a rotation), the new key files are read; the previous
    /// encryption key stays, for envelopes already on their way.
    pub async fn install_directory(&self, signed: &Signed) -> Result<u64, NodeError> {
        let verified =
            VerifiedDirectory::verify(signed, &self.authority, self.directory_version())?;
        let version = verified.version();
        let key_before = self
            .directory()
            .ok()
            .and_then(|d| d.member(&self.org_id).ok().map(|m| m.signing_key.clone()));
        if let Ok(me) = verified.member(&self.org_id) {
            self.follow_rotation(me)?;
            // This node's own signing key was rotated: the cards it issued are signed again
            // before the new directory is kept, so a crash in between does it again at the next
            // start (the node then still holds the directory of before).
            if let Some(old) = key_before
                && old != me.signing_key
                && self.key().verifying_key().as_bytes().as_slice() == me.signing_key.as_slice()
            {
                self.resign_cards(&old).await?;
            }
        }
        self.store
            .save_directory(version, &signed.encode_to_vec())
            .await?;
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(verified));
        tracing::info!(org = %self.org_id, version, "directory installed");
        Ok(version)
    }

    fn follow_rotation(&self, me: &overstap_proto::pb::Member) -> Result<(), NodeError> {
        let Some(files) = &self.key_files else {
            return Ok(());
        };
        let known = read_lock(&self.encryption_keys)
            .iter()
            .any(|k| k.key_id() == me.encryption_key_id);
        if !known && !me.encryption_key_id.is_empty() {
            let mut keys = vec![EncryptionKeyPair::from_secret(&KeyFiles::read(
                &files.encryption,
                "encryption key",
            )?)?];
            if let Ok(prev) = KeyFiles::read(&files.previous_encryption(), "encryption key") {
                keys.push(EncryptionKeyPair::from_secret(&prev)?);
            }
            for old in read_lock(&self.encryption_keys) {
                if !keys.iter().any(|k| k.key_id() == old.key_id()) {
                    keys.push(old);
                }
            }
            if keys[0].key_id() == me.encryption_key_id {
                tracing::info!(org = %self.org_id, key = %me.encryption_key_id, "new encryption key in use");
                *self
                    .encryption_keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = keys;
            }
        }
        if self.key().verifying_key().as_bytes().as_slice() != me.signing_key.as_slice() {
            let key = SigningKey::from_bytes(&KeyFiles::read(&files.signing, "signing key")?);
            if key.verifying_key().as_bytes().as_slice() == me.signing_key.as_slice() {
                tracing::info!(org = %self.org_id, "new signing key in use");
                *self.signing_key.write().unwrap_or_else(|p| p.into_inner()) = key;
            }
        }
        Ok(())
    }

    /// Signs again, with this node's current key, every student card that its previous key
    /// (`old`, as the directory listed it) signed. The card itself is unchanged: same pseudonym,
    /// keys and date, so a recipient that holds the old copy takes the new one as the same card.
    /// Without this, every card issued before a rotation of the school's key would fail at the
    /// school itself and at every recipient. Returns how many were signed again.
    async fn resign_cards(&self, old: &[u8]) -> Result<usize, NodeError> {
        let old = verifying_key(old, "previous signing key")?;
        let key = self.key();
        let current = key.verifying_key();
        let mut tx = self.store.begin().await?;
        let mut count = 0;
        for (pseudonym, bytes) in self.store.student_cards().await? {
            let signed = stored::<Signed>(&bytes, "student card")?;
            if verify_card(&signed, &current).is_ok() || verify_card(&signed, &old).is_err() {
                continue;
            }
            let mut again = Signed {
                body: signed.body,
                sigs: Vec::new(),
            };
            add_signature(Domain::StudentCard, &mut again, &key);
            tx.replace_card(&pseudonym, &again.encode_to_vec()).await?;
            count += 1;
        }
        tx.commit().await?;
        tracing::info!(org = %self.org_id, cards = count, "student cards signed again with the new key");
        Ok(count)
    }

    // ---- sealing ------------------------------------------------------------------------------

    /// Seals `payload` for `to_org` under the next sequence number, inside `tx`.
    async fn seal_in(
        &self,
        tx: &mut Tx,
        to_org: &str,
        kind: EnvelopeKind,
        grant_id: Option<&str>,
        mut payload: Payload,
        version: Option<u32>,
    ) -> Result<Sealed, NodeError> {
        let dir = self.directory()?;
        let recipient = dir.member(to_org)?.clone();
        payload.seq = tx.next_sent_seq(to_org).await?;
        if let Some((note, None)) = tx.log_note().await? {
            payload.checkpoint = note;
        }
        let envelope_id = random_bytes::<16>();
        let envelope = self.seal_payload(&recipient, kind, envelope_id, &payload)?;
        tx.enqueue(&OutboxRow {
            envelope_id: Some(envelope_id.to_vec()),
            to_org: to_org.to_string(),
            kind: kind as i32,
            grant_id: grant_id.map(str::to_string),
            payload: Some(payload.encode_to_vec()),
            envelope: Some(envelope.encode_to_vec()),
            peer_seq: Some(payload.seq),
            not_before: 0,
            version,
            state: "pending",
            created_at: self.now(),
        })
        .await?;
        Ok(Sealed {
            envelope_id: envelope_id.to_vec(),
        })
    }

    fn seal_payload(
        &self,
        recipient: &overstap_proto::pb::Member,
        kind: EnvelopeKind,
        envelope_id: [u8; 16],
        payload: &Payload,
    ) -> Result<Envelope, NodeError> {
        Ok(seal(
            Outgoing {
                envelope_id,
                from_org: &self.org_id,
                kind,
                created_at: self.now(),
                payload: payload.clone(),
            },
            &self.key(),
            recipient,
        )?)
    }

    /// Seals an outbox row again under a new envelope id, with the same sequence number: for a
    /// recipient that asked for it again, or to replace a package whose grant ended with a skip.
    async fn reseal_in(
        &self,
        tx: &mut Tx,
        entry: &OutboxEntry,
        payload: Payload,
        kind: EnvelopeKind,
    ) -> Result<Envelope, NodeError> {
        let dir = self.directory()?;
        let recipient = dir.member(&entry.to_org)?.clone();
        let envelope_id = random_bytes::<16>();
        let envelope = self.seal_payload(&recipient, kind, envelope_id, &payload)?;
        tx.reseal(
            entry.seq,
            &envelope_id,
            &payload.encode_to_vec(),
            &envelope.encode_to_vec(),
            kind as i32,
        )
        .await?;
        Ok(envelope)
    }

    /// Replaces a package that may no longer leave with a skip under the same sequence number
    /// (returned), or cancels it if it was never sealed.
    async fn withdraw_in(
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
        if overstap_proto::passport::under_16(birth_month, now)? && guardian_keys.is_empty() {
            return Err(NodeError::Invalid(format!(
                "a student born in {birth_month} is under 16: register at least one guardian key"
            )));
        }
        let card = StudentCard {
            pseudonym: format!("pvs-{}", hex::encode(random_bytes::<8>())),
            home_org: self.org_id.clone(),
            student_key: student_key.to_vec(),
            birth_month: birth_month.to_string(),
            guardian_keys: guardian_keys.to_vec(),
            issued_at: now,
            retired_keys: Vec::new(),
        };
        // Signed under the writer lock: a rotation of this node's key re-signs the stored cards
        // under that lock too, so no card signed with the old key is stored after it.
        let mut tx = self.store.begin().await?;
        let signed = sign_message(Domain::StudentCard, &card, &[&self.key()]);
        tx.insert_student(&card.pseudonym, &signed.encode_to_vec(), staff_user, now)
            .await?;
        tx.commit().await?;
        tracing::info!(org = %self.org_id, "student card issued");
        Ok(signed)
    }

    /// A student (or a guardian) lost a key. The mentor has checked the student in person
    /// again; this node issues a new card for the same pseudonym that names the new key and
    /// retires the lost one from this moment. What the lost key signed before stays valid (the
    /// grants already given, the passport versions already stored); from now on this node takes
    /// nothing signed with it, and a recipient takes nothing signed with it dated after now.
    /// Returns the new card and how many grants stay in force.
    pub async fn replace_student_key(
        &self,
        pseudonym: &str,
        new_student_key: Option<&[u8]>,
        new_guardians: Option<&[Vec<u8>]>,
        staff_user: &str,
    ) -> Result<(Signed, u32), NodeError> {
        if staff_user.trim().is_empty() {
            return Err(NodeError::Invalid(
                "name the staff member who checked the student in person".into(),
            ));
        }
        if new_student_key.is_none() && new_guardians.is_none() {
            return Err(NodeError::Invalid(
                "name a new student key or a new list of guardian keys".into(),
            ));
        }
        let (_, old) = self.card(pseudonym).await?;
        // The lost key counts for what it signed up to this second, and for nothing after. The
        // new card is dated after the card it replaces, so cards are strictly ordered.
        let now = self.now() + 1;
        let mut card = old.clone();
        card.issued_at = now.max(old.issued_at + 1);
        let retire = |card: &mut StudentCard, key: &[u8], role: &str| {
            card.retired_keys.push(overstap_proto::pb::RetiredKey {
                key: key.to_vec(),
                role: role.into(),
                retired_at: now,
            });
        };
        let known = |k: &[u8]| {
            old.student_key == k
                || old.guardian_keys.iter().any(|g| g == k)
                || old.retired_keys.iter().any(|r| r.key == k)
        };
        if let Some(key) = new_student_key {
            verifying_key(key, "student key")?;
            if known(key) {
                return Err(NodeError::Invalid(
                    "the new student key must be a new key, made on the student's new device"
                        .into(),
                ));
            }
            retire(&mut card, &old.student_key, ROLE_STUDENT);
            card.student_key = key.to_vec();
        }
        if let Some(guardians) = new_guardians {
            for g in guardians {
                verifying_key(g, "guardian key")?;
                if g.as_slice() == card.student_key.as_slice() {
                    return Err(NodeError::Invalid(
                        "a guardian key must differ from the student's key".into(),
                    ));
                }
                if card.retired_keys.iter().any(|r| &r.key == g) {
                    return Err(NodeError::Invalid(
                        "that guardian key was reported lost; make a new one".into(),
                    ));
                }
            }
            for g in &old.guardian_keys {
                if !guardians.contains(g) {
                    retire(&mut card, g, ROLE_GUARDIAN);
                }
            }
            card.guardian_keys = guardians.to_vec();
        }
        if overstap_proto::passport::under_16(&card.birth_month, now)?
            && card.guardian_keys.is_empty()
        {
            return Err(NodeError::Invalid(format!(
                "a student born in {} is under 16: the new card needs at least one guardian key",
                card.birth_month
            )));
        }
        if card.retired_keys.len() > overstap_proto::passport::MAX_RETIRED_KEYS {
            return Err(NodeError::Invalid(format!(
                "student {pseudonym} has reported {} keys lost; register the student afresh",
                old.retired_keys.len()
            )));
        }
        let kept = self
            .store
            .grants(Some(pseudonym))
            .await?
            .iter()
            .filter(|g| g.state == "active")
            .count() as u32;
        let lost: Vec<&str> = card
            .retired_keys
            .iter()
            .filter(|r| r.retired_at == now)
            .map(|r| r.role.as_str())
            .collect();
        // Signed under the writer lock, as in `register_student`.
        let mut tx = self.store.begin().await?;
        let signed = sign_message(Domain::StudentCard, &card, &[&self.key()]);
        tx.replace_card(pseudonym, &signed.encode_to_vec()).await?;
        tx.add_trail(&TrailRow {
            pseudonym: pseudonym.to_string(),
            org: self.org_id.clone(),
            event: "new key".into(),
            at: now,
            detail: format!(
                "{} reported a lost {} key and checked the student in person; what the old key \
                 signed before now stays valid ({kept} grants), nothing signed with it from now on",
                staff_user.trim(),
                lost.join(" and ")
            ),
            evidence: Some(signed.encode_to_vec()),
            ..Default::default()
        })
        .await?;
        tx.commit().await?;
        tracing::info!(org = %self.org_id, "student card re-issued after a lost key");
        Ok((signed, kept))
    }

    /// The student's card as issued by this node.
    pub async fn card(&self, pseudonym: &str) -> Result<(Signed, StudentCard), NodeError> {
        let bytes = self.store.student_card(pseudonym).await?.ok_or_else(|| {
            NodeError::NotFound(format!("no student {pseudonym} at {}", self.org_id))
        })?;
        let signed = stored::<Signed>(&bytes, "student card")?;
        let card = verify_card(&signed, &self.key().verifying_key())?;
        Ok((signed, card))
    }

    /// Keeps a new passport version signed by the student (and guardian under 16), and sends it
    /// to every holder of a live grant.
    pub async fn store_passport(
        &self,
        manifest: &Signed,
        disclosures: &[Disclosure],
    ) -> Result<u32, NodeError> {
        let probe: Manifest = decode_body(Domain::Manifest, manifest)?;
        let (_, card) = self.card(&probe.pseudonym).await?;
        refuse_retired_keys(Domain::Manifest, manifest, &card)?;
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
        let rows: Vec<(String, Vec<u8>)> = sections
            .iter()
            .zip(disclosures)
            .map(|(s, d)| (s.section_id.clone(), d.encode_to_vec()))
            .collect();
        let mut tx = self.store.begin().await?;
        tx.insert_version(
            &m.pseudonym,
            m.version,
            &m.question_set,
            &manifest.encode_to_vec(),
            &rows,
            self.now(),
        )
        .await?;
        tx.commit().await?;
        // Live grants follow: each holder gets exactly its sections of the new version.
        for g in self.store.grants(Some(&m.pseudonym)).await? {
            if g.live
                && g.state == "active"
                && g.sent_version.is_some()
                && grant_time_of(&g, self.now()) == GrantTime::InForce
            {
                let mut tx = self.store.begin().await?;
                self.send_package_in(&mut tx, &g, m.version).await?;
                tx.commit().await?;
            }
        }
        self.outbox_wake.notify_one();
        Ok(m.version)
    }

    /// Keeps a grant signed by the student (and guardian under 16).
    pub async fn add_grant(&self, signed: &Signed) -> Result<String, NodeError> {
        let probe: ConsentGrant = decode_body(Domain::Grant, signed)?;
        let (_, card) = self.card(&probe.pseudonym).await?;
        refuse_retired_keys(Domain::Grant, signed, &card)?;
        let grant = verify_grant(signed, &card, self.now())?;
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
        tx.commit().await?;
        Ok(grant.grant_id)
    }

    /// Checks that the grant still allows sending: active, signed, in force. Returns the grant
    /// and the student's card it was checked against.
    async fn grant_allows(&self, g: &GrantRow) -> Result<(ConsentGrant, Signed), NodeError> {
        if g.state != "active" {
            return Err(NodeError::Precondition(format!(
                "grant {} is {}",
                g.grant_id, g.state
            )));
        }
        let (card_signed, card) = self.card(&g.pseudonym).await?;
        let grant = verify_grant(&stored::<Signed>(&g.signed, "grant")?, &card, self.now())?;
        check_in_force(&grant, self.now()).map_err(|e| NodeError::Precondition(e.to_string()))?;
        Ok((grant, card_signed))
    }

    /// The package for a grant and passport version: the card, the signed manifest, the grant,
    /// and the disclosures of exactly the granted sections.
    async fn package_payload(&self, g: &GrantRow, version: u32) -> Result<Payload, NodeError> {
        let (grant, card_signed) = self.grant_allows(g).await?;
        let v = self
            .store
            .version(&g.pseudonym, version)
            .await?
            .ok_or_else(|| {
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

    async fn send_package_in(
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
    /// outbox; a grant that is not in force yet waits there until it is. Returns the envelope
    /// id (empty while waiting), the recipient and the time it waits for (0 if it does not).
    pub async fn send_passport(&self, grant_id: &str) -> Result<Sent, NodeError> {
        self.send_in_one_transaction(std::slice::from_ref(&grant_id.to_string()))
            .await?
            .pop()
            .unwrap_or_else(|| Err(NodeError::NotFound(format!("no grant {grant_id}"))))
    }

    /// [`NodeCore::send_passport`] for many grants: up to [`SEND_BATCH`] sealed in one
    /// transaction, so a class costs a few commits rather than one per student. Each grant gets
    /// its result, in order; a batch the store failed gives each of its grants that error.
    pub async fn send_passports(&self, grant_ids: &[String]) -> Vec<Result<Sent, NodeError>> {
        let mut out = Vec::with_capacity(grant_ids.len());
        for chunk in grant_ids.chunks(SEND_BATCH) {
            match self.send_in_one_transaction(chunk).await {
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

    /// Seals (or, for a grant not in force yet, queues) each grant in one transaction, each
    /// from a savepoint of its own: a grant that cannot go, even one that fails half-way (its
    /// recipient left the directory, say), is undone alone and gets its error, and the others
    /// go on. An error of the store fails the whole transaction.
    async fn send_in_one_transaction(
        &self,
        grant_ids: &[String],
    ) -> Result<Vec<Result<Sent, NodeError>>, NodeError> {
        let mut out = Vec::with_capacity(grant_ids.len());
        let mut tx = self.store.begin().await?;
        let mut sealed_any = false;
        for grant_id in grant_ids {
            // Read under the writer lock, so a revocation cannot commit in between.
            let Some(g) = tx.grant(grant_id).await? else {
                out.push(Err(NodeError::NotFound(format!(
                    "no grant {grant_id} at {}",
                    self.org_id
                ))));
                continue;
            };
            tx.savepoint().await?;
            match self.send_one_in(&mut tx, &g).await {
                Ok(sent) => {
                    tx.release_savepoint().await?;
                    sealed_any |= sent.2 == 0;
                    out.push(Ok(sent));
                }
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    out.push(Err(e));
                }
            }
        }
        tx.commit().await?;
        if sealed_any {
            self.outbox_wake.notify_one();
        }
        Ok(out)
    }

    /// Seals one grant's package into the outbox, or queues it unsealed while the grant is not
    /// in force yet. A live grant sends the student's newest passport version, any other the
    /// version it was given for.
    async fn send_one_in(&self, tx: &mut Tx, g: &GrantRow) -> Result<Sent, NodeError> {
        let version = if g.live {
            self.store
                .latest_version(&g.pseudonym)
                .await?
                .map(|v| v.version)
                .unwrap_or(g.passport_version)
        } else {
            g.passport_version
        };
        if g.state == "active" && grant_time_of(g, self.now()) == GrantTime::NotYetValid {
            tx.enqueue(&OutboxRow {
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
            })
            .await?;
            return Ok((Vec::new(), g.recipient_org.clone(), g.not_before));
        }
        let sealed = self.send_package_in(tx, g, version).await?;
        Ok((sealed.envelope_id, g.recipient_org.clone(), 0))
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

    /// The envelope to push for an outbox row. A package whose grant ended while it waited to
    /// leave is replaced by a skip first: nothing leaves without a valid grant.
    pub async fn envelope_to_push(
        &self,
        entry: &OutboxEntry,
    ) -> Result<Option<Envelope>, NodeError> {
        if entry.kind == EnvelopeKind::Package as i32
            && let Some(grant_id) = &entry.grant_id
            && let Some(g) = self.store.grant(grant_id).await?
            && let Err(e) = self.grant_allows(&g).await
        {
            let mut tx = self.store.begin().await?;
            let skip = self.withdraw_in(&mut tx, entry, &e.to_string()).await?;
            tx.commit().await?;
            return Ok(skip);
        }
        stored::<Envelope>(&entry.envelope, "envelope").map(Some)
    }

    /// Records the hub's receipts for pushed envelopes, and the trail events they make, in one
    /// transaction.
    pub async fn after_sent(&self, sent: &[(OutboxEntry, Signed)]) -> Result<(), NodeError> {
        let mut tx = self.store.begin().await?;
        for (entry, receipt) in sent {
            self.record_sent_in(&mut tx, entry, receipt).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_sent_in(
        &self,
        tx: &mut Tx,
        entry: &OutboxEntry,
        receipt: &Signed,
    ) -> Result<(), NodeError> {
        if !tx
            .mark_sent(
                entry.seq,
                &entry.envelope_id,
                &receipt.encode_to_vec(),
                self.now(),
            )
            .await?
        {
            // Sealed again while this one was on its way (a skip, or a resend): the new envelope
            // goes out under the same sequence number and the recipient takes only one.
            return Ok(());
        }
        if let Some(grant_id) = &entry.grant_id
            && let Some(g) = tx.grant(grant_id).await?
        {
            let event = match EnvelopeKind::try_from(entry.kind) {
                Ok(EnvelopeKind::Package) => Some((
                    "sent",
                    format!(
                        "version {} with {} sealed for {}",
                        entry.version.unwrap_or_default(),
                        g.sections.join(", "),
                        g.recipient_org
                    ),
                )),
                Ok(EnvelopeKind::Revocation) => Some((
                    "revocation sent",
                    format!("{} is asked to erase", g.recipient_org),
                )),
                _ => None,
            };
            if let Some((event, detail)) = event {
                if event == "sent" {
                    tx.set_grant_sent_at(grant_id, self.now()).await?;
                }
                tx.add_trail(&TrailRow {
                    pseudonym: g.pseudonym.clone(),
                    grant_id: grant_id.clone(),
                    org: g.recipient_org.clone(),
                    event: event.into(),
                    at: self.now(),
                    detail,
                    envelope_id: Some(entry.envelope_id.clone()),
                    hub_receipt: Some(receipt.encode_to_vec()),
                    evidence: None,
                })
                .await?;
            }
        }
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
            let dir = self.directory()?;
            if let Ok(recipient) = dir.member(&entry.to_org) {
                let envelope_id = random_bytes::<16>();
                let envelope =
                    self.seal_payload(recipient, EnvelopeKind::Status, envelope_id, &payload)?;
                tx.enqueue(&OutboxRow {
                    envelope_id: Some(envelope_id.to_vec()),
                    to_org: entry.to_org.clone(),
                    kind: EnvelopeKind::Status as i32,
                    grant_id: None,
                    payload: Some(payload.encode_to_vec()),
                    envelope: Some(envelope.encode_to_vec()),
                    peer_seq: Some(seq),
                    not_before: 0,
                    version: None,
                    state: "pending",
                    created_at: self.now(),
                })
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// This node's handovers (home side), newest last.
    pub async fn handovers(&self) -> Result<Vec<GrantRow>, NodeError> {
        Ok(self.store.grants(None).await?)
    }

    /// The student's trail, each event with its hub receipt checked against the directory.
    pub async fn trail(
        &self,
        pseudonym: &str,
    ) -> Result<Vec<(TrailRow, Option<Receipt>, bool, bool)>, NodeError> {
        self.card(pseudonym).await?;
        let dir = self.directory()?;
        let hub_key = dir
            .hub()
            .and_then(|h| verifying_key(&h.signing_key, "hub key").ok());
        let mut out = Vec::new();
        for row in self.store.trail(pseudonym).await? {
            let (receipt, ok) = match (&row.hub_receipt, &hub_key) {
                (Some(bytes), Some(key)) => {
                    let signed = stored::<Signed>(bytes, "hub receipt")?;
                    match open_signed::<Receipt>(Domain::Receipt, &signed, key) {
                        Ok(r) => {
                            let ok = row.envelope_id.as_deref() == Some(r.envelope_id.as_slice());
                            (Some(r), ok)
                        }
                        Err(_) => (decode_body::<Receipt>(Domain::Receipt, &signed).ok(), false),
                    }
                }
                _ => (None, false),
            };
            let proven = match &row.envelope_id {
                Some(id) => self.store.is_proven(id).await?,
                None => false,
            };
            out.push((row, receipt, ok, proven));
        }
        Ok(out)
    }

    // ---- recipient side -------------------------------------------------------------------

    /// Shows a received passport to a staff member: logs the view, moves the status to gelezen
    /// on the first view, and reports the view to the home school.
    pub async fn view(
        &self,
        grant_id: &str,
        staff_user: &str,
    ) -> Result<(Received, Vec<Section>), NodeError> {
        let staff_user = staff_user.trim();
        if staff_user.is_empty() {
            return Err(NodeError::Invalid(
                "name the staff member who views the passport (it is logged)".into(),
            ));
        }
        // After its consent ended a passport is not shown, even before the reaper erased it.
        let now = self.now();
        let mut received = self
            .store
            .received(grant_id)
            .await?
            .filter(|r| now < r.not_after)
            .ok_or_else(|| {
                NodeError::NotFound(format!("no passport under grant {grant_id} at this node"))
            })?;
        let manifest: Manifest = decode_body(
            Domain::Manifest,
            &stored::<Signed>(&received.manifest, "manifest")?,
        )?;
        let mut sections = Vec::with_capacity(received.disclosures.len());
        for (_, d) in &received.disclosures {
            let disclosure: Disclosure = stored(d, "section")?;
            sections.push(stored::<Section>(&disclosure.section, "section")?);
        }
        // The order of the manifest is the order the student filled it in.
        sections.sort_by_key(|s| {
            manifest
                .digests
                .iter()
                .position(|d| d.section_id == s.section_id)
        });
        if received.status == "ontvangen" {
            received.status = "gelezen".into();
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        tx.log_view(grant_id, staff_user, now).await?;
        tx.set_received_status(grant_id, &received.status).await?;
        self.report_status_in(&mut tx, &received, &received.status, vec![now])
            .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok((received, sections))
    }

    /// Sets the status of a received passport and reports it to the home school.
    pub async fn set_status(
        &self,
        grant_id: &str,
        status: &str,
        staff_user: &str,
    ) -> Result<(), NodeError> {
        if !STATUSES.contains(&status) {
            return Err(NodeError::Invalid(format!(
                "status {status:?} is not one of {}",
                STATUSES.join(", ")
            )));
        }
        if staff_user.trim().is_empty() {
            return Err(NodeError::Invalid(
                "name the staff member who sets the status".into(),
            ));
        }
        let received = self.store.received(grant_id).await?.ok_or_else(|| {
            NodeError::NotFound(format!("no passport under grant {grant_id} at this node"))
        })?;
        let mut tx = self.store.begin().await?;
        tx.set_received_status(grant_id, status).await?;
        self.report_status_in(&mut tx, &received, status, vec![])
            .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    async fn report_status_in(
        &self,
        tx: &mut Tx,
        r: &Received,
        status: &str,
        viewed_at: Vec<i64>,
    ) -> Result<(), NodeError> {
        self.seal_in(
            tx,
            &r.from_org,
            EnvelopeKind::Status,
            Some(&r.grant_id),
            Payload {
                purpose: r.purpose.clone(),
                content: Some(Content::Status(HandoverStatus {
                    grant_id: r.grant_id.clone(),
                    pseudonym: r.pseudonym.clone(),
                    status: status.to_string(),
                    at: self.now(),
                    viewed_at,
                    version: r.version,
                })),
                ..Default::default()
            },
            None,
        )
        .await?;
        Ok(())
    }

    /// Erases what a grant brought, signs a deletion receipt and queues it for the home school.
    async fn erase_in(
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
                    verify_header(envelope, &dir, self.max_body).ok()?;
                    let opened =
                        open(envelope, &dir, &self.org_id, &key_refs, self.max_body).ok()?;
                    Some((claimed, opened))
                })
                .collect()
        };
        let mut i = 0;
        while i < run.len() {
            let start = i;
            let (mut stretch, senders) = match self
                .take_in_stretch(run, &prepared, &dir, &mut i)
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
        i: &mut usize,
    ) -> Result<(Vec<Outcome>, std::collections::BTreeSet<String>), NodeError> {
        let mut tx: Option<Tx> = None;
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
            let t = match &mut tx {
                Some(t) => t,
                None => tx.insert(self.store.begin().await?),
            };
            if t.is_processed(&claimed.envelope_id).await? {
                stretch.push(Outcome::Duplicate);
            } else {
                let seq = opened.payload.seq;
                if seq != 0 && seq != t.peer(from).await?.received_seq + 1 {
                    // Taken in before under another envelope, or ahead of a gap.
                    break;
                }
                let receipt = run[*i].1.as_ref();
                let outcome = self
                    .take_in_next(t, dir, dir, claimed, opened, receipt, false)
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
        if let Some(t) = tx {
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
            Ok(_) => Ok(()),
            Err(
                e @ (ProtocolError::MissingSignature { .. } | ProtocolError::BadSignature { .. }),
            ) => {
                match self
                    .signed_before_rotation(envelope, &dir, &claimed, receipt)
                    .await?
                {
                    Some(older) => {
                        sealed_under = Some(older);
                        Ok(())
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
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
        let keys = read_lock(&self.encryption_keys);
        let key_refs: Vec<&EncryptionKeyPair> = keys.iter().collect();
        let opened = match open(
            envelope,
            sealed_under.as_ref().unwrap_or(&dir),
            &self.org_id,
            &key_refs,
            self.max_body,
        ) {
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
        let Some(outcome) = self
            .take_in_next(
                &mut tx,
                &dir,
                sealed_under.as_ref().unwrap_or(&dir),
                &claimed,
                &opened,
                receipt,
                from_held,
            )
            .await?
        else {
            return Ok((Outcome::Duplicate, None));
        };
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
    /// rolled back.
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
    ) -> Result<Option<Outcome>, NodeError> {
        let from = &claimed.from_org;
        let seq = opened.payload.seq;
        if !opened.payload.checkpoint.is_empty() {
            tx.add_peer_checkpoint(from, &opened.payload.checkpoint, self.now())
                .await?;
        }
        if seq != 0 {
            tx.set_received_seq(from, seq).await?;
        }
        if from_held {
            tx.unhold(from, seq).await?;
        }
        let outcome = self
            .apply_in(tx, dir, sealed_under, claimed, opened, receipt)
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
        // Marking it processed last, in the same transaction: if it was processed before, the
        // whole effect is rolled back.
        if !tx
            .insert_processed(&self.processed_row(claimed, receipt, label, detail))
            .await?
        {
            return Ok(None);
        }
        Ok(Some(outcome))
    }

    /// The effect of one opened envelope, inside the transaction that marks it processed.
    /// `signed_under` is the directory the envelope was sealed under (the one before its
    /// sender's key rotation, for one in flight across it): what the sender signed inside, such
    /// as a student card, is checked against that.
    async fn apply_in(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        signed_under: &VerifiedDirectory,
        header: &EnvelopeHeader,
        opened: &Opened,
        receipt: Option<&Signed>,
    ) -> Result<Outcome, NodeError> {
        let from = &header.from_org;
        match &opened.payload.content {
            Some(Content::Package(p)) => {
                match self.check_package(tx, signed_under, opened, p).await? {
                    Ok((received, superseded)) => {
                        let grant_id = received.grant_id.clone();
                        tx.store_received(&received).await?;
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
                        self.report_status_in(tx, &received, "ontvangen", vec![])
                            .await?;
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
                let Some(g) = tx
                    .grant(&st.grant_id)
                    .await?
                    .filter(|g| g.recipient_org == *from)
                else {
                    return Ok(Outcome::Noted("status for a grant not held here"));
                };
                tx.set_grant_status(&g.grant_id, &st.status, st.at, st.viewed_at.len() as u32)
                    .await?;
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
                        "ontvangen" => (
                            "delivered",
                            format!("{from} received version {} and checked it", st.version),
                        ),
                        other => ("status", format!("{from}: {other}")),
                    };
                    events.push((event.into(), st.at, detail));
                }
                for (event, at, detail) in events {
                    tx.add_trail(&TrailRow {
                        pseudonym: g.pseudonym.clone(),
                        grant_id: g.grant_id.clone(),
                        org: from.clone(),
                        event,
                        at,
                        detail,
                        envelope_id: Some(header.envelope_id.clone()),
                        hub_receipt: receipt.map(|r| r.encode_to_vec()),
                        evidence: Some(opened.signed_payload.encode_to_vec()),
                    })
                    .await?;
                }
                Ok(Outcome::Noted("status"))
            }
            Some(Content::Refusal(r)) => {
                let grant_id = tx
                    .mark_refused(from, &r.refused_envelope_id, &r.reason)
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
            None => {
                self.refuse_in(tx, dir, header, None, "payload has no content".into())
                    .await
            }
        }
    }

    /// Everything a recipient checks before it stores one byte of a package. The outer error is
    /// the node's own trouble (retry later); the inner one is a refusal. The flag says the
    /// package replaces an older version held under the same grant.
    async fn check_package(
        &self,
        tx: &mut Tx,
        dir: &VerifiedDirectory,
        opened: &Opened,
        p: &Package,
    ) -> Result<Result<(Received, bool), ProtocolError>, NodeError> {
        let held = self
            .held_card(tx, &opened.header.from_org, p.card.as_ref())
            .await?;
        let received = match self.check_package_rules(dir, opened, p, held) {
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
        }
        Ok(Ok((received, superseded)))
    }

    /// Whether an envelope whose header the sender's current key did not sign was signed, and
    /// accepted by the hub, before that key was rotated in: in flight across the rotation. The
    /// header must verify under the key of the directory version before the rotation, and the
    /// hub's signed receipt must date its arrival before the rotation was issued (with an hour
    /// of grace for publishing it). After that, the old key counts for nothing: a thief who
    /// holds it meets a hub that refuses it.
    async fn signed_before_rotation(
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
    ) -> Result<Option<StudentCard>, NodeError> {
        let Some(Ok(probe)) = incoming.map(|c| decode_body::<StudentCard>(Domain::StudentCard, c))
        else {
            return Ok(None);
        };
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
    ) -> Result<Received, ProtocolError> {
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
        let card = pinned_card(held, card)?;
        let manifest = verify_manifest(manifest_signed, &card, self.now())?;
        let grant = verify_grant(grant_signed, &card, self.now())?;
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
        let held = self.held_card(tx, home, notice.card.as_ref()).await?;
        let check = || -> Result<Revocation, ProtocolError> {
            let card_signed = notice.card.as_ref().ok_or(ProtocolError::Malformed {
                what: "revocation",
                detail: "no card".into(),
            })?;
            let rev_signed = notice.revocation.as_ref().ok_or(ProtocolError::Malformed {
                what: "revocation",
                detail: "empty".into(),
            })?;
            let card = verify_card(card_signed, &dir.signing_key_of(home)?)?;
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
    async fn refuse_in(
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

    /// Whether a receipt handed back by the hub is signed by the directory's hub and is for
    /// this envelope.
    pub fn check_receipt(&self, receipt: &Signed, envelope_id: &[u8]) -> Result<(), NodeError> {
        let dir = self.directory()?;
        let hub = dir
            .hub()
            .ok_or_else(|| NodeError::Invalid("the directory lists no hub".into()))?;
        let key = verifying_key(&hub.signing_key, "hub key")?;
        let r: Receipt = open_signed(Domain::Receipt, receipt, &key)?;
        if r.envelope_id != envelope_id {
            return Err(NodeError::Invalid(
                "the hub's receipt is for another envelope".into(),
            ));
        }
        Ok(())
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
        let key = verifying_key(&hub.signing_key, "hub key")?;
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

fn grant_time_of(g: &GrantRow, now: UnixTime) -> GrantTime {
    window_time(g.not_before, g.not_after, now)
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

/// Whether `erase_in` removes what is held, or only answers as if it had (for a grant held here
/// for another school, whose existence the asking school must not learn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Erase {
    Yes,
    AnswerOnly,
}

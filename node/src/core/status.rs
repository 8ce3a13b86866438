//! Handovers and what became of them: the home side's handovers and the student's trail, and
//! on the recipient side the views and status of a received passport, reported back to the home
//! school.

use overstap_proto::envelope::{MAX_STATUSES, RECEIVED};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    Disclosure, EnvelopeKind, HandoverStatus, HandoverStatuses, Manifest, Payload, Receipt,
    Section, Signed,
};
use overstap_proto::sign::{Domain, decode_body, open_signed, verifying_key};

use crate::store::{AuditRow, GrantRow, Received, TrailRow, Tx};

use super::{NodeCore, NodeError, STATUSES, stored};

/// The "ontvangen" statuses owed to the senders of the packages a transaction took in, in the
/// order taken in; sealed by [`NodeCore::send_owed_in`] before that transaction commits, so a
/// run of packages from one sender is answered with one envelope instead of one each.
#[derive(Default)]
pub(super) struct Owed(Vec<(String, String, HandoverStatus)>);

impl Owed {
    /// A status owed for a package just stored (`r`).
    pub(super) fn push(&mut self, r: &Received, at: i64) {
        self.0.push((
            r.from_org.clone(),
            r.purpose.clone(),
            status_of(r, RECEIVED, at, Vec::new()),
        ));
    }
}

/// The status of the passport `r` holds, to report to its home school.
fn status_of(r: &Received, status: &str, at: i64, viewed_at: Vec<i64>) -> HandoverStatus {
    HandoverStatus {
        grant_id: r.grant_id.clone(),
        pseudonym: r.pseudonym.clone(),
        status: status.to_string(),
        at,
        viewed_at,
        version: r.version,
        package_envelope_id: r.envelope_id.clone(),
    }
}

impl NodeCore {
    /// Seals what is `owed`, inside `tx`: per sender, a status that is alone goes as it always
    /// did (`HandoverStatus`), more go together (`HandoverStatuses`, at most
    /// [`MAX_STATUSES`] in one).
    pub(super) async fn send_owed_in(&self, tx: &mut Tx, owed: Owed) -> Result<(), NodeError> {
        let mut senders: Vec<(String, Vec<(String, HandoverStatus)>)> = Vec::new();
        for (to, purpose, st) in owed.0 {
            match senders.iter_mut().find(|(s, _)| *s == to) {
                Some((_, list)) => list.push((purpose, st)),
                None => senders.push((to, vec![(purpose, st)])),
            }
        }
        for (to, list) in senders {
            for chunk in list.chunks(MAX_STATUSES) {
                if let [(purpose, st)] = chunk {
                    self.seal_status_in(tx, &to, purpose, st.clone()).await?;
                    continue;
                }
                let payload = Payload {
                    content: Some(Content::Statuses(HandoverStatuses {
                        statuses: chunk.iter().map(|(_, st)| st.clone()).collect(),
                    })),
                    ..Default::default()
                };
                self.seal_in(tx, &to, EnvelopeKind::Status, None, payload, None)
                    .await?;
            }
        }
        Ok(())
    }

    /// Seals one status alone for the home school `to`, under its grant.
    async fn seal_status_in(
        &self,
        tx: &mut Tx,
        to: &str,
        purpose: &str,
        st: HandoverStatus,
    ) -> Result<(), NodeError> {
        let grant_id = st.grant_id.clone();
        let payload = Payload {
            purpose: purpose.to_string(),
            content: Some(Content::Status(st)),
            ..Default::default()
        };
        self.seal_in(tx, to, EnvelopeKind::Status, Some(&grant_id), payload, None)
            .await?;
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

    /// Shows a received passport to a staff member: logs the view, moves the status to gelezen
    /// on the first view, and reports the view to the home school.
    /// `role` is the role the staff member acts in (for the audit).
    pub async fn view(
        &self,
        grant_id: &str,
        staff_user: &str,
        role: &str,
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
        tx.audit(&audit_row(now, staff_user, role, "view", grant_id, ""))
            .await?;
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
        role: &str,
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
        // Like a view: after its consent ended a passport takes no status.
        let now = self.now();
        let received = self
            .store
            .received(grant_id)
            .await?
            .filter(|r| now < r.not_after)
            .ok_or_else(|| {
                NodeError::NotFound(format!("no passport under grant {grant_id} at this node"))
            })?;
        let mut tx = self.store.begin().await?;
        tx.set_received_status(grant_id, status).await?;
        tx.audit(&audit_row(
            now, staff_user, role, "status", grant_id, status,
        ))
        .await?;
        self.report_status_in(&mut tx, &received, status, vec![])
            .await?;
        tx.commit().await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Notes a staff action that is no change of its own (a sign-in, an invitation sent by a
    /// page): `action` one word, `subject` what it was about.
    pub async fn audit(
        &self,
        who: &str,
        role: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), NodeError> {
        let row = audit_row(self.now(), who, role, action, subject, detail);
        Ok(self.store.audit(&row).await?)
    }

    pub(super) async fn report_status_in(
        &self,
        tx: &mut Tx,
        r: &Received,
        status: &str,
        viewed_at: Vec<i64>,
    ) -> Result<(), NodeError> {
        let st = status_of(r, status, self.now(), viewed_at);
        self.seal_status_in(tx, &r.from_org, &r.purpose, st).await
    }
}

/// The role of a staff member who acts through the node's local API (the `overstap` command on
/// the node's own machine), for the audit.
pub const TERMINAL_ROLE: &str = "terminal";

pub(super) fn audit_row(
    at: i64,
    who: &str,
    role: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> AuditRow {
    AuditRow {
        at,
        who: who.trim().to_string(),
        role: role.to_string(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail: detail.to_string(),
    }
}

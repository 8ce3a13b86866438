//! Home side, students and their passports: issuing a student card, a new card after a lost
//! key, reading the card, and keeping a new passport version (which every live grant follows).

use overstap_proto::consent::GrantTime;
use overstap_proto::passport::{
    ROLE_GUARDIAN, ROLE_STUDENT, Signers, parse_birth_month, refuse_retired_keys, verify_card_in,
    verify_disclosures, verify_manifest_by,
};
use overstap_proto::pb::{Disclosure, Manifest, Signed, StudentCard};
use overstap_proto::sign::{Domain, decode_body, sign_message, verifying_key};
use prost::Message;

use crate::store::TrailRow;

use super::consent::grant_time_of;
use super::{NodeCore, NodeError, random_bytes, stored};

impl NodeCore {
    /// Issues a pseudonym and a signed student card for a key made on the student's device.
    pub async fn register_student(
        &self,
        student_key: &[u8],
        birth_month: &str,
        guardian_keys: &[Vec<u8>],
        staff_user: &str,
    ) -> Result<Signed, NodeError> {
        let card = self.new_card(student_key, birth_month, guardian_keys, staff_user)?;
        // Signed under the writer lock: a rotation of this node's key re-signs the stored cards
        // under that lock too, so no card signed with the old key is stored after it.
        let mut tx = self.store.begin().await?;
        let signed = sign_message(Domain::StudentCard, &card, &[&self.key()]);
        tx.insert_student(
            &card.pseudonym,
            &signed.encode_to_vec(),
            staff_user,
            card.issued_at,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(org = %self.org_id, "student card issued");
        Ok(signed)
    }

    /// Issues the card of a student a mentor invited through the web app, once the mentor has
    /// compared, in person, the short code of the key the student's browser handed in: the
    /// card, the student's name and class, and the invitation's use are one transaction, so an
    /// invitation issues at most one card.
    ///
    /// A student under 16 gets a card only with a guardian's key: the keys handed in through the
    /// enrolment's guardian links, which the mentor confirmed in the same step, are on it.
    pub async fn enrol_student(
        &self,
        invitation_id: i64,
        mentor: &str,
    ) -> Result<Signed, NodeError> {
        let mut tx = self.store.begin().await?;
        let Some(invitation) = tx.invitation(invitation_id).await? else {
            return Err(NodeError::NotFound(format!(
                "no invitation {invitation_id}"
            )));
        };
        if invitation.mentor != mentor {
            return Err(NodeError::Precondition(format!(
                "this invitation is {}'s; only they can confirm it",
                invitation.mentor
            )));
        }
        if invitation.used_at.is_some() {
            return Err(NodeError::Precondition(
                "this invitation has been used already".into(),
            ));
        }
        let Some(student_key) = invitation.student_key.as_deref() else {
            return Err(NodeError::Precondition(
                "the student's browser has not made a key yet".into(),
            ));
        };
        let now = self.now();
        if invitation.expires_at <= now {
            return Err(NodeError::Precondition(
                "this invitation has run out".into(),
            ));
        }
        let guardians = tx.guardian_keys_of_invitation(invitation_id, now).await?;
        let guardian_keys: Vec<Vec<u8>> = guardians.iter().filter_map(|l| l.key.clone()).collect();
        if overstap_proto::passport::under_16(&invitation.birth_month, now)?
            && guardian_keys.is_empty()
        {
            return Err(NodeError::Precondition(
                "the student is under 16: a parent's key is needed first".into(),
            ));
        }
        let card = self.new_card(student_key, &invitation.birth_month, &guardian_keys, mentor)?;
        let signed = sign_message(Domain::StudentCard, &card, &[&self.key()]);
        tx.insert_student(&card.pseudonym, &signed.encode_to_vec(), mentor, now)
            .await?;
        tx.use_invitation(&invitation, &card.pseudonym, now).await?;
        for l in &guardians {
            tx.use_key_link(l.id, &card.pseudonym, now).await?;
        }
        tx.commit().await?;
        tracing::info!(org = %self.org_id, "student card issued for an invitation");
        Ok(signed)
    }

    /// A new card for `student_key`, checked against the card rules (valid keys, a birth month,
    /// a guardian under 16, a named staff member), not yet signed or stored.
    fn new_card(
        &self,
        student_key: &[u8],
        birth_month: &str,
        guardian_keys: &[Vec<u8>],
        staff_user: &str,
    ) -> Result<StudentCard, NodeError> {
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
        Ok(StudentCard {
            device_keys: Vec::new(),
            pseudonym: format!("pvs-{}", hex::encode(random_bytes::<8>())),
            home_org: self.org_id.clone(),
            student_key: student_key.to_vec(),
            birth_month: birth_month.to_string(),
            guardian_keys: guardian_keys.to_vec(),
            issued_at: now,
            retired_keys: Vec::new(),
        })
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
            overstap_proto::passport::student_keys(&old).any(|s| s == k)
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
            // The student's keys on every device go: which device was lost is not known.
            for k in overstap_proto::passport::student_keys(&old) {
                retire(&mut card, k, ROLE_STUDENT);
            }
            card.student_key = key.to_vec();
            card.device_keys.clear();
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
        tx.replace_card(pseudonym, &signed.encode_to_vec(), self.now())
            .await?;
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
        let bytes = self.store.student_card(pseudonym).await?;
        self.card_from(pseudonym, bytes.as_deref())
    }

    /// [`NodeCore::card`], from the card as stored (read beforehand; `None`: no such student).
    pub(super) fn card_from(
        &self,
        pseudonym: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(Signed, StudentCard), NodeError> {
        let bytes = bytes.ok_or_else(|| {
            NodeError::NotFound(format!("no student {pseudonym} at {}", self.org_id))
        })?;
        let signed = stored::<Signed>(bytes, "student card")?;
        let card = verify_card_in(&self.checked, &signed, &self.key().verifying_key())?;
        Ok((signed, card))
    }

    /// Keeps a new passport version signed by the student (and guardian under 16), and sends it
    /// to every holder of a live grant.
    pub async fn store_passport(
        &self,
        manifest: &Signed,
        disclosures: &[Disclosure],
    ) -> Result<u32, NodeError> {
        self.keep_passport(manifest, disclosures, Signers::StudentAndGuardian, None)
            .await
    }

    /// Checks a passport version with the signatures `rule` asks for; with
    /// [`Signers::StudentFirst`] it is held for a guardian (and not kept yet), otherwise kept.
    /// With `drop_held`, the version a guardian just co-signed leaves the held ones in the same
    /// transaction.
    pub(super) async fn keep_passport(
        &self,
        manifest: &Signed,
        disclosures: &[Disclosure],
        rule: Signers,
        drop_held: Option<i64>,
    ) -> Result<u32, NodeError> {
        let probe: Manifest = decode_body(Domain::Manifest, manifest)?;
        let (_, card) = self.card(&probe.pseudonym).await?;
        refuse_retired_keys(Domain::Manifest, manifest, &card)?;
        let m = verify_manifest_by(manifest, &card, self.now(), rule, Some(&self.checked))?;
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
        if rule == Signers::StudentFirst {
            let package = overstap_proto::pb::StorePassportRequest {
                manifest: None,
                sections: disclosures.to_vec(),
            };
            tx.hold_for_guardian(
                &m.pseudonym,
                "passport",
                &manifest.encode_to_vec(),
                Some(&package.encode_to_vec()),
                self.now(),
            )
            .await?;
            tx.commit().await?;
            return Ok(m.version);
        }
        if let Some(id) = drop_held {
            tx.drop_held(id).await?;
        }
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
}

//! Home side, more keys and a guardian's word: a key from a one-time link joins a student's
//! card once a person compared its short code (a parent's key, the student's key on another
//! device, or a new key after a loss); and what a student under 16 signs waits, held at this
//! node, until a guardian co-signs it on their own device, or declines.

use overstap_proto::passport::{ROLE_STUDENT, Signers, student_keys, under_16};
use overstap_proto::pb::{
    ConsentGrant, Manifest, RetiredKey, Sig, Signed, StorePassportRequest, StudentCard,
};
use overstap_proto::sign::{Domain, decode_body, sign_message, verifying_key};
use prost::Message;

use crate::store::{HeldRow, LinkRole, TrailRow};

use super::{NodeCore, NodeError, stored};

/// What became of something a student signed in the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Kept and in force: a passport version's number, or a grant's id.
    Done(String),
    /// Held until a guardian co-signs it.
    Held(String),
}

/// Who confirmed a key link's short code.
#[derive(Debug, Clone, Copy)]
pub enum Confirmer<'a> {
    /// The staff member (a mentor, in person).
    Staff(&'a str),
    /// The student, signed in on a device that already has a key.
    Student(&'a str),
}

impl NodeCore {
    /// The pseudonym of the student whose card names `key` as a student key (any device) or,
    /// with `guardian`, as a guardian key (of several children, one for whom something waits).
    pub async fn student_by_key(
        &self,
        key: &[u8],
        guardian: bool,
    ) -> Result<Option<String>, NodeError> {
        let mut found = Vec::new();
        for (pseudonym, card) in self.store.student_cards().await? {
            let signed: Signed = stored(&card, "student card")?;
            let card: StudentCard = decode_body(Domain::StudentCard, &signed)?;
            let names = if guardian {
                card.guardian_keys.iter().any(|g| g == key)
            } else {
                student_keys(&card).any(|k| k == key)
            };
            if names {
                found.push(pseudonym);
            }
        }
        // A parent's one key may be on the cards of several children: the one for whom
        // something waits comes first.
        for p in &found {
            if guardian
                && self
                    .store
                    .held_for_guardian(p)
                    .await?
                    .iter()
                    .any(|h| h.declined_at.is_none())
            {
                return Ok(Some(p.clone()));
            }
        }
        Ok(found.into_iter().next())
    }

    /// Whether the student is under 16 today, so a guardian must co-sign.
    pub async fn needs_guardian(&self, pseudonym: &str) -> Result<bool, NodeError> {
        let (_, card) = self.card(pseudonym).await?;
        Ok(under_16(&card.birth_month, self.now())?)
    }

    /// Keeps a passport version the student signed, or holds it for a guardian when the
    /// student is under 16 and no guardian signed it.
    pub async fn student_signed_passport(
        &self,
        manifest: &Signed,
        sections: &[overstap_proto::pb::Disclosure],
    ) -> Result<Kept, NodeError> {
        let probe: Manifest = decode_body(Domain::Manifest, manifest)?;
        if self.waits_for_guardian(&probe.pseudonym, manifest).await? {
            let v = self
                .keep_passport(manifest, sections, Signers::StudentFirst, None)
                .await?;
            tracing::info!(version = v, "a passport version waits for a guardian");
            return Ok(Kept::Held(v.to_string()));
        }
        let v = self.store_passport(manifest, sections).await?;
        Ok(Kept::Done(v.to_string()))
    }

    /// Keeps a grant the student signed, or holds it for a guardian as
    /// [`NodeCore::student_signed_passport`] does.
    pub async fn student_signed_grant(&self, signed: &Signed) -> Result<Kept, NodeError> {
        let probe: ConsentGrant = decode_body(Domain::Grant, signed)?;
        if self.waits_for_guardian(&probe.pseudonym, signed).await? {
            let id = self.keep_grant(signed, Signers::StudentFirst, None).await?;
            tracing::info!(grant = %id, "a consent waits for a guardian");
            return Ok(Kept::Held(id));
        }
        Ok(Kept::Done(self.add_grant(signed).await?))
    }

    async fn waits_for_guardian(
        &self,
        pseudonym: &str,
        signed: &Signed,
    ) -> Result<bool, NodeError> {
        let (_, card) = self.card(pseudonym).await?;
        let guardian_signed = signed
            .sigs
            .iter()
            .any(|s| card.guardian_keys.contains(&s.public_key));
        Ok(under_16(&card.birth_month, self.now())? && !guardian_signed)
    }

    /// What waits for a guardian of this student.
    pub async fn held(&self, pseudonym: &str) -> Result<Vec<HeldRow>, NodeError> {
        Ok(self.store.held_for_guardian(pseudonym).await?)
    }

    /// A guardian co-signed the held item `id` with `sig` over its exact bytes: it is kept as
    /// any fully signed version or consent, and leaves the held ones in the same transaction.
    /// Returns what it was: "passport" or "consent".
    pub async fn cosign(&self, pseudonym: &str, id: i64, sig: Sig) -> Result<String, NodeError> {
        let row = self.held_row(pseudonym, id).await?;
        let mut signed: Signed = stored(&row.signed, "held signature")?;
        let (_, card) = self.card(pseudonym).await?;
        if !card.guardian_keys.contains(&sig.public_key) {
            return Err(NodeError::Invalid(
                "that key is not a guardian key on this student's card".into(),
            ));
        }
        signed.sigs.retain(|s| s.public_key != sig.public_key);
        signed.sigs.push(sig);
        match row.kind.as_str() {
            "passport" => {
                let package: StorePassportRequest =
                    stored(row.sections.as_deref().unwrap_or_default(), "held sections")?;
                self.keep_passport(
                    &signed,
                    &package.sections,
                    Signers::StudentAndGuardian,
                    Some(id),
                )
                .await?;
            }
            "consent" => {
                self.keep_grant(&signed, Signers::StudentAndGuardian, Some(id))
                    .await?;
            }
            other => return Err(NodeError::Corrupt(format!("a held item of kind {other}"))),
        }
        tracing::info!(kind = %row.kind, "a guardian co-signed");
        Ok(row.kind)
    }

    /// A guardian declined the held item `id`: it stays, marked, so the student reads it.
    pub async fn decline(&self, pseudonym: &str, id: i64) -> Result<(), NodeError> {
        let mut tx = self.store.begin().await?;
        open_held(tx.held(id, pseudonym).await?)?;
        tx.decline_held(id, self.now()).await?;
        tx.commit().await?;
        tracing::info!("a guardian declined");
        Ok(())
    }

    async fn held_row(&self, pseudonym: &str, id: i64) -> Result<HeldRow, NodeError> {
        let row = self
            .store
            .held_for_guardian(pseudonym)
            .await?
            .into_iter()
            .find(|h| h.id == id);
        open_held(row)
    }

    /// Adds the key handed in through the link `link_id` to its student's card, once a person
    /// compared its short code: a guardian's, another device's, or a new student key after a
    /// loss (which retires every student key the card had). The new card, the trail and the
    /// link's use are one transaction.
    pub async fn add_link_key(&self, link_id: i64, by: Confirmer<'_>) -> Result<Signed, NodeError> {
        let now = self.now() + 1;
        // Read under the writer lock: a link adds one key, once.
        let mut tx = self.store.begin().await?;
        let link = tx
            .key_link(link_id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("no key link {link_id}")))?;
        let Some(pseudonym) = link.pseudonym.clone() else {
            return Err(NodeError::Precondition(
                "this link belongs to an enrolment: the card is issued with it".into(),
            ));
        };
        let who = match by {
            Confirmer::Staff(user) => user.to_string(),
            Confirmer::Student(p) if p == pseudonym && link.role == LinkRole::Device => {
                "the student".to_string()
            }
            Confirmer::Student(_) => {
                return Err(NodeError::Precondition(
                    "only the student's mentor can confirm this key".into(),
                ));
            }
        };
        if link.used_at.is_some() {
            return Err(NodeError::Precondition("this link has been used".into()));
        }
        if link.expires_at <= self.now() {
            return Err(NodeError::Precondition("this link has run out".into()));
        }
        let Some(key) = link.key.clone() else {
            return Err(NodeError::Precondition(
                "no key has been made with this link yet".into(),
            ));
        };
        verifying_key(&key, "new key")?;
        let old_bytes = tx.student_card(&pseudonym).await?.ok_or_else(|| {
            NodeError::NotFound(format!("no student {pseudonym} at {}", self.org_id))
        })?;
        let old = overstap_proto::passport::verify_card(
            &stored::<Signed>(&old_bytes, "student card")?,
            &self.key().verifying_key(),
        )?;
        let known = student_keys(&old).any(|k| *k == key)
            || old.guardian_keys.contains(&key)
            || old.retired_keys.iter().any(|r| r.key == key);
        if known {
            return Err(NodeError::Invalid(
                "this key is on the card already, or was reported lost".into(),
            ));
        }
        let mut card = old.clone();
        card.issued_at = now.max(old.issued_at + 1);
        let (event, detail) = match link.role {
            LinkRole::Guardian => {
                card.guardian_keys.push(key);
                ("new key", format!("{who} added a guardian's key"))
            }
            LinkRole::Device => {
                if card.device_keys.len() >= overstap_proto::passport::MAX_DEVICE_KEYS {
                    return Err(NodeError::Invalid(format!(
                        "the card has {} devices already; ask the mentor to start again with one",
                        card.device_keys.len() + 1
                    )));
                }
                card.device_keys.push(key);
                (
                    "new key",
                    format!("{who} added the student's key on another device"),
                )
            }
            LinkRole::Replace => {
                for k in student_keys(&old) {
                    card.retired_keys.push(RetiredKey {
                        key: k.clone(),
                        role: ROLE_STUDENT.into(),
                        retired_at: now,
                    });
                }
                card.student_key = key;
                card.device_keys.clear();
                if card.retired_keys.len() > overstap_proto::passport::MAX_RETIRED_KEYS {
                    return Err(NodeError::Invalid(format!(
                        "student {pseudonym} has reported too many keys lost; register them afresh"
                    )));
                }
                (
                    "new key",
                    format!(
                        "{who} checked the student in person and gave them a new key; what the \
                         old keys signed before now stays valid, nothing signed with them from now on"
                    ),
                )
            }
        };
        let signed = sign_message(Domain::StudentCard, &card, &[&self.key()]);
        overstap_proto::passport::verify_card(&signed, &self.key().verifying_key())?;
        tx.replace_card(&pseudonym, &signed.encode_to_vec(), self.now())
            .await?;
        tx.add_trail(&TrailRow {
            pseudonym: pseudonym.clone(),
            org: self.org_id.clone(),
            event: event.into(),
            at: now,
            detail,
            evidence: Some(signed.encode_to_vec()),
            ..Default::default()
        })
        .await?;
        tx.use_key_link(link_id, &pseudonym, now).await?;
        tx.commit().await?;
        tracing::info!(role = link.role.word(), "a key joined a student's card");
        Ok(signed)
    }
}

/// A held item that still waits for a guardian, or why it does not.
fn open_held(row: Option<HeldRow>) -> Result<HeldRow, NodeError> {
    match row {
        Some(r) if r.declined_at.is_none() => Ok(r),
        Some(_) => Err(NodeError::Precondition("this was declined already".into())),
        None => Err(NodeError::NotFound(
            "nothing waits for a guardian under that number".into(),
        )),
    }
}

//! Student cards, passport versions, salted section digests and selective disclosure.
//!
//! A passport version is a list of sections plus a manifest that holds one salted SHA-256 digest
//! per section. The student signs the manifest (a guardian too when the student is under 16).
//! Sharing a subset of sections reveals only those sections and their salts; the recipient checks
//! each against the signed manifest, as in SD-JWT, and learns nothing of the other sections.

use ed25519_dalek::VerifyingKey;
use prost::Message;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::pb::{Disclosure, Manifest, Section, SectionDigest, Signed, StudentCard};
use crate::sign::{
    Domain, Memory, decode_body, open_signed_in, verify_signed_by, verify_signed_by_in,
    verifying_key, verifying_key_in,
};
use crate::{ProtocolError, UnixTime};

const SECTION_DOMAIN: &[u8] = b"overstap.v1/section\0";

/// SHA-256(domain || salt length (u32, big-endian) || salt || encoded section).
pub fn section_digest(salt: &[u8], section_bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SECTION_DOMAIN);
    h.update((salt.len() as u32).to_be_bytes());
    h.update(salt);
    h.update(section_bytes);
    h.finalize().into()
}

/// A passport version ready to be signed: the manifest and every section's disclosure.
#[derive(Debug, Clone)]
pub struct PassportVersion {
    pub manifest: Manifest,
    pub disclosures: Vec<Disclosure>,
}

/// Salts and digests `sections` and builds the manifest. Section ids must be unique.
pub fn build_version(
    pseudonym: &str,
    version: u32,
    question_set: &str,
    created_at: UnixTime,
    sections: &[Section],
) -> Result<PassportVersion, ProtocolError> {
    let mut digests = Vec::with_capacity(sections.len());
    let mut disclosures = Vec::with_capacity(sections.len());
    for (i, section) in sections.iter().enumerate() {
        if sections[..i]
            .iter()
            .any(|s| s.section_id == section.section_id)
        {
            return Err(ProtocolError::Malformed {
                what: "passport",
                detail: format!("section {} appears twice", section.section_id),
            });
        }
        let mut salt = vec![0u8; 16];
        rand_core::OsRng.fill_bytes(&mut salt);
        let bytes = section.encode_to_vec();
        digests.push(SectionDigest {
            section_id: section.section_id.clone(),
            digest: section_digest(&salt, &bytes).to_vec(),
        });
        disclosures.push(Disclosure {
            salt,
            section: bytes,
        });
    }
    Ok(PassportVersion {
        manifest: Manifest {
            pseudonym: pseudonym.to_string(),
            version,
            question_set: question_set.to_string(),
            created_at,
            digests,
        },
        disclosures,
    })
}

/// Checks each disclosure against the manifest and returns the sections, in manifest order.
/// Every disclosed section must match a digest; a section may be disclosed only once.
pub fn verify_disclosures(
    manifest: &Manifest,
    disclosures: &[Disclosure],
) -> Result<Vec<Section>, ProtocolError> {
    let mut found: Vec<(usize, Section)> = Vec::with_capacity(disclosures.len());
    for d in disclosures {
        let digest = section_digest(&d.salt, &d.section);
        let idx = manifest
            .digests
            .iter()
            .position(|m| m.digest.as_slice() == digest.as_slice())
            .ok_or_else(|| {
                ProtocolError::Disclosure(
                    "a section does not match any digest in the signed manifest".into(),
                )
            })?;
        let section = Section::decode(d.section.as_slice())
            .map_err(|e| ProtocolError::malformed("section", e))?;
        if section.section_id != manifest.digests[idx].section_id {
            return Err(ProtocolError::Disclosure(format!(
                "section {} was disclosed under the digest of section {}",
                section.section_id, manifest.digests[idx].section_id
            )));
        }
        if found.iter().any(|(i, _)| *i == idx) {
            return Err(ProtocolError::Disclosure(format!(
                "section {} is disclosed twice",
                section.section_id
            )));
        }
        found.push((idx, section));
    }
    found.sort_by_key(|(i, _)| *i);
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

/// Picks the disclosures of the named sections out of a full passport version.
pub fn select_disclosures(
    disclosures: &[Disclosure],
    section_ids: &[String],
) -> Result<Vec<Disclosure>, ProtocolError> {
    let mut out = Vec::with_capacity(section_ids.len());
    for id in section_ids {
        let d = disclosures
            .iter()
            .find(|d| {
                Section::decode(d.section.as_slice())
                    .map(|s| &s.section_id == id)
                    .unwrap_or(false)
            })
            .ok_or_else(|| {
                ProtocolError::Disclosure(format!("the passport has no section {id}"))
            })?;
        out.push(d.clone());
    }
    Ok(out)
}

/// Parses "YYYY-MM" into (year, month).
pub fn parse_birth_month(s: &str) -> Result<(i32, u8), ProtocolError> {
    let bad = || ProtocolError::Malformed {
        what: "birth month",
        detail: format!("{s:?} is not of the form YYYY-MM"),
    };
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&month) || !(1900..=2100).contains(&year) {
        return Err(bad());
    }
    Ok((year, month))
}

/// Whether a student born in `birth_month` may be under 16 at `at` (UAVG art. 5).
///
/// Only the month is known, so the student counts as 16 from the first day of the month after
/// the 16th birthday month: when in doubt, a guardian must sign.
pub fn under_16(birth_month: &str, at: UnixTime) -> Result<bool, ProtocolError> {
    let (year, month) = parse_birth_month(birth_month)?;
    let (y16, m16) = if month == 12 {
        (year + 17, 1)
    } else {
        (year + 16, month + 1)
    };
    let month =
        time::Month::try_from(m16).map_err(|e| ProtocolError::malformed("birth month", e))?;
    let date = time::Date::from_calendar_date(y16, month, 1)
        .map_err(|e| ProtocolError::malformed("birth month", e))?;
    let sixteen = date.midnight().assume_utc().unix_timestamp();
    Ok(at < sixteen)
}

/// A student's card index: HMAC-SHA256 keyed with the pseudonym over a fixed tag. Every card the
/// home node issues or replaces is logged at the hub under it (by the card's hash), so the
/// student can list every card ever issued in their name; the hub never sees the pseudonym.
pub fn card_index(pseudonym: &str) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(pseudonym.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"overstap.v1/card-index");
    mac.finalize().into_bytes().into()
}

/// The hash a card is logged under: SHA-256 of the signed card as encoded.
pub fn card_sha256(signed: &Signed) -> [u8; 32] {
    Sha256::digest(signed.encode_to_vec()).into()
}

/// Verifies a student card issued by the home node whose signing key is `home_key`.
pub fn verify_card(signed: &Signed, home_key: &VerifyingKey) -> Result<StudentCard, ProtocolError> {
    check_card(signed, home_key, None)
}

/// [`verify_card`], remembered in `memory`: a card travels in every package, grant and
/// revocation and is checked at each step; what verified once under a key verifies again (the
/// check is a pure function of the bytes), so the answer is kept by the SHA-256 of the home key
/// and the signed card.
pub fn verify_card_in(
    memory: &Memory,
    signed: &Signed,
    home_key: &VerifyingKey,
) -> Result<StudentCard, ProtocolError> {
    use prost::Message;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(home_key.as_bytes());
    h.update(signed.encode_to_vec());
    let id: [u8; 32] = h.finalize().into();
    if let Some(card) = memory.cards.get(&id) {
        return Ok(card);
    }
    let card = check_card(signed, home_key, Some(memory))?;
    memory.cards.keep(id, card.clone());
    Ok(card)
}

fn check_card(
    signed: &Signed,
    home_key: &VerifyingKey,
    memory: Option<&Memory>,
) -> Result<StudentCard, ProtocolError> {
    let card: StudentCard = open_signed_in(memory, Domain::StudentCard, signed, home_key)?;
    verifying_key_in(memory, &card.student_key, "student key")?;
    parse_birth_month(&card.birth_month)?;
    for g in &card.guardian_keys {
        verifying_key_in(memory, g, "guardian key")?;
    }
    if card.device_keys.len() > MAX_DEVICE_KEYS {
        return Err(ProtocolError::malformed(
            "student card",
            format!("more than {MAX_DEVICE_KEYS} device keys"),
        ));
    }
    for (i, d) in card.device_keys.iter().enumerate() {
        verifying_key_in(memory, d, "device key")?;
        if *d == card.student_key
            || card.guardian_keys.contains(d)
            || card.device_keys[..i].contains(d)
        {
            return Err(ProtocolError::malformed(
                "student card",
                "a device key is named twice, or as another key of the card",
            ));
        }
    }
    if card.retired_keys.len() > MAX_RETIRED_KEYS {
        return Err(ProtocolError::malformed(
            "student card",
            format!("more than {MAX_RETIRED_KEYS} retired keys"),
        ));
    }
    for r in &card.retired_keys {
        verifying_key(&r.key, "retired key")?;
        if r.role != ROLE_STUDENT && r.role != ROLE_GUARDIAN {
            return Err(ProtocolError::malformed(
                "student card",
                format!(
                    "a retired key's role is {:?}, not student or guardian",
                    r.role
                ),
            ));
        }
        if r.retired_at > card.issued_at {
            return Err(ProtocolError::malformed(
                "student card",
                "a key is retired after the card that retires it was issued",
            ));
        }
        if r.key == card.student_key
            || card.guardian_keys.contains(&r.key)
            || card.device_keys.contains(&r.key)
        {
            return Err(ProtocolError::malformed(
                "student card",
                "a retired key is still named as a current key",
            ));
        }
    }
    Ok(card)
}

/// How many lost keys one card may list.
pub const MAX_RETIRED_KEYS: usize = 32;
/// How many device keys one card may list besides the student key.
pub const MAX_DEVICE_KEYS: usize = 8;

/// Every key that signs as the student: the first device's and the other devices'.
pub fn student_keys(card: &StudentCard) -> impl Iterator<Item = &Vec<u8>> {
    std::iter::once(&card.student_key).chain(card.device_keys.iter())
}
pub const ROLE_STUDENT: &str = "student";
pub const ROLE_GUARDIAN: &str = "guardian";

/// Refuses an object that carries any signature by a key the card retires, whatever date the
/// signer wrote (a thief can write any date). The home node applies this to everything new it
/// is handed; recipients, who get only what the home node took in, check the date instead.
pub fn refuse_retired_keys(
    domain: Domain,
    signed: &Signed,
    card: &StudentCard,
) -> Result<(), ProtocolError> {
    for sig in &signed.sigs {
        if let Some(r) = card.retired_keys.iter().find(|r| r.key == sig.public_key) {
            return Err(lost_key(domain, r));
        }
    }
    Ok(())
}

fn lost_key(domain: Domain, r: &crate::pb::RetiredKey) -> ProtocolError {
    ProtocolError::Consent(format!(
        "the {} is signed with a {} key reported lost on {}; it must be signed again with the \
         new key",
        domain.what(),
        r.role,
        crate::format_date(r.retired_at)
    ))
}

/// Whether `newer` may take the place of `held` for the same student: the same pseudonym,
/// school and birth month, issued later, and every key of `held` still current or retired in
/// `newer`. A recipient holding one card takes no other, so a key cannot be swapped silently.
pub fn check_card_follows(held: &StudentCard, newer: &StudentCard) -> Result<(), ProtocolError> {
    if held == newer {
        return Ok(());
    }
    if held.pseudonym != newer.pseudonym
        || held.home_org != newer.home_org
        || held.birth_month != newer.birth_month
    {
        return Err(ProtocolError::Consent(format!(
            "the card for student {} does not match the one held here",
            held.pseudonym
        )));
    }
    if newer.issued_at < held.issued_at {
        return Err(ProtocolError::Consent(format!(
            "the card for student {} was issued {}, before the card held here ({})",
            held.pseudonym,
            crate::format_time(newer.issued_at),
            crate::format_time(held.issued_at)
        )));
    }
    let accounted = |key: &Vec<u8>| {
        student_keys(newer).any(|k| k == key)
            || newer.guardian_keys.contains(key)
            || newer.retired_keys.iter().any(|r| r.key == *key)
    };
    if !student_keys(held).all(accounted) || !held.guardian_keys.iter().all(accounted) {
        return Err(ProtocolError::Consent(format!(
            "the card for student {} drops a key of the card held here without retiring it",
            held.pseudonym
        )));
    }
    if !held.retired_keys.iter().all(|r| {
        newer
            .retired_keys
            .iter()
            .any(|n| n.key == r.key && n.retired_at <= r.retired_at)
    }) {
        return Err(ProtocolError::Consent(format!(
            "the card for student {} brings back a key retired in the card held here",
            held.pseudonym
        )));
    }
    Ok(())
}

/// How far ahead of the verifier's clock a signer's date may be (clocks drift).
pub const MAX_CLOCK_SKEW: i64 = 300;

/// Whose signatures an object about a student needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signers {
    /// The student's, and a guardian's too while the student is under 16: a passport version
    /// and a consent.
    StudentAndGuardian,
    /// The student's alone: what a home node holds until a guardian co-signs it.
    StudentFirst,
    /// The student's or, while the student is under 16, a guardian's on their own: withdrawing
    /// a consent is as easy as giving it (AVG art. 7(3)), and either of the two who gave it
    /// may end it.
    StudentOrGuardian,
}

/// Checks the student's signature, and a guardian's when the student is under 16 at `at`.
///
/// `at` is the date the signer wrote into the object; it may not lie ahead of the verifier's
/// clock `now`, or a 15-year-old could date a consent after their 16th birthday and leave the
/// guardian out. A key the card retires counts only for objects dated before it was retired.
pub fn verify_student_signatures(
    domain: Domain,
    signed: &Signed,
    card: &StudentCard,
    at: UnixTime,
    now: UnixTime,
) -> Result<(), ProtocolError> {
    verify_signers(
        domain,
        signed,
        card,
        at,
        now,
        Signers::StudentAndGuardian,
        None,
    )
}

/// Checks the signatures `rule` asks for, as [`verify_student_signatures`] explains.
pub fn verify_signers(
    domain: Domain,
    signed: &Signed,
    card: &StudentCard,
    at: UnixTime,
    now: UnixTime,
    rule: Signers,
    memory: Option<&Memory>,
) -> Result<(), ProtocolError> {
    if at > now + MAX_CLOCK_SKEW {
        return Err(ProtocolError::Consent(format!(
            "the {} is dated {}, after this node's clock ({}): it cannot be signed ahead",
            domain.what(),
            crate::format_time(at),
            crate::format_time(now)
        )));
    }
    let student = student_signed(memory, domain, signed, card, at);
    let under_16 = under_16(&card.birth_month, at)?;
    match rule {
        Signers::StudentFirst => student,
        Signers::StudentAndGuardian if !under_16 => student,
        Signers::StudentAndGuardian => {
            student.and_then(|()| guardian_signed(memory, domain, signed, card, at))
        }
        Signers::StudentOrGuardian if !under_16 => student,
        Signers::StudentOrGuardian => {
            student.or_else(|e| guardian_signed(memory, domain, signed, card, at).map_err(|_| e))
        }
    }
}

/// Whether one of the student's keys (or a retired one, for an object dated before it was
/// retired) signed.
fn student_signed(
    memory: Option<&Memory>,
    domain: Domain,
    signed: &Signed,
    card: &StudentCard,
    at: UnixTime,
) -> Result<(), ProtocolError> {
    // Any of the student's device keys signs as the student; when none did, a bad signature
    // says more than a missing one.
    let mut student_err = None;
    for key in student_keys(card) {
        let key = verifying_key_in(memory, key, "student key")?;
        match verify_signed_by_in(memory, domain, signed, &key) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let keep = match &student_err {
                    None => true,
                    Some(ProtocolError::MissingSignature { .. }) => {
                        !matches!(e, ProtocolError::MissingSignature { .. })
                    }
                    Some(_) => false,
                };
                if keep {
                    student_err = Some(e);
                }
            }
        }
    }
    let err = student_err.unwrap_or_else(|| ProtocolError::MissingSignature {
        what: domain.what(),
        detail: "the card names no student key".into(),
    });
    check_retired(domain, signed, card, ROLE_STUDENT, at, err)
}

/// Whether one of the card's guardians (or a retired guardian key, for an object dated before
/// it was retired) signed.
fn guardian_signed(
    memory: Option<&Memory>,
    domain: Domain,
    signed: &Signed,
    card: &StudentCard,
    at: UnixTime,
) -> Result<(), ProtocolError> {
    let mut last_err = None;
    for g in &card.guardian_keys {
        let key = verifying_key_in(memory, g, "guardian key")?;
        match verify_signed_by_in(memory, domain, signed, &key) {
            Ok(()) => return Ok(()),
            Err(e) => last_err = Some(e),
        }
    }
    let err = match last_err {
        Some(ProtocolError::BadSignature { what, detail }) => {
            ProtocolError::BadSignature { what, detail }
        }
        _ => ProtocolError::MissingSignature {
            what: domain.what(),
            detail: format!(
                "the student is under 16 on {}, so a guardian must co-sign",
                crate::format_date(at)
            ),
        },
    };
    check_retired(domain, signed, card, ROLE_GUARDIAN, at, err)
}

/// After the current key did not sign: accepts a signature by a retired key of `role` when the
/// object is dated before the key was retired, refuses it by name when not, and otherwise
/// returns `err`, the current key's failure.
fn check_retired(
    domain: Domain,
    signed: &Signed,
    card: &StudentCard,
    role: &str,
    at: UnixTime,
    err: ProtocolError,
) -> Result<(), ProtocolError> {
    for r in card.retired_keys.iter().filter(|r| r.role == role) {
        let Ok(key) = verifying_key(&r.key, "retired key") else {
            continue;
        };
        if verify_signed_by(domain, signed, &key).is_ok() {
            if at < r.retired_at {
                return Ok(());
            }
            return Err(lost_key(domain, r));
        }
    }
    Err(err)
}

/// Verifies a signed manifest against the student's card.
pub fn verify_manifest(
    signed: &Signed,
    card: &StudentCard,
    now: UnixTime,
) -> Result<Manifest, ProtocolError> {
    verify_manifest_by(signed, card, now, Signers::StudentAndGuardian, None)
}

/// [`verify_manifest`], with the signatures `rule` asks for, remembered in `memory` if given.
pub fn verify_manifest_by(
    signed: &Signed,
    card: &StudentCard,
    now: UnixTime,
    rule: Signers,
    memory: Option<&Memory>,
) -> Result<Manifest, ProtocolError> {
    let manifest: Manifest = decode_body(Domain::Manifest, signed)?;
    if manifest.pseudonym != card.pseudonym {
        return Err(ProtocolError::Disclosure(format!(
            "manifest is for student {}, the card is for {}",
            manifest.pseudonym, card.pseudonym
        )));
    }
    verify_signers(
        Domain::Manifest,
        signed,
        card,
        manifest.created_at,
        now,
        rule,
        memory,
    )?;
    Ok(manifest)
}

#[cfg(test)]
mod tests;

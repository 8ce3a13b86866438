//! Consent grants and revocations: signed by the student (and a guardian under 16), checked by
//! the sender before anything leaves a node and by the recipient before anything is stored.

use crate::passport::{Signers, verify_signers};
use crate::pb::{ConsentGrant, PickupCode, Revocation, Signed, StudentCard};
use crate::sign::{Domain, Memory, decode_body};
use crate::{ProtocolError, UnixTime};

/// The purposes a grant may name.
pub const PURPOSES: &[&str] = &["intake", "begeleiding", "werk", "nazorg"];

/// Verifies a signed grant against the student's card: signatures (guardian when the student is
/// under 16 on the grant's issue date), pseudonym, purpose, time window and sections.
pub fn verify_grant(
    signed: &Signed,
    card: &StudentCard,
    now: UnixTime,
) -> Result<ConsentGrant, ProtocolError> {
    verify_grant_by(signed, card, now, Signers::StudentAndGuardian, None)
}

/// [`verify_grant`], with the signatures `rule` asks for, remembered in `memory` if given.
pub fn verify_grant_by(
    signed: &Signed,
    card: &StudentCard,
    now: UnixTime,
    rule: Signers,
    memory: Option<&Memory>,
) -> Result<ConsentGrant, ProtocolError> {
    let grant: ConsentGrant = decode_body(Domain::Grant, signed)?;
    check_grant_shape(&grant, card)?;
    verify_signers(
        Domain::Grant,
        signed,
        card,
        grant.issued_at,
        now,
        rule,
        memory,
    )?;
    Ok(grant)
}

fn check_grant_shape(grant: &ConsentGrant, card: &StudentCard) -> Result<(), ProtocolError> {
    if grant.grant_id.is_empty() || grant.grant_id.len() > 64 {
        return Err(ProtocolError::Consent(
            "grant id must be 1-64 characters".into(),
        ));
    }
    if grant.pseudonym != card.pseudonym {
        return Err(ProtocolError::Consent(format!(
            "grant is for student {}, the card is for {}",
            grant.pseudonym, card.pseudonym
        )));
    }
    if grant.home_org != card.home_org {
        return Err(ProtocolError::Consent(format!(
            "grant names home school {}, the card was issued by {}",
            grant.home_org, card.home_org
        )));
    }
    if !PURPOSES.contains(&grant.purpose.as_str()) {
        return Err(ProtocolError::Consent(format!(
            "purpose {:?} is not one of {}",
            grant.purpose,
            PURPOSES.join(", ")
        )));
    }
    if grant.sections.is_empty() {
        return Err(ProtocolError::Consent("grant names no sections".into()));
    }
    if grant.not_after <= grant.not_before {
        return Err(ProtocolError::Consent(format!(
            "grant ends ({}) before it starts ({})",
            crate::format_date(grant.not_after),
            crate::format_date(grant.not_before)
        )));
    }
    Ok(())
}

/// Why a grant is not in force at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantTime {
    InForce,
    NotYetValid,
    Expired,
}

pub fn grant_time(grant: &ConsentGrant, now: UnixTime) -> GrantTime {
    window_time(grant.not_before, grant.not_after, now)
}

/// Where `now` falls in the window `[not_before, not_after)`.
pub fn window_time(not_before: UnixTime, not_after: UnixTime, now: UnixTime) -> GrantTime {
    if now < not_before {
        GrantTime::NotYetValid
    } else if now >= not_after {
        GrantTime::Expired
    } else {
        GrantTime::InForce
    }
}

/// Refuses a grant outside its time window, with a message for people.
pub fn check_in_force(grant: &ConsentGrant, now: UnixTime) -> Result<(), ProtocolError> {
    match grant_time(grant, now) {
        GrantTime::InForce => Ok(()),
        GrantTime::NotYetValid => Err(ProtocolError::Consent(format!(
            "grant {} is not valid until {}",
            grant.grant_id,
            crate::format_date(grant.not_before)
        ))),
        GrantTime::Expired => Err(ProtocolError::Consent(format!(
            "grant {} expired on {}",
            grant.grant_id,
            crate::format_date(grant.not_after)
        ))),
    }
}

/// Checks that the grant allows `recipient_org` to receive `sections` for `purpose`.
pub fn check_covers(
    grant: &ConsentGrant,
    recipient_org: &str,
    purpose: &str,
    sections: &[String],
) -> Result<(), ProtocolError> {
    if grant.recipient_org != recipient_org {
        return Err(ProtocolError::Consent(format!(
            "grant {} is for {}, not for {}",
            grant.grant_id, grant.recipient_org, recipient_org
        )));
    }
    if grant.purpose != purpose {
        return Err(ProtocolError::Consent(format!(
            "grant {} is for purpose {}, not {}",
            grant.grant_id, grant.purpose, purpose
        )));
    }
    if let Some(s) = sections.iter().find(|s| !grant.sections.contains(s)) {
        return Err(ProtocolError::Consent(format!(
            "section {s} is outside grant {} (it covers {})",
            grant.grant_id,
            grant.sections.join(", ")
        )));
    }
    Ok(())
}

/// Verifies a signed revocation against the student's card.
pub fn verify_revocation(
    signed: &Signed,
    card: &StudentCard,
    now: UnixTime,
) -> Result<Revocation, ProtocolError> {
    let rev: Revocation = decode_body(Domain::Revocation, signed)?;
    if rev.pseudonym != card.pseudonym {
        return Err(ProtocolError::Consent(format!(
            "revocation is for student {}, the card is for {}",
            rev.pseudonym, card.pseudonym
        )));
    }
    verify_signers(
        Domain::Revocation,
        signed,
        card,
        rev.revoked_at,
        now,
        Signers::StudentOrGuardian,
        None,
    )?;
    Ok(rev)
}

/// The longest a pickup code may live: long enough to show at an intake, short enough that
/// a code seen over a shoulder is soon worth nothing.
pub const PICKUP_CODE_MAX_SECS: i64 = 3600;

/// The symbols of a pickup code: digits and capitals without 0, 1, I and O, which are read
/// wrong aloud and on paper. Eight of them are 40 bits.
const PICKUP_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// A new pickup code, as a person reads it: "K7QM-3XPA".
pub fn new_pickup_code() -> String {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let symbols: String = bytes
        .iter()
        .map(|b| PICKUP_ALPHABET[(b & 31) as usize] as char)
        .collect();
    format!("{}-{}", &symbols[..4], &symbols[4..])
}

/// A code in its plain form: upper case, only its symbols (spaces and dashes typed or read
/// along are dropped).
pub fn plain_pickup_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The SHA-256 of a code's plain form: what the home node keeps and compares.
pub fn pickup_code_digest(code: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(plain_pickup_code(code).as_bytes()).to_vec()
}

/// Verifies a student's pickup code against their card: the student's (or, like a withdrawal,
/// a guardian's) signature, the student, a digest, and an end within the hour after it was made.
pub fn verify_pickup_code(
    signed: &Signed,
    card: &StudentCard,
    now: UnixTime,
) -> Result<PickupCode, ProtocolError> {
    let code: PickupCode = decode_body(Domain::PickupCode, signed)?;
    if code.pseudonym != card.pseudonym {
        return Err(ProtocolError::Consent(format!(
            "pickup code is for student {}, the card is for {}",
            code.pseudonym, card.pseudonym
        )));
    }
    if code.code_sha256.len() != 32 {
        return Err(ProtocolError::Malformed {
            what: "pickup code",
            detail: "code_sha256 must be 32 bytes".into(),
        });
    }
    let life = code.expires_at - code.issued_at;
    if life <= 0 || life > PICKUP_CODE_MAX_SECS || code.expires_at <= now {
        return Err(ProtocolError::Consent(format!(
            "pickup code must end in the future, at most {} minutes after it was made",
            PICKUP_CODE_MAX_SECS / 60
        )));
    }
    verify_signers(
        Domain::PickupCode,
        signed,
        card,
        code.issued_at,
        now,
        Signers::StudentOrGuardian,
        None,
    )?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{generate_signing_key, sign_message};
    use ed25519_dalek::SigningKey;

    struct Fixture {
        student: SigningKey,
        guardian: SigningKey,
        card: StudentCard,
    }

    fn fixture(birth_month: &str) -> Fixture {
        let student = generate_signing_key();
        let guardian = generate_signing_key();
        let card = StudentCard {
            device_keys: Vec::new(),
            pseudonym: "p1".into(),
            home_org: "25LP".into(),
            student_key: student.verifying_key().to_bytes().to_vec(),
            birth_month: birth_month.into(),
            guardian_keys: vec![guardian.verifying_key().to_bytes().to_vec()],
            issued_at: 0,
            retired_keys: Vec::new(),
        };
        Fixture {
            student,
            guardian,
            card,
        }
    }

    const NOV_2026: i64 = 1_795_000_000;

    fn grant() -> ConsentGrant {
        ConsentGrant {
            grant_id: "g1".into(),
            pseudonym: "p1".into(),
            home_org: "25LP".into(),
            recipient_org: "MBO1".into(),
            sections: vec!["wie-ben-ik".into(), "wat-heb-ik-nodig".into()],
            purpose: "intake".into(),
            not_before: NOV_2026 - 10,
            not_after: NOV_2026 + 86_400,
            live: false,
            issued_at: NOV_2026,
            may_fetch: false,
        }
    }

    #[test]
    fn a_pickup_code_is_read_the_same_however_it_is_typed() {
        let code = new_pickup_code();
        assert_eq!(code.len(), 9);
        assert!(
            code.chars()
                .all(|c| c == '-' || PICKUP_ALPHABET.contains(&(c as u8)))
        );
        let typed = format!(" {} ", code.to_lowercase().replace('-', " "));
        assert_eq!(pickup_code_digest(&typed), pickup_code_digest(&code));
        assert_ne!(
            pickup_code_digest("K7QM-3XPA"),
            pickup_code_digest("K7QM-3XPB")
        );
    }

    #[test]
    fn grant_of_a_17_year_old_needs_only_the_student() {
        let f = fixture("2009-05");
        let signed = sign_message(Domain::Grant, &grant(), &[&f.student]);
        let g = verify_grant(&signed, &f.card, NOV_2026).unwrap();
        check_in_force(&g, NOV_2026).unwrap();
        check_covers(&g, "MBO1", "intake", &["wie-ben-ik".into()]).unwrap();
    }

    #[test]
    fn guardian_less_grant_of_a_15_year_old_is_refused() {
        let f = fixture("2011-02");
        let signed = sign_message(Domain::Grant, &grant(), &[&f.student]);
        let err = verify_grant(&signed, &f.card, NOV_2026).unwrap_err();
        assert!(err.to_string().contains("under 16"), "{err}");
        let both = sign_message(Domain::Grant, &grant(), &[&f.student, &f.guardian]);
        verify_grant(&both, &f.card, NOV_2026).unwrap();
    }

    #[test]
    fn a_grant_dated_ahead_to_skip_the_guardian_is_refused() {
        // Born 2011-02: 16 from 2027-03-01. Dating the grant then does not help today.
        let f = fixture("2011-02");
        let mut g = grant();
        g.issued_at = 1_804_000_000; // 2027-03
        let signed = sign_message(Domain::Grant, &g, &[&f.student]);
        let err = verify_grant(&signed, &f.card, NOV_2026).unwrap_err();
        assert!(err.to_string().contains("cannot be signed ahead"), "{err}");
    }

    #[test]
    fn under_16_the_student_or_a_guardian_alone_withdraws_and_only_the_student_signs_first() {
        let f = fixture("2011-02");
        let rev = Revocation {
            grant_id: "g1".into(),
            pseudonym: "p1".into(),
            revoked_at: NOV_2026,
        };
        for who in [&f.student, &f.guardian] {
            let signed = sign_message(Domain::Revocation, &rev, &[who]);
            assert_eq!(verify_revocation(&signed, &f.card, NOV_2026).unwrap(), rev);
        }
        let stranger = generate_signing_key();
        let signed = sign_message(Domain::Revocation, &rev, &[&stranger]);
        assert!(verify_revocation(&signed, &f.card, NOV_2026).is_err());
        // What a home node holds for the guardian: the student's signature, not the guardian's.
        let by_student = sign_message(Domain::Grant, &grant(), &[&f.student]);
        verify_grant_by(&by_student, &f.card, NOV_2026, Signers::StudentFirst, None).unwrap();
        let by_guardian = sign_message(Domain::Grant, &grant(), &[&f.guardian]);
        let err = verify_grant_by(&by_guardian, &f.card, NOV_2026, Signers::StudentFirst, None)
            .unwrap_err();
        assert!(
            matches!(err, ProtocolError::MissingSignature { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_stranger_cannot_sign_as_guardian() {
        let f = fixture("2011-02");
        let stranger = generate_signing_key();
        let signed = sign_message(Domain::Grant, &grant(), &[&f.student, &stranger]);
        assert!(verify_grant(&signed, &f.card, NOV_2026).is_err());
    }

    #[test]
    fn time_window_is_enforced() {
        let g = grant();
        let e = check_in_force(&g, g.not_before - 1).unwrap_err();
        assert!(e.to_string().contains("not valid until"), "{e}");
        let e = check_in_force(&g, g.not_after).unwrap_err();
        assert!(e.to_string().contains("expired on"), "{e}");
    }

    #[test]
    fn scope_is_enforced() {
        let g = grant();
        assert!(
            check_covers(&g, "GM0193", "intake", &[])
                .unwrap_err()
                .to_string()
                .contains("is for MBO1")
        );
        assert!(check_covers(&g, "MBO1", "werk", &[]).is_err());
        let e = check_covers(&g, "MBO1", "intake", &["wat-wil-ik".into()]).unwrap_err();
        assert!(e.to_string().contains("outside grant"), "{e}");
    }

    #[test]
    fn malformed_grants_are_refused() {
        let f = fixture("2009-05");
        let mut g = grant();
        g.purpose = "marketing".into();
        let s = sign_message(Domain::Grant, &g, &[&f.student]);
        assert!(
            verify_grant(&s, &f.card, NOV_2026)
                .unwrap_err()
                .to_string()
                .contains("purpose")
        );
        let mut g = grant();
        g.not_after = g.not_before;
        let s = sign_message(Domain::Grant, &g, &[&f.student]);
        assert!(verify_grant(&s, &f.card, NOV_2026).is_err());
        let mut g = grant();
        g.pseudonym = "other".into();
        let s = sign_message(Domain::Grant, &g, &[&f.student]);
        assert!(verify_grant(&s, &f.card, NOV_2026).is_err());
    }

    #[test]
    fn revocation_needs_the_student() {
        let f = fixture("2009-05");
        let rev = Revocation {
            grant_id: "g1".into(),
            pseudonym: "p1".into(),
            revoked_at: NOV_2026,
        };
        let ok = sign_message(Domain::Revocation, &rev, &[&f.student]);
        assert_eq!(
            verify_revocation(&ok, &f.card, NOV_2026).unwrap().grant_id,
            "g1"
        );
        let bad = sign_message(Domain::Revocation, &rev, &[&generate_signing_key()]);
        assert!(verify_revocation(&bad, &f.card, NOV_2026).is_err());
    }
}

//! The passport's tests: versions and disclosures, signers under and over 16, device keys,
//! lost keys, and the memory of verified cards.

use super::*;
use crate::pb::Answer;
use crate::sign::{generate_signing_key, sign_message};
use proptest::prelude::*;

pub(crate) fn section(id: &str, answer: &str) -> Section {
    Section {
        section_id: id.into(),
        title: format!("Titel {id}"),
        answers: vec![Answer {
            question_id: "q1".into(),
            question: "Wat vind je leuk?".into(),
            answer: answer.into(),
            smiley: "blij".into(),
        }],
    }
}

#[test]
fn disclosed_subset_verifies_and_hides_the_rest() {
    let sections = vec![
        section("a", "tekenen"),
        section("b", "voetbal"),
        section("c", "koken"),
    ];
    let v = build_version("p1", 1, "pvs-mbo-v1", 0, &sections).unwrap();
    let chosen = select_disclosures(&v.disclosures, &["c".into(), "a".into()]).unwrap();
    let shown = verify_disclosures(&v.manifest, &chosen).unwrap();
    let ids: Vec<_> = shown.iter().map(|s| s.section_id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    let all_bytes: Vec<u8> = chosen.iter().flat_map(|d| d.section.clone()).collect();
    assert!(!all_bytes.windows(7).any(|w| w == b"voetbal"));
}

#[test]
fn altered_section_is_refused() {
    let v = build_version("p1", 1, "s", 0, &[section("a", "tekenen")]).unwrap();
    let mut d = v.disclosures.clone();
    d[0].section = section("a", "iets anders").encode_to_vec();
    let err = verify_disclosures(&v.manifest, &d).unwrap_err();
    assert!(
        err.to_string().contains("does not match any digest"),
        "{err}"
    );
}

#[test]
fn section_relabelled_under_another_digest_is_refused() {
    let v = build_version("p1", 1, "s", 0, &[section("a", "x"), section("b", "y")]).unwrap();
    let mut m = v.manifest.clone();
    m.digests.swap(0, 1);
    m.digests[0].section_id = "a".into();
    m.digests[1].section_id = "b".into();
    assert!(verify_disclosures(&m, &v.disclosures).is_err());
}

#[test]
fn duplicate_disclosure_and_duplicate_section_ids_are_refused() {
    let v = build_version("p1", 1, "s", 0, &[section("a", "x")]).unwrap();
    let twice = vec![v.disclosures[0].clone(), v.disclosures[0].clone()];
    assert!(verify_disclosures(&v.manifest, &twice).is_err());
    assert!(build_version("p1", 1, "s", 0, &[section("a", "x"), section("a", "y")]).is_err());
}

#[test]
fn under_16_uses_the_month_after_the_sixteenth_birthday_month() {
    let t = |y, m, d| {
        time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
            .unwrap()
            .midnight()
            .assume_utc()
            .unix_timestamp()
    };
    assert!(under_16("2010-03", t(2026, 3, 31)).unwrap());
    assert!(!under_16("2010-03", t(2026, 4, 1)).unwrap());
    assert!(under_16("2010-12", t(2026, 12, 31)).unwrap());
    assert!(!under_16("2010-12", t(2027, 1, 1)).unwrap());
    assert!(under_16("2013-13", 0).is_err());
}

#[test]
fn a_card_verified_once_is_remembered_and_nothing_else_is() {
    let (home, other) = (generate_signing_key(), generate_signing_key());
    let card = StudentCard {
        pseudonym: "p-remembered".into(),
        home_org: "25LP".into(),
        student_key: generate_signing_key().verifying_key().to_bytes().to_vec(),
        birth_month: "2009-03".into(),
        ..Default::default()
    };
    let signed = sign_message(Domain::StudentCard, &card, &[&home]);
    let memory = crate::sign::Memory::new();
    let first = verify_card_in(&memory, &signed, &home.verifying_key()).unwrap();
    assert_eq!(
        verify_card_in(&memory, &signed, &home.verifying_key()).unwrap(),
        first
    );
    assert_eq!(memory.cards.len(), 1);
    // The same card under another key, and the card changed after it verified, are checked
    // and refused.
    assert!(verify_card_in(&memory, &signed, &other.verifying_key()).is_err());
    let mut changed = signed.clone();
    changed.body.push(0);
    assert!(verify_card_in(&memory, &changed, &home.verifying_key()).is_err());
    let mut resigned = signed.clone();
    resigned.sigs[0].signature[0] ^= 1;
    assert!(verify_card_in(&memory, &resigned, &home.verifying_key()).is_err());
    // Another party's memory holds nothing of it: each party checks for itself.
    assert_eq!(crate::sign::Memory::new().cards.len(), 0);
    assert_eq!(memory.cards.len(), 1);
}

#[test]
fn manifest_of_a_15_year_old_needs_a_guardian() {
    let home = generate_signing_key();
    let student = generate_signing_key();
    let guardian = generate_signing_key();
    let card = StudentCard {
        device_keys: Vec::new(),
        pseudonym: "p1".into(),
        home_org: "25LP".into(),
        student_key: student.verifying_key().to_bytes().to_vec(),
        birth_month: "2011-06".into(),
        guardian_keys: vec![guardian.verifying_key().to_bytes().to_vec()],
        issued_at: 0,
        retired_keys: Vec::new(),
    };
    let signed_card = sign_message(Domain::StudentCard, &card, &[&home]);
    let card = verify_card(&signed_card, &home.verifying_key()).unwrap();
    let at = 1_790_000_000; // 2026-09
    let v = build_version("p1", 1, "s", at, &[section("a", "x")]).unwrap();
    let only_student = sign_message(Domain::Manifest, &v.manifest, &[&student]);
    let err = verify_manifest(&only_student, &card, at).unwrap_err();
    assert!(err.to_string().contains("guardian must co-sign"), "{err}");
    let both = sign_message(Domain::Manifest, &v.manifest, &[&student, &guardian]);
    assert_eq!(verify_manifest(&both, &card, at).unwrap().version, 1);
    // Dated after the verifier's clock: refused, whoever signed.
    let err = verify_manifest(&both, &card, at - 3600).unwrap_err();
    assert!(err.to_string().contains("cannot be signed ahead"), "{err}");
}

#[test]
fn every_device_key_on_the_card_signs_as_the_student_and_none_can_be_dropped_silently() {
    let home = generate_signing_key();
    let phone = generate_signing_key();
    let laptop = generate_signing_key();
    let stranger = generate_signing_key();
    let key = |k: &ed25519_dalek::SigningKey| k.verifying_key().to_bytes().to_vec();
    let card = StudentCard {
        pseudonym: "p1".into(),
        home_org: "25LP".into(),
        student_key: key(&phone),
        device_keys: vec![key(&laptop)],
        birth_month: "2008-06".into(),
        guardian_keys: vec![],
        issued_at: 0,
        retired_keys: Vec::new(),
    };
    let signed_card = sign_message(Domain::StudentCard, &card, &[&home]);
    let card = verify_card(&signed_card, &home.verifying_key()).unwrap();
    let at = 1_790_000_000;
    let v = build_version("p1", 1, "s", at, &[section("a", "x")]).unwrap();
    for device in [&phone, &laptop] {
        let signed = sign_message(Domain::Manifest, &v.manifest, &[device]);
        assert_eq!(verify_manifest(&signed, &card, at).unwrap().version, 1);
    }
    let err = verify_manifest(
        &sign_message(Domain::Manifest, &v.manifest, &[&stranger]),
        &card,
        at,
    )
    .unwrap_err();
    assert!(
        matches!(err, ProtocolError::MissingSignature { .. }),
        "{err}"
    );
    // A forged signature under the laptop's key is named as bad, not as missing.
    let mut forged = sign_message(Domain::Manifest, &v.manifest, &[&laptop]);
    forged.sigs[0].signature[0] ^= 1;
    let err = verify_manifest(&forged, &card, at).unwrap_err();
    assert!(matches!(err, ProtocolError::BadSignature { .. }), "{err}");
    // A later card may not drop the laptop without retiring it.
    let mut newer = card.clone();
    newer.issued_at = 10;
    newer.device_keys.clear();
    let err = check_card_follows(&card, &newer).unwrap_err();
    assert!(err.to_string().contains("without retiring"), "{err}");
    // A card naming a device key twice, or the student key again, is malformed.
    for twice in [vec![key(&laptop), key(&laptop)], vec![key(&phone)]] {
        let mut bad = card.clone();
        bad.device_keys = twice;
        let signed = sign_message(Domain::StudentCard, &bad, &[&home]);
        let err = verify_card(&signed, &home.verifying_key()).unwrap_err();
        assert!(err.to_string().contains("named twice"), "{err}");
    }
}

#[test]
fn a_key_reported_lost_counts_only_for_what_it_signed_before() {
    let home = generate_signing_key();
    let lost = generate_signing_key();
    let new = generate_signing_key();
    let old_card = StudentCard {
        device_keys: Vec::new(),
        pseudonym: "p1".into(),
        home_org: "25LP".into(),
        student_key: lost.verifying_key().to_bytes().to_vec(),
        birth_month: "2008-06".into(),
        guardian_keys: vec![],
        issued_at: 1_780_000_000,
        retired_keys: Vec::new(),
    };
    let reported = 1_790_000_000;
    let new_card = StudentCard {
        student_key: new.verifying_key().to_bytes().to_vec(),
        issued_at: reported,
        retired_keys: vec![crate::pb::RetiredKey {
            key: old_card.student_key.clone(),
            role: ROLE_STUDENT.into(),
            retired_at: reported,
        }],
        ..old_card.clone()
    };
    let signed_card = sign_message(Domain::StudentCard, &new_card, &[&home]);
    let card = verify_card(&signed_card, &home.verifying_key()).unwrap();
    let version = |at| build_version("p1", 1, "s", at, &[section("a", "x")]).unwrap();
    let now = reported + 86_400;

    // Signed with the lost key before the report: still good at a recipient.
    let before = sign_message(Domain::Manifest, &version(reported - 60).manifest, &[&lost]);
    verify_manifest(&before, &card, now).unwrap();
    // ...but the home node takes nothing new signed with it, whatever its date.
    let err = refuse_retired_keys(Domain::Manifest, &before, &card).unwrap_err();
    assert!(err.to_string().contains("reported lost on"), "{err}");
    // Signed with the lost key after the report: refused everywhere, by name.
    let after = sign_message(Domain::Manifest, &version(reported + 60).manifest, &[&lost]);
    let err = verify_manifest(&after, &card, now).unwrap_err();
    assert!(
        err.to_string().contains("student key reported lost"),
        "{err}"
    );
    // The new key signs from now on.
    let fresh = sign_message(Domain::Manifest, &version(reported + 60).manifest, &[&new]);
    verify_manifest(&fresh, &card, now).unwrap();
    refuse_retired_keys(Domain::Manifest, &fresh, &card).unwrap();

    // A recipient holding the old card takes the new one, but not a swap or a rollback.
    check_card_follows(&old_card, &new_card).unwrap();
    let err = check_card_follows(&new_card, &old_card).unwrap_err();
    assert!(
        err.to_string().contains("before the card held here"),
        "{err}"
    );
    let swapped = StudentCard {
        retired_keys: Vec::new(),
        ..new_card.clone()
    };
    let err = check_card_follows(&old_card, &swapped).unwrap_err();
    assert!(err.to_string().contains("without retiring it"), "{err}");
    let revived = StudentCard {
        student_key: lost.verifying_key().to_bytes().to_vec(),
        issued_at: reported + 10,
        retired_keys: Vec::new(),
        ..new_card.clone()
    };
    let err = check_card_follows(&new_card, &revived).unwrap_err();
    assert!(
        err.to_string().contains("drops a key") || err.to_string().contains("brings back"),
        "{err}"
    );

    // A card still naming the key it retires, or retiring after it was issued, is malformed.
    let both = StudentCard {
        student_key: old_card.student_key.clone(),
        ..new_card.clone()
    };
    let signed = sign_message(Domain::StudentCard, &both, &[&home]);
    assert!(verify_card(&signed, &home.verifying_key()).is_err());
    let late = StudentCard {
        issued_at: reported - 1,
        ..new_card.clone()
    };
    let signed = sign_message(Domain::StudentCard, &late, &[&home]);
    assert!(verify_card(&signed, &home.verifying_key()).is_err());
}

proptest! {
    #[test]
    fn any_subset_round_trips(n in 1usize..8, mask in 0u8..=255) {
        let sections: Vec<_> = (0..n).map(|i| section(&format!("s{i}"), &format!("antwoord {i}"))).collect();
        let v = build_version("p", 1, "s", 0, &sections).unwrap();
        let ids: Vec<String> = (0..n).filter(|i| mask & (1 << i) != 0).map(|i| format!("s{i}")).collect();
        let chosen = select_disclosures(&v.disclosures, &ids).unwrap();
        let shown = verify_disclosures(&v.manifest, &chosen).unwrap();
        prop_assert_eq!(shown.len(), ids.len());
        for s in shown { prop_assert!(ids.contains(&s.section_id)); }
    }
}

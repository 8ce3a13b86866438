//! A student of 15 with a parent, and a student with two devices, in a real headless Chromium
//! (`tests/browser/family.mjs`): the parent's key from the parent's own browser, what the
//! student signs held until the parent co-signs exactly those bytes, and a second device that
//! signs as the student. And `overstap demo --serve` as a newcomer runs it.

use std::path::PathBuf;

use base64::Engine;
use overstap_proto::pb::ConsentGrant;
use overstap_proto::sign::{Domain, decode_body};
use overstap_tests::cast::{MBO, SCHOOL};
use overstap_tests::*;

use crate::web::{MENTOR, add_mentor, browser_output, check_pages, spawn_browser};
use crate::web_doors::card_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_co_signs_for_a_student_of_15_on_their_own_device_and_a_second_device_signs() {
    let (_tmp, region) = region().await;
    add_mentor(&region, MENTOR, "Mevrouw Jansen").await;
    let base = web_url(&region, SCHOOL);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-family");
    let started = std::time::Instant::now();
    let born = overstap_tests::cast::birth_month(15);
    let sibling = overstap_tests::cast::birth_month(14);
    let browser = spawn_browser(
        "family.mjs",
        &base,
        &shots,
        &[("BIRTH_MONTH", &born), ("SIBLING_BIRTH_MONTH", &sibling)],
    );
    let seen = browser_output(browser, started, &shots).await;

    // Every page: axe clean, photographed, and no jargon on the student's or parent's screens.
    let pages: Vec<&str> = seen["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pages.len(), 27, "{pages:?}");
    let people: Vec<&str> = pages
        .iter()
        .copied()
        .filter(|n| {
            !n.contains("invitation")
                && !n.contains("compare-both")
                && !n.contains("waits-for-parent")
                && *n != "family-class"
        })
        .collect();
    check_pages(&seen, &people);

    // One link for the parent, the same on the mentor's screen and the student's; each person's
    // code matched; and no card until the parent's key was in.
    assert_eq!(seen["parentLinkMentor"], seen["parentLinkStudent"]);
    assert!(seen["parentLinkStudent"].as_str().unwrap().contains("/k/"));
    assert_eq!(seen["studentCode"], seen["mentorStudentCode"]);
    assert_eq!(seen["parentCode"], seen["mentorParentCode"]);
    assert_ne!(seen["studentCode"], seen["parentCode"]);
    assert_eq!(
        seen["confirmBeforeParent"], 0,
        "no confirm button before the parent"
    );

    // The card: the phone's key, the laptop's key as a device key, the parent's key as a
    // guardian key; exactly the public halves the browsers hold.
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = |name: &str| b64.decode(seen["keys"][name].as_str().unwrap()).unwrap();
    let school = node_pool(&region, SCHOOL).await;
    let pseudonym: String =
        sqlx::query_scalar("SELECT pseudonym FROM people WHERE name = 'Noor Bakker'")
            .fetch_one(&school)
            .await
            .expect("Noor is enrolled");
    let card = card_of(&region, &pseudonym).await;
    assert_eq!(card.student_key, key("phone"));
    // The devices page lists each change of Noor's card from the region's log, newest first:
    // the card with the laptop's key now, the card she enrolled with before, both the school's.
    let key_log = seen["keyLog"].as_str().unwrap();
    assert!(
        key_log.contains("Wanneer veranderden je sleutels?"),
        "{key_log}"
    );
    assert_eq!(key_log.matches("Zo is het nu").count(), 1, "{key_log}");
    assert!(
        key_log.find("Zo is het nu") < key_log.find("Eerder"),
        "{key_log}"
    );
    assert!(!key_log.contains("niet gedaan"), "{key_log}");
    assert_eq!(card.device_keys, [key("laptop")]);
    assert_eq!(card.guardian_keys, [key("parent")]);
    assert_eq!(card.birth_month, born);
    assert_eq!(seen["keys"]["parentHasNoStudentKey"], true);

    // What the student signed waited, and said so; the parent saw exactly it and co-signed.
    assert!(
        seen["versionWaits"].as_str().unwrap().contains("ouder"),
        "{}",
        seen["versionWaits"]
    );
    assert!(
        seen["parentSawPassport"]
            .as_str()
            .unwrap()
            .contains("Ik ben Noor. Ik teken graag.")
    );
    assert!(
        seen["versionCosigned"]
            .as_str()
            .unwrap()
            .contains("signed too"),
        "{}",
        seen["versionCosigned"]
    );
    assert!(seen["consentWaits"].as_str().unwrap().contains("ouder"));
    assert!(
        seen["consentsWaiting"]
            .as_str()
            .unwrap()
            .contains("Wacht op je ouder")
    );
    let asked = seen["parentSawConsent"].as_str().unwrap();
    for words in [
        "Techniek College",
        "Noor's passport",
        "Wie ben ik?",
        "Intake",
        "2027",
    ] {
        assert!(
            asked.contains(words),
            "the parent did not read {words:?}: {asked}"
        );
    }
    assert!(
        seen["consentCosigned"]
            .as_str()
            .unwrap()
            .contains("consent counts now")
    );
    assert!(
        seen["studentAsParentUrl"]
            .as_str()
            .unwrap()
            .ends_with("/guardian"),
        "a student's session is no parent's: {}",
        seen["studentAsParentUrl"]
    );

    // The school's records filled in her name; the werk track asks about work and keeps it.
    assert_eq!(seen["prefilled"], "Noor Bakker");
    assert!(
        seen["werkTrack"]
            .as_str()
            .unwrap()
            .contains("Mijn werkervaring")
    );
    assert_eq!(seen["keptName"], "Noor Bakker");
    // The consent page suggests sharing the name for the intake, and shows what the college
    // will see: exactly the chosen part.
    assert!(
        seen["consentHint"]
            .as_str()
            .unwrap()
            .contains("Dan weten ze dat dit paspoort van jou is")
    );
    // Each organisation by name and kind.
    let form = seen["consentHint"].as_str().unwrap();
    assert!(
        form.contains("Techniek College Zwolle (mbo-school)"),
        "{form}"
    );
    assert!(form.contains("(gemeente)"), "{form}");
    let preview = seen["recipientPreview"].as_str().unwrap();
    assert!(
        preview.contains("Zo ziet Techniek College Zwolle het"),
        "{preview}"
    );
    assert!(
        preview.contains("Ik ben Noor. Ik teken graag."),
        "{preview}"
    );
    assert!(
        !preview.contains("Noor Bakker"),
        "only the chosen part: {preview}"
    );

    // The parent may withdraw alone: the page says to whom it is, and its check passed.
    let withdraw = seen["parentWithdrawPage"].as_str().unwrap();
    assert!(
        withdraw.contains("the consent Noor gave Techniek College Zwolle"),
        "{withdraw}"
    );

    // A second child's parent link, opened on the parent's phone, hands in the same key (the
    // same code), and Noor's card keeps it.
    assert_eq!(seen["siblingParentCode"], seen["parentCode"]);

    // The second device: the same code on both screens, and its version counts.
    assert_eq!(seen["laptopCode"], seen["phoneSeesLaptopCode"]);
    assert!(seen["laptopSigned"].as_str().unwrap().contains("versie 2"));
    assert!(
        seen["version2Cosigned"]
            .as_str()
            .unwrap()
            .contains("signed too")
    );

    // At the school: two versions, each signed by a student key and the parent; version 2 by
    // the laptop. Nothing waits any more.
    let manifests: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT manifest FROM passport_versions WHERE pseudonym = $1 ORDER BY version",
    )
    .bind(&pseudonym)
    .fetch_all(&school)
    .await
    .unwrap();
    assert_eq!(manifests.len(), 2);
    use prost::Message;
    let signers = |bytes: &[u8]| -> Vec<Vec<u8>> {
        overstap_proto::pb::Signed::decode(bytes)
            .unwrap()
            .sigs
            .into_iter()
            .map(|s| s.public_key)
            .collect()
    };
    assert_eq!(signers(&manifests[0]), [key("phone"), key("parent")]);
    assert_eq!(signers(&manifests[1]), [key("laptop"), key("parent")]);
    assert_eq!(node_count(&region, SCHOOL, "held_for_guardian").await, 0);
    let grant: Vec<u8> = sqlx::query_scalar("SELECT signed FROM grants WHERE pseudonym = $1")
        .bind(&pseudonym)
        .fetch_one(&school)
        .await
        .unwrap();
    assert_eq!(signers(&grant), [key("phone"), key("parent")]);
    let grant: ConsentGrant = decode_body(
        Domain::Grant,
        &overstap_proto::pb::Signed::decode(grant.as_slice()).unwrap(),
    )
    .unwrap();

    // The mentor sent the class: the mbo college holds exactly the part the parent co-signed.
    eventually("the mbo college holds the consented part", || async {
        held_sections(&region, MBO, &grant.grant_id).await == ["wie-ben-ik"]
    })
    .await;
    region.shutdown().await.unwrap();
}

/// `overstap demo --serve`, as a newcomer runs it: once the story is told it prints the school's
/// web app with a mentor account and two students already invited (one of 15 with a link for
/// a parent), and each link opens its page.
#[tokio::test]
async fn the_demo_serves_links_for_a_mentor_two_students_a_parent_a_decaan_and_an_intaker() {
    use tokio::io::AsyncBufReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_overstap-under-test"))
        .args(["demo", "--serve", "--dir"])
        .arg(tmp.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut said = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
            if line.starts_with("Press Ctrl-C") {
                return;
            }
        }
        panic!("the demo ended without serving:\n{said}");
    };
    tokio::time::timeout(std::time::Duration::from_secs(180), read)
        .await
        .expect("the demo serves within 3 minutes");
    let after = |marker: &str| {
        said.split(marker)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{marker:?} in what the demo said:\n{said}"))
            .to_string()
    };
    let password = after("sign in as intake.jansen, password ");
    let college = after("where an intaker reads what arrived and plans the intake:\n   ");
    let noor = after("Noor Bakker (15): ");
    let parent = after("a parent of Noor Bakker: ");
    let daan = after("Daan Visser (17): ");
    let base = noor[..noor.find("/i/").unwrap()].to_string();
    let path = |link: &str| link[base.len()..].to_string();
    let page = http(&base, "GET", &path(&noor), &[], b"").await;
    assert!(page.body.contains("Hoi Noor!"), "{}", page.body);
    let page = http(&base, "GET", &path(&parent), &[], b"").await;
    assert!(page.body.contains("Meedoen als ouder"), "{}", page.body);
    let page = http(&base, "GET", &path(&daan), &[], b"").await;
    assert!(page.body.contains("Hoi Daan!"), "{}", page.body);
    let signed_in = crate::web::sign_in_staff(&base, "mentor", &password).await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    let decaan = crate::web::sign_in_staff(&base, "decaan", &password).await;
    assert_eq!(decaan.status, 303, "{decaan:?}");
    let cookie = crate::web::session_cookie(&decaan);
    let table = http(&base, "GET", "/handovers", &[("Cookie", &cookie)], b"").await;
    assert!(table.body.contains("Intake gepland"), "{}", table.body);
    // The college: the intaker finds the passport the story left there, with its intake.
    let intaker = crate::web::sign_in_staff(&college, "intake.jansen", &password).await;
    assert_eq!(intaker.header("location"), Some("/inbox"), "{intaker:?}");
    let cookie = crate::web::session_cookie(&intaker);
    let inbox = http(&college, "GET", "/inbox", &[("Cookie", &cookie)], b"").await;
    assert!(inbox.body.contains("Intake gepland"), "{}", inbox.body);
    let _ = demo.kill().await;
}

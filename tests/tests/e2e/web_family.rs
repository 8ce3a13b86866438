//! A student of 15 with a parent, and a student with two devices, in a real headless Chromium
//! (`tests/browser/family.mjs`): the parent's key from the parent's own browser, what the
//! student signs held until the parent co-signs exactly those bytes, and a second device that
//! signs as the student.

use std::path::PathBuf;

use base64::Engine;
use overstap_proto::pb::{ConsentGrant, GetStudentRequest, StudentCard};
use overstap_proto::sign::{Domain, decode_body};
use overstap_tests::cast::{MBO, SCHOOL};
use overstap_tests::*;

use crate::web::{MENTOR, add_mentor, browser_output, check_pages, spawn_browser};

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
    assert_eq!(pages.len(), 26, "{pages:?}");
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

/// The part of `page` after `marker` up to the next `"`: a link or a data attribute.
fn attr_after(page: &str, marker: &str) -> String {
    page.split(marker)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("{marker} in the page: {page}"))
        .to_string()
}

/// Signs in at `/{who}/sign-in` with `key`, over a fresh challenge under the sign-in tag.
async fn key_sign_in(base: &str, who: &str, key: &ed25519_dalek::SigningKey) -> HttpAnswer {
    use ed25519_dalek::Signer;
    let b64 = base64::engine::general_purpose::STANDARD;
    let c = http(base, "POST", &format!("/{who}/challenge"), &[], b"").await;
    let c: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    let challenge = b64.decode(c["challenge"].as_str().unwrap()).unwrap();
    let message = overstap_proto::sign::signing_bytes(Domain::SignIn, &challenge);
    let body = serde_json::json!({
        "id": c["id"],
        "key": b64.encode(key.verifying_key().to_bytes()),
        "signature": b64.encode(key.sign(&message).to_bytes()),
    });
    http(
        base,
        "POST",
        &format!("/{who}/sign-in"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// The student of `cookie` asks the college (MBO) to read "Wie ben ik?" for the intake, and
/// signs the grant the page prepared with `key`; the grant's bytes.
async fn consent_signed_by(base: &str, cookie: &str, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use crate::web::csrf_of;
    let page = http(base, "GET", "/student/consent", &[("Cookie", cookie)], b"").await;
    let form = format!(
        "csrf={}&to={MBO}&section=wie-ben-ik&purpose=intake&until=2027-08-01",
        csrf_of(&page.body)
    );
    let review = http(
        base,
        "POST",
        "/student/consent",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
        form.as_bytes(),
    )
    .await;
    assert_eq!(review.status, 200, "{review:?}");
    let body = base64::engine::general_purpose::STANDARD
        .decode(attr_after(&review.body, "id=\"consent-sign\" data-body=\""))
        .unwrap();
    let signed = post_signature(
        base,
        cookie,
        "/student/consent/sign",
        Domain::Grant,
        &body,
        key,
    )
    .await;
    assert_eq!(signed.status, 200, "{signed:?}");
    body
}

/// Posts `{key, signature}` over `body` under `domain`, signed by `with`, to `path`.
async fn post_signature(
    base: &str,
    cookie: &str,
    path: &str,
    domain: Domain,
    body: &[u8],
    with: &ed25519_dalek::SigningKey,
) -> HttpAnswer {
    use ed25519_dalek::Signer;
    let b64 = base64::engine::general_purpose::STANDARD;
    let json = serde_json::json!({
        "key": b64.encode(with.verifying_key().to_bytes()),
        "signature": b64.encode(with.sign(&overstap_proto::sign::signing_bytes(domain, body)).to_bytes()),
    });
    http(
        base,
        "POST",
        path,
        &[("Content-Type", "application/json"), ("Cookie", cookie)],
        json.to_string().as_bytes(),
    )
    .await
}

/// A card under 16 waits for a parent's key; a key link works once and not after it ran out;
/// only a guardian key on the card co-signs, over exactly the held bytes, in a guardian's
/// session, which is never a student's; a refused co-signature or a forged decline changes
/// nothing; a mentor cannot make a key link for another mentor's student.
#[tokio::test]
async fn a_parent_and_a_new_device_get_in_only_the_way_the_pages_lead() {
    use crate::web::{PASSWORD, csrf_of, session_cookie, sign_in_staff};
    let (_tmp, region) = region().await;
    add_mentor(&region, MENTOR, "Mevrouw Jansen").await;
    add_mentor(&region, "mentor.bakker", "Meneer Bakker").await;
    let base = web_url(&region, SCHOOL);
    let school = node_pool(&region, SCHOOL).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let form_post = |path: String, cookie: String, body: String| {
        let base = base.clone();
        async move {
            http(
                &base,
                "POST",
                &path,
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Cookie", &cookie),
                ],
                body.as_bytes(),
            )
            .await
        }
    };
    let key_in = |path: String, key: ed25519_dalek::SigningKey| {
        let base = base.clone();
        async move {
            let b64 = base64::engine::general_purpose::STANDARD;
            let body = serde_json::json!({ "key": b64.encode(key.verifying_key().to_bytes()) });
            http(
                &base,
                "POST",
                &path,
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )
            .await
        }
    };

    // The mentor invites Kim, 15: a link for Kim and one for a parent.
    let mentor = session_cookie(&sign_in_staff(&base, MENTOR, PASSWORD).await);
    let csrf = csrf_of(
        &http(&base, "GET", "/mentor", &[("Cookie", &mentor)], b"")
            .await
            .body,
    );
    let made = form_post(
        "/mentor/invite".into(),
        mentor.clone(),
        format!(
            "csrf={csrf}&name=Kim+de+Wit&class_name=3B&birth_month={}",
            overstap_tests::cast::birth_month(15)
        ),
    )
    .await;
    assert_eq!(made.status, 303, "{made:?}");
    let at = made.header("location").unwrap().to_string();
    let page = http(&base, "GET", &at, &[("Cookie", &mentor)], b"")
        .await
        .body;
    let student_link = attr_after(&page, "/i/");
    let parent_link = attr_after(&page, "/k/");

    // Kim's key is in, the parent's is not: confirming issues no card.
    let kim = overstap_proto::sign::generate_signing_key();
    assert_eq!(
        key_in(format!("/i/{student_link}/key"), kim.clone())
            .await
            .status,
        200
    );
    let early = form_post(
        format!("{at}/confirm"),
        mentor.clone(),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(early.status, 303);
    assert_eq!(
        node_count(&region, SCHOOL, "students").await,
        0,
        "no card yet"
    );
    let waiting = http(&base, "GET", &at, &[("Cookie", &mentor)], b"")
        .await
        .body;
    assert!(waiting.contains("Wacht op de ouder"), "{waiting}");

    // The parent's key, once: a second key for the same link is refused.
    let parent = overstap_proto::sign::generate_signing_key();
    assert_eq!(
        key_in(format!("/k/{parent_link}/key"), parent.clone())
            .await
            .status,
        200
    );
    let again = key_in(
        format!("/k/{parent_link}/key"),
        overstap_proto::sign::generate_signing_key(),
    )
    .await;
    assert_eq!(again.status, 409, "{again:?}");
    let confirmed = form_post(
        format!("{at}/confirm"),
        mentor.clone(),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(confirmed.status, 303);
    assert_eq!(node_count(&region, SCHOOL, "students").await, 1);
    let used = http(&base, "GET", &format!("/k/{parent_link}"), &[], b"").await;
    assert_eq!(used.status, 410);
    assert!(used.body.contains("al gebruikt"), "{}", used.body);
    let pseudonym: String = sqlx::query_scalar("SELECT pseudonym FROM people")
        .fetch_one(&school)
        .await
        .unwrap();

    // Kim signs version 1: it is held for the parent, not kept.
    let kim_cookie = session_cookie(&key_sign_in(&base, "student", &kim).await);
    let passport = http(
        &base,
        "GET",
        "/student/passport",
        &[("Cookie", &kim_cookie)],
        b"",
    )
    .await;
    let kim_csrf = csrf_of(&passport.body);
    let saved = form_post(
        "/student/passport".into(),
        kim_cookie.clone(),
        format!("csrf={kim_csrf}&set=pvs-mbo-v1&a.wie-ben-ik.over-mij=Ik+ben+Kim"),
    )
    .await;
    assert_eq!(saved.status, 303);
    let sign_page = http(
        &base,
        "GET",
        "/student/sign",
        &[("Cookie", &kim_cookie)],
        b"",
    )
    .await;
    let body = b64
        .decode(attr_after(&sign_page.body, "id=\"sign\" data-body=\""))
        .unwrap();
    let held = post_signature(
        &base,
        &kim_cookie,
        "/student/sign",
        Domain::Manifest,
        &body,
        &kim,
    )
    .await;
    assert_eq!(held.status, 200, "{held:?}");
    assert!(held.body.contains("ouder"), "{}", held.body);
    let count = |table: &'static str| {
        let region = &region;
        async move { node_count(region, SCHOOL, table).await }
    };
    assert_eq!(
        (
            count("held_for_guardian").await,
            count("passport_versions").await
        ),
        (1, 0)
    );

    // Kim's key opens no parent's session, and Kim's session is no parent's.
    assert_eq!(key_sign_in(&base, "guardian", &kim).await.status, 401);
    let as_parent = http(
        &base,
        "GET",
        "/guardian/waiting",
        &[("Cookie", &kim_cookie)],
        b"",
    )
    .await;
    assert_eq!(as_parent.status, 303);
    assert_eq!(as_parent.header("location"), Some("/guardian"));
    // The parent's session is no student's either, nor a staff member's.
    let parent_cookie = session_cookie(&key_sign_in(&base, "guardian", &parent).await);
    let as_staff = http(&base, "GET", "/mentor", &[("Cookie", &parent_cookie)], b"").await;
    assert_eq!(as_staff.status, 401, "{as_staff:?}");
    let as_student = http(
        &base,
        "GET",
        "/student/passport",
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    assert_eq!(as_student.status, 303);
    assert_eq!(as_student.header("location"), Some("/student"));

    // What the parent is shown is exactly what Kim signed.
    let list = http(
        &base,
        "GET",
        "/guardian/waiting",
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    let item = format!(
        "/guardian/waiting/{}",
        attr_after(&list.body, "/guardian/waiting/")
    );
    let item_page = http(&base, "GET", &item, &[("Cookie", &parent_cookie)], b"").await;
    assert!(item_page.body.contains("Ik ben Kim"), "{}", item_page.body);
    let shown = b64
        .decode(attr_after(&item_page.body, "id=\"sign\" data-body=\""))
        .unwrap();
    assert_eq!(shown, body);
    let parent_csrf = csrf_of(&item_page.body);

    // Refused co-signatures: a stranger's key, Kim's own key, the parent's key over other
    // bytes, a forged decline. Nothing changes.
    let sign_at = format!("{item}/sign");
    let stranger = overstap_proto::sign::generate_signing_key();
    for (who, bytes) in [
        (&stranger, &body[..]),
        (&kim, &body[..]),
        (&parent, b"other bytes"),
    ] {
        let refused = post_signature(
            &base,
            &parent_cookie,
            &sign_at,
            Domain::Manifest,
            bytes,
            who,
        )
        .await;
        assert_eq!(refused.status, 422, "{refused:?}");
    }
    let forged = form_post(
        format!("{item}/decline"),
        parent_cookie.clone(),
        "csrf=nope".into(),
    )
    .await;
    assert_eq!(forged.status, 403);
    let declined: Option<i64> = sqlx::query_scalar("SELECT declined_at FROM held_for_guardian")
        .fetch_one(&school)
        .await
        .unwrap();
    assert_eq!(declined, None);
    assert_eq!(
        (
            count("held_for_guardian").await,
            count("passport_versions").await
        ),
        (1, 0)
    );

    // The parent's real co-signature: version 1 counts, nothing waits; the same again is refused.
    let ok = post_signature(
        &base,
        &parent_cookie,
        &sign_at,
        Domain::Manifest,
        &body,
        &parent,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        (
            count("held_for_guardian").await,
            count("passport_versions").await
        ),
        (0, 1)
    );
    let twice = post_signature(
        &base,
        &parent_cookie,
        &sign_at,
        Domain::Manifest,
        &body,
        &parent,
    )
    .await;
    assert_eq!(twice.status, 422);
    let _ = parent_csrf;

    // Kim consents to the college; the parent says no. Nothing is kept, and Kim reads why.
    let grant_body = consent_signed_by(&base, &kim_cookie, &kim).await;
    let list = http(
        &base,
        "GET",
        "/guardian/waiting",
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    let item = format!(
        "/guardian/waiting/{}",
        attr_after(&list.body, "/guardian/waiting/")
    );
    let item_page = http(&base, "GET", &item, &[("Cookie", &parent_cookie)], b"").await;
    assert!(
        item_page.body.contains("Techniek College Zwolle"),
        "{}",
        item_page.body
    );
    let declined = form_post(
        format!("{item}/decline"),
        parent_cookie.clone(),
        format!("csrf={}", csrf_of(&item_page.body)),
    )
    .await;
    assert_eq!(declined.status, 303, "{declined:?}");
    assert_eq!(count("grants").await, 0);
    let consents = http(
        &base,
        "GET",
        "/student/consents",
        &[("Cookie", &kim_cookie)],
        b"",
    )
    .await;
    assert!(
        consents.body.contains("Je ouder zei nee"),
        "{}",
        consents.body
    );
    let again = post_signature(
        &base,
        &parent_cookie,
        &format!("{item}/sign"),
        Domain::Grant,
        &grant_body,
        &parent,
    )
    .await;
    assert_eq!(
        again.status, 422,
        "a declined consent is not co-signed after all"
    );
    assert_eq!(count("grants").await, 0);

    // Kim consents again and the parent co-signs; then the parent alone withdraws it, as the
    // protocol allows either of the two who gave it. Kim's key is not needed for that.
    let grant_body = consent_signed_by(&base, &kim_cookie, &kim).await;
    let list = http(
        &base,
        "GET",
        "/guardian/waiting",
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    let item = format!(
        "/guardian/waiting/{}",
        attr_after(&list.body, "/guardian/waiting/")
    );
    let ok = post_signature(
        &base,
        &parent_cookie,
        &format!("{item}/sign"),
        Domain::Grant,
        &grant_body,
        &parent,
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let consents = http(
        &base,
        "GET",
        "/guardian/consents",
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    let withdraw_at = format!(
        "/guardian/consents/{}",
        attr_after(&consents.body, "/guardian/consents/")
    );
    let page = http(
        &base,
        "GET",
        &withdraw_at,
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    let revocation = b64
        .decode(attr_after(&page.body, "id=\"revoke-sign\" data-body=\""))
        .unwrap();
    // A stranger's signature on it is refused; the parent's counts.
    let refused = post_signature(
        &base,
        &parent_cookie,
        "/guardian/withdraw",
        Domain::Revocation,
        &revocation,
        &stranger,
    )
    .await;
    assert_eq!(refused.status, 422, "{refused:?}");
    let state = || async {
        sqlx::query_scalar::<_, String>("SELECT state FROM grants")
            .fetch_one(&school)
            .await
            .unwrap()
    };
    assert_eq!(state().await, "active");
    // A refused signature used up what the page prepared: the page is opened again.
    let page = http(
        &base,
        "GET",
        &withdraw_at,
        &[("Cookie", &parent_cookie)],
        b"",
    )
    .await;
    let revocation = b64
        .decode(attr_after(&page.body, "id=\"revoke-sign\" data-body=\""))
        .unwrap();
    let withdrawn = post_signature(
        &base,
        &parent_cookie,
        "/guardian/withdraw",
        Domain::Revocation,
        &revocation,
        &parent,
    )
    .await;
    assert_eq!(withdrawn.status, 200, "{withdrawn:?}");
    assert_eq!(state().await, "revoked");

    // Another mentor cannot make a key link for Kim.
    let other = session_cookie(&sign_in_staff(&base, "mentor.bakker", PASSWORD).await);
    let other_csrf = csrf_of(
        &http(&base, "GET", "/mentor", &[("Cookie", &other)], b"")
            .await
            .body,
    );
    let refused = form_post(
        format!("/mentor/students/{pseudonym}/keys"),
        other,
        format!("csrf={other_csrf}&role=device"),
    )
    .await;
    assert_eq!(refused.status, 404);
    assert_eq!(count("key_links").await, 1, "only the parent's link");

    // Kim makes a link for a laptop; once it ran out it is refused, and no key goes on the card.
    let devices = http(
        &base,
        "GET",
        "/student/devices",
        &[("Cookie", &kim_cookie)],
        b"",
    )
    .await;
    let made = form_post(
        "/student/devices".into(),
        kim_cookie.clone(),
        format!("csrf={}", csrf_of(&devices.body)),
    )
    .await;
    assert_eq!(made.status, 303);
    let link_page = http(
        &base,
        "GET",
        made.header("location").unwrap(),
        &[("Cookie", &kim_cookie)],
        b"",
    )
    .await;
    let device_link = attr_after(&link_page.body, "/k/");
    sqlx::query("UPDATE key_links SET expires_at = 1 WHERE role = 'device'")
        .execute(&school)
        .await
        .unwrap();
    let late = http(&base, "GET", &format!("/k/{device_link}"), &[], b"").await;
    assert_eq!(late.status, 410);
    assert!(late.body.contains("verlopen"), "{}", late.body);
    let late_key = key_in(
        format!("/k/{device_link}/key"),
        overstap_proto::sign::generate_signing_key(),
    )
    .await;
    assert_eq!(late_key.status, 410);
    let card = card_of(&region, &pseudonym).await;
    assert!(card.device_keys.is_empty());
    assert_eq!(
        card.guardian_keys,
        [parent.verifying_key().to_bytes().to_vec()]
    );

    // Kim lost her phone: the mentor, in person, gives her a new key. The old one is retired
    // from now, signs nothing new and opens no session; the parent's key stays.
    let replace = form_post(
        format!("/mentor/students/{pseudonym}/keys"),
        mentor.clone(),
        format!("csrf={csrf}&role=replace"),
    )
    .await;
    assert_eq!(replace.status, 303, "{replace:?}");
    let at = replace.header("location").unwrap().to_string();
    let page = http(&base, "GET", &at, &[("Cookie", &mentor)], b"")
        .await
        .body;
    let new_phone = overstap_proto::sign::generate_signing_key();
    let link = attr_after(&page, "/k/");
    assert_eq!(
        key_in(format!("/k/{link}/key"), new_phone.clone())
            .await
            .status,
        200
    );
    let page = http(&base, "GET", &at, &[("Cookie", &mentor)], b"")
        .await
        .body;
    let code = overstap_node::web::short_code(&new_phone.verifying_key().to_bytes());
    assert!(
        page.contains(&code),
        "the mentor sees the new key's code {code}: {page}"
    );
    let done = form_post(
        format!("{at}/confirm"),
        mentor.clone(),
        format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(done.status, 303);
    let card = card_of(&region, &pseudonym).await;
    assert_eq!(
        card.student_key,
        new_phone.verifying_key().to_bytes().to_vec()
    );
    assert_eq!(card.retired_keys.len(), 1);
    assert_eq!(
        card.retired_keys[0].key,
        kim.verifying_key().to_bytes().to_vec()
    );
    assert_eq!(
        card.guardian_keys,
        [parent.verifying_key().to_bytes().to_vec()]
    );
    assert_eq!(key_sign_in(&base, "student", &kim).await.status, 401);
    assert_eq!(key_sign_in(&base, "student", &new_phone).await.status, 200);

    // A decaan sees every student of the school, the other mentor only their own class; keys
    // are the mentor's, who checks them in person.
    region
        .api(SCHOOL)
        .await
        .unwrap()
        .add_staff(overstap_proto::pb::AddStaffRequest {
            username: "decaan.smit".into(),
            password: PASSWORD.into(),
            role: "decaan".into(),
            display_name: "Mevrouw Smit".into(),
        })
        .await
        .unwrap();
    let decaan = session_cookie(&sign_in_staff(&base, "decaan.smit", PASSWORD).await);
    let school_page = http(&base, "GET", "/mentor", &[("Cookie", &decaan)], b"")
        .await
        .body;
    assert!(
        school_page.contains("Alle leerlingen van de school"),
        "{school_page}"
    );
    assert!(school_page.contains("Kim de Wit"), "{school_page}");
    assert!(
        !school_page.contains("/keys\""),
        "no key buttons: {school_page}"
    );
    let other = session_cookie(&sign_in_staff(&base, "mentor.bakker", PASSWORD).await);
    let class_page = http(&base, "GET", "/mentor", &[("Cookie", &other)], b"")
        .await
        .body;
    assert!(!class_page.contains("Kim de Wit"), "{class_page}");
    region.shutdown().await.unwrap();
}

/// The card the school holds for `pseudonym`, through the node's API.
async fn card_of(region: &overstap_region::Region, pseudonym: &str) -> StudentCard {
    let card = region
        .api(SCHOOL)
        .await
        .unwrap()
        .get_student(GetStudentRequest {
            pseudonym: pseudonym.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    decode_body(Domain::StudentCard, &card).unwrap()
}

/// `overstap demo --serve`, as a newcomer runs it: once the story is told it prints the school's
/// web app with a mentor account and two students already invited (one of 15 with a link for
/// a parent), and each link opens its page.
#[tokio::test]
async fn the_demo_serves_links_for_a_mentor_two_students_and_a_parent() {
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
    let password = after("sign in as mentor, password ");
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
    let _ = demo.kill().await;
}

/// Two students of one school: whatever the second one asks for (the first one's consent, the
/// link for the first one's new device, their answers), nothing of the first one's comes back.
#[tokio::test]
async fn a_student_never_sees_another_students_passport() {
    use crate::web::csrf_of;
    let (_tmp, region) = region().await;
    add_mentor(&region, MENTOR, "Mevrouw Jansen").await;
    let base = web_url(&region, SCHOOL);
    let b64 = base64::engine::general_purpose::STANDARD;
    let (ana, bo) = (
        overstap_proto::sign::generate_signing_key(),
        overstap_proto::sign::generate_signing_key(),
    );
    for key in [&ana, &bo] {
        region
            .api(SCHOOL)
            .await
            .unwrap()
            .register_student(overstap_proto::pb::RegisterStudentRequest {
                student_key: key.verifying_key().to_bytes().to_vec(),
                birth_month: overstap_tests::cast::birth_month(17),
                guardian_keys: vec![],
                staff_user: MENTOR.into(),
            })
            .await
            .unwrap();
    }
    let post = |path: String, cookie: String, body: String| {
        let base = base.clone();
        async move {
            http(
                &base,
                "POST",
                &path,
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Cookie", &cookie),
                ],
                body.as_bytes(),
            )
            .await
        }
    };
    let get = |path: String, cookie: String| {
        let base = base.clone();
        async move { http(&base, "GET", &path, &[("Cookie", &cookie)], b"").await }
    };

    // Ana writes, signs, consents, and makes a link for her laptop.
    let a = crate::web::session_cookie(&key_sign_in(&base, "student", &ana).await);
    let csrf = csrf_of(&get("/student/passport".into(), a.clone()).await.body);
    let secret = "Alleen+voor+Ana+bestemd";
    post(
        "/student/passport".into(),
        a.clone(),
        format!("csrf={csrf}&set=pvs-mbo-v2&a.wie-ben-ik.over-mij={secret}"),
    )
    .await;
    let sign = get("/student/sign".into(), a.clone()).await;
    let body = b64
        .decode(attr_after(&sign.body, "id=\"sign\" data-body=\""))
        .unwrap();
    let signed = post_signature(&base, &a, "/student/sign", Domain::Manifest, &body, &ana).await;
    assert_eq!(signed.status, 200, "{signed:?}");
    consent_signed_by(&base, &a, &ana).await;
    let grant_id: String = sqlx::query_scalar("SELECT grant_id FROM grants")
        .fetch_one(&node_pool(&region, SCHOOL).await)
        .await
        .unwrap();
    let made = post("/student/devices".into(), a.clone(), format!("csrf={csrf}")).await;
    let ana_link = made.header("location").unwrap().to_string();

    // Bo, signed in with his own key, asks for all of it.
    let b = crate::web::session_cookie(&key_sign_in(&base, "student", &bo).await);
    let bo_csrf = csrf_of(&get("/student/passport".into(), b.clone()).await.body);
    for path in [
        "/student/passport".to_string(),
        "/student/consents".to_string(),
        "/student/trail".to_string(),
        "/student/sign".to_string(),
        format!("/student/consents/{grant_id}/withdraw"),
        ana_link.clone(),
        format!("{ana_link}/state"),
    ] {
        let page = get(path.clone(), b.clone()).await;
        assert!(
            !page.body.contains("Alleen voor Ana") && !page.body.contains("Techniek College"),
            "{path} shows Bo something of Ana's: {}",
            page.body
        );
    }
    assert_eq!(
        get(format!("/student/consents/{grant_id}/withdraw"), b.clone())
            .await
            .status,
        404
    );
    assert_eq!(get(ana_link.clone(), b.clone()).await.status, 404);
    let confirm = post(
        format!("{ana_link}/confirm"),
        b.clone(),
        format!("csrf={bo_csrf}"),
    )
    .await;
    assert_eq!(confirm.status, 404);
    // Nothing Bo did touched Ana's consent.
    let state: String = sqlx::query_scalar("SELECT state FROM grants")
        .fetch_one(&node_pool(&region, SCHOOL).await)
        .await
        .unwrap();
    assert_eq!(state, "active");
    // Bo signs out (the button under his passport); his cookie opens nothing after.
    let out = post("/logout".into(), b.clone(), format!("csrf={bo_csrf}")).await;
    assert_eq!(out.status, 303, "{out:?}");
    let after = get("/student/passport".into(), b.clone()).await;
    assert_eq!(after.status, 303);
    assert_eq!(after.header("location"), Some("/student"));
    region.shutdown().await.unwrap();
}

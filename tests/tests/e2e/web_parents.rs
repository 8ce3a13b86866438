//! A parent and a new device get in only the way the pages lead: no card under 16 without a
//! parent's key, key links used once and in time, co-signatures only by a guardian key over the
//! held bytes, a parent's decline and withdrawal, a lost phone replaced, a decaan's view.

use base64::Engine;
use overstap_proto::sign::Domain;
use overstap_tests::cast::SCHOOL;
use overstap_tests::*;

use crate::web::{MENTOR, add_mentor};
use crate::web_doors::{attr_after, card_of, consent_signed_by, key_sign_in, post_signature};

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

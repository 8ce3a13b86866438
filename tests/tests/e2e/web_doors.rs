//! The web app's doors taken by plain requests, as a script (or someone who read the pages'
//! scripts) would: what a page signs, who may ask for what, and the helpers those tests share.

use base64::Engine;
use overstap_proto::pb::{GetStudentRequest, StudentCard};
use overstap_proto::sign::{Domain, decode_body};
use overstap_tests::cast::{MBO, SCHOOL};
use overstap_tests::*;

use crate::web::{MENTOR, add_mentor};

/// The part of `page` after `marker` up to the next `"`: a link or a data attribute.
pub(crate) fn attr_after(page: &str, marker: &str) -> String {
    page.split(marker)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("{marker} in the page: {page}"))
        .to_string()
}

/// Signs in at `/{who}/sign-in` with `key`, over a fresh challenge under the sign-in tag.
pub(crate) async fn key_sign_in(
    base: &str,
    who: &str,
    key: &ed25519_dalek::SigningKey,
) -> HttpAnswer {
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
pub(crate) async fn consent_signed_by(
    base: &str,
    cookie: &str,
    key: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
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
pub(crate) async fn post_signature(
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

/// The card the school holds for `pseudonym`, through the node's API.
pub(crate) async fn card_of(region: &overstap_region::Region, pseudonym: &str) -> StudentCard {
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

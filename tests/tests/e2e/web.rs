//! The node's web app at its door, request by request (bad input, sign-in with a key, drafts),
//! and what the browser tests share: starting a script of `tests/browser/` (playwright-core
//! driving Debian's `chromium`), reading what it saw, and judging every page it looked at
//! (axe-core, the keyboard, no jargon). The whole story in a browser is in `web_story`.

use std::path::PathBuf;

use base64::Engine;
use overstap_proto::pb::AddStaffRequest;
use overstap_proto::sign::Domain;
use overstap_tests::cast::SCHOOL;
use overstap_tests::*;

pub(crate) const MENTOR: &str = "mentor.devries";
pub(crate) const PASSWORD: &str = "een lang wachtwoord";

pub(crate) async fn add_mentor(region: &overstap_region::Region, user: &str, name: &str) {
    region
        .api(SCHOOL)
        .await
        .unwrap()
        .add_staff(AddStaffRequest {
            username: user.into(),
            password: PASSWORD.into(),
            role: "mentor".into(),
            display_name: name.into(),
        })
        .await
        .expect("a staff account is added");
}

/// Adds a staff account with `role` at `org`'s node, with the tests' password.
pub(crate) async fn add_staff_at(
    region: &overstap_region::Region,
    org: &str,
    user: &str,
    role: &str,
) {
    region
        .api(org)
        .await
        .unwrap()
        .add_staff(AddStaffRequest {
            username: user.into(),
            password: PASSWORD.into(),
            role: role.into(),
            display_name: user.into(),
        })
        .await
        .expect("a staff account is added");
}

/// The browser test's folder, with its npm packages installed (`./test` installs them).
fn browser_tests() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && dir.join("node_modules/axe-core").exists(),
        "the browser tests' npm packages are missing: run ./test, or npm ci in {}",
        dir.display()
    );
    dir
}

/// Starts `script` from `tests/browser/` against the web app at `base`, with the mentor's
/// account, saving its screenshots in `shots`.
pub(crate) fn spawn_browser(
    script: &str,
    base: &str,
    shots: &std::path::Path,
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let shots = shots.to_string_lossy();
    spawn_script(script, &[base, MENTOR, PASSWORD, &shots], env)
}

/// Starts `script` from `tests/browser/` with `args`.
pub(crate) fn spawn_script(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> tokio::process::Child {
    let dir = browser_tests();
    tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node.js comes with the machine; ./test installs its packages)")
}

/// What a browser script saw (its JSON), once it ended well within 4 minutes.
pub(crate) async fn browser_output(
    browser: tokio::process::Child,
    started: std::time::Instant,
    shots: &std::path::Path,
) -> serde_json::Value {
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        browser.wait_with_output(),
    )
    .await
    .expect("the browser test ends within 4 minutes")
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the browser test failed:\n{stderr}");
    println!(
        "browser test: {:.1} s, screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
    serde_json::from_slice(&run.stdout).expect("the browser test prints JSON")
}

/// Every page a browser script looked at: no WCAG 2.1 A/AA violation, its screenshots saved,
/// every control reached with Tab and its focus shown, and no jargon or hex on the pages named
/// in `people`.
pub(crate) fn check_pages(seen: &serde_json::Value, people: &[&str]) {
    for p in seen["pages"].as_array().unwrap() {
        assert_eq!(
            p["violations"],
            serde_json::json!([]),
            "axe on {}: {}",
            p["name"],
            p["violations"]
        );
        for shot in p["shots"].as_array().unwrap() {
            assert!(PathBuf::from(shot.as_str().unwrap()).exists());
        }
        // The keyboard alone reaches every control, and the focus shows where it is.
        let keys = &p["keyboard"];
        assert_eq!(
            keys["unreached"],
            serde_json::json!([]),
            "Tab on {}: {keys}",
            p["name"]
        );
        assert_eq!(
            keys["noOutline"],
            serde_json::json!([]),
            "focus on {}: {keys}",
            p["name"]
        );
        if !people.contains(&p["name"].as_str().unwrap()) {
            continue;
        }
        let t = p["text"].as_str().unwrap().to_lowercase();
        for word in [
            "pseudoniem",
            "pvs-",
            "envelope",
            "grant",
            "ed25519",
            "sha-256",
        ] {
            assert!(!t.contains(word), "{} shows {word:?}: {t}", p["name"]);
        }
    }
}

/// A staff session cookie for `user`, signed in over plain HTTP as a browser would.
pub(crate) async fn sign_in_staff(base: &str, user: &str, password: &str) -> HttpAnswer {
    let form = format!("username={user}&password={}", password.replace(' ', "+"));
    http(
        base,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .await
}

pub(crate) fn session_cookie(a: &HttpAnswer) -> String {
    a.headers
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with("overstap_web="))
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .expect("a session cookie")
}

pub(crate) fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token in the page")
        .to_string()
}

#[tokio::test]
async fn bad_input_at_the_web_app_is_refused_kindly_and_changes_nothing() {
    let (_tmp, region) = region().await;
    add_mentor(&region, MENTOR, "Meneer De Vries").await;
    add_mentor(&region, "mentor.bakker", "Mevrouw Bakker").await;
    let base = web_url(&region, SCHOOL);
    let school = node_pool(&region, SCHOOL).await;
    let invitations = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM invitations")
            .fetch_one(&school)
            .await
            .unwrap()
    };

    // The cookie is what the issue asks of a session.
    let signed = sign_in_staff(&base, MENTOR, PASSWORD).await;
    assert_eq!(signed.status, 303, "{signed:?}");
    let cookie_line = signed.header("set-cookie").unwrap().to_string();
    for part in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie_line.contains(part), "{cookie_line}");
    }
    let cookie = session_cookie(&signed);
    let mentor_page = http(&base, "GET", "/mentor", &[("Cookie", &cookie)], b"").await;
    assert_eq!(mentor_page.status, 200);
    assert_eq!(mentor_page.header("cache-control"), Some("no-store"));
    let csrf = csrf_of(&mentor_page.body);
    let form =
        |csrf: &str| format!("csrf={csrf}&name=Noor+Bakker&class_name=3A&birth_month=2008-05");

    // No session, or no CSRF token: refused, nothing made.
    let anonymous = http(
        &base,
        "POST",
        "/mentor/invite",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form(&csrf).as_bytes(),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous.body.contains("Log eerst in"),
        "{}",
        anonymous.body
    );
    let forged = http(
        &base,
        "POST",
        "/mentor/invite",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        form("not-the-token").as_bytes(),
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(
        forged.body.contains("formulier is verlopen"),
        "{}",
        forged.body
    );
    // A form far past the limit: a kind page, nothing stored.
    let huge = format!("{}&x={}", form(&csrf), "a".repeat(64 * 1024));
    let too_big = http(
        &base,
        "POST",
        "/mentor/invite",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        huge.as_bytes(),
    )
    .await;
    assert_eq!(too_big.status, 413);
    assert!(too_big.body.contains("te veel tekst"), "{}", too_big.body);
    assert_eq!(invitations().await, 0, "nothing was made");

    // A real invitation, for the rest.
    let made = http(
        &base,
        "POST",
        "/mentor/invite",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        form(&csrf).as_bytes(),
    )
    .await;
    assert_eq!(made.status, 303, "{made:?}");
    let at = made.header("location").unwrap().to_string();
    let page = http(&base, "GET", &at, &[("Cookie", &cookie)], b"").await;
    let link = page
        .body
        .split("/i/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // Another mentor sees nothing of it.
    let other = session_cookie(&sign_in_staff(&base, "mentor.bakker", PASSWORD).await);
    let peek = http(&base, "GET", &at, &[("Cookie", &other)], b"").await;
    assert_eq!(peek.status, 404);
    assert!(!peek.body.contains("Noor"), "{}", peek.body);

    // The student's side: an unknown link, a key that is no key, then a key handed in twice.
    let unknown = http(&base, "GET", "/i/not-a-real-link", &[], b"").await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.body.contains("Deze link kennen we niet"),
        "{}",
        unknown.body
    );
    let key_path = format!("/i/{link}/key");
    let json = [("Content-Type", "application/json")];
    for bad in [
        "not json".to_string(),
        r#"{"key": "!!!"}"#.to_string(),
        format!(
            r#"{{"key": "{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode([1u8; 31])
        ),
    ] {
        let refused = http(&base, "POST", &key_path, &json, bad.as_bytes()).await;
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
    }
    let key = overstap_proto::sign::generate_signing_key().verifying_key();
    let good = format!(
        r#"{{"key": "{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(key.to_bytes())
    );
    assert_eq!(
        http(&base, "POST", &key_path, &json, good.as_bytes())
            .await
            .status,
        200
    );
    let second = overstap_proto::sign::generate_signing_key().verifying_key();
    let twice = format!(
        r#"{{"key": "{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(second.to_bytes())
    );
    assert_eq!(
        http(&base, "POST", &key_path, &json, twice.as_bytes())
            .await
            .status,
        409
    );
    let kept: Vec<u8> = sqlx::query_scalar("SELECT student_key FROM invitations")
        .fetch_one(&school)
        .await
        .unwrap();
    assert_eq!(kept, key.to_bytes(), "the first key stays");

    // Another mentor cannot confirm it; its own mentor can, once.
    let id = at.rsplit('/').next().unwrap();
    let other_csrf = csrf_of(
        &http(&base, "GET", "/mentor", &[("Cookie", &other)], b"")
            .await
            .body,
    );
    let stolen = http(
        &base,
        "POST",
        &format!("/mentor/invitations/{id}/confirm"),
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &other),
        ],
        format!("csrf={other_csrf}").as_bytes(),
    )
    .await;
    assert_eq!(stolen.status, 404);
    assert_eq!(node_count(&region, SCHOOL, "students").await, 0);
    for _ in 0..2 {
        let confirmed = http(
            &base,
            "POST",
            &format!("/mentor/invitations/{id}/confirm"),
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &cookie),
            ],
            format!("csrf={csrf}").as_bytes(),
        )
        .await;
        assert_eq!(confirmed.status, 303);
    }
    assert_eq!(node_count(&region, SCHOOL, "students").await, 1, "one card");
    let used = http(&base, "GET", &format!("/i/{link}"), &[], b"").await;
    assert_eq!(used.status, 410);
    assert!(used.body.contains("al gebruikt"), "{}", used.body);

    // Five wrong passwords pause sign-in for that name, even with the right one after.
    for _ in 0..5 {
        assert_eq!(
            sign_in_staff(&base, MENTOR, "wrong password!").await.status,
            401
        );
    }
    let paused = sign_in_staff(&base, MENTOR, PASSWORD).await;
    assert_eq!(paused.status, 429);
    assert!(
        paused.body.contains("Wacht een kwartier"),
        "{}",
        paused.body
    );
    region.shutdown().await.unwrap();
}

/// A sign-in challenge from the web app: its id and bytes.
async fn student_challenge(base: &str) -> (String, Vec<u8>) {
    let a = http(base, "POST", "/student/challenge", &[], b"").await;
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    (
        v["id"].as_str().unwrap().to_string(),
        b64.decode(v["challenge"].as_str().unwrap()).unwrap(),
    )
}

/// Signs `message` with `with` and hands it in for challenge `id`, as the student's page does.
async fn student_sign_in(
    base: &str,
    id: &str,
    with: &ed25519_dalek::SigningKey,
    message: &[u8],
) -> HttpAnswer {
    use ed25519_dalek::Signer;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "id": id,
        "key": b64.encode(with.verifying_key().to_bytes()),
        "signature": b64.encode(with.sign(message).to_bytes()),
    })
    .to_string();
    http(
        base,
        "POST",
        "/student/sign-in",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// A student signs in with a signature over the node's challenge under the sign-in domain tag,
/// by the key on their card, once per challenge; a session is a student's or a staff member's,
/// never both; a draft that does not fit its question set is refused and nothing is kept.
#[tokio::test]
async fn a_student_signs_in_only_with_the_key_on_their_card_and_keeps_only_a_valid_draft() {
    let (_tmp, region) = region().await;
    add_mentor(&region, MENTOR, "Meneer De Vries").await;
    let base = web_url(&region, SCHOOL);
    let key = overstap_proto::sign::generate_signing_key();
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
    let challenge = || student_challenge(&base);
    let sign_in = |id: String, with: ed25519_dalek::SigningKey, message: Vec<u8>| {
        let base = base.clone();
        async move { student_sign_in(&base, &id, &with, &message).await }
    };
    let tagged = |c: &[u8]| overstap_proto::sign::signing_bytes(Domain::SignIn, c);

    // The challenge signed bare (as a document would be, without the sign-in tag): refused.
    let (id, c) = challenge().await;
    assert_eq!(sign_in(id, key.clone(), c.clone()).await.status, 401);
    // A key no card names: refused, even with a good signature.
    let (id, c) = challenge().await;
    let stranger = overstap_proto::sign::generate_signing_key();
    let refused = sign_in(id, stranger, tagged(&c)).await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.body.contains("no student of this school"),
        "{}",
        refused.body
    );
    // The right key: in; the same challenge again: refused (one use).
    let (id, c) = challenge().await;
    let ok = sign_in(id.clone(), key.clone(), tagged(&c)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let cookie = session_cookie(&ok);
    assert_eq!(sign_in(id, key.clone(), tagged(&c)).await.status, 401);

    // A student's session opens no staff page, and a mentor's no student's passport.
    let staff_page = http(&base, "GET", "/mentor", &[("Cookie", &cookie)], b"").await;
    assert_eq!(staff_page.status, 401);
    let mentor = session_cookie(&sign_in_staff(&base, MENTOR, PASSWORD).await);
    let mentors_view = http(
        &base,
        "GET",
        "/student/passport",
        &[("Cookie", &mentor)],
        b"",
    )
    .await;
    assert_eq!(mentors_view.status, 303);
    assert_eq!(mentors_view.header("location"), Some("/student"));

    // Drafts: a valid one is kept; one that does not fit its set changes nothing.
    let page = http(
        &base,
        "GET",
        "/student/passport",
        &[("Cookie", &cookie)],
        b"",
    )
    .await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    let form = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", cookie.as_str()),
    ];
    let save = |body: String| {
        let base = base.clone();
        async move { http(&base, "POST", "/student/passport", &form, body.as_bytes()).await }
    };
    let good = format!("csrf={csrf}&set=pvs-mbo-v1&a.wie-ben-ik.over-mij=Ik+ben+Sam");
    assert_eq!(save(good).await.status, 303);
    let school = node_pool(&region, SCHOOL).await;
    let kept = || async {
        sqlx::query_scalar::<_, String>("SELECT answers FROM drafts")
            .fetch_one(&school)
            .await
            .unwrap()
    };
    let before = kept().await;
    assert!(before.contains("Ik ben Sam"), "{before}");
    for bad in [
        format!("csrf={csrf}&set=pvs-mbo-v1&a.bestaat-niet.vraag=x"),
        format!("csrf={csrf}&set=pvs-mbo-v1&a.wie-ben-ik.over-mij=x&s.wie-ben-ik.over-mij=blij"),
        format!(
            "csrf={csrf}&set=pvs-mbo-v1&a.wie-ben-ik.vrije-tijd=x&s.wie-ben-ik.vrije-tijd=boos"
        ),
        format!(
            "csrf={csrf}&set=pvs-mbo-v1&a.wie-ben-ik.over-mij={}",
            "a".repeat(2_001)
        ),
        format!("csrf={csrf}&set=geen-set&a.wie-ben-ik.over-mij=x"),
    ] {
        let refused = save(bad.clone()).await;
        assert_eq!(refused.status, 422, "{bad}");
        assert!(
            refused.body.contains("kon niet worden opgeslagen"),
            "{}",
            refused.body
        );
    }
    let forged = save("csrf=nope&set=pvs-mbo-v1&a.wie-ben-ik.over-mij=x".to_string()).await;
    assert_eq!(forged.status, 403);
    assert_eq!(kept().await, before, "nothing changed");
    region.shutdown().await.unwrap();
}

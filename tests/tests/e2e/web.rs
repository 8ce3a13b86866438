//! The node's web app, as people use it: a mentor and a student in two profiles of a real
//! headless Chromium (Debian's `chromium`, driven by playwright-core from `tests/browser/`),
//! every page checked with axe-core and photographed at 1280 and 390 px; and bad input at the
//! web app's door, request by request.

use std::path::PathBuf;

use base64::Engine;
use overstap_proto::pb::{AddStaffRequest, GetStudentRequest, StudentCard};
use overstap_proto::sign::{Domain, decode_body};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mentor_enrols_a_student_whose_key_never_leaves_the_browser() {
    let (_tmp, mut region) = region().await;
    add_mentor(&region, MENTOR, "Meneer De Vries").await;
    // The college signs its staff in through its identity provider (a real one, started here);
    // its admin has a local account.
    let (_idp, college) = crate::web_oidc::college_with_idp(&mut region).await;
    add_staff_at(&region, overstap_tests::cast::MBO, "beheer", "admin").await;
    let base = web_url(&region, SCHOOL);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web");
    let _ = std::fs::remove_file(shots.join("checked"));
    let started = std::time::Instant::now();
    let env = [
        ("COLLEGE_URL", college.as_str()),
        ("IDP_LOGIN", "ilse"),
        ("COLLEGE_ADMIN", "beheer"),
    ];
    let mut browser = spawn_browser("enrol.mjs", &base, &shots, &env);
    // While the people click: once the student's consent is at the school and the mentor has
    // sent the class, the mbo college must hold exactly the chosen part before the student
    // withdraws.
    let school = node_pool(&region, SCHOOL).await;
    let mut grant_id = None;
    for _ in 0..600 {
        grant_id = sqlx::query_scalar::<_, String>(
            "SELECT grant_id FROM grants WHERE recipient_org = $1 AND purpose = 'intake'",
        )
        .bind(overstap_tests::cast::MBO)
        .fetch_optional(&school)
        .await
        .unwrap();
        if grant_id.is_some() || browser.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let Some(grant_id) = grant_id else {
        let run = browser.wait_with_output().await.unwrap();
        panic!(
            "the student's consent never reached the school; the browser test said:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    };
    eventually(
        "the mentor sends and the mbo college holds the consented part",
        || async {
            held_sections(&region, overstap_tests::cast::MBO, &grant_id).await
                == ["personalia", "wie-ben-ik"]
        },
    )
    .await;
    std::fs::write(shots.join("checked"), b"").unwrap();
    let seen = browser_output(browser, started, &shots).await;

    // Both people read the same short code.
    let code = seen["studentCode"].as_str().unwrap();
    assert_eq!(code.len(), 7, "{code}");
    assert_eq!(seen["mentorCode"], seen["studentCode"]);

    // The key is an Ed25519 key the browser will not give out in any format, and it signs.
    let key = &seen["key"];
    assert_eq!(key["algorithm"], "Ed25519");
    assert_eq!(key["extractable"], false);
    assert_eq!(key["refused"], serde_json::json!(["pkcs8", "jwk", "raw"]));
    let b64 = base64::engine::general_purpose::STANDARD;
    let public = b64.decode(key["public"].as_str().unwrap()).unwrap();
    let signature = b64.decode(key["signature"].as_str().unwrap()).unwrap();
    let verifying = overstap_proto::sign::verifying_key(&public, "the browser's key").unwrap();
    verifying
        .verify_strict(
            b"overstap",
            &ed25519_dalek::Signature::from_slice(&signature).unwrap(),
        )
        .expect("the browser's signature verifies");

    // What the student's browser sent: the public key once (to enrol), then a sign-in (a
    // challenge asked for, and the public key with a signature), the answers, and the passport
    // signature. Nothing else, and no key material but the public key.
    let posts = seen["posts"].as_array().unwrap();
    let paths: Vec<String> = posts
        .iter()
        .map(|p| {
            let url = p["url"].as_str().unwrap();
            url[url.find("/student").or_else(|| url.find("/i/")).unwrap()..].to_string()
        })
        .collect();
    assert_eq!(paths.len(), 8, "{posts:?}");
    assert!(
        paths[0].starts_with("/i/") && paths[0].ends_with("/key"),
        "{paths:?}"
    );
    assert_eq!(
        paths[1..],
        [
            "/student/challenge",
            "/student/sign-in",
            "/student/passport",
            "/student/sign",
            "/student/consent",
            "/student/consent/sign",
            "/student/withdraw"
        ]
    );
    let consenting: serde_json::Value =
        serde_json::from_str(posts[6]["body"].as_str().unwrap()).unwrap();
    assert_eq!(consenting["key"], key["public"]);
    let signing: serde_json::Value =
        serde_json::from_str(posts[4]["body"].as_str().unwrap()).unwrap();
    let fields: Vec<&String> = signing.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["key", "signature"]);
    assert_eq!(signing["key"], key["public"]);
    let body: serde_json::Value = serde_json::from_str(posts[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({ "key": key["public"] }));
    let sign_in: serde_json::Value =
        serde_json::from_str(posts[2]["body"].as_str().unwrap()).unwrap();
    let fields: Vec<&String> = sign_in.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["id", "key", "signature"]);
    assert_eq!(sign_in["key"], key["public"]);
    // The node issued the card for exactly that key, with the name kept at the school only.
    let pseudonym: String =
        sqlx::query_scalar("SELECT pseudonym FROM people WHERE name = 'Sam de Vries'")
            .fetch_one(&school)
            .await
            .expect("Sam is enrolled");
    let card = region
        .api(SCHOOL)
        .await
        .unwrap()
        .get_student(GetStudentRequest {
            pseudonym: pseudonym.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    let card: StudentCard = decode_body(Domain::StudentCard, &card).unwrap();
    assert_eq!(card.student_key, public);
    assert_eq!(card.home_org, SCHOOL);

    // Every page: no WCAG 2.1 A/AA violation, its words on it, and its screenshots saved.
    let pages = seen["pages"].as_array().unwrap();
    let names: Vec<&str> = pages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "home",
            "sign-in",
            "mentor",
            "invitation",
            "enrol",
            "enrol-code",
            "compare",
            "enrolled",
            "enrol-done",
            "student-sign-in",
            "passport",
            "passport-saved",
            "sign-tampered",
            "sign",
            "signed",
            "consent",
            "consent-review",
            "consent-given",
            "class",
            "class-sent",
            "trail",
            "college-sign-in",
            "inbox",
            "inbox-passport",
            "inbox-saved",
            "handovers",
            "trail-intake",
            "withdraw",
            "withdrawn",
            "consents-erased",
            "trail-erased",
            "inbox-erased",
            "audit",
            "student-no-key",
            "link-used"
        ]
    );
    let text = |name: &str| {
        pages.iter().find(|p| p["name"] == name).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        text("enrol").contains("Maak mijn sleutel"),
        "{}",
        text("enrol")
    );
    assert!(
        text("enrol-done").contains("Gelukt!"),
        "{}",
        text("enrol-done")
    );
    assert!(text("enrolled").contains("Sam de Vries is ingeschreven"));
    // No jargon and no hex on the student's screens, no WCAG 2.1 A/AA violation on any page.
    check_pages(
        &seen,
        &[
            "enrol",
            "enrol-code",
            "enrol-done",
            "student-sign-in",
            "passport",
            "passport-saved",
            "sign",
            "signed",
            "consent",
            "consent-review",
            "consent-given",
            "trail",
            "trail-intake",
            "withdraw",
            "withdrawn",
            "consents-erased",
            "trail-erased",
            "student-no-key",
            "inbox",
            "inbox-passport",
            "inbox-saved",
            "handovers",
        ],
    );
    // The receiving side: the intaker read the passport as Sam wrote it, under Sam's name, and
    // planned the intake; the school's handovers page and Sam's trail show it; once Sam
    // withdrew, the intaker's page shows the erasure; the college's audit names the intaker.
    let said = |k: &str| seen[k].as_str().unwrap().to_string();
    for words in ["Paspoort van Sam de Vries", "Wie ben ik?", "Ik ben Sam."] {
        assert!(
            said("passportText").contains(words),
            "{words:?}: {}",
            said("passportText")
        );
    }
    assert!(!said("passportText").contains("Wat kan ik?"));
    assert!(said("intakeSaved").contains("Sam de Vries staat nu op ‘Intake gepland’"));
    assert!(
        said("handoversText").contains("Sam de Vries"),
        "{}",
        said("handoversText")
    );
    assert!(said("handoversText").contains("Intake gepland"));
    assert!(
        text("trail-intake").contains("intake gepland"),
        "{}",
        text("trail-intake")
    );
    assert!(
        said("erasedText").contains("De leerling heeft de toestemming ingetrokken"),
        "{}",
        said("erasedText")
    );
    assert!(!said("erasedText").contains("Ik ben Sam"));
    for words in [
        "ilse@roc-example.nl",
        "Paspoort gelezen",
        "Stand gezet",
        "Ingelogd",
    ] {
        assert!(
            said("auditText").contains(words),
            "{words:?}: {}",
            said("auditText")
        );
    }
    // The school's audit holds what the mentor did, in order.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM staff_audit WHERE who = $1 ORDER BY id")
            .bind(MENTOR)
            .fetch_all(&school)
            .await
            .unwrap();
    assert_eq!(
        actions,
        ["sign-in", "invite", "enrol", "push"],
        "{actions:?}"
    );
    // The student signed in with the browser's key and the answer and smiley were kept, at the
    // school and nowhere else.
    assert_eq!(seen["kept"], "Ik ben Sam. Ik sleutel graag aan brommers.");
    assert_eq!(seen["smiley"], true);
    let draft: String = sqlx::query_scalar("SELECT answers FROM drafts WHERE pseudonym = $1")
        .bind(&pseudonym)
        .fetch_one(&school)
        .await
        .expect("the draft is kept at the school");
    assert!(
        draft.contains("brommers") && draft.contains("blij"),
        "{draft}"
    );
    assert!(
        text("passport").contains("Wie ben ik?"),
        "{}",
        text("passport")
    );
    assert!(text("student-no-key").contains("geen sleutel van jou"));
    // Light pages: what each loads in all, on a throttled connection. The bytes are checked
    // against a budget; the time is printed (and kept in BENCHMARKS.md), never asserted.
    for w in seen["weights"].as_array().unwrap() {
        let bytes = w["bytes"].as_u64().unwrap();
        println!(
            "{}: {bytes} bytes in {} requests, loaded in {} ms at 400 kbit/s and 400 ms round trips",
            w["path"], w["requests"], w["ms"]
        );
        assert!(
            bytes > 0 && bytes < 40_000,
            "{} weighs {bytes} bytes",
            w["path"]
        );
    }
    // A link works once; the second visit gets a kind page, in the browser's language.
    assert_eq!(seen["reusedStatus"], 410);
    assert!(
        text("link-used").contains("has been used already"),
        "{}",
        text("link-used")
    );
    // The content policy lets in this site's own script and nothing else.
    let csp = seen["csp"].as_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    region.shutdown().await.unwrap();
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

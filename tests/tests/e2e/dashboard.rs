//! The coordinators' dashboard in a real headless browser (Debian's `chromium`): a region routes
//! a known mix of envelopes, and the page must show that mix, with small counts as "<5". Without
//! a coordinator's session nothing is shown, and the data endpoint refuses. Screenshots of the
//! page at laptop and phone width are saved under the target folder's `tmp/`. A token the
//! authority did not sign, one dated ahead, or one of a coordinator since removed opens nothing.

use std::path::PathBuf;
use std::sync::Arc;

use overstap_tests::cast::{MBO, OTHER_MBO, SCHOOL};
use overstap_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Debian's chromium (installed by `./test`), or the browser `OVERSTAP_CHROMIUM` names.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("OVERSTAP_CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "no headless browser: install Debian's chromium package (./test does), or set OVERSTAP_CHROMIUM"
    );
}

/// Opens `url` in a fresh headless browser profile, lets its scripts run, and returns the DOM.
/// With `screenshot`, also saves a picture of the page at that window size.
async fn browse(url: &str, screenshot: Option<(&PathBuf, &str)>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",
        "--no-first-run",
        "--virtual-time-budget=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some((path, size)) => cmd
            .arg(format!("--screenshot={}", path.display()))
            .arg(format!("--window-size={size}")),
        None => cmd.arg("--dump-dom"),
    };
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), cmd.arg(url).output())
        .await
        .expect("the browser finished within 90 s")
        .expect("the browser runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element marked `data-testid="id"` in a dumped DOM.
fn shown(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("data-testid=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} on the page"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap();
    rest[start..start + end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// One HTTPS request to the dashboard, trusting the region's CA: (status, body).
async fn https(region: &overstap_region::region::Region, request: &str) -> (u16, String) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(region.dir.join("authority/ca.pem"))
        .unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = region.dashboard_url().unwrap();
    let host = url.trim_start_matches("https://").trim_end_matches('/');
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the dashboard's certificate is the hub's, from the region CA");
    tls.write_all(request.replace('\n', "\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn get_stats(cookie: Option<&str>) -> String {
    let cookie = cookie
        .map(|c| format!("Cookie: overstap_session={c}\n"))
        .unwrap_or_default();
    format!("GET /api/stats HTTP/1.1\nHost: localhost\n{cookie}Connection: close\n\n")
}

#[tokio::test]
async fn the_dashboard_shows_the_known_mix_in_a_real_browser() {
    let (_tmp, mut region) = region().await;
    admit_coordinator(&mut region).await;
    // The known mix: six packages to the mbo, two to the other mbo, and one more to the mbo
    // while its node is away.
    let mut ids = Vec::new();
    for to in [MBO, MBO, MBO, MBO, MBO, MBO, OTHER_MBO, OTHER_MBO] {
        ids.push((to, hand_over(&region, to).await));
    }
    for (to, id) in &ids {
        eventually("the package is held", || async {
            !held_sections(&region, to, id).await.is_empty()
        })
        .await;
    }
    region.stop_node(MBO).await.unwrap();
    hand_over(&region, MBO).await;
    eventually("the hub holds the waiting package", || async {
        hub_count(&region, "mailbox").await >= 1
    })
    .await;

    let url = region.dashboard_url().unwrap();
    let token = region.authority.dashboard_token("RMC01", 1).unwrap();
    let dom = browse(&format!("{url}#token={token}"), None).await;
    assert!(shown(&dom, "signed-in-as").contains("RMC01"), "{dom}");
    assert_eq!(shown(&dom, "total-packages"), "9");
    // Seven to the mbo would give away the other mbo's two (nine in all): it reads "x", hidden
    // to protect the small count, which reads "<5".
    assert_eq!(shown(&dom, &format!("flow-{SCHOOL}-{MBO}")), "x");
    assert_eq!(shown(&dom, &format!("flow-{SCHOOL}-{OTHER_MBO}")), "<5");
    assert_eq!(shown(&dom, &format!("waiting-{MBO}-day")), "<5");
    assert_eq!(shown(&dom, "at-risk"), "0");
    assert_eq!(shown(&dom, "erasures"), "0");
    assert_eq!(shown(&dom, &format!("waiting-{MBO}-older")), "0");
    let month = overstap_hub::stats::periods(now())[2].1.clone();
    assert_eq!(shown(&dom, &format!("volume-{month}-school-mbo")), "9");

    // Pictures of the page, at laptop and at phone width, for people to look at.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for (name, size) in [
        ("dashboard.png", "1280,1500"),
        ("dashboard-phone.png", "390,1800"),
    ] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        browse(&format!("{url}#token={token}"), Some((&path, size))).await;
        let png = std::fs::read(&path).expect("a screenshot was saved");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name} is a real picture"
        );
        println!("dashboard screenshot: {}", path.display());
    }

    // As a coordinator reads it: in Dutch, and in English at the switch; every page without a
    // WCAG 2.1 A/AA violation, walked with Tab alone, photographed at 1280 and 390 px.
    let shots = dir.join("dashboard");
    let started = std::time::Instant::now();
    let link = format!("{url}#token={token}");
    let run = crate::web::spawn_script("dashboard.mjs", &[&link, &shots.to_string_lossy()], &[]);
    let seen = crate::web::browser_output(run, started, &shots).await;
    crate::web::check_pages(&seen, &["dashboard", "dashboard-en", "dashboard-sign-in"]);
    let dutch = seen["dutch"].as_str().unwrap();
    for words in [
        "Paspoorten overgedragen",
        "Van scholen naar mbo's en gemeenten",
        "Ingelogd als RMC01",
        "Wacht nu op ophalen",
    ] {
        assert!(dutch.contains(words), "{words:?} in {dutch}");
    }
    let english = seen["english"].as_str().unwrap();
    assert!(english.contains("Passports handed over"), "{english}");
    let sign_in = seen["signIn"].as_str().unwrap();
    assert!(sign_in.contains("inloglink"), "{sign_in}");
    assert!(
        !sign_in.contains("overstap authority"),
        "no command for a coordinator: {sign_in}"
    );

    // Without a session the page shows the sign-in form and no number.
    let anonymous = browse(&url, None).await;
    assert!(
        anonymous.contains("data-testid=\"signin\"")
            && !anonymous.contains("id=\"signin\" data-testid=\"signin\" hidden")
    );
    assert_eq!(shown(&anonymous, "total-packages"), "");
    // And the data endpoint refuses: no cookie, a school's token, an expired token.
    let (status, body) = https(&region, &get_stats(None)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("sign in with the dashboard token"), "{body}");
    let key = region.authority.key.clone();
    let school = overstap_proto::session::issue_token(&key, SCHOOL, now(), 1, [1; 16]).unwrap();
    let (status, body) = https(&region, &get_stats(Some(&school))).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("only coordinators see the dashboard"),
        "{body}"
    );
    let expired =
        overstap_proto::session::issue_token(&key, "RMC01", now() - 7_200, 1, [2; 16]).unwrap();
    let (status, body) = https(&region, &get_stats(Some(&expired))).await;
    assert_eq!(status, 401);
    assert!(body.contains("the session ended"), "{body}");
    let (status, body) = https(&region, &get_stats(Some(&token))).await;
    assert_eq!(status, 200, "{body}");
    region.shutdown().await.unwrap();
}

/// Only a token the authority signed, for a coordinator the directory lists now, opens the
/// statistics: one signed with another key, one issued in the future, one the authority ended,
/// and a good one after its coordinator was removed from the region are each refused with the
/// reason.
#[tokio::test]
async fn a_forged_future_dated_or_revoked_dashboard_token_opens_nothing() {
    let (_tmp, mut region) = region().await;
    admit_coordinator(&mut region).await;
    let token = region.authority.dashboard_token("RMC01", 1).unwrap();
    let (status, body) = https(&region, &get_stats(Some(&token))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"signed_in_as\":\"RMC01\""), "{body}");

    let forger = overstap_proto::sign::generate_signing_key();
    let forged = overstap_proto::session::issue_token(&forger, "RMC01", now(), 1, [3; 16]).unwrap();
    let key = region.authority.key.clone();
    let ahead =
        overstap_proto::session::issue_token(&key, "RMC01", now() + 3_600, 1, [4; 16]).unwrap();
    for (what, token, reason) in [
        ("forged", &forged, "signature"),
        ("dated ahead", &ahead, "it was issued in the future"),
    ] {
        let (status, body) = https(&region, &get_stats(Some(token))).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains(reason), "{what}: {body}");
        assert!(!body.contains("total"), "{what}: no number in {body}");
    }

    // The authority ends one session (by its token), then every session of the coordinator:
    // each opens nothing once the hub holds the directory, and a new session still works.
    let other = region.authority.dashboard_token("RMC01", 1).unwrap();
    region
        .authority
        .end_sessions("RMC01", Some(&other))
        .unwrap();
    region.publish_directory().await.unwrap();
    let (status, body) = https(&region, &get_stats(Some(&other))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authority ended this session"), "{body}");
    let (status, body) = https(&region, &get_stats(Some(&token))).await;
    assert_eq!(status, 200, "only the one session ended: {body}");
    region.authority.end_sessions("RMC01", None).unwrap();
    region.publish_directory().await.unwrap();
    let (status, body) = https(&region, &get_stats(Some(&token))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authority ended this session"), "{body}");
    let fresh = region.authority.dashboard_token("RMC01", 1).unwrap();
    let (status, body) = https(&region, &get_stats(Some(&fresh))).await;
    assert_eq!(status, 200, "a session issued after the end: {body}");
    // A token of one coordinator cannot end another's sessions.
    assert!(region.authority.end_sessions("25LP", Some(&fresh)).is_err());

    // The coordinator is removed: its token, good until now, opens nothing from then on.
    region.authority.remove("RMC01").unwrap();
    region.publish_directory().await.unwrap();
    let (status, body) = https(&region, &get_stats(Some(&fresh))).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown member RMC01"), "{body}");
    region.shutdown().await.unwrap();
}

//! Staff sign in with their organisation's account through a real, certified OpenID provider
//! (the npm package oidc-provider, started by the test on 127.0.0.1 from `tests/browser/`):
//! the whole code flow with PKCE by plain requests, and each way a sign-in must fail.

use overstap_tests::cast::MBO;
use overstap_tests::*;

/// The college's value in SURFconext's organisation claim.
pub(crate) const COLLEGE_DOMAIN: &str = "roc-example.nl";
pub(crate) const CLIENT_ID: &str = "overstap-college";
const CLIENT_SECRET: &str = "a client secret long enough for the provider";

/// A provider that is running: its issuer, and the process (it ends when this is dropped).
pub(crate) struct Idp {
    pub issuer: String,
    _process: tokio::process::Child,
}

/// Starts the provider with SURFconext-like accounts: an intaker of the college, someone of
/// another college, and a student of the college (no staff affiliation), whose organisation
/// and affiliations only the userinfo endpoint tells. `redirect` is the node's callback.
pub(crate) async fn start_idp(redirect: &str) -> Idp {
    use tokio::io::AsyncBufReadExt;
    let org = |o: &str, affiliations: &[&str], name: &str| {
        serde_json::json!({
            "name": name,
            "email": format!("{}@{o}", name.split(' ').next().unwrap().to_lowercase()),
            "schac_home_organization": o,
            "edu_person_affiliations": affiliations,
        })
    };
    let config = serde_json::json!({
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect],
        }],
        "accounts": {
            "ilse": org(COLLEGE_DOMAIN, &["employee", "staff"], "Ilse de Vries"),
            "piet": org("other-college.nl", &["employee"], "Piet Smit"),
            "sam": org(COLLEGE_DOMAIN, &["student"], "Sam de Boer"),
        },
        // Like SURFconext: the organisation and affiliations come from userinfo only.
        "userinfo_only": ["schac_home_organization", "edu_person_affiliations"],
    });
    let mut child = crate::web::spawn_script("idp.mjs", &[&config.to_string()], &[]);
    let out = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(out).lines();
    // Generous: on two cores busy with the rest of the suite, Node.js loading the provider
    // library once took over 30 s.
    let line = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line())
        .await
        .expect("the provider starts within 120 s")
        .unwrap()
        .expect("the provider prints its issuer");
    let issuer: serde_json::Value = serde_json::from_str(&line).unwrap();
    Idp {
        issuer: issuer["issuer"].as_str().unwrap().to_string(),
        _process: child,
    }
}

/// Restarts the college's node with sign-in through a provider started for it; the provider
/// and the web app's address (the same port as before, so the provider knows the callback).
pub(crate) async fn college_with_idp(region: &mut overstap_region::Region) -> (Idp, String) {
    let base = web_url(region, MBO);
    region.stop_node(MBO).await.unwrap();
    let idp = start_idp(&format!("{base}/login/oidc/callback")).await;
    let dir = region.node_dir(MBO);
    std::fs::write(dir.join("oidc.secret"), CLIENT_SECRET).unwrap();
    let toml = dir.join("node.toml");
    let settings = std::fs::read_to_string(&toml).unwrap().replace(
        "web_listen = \"127.0.0.1:0\"",
        &format!("web_listen = \"{}\"", base.trim_start_matches("http://")),
    );
    let oidc = format!(
        r#"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "oidc.secret"
redirect_url = "{base}/login/oidc/callback"
display_name = "SURFconext"
organisation_claim = "schac_home_organization"
organisation = "{COLLEGE_DOMAIN}"
username_claim = "email"

[[oidc.roles]]
claim = "edu_person_affiliations"
value = "employee"
role = "intaker"
"#,
        issuer = idp.issuer
    );
    std::fs::write(&toml, settings + &oidc).unwrap();
    region.start_node(MBO).await.unwrap();
    assert_eq!(web_url(region, MBO), base);
    (idp, base)
}

/// A browser's cookies for one site, as name=value pairs.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, a: &HttpAnswer) {
        for (n, v) in &a.headers {
            if n != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.0.retain(|(n, _)| n != name);
                if !value.is_empty() && !v.contains("Max-Age=0") {
                    self.0.push((name.to_string(), value.to_string()));
                }
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// (base, path) of an absolute http URL.
fn split(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("http://");
    let slash = rest.find('/').unwrap_or(rest.len());
    (
        format!("http://{}", &rest[..slash]),
        rest[slash..].to_string(),
    )
}

/// A request with the jar's cookies, taking the cookies the answer sets.
async fn visit(jar: &mut Jar, method: &str, url: &str, form: Option<&str>) -> HttpAnswer {
    let (base, path) = split(url);
    let cookie = jar.header();
    let mut headers = vec![("Cookie", cookie.as_str()), ("Accept-Language", "nl")];
    if form.is_some() {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    let a = http(
        &base,
        method,
        &path,
        &headers,
        form.unwrap_or_default().as_bytes(),
    )
    .await;
    jar.take(&a);
    a
}

/// A sign-in as `login` up to the moment the provider sends the browser back: the callback
/// URL (with code and state), and the browser's jars (the node's, the provider's).
async fn to_callback(base: &str, login: &str) -> (String, Jar, Jar) {
    let mut node = Jar::default();
    let mut idp = Jar::default();
    let start = visit(&mut node, "GET", &format!("{base}/login/oidc"), None).await;
    assert_eq!(start.status, 303, "{start:?}");
    let auth = start.header("location").unwrap().to_string();
    assert!(auth.contains("code_challenge_method=S256"), "{auth}");
    assert!(auth.contains("nonce="), "{auth}");
    let mut next = auth;
    // The provider's redirects, its sign-in form, until it sends the browser to the node.
    for _ in 0..10 {
        if next.starts_with(base) {
            return (next, node, idp);
        }
        let url = next.clone();
        let a = visit(&mut idp, "GET", &url, None).await;
        if a.status == 200 && a.body.contains("id=\"login\"") {
            let posted = visit(&mut idp, "POST", &url, Some(&format!("login={login}"))).await;
            assert_eq!(posted.status, 303, "{posted:?}");
            next = posted.header("location").unwrap().to_string();
        } else {
            assert!(matches!(a.status, 302 | 303), "{a:?}");
            next = a.header("location").unwrap().to_string();
        }
        if !next.starts_with("http") {
            next = format!("{}{next}", split(&url).0);
        }
    }
    panic!("the provider never sent the browser back");
}

async fn callback(node: &mut Jar, url: &str) -> HttpAnswer {
    visit(node, "GET", url, None).await
}

#[tokio::test]
async fn staff_sign_in_with_their_organisations_account_and_only_that() {
    let (_tmp, mut region) = region().await;
    let (idp, base) = college_with_idp(&mut region).await;
    let sessions = || async { node_count(&region, MBO, "web_sessions").await };

    // The sign-in page offers the provider first.
    let login = http(&base, "GET", "/login", &[("Accept-Language", "nl")], b"").await;
    assert!(
        login.body.contains("Inloggen met SURFconext"),
        "{}",
        login.body
    );

    // Ilse of the college: the whole flow, a session as intaker, the inbox opens.
    let (back, mut node, _) = to_callback(&base, "ilse").await;
    assert!(back.contains("state="), "{back}");
    let done = callback(&mut node, &back).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(
        done.body
            .contains("Je bent ingelogd als ilse@roc-example.nl"),
        "{}",
        done.body
    );
    assert_eq!(done.header("refresh"), Some("0; url=/inbox"));
    let inbox = visit(&mut node, "GET", &format!("{base}/inbox"), None).await;
    assert_eq!(inbox.status, 200, "{inbox:?}");
    assert!(inbox.body.contains("Binnengekomen paspoorten"));
    assert_eq!(sessions().await, 1);

    // The same callback again (state and code used): refused, no new session.
    let mut replay_jar = Jar(node
        .0
        .iter()
        .filter(|(n, _)| n != "overstap_web")
        .cloned()
        .collect());
    let replayed = callback(&mut replay_jar, &back).await;
    assert_eq!(replayed.status, 400, "{replayed:?}");
    assert!(
        replayed.body.contains("verlopen of al gebruikt"),
        "{}",
        replayed.body
    );

    // A used code under a fresh state of the same browser: the provider refuses the code.
    let (fresh, mut node2, _) = to_callback(&base, "ilse").await;
    let old_code = back
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let new_code = fresh
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let with_old_code = fresh.replace(new_code, old_code);
    let refused = callback(&mut node2, &with_old_code).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused.body.contains("geen geldig bewijs"),
        "{}",
        refused.body
    );

    // A state that is not this browser's: the callback from another browser's sign-in.
    let (theirs, _, _) = to_callback(&base, "ilse").await;
    let (_, mut mine, _) = to_callback(&base, "ilse").await;
    let crossed = callback(&mut mine, &theirs).await;
    assert_eq!(crossed.status, 400, "{crossed:?}");
    // A made-up state.
    let made_up = visit(
        &mut mine,
        "GET",
        &format!("{base}/login/oidc/callback?code=abc&state=made-up"),
        None,
    )
    .await;
    assert_eq!(made_up.status, 400);

    // Someone of another college, and a student of this one: no session.
    let (other, mut jar, _) = to_callback(&base, "piet").await;
    let other = callback(&mut jar, &other).await;
    assert_eq!(other.status, 403, "{other:?}");
    assert!(
        other.body.contains("hoort bij een andere organisatie"),
        "{}",
        other.body
    );
    let (student, mut jar, _) = to_callback(&base, "sam").await;
    let student = callback(&mut jar, &student).await;
    assert_eq!(student.status, 403);
    assert!(student.body.contains("nog geen rol"), "{}", student.body);
    // The provider said no (the person cancelled there).
    let cancelled = http(
        &base,
        "GET",
        "/login/oidc/callback?error=access_denied&state=x",
        &[("Accept-Language", "nl")],
        b"",
    )
    .await;
    assert_eq!(cancelled.status, 401);
    assert_eq!(sessions().await, 1, "only Ilse's sign-in made a session");

    // Signing out ends the session.
    let page = visit(&mut node, "GET", &format!("{base}/inbox"), None).await;
    let csrf = crate::web::csrf_of(&page.body);
    let out = visit(
        &mut node,
        "POST",
        &format!("{base}/logout"),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(out.status, 303);
    let after = http(&base, "GET", "/inbox", &[("Cookie", &node.header())], b"").await;
    assert_eq!(after.status, 401);
    drop(idp);
}

//! Helpers for the end-to-end tests in `tests/tests/e2e`: a started region, a member's raw
//! credentials (to act as an honest or a dishonest member would), and looks into the stores.
#![forbid(unsafe_code)]

use ed25519_dalek::SigningKey;
use overstap_node::sync::HubLink;
use overstap_proto::config::parse_key_hex;
use overstap_proto::directory::VerifiedDirectory;
use overstap_proto::envelope::EncryptionKeyPair;
use overstap_proto::envelope::{Outgoing, seal};
use overstap_proto::passport::{build_version, select_disclosures};
use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{
    Disclosure, Envelope, EnvelopeKind, HandoverStatus, Member, Package, Payload,
    RegisterStudentRequest, Signed, StorePassportRequest,
};
use overstap_proto::sign::{Domain, sign_message};
use overstap_region::cast::{GEMEENTE, MBO, OTHER_MBO, SCHOOL, demo_orgs};
use overstap_region::passport::{
    Answers, GrantRequest, draft_from_answers, make_grant, upload_grant,
};
use overstap_region::region::Region;
use overstap_region::wallet::Wallet;
use sqlx::Row;
use tonic::transport::Channel;

pub use overstap_region::cast;

pub const ORGS: [&str; 4] = [SCHOOL, MBO, GEMEENTE, OTHER_MBO];

/// A region with the demo's members, in a fresh temporary folder.
pub async fn region() -> (tempfile::TempDir, Region) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let region = Region::start(tmp.path(), &demo_orgs())
        .await
        .expect("region starts");
    (tmp, region)
}

/// A member's own keys and TLS identity, read from its credentials folder.
pub struct Creds {
    pub org: String,
    pub signing: SigningKey,
    pub encryption: EncryptionKeyPair,
    pub link: HubLink,
}

pub fn creds(region: &Region, org: &str) -> Creds {
    let secret = std::fs::read_to_string(region.node_dir(org).join("keys/encryption.key"))
        .expect("encryption key");
    Creds {
        org: org.to_string(),
        signing: region.signing_key(org).expect("signing key"),
        encryption: EncryptionKeyPair::from_secret(&parse_key_hex(&secret, "key").expect("key"))
            .expect("enc key"),
        link: region.hub_link(org).expect("tls identity"),
    }
}

/// A raw hub client with the member's TLS identity: what a (possibly dishonest) member can do.
pub fn hub_client(c: &Creds) -> HubClient<Channel> {
    HubClient::new(c.link.channel().expect("channel"))
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}

pub fn directory(region: &Region) -> VerifiedDirectory {
    region.authority.directory().expect("directory")
}

pub fn member(region: &Region, org: &str) -> Member {
    directory(region).member(org).expect("member").clone()
}

/// A connection to the hub's database, SQLite or PostgreSQL, for looking (or, as a dishonest
/// operator, tampering) behind the hub's back.
pub async fn hub_pool(region: &Region) -> sqlx::AnyPool {
    database_pool(&region.hub_database_url().expect("the hub's database")).await
}

/// Runs one statement with text parameters on the hub's database; returns the rows it changed.
pub async fn hub_execute(region: &Region, sql: &str, binds: &[&str]) -> u64 {
    let pool = hub_pool(region).await;
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let n = q.execute(&pool).await.expect(sql).rows_affected();
    pool.close().await;
    n
}

/// One integer from the hub's database (`$1`, `$2`… take `binds`).
pub async fn hub_scalar(region: &Region, sql: &str, binds: &[&str]) -> i64 {
    let pool = hub_pool(region).await;
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let n = q.fetch_one(&pool).await.expect(sql);
    pool.close().await;
    n
}

/// Whether the region's hub runs on PostgreSQL.
pub fn hub_on_postgres(region: &Region) -> bool {
    overstap_hub::store::is_postgres(&region.hub_database_url().expect("the hub's database"))
}

/// Counts rows in one of the hub's tables.
pub async fn hub_count(region: &Region, table: &str) -> i64 {
    hub_scalar(region, &format!("SELECT COUNT(*) FROM {table}"), &[]).await
}

/// The ids of the envelopes waiting in `org`'s mailbox at the hub, oldest first.
pub async fn hub_mailbox(region: &Region, org: &str) -> Vec<Vec<u8>> {
    let pool = hub_pool(region).await;
    let ids = sqlx::query("SELECT envelope_id FROM mailbox WHERE to_org = $1 ORDER BY seq")
        .bind(org)
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| sqlx::Row::get(r, 0))
        .collect();
    pool.close().await;
    ids
}

/// Counts the envelopes the hub accepted from one member.
pub async fn hub_envelopes_from(region: &Region, org: &str) -> i64 {
    hub_scalar(
        region,
        "SELECT COUNT(*) FROM envelopes WHERE from_org = $1",
        &[org],
    )
    .await
}

/// A connection to `org`'s node's database, SQLite or PostgreSQL, for looking (or, as the
/// node's operator, meddling) behind the node's back.
pub async fn node_pool(region: &Region, org: &str) -> sqlx::AnyPool {
    let url = region.node_database_url(org).expect("the node's database");
    database_pool(&url).await
}

/// A pool of one connection to the database at `url` (SQLite or PostgreSQL).
pub async fn database_pool(url: &str) -> sqlx::AnyPool {
    overstap_region::region::database_pool(url)
        .await
        .expect("open the database")
}

/// Counts rows in one of a node's tables.
pub async fn node_count(region: &Region, org: &str, table: &str) -> i64 {
    let pool = node_pool(region, org).await;
    let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .expect("count")
        .get(0);
    pool.close().await;
    n
}

/// Rows of a node's `processed` table: (outcome, detail).
pub async fn node_processed(region: &Region, org: &str) -> Vec<(String, String)> {
    let pool = node_pool(region, org).await;
    let rows = sqlx::query("SELECT outcome, detail FROM processed ORDER BY processed_at")
        .fetch_all(&pool)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    pool.close().await;
    rows
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A student registered at the school, with passport version 1 (Sam's answers from the demo)
/// signed and stored there. The disclosures of every section are kept, to build packages by hand.
pub struct Student {
    pub wallet: Wallet,
    pub manifest: Signed,
    pub disclosures: Vec<Disclosure>,
}

pub async fn student(region: &Region, birth_month: &str, guardian: Option<&SigningKey>) -> Student {
    let answers: Answers = serde_json::from_str(cast::SAM_ANSWERS).expect("answers");
    student_on(region, birth_month, guardian, "pvs-mbo-v1", &answers).await
}

/// Like [`student`], on the newest mbo set with the school's personalia section filled in:
/// `name` is the student's name a recipient reads where the student shares that section.
pub async fn student_named(region: &Region, birth_month: &str, name: &str) -> Student {
    let mut answers: Answers = serde_json::from_str(cast::SAM_ANSWERS).expect("answers");
    let personalia = serde_json::json!({
        "naam": name,
        "geboortedatum": birth_month,
        "bereikbaar": "via mijn mentor",
    });
    answers.insert(
        "personalia".into(),
        serde_json::from_value(personalia).expect("personalia"),
    );
    student_on(region, birth_month, None, "pvs-mbo-v2", &answers).await
}

async fn student_on(
    region: &Region,
    birth_month: &str,
    guardian: Option<&SigningKey>,
    set_id: &str,
    answers: &Answers,
) -> Student {
    let mut api = region.api(SCHOOL).await.expect("api");
    let key = overstap_proto::sign::generate_signing_key();
    let card = api
        .register_student(RegisterStudentRequest {
            student_key: key.verifying_key().to_bytes().to_vec(),
            birth_month: birth_month.into(),
            guardian_keys: guardian
                .map(|g| vec![g.verifying_key().to_bytes().to_vec()])
                .unwrap_or_default(),
            staff_user: "mentor".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .card
        .expect("card");
    let wallet = Wallet::new(key, card).expect("wallet");
    let draft = draft_from_answers(set_id, answers).expect("draft");
    let sections = overstap_region::passport::to_sections(&draft);
    let version = build_version(&wallet.pseudonym, 1, set_id, now(), &sections).expect("version");
    let mut keys = vec![&wallet.key];
    keys.extend(guardian);
    let manifest = sign_message(Domain::Manifest, &version.manifest, &keys);
    api.store_passport(StorePassportRequest {
        manifest: Some(manifest.clone()),
        sections: version.disclosures.clone(),
    })
    .await
    .expect("store passport");
    Student {
        wallet,
        manifest,
        disclosures: version.disclosures,
    }
}

/// Builds and signs a package by hand, skipping every sender-side check: what a buggy or
/// dishonest school node could send. `sections` are disclosed whatever the grant says.
pub fn package_envelope(
    region: &Region,
    from: &Creds,
    to: &str,
    student: &Student,
    grant: &Signed,
    sections: &[&str],
    purpose: &str,
) -> Envelope {
    let ids: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
    let chosen = select_disclosures(&student.disclosures, &ids).expect("sections");
    let mut envelope_id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut envelope_id);
    seal(
        Outgoing {
            envelope_id,
            from_org: &from.org,
            kind: EnvelopeKind::Package,
            created_at: now(),
            payload: Payload {
                purpose: purpose.into(),
                content: Some(Content::Package(Package {
                    card: Some(student.wallet.card.clone()),
                    manifest: Some(student.manifest.clone()),
                    grant: Some(grant.clone()),
                    sections: chosen,
                })),
                ..Default::default()
            },
        },
        &from.signing,
        &member(region, to),
    )
    .expect("seal")
}

/// Polls `check` every 25 ms for up to 20 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A grant request to `to` for `sections`, valid from a minute ago for `days`.
pub fn grant_request(to: &str, sections: &[&str], purpose: &str, days: i64) -> GrantRequest {
    GrantRequest {
        to: to.into(),
        sections: sections.iter().map(|s| s.to_string()).collect(),
        purpose: purpose.into(),
        not_before: now() - 60,
        not_after: now() + days * 86_400,
        live: false,
        may_fetch: false,
    }
}

/// Makes, signs and uploads a grant at the school; returns its id.
pub async fn grant(
    region: &Region,
    w: &Wallet,
    req: &GrantRequest,
    guardian: Option<&SigningKey>,
) -> String {
    grant_on(region, w, "pvs-mbo-v1", req, guardian).await
}

/// [`grant`] for a passport on the question set `set_id`.
pub async fn grant_on(
    region: &Region,
    w: &Wallet,
    set_id: &str,
    req: &GrantRequest,
    guardian: Option<&SigningKey>,
) -> String {
    let mut api = region.api(SCHOOL).await.expect("api");
    let signed = make_grant(w, set_id, req, guardian, now()).expect("grant");
    upload_grant(&mut api, signed).await.expect("upload")
}

/// A clock the test moves forward: real time plus an offset.
pub use overstap_region::year::MovedClock as TestClock;

/// A region whose nodes run on a clock the test moves.
pub async fn region_with_clock() -> (tempfile::TempDir, Region, TestClock) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let clock = TestClock::default();
    let region = Region::start_with_clock(tmp.path(), &demo_orgs(), clock.as_clock())
        .await
        .expect("region starts");
    (tmp, region, clock)
}

/// The school's view of one grant.
pub async fn handover(region: &Region, grant_id: &str) -> Option<overstap_proto::pb::Handover> {
    let mut api = region.api(SCHOOL).await.expect("api");
    api.handovers(overstap_proto::pb::HandoversRequest {})
        .await
        .expect("handovers")
        .into_inner()
        .handovers
        .into_iter()
        .find(|h| h.grant_id == grant_id)
}

/// The section ids a recipient holds under a grant (empty if it holds nothing).
pub async fn held_sections(region: &Region, org: &str, grant_id: &str) -> Vec<String> {
    let mut api = region.api(org).await.expect("api");
    api.inbox(overstap_proto::pb::InboxRequest {})
        .await
        .expect("inbox")
        .into_inner()
        .items
        .into_iter()
        .find(|i| i.grant_id == grant_id)
        .map(|i| i.sections)
        .unwrap_or_default()
}

/// Sends a grant's package from the school.
pub async fn send(region: &Region, grant_id: &str) -> overstap_proto::pb::SendPassportResponse {
    let mut api = region.api(SCHOOL).await.expect("api");
    api.send_passport(overstap_proto::pb::SendPassportRequest {
        grant_id: grant_id.into(),
        ..Default::default()
    })
    .await
    .expect("send")
    .into_inner()
}

/// Held by the tests that load both cores for a long stretch (the 1,000-package process runs and
/// the model's many regions), so they take turns instead of starving each other's timers.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A status envelope (about a made-up grant), sealed and signed by `from` to `to`.
pub fn status_payload() -> Payload {
    Payload {
        purpose: "intake".into(),
        content: Some(Content::Status(HandoverStatus {
            grant_id: "g-test".into(),
            pseudonym: "pvs-test".into(),
            status: "ontvangen".into(),
            at: 0,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn status_envelope(from: &Creds, to: &overstap_proto::pb::Member) -> Envelope {
    envelope_of_kind(from, to, EnvelopeKind::Status)
}

pub fn envelope_of_kind(
    from: &Creds,
    to: &overstap_proto::pb::Member,
    kind: EnvelopeKind,
) -> Envelope {
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    seal(
        Outgoing {
            envelope_id: id,
            from_org: &from.org,
            kind,
            created_at: now(),
            payload: status_payload(),
        },
        &from.signing,
        to,
    )
    .expect("seal")
}

/// Fetches a Prometheus endpoint over plain HTTP and parses it with [`parse_metrics`]; panics
/// with the reason when the answer is not OpenMetrics text.
pub async fn scrape(url: &str) -> std::collections::BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// url");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut tcp = tokio::net::TcpStream::connect(host).await.expect("connect");
    tcp.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    parse_metrics(body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Parses Prometheus / OpenMetrics text strictly: every line is `# HELP`, `# TYPE`, `# UNIT`, a
/// closing `# EOF`, or a sample `name{label="value",...} number` of a family declared by a
/// `# TYPE` line. Returns the samples keyed by `name{labels}` exactly as written.
pub fn parse_metrics(text: &str) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("the text does not end with # EOF".into());
    }
    let mut families = std::collections::HashSet::new();
    let mut samples = std::collections::BTreeMap::new();
    for (n, line) in lines.iter().enumerate() {
        let bad = |why: &str| Err(format!("line {}: {why}: {line:?}", n + 1));
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("EOF"), None, None) if n + 1 == lines.len() => {}
                (Some("HELP" | "UNIT"), Some(name), _) if valid_name(name) => {}
                (
                    Some("TYPE"),
                    Some(name),
                    Some("counter" | "gauge" | "histogram" | "summary" | "info" | "unknown"),
                ) if valid_name(name) => {
                    families.insert(name.to_string());
                }
                _ => return bad("not a HELP, TYPE, UNIT or final EOF line"),
            }
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            return bad("no value");
        };
        let Ok(value) = value.parse::<f64>() else {
            return bad("the value is not a number");
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => match labels.strip_suffix('}') {
                Some(l) => (name, l),
                None => return bad("labels are not closed"),
            },
            None => (series, ""),
        };
        if !valid_name(name) {
            return bad("not a metric name");
        }
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v))
                    if valid_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {}
                _ => return bad("not a label=\"value\" pair"),
            }
        }
        let family_known = families.iter().any(|f| {
            name == f
                || ["_total", "_bucket", "_count", "_sum", "_created"]
                    .iter()
                    .any(|s| name.strip_prefix(f.as_str()) == Some(s))
        });
        if !family_known {
            return bad("a sample of no declared family");
        }
        samples.insert(series.to_string(), value);
    }
    Ok(samples)
}

/// Admits the regional coordinator `RMC01` and starts its node (its witness and its statistics).
pub async fn admit_coordinator(region: &mut Region) {
    region
        .admit_and_start(overstap_region::region::Org::new(
            overstap_region::cast::COORDINATOR,
            overstap_proto::pb::MemberKind::Coordinator,
            "RMC Zwolle",
        ))
        .await
        .expect("the coordinator is admitted and its node starts");
}

/// A 17-year-old consents to `to` seeing "wie-ben-ik" for an intake, and the school sends it.
/// Returns the grant id.
pub async fn hand_over(region: &Region, to: &str) -> String {
    let s = student(region, &cast::birth_month(17), None).await;
    let id = grant(
        region,
        &s.wallet,
        &grant_request(to, &["wie-ben-ik"], "intake", 30),
        None,
    )
    .await;
    send(region, &id).await;
    id
}

/// The web app's address of `org`'s node (its `web.url`).
pub fn web_url(region: &Region, org: &str) -> String {
    std::fs::read_to_string(region.node_dir(org).join("web.url"))
        .expect("the node serves its web app")
        .trim()
        .to_string()
}

/// An answer of the web app: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to the web app at `base` (`http://127.0.0.1:port`), as a browser would
/// send it but with nothing hidden: the tests of bad input at the web app use it.
pub async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let rest = raw.get(split + 4..).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        unchunk(rest)
    } else {
        rest.to_vec()
    };
    let body = String::from_utf8_lossy(&body).to_string();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn unchunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..end]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let rest = &s[end + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

//! Real processes: the hub and two nodes run as their own binaries, and are killed with SIGKILL
//! in the middle of a transfer of 1,000 packages. Every package must arrive exactly once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use overstap_proto::pb::{MemberKind, NodeStatusRequest, SendPassportRequest};
use overstap_region::authority::Authority;
use overstap_region::client::connect_dir;
use overstap_region::member::{self, Admission};
use overstap_tests::cast::{MBO, SCHOOL, birth_month};
use overstap_tests::*;
use sqlx::Row;
use tokio::process::{Child, Command};

const PACKAGES: usize = 1000;

struct Region {
    dir: PathBuf,
    hub_addr: String,
    hub: Option<Child>,
    nodes: Vec<(String, Child)>,
    /// The hub's database when it is not the SQLite file in `HUB/` (PostgreSQL).
    hub_database: Option<String>,
    /// Each node's database when it is not the SQLite file in its folder (PostgreSQL).
    node_databases: std::collections::BTreeMap<String, String>,
    /// A second hub process over the same database: its address and process.
    replica: Option<(String, Child)>,
}

fn admit(auth: &Authority, dir: &Path, org: &str, kind: MemberKind) {
    member::join(
        auth,
        &Admission {
            org_id: org.into(),
            kind,
            name: org.into(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            hub_url: "https://127.0.0.1:1".into(),
            hub_name: "localhost".into(),
            listen: "127.0.0.1:0".into(),
            out: dir.join(org),
        },
    )
    .unwrap();
}

impl Region {
    /// A region on SQLite, or on PostgreSQL when `OVERSTAP_TEST_POSTGRES` names a server.
    async fn start(dir: &Path) -> Region {
        let hub = overstap_region::region::test_postgres_database("the hub")
            .await
            .unwrap();
        Self::start_on(dir, hub).await
    }

    /// A region whose hub keeps its data in `hub_database` (PostgreSQL), or in SQLite. The
    /// nodes are on PostgreSQL when `OVERSTAP_TEST_POSTGRES` names a server.
    async fn start_on(dir: &Path, hub_database: Option<String>) -> Region {
        let auth = Authority::init(&dir.join("authority"), "proc").unwrap();
        admit(&auth, dir, "HUB", MemberKind::Hub);
        admit(&auth, dir, SCHOOL, MemberKind::School);
        admit(&auth, dir, MBO, MemberKind::Mbo);
        std::fs::copy(
            dir.join("authority/directory.signed"),
            dir.join("HUB/directory.signed"),
        )
        .unwrap();
        let mut r = Region {
            dir: dir.to_path_buf(),
            hub_addr: String::new(),
            hub: None,
            nodes: Vec::new(),
            hub_database,
            node_databases: Default::default(),
            replica: None,
        };
        for org in [SCHOOL, MBO] {
            if let Some(url) = overstap_region::region::test_postgres_database(org)
                .await
                .unwrap()
            {
                r.node_databases.insert(org.to_string(), url);
            }
        }
        r.start_hub("127.0.0.1:0").await;
        for org in [SCHOOL, MBO] {
            r.start_node(org).await;
        }
        r
    }

    async fn start_hub(&mut self, listen: &str) {
        let (child, addr) = self.spawn_hub("HUB", listen).await;
        self.hub = Some(child);
        self.hub_addr = addr;
    }

    /// Starts a second hub process on the same settings and database.
    async fn start_replica(&mut self) -> String {
        let (child, addr) = self.spawn_hub("HUB-B", "127.0.0.1:0").await;
        self.replica = Some((addr.clone(), child));
        addr
    }

    /// Starts a hub process that logs to `part.log`; returns it and the address it bound.
    async fn spawn_hub(&self, part: &str, listen: &str) -> (Child, String) {
        let addr_file = self.dir.join(format!("{part}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let mut command = Command::new(env!("CARGO_BIN_EXE_hub-under-test"));
        command
            .arg("--config")
            .arg(self.dir.join("HUB/hub.toml"))
            .arg("--listen")
            .arg(listen)
            .arg("--addr-file")
            .arg(&addr_file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log_file(part))
            .kill_on_drop(true);
        if let Some(url) = &self.hub_database {
            command.env("OVERSTAP_DATABASE_URL", url);
        }
        let child = command.spawn().expect("the hub starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && !a.trim().is_empty()
            {
                return (child, a.trim().to_string());
            }
            assert!(Instant::now() < deadline, "the hub did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a line of `part`'s log contains `text`.
    async fn wait_log(&self, part: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{part}.log"))).unwrap_or_default();
            if log.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{part} never logged {text:?}\n{}",
                self.report().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The hub's database, SQLite or PostgreSQL, read-only in spirit.
    async fn hub_pool(&self) -> sqlx::AnyPool {
        let url = match &self.hub_database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.dir.join("HUB/hub.db").display()),
        };
        database_pool(&url).await
    }

    /// `org`'s node's database, SQLite or PostgreSQL.
    async fn node_pool(&self, org: &str) -> sqlx::AnyPool {
        let url = match self.node_databases.get(org) {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.dir.join(org).join("node.db").display()),
        };
        database_pool(&url).await
    }

    async fn start_node(&mut self, org: &str) {
        let hub = self.hub_addr.clone();
        self.start_node_on(org, &hub).await;
    }

    /// Starts a member's node connected to the hub at `hub` (`host:port`).
    async fn start_node_on(&mut self, org: &str, hub: &str) {
        let _ = std::fs::remove_file(self.dir.join(org).join("api.url"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_node-under-test"));
        if let Some(url) = self.node_databases.get(org) {
            command.env("OVERSTAP_DATABASE_URL", url);
        }
        let child = command
            .arg("--config")
            .arg(self.dir.join(org).join("node.toml"))
            .env("OVERSTAP_HUB_URL", format!("https://{hub}"))
            .env("OVERSTAP_DIRECTORY_INTERVAL_SECS", "1")
            .env("RUST_LOG", "info,overstap_node=debug")
            .stdout(Stdio::null())
            .stderr(self.log_file(org))
            .kill_on_drop(true)
            .spawn()
            .expect("the node starts");
        self.nodes.push((org.to_string(), child));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut api) = connect_dir(&self.dir.join(org)).await
                && let Ok(s) = api.status(NodeStatusRequest {}).await
                && s.into_inner().directory_version > 0
            {
                return;
            }
            assert!(Instant::now() < deadline, "node {org} did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    async fn kill_node(&mut self, org: &str) {
        let i = self.nodes.iter().position(|(o, _)| o == org).unwrap();
        let (_, mut child) = self.nodes.remove(i);
        child.kill().await.unwrap();
    }

    async fn kill_hub(&mut self) {
        self.hub.take().unwrap().kill().await.unwrap();
    }

    async fn inbox_count(&self, org: &str) -> u64 {
        match connect_dir(&self.dir.join(org)).await {
            Ok(mut api) => api
                .status(NodeStatusRequest {})
                .await
                .map(|s| s.into_inner().inbox_count)
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Each process's log, appended to across restarts, for [`Region::report`].
    fn log_file(&self, part: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{part}.log")))
            .expect("a log file")
    }

    async fn wait_inbox(&self, org: &str, at_least: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let n = self.inbox_count(org).await;
            if n >= at_least {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{org} holds {n} of {at_least} after {within:?}\n{}",
                    self.report().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What each part holds and the end of each log: what a person needs when a wait fails.
    async fn report(&self) -> String {
        let mut out = String::new();
        let hub = self.hub_pool().await;
        match sqlx::query_scalar::<_, String>(
            "SELECT 'hub: envelopes ' || (SELECT COUNT(*) FROM envelopes) || ', in mailboxes ' || (SELECT COUNT(*) FROM mailbox)",
        )
        .fetch_one(&hub)
        .await
        {
            Ok(line) => out.push_str(&format!("{line}\n")),
            Err(e) => out.push_str(&format!("hub: {e}\n")),
        }
        hub.close().await;
        let school = self.node_pool(SCHOOL).await;
        match sqlx::query("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
            .fetch_all(&school)
            .await
        {
            Ok(rows) => {
                let states: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{}={}", r.get::<String, _>(0), r.get::<i64, _>(1)))
                    .collect();
                out.push_str(&format!("school outbox by state: {}\n", states.join(", ")));
            }
            Err(e) => out.push_str(&format!("school: {e}\n")),
        }
        school.close().await;
        let mbo = self.node_pool(MBO).await;
        let mut counts = Vec::new();
        for table in ["received", "held", "processed"] {
            match sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mbo)
                .await
            {
                Ok(n) => counts.push(format!("{table} {n}")),
                Err(e) => counts.push(format!("{table}: {e}")),
            }
        }
        out.push_str(&format!("mbo: {}\n", counts.join(", ")));
        mbo.close().await;
        for part in ["HUB", "HUB-B", SCHOOL, MBO] {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{part}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- last lines of the {part} log ---\n"));
            for l in &lines[lines.len().saturating_sub(25)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Registers a student with a signed passport and gives `n` grants to the mbo college.
async fn make_grants(dir: &Path, n: usize) -> Vec<String> {
    make_grants_that(dir, n, false).await
}

/// [`make_grants`], with grants that let the college fetch (`may_fetch`) or not.
async fn make_grants_that(dir: &Path, n: usize, may_fetch: bool) -> Vec<String> {
    let mut api = connect_dir(&dir.join(SCHOOL)).await.unwrap();
    let key = overstap_proto::sign::generate_signing_key();
    let card = api
        .register_student(overstap_proto::pb::RegisterStudentRequest {
            student_key: key.verifying_key().to_bytes().to_vec(),
            birth_month: birth_month(17),
            guardian_keys: vec![],
            staff_user: "mentor".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .card
        .unwrap();
    let wallet = overstap_region::wallet::Wallet::new(key, card).unwrap();
    let answers: overstap_region::passport::Answers =
        serde_json::from_str(cast::SAM_ANSWERS).unwrap();
    let draft = overstap_region::passport::draft_from_answers("pvs-mbo-v1", &answers).unwrap();
    overstap_region::passport::sign_passport(&mut api, &wallet, &draft, None, now())
        .await
        .unwrap();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = grant_request(MBO, &["wie-ben-ik", "wat-heb-ik-nodig"], "intake", 30);
        req.may_fetch = may_fetch;
        let signed =
            overstap_region::passport::make_grant(&wallet, "pvs-mbo-v1", &req, None, now())
                .unwrap();
        ids.push(
            overstap_region::passport::upload_grant(&mut api, signed)
                .await
                .unwrap(),
        );
    }
    ids
}

/// Registers a student and queues one package per grant, `n` grants.
async fn queue_packages(dir: &Path, n: usize) -> Vec<String> {
    let ids = make_grants(dir, n).await;
    let mut api = connect_dir(&dir.join(SCHOOL)).await.unwrap();
    for id in &ids {
        api.send_passport(SendPassportRequest {
            grant_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    ids
}

/// Every package arrived, exactly once, and nothing is left in flight.
async fn check_exactly_once(r: &Region, ids: &[String]) {
    let mbo = r.node_pool(MBO).await;
    let stored: Vec<String> = sqlx::query("SELECT detail FROM processed WHERE outcome = 'stored'")
        .fetch_all(&mbo)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored.len(), ids.len(), "each package imported once");
    let mut sorted = stored.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no grant imported twice");
    let received: i64 = sqlx::query("SELECT COUNT(*) FROM received")
        .fetch_one(&mbo)
        .await
        .unwrap()
        .get(0);
    assert_eq!(received as usize, ids.len());
    for id in ids {
        assert!(sorted.binary_search(id).is_ok(), "grant {id} never arrived");
    }
    mbo.close().await;
    let hub = r.hub_pool().await;
    let accepted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM envelopes WHERE from_org = $1 AND kind = 1")
            .bind(SCHOOL)
            .fetch_one(&hub)
            .await
            .unwrap();
    assert_eq!(
        accepted as usize,
        ids.len(),
        "the hub stored each package once"
    );
    hub.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_ingest_loses_nothing_and_imports_nothing_twice() {
    let _turn = HEAVY.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Region::start(tmp.path()).await;
    let started = Instant::now();
    let ids = queue_packages(tmp.path(), PACKAGES).await;
    r.wait_inbox(MBO, 200, Duration::from_secs(120)).await;
    r.kill_node(MBO).await;
    let at_kill = r.inbox_count(MBO).await;
    r.start_node(MBO).await;
    r.wait_inbox(MBO, PACKAGES as u64, Duration::from_secs(300))
        .await;
    println!(
        "{PACKAGES} packages, recipient killed once, all in after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let _ = at_kill;
    check_exactly_once(&r, &ids).await;
}

/// The college pulls 200 passports; the school is killed (SIGKILL) while it answers, then the
/// college while it takes them in. Each pull is answered once and each passport stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_cut_off_by_killed_nodes_are_answered_once_and_stored_once() {
    const PULLS: usize = 200;
    let _turn = HEAVY.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Region::start(tmp.path()).await;
    let ids = make_grants_that(tmp.path(), PULLS, true).await;
    let mbo = r.node_pool(MBO).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let notices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fetchable")
            .fetch_one(&mbo)
            .await
            .unwrap();
        if notices as usize == PULLS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{notices} of {PULLS} notices in 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut college = connect_dir(&tmp.path().join(MBO)).await.unwrap();
    for id in &ids {
        college
            .fetch_passport(overstap_proto::pb::FetchPassportRequest {
                grant_id: id.clone(),
                staff_user: "intake.jansen".into(),
            })
            .await
            .unwrap();
    }
    r.wait_inbox(MBO, 20, Duration::from_secs(120)).await;
    r.kill_node(SCHOOL).await;
    r.start_node(SCHOOL).await;
    r.wait_inbox(MBO, 100, Duration::from_secs(180)).await;
    r.kill_node(MBO).await;
    r.start_node(MBO).await;
    r.wait_inbox(MBO, PULLS as u64, Duration::from_secs(300))
        .await;
    check_exactly_once(&r, &ids).await;
    // Each pull was answered once: one fetch in the school's trail per grant.
    let school = r.node_pool(SCHOOL).await;
    let fetched: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM trail WHERE event = 'fetched'")
        .fetch_one(&school)
        .await
        .unwrap();
    assert_eq!(fetched as usize, PULLS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_transfer_loses_nothing_and_resumes_where_it_was() {
    let _turn = HEAVY.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Region::start(tmp.path()).await;
    let started = Instant::now();
    let ids = queue_packages(tmp.path(), PACKAGES).await;
    r.wait_inbox(MBO, 200, Duration::from_secs(120)).await;
    r.kill_hub().await;
    let addr = r.hub_addr.clone();
    r.start_hub(&addr).await;
    r.wait_inbox(MBO, PACKAGES as u64, Duration::from_secs(300))
        .await;
    println!(
        "{PACKAGES} packages, hub killed once, all in after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_exactly_once(&r, &ids).await;
}

/// `overstap send` of a whole class, as a person runs it, is cut off by the school's node dying
/// (SIGKILL) mid-way: it says which grants it knows went, and that running it again is safe.
/// The same command run again seals only what was not sealed and names the rest as sent
/// already, and each passport arrives once: the hub carried one package per grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_off_by_a_killed_node_is_finished_by_running_it_again_and_sends_each_passport_once()
 {
    let _turn = HEAVY.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Region::start(tmp.path()).await;
    let ids = make_grants(tmp.path(), PACKAGES).await;
    let send = || {
        let mut cli = Command::new(env!("CARGO_BIN_EXE_overstap-under-test"));
        cli.arg("send")
            .arg("--node-dir")
            .arg(tmp.path().join(SCHOOL))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for id in &ids {
            cli.arg("--grant").arg(id);
        }
        cli
    };
    let school = r.node_pool(SCHOOL).await;
    let packages = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE kind = 1")
            .fetch_one(&school)
            .await
            .unwrap() as usize
    };
    let cli = send().spawn().expect("the CLI starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while packages().await == 0 {
        assert!(Instant::now() < deadline, "nothing was sealed within 60 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    r.kill_node(SCHOOL).await;
    let cut = cli.wait_with_output().await.unwrap();
    let (said, told) = (
        String::from_utf8_lossy(&cut.stdout),
        String::from_utf8_lossy(&cut.stderr),
    );
    assert!(!cut.status.success(), "{said}{told}");
    assert!(told.contains("the node stopped answering"), "{told}");
    assert!(told.contains("Run the same command again"), "{told}");
    let sealed = packages().await;
    assert!(
        sealed > 0 && sealed < PACKAGES,
        "the kill came mid-way: {sealed} of {PACKAGES} sealed"
    );
    // What the CLI printed as sealed was sealed: each line names a grant that went.
    let printed = said.lines().filter(|l| l.contains(": Sealed for")).count();
    assert!(
        printed <= sealed,
        "{printed} printed as sealed, {sealed} are"
    );

    r.start_node(SCHOOL).await;
    let again = send().output().await.unwrap();
    let (said, told) = (
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr),
    );
    assert!(again.status.success(), "{said}{told}");
    let already = said.lines().filter(|l| l.contains("already")).count();
    assert_eq!(
        already,
        sealed + 1,
        "one line per grant sealed before, and the sum"
    );
    assert!(
        said.contains(&format!(
            "{sealed} of {PACKAGES} passports had been sent already"
        )),
        "{said}"
    );
    assert_eq!(packages().await, PACKAGES, "each grant sealed once");
    school.close().await;
    r.wait_inbox(MBO, PACKAGES as u64, Duration::from_secs(300))
        .await;
    check_exactly_once(&r, &ids).await;
}

/// The log as a node sees it: (verified size, proven, unproven, alarm).
async fn log_view(dir: &Path, org: &str) -> (u64, u64, u64, bool) {
    match connect_dir(&dir.join(org)).await {
        Ok(mut api) => match api
            .log_status(overstap_proto::pb::LogStatusRequest {})
            .await
        {
            Ok(s) => {
                let s = s.into_inner();
                (s.size, s.proven, s.unproven, s.alarm)
            }
            Err(_) => (0, 0, 0, false),
        },
        Err(_) => (0, 0, 0, false),
    }
}

/// Two hub processes serve one region over one PostgreSQL database. The school sends through
/// one and the mbo college subscribes at the other, so every package crosses from replica to
/// replica (LISTEN/NOTIFY: nothing polls). Mid-load, the replica that is the log's sequencer is
/// killed with SIGKILL; the school moves to the other replica, which takes over the sequencer's
/// lease. Every package arrives exactly once, and the log stays one consistent tree: neither
/// node raises an alarm, and each proves every envelope it sent or received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hub_replicas_on_postgres_share_a_region_and_survive_the_sequencer_being_killed() {
    // Hub replicas share one PostgreSQL database; `./test` runs this in its PostgreSQL pass and
    // leaves it out of the SQLite pass by name. Without a server it fails rather than pass.
    let admin = std::env::var(overstap_region::region::TEST_POSTGRES)
        .expect("hub replicas need PostgreSQL: set OVERSTAP_TEST_POSTGRES (./test does)");
    let _turn = HEAVY.lock().await;
    const N: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let url = overstap_hub::store::fresh_postgres_database(&admin)
        .await
        .unwrap();
    let mut r = Region::start_on(tmp.path(), Some(url)).await;
    r.wait_log("HUB", "now the log's sequencer").await;
    let replica = r.start_replica().await;
    r.kill_node(MBO).await;
    r.start_node_on(MBO, &replica).await;

    let started = Instant::now();
    let ids = queue_packages(tmp.path(), N).await;
    r.wait_inbox(MBO, 60, Duration::from_secs(120)).await;
    // The sequencer dies mid-load; the school reconnects to the replica that is left.
    r.kill_hub().await;
    r.kill_node(SCHOOL).await;
    r.start_node_on(SCHOOL, &replica).await;
    r.wait_log("HUB-B", "now the log's sequencer").await;
    r.wait_inbox(MBO, N as u64, Duration::from_secs(300)).await;
    println!(
        "{N} packages across two hub replicas, the sequencer killed once, all in after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_exactly_once(&r, &ids).await;

    // One log: every event integrated by the new sequencer, and both nodes verified the tree
    // they saw before the kill extends to the one they see now.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let school = log_view(tmp.path(), SCHOOL).await;
        let mbo = log_view(tmp.path(), MBO).await;
        // Read after the views: the log only grows.
        let hub = r.hub_pool().await;
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&hub)
            .await
            .unwrap();
        hub.close().await;
        assert!(
            !school.3 && !mbo.3,
            "a log alarm: school {school:?}, mbo {mbo:?}"
        );
        if school.2 == 0 && mbo.2 == 0 && school.1 >= N as u64 && mbo.1 >= N as u64 {
            assert!(school.0 <= events as u64 && mbo.0 <= events as u64);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every envelope proven: school {school:?}, mbo {mbo:?}\n{}",
            r.report().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

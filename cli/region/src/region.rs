//! A whole region in one process: the authority, the hub and member nodes, each on
//! `127.0.0.1:0` with its own SQLite file under one folder (or, when `OVERSTAP_TEST_POSTGRES`
//! names a server, its own PostgreSQL database). The demo tells its story on one; the end-to-end
//! tests run on one. Nodes can be stopped and started again, as in real life.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use overstap_proto::pb::{MemberKind, NodeStatusRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authority::Authority;
use crate::client::{Api, connect_dir};
use crate::member::{self, Admission};

/// A running process-like part of the region, with its own stop switch.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(
        f: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, mut rx) = watch::channel(false);
        let signal = Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        });
        Running {
            stop,
            task: tokio::spawn(f(signal)),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(joined) => joined.context("task panicked")?,
            Err(_) => bail!("did not stop within 10 s"),
        }
    }
}

/// One member organisation to admit.
#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub kind: MemberKind,
    pub name: String,
}

impl Org {
    pub fn new(id: &str, kind: MemberKind, name: &str) -> Self {
        Org {
            id: id.into(),
            kind,
            name: name.into(),
        }
    }
}

/// The environment variable that puts the hub and the nodes of every region on PostgreSQL: a
/// server URL such as `postgres://postgres@127.0.0.1:5432/test`, next to which the hub and each
/// node get a fresh database.
pub const TEST_POSTGRES: &str = "OVERSTAP_TEST_POSTGRES";

/// A fresh database next to the one [`TEST_POSTGRES`] names, for `part` (named in the error), or
/// `None` when it names none.
pub async fn test_postgres_database(part: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(TEST_POSTGRES) {
        Ok(admin) => Ok(Some(
            overstap_hub::store::fresh_postgres_database(&admin)
                .await
                .with_context(|| format!("making a database for {part} ({TEST_POSTGRES})"))?,
        )),
        Err(_) => Ok(None),
    }
}

/// The database of `org`'s node in the region kept in `dir`: the `sqlite://` URL of its
/// `node.db`, or the `postgres://` URL its settings name.
pub fn node_database_url(dir: &Path, org: &str) -> anyhow::Result<String> {
    let settings = overstap_node::Settings::load(&dir.join(org).join("node.toml"))?;
    Ok(settings.resolve()?.database_url)
}

/// The database of the hub of the region kept in `dir` (see [`Region::hub_database_url`]).
pub fn hub_database_url(dir: &Path) -> anyhow::Result<String> {
    let settings = overstap_hub::Settings::load(Some(&dir.join("hub").join("hub.toml")))?;
    Ok(settings.resolve()?.database_url)
}

/// Every byte the hub of the region in `dir` keeps (see [`database_contents`]), to search for
/// what the hub must never hold.
pub async fn hub_contents(dir: &Path) -> anyhow::Result<Vec<u8>> {
    database_contents(&hub_database_url(dir)?).await
}

/// Every byte `org`'s node in the region in `dir` keeps (see [`database_contents`]).
pub async fn node_contents(dir: &Path, org: &str) -> anyhow::Result<Vec<u8>> {
    database_contents(&node_database_url(dir, org)?).await
}

/// Reads every file of a SQLite database (main file, write-ahead log and its index), each in a
/// child process (`cat`). Never with `std::fs::read` in this process: closing any descriptor of
/// a file drops every POSIX lock the process holds on that file (SQLite's documented pitfall),
/// so a hub or node running in this process would lose its locks, and an outside reader that
/// then believes it is alone rebuilds the `-shm` index under it: SIGBUS, or a corrupt database.
/// `metadata` is a `stat`, which opens nothing.
async fn sqlite_file_bytes(db: &Path) -> anyhow::Result<Vec<u8>> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        if std::fs::metadata(&path).is_err() {
            continue;
        }
        let out = tokio::process::Command::new("cat")
            .arg("--")
            .arg(&path)
            .output()
            .await
            .context("starting cat to read a SQLite file")?;
        // The write-ahead log may be gone by now (the last connection closed); the rest is not.
        if out.status.success() {
            all.extend(out.stdout);
        } else if suffix.is_empty() {
            bail!(
                "reading {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(all)
}

/// A pool of one connection to the database at `url`, SQLite or PostgreSQL, for looking
/// behind a hub's or a node's back (tests and load runs).
pub async fn database_pool(url: &str) -> anyhow::Result<sqlx::AnyPool> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::pool::PoolOptions::<sqlx::Any>::new()
        .max_connections(1)
        .connect(url)
        .await?)
}

/// Every byte a database keeps: a SQLite file with its write-ahead log, or every row of every
/// table of a PostgreSQL database (binary columns as they are stored, text as UTF-8).
pub async fn database_contents(url: &str) -> anyhow::Result<Vec<u8>> {
    if !overstap_hub::store::is_postgres(url) {
        let path = url.trim_start_matches("sqlite://");
        let path = path.split('?').next().unwrap_or(path);
        return sqlite_file_bytes(Path::new(path)).await;
    }
    use sqlx::Row;
    let pool = sqlx::PgPool::connect(url).await?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&pool)
            .await?;
    let mut all = Vec::new();
    for table in tables {
        for row in sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&pool)
            .await?
        {
            for i in 0..row.len() {
                if let Ok(b) = row.try_get::<Vec<u8>, _>(i) {
                    all.extend(b);
                } else if let Ok(Some(t)) = row.try_get::<Option<String>, _>(i) {
                    all.extend(t.into_bytes());
                } else if let Ok(Some(n)) = row.try_get::<Option<i64>, _>(i) {
                    all.extend(n.to_string().into_bytes());
                }
            }
        }
    }
    pool.close().await;
    Ok(all)
}

/// How many times longer the region's background intervals are (1: as set below). A program
/// run under valgrind goes some fifty times slower; its background rounds (the log check,
/// directory fetches, the reaper, the hub's sequencer, the WAL checkpointers) are stretched as
/// much, so they come as often per envelope as at full speed and the instructions counted are
/// those of the work.
static BACKGROUND_SCALE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Stretches the background intervals of every region started after this (see
/// [`BACKGROUND_SCALE`]); for `overstap bench handover --callgrind`.
pub fn stretch_background(times: u32) {
    BACKGROUND_SCALE.store(times.max(1), std::sync::atomic::Ordering::Relaxed);
    overstap_hub::sqlite_pool::stretch_checkpoints(times);
    overstap_node::sqlite_pool::stretch_checkpoints(times);
}

fn stretched(d: Duration) -> Duration {
    d * BACKGROUND_SCALE.load(std::sync::atomic::Ordering::Relaxed)
}

pub struct Region {
    pub dir: PathBuf,
    pub authority: Authority,
    pub hub_url: String,
    hub_addr: std::net::SocketAddr,
    hub: Option<Running>,
    /// More hub processes' worth of service on the same database (PostgreSQL), each on an
    /// address of its own.
    replicas: Vec<Running>,
    nodes: BTreeMap<String, Running>,
    pub orgs: Vec<Org>,
    clock: overstap_node::Clock,
    hub_log: bool,
    hub_limits: Option<overstap_hub::limits::Limits>,
}

impl Region {
    /// Sets up the authority, admits a hub and `orgs`, and starts them all.
    pub async fn start(dir: &Path, orgs: &[Org]) -> anyhow::Result<Self> {
        Self::start_with_clock(dir, orgs, overstap_node::system_clock()).await
    }

    /// Like [`Region::start`], with the hub and every node on the given clock (tests and the year demo move time).
    pub async fn start_with_clock(
        dir: &Path,
        orgs: &[Org],
        clock: overstap_node::Clock,
    ) -> anyhow::Result<Self> {
        let region = Self::start_hub_only(dir, orgs, clock, true).await?;
        region.start_nodes().await
    }

    /// Starts every member's node (after [`Region::start_hub_with_database`]).
    pub async fn start_nodes(mut self) -> anyhow::Result<Self> {
        for org in self.orgs.clone() {
            self.start_node(&org.id).await?;
        }
        Ok(self)
    }

    /// The authority and the hub, with `orgs` admitted but no node started (for load runs that
    /// act as the members themselves). `log` switches the hub's log integration.
    pub async fn start_hub_only(
        dir: &Path,
        orgs: &[Org],
        clock: overstap_node::Clock,
        log: bool,
    ) -> anyhow::Result<Self> {
        // The tests and load runs put the hub on PostgreSQL when OVERSTAP_TEST_POSTGRES names a
        // server: a fresh database for each region (and each node, see `start_node`).
        let database = test_postgres_database("the hub").await?;
        Self::start_hub_with_database(dir, orgs, clock, log, database).await
    }

    /// [`Region::start_hub_only`] with the hub's database chosen here: `None` for SQLite in the
    /// hub's folder, or a `postgres://` URL.
    pub async fn start_hub_with_database(
        dir: &Path,
        orgs: &[Org],
        clock: overstap_node::Clock,
        log: bool,
        database: Option<String>,
    ) -> anyhow::Result<Self> {
        let authority = Authority::init(&dir.join("authority"), "demo")?;
        // Bind first, so the nodes' settings can name the hub's real address.
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let hub_addr = listener.local_addr()?;
        let hub_url = format!("https://{hub_addr}");
        member::join(
            &authority,
            &Admission {
                org_id: "HUB".into(),
                kind: MemberKind::Hub,
                name: "Regionale hub".into(),
                hosts: vec!["localhost".into(), "127.0.0.1".into()],
                hub_url: hub_url.clone(),
                hub_name: "localhost".into(),
                listen: hub_addr.to_string(),
                out: dir.join("hub"),
            },
        )?;
        for org in orgs {
            member::join(
                &authority,
                &Admission {
                    org_id: org.id.clone(),
                    kind: org.kind,
                    name: org.name.clone(),
                    hosts: vec![],
                    hub_url: hub_url.clone(),
                    hub_name: "localhost".into(),
                    listen: String::new(),
                    out: dir.join(&org.id),
                },
            )?;
        }
        if let Some(url) = database {
            let toml = dir.join("hub").join("hub.toml");
            let text = std::fs::read_to_string(&toml)?.replace(
                "database_url = \"sqlite://hub.db\"",
                &format!("database_url = \"{url}\""),
            );
            std::fs::write(&toml, text)?;
        }
        let mut region = Region {
            dir: dir.to_path_buf(),
            authority,
            hub_url,
            hub_addr,
            hub: None,
            replicas: Vec::new(),
            nodes: BTreeMap::new(),
            orgs: orgs.to_vec(),
            clock,
            hub_log: true,
            hub_limits: None,
        };
        region.hub_log = log;
        region.start_hub_on(listener).await?;
        Ok(region)
    }

    /// The hub's SQLite file (and its write-ahead log beside it).
    pub fn hub_db(&self) -> PathBuf {
        self.dir.join("hub").join("hub.db")
    }

    /// The hub's database: `postgres://…` when the region runs it on PostgreSQL, otherwise the
    /// `sqlite://` URL of [`Region::hub_db`].
    pub fn hub_database_url(&self) -> anyhow::Result<String> {
        hub_database_url(&self.dir)
    }

    /// Where the hub (`"hub"`) or a member's node serves its Prometheus metrics.
    pub fn metrics_url(&self, part: &str) -> anyhow::Result<String> {
        let file = self.dir.join(part).join("metrics.addr");
        let addr = std::fs::read_to_string(&file)
            .with_context(|| format!("{part} serves no metrics ({} is missing)", file.display()))?;
        Ok(format!("http://{}/metrics", addr.trim()))
    }

    /// Where the hub serves the coordinators' dashboard.
    pub fn dashboard_url(&self) -> anyhow::Result<String> {
        let file = self.dir.join("hub").join("dashboard.addr");
        let addr = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "the hub serves no dashboard ({} is missing)",
                file.display()
            )
        })?;
        Ok(format!("https://{}/", addr.trim()))
    }

    pub fn node_dir(&self, org: &str) -> PathBuf {
        self.dir.join(org)
    }

    /// `org`'s node's database (see [`node_database_url`]).
    pub fn node_database_url(&self, org: &str) -> anyhow::Result<String> {
        node_database_url(&self.dir, org)
    }

    /// Puts `org`'s node on a fresh PostgreSQL database when [`TEST_POSTGRES`] names a server and
    /// its settings still name SQLite (the first start; a restart keeps its database).
    async fn node_database(&self, org: &str) -> anyhow::Result<()> {
        let toml = self.node_dir(org).join("node.toml");
        let text = std::fs::read_to_string(&toml)
            .with_context(|| format!("reading {}", toml.display()))?;
        let sqlite = "database_url = \"sqlite://node.db\"";
        if !text.contains(sqlite) {
            return Ok(());
        }
        if let Some(url) = test_postgres_database(&format!("node {org}")).await? {
            std::fs::write(
                &toml,
                text.replace(sqlite, &format!("database_url = \"{url}\"")),
            )?;
        }
        Ok(())
    }

    /// The hub's resolved settings, with the authority's current directory.
    fn hub_config(&self) -> anyhow::Result<overstap_hub::HubConfig> {
        let settings = overstap_hub::Settings::load(Some(&self.dir.join("hub").join("hub.toml")))?;
        let mut config = settings.resolve()?;
        config.directory = Some(self.authority.signed_directory()?);
        config.integrate_log = self.hub_log;
        config.integrate_every = stretched(config.integrate_every);
        config.clock = overstap_hub::service::Clock(self.clock.clone());
        if let Some(limits) = self.hub_limits {
            config.limits = limits;
        }
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.metrics_addr_file = Some(self.dir.join("hub").join("metrics.addr"));
        config.dashboard_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.dashboard_addr_file = Some(self.dir.join("hub").join("dashboard.addr"));
        Ok(config)
    }

    async fn start_hub_on(&mut self, listener: TcpListener) -> anyhow::Result<()> {
        let config = self.hub_config()?;
        // The side ports are bound anew on each start: the files must not name the last ones.
        let announced: Vec<PathBuf> = [&config.metrics_addr_file, &config.dashboard_addr_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for file in &announced {
            let _ = std::fs::remove_file(file);
        }
        self.hub = Some(Running::spawn(move |stop| {
            overstap_hub::serve(config, listener, stop)
        }));
        // A hub that fails to start says so through its task; the wait is only for the files.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while announced.iter().any(|f| !f.exists()) && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Starts one more hub replica on the hub's database (which must be PostgreSQL for two to
    /// share it), on an address of its own, and returns its URL. The hub's certificate names
    /// 127.0.0.1, so members reach it with the same TLS link. It stops with the region.
    pub async fn start_hub_replica(&mut self) -> anyhow::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://{}", listener.local_addr()?);
        let mut config = self.hub_config()?;
        config.metrics_addr_file = None;
        config.dashboard_addr_file = None;
        config.metrics_listen = None;
        config.dashboard_listen = None;
        self.replicas.push(Running::spawn(move |stop| {
            overstap_hub::serve(config, listener, stop)
        }));
        Ok(url)
    }

    /// Stops the hub if it runs and starts `run` in its place, on the hub's address with the
    /// hub's settings: the tests put a dishonest hub in the region this way.
    pub async fn run_hub_with<F, Fut>(&mut self, run: F) -> anyhow::Result<()>
    where
        F: FnOnce(
            overstap_hub::HubConfig,
            TcpListener,
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        if self.hub.is_some() {
            self.stop_hub().await?;
        }
        let listener = TcpListener::bind(self.hub_addr).await?;
        let config = self.hub_config()?;
        self.hub = Some(Running::spawn(move |stop| run(config, listener, stop)));
        Ok(())
    }

    /// Restarts the hub with other limits under abuse (tests make them small).
    pub async fn set_hub_limits(
        &mut self,
        limits: overstap_hub::limits::Limits,
    ) -> anyhow::Result<()> {
        self.hub_limits = Some(limits);
        self.restart_hub().await
    }

    /// Stops the hub (gracefully) and starts it again on the same address.
    pub async fn restart_hub(&mut self) -> anyhow::Result<()> {
        self.stop_hub().await?;
        self.start_hub().await
    }

    pub async fn stop_hub(&mut self) -> anyhow::Result<()> {
        match self.hub.take() {
            Some(h) => h.stop().await,
            None => bail!("the hub is not running"),
        }
    }

    /// Starts the hub again on its address.
    pub async fn start_hub(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.hub_addr).await?;
        self.start_hub_on(listener).await
    }

    pub async fn start_node(&mut self, org: &str) -> anyhow::Result<()> {
        if self.nodes.contains_key(org) {
            bail!("node {org} is already running");
        }
        self.node_database(org).await?;
        let settings = overstap_node::Settings::load(&self.node_dir(org).join("node.toml"))?;
        let mut config = settings.resolve()?;
        config.directory_interval = stretched(Duration::from_millis(500));
        config.reaper_interval = stretched(Duration::from_millis(200));
        config.log_interval = stretched(Duration::from_millis(300));
        config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.metrics_addr_file = Some(self.node_dir(org).join("metrics.addr"));
        let clock = self.clock.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let _ = std::fs::remove_file(self.node_dir(org).join("api.url"));
        self.nodes.insert(
            org.to_string(),
            Running::spawn(move |stop| {
                overstap_node::run_with_clock(config, listener, stop, clock)
            }),
        );
        self.wait_ready(org).await
    }

    pub async fn stop_node(&mut self, org: &str) -> anyhow::Result<()> {
        match self.nodes.remove(org) {
            Some(n) => n
                .stop()
                .await
                .with_context(|| format!("stopping node {org}")),
            None => bail!("node {org} is not running"),
        }
    }

    /// Waits until the node's API answers and it holds the directory.
    async fn wait_ready(&self, org: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut api) = connect_dir(&self.node_dir(org)).await
                && let Ok(s) = api.status(NodeStatusRequest {}).await
                && s.into_inner().directory_version > 0
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("node {org} did not become ready within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn api(&self, org: &str) -> anyhow::Result<Api> {
        connect_dir(&self.node_dir(org)).await
    }

    /// Waits until `check` holds for the node's status, or fails after `timeout`.
    pub async fn wait_for(
        &self,
        org: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&overstap_proto::pb::NodeStatusResponse) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut api = self.api(org).await?;
        loop {
            let s = api.status(NodeStatusRequest {}).await?.into_inner();
            if check(&s) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{org}: {what} did not happen within {timeout:?} (status: {s:?})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A member's TLS link to the hub, from its credentials folder (to act as that member).
    pub fn hub_link(&self, org: &str) -> anyhow::Result<overstap_node::sync::HubLink> {
        let dir = if org == "HUB" {
            self.dir.join("hub")
        } else {
            self.node_dir(org)
        };
        let read = |f: &str| {
            std::fs::read(dir.join("tls").join(f)).with_context(|| format!("reading {org} tls/{f}"))
        };
        Ok(overstap_node::sync::HubLink {
            url: self.hub_url.clone(),
            server_name: "localhost".into(),
            ca_pem: read("ca.pem")?,
            cert_pem: read("cert.pem")?,
            key_pem: read("key.pem")?,
        })
    }

    /// A member's signing key, from its credentials folder.
    pub fn signing_key(&self, org: &str) -> anyhow::Result<ed25519_dalek::SigningKey> {
        let text = std::fs::read_to_string(self.node_dir(org).join("keys/signing.key"))?;
        Ok(ed25519_dalek::SigningKey::from_bytes(
            &overstap_proto::config::parse_key_hex(&text, "signing key")?,
        ))
    }

    /// Hands the authority's newest signed directory to the running hub (as
    /// `overstap authority publish` does); nodes fetch it from there by themselves.
    pub async fn publish_directory(&self) -> anyhow::Result<u64> {
        let link = self.hub_link("HUB")?;
        let mut hub = overstap_proto::pb::hub_client::HubClient::new(link.channel()?);
        Ok(hub
            .publish_directory(self.authority.signed_directory()?)
            .await?
            .into_inner()
            .version)
    }

    /// [`Region::publish_directory`], then waits until each of `orgs` has installed it.
    pub async fn publish_directory_to(&self, orgs: &[&str]) -> anyhow::Result<u64> {
        let v = self.publish_directory().await?;
        for org in orgs {
            self.wait_for(
                org,
                Duration::from_secs(20),
                &format!("installing directory version {v}"),
                |s| s.directory_version == v,
            )
            .await?;
        }
        Ok(v)
    }

    /// Admits a new member while the region runs, publishes the directory, starts its node.
    pub async fn admit_and_start(&mut self, org: Org) -> anyhow::Result<()> {
        member::join(
            &self.authority,
            &Admission {
                org_id: org.id.clone(),
                kind: org.kind,
                name: org.name.clone(),
                hosts: vec![],
                hub_url: self.hub_url.clone(),
                hub_name: "localhost".into(),
                listen: String::new(),
                out: self.dir.join(&org.id),
            },
        )?;
        self.publish_directory().await?;
        self.orgs.push(org.clone());
        self.start_node(&org.id).await
    }

    /// Stops every node and the hub.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            self.stop_node(&n).await?;
        }
        for r in self.replicas.drain(..) {
            r.stop().await.context("stopping a hub replica")?;
        }
        if let Some(h) = self.hub.take() {
            h.stop().await.context("stopping the hub")?;
        }
        Ok(())
    }
}

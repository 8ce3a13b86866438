//! `overstap bench subscribers`: the hub's resident memory with every member of a large region
//! subscribed and idle.
//!
//! Method. A region of `members` member organisations is admitted (each with its own client
//! certificate), and the real `overstap-hub` binary is started on it as a process of its own, on
//! SQLite, so that its memory is its own. Its resident set (`VmRSS`) is read once it has loaded
//! the directory and settled, then every member opens its own mutual-TLS connection and a
//! `Subscribe` stream, and the resident set is read again once all are open and the hub's
//! metrics count them. The figure is that second reading; the first shows what the hub costs
//! before anyone subscribes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::{MemberKind, SubscribeRequest};
use prost::Message;
use serde::Serialize;

use overstap_region::authority::Authority;
use overstap_region::member::{self, Admission};

#[derive(Debug, Serialize)]
pub struct SubscribersBench {
    pub members: usize,
    pub subscribed: usize,
    pub hub_rss_idle_mib: f64,
    pub hub_rss_subscribed_mib: f64,
    pub kib_per_subscriber: f64,
    pub open_seconds: f64,
}

/// The hub binary beside this one (`cargo build` puts them in one folder), or
/// `OVERSTAP_HUB_BIN`.
fn hub_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("OVERSTAP_HUB_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    let hub = me.with_file_name("overstap-hub");
    if !hub.exists() {
        bail!(
            "the hub binary is not at {}; build it first (cargo build --locked -p overstap-hub) \
             or set OVERSTAP_HUB_BIN",
            hub.display()
        );
    }
    Ok(hub)
}

/// A process's resident set in MiB, from `/proc`.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the hub's memory from /proc (Linux only)")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line for the hub")?;
    Ok(kib / 1024.0)
}

/// Stops the hub when the bench ends, however it ends.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the bench with the hub binary at `hub_bin`, or the one beside this program.
pub async fn subscribers_bench(
    members: usize,
    hub_bin: Option<PathBuf>,
    out: &mut dyn Write,
) -> anyhow::Result<SubscribersBench> {
    let hub_bin = match hub_bin {
        Some(p) => p,
        None => hub_binary()?,
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    writeln!(
        out,
        "Admitting {members} members, each with its own certificate..."
    )?;
    let authority = Authority::init(&dir.join("authority"), "bench")?;
    let hub_dir = dir.join("hub");
    member::join(
        &authority,
        &Admission {
            org_id: "HUB".into(),
            kind: MemberKind::Hub,
            name: "Regionale hub".into(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            hub_url: String::new(),
            hub_name: "localhost".into(),
            listen: "127.0.0.1:0".into(),
            out: hub_dir.clone(),
        },
    )?;
    let started = Instant::now();
    let ids: Vec<String> = (0..members).map(|i| format!("M{i:05}")).collect();
    for (i, id) in ids.iter().enumerate() {
        member::join(
            &authority,
            &Admission {
                org_id: id.clone(),
                kind: MemberKind::Mbo,
                name: format!("Member {i}"),
                hosts: vec![],
                hub_url: String::new(),
                hub_name: "localhost".into(),
                listen: String::new(),
                out: dir.join(id),
            },
        )?;
        if (i + 1) % 500 == 0 {
            writeln!(
                out,
                "  {} admitted ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            )?;
        }
    }
    std::fs::write(
        hub_dir.join("directory.signed"),
        authority.signed_directory()?.encode_to_vec(),
    )?;

    let addr_file = hub_dir.join("addr");
    let mut hub = Hub(Command::new(&hub_bin)
        .current_dir(&hub_dir)
        .args([
            "--config",
            "hub.toml",
            "--listen",
            "127.0.0.1:0",
            "--addr-file",
        ])
        .arg(&addr_file)
        .env("RUST_LOG", "warn")
        .env("OVERSTAP_METRICS_LISTEN", "127.0.0.1:0")
        .env("OVERSTAP_METRICS_ADDR_FILE", hub_dir.join("metrics.addr"))
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", hub_bin.display()))?);
    let addr = wait_for_file(&addr_file, &mut hub.0).await?;
    let metrics = wait_for_file(&hub_dir.join("metrics.addr"), &mut hub.0).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_mib(hub.0.id())?;
    writeln!(
        out,
        "Hub started (pid {}), {idle:.1} MiB resident before anyone subscribes; opening {members} subscriptions...",
        hub.0.id()
    )?;

    let url = format!("https://{addr}");
    let started = Instant::now();
    let mut streams = Vec::with_capacity(members);
    for (n, chunk) in ids.chunks(100).enumerate() {
        let mut opening = tokio::task::JoinSet::new();
        for id in chunk {
            let link = member_link(dir, id, &url)?;
            let id = id.clone();
            opening.spawn(async move {
                let mut client = HubClient::new(link.channel()?);
                let stream = client
                    .subscribe(SubscribeRequest::default())
                    .await
                    .with_context(|| format!("{id} could not subscribe"))?
                    .into_inner();
                Ok::<_, anyhow::Error>((client, stream))
            });
        }
        while let Some(opened) = opening.join_next().await {
            streams.push(opened??);
        }
        if (n + 1) % 5 == 0 {
            writeln!(out, "  {} subscribed", streams.len())?;
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // The hub counts its open subscriptions; wait until it counts them all.
    let gauge_url = format!("http://{metrics}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counted = subscriber_gauge(&gauge_url).await.unwrap_or(0.0);
        if counted as usize >= members {
            break;
        }
        if Instant::now() > deadline {
            bail!("the hub counts {counted} subscribers of {members} after a minute");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subscribed = rss_mib(hub.0.id())?;
    writeln!(
        out,
        "{} subscriptions open after {open_seconds:.1} s; the hub holds {subscribed:.1} MiB",
        streams.len()
    )?;
    let count = streams.len();
    drop(streams);
    drop(hub);
    Ok(SubscribersBench {
        members,
        subscribed: count,
        hub_rss_idle_mib: idle,
        hub_rss_subscribed_mib: subscribed,
        kib_per_subscriber: (subscribed - idle) * 1024.0 / count.max(1) as f64,
        open_seconds,
    })
}

/// Waits for a file the hub writes once it listens, and returns its first line.
async fn wait_for_file(path: &Path, hub: &mut Child) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_string());
        }
        if let Some(status) = hub.try_wait()? {
            bail!("the hub exited ({status}) before it listened");
        }
        if Instant::now() > deadline {
            bail!("the hub did not write {} within a minute", path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member's TLS link to the hub at `url`, from its credentials folder.
fn member_link(dir: &Path, id: &str, url: &str) -> anyhow::Result<overstap_node::sync::HubLink> {
    let read = |f: &str| {
        std::fs::read(dir.join(id).join("tls").join(f))
            .with_context(|| format!("reading {id} tls/{f}"))
    };
    Ok(overstap_node::sync::HubLink {
        url: url.to_string(),
        server_name: "localhost".into(),
        ca_pem: read("ca.pem")?,
        cert_pem: read("cert.pem")?,
        key_pem: read("key.pem")?,
    })
}

/// The hub's own count of open subscriptions, from its metrics.
async fn subscriber_gauge(url: &str) -> anyhow::Result<f64> {
    metric(url, "overstap_hub_subscribers").await
}

/// One sample of a Prometheus text page, by its name (without labels).
pub(crate) async fn metric(url: &str, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("an http:// url")?;
    let (host, path) = rest.split_once('/').context("a path")?;
    let mut tcp = tokio::net::TcpStream::connect(host).await?;
    tcp.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {name} in the hub's metrics"))
}

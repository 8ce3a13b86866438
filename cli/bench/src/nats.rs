//! The NATS JetStream side of `overstap bench hub --nats`: the same payloads stored by the NATS
//! server that runs on this machine, in a JetStream stream with file storage, each publish
//! waiting for JetStream's acknowledgement (the message is stored) as each `Send` waits for the
//! hub's receipt; for a batch, a publisher publishes as many messages as a `SendBatch` call holds
//! and then waits for all their acknowledgements, as a client library's asynchronous publish
//! does. The publishers share one connection, as the hub's senders share one.
//!
//! It speaks the NATS client protocol itself (`CONNECT`, `SUB`, `PUB` with a reply subject,
//! `MSG`/`HMSG`, `PING`/`PONG`) and JetStream's JSON API (`$JS.API.STREAM.CREATE`,
//! `$JS.API.STREAM.DELETE`) over plain TCP: a few lines, where a client library would have added a
//! second TLS stack and a long dependency tree to the workspace for one benchmark.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, oneshot};

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// One connection: requests go out under a unique reply subject; a reader task hands each
/// reply to whoever waits for it.
struct Nats {
    writer: Mutex<OwnedWriteHalf>,
    waiting: Waiting,
    next: std::sync::atomic::AtomicU64,
}

impl Nats {
    async fn connect(addr: &str) -> anyhow::Result<Arc<Self>> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to NATS at {addr}"))?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut line = String::new();
        read.read_line(&mut line).await?;
        if !line.starts_with("INFO ") {
            bail!("{addr} does not speak NATS: {line:?}");
        }
        write
            .write_all(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"name\":\"overstap-bench\"}\r\nSUB _INBOX.overstap.> 1\r\nPING\r\n",
            )
            .await?;
        let waiting: Waiting = Default::default();
        let nats = Arc::new(Nats {
            writer: Mutex::new(write),
            waiting: waiting.clone(),
            next: 0.into(),
        });
        let (ready, is_ready) = oneshot::channel();
        let pong = nats.clone();
        tokio::spawn(async move {
            if let Err(e) = read_loop(read, waiting, pong, ready).await {
                tracing::warn!(error = %e, "the NATS connection ended");
            }
        });
        is_ready.await.context("NATS closed the connection")?;
        Ok(nats)
    }

    /// Publishes `payload` to `subject` and waits for the reply.
    async fn request(&self, subject: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut replies = self.request_all(subject, &[payload]).await?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Publishes every payload to `subject` in one write, each with its own reply subject, and
    /// then waits for all the replies (a client library's asynchronous publish, for a batch).
    async fn request_all(&self, subject: &str, payloads: &[&[u8]]) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut frames = Vec::new();
        let mut answers = Vec::with_capacity(payloads.len());
        {
            let mut waiting = self.waiting.lock().await;
            for payload in payloads {
                let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reply = format!("_INBOX.overstap.{n}");
                let (tx, rx) = oneshot::channel();
                waiting.insert(reply.clone(), tx);
                answers.push(rx);
                frames.extend_from_slice(
                    format!("PUB {subject} {reply} {}\r\n", payload.len()).as_bytes(),
                );
                frames.extend_from_slice(payload);
                frames.extend_from_slice(b"\r\n");
            }
        }
        self.writer.lock().await.write_all(&frames).await?;
        let mut replies = Vec::with_capacity(answers.len());
        for rx in answers {
            replies.push(rx.await.context("NATS closed the connection")?);
        }
        Ok(replies)
    }
}

async fn read_loop(
    mut read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    waiting: Waiting,
    nats: Arc<Nats>,
    ready: oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let mut ready = Some(ready);
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("PING") => nats.writer.lock().await.write_all(b"PONG\r\n").await?,
            Some("PONG") => {
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Some("+OK") | Some("INFO") | None => {}
            Some("-ERR") => bail!("NATS said {}", line.trim()),
            // MSG subject sid [reply] bytes; HMSG subject sid [reply] header-bytes total-bytes
            Some(kind @ ("MSG" | "HMSG")) => {
                let total: usize = words.last().context("MSG without a size")?.parse()?;
                let header: usize = if kind == "HMSG" {
                    words[words.len() - 2].parse()?
                } else {
                    0
                };
                let mut body = vec![0; total + 2];
                read.read_exact(&mut body).await?;
                body.truncate(total);
                let subject = words.get(1).copied().unwrap_or_default();
                if let Some(tx) = waiting.lock().await.remove(subject) {
                    let _ = tx.send(body[header..].to_vec());
                }
            }
            Some(other) => bail!("unexpected from NATS: {other}"),
        }
    }
}

/// Messages per second JetStream stores (file storage, each publish acknowledged) from
/// `publishers` concurrent publishers, of the given payloads, `per_call` published at a time
/// before the publisher waits for their acknowledgements.
pub async fn jetstream_store(
    addr: &str,
    payloads: Vec<Vec<u8>>,
    publishers: usize,
    per_call: usize,
) -> anyhow::Result<f64> {
    let nats = Nats::connect(addr).await?;
    let stream = format!("OVERSTAP_BENCH_{}", std::process::id());
    let subject = format!("overstap.bench.{}", std::process::id());
    let config = serde_json::json!({
        "name": stream,
        "subjects": [subject],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "num_replicas": 1,
    });
    let answer = nats
        .request(
            &format!("$JS.API.STREAM.CREATE.{stream}"),
            config.to_string().as_bytes(),
        )
        .await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    if let Some(e) = answer.get("error") {
        bail!("JetStream refused the stream: {e}");
    }
    let count = payloads.len();
    let chunks: Vec<Vec<Vec<u8>>> = payloads
        .chunks(count.div_ceil(publishers.max(1)).max(1))
        .map(|c| c.to_vec())
        .collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in chunks {
        let nats = nats.clone();
        let subject = subject.clone();
        tasks.spawn(async move {
            for call in chunk.chunks(per_call.max(1)) {
                let call: Vec<&[u8]> = call.iter().map(Vec::as_slice).collect();
                for ack in nats.request_all(&subject, &call).await? {
                    let ack: serde_json::Value = serde_json::from_slice(&ack)?;
                    if ack.get("seq").is_none() {
                        bail!("JetStream did not store a message: {ack}");
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let info = nats
        .request(&format!("$JS.API.STREAM.INFO.{stream}"), b"")
        .await?;
    let info: serde_json::Value = serde_json::from_slice(&info)?;
    let stored = info["state"]["messages"].as_u64().unwrap_or(0);
    nats.request(&format!("$JS.API.STREAM.DELETE.{stream}"), b"")
        .await?;
    if stored as usize != count {
        bail!("JetStream holds {stored} of the {count} messages published");
    }
    Ok(rate)
}

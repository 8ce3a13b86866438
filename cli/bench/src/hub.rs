//! `overstap bench hub`: the hub's routing throughput against the limit of this machine, in one
//! run, as ratios.
//!
//! Method. A hub on 127.0.0.1 (TLS 1.3, client certificates, every envelope committed to the
//! store before its signed receipt is returned) is fed pre-sealed envelopes by 16 concurrent
//! senders on one mutual-TLS connection, each with one call in flight: one envelope per `Send`,
//! or, as a school's outbox pushes, `SendBatch` calls of up to 64 envelopes and at most twice
//! the largest envelope body in bytes. The baseline is a bare tonic server with the same TLS
//! configuration, the same service definition, the same connection, the same calls in flight
//! and the same envelopes, whose `Send` and `SendBatch` answer at once with a receipt of the
//! hub's size for each envelope, without checking, storing or signing anything: what gRPC and
//! TLS alone cost here. Each figure is the best of `rounds` runs, the runs of hub and baseline
//! interleaved so that both see the same machine. With a PostgreSQL server (`--postgres URL`, or OVERSTAP_TEST_POSTGRES),
//! the same hub runs on a fresh PostgreSQL database too, for SQLite ÷ PostgreSQL.

use std::io::Write;
use std::time::Instant;

use overstap_proto::envelope::{Outgoing, seal};
use overstap_proto::pb::hub_client::HubClient;
use overstap_proto::pb::hub_server::{Hub, HubServer};
use overstap_proto::pb::payload::Content;
use overstap_proto::pb::{self, EnvelopeKind, MemberKind, Payload, Skip};
use serde::Serialize;
use tonic::{Request, Response, Status};

use overstap_region::region::{Org, Region};

#[derive(Debug, Serialize)]
pub struct HubBench {
    pub envelopes: usize,
    pub senders: usize,
    pub rounds: usize,
    pub figures: Vec<Figure>,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub payload_bytes: usize,
    /// Envelopes per call: 1 is `Send`, more is `SendBatch` (and JetStream publishes as many
    /// before it waits for their acknowledgements).
    pub per_call: usize,
    pub baseline_per_s: f64,
    pub sqlite_per_s: f64,
    pub sqlite_over_baseline: f64,
    pub postgres_per_s: Option<f64>,
    pub sqlite_over_postgres: Option<f64>,
    /// Two hub replicas on the one PostgreSQL database, the senders spread over both.
    pub postgres_two_replicas_per_s: Option<f64>,
    pub one_replica_over_two: Option<f64>,
    /// NATS JetStream (file storage, each publish acknowledged) storing the same bytes.
    pub nats_per_s: Option<f64>,
    pub hub_over_nats: Option<f64>,
}

/// Concurrent senders unless told otherwise, each waiting for its receipt before it sends again.
pub const SENDERS: usize = 16;

/// Bytes of payload per envelope unless told otherwise: a passport of text, and one with a
/// few attachments' worth.
pub const SIZES: [usize; 2] = [4 << 10, 100 << 10];

/// Envelopes per call unless told otherwise: one by one (`Send`), and as a school's outbox
/// pushes them (`SendBatch`).
pub const BATCHES: [usize; 2] = [1, overstap_node::sync::PUSH_BATCH];

/// Envelopes of `size` bytes of payload in one call of at most `batch`, as a school's outbox
/// fills a `SendBatch` call: at most twice the largest envelope body in bytes, at least one.
fn per_call(batch: usize, size: usize) -> usize {
    let budget = 2 * overstap_proto::DEFAULT_MAX_ENVELOPE_BYTES;
    batch.min(budget / (size + 512)).max(1)
}

/// What a routing run measures.
#[derive(Clone)]
pub(crate) enum Target {
    /// The no-op baseline.
    Noop,
    /// NATS JetStream at this address (`host:port`), storing the same envelopes' bytes.
    Nats(String),
    /// The hub, integrating its log or not, on SQLite or on a fresh database next to the
    /// PostgreSQL one named; its log holding `prefill` entries before the run (SQLite only);
    /// served by `replicas` hubs on the one database (PostgreSQL), the senders spread over them.
    Hub {
        log: bool,
        postgres: Option<String>,
        prefill: u64,
        replicas: usize,
    },
}

impl Target {
    /// The hub as it runs, integrating its log, on one database.
    pub(crate) fn hub(postgres: Option<String>) -> Self {
        Target::Hub {
            log: true,
            postgres,
            prefill: 0,
            replicas: 1,
        }
    }
}

/// What `bench hub` runs: each size with each batch, `rounds` times, on SQLite and on what is
/// named beside it.
pub struct HubPlan {
    pub envelopes: usize,
    pub senders: usize,
    pub rounds: usize,
    /// Bytes of payload per envelope.
    pub sizes: Vec<usize>,
    /// Envelopes per call at most (see [`BATCHES`]).
    pub batches: Vec<usize>,
    pub postgres: Option<String>,
    pub nats: Option<String>,
}

pub async fn hub_bench(plan: HubPlan, out: &mut dyn Write) -> anyhow::Result<HubBench> {
    let HubPlan {
        envelopes,
        senders,
        rounds,
        sizes,
        batches,
        postgres,
        nats,
    } = plan;
    writeln!(
        out,
        "Routing {envelopes} envelopes per run with {senders} concurrent senders, best of \
         {rounds}; the baseline is a no-op tonic server with the same TLS, connection, calls \
         in flight and envelopes."
    )?;
    let mut figures = Vec::new();
    for &size in &sizes {
        for &batch in &batches {
            let n = per_call(batch, size);
            let load = Load {
                envelopes,
                senders,
                size,
                per_call: n,
            };
            figures.push(figure(&load, rounds, &postgres, &nats, out).await?);
        }
    }
    Ok(HubBench {
        envelopes,
        senders,
        rounds,
        figures,
    })
}

/// One size and batch: every target, `rounds` times in turn; the best of each.
async fn figure(
    load: &Load,
    rounds: usize,
    postgres: &Option<String>,
    nats: &Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<Figure> {
    let (mut base, mut lite, mut pg, mut pg2, mut js) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let how = if load.per_call == 1 {
        "one per Send".to_string()
    } else {
        format!("{} per SendBatch", load.per_call)
    };
    for round in 1..=rounds {
        writeln!(out, "  {} B, {how}, round {round}:", load.size)?;
        let b = route(load, Target::Noop, out).await?;
        base = base.max(b);
        writeln!(out, "    no-op baseline {b:.0}/s")?;
        let s = route(load, Target::hub(None), out).await?;
        lite = lite.max(s);
        writeln!(out, "    hub on SQLite {s:.0}/s")?;
        if let Some(admin) = postgres {
            let p = route(load, Target::hub(Some(admin.clone())), out).await?;
            pg = pg.max(p);
            writeln!(out, "    hub on PostgreSQL {p:.0}/s")?;
            let two = Target::Hub {
                log: true,
                postgres: Some(admin.clone()),
                prefill: 0,
                replicas: 2,
            };
            let p2 = route(load, two, out).await?;
            pg2 = pg2.max(p2);
            writeln!(out, "    two hub replicas on PostgreSQL {p2:.0}/s")?;
        }
        if let Some(addr) = nats {
            let n = route(load, Target::Nats(addr.clone()), out).await?;
            js = js.max(n);
            writeln!(out, "    NATS JetStream {n:.0}/s")?;
        }
    }
    Ok(Figure {
        payload_bytes: load.size,
        per_call: load.per_call,
        baseline_per_s: base,
        sqlite_per_s: lite,
        sqlite_over_baseline: lite / base,
        postgres_per_s: postgres.as_ref().map(|_| pg),
        sqlite_over_postgres: postgres.as_ref().map(|_| lite / pg),
        postgres_two_replicas_per_s: postgres.as_ref().map(|_| pg2),
        one_replica_over_two: postgres.as_ref().map(|_| pg / pg2),
        nats_per_s: nats.as_ref().map(|_| js),
        hub_over_nats: nats.as_ref().map(|_| lite / js),
    })
}

/// What a routing run sends: `envelopes` of `size` bytes of payload, from `senders` concurrent
/// senders with one call each in flight, `per_call` envelopes to a call.
pub(crate) struct Load {
    pub envelopes: usize,
    pub senders: usize,
    pub size: usize,
    pub per_call: usize,
}

/// Envelopes per second that `target` accepts under `load`.
pub(crate) async fn route(load: &Load, target: Target, out: &mut dyn Write) -> anyhow::Result<f64> {
    let Load {
        envelopes,
        senders,
        size,
        per_call,
    } = *load;
    let tmp = tempfile::tempdir()?;
    let orgs = [
        Org::new("25LP", MemberKind::School, "School"),
        Org::new("30RT", MemberKind::Mbo, "Mbo"),
    ];
    let (log, database, prefill, replicas) = match &target {
        Target::Hub {
            log,
            postgres,
            prefill,
            replicas,
        } => {
            let database = match postgres {
                Some(admin) => Some(overstap_hub::store::fresh_postgres_database(admin).await?),
                None => None,
            };
            if *replicas > 1 && database.is_none() {
                anyhow::bail!("hub replicas share a PostgreSQL database; name one");
            }
            if *prefill > 0 && database.is_some() {
                anyhow::bail!("a log filled beforehand is measured on SQLite only");
            }
            (*log, database, *prefill, *replicas)
        }
        Target::Noop | Target::Nats(_) => (false, None, 0, 1),
    };
    let mut region = Region::start_hub_with_database(
        tmp.path(),
        &orgs,
        overstap_node::system_clock(),
        log,
        database,
    )
    .await?;
    match target {
        Target::Noop => region.run_hub_with(serve_noop).await?,
        // One sender member stands in for many here: its limit on calls per second (1,000, a
        // burst of 2,000) would otherwise be what a run of more envelopes measures.
        Target::Hub { .. } => {
            region
                .set_hub_limits(overstap_hub::limits::Limits {
                    requests_per_second: 1_000_000,
                    ..Default::default()
                })
                .await?
        }
        Target::Nats(_) => {}
    }
    if prefill > 0 {
        prefill_log(&mut region, prefill, out).await?;
    }
    let mut urls = vec![region.hub_url.clone()];
    for _ in 1..replicas.max(1) {
        urls.push(region.start_hub_replica().await?);
    }
    let key = region.signing_key("25LP")?;
    let to = region.authority.directory()?.member("30RT")?.clone();
    let sealed: Vec<_> = (0..envelopes)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            seal(
                Outgoing {
                    envelope_id: id,
                    from_org: "25LP",
                    kind: EnvelopeKind::Status,
                    created_at: 0,
                    payload: Payload {
                        content: Some(Content::Skip(Skip {
                            reason: "x".repeat(size),
                        })),
                        ..Default::default()
                    },
                },
                &key,
                &to,
            )
        })
        .collect::<Result<_, _>>()?;
    if let Target::Nats(addr) = &target {
        let payloads = sealed.iter().map(prost::Message::encode_to_vec).collect();
        let rate = crate::nats::jetstream_store(addr, payloads, senders, per_call).await;
        region.shutdown().await?;
        return rate;
    }
    // One mutual-TLS connection per hub replica; the senders take turns over them.
    let mut channels = Vec::new();
    for url in &urls {
        let mut link = region.hub_link("25LP")?;
        link.url = url.clone();
        channels.push(link.channel()?);
    }
    let chunks: Vec<Vec<_>> = sealed
        .chunks(envelopes.div_ceil(senders.max(1)))
        .map(|c| c.to_vec())
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let channel = channels[i % channels.len()].clone();
        let mut client = HubClient::new(channel).max_encoding_message_size(8 << 20);
        tasks.push(tokio::spawn(async move {
            if per_call == 1 {
                for env in chunk {
                    client.send(env).await?;
                }
                return Ok(());
            }
            for call in chunk.chunks(per_call) {
                let results = client
                    .send_batch(pb::SendBatchRequest {
                        envelopes: call.to_vec(),
                    })
                    .await?
                    .into_inner()
                    .results;
                if let Some(r) = results.iter().find(|r| r.receipt.is_none()) {
                    anyhow::bail!("the hub did not take an envelope: {}", r.message);
                }
                if results.len() != call.len() {
                    anyhow::bail!("the hub answered {} of {}", results.len(), call.len());
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = envelopes as f64 / started.elapsed().as_secs_f64();
    if let Target::Hub { .. } = target {
        // How many envelopes shared a commit, from the hub's own histogram.
        let url = region.metrics_url("hub")?;
        let sum = crate::subscribers::metric(&url, "overstap_hub_commit_batch_envelopes_sum");
        let count = crate::subscribers::metric(&url, "overstap_hub_commit_batch_envelopes_count");
        if let (Ok(sum), Ok(count)) = (sum.await, count.await) {
            writeln!(
                out,
                "      ({count:.0} commits by the first hub, {:.1} envelopes per commit)",
                sum / count.max(1.0)
            )?;
        }
    }
    region.shutdown().await?;
    Ok(rate)
}

/// Gives the region's hub (on SQLite) a log of `entries` entries before a run: the events are
/// written straight into its store while it is stopped, then the restarted hub integrates them
/// itself (hashes them, stores the tree, signs checkpoints), and the run starts once its signed
/// checkpoint covers them all.
async fn prefill_log(region: &mut Region, entries: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    region.stop_hub().await?;
    let started = Instant::now();
    let pool = sqlx::SqlitePool::connect(&region.hub_database_url()?).await?;
    sqlx::query(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < ?)
         INSERT INTO events (log_index, event, envelope_kind, from_org, to_org, envelope_id, body_sha256, at)
         SELECT i, 'send', 1, '25LP', '30RT', randomblob(16), randomblob(32), 0 FROM c",
    )
    .bind(entries as i64)
    .execute(&pool)
    .await?;
    pool.close().await;
    writeln!(
        out,
        "  {entries} log entries written in {:.1} s; the hub integrates them",
        started.elapsed().as_secs_f64()
    )?;
    region.start_hub().await?;
    let mut client = HubClient::new(region.hub_link("25LP")?.channel()?);
    let mut shown = 0;
    loop {
        let size = match client.get_checkpoint(pb::GetCheckpointRequest {}).await {
            Ok(r) => overstap_proto::log::checkpoint_claims(&r.into_inner().note)?.0,
            Err(_) => 0,
        };
        if size >= entries {
            break;
        }
        if size >= shown + entries / 10 {
            writeln!(out, "  integrated {size} of {entries}")?;
            shown = size;
        }
        if started.elapsed() > std::time::Duration::from_secs(600) {
            anyhow::bail!("the hub integrated only {size} of {entries} log entries in 10 minutes");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    writeln!(
        out,
        "  the hub's signed log holds {entries} entries after {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// Serves the no-op baseline where the hub would be: the hub's own TLS configuration.
async fn serve_noop(
    config: overstap_hub::HubConfig,
    listener: tokio::net::TcpListener,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let tls = overstap_hub::tls::server_config(&config.tls)?;
    tonic::transport::Server::builder()
        .add_service(
            HubServer::new(Noop::new())
                .max_decoding_message_size(8 << 20)
                .max_encoding_message_size(8 << 20),
        )
        .serve_with_incoming_shutdown(
            overstap_hub::tls::incoming(
                listener,
                tls,
                overstap_hub::tls::Greeting::Http2,
                std::time::Duration::from_secs(config.limits.greeting_timeout_secs),
            ),
            stop,
        )
        .await?;
    Ok(())
}

/// A `Hub` that answers `Send` and `SendBatch` at once and nothing else, with the same receipt
/// for every envelope: one of the hub's size, signed once when the server starts.
struct Noop {
    receipt: pb::Signed,
}

impl Noop {
    fn new() -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let receipt = pb::Receipt {
            envelope_id: vec![0xab; 16],
            log_index: 1_000_000,
            received_at: 1_800_000_000,
            header_sha256: vec![0xcd; 32],
            hub_id: "hub".into(),
        };
        Noop {
            receipt: overstap_proto::sign::sign_message(
                overstap_proto::sign::Domain::Receipt,
                &receipt,
                &[&key],
            ),
        }
    }
}

fn noop<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the no-op baseline only answers Send and SendBatch",
    ))
}

#[tonic::async_trait]
impl Hub for Noop {
    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Delivery, Status>> + Send>>;

    async fn send(&self, _: Request<pb::Envelope>) -> Result<Response<pb::Signed>, Status> {
        Ok(Response::new(self.receipt.clone()))
    }
    async fn send_batch(
        &self,
        request: Request<pb::SendBatchRequest>,
    ) -> Result<Response<pb::SendBatchResponse>, Status> {
        let results = request
            .into_inner()
            .envelopes
            .iter()
            .map(|_| pb::SendResult {
                receipt: Some(self.receipt.clone()),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::SendBatchResponse { results }))
    }
    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        noop()
    }
    async fn ack(&self, _: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        noop()
    }
    async fn get_directory(
        &self,
        _: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::GetDirectoryResponse>, Status> {
        noop()
    }
    async fn log_card(
        &self,
        _: Request<pb::LogCardRequest>,
    ) -> Result<Response<pb::LogCardResponse>, Status> {
        noop()
    }
    async fn card_history(
        &self,
        _: Request<pb::CardHistoryRequest>,
    ) -> Result<Response<pb::CardHistoryResponse>, Status> {
        noop()
    }
    async fn publish_directory(
        &self,
        _: Request<pb::Signed>,
    ) -> Result<Response<pb::PublishDirectoryResponse>, Status> {
        noop()
    }
    async fn get_checkpoint(
        &self,
        _: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        noop()
    }
    async fn get_inclusion_proof(
        &self,
        _: Request<pb::InclusionRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        noop()
    }
    async fn get_consistency_proof(
        &self,
        _: Request<pb::ConsistencyRequest>,
    ) -> Result<Response<pb::ProofResponse>, Status> {
        noop()
    }
    async fn get_log_entries(
        &self,
        _: Request<pb::LogEntriesRequest>,
    ) -> Result<Response<pb::LogEntriesResponse>, Status> {
        noop()
    }
    async fn add_cosignature(
        &self,
        _: Request<pb::CheckpointResponse>,
    ) -> Result<Response<pb::AddCosignatureResponse>, Status> {
        noop()
    }
}

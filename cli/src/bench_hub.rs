//! `overstap bench hub`: the hub's routing throughput against the limit of this machine, in one
//! run, as ratios.
//!
//! Method. A hub on 127.0.0.1 (TLS 1.3, client certificates, every envelope committed to the
//! store before its signed receipt is returned) is fed pre-sealed envelopes by 16 concurrent
//! senders on one mutual-TLS connection. The baseline is a bare tonic server with the same TLS
//! configuration, the same service definition and the same envelopes, whose `Send` answers at
//! once without checking, storing or signing anything: what gRPC and TLS alone cost here. Each
//! figure is the best of `rounds` runs, the runs of hub and baseline interleaved so that both
//! see the same machine. With a PostgreSQL server (`--postgres URL`, or OVERSTAP_TEST_POSTGRES),
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

use crate::region::{Org, Region};

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
    pub baseline_per_s: f64,
    pub sqlite_per_s: f64,
    pub sqlite_over_baseline: f64,
    pub postgres_per_s: Option<f64>,
    pub sqlite_over_postgres: Option<f64>,
}

const SENDERS: usize = 16;

/// What a routing run measures.
#[derive(Clone)]
pub(crate) enum Target {
    /// The no-op baseline.
    Noop,
    /// The hub, integrating its log or not, on SQLite or on a fresh database next to the
    /// PostgreSQL one named.
    Hub { log: bool, postgres: Option<String> },
}

pub async fn hub_bench(
    envelopes: usize,
    rounds: usize,
    sizes: &[usize],
    postgres: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<HubBench> {
    writeln!(
        out,
        "Routing {envelopes} envelopes per run with {SENDERS} concurrent senders, best of \
         {rounds}; the baseline is a no-op tonic server with the same TLS."
    )?;
    let mut figures = Vec::new();
    for &size in sizes {
        let (mut base, mut lite, mut pg) = (0f64, 0f64, 0f64);
        for round in 1..=rounds {
            let b = route(envelopes, size, Target::Noop).await?;
            let s = route(envelopes, size, hub(None)).await?;
            base = base.max(b);
            lite = lite.max(s);
            write!(
                out,
                "  {size} B, round {round}: baseline {b:.0}/s, hub on SQLite {s:.0}/s"
            )?;
            if let Some(admin) = &postgres {
                let p = route(envelopes, size, hub(Some(admin.clone()))).await?;
                pg = pg.max(p);
                write!(out, ", hub on PostgreSQL {p:.0}/s")?;
            }
            writeln!(out)?;
        }
        figures.push(Figure {
            payload_bytes: size,
            baseline_per_s: base,
            sqlite_per_s: lite,
            sqlite_over_baseline: lite / base,
            postgres_per_s: postgres.as_ref().map(|_| pg),
            sqlite_over_postgres: postgres.as_ref().map(|_| lite / pg),
        });
    }
    Ok(HubBench {
        envelopes,
        senders: SENDERS,
        rounds,
        figures,
    })
}

fn hub(postgres: Option<String>) -> Target {
    Target::Hub {
        log: true,
        postgres,
    }
}

/// Envelopes per second that `target` accepts, from 16 senders, of `size` bytes of payload each.
pub(crate) async fn route(envelopes: usize, size: usize, target: Target) -> anyhow::Result<f64> {
    let tmp = tempfile::tempdir()?;
    let orgs = [
        Org::new("25LP", MemberKind::School, "School"),
        Org::new("30RT", MemberKind::Mbo, "Mbo"),
    ];
    let (log, database) = match &target {
        Target::Hub {
            log,
            postgres: Some(admin),
        } => (
            *log,
            Some(overstap_hub::store::fresh_postgres_database(admin).await?),
        ),
        Target::Hub {
            log,
            postgres: None,
        } => (*log, None),
        Target::Noop => (false, None),
    };
    let mut region = Region::start_hub_with_database(
        tmp.path(),
        &orgs,
        overstap_node::system_clock(),
        log,
        database,
    )
    .await?;
    if matches!(target, Target::Noop) {
        region.run_hub_with(serve_noop).await?;
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
    let channel = region.hub_link("25LP")?.channel()?;
    let chunks: Vec<Vec<_>> = sealed
        .chunks(envelopes.div_ceil(SENDERS))
        .map(|c| c.to_vec())
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut client = HubClient::new(channel.clone()).max_encoding_message_size(8 << 20);
        tasks.push(tokio::spawn(async move {
            for env in chunk {
                client.send(env).await?;
            }
            Ok::<_, Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = envelopes as f64 / started.elapsed().as_secs_f64();
    region.shutdown().await?;
    Ok(rate)
}

/// Serves the no-op baseline where the hub would be: the hub's own TLS configuration.
async fn serve_noop(
    config: overstap_hub::HubConfig,
    listener: tokio::net::TcpListener,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let tls = overstap_hub::tls::server_config(&config.tls)?;
    tonic::transport::Server::builder()
        .add_service(HubServer::new(Noop).max_decoding_message_size(8 << 20))
        .serve_with_incoming_shutdown(overstap_hub::tls::incoming(listener, tls), stop)
        .await?;
    Ok(())
}

/// A `Hub` that answers `Send` at once and nothing else.
struct Noop;

fn noop<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the no-op baseline only answers Send",
    ))
}

#[tonic::async_trait]
impl Hub for Noop {
    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Delivery, Status>> + Send>>;

    async fn send(&self, _: Request<pb::Envelope>) -> Result<Response<pb::Signed>, Status> {
        Ok(Response::new(pb::Signed::default()))
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

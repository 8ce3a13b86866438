//! `overstap bench`: the load runs of `overstap-bench`, with their figures as a line for people
//! or JSON for programs.

use clap::Subcommand;

use super::{Format, json};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// The hub's routing throughput (durable, mutual TLS) ÷ a no-op gRPC server with the same
    /// TLS, for 4 KiB and 100 KiB envelopes; with PostgreSQL, also SQLite ÷ PostgreSQL and one
    /// replica ÷ two; with NATS, hub ÷ JetStream storing the same envelopes.
    Hub {
        /// Envelopes routed per run.
        #[arg(long, default_value_t = 2_000)]
        envelopes: usize,
        /// Concurrent senders, each waiting for its receipt before it sends the next.
        #[arg(long, default_value_t = overstap_bench::hub::SENDERS)]
        senders: usize,
        /// Runs of each kind; the best counts.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Envelopes per call, comma-separated: 1 sends each with `Send`; more sends
        /// `SendBatch` calls of up to that many, as a school's outbox does (at most twice the
        /// largest envelope body in bytes a call).
        #[arg(long, value_delimiter = ',', default_values_t = overstap_bench::hub::BATCHES)]
        batch: Vec<usize>,
        /// Bytes of payload per envelope, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = overstap_bench::hub::SIZES)]
        sizes: Vec<usize>,
        /// A PostgreSQL server to run the hub on as well (a fresh database next to the one
        /// named), e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long, env = "OVERSTAP_TEST_POSTGRES")]
        postgres: Option<String>,
        /// A NATS server with JetStream (host:port, e.g. 127.0.0.1:4222) to store the same
        /// envelopes in, for hub ÷ JetStream.
        #[arg(long)]
        nats: Option<String>,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Whole handovers in one region (a school and five mbo colleges): the wall time of a
    /// cohort push, then the latency of single handovers at half that rate (p50, p99).
    Handover {
        /// Passports in the cohort push.
        #[arg(long, default_value_t = 1_000)]
        cohort: usize,
        /// Handovers timed one by one afterwards.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// Handovers per second while they are timed (default: half the cohort's rate), to
        /// compare latencies at one load across runs.
        #[arg(long)]
        rate: Option<f64>,
        /// For a run under valgrind's callgrind that is N times slower: count instructions only
        /// from the cohort push until its answers are home and its envelopes proven in the log,
        /// with the region's background intervals stretched N times
        /// (`cli/bench/scripts/instructions` passes it).
        #[arg(long, value_name = "N")]
        callgrind: Option<u32>,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Recipients pulling in one region (a school and five mbo colleges): a cohort fetched by
    /// the colleges beside a cohort pushed by the school (pull ÷ push rate), then the round
    /// trip of single pulls at half the pull rate (p50, p99).
    Pull {
        /// Passports in each cohort (one pulled, one pushed).
        #[arg(long, default_value_t = 500)]
        cohort: usize,
        /// Pulls timed one by one afterwards.
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The hub's resident memory with every member of a large region subscribed and idle (the
    /// `overstap-hub` binary as a process of its own; build it first).
    Subscribers {
        /// Members admitted, each subscribing once on its own connection.
        #[arg(long, default_value_t = 2_500)]
        members: usize,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// What the verifiable log costs: proofs at scale, routing with the log on ÷ off.
    Log {
        /// Entries in the in-memory log the proofs are measured on.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Envelopes routed per run (four runs: log on, off, on, off).
        #[arg(long, default_value_t = 2_000)]
        envelopes: usize,
        /// table for people, json for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub(super) async fn bench(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Hub {
            envelopes,
            senders,
            rounds,
            batch,
            sizes,
            postgres,
            nats,
            format,
        } => {
            let b = overstap_bench::hub::hub_bench(
                overstap_bench::hub::HubPlan {
                    envelopes: envelopes.max(16),
                    senders: senders.max(1),
                    rounds: rounds.max(1),
                    sizes: sizes.iter().map(|s| (*s).max(1)).collect(),
                    batches: batch.iter().map(|b| (*b).max(1)).collect(),
                    postgres,
                    nats,
                },
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => {
                    for f in &b.figures {
                        print!(
                            "{:>6} B, {:>2} a call: hub on SQLite {:.0}/s, no-op baseline {:.0}/s, ratio {:.2}",
                            f.payload_bytes,
                            f.per_call,
                            f.sqlite_per_s,
                            f.baseline_per_s,
                            f.sqlite_over_baseline
                        );
                        if let (Some(p), Some(r)) = (f.postgres_per_s, f.sqlite_over_postgres) {
                            print!("; hub on PostgreSQL {p:.0}/s, SQLite ÷ PostgreSQL {r:.2}");
                        }
                        if let (Some(p), Some(r)) =
                            (f.postgres_two_replicas_per_s, f.one_replica_over_two)
                        {
                            print!("; two replicas {p:.0}/s, one ÷ two {r:.2}");
                        }
                        if let (Some(n), Some(r)) = (f.nats_per_s, f.hub_over_nats) {
                            print!("; NATS JetStream {n:.0}/s, hub ÷ JetStream {r:.2}");
                        }
                        println!();
                    }
                }
            }
            Ok(())
        }

        BenchCmd::Handover {
            cohort,
            samples,
            rate,
            callgrind,
            format,
        } => {
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                anyhow::bail!("--rate must be a number of handovers per second above 0");
            }
            let b = overstap_bench::handover::handover_bench(
                cohort.max(1),
                samples.max(1),
                rate,
                callgrind,
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "cohort of {} passports to {} mbo nodes: all stored after {:.2} s ({:.0}/s); {} single handovers at {:.0}/s: p50 {:.1} ms, p99 {:.1} ms",
                    b.cohort,
                    b.mbo_nodes,
                    b.cohort_seconds,
                    b.cohort_per_s,
                    b.samples,
                    b.latency_rate_per_s,
                    b.latency_p50_ms,
                    b.latency_p99_ms
                ),
            }
            Ok(())
        }

        BenchCmd::Pull {
            cohort,
            samples,
            format,
        } => {
            let b = overstap_bench::pull::pull_bench(
                cohort.max(1),
                samples.max(1),
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "{} passports fetched by {} colleges in {:.2} s ({:.0}/s), {} pushed in {:.2} s ({:.0}/s): pull ÷ push {:.2}; {} single pulls at {:.0}/s: p50 {:.1} ms, p99 {:.1} ms",
                    b.cohort,
                    b.mbo_nodes,
                    b.pull_seconds,
                    b.pull_per_s,
                    b.cohort,
                    b.push_seconds,
                    b.push_per_s,
                    b.pull_to_push,
                    b.samples,
                    b.latency_rate_per_s,
                    b.latency_p50_ms,
                    b.latency_p99_ms
                ),
            }
            Ok(())
        }

        BenchCmd::Subscribers { members, format } => {
            let b = overstap_bench::subscribers::subscribers_bench(
                members.max(1),
                None,
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "{} members subscribed and idle: the hub holds {:.1} MiB ({:.1} MiB before anyone subscribed, {:.1} KiB per subscriber); opening them took {:.1} s",
                    b.subscribed,
                    b.hub_rss_subscribed_mib,
                    b.hub_rss_idle_mib,
                    b.kib_per_subscriber,
                    b.open_seconds
                ),
            }
            Ok(())
        }

        BenchCmd::Log {
            entries,
            envelopes,
            format,
        } => {
            let b = overstap_bench::log::log_bench(
                entries.max(2),
                envelopes.max(16),
                &mut std::io::stderr(),
            )
            .await?;
            match format {
                Format::Json => json(&b)?,
                Format::Table => println!(
                    "log of {} entries: inclusion proof {} bytes (made {:.1} µs, checked {:.1} µs), consistency proof {} bytes (checked {:.1} µs)\n\
                     routing {} envelopes of 4 KiB: {:.0}/s with the log, {:.0}/s without; ratio {:.2}\n\
                     routing with the log already holding {} entries: {:.0}/s; ÷ an empty log {:.2}",
                    b.entries,
                    b.inclusion_proof_bytes,
                    b.prove_inclusion_us,
                    b.check_inclusion_us,
                    b.consistency_proof_bytes,
                    b.check_consistency_us,
                    b.envelopes,
                    b.routed_per_s_log_on,
                    b.routed_per_s_log_off,
                    b.ratio_on_over_off,
                    b.entries,
                    b.routed_per_s_full_log,
                    b.ratio_full_over_empty
                ),
            }
            Ok(())
        }
    }
}

//! `overstap bench log`: what the verifiable log costs, measured in one run on this machine.
//! - Proofs at scale: a tree of `entries` leaves (default 1,000,000) is built in memory; the
//!   inclusion and consistency proofs' size, and the time to make and check one, averaged.
//! - Routing with the log on ÷ off: a hub on 127.0.0.1 with SQLite, TLS 1.3 and client
//!   certificates, fed the same pre-sealed envelopes by 16 concurrent senders, once with its
//!   sequencer integrating the log and once without, alternating, best of two each.
//! - Routing at 0 and at `entries` log entries: the same run against a hub whose log already
//!   holds `entries` entries (written into its store, integrated and signed by the hub itself
//!   before the run), best of two, ÷ the log-on figure above.

use std::io::Write;
use std::time::Instant;

use overstap_proto::log::{LogEntry, MemoryTree, check_consistency, check_inclusion, leaf_hash};
use rand_core::RngCore;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct LogBench {
    pub entries: u64,
    pub inclusion_proof_bytes: usize,
    pub consistency_proof_bytes: usize,
    pub prove_inclusion_us: f64,
    pub check_inclusion_us: f64,
    pub check_consistency_us: f64,
    pub envelopes: usize,
    pub routed_per_s_log_on: f64,
    pub routed_per_s_log_off: f64,
    pub ratio_on_over_off: f64,
    /// Routing (log on) when the hub's log already holds `entries` entries, and that ÷ routing
    /// with an empty log (`routed_per_s_log_on`).
    pub routed_per_s_full_log: f64,
    pub ratio_full_over_empty: f64,
}

fn entry(i: u64) -> LogEntry {
    LogEntry {
        event: "send".into(),
        envelope_kind: 1,
        from_org: "25LP".into(),
        to_org: "30RT".into(),
        envelope_id: i.to_be_bytes().repeat(2),
        body_sha256: vec![(i % 251) as u8; 32],
        at: 1_795_000_000 + i as i64,
    }
}

/// Runs both parts, telling `out` how it goes; returns the figures.
pub async fn log_bench(
    entries: u64,
    envelopes: usize,
    out: &mut dyn Write,
) -> anyhow::Result<LogBench> {
    writeln!(out, "Building a log of {entries} entries in memory...")?;
    let mut tree = MemoryTree::default();
    for i in 0..entries {
        tree.append(leaf_hash(&entry(i)))?;
        if (i + 1) % 250_000 == 0 {
            writeln!(out, "  {} entries", i + 1)?;
        }
    }
    let root = tree.root()?;
    let samples = 1000u64;
    let mut rng = rand_core::OsRng;
    let indexes: Vec<u64> = (0..samples).map(|_| rng.next_u64() % entries).collect();
    let t = Instant::now();
    let proofs: Vec<_> = indexes
        .iter()
        .map(|&i| tree.inclusion(i, entries))
        .collect::<Result<_, _>>()?;
    let prove_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let leaves: Vec<_> = indexes.iter().map(|&i| leaf_hash(&entry(i))).collect();
    let t = Instant::now();
    for ((p, &i), leaf) in proofs.iter().zip(&indexes).zip(&leaves) {
        check_inclusion(p, entries, root, i, *leaf)?;
    }
    let check_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let old = entries / 2 + 1;
    let cproof = tree.consistency(old, entries)?;
    let old_root = tree.root_at(old)?;
    let t = Instant::now();
    for _ in 0..samples {
        check_consistency(&cproof, entries, root, old, old_root)?;
    }
    let cons_us = t.elapsed().as_secs_f64() * 1e6 / samples as f64;
    writeln!(
        out,
        "  inclusion proof {} bytes, made in {prove_us:.1} µs, checked in {check_us:.1} µs",
        proofs[0].len() * 32
    )?;

    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 0..4 {
        let log = round % 2 == 0;
        let rate = route(envelopes, log, out).await?;
        writeln!(
            out,
            "  routing with the log {}: {rate:.0} envelopes/s",
            if log { "on" } else { "off" }
        )?;
        if log { on.push(rate) } else { off.push(rate) }
    }
    let mut full = Vec::new();
    for _ in 0..2 {
        let rate = crate::hub::route(
            &one_by_one(envelopes),
            crate::hub::Target::Hub {
                log: true,
                postgres: None,
                prefill: entries,
                replicas: 1,
            },
            out,
        )
        .await?;
        writeln!(
            out,
            "  routing with {entries} entries in the log already: {rate:.0} envelopes/s"
        )?;
        full.push(rate);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (on, off, full) = (best(&on), best(&off), best(&full));
    Ok(LogBench {
        entries,
        // Leaf 0 sits in the largest full subtree: its proof is the longest (random leaves near
        // the end of the tree have shorter ones, so a random one would make the figure wander).
        inclusion_proof_bytes: tree.inclusion(0, entries)?.len() * 32,
        consistency_proof_bytes: cproof.len() * 32,
        prove_inclusion_us: prove_us,
        check_inclusion_us: check_us,
        check_consistency_us: cons_us,
        envelopes,
        routed_per_s_log_on: on,
        routed_per_s_log_off: off,
        routed_per_s_full_log: full,
        ratio_full_over_empty: full / on,
        ratio_on_over_off: on / off,
    })
}

/// Envelopes of 4 KiB per second a fresh hub on SQLite accepts (durably, with a signed receipt
/// each), with its log integrated or not.
async fn route(envelopes: usize, log: bool, out: &mut dyn Write) -> anyhow::Result<f64> {
    crate::hub::route(
        &one_by_one(envelopes),
        crate::hub::Target::Hub {
            log,
            postgres: None,
            prefill: 0,
            replicas: 1,
        },
        out,
    )
    .await
}

/// The log bench's load: 4 KiB envelopes, one per `Send`, from the usual senders.
fn one_by_one(envelopes: usize) -> crate::hub::Load {
    crate::hub::Load {
        envelopes,
        senders: crate::hub::SENDERS,
        size: 4000,
        per_call: 1,
    }
}

//! `overstap bench handover`: whole handovers, node to hub to node, in one region on this
//! machine.
//!
//! Method. A region of one school and five mbo colleges runs in this process (hub and six nodes,
//! each on its own SQLite file, TLS between all of them, on 127.0.0.1). The school registers
//! students, each with a passport signed by the student and a consent for one of the five mbo
//! colleges (in turn), and waits until the school has recorded every student card in the hub's
//! log. Nothing of that is timed.
//! - **Cohort push.** The school sends `cohort` passports, 16 `SendPassport` calls at a time, and
//!   the clock stops when the five mbo nodes together have stored all of them (each package
//!   verified, opened and stored in the mbo's database; the node acks right after). Read every
//!   10 ms from the mbo nodes' databases.
//! - **Latency.** Then `samples` more passports, one at a time at half the rate the cohort push
//!   reached, each timed from the `SendPassport` call until its row is in the receiving mbo's
//!   database (read every millisecond). p50 and p99 of those.
//!
//! Under valgrind's callgrind (`--callgrind N`, what `cli/bench/scripts/instructions` uses),
//! instructions are counted only from the cohort push until its answers are home and every
//! node has proven its envelopes in the hub's log; the region's background intervals and this
//! bench's own polling are stretched N times, so that they come as often per envelope as at full
//! speed.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use overstap_proto::pb::{
    MemberKind, NodeStatusRequest, SendPassportRequest, SendPassportsRequest,
};
use serde::Serialize;
use sqlx::AnyPool;

use overstap_region::cast::SAM_ANSWERS;
use overstap_region::passport::{
    Answers, GrantRequest, draft_from_answers, make_grant, sign_passport, upload_grant,
};
use overstap_region::region::{Org, Region, database_pool};

#[derive(Debug, Serialize)]
pub struct HandoverBench {
    pub cohort: usize,
    pub mbo_nodes: usize,
    pub cohort_seconds: f64,
    pub cohort_per_s: f64,
    /// Envelopes the mbo nodes took in per commit during the cohort push.
    pub mbo_envelopes_per_commit: f64,
    pub samples: usize,
    pub latency_rate_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

pub(crate) const SCHOOL: &str = "25LP";
pub(crate) const MBOS: [&str; 5] = ["30RT", "27XK", "26AB", "28CD", "29EF"];

/// `n` students of 17 registered at the school with a passport each, and a consent for one of
/// the mbo colleges (in turn); returns (grant id, mbo) pairs.
async fn prepare(region: &Region, n: usize, first: usize) -> anyhow::Result<Vec<(String, usize)>> {
    prepare_grants(region, n, first, false).await
}

/// [`prepare`], with consents that let the college fetch (`may_fetch`) or not.
pub(crate) async fn prepare_grants(
    region: &Region,
    n: usize,
    first: usize,
    may_fetch: bool,
) -> anyhow::Result<Vec<(String, usize)>> {
    let mut api = region.api(SCHOOL).await?;
    let answers: Answers = serde_json::from_str(SAM_ANSWERS)?;
    let draft = draft_from_answers("pvs-mbo-v1", &answers)?;
    let now = overstap_node::system_clock()();
    let mut grants = Vec::with_capacity(n);
    for i in first..first + n {
        let wallet =
            overstap_region::cast::register(&mut api, &overstap_region::cast::birth_month(17), &[])
                .await?;
        sign_passport(&mut api, &wallet, &draft, None, now).await?;
        let mbo = i % MBOS.len();
        let req = GrantRequest {
            to: MBOS[mbo].into(),
            sections: vec!["wie-ben-ik".into()],
            purpose: "intake".into(),
            not_before: now - 60,
            not_after: now + 30 * 86_400,
            live: false,
            may_fetch,
        };
        let grant = make_grant(&wallet, "pvs-mbo-v1", &req, None, now)?;
        grants.push((upload_grant(&mut api, grant).await?, mbo));
    }
    Ok(grants)
}

/// Packages stored at each mbo node, read from its database.
pub(crate) async fn stored(pools: &[AnyPool]) -> anyhow::Result<usize> {
    let mut total = 0;
    for p in pools {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM received")
            .fetch_one(p)
            .await?;
        total += n as usize;
    }
    Ok(total)
}

/// Waits until no node has anything left to send and the school has stopped taking in answers
/// (the same count for three looks, 100 ms apart).
pub(crate) async fn settle(region: &Region, school: &AnyPool, slow: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120) * slow;
    let (mut last, mut same) = (None, 0);
    loop {
        let mut pending = 0;
        for id in std::iter::once(SCHOOL).chain(MBOS) {
            let s = region.api(id).await?.status(NodeStatusRequest {}).await?;
            pending += s.into_inner().outbox_pending;
        }
        let taken_in: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed")
            .fetch_one(school)
            .await?;
        if pending == 0 && last == Some(taken_in) {
            same += 1;
            if same == 3 {
                return Ok(());
            }
        } else {
            same = 0;
        }
        last = Some(taken_in);
        if Instant::now() > deadline {
            bail!("after 2 minutes the region still has {pending} envelopes to send");
        }
        tokio::time::sleep(Duration::from_millis(100) * slow).await;
    }
}

/// Waits until every node has proven each envelope it sent or took in to be in the hub's log
/// (its log check's inclusion proofs): that work is part of each handover.
async fn proven(school: &AnyPool, mbos: &[AnyPool], slow: u32) -> anyhow::Result<()> {
    const UNPROVEN: &str = "SELECT
        (SELECT COUNT(*) FROM outbox WHERE receipt IS NOT NULL
           AND envelope_id NOT IN (SELECT envelope_id FROM log_proofs))
      + (SELECT COUNT(*) FROM processed WHERE receipt IS NOT NULL AND body_sha256 IS NOT NULL
           AND envelope_id NOT IN (SELECT envelope_id FROM log_proofs))";
    for (id, pool) in std::iter::once(SCHOOL)
        .zip([school])
        .chain(MBOS.into_iter().zip(mbos))
    {
        until_zero(pool, UNPROVEN, slow, |n| {
            format!("{id} still has {n} envelopes not proven in the hub's log")
        })
        .await?;
    }
    Ok(())
}

/// Reads the count `sql` every 100 ms (stretched `slow` times) until it is 0; after a minute
/// (stretched), `late` says what the count left means.
async fn until_zero(
    pool: &AnyPool,
    sql: &str,
    slow: u32,
    late: impl Fn(i64) -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60) * slow;
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        if n == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{}", late(n));
        }
        tokio::time::sleep(Duration::from_millis(100) * slow).await;
    }
}

/// Switches callgrind's counting on or off for this process (`callgrind_control -i`).
fn instrument(on: bool) -> anyhow::Result<()> {
    let status = std::process::Command::new("callgrind_control")
        .args(["-i", if on { "on" } else { "off" }])
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            anyhow::anyhow!("callgrind_control could not run ({e}); is valgrind installed?")
        })?;
    if !status.success() {
        bail!("callgrind_control -i failed ({status}); run this under valgrind --tool=callgrind");
    }
    Ok(())
}

pub async fn handover_bench(
    cohort: usize,
    samples: usize,
    rate: Option<f64>,
    callgrind: Option<u32>,
    out: &mut dyn Write,
) -> anyhow::Result<HandoverBench> {
    let slow = callgrind.unwrap_or(1).max(1);
    if callgrind.is_some() {
        overstap_region::region::stretch_background(slow);
    }
    let tmp = tempfile::tempdir()?;
    let region = start_region(tmp.path()).await?;
    writeln!(
        out,
        "A region of one school and {} mbo colleges; registering {} students with a passport and \
         a consent each...",
        MBOS.len(),
        cohort + samples
    )?;
    let started = Instant::now();
    let grants = prepare(&region, cohort, 0).await?;
    let later = prepare(&region, samples, cohort).await?;
    writeln!(
        out,
        "  ready after {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    let mut pools = Vec::new();
    for id in MBOS {
        pools.push(database_pool(&region.node_database_url(id)?).await?);
    }
    let school = database_pool(&region.node_database_url(SCHOOL)?).await?;

    // The cohort push.
    writeln!(
        out,
        "Sending {cohort} passports in one call (as `overstap send` does for a class)..."
    )?;
    // The students' cards are recorded in the hub's log by the school's log loop, one call each:
    // setup, not handover work, and it must not run beside the push it would slow down.
    until_zero(
        &school,
        "SELECT COUNT(*) FROM card_log WHERE log_index IS NULL",
        slow,
        |n| format!("{n} student cards are still not in the hub's log"),
    )
    .await?;
    if callgrind.is_some() {
        instrument(true)?;
    }
    let started = Instant::now();
    let results = region
        .api(SCHOOL)
        .await?
        .send_passports(SendPassportsRequest {
            grant_ids: grants.iter().map(|(g, _)| g.clone()).collect(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .results;
    if let Some(failed) = results.iter().find(|r| !r.error.is_empty()) {
        bail!("{} was not sent: {}", failed.grant_id, failed.error);
    }
    let sent = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = stored(&pools).await?;
        if n >= cohort {
            break;
        }
        if Instant::now() > deadline {
            bail!("after 10 minutes the mbo nodes hold {n} of {cohort} packages");
        }
        tokio::time::sleep(Duration::from_millis(10) * slow).await;
    }
    let cohort_seconds = started.elapsed().as_secs_f64();
    let cohort_per_s = cohort as f64 / cohort_seconds;
    writeln!(
        out,
        "  all sent after {sent:.2} s, all stored at the mbo nodes after {cohort_seconds:.2} s \
         ({cohort_per_s:.0}/s)"
    )?;
    // How many envelopes shared a commit at the mbo nodes, from their own histograms.
    let (mut sum, mut count) = (0.0, 0.0);
    for id in MBOS {
        let url = region.metrics_url(id)?;
        sum += crate::subscribers::metric(&url, "overstap_node_inbox_commit_envelopes_sum").await?;
        count +=
            crate::subscribers::metric(&url, "overstap_node_inbox_commit_envelopes_count").await?;
    }
    let mbo_envelopes_per_commit = sum / count.max(1.0);
    writeln!(
        out,
        "  the mbo nodes took them in with {count:.0} commits, {mbo_envelopes_per_commit:.1} \
         envelopes per commit"
    )?;

    // The cohort's answers (each mbo's status back to the school) are still under way; the
    // single handovers are timed once the region is quiet again.
    writeln!(out, "Waiting for the cohort's answers to settle...")?;
    settle(&region, &school, slow).await?;
    if callgrind.is_some() {
        proven(&school, &pools, slow).await?;
        instrument(false)?;
    }

    // Latency at half that rate, or at the rate asked for.
    let (rate, which) = match rate {
        Some(r) => (r, "as asked"),
        None => (cohort_per_s / 2.0, "half the cohort rate"),
    };
    let gap = Duration::from_secs_f64(1.0 / rate);
    writeln!(
        out,
        "Timing {samples} handovers one by one at {rate:.0}/s ({which})..."
    )?;
    let api = region.api(SCHOOL).await?;
    let mut ms = time_one_by_one(&pools, later, gap, |grant_id, _| {
        let mut api = api.clone();
        async move {
            api.send_passport(SendPassportRequest {
                grant_id,
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let (p50, p99, max) = percentiles(&mut ms);
    writeln!(
        out,
        "  p50 {p50:.1} ms, p99 {p99:.1} ms, slowest {max:.1} ms"
    )?;
    for p in pools {
        p.close().await;
    }
    school.close().await;
    region.shutdown().await?;
    Ok(HandoverBench {
        cohort,
        mbo_nodes: MBOS.len(),
        cohort_seconds,
        cohort_per_s,
        mbo_envelopes_per_commit,
        samples,
        latency_rate_per_s: rate,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
    })
}

/// Starts each of `later` (grant id, mbo) with `start(grant id, mbo)`, one every `gap`, and times each from its
/// start until its row is in the receiving mbo's database; the times in ms, in start order.
pub(crate) async fn time_one_by_one<F, Fut>(
    pools: &[AnyPool],
    later: Vec<(String, usize)>,
    gap: Duration,
    mut start: F,
) -> anyhow::Result<Vec<f64>>
where
    F: FnMut(String, usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // One watcher looks for every handover under way, at each mbo that has one, once a
    // millisecond: a watcher per handover would load the machine more the slower handovers get.
    let (started_tx, mut started_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, usize, Instant)>();
    let watch_pools = pools.to_vec();
    let watcher = tokio::spawn(async move {
        let mut under_way: Vec<Vec<(String, Instant)>> = vec![Vec::new(); watch_pools.len()];
        let mut ms = Vec::new();
        let mut open = true;
        loop {
            while let Ok((grant_id, mbo, start)) = started_rx.try_recv() {
                under_way[mbo].push((grant_id, start));
            }
            if started_rx.is_closed() && started_rx.is_empty() {
                open = false;
            }
            for (mbo, waiting) in under_way.iter_mut().enumerate() {
                if waiting.is_empty() {
                    continue;
                }
                let list = waiting
                    .iter()
                    .map(|(g, _)| format!("'{}'", g.replace('\'', "''")))
                    .collect::<Vec<_>>()
                    .join(",");
                let arrived: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT grant_id FROM received WHERE grant_id IN ({list})"
                ))
                .fetch_all(&watch_pools[mbo])
                .await?;
                let now = Instant::now();
                waiting.retain(|(g, start)| {
                    if arrived.contains(g) {
                        ms.push(now.duration_since(*start).as_secs_f64() * 1e3);
                        false
                    } else {
                        true
                    }
                });
                if let Some((g, start)) = waiting.first()
                    && start.elapsed() > Duration::from_secs(60)
                {
                    bail!("{g} did not arrive within a minute");
                }
            }
            if !open && under_way.iter().all(Vec::is_empty) {
                return Ok::<_, anyhow::Error>(ms);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut next = Instant::now();
    for (grant_id, mbo) in later {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        let at = Instant::now();
        start(grant_id.clone(), mbo).await?;
        started_tx.send((grant_id, mbo, at))?;
    }
    drop(started_tx);
    watcher.await?
}

/// The region of these benchmarks: a school and the five mbo colleges, in `dir`.
pub(crate) async fn start_region(dir: &std::path::Path) -> anyhow::Result<Region> {
    let mut orgs = vec![Org::new(SCHOOL, MemberKind::School, "Vmbo De Brug")];
    for (i, id) in MBOS.iter().enumerate() {
        orgs.push(Org::new(id, MemberKind::Mbo, &format!("Mbo {}", i + 1)));
    }
    Region::start(dir, &orgs).await
}

/// p50, p99 and the slowest of `ms` (nearest rank), sorting it.
pub(crate) fn percentiles(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (pick(0.50), pick(0.99), pick(1.0))
}

//! `overstap bench pull`: recipients pulling, beside the school pushing, in one region on this
//! machine.
//!
//! Method. The region of `overstap bench handover` (a school and five mbo colleges, each node on
//! its own SQLite file, TLS between all, on 127.0.0.1). The school registers students with a
//! passport each and a consent for one of the colleges in turn: `cohort` that let the college
//! fetch, `cohort` that do not, and `samples` more that do (not timed). Once every college holds
//! the school's notices:
//! - **Pull cohort.** Each college asks for its share of the first `cohort` passports, 16
//!   `FetchPassport` calls at a time; the clock stops when the colleges together have stored all
//!   of them (read every 10 ms from their databases).
//! - **Push cohort,** after the answers settled: the school sends the second `cohort` in one
//!   `SendPassports` call, timed the same way. Pull rate ÷ push rate, from one run.
//! - **Latency.** Then `samples` pulls one at a time at half the pull rate, each timed from the
//!   college's `FetchPassport` call until the passport is in its database (read every ms).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use overstap_proto::pb::{FetchPassportRequest, SendPassportsRequest};
use serde::Serialize;
use sqlx::AnyPool;

use crate::handover::{
    MBOS, SCHOOL, percentiles, prepare_grants, settle, start_region, stored, time_one_by_one,
};
use overstap_region::region::database_pool;

#[derive(Debug, Serialize)]
pub struct PullBench {
    pub cohort: usize,
    pub mbo_nodes: usize,
    pub pull_seconds: f64,
    pub pull_per_s: f64,
    pub push_seconds: f64,
    pub push_per_s: f64,
    /// Pull rate ÷ push rate.
    pub pull_to_push: f64,
    pub samples: usize,
    pub latency_rate_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// Notices held at the colleges, read from their databases.
async fn notices(pools: &[AnyPool]) -> anyhow::Result<usize> {
    let mut total = 0;
    for p in pools {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fetchable")
            .fetch_one(p)
            .await?;
        total += n as usize;
    }
    Ok(total)
}

/// Waits until the colleges hold `n` passports (at most 10 minutes); the seconds since `from`.
async fn until_stored(pools: &[AnyPool], n: usize, from: Instant) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let held = stored(pools).await?;
        if held >= n {
            return Ok(from.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("after 10 minutes the colleges hold {held} of {n} passports");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn pull_bench(
    cohort: usize,
    samples: usize,
    out: &mut dyn Write,
) -> anyhow::Result<PullBench> {
    let tmp = tempfile::tempdir()?;
    let region = start_region(tmp.path()).await?;
    writeln!(
        out,
        "A region of one school and {} mbo colleges; registering {} students with a passport and \
         a consent each...",
        MBOS.len(),
        2 * cohort + samples
    )?;
    let started = Instant::now();
    let pulled = prepare_grants(&region, cohort, 0, true).await?;
    let pushed = prepare_grants(&region, cohort, cohort, false).await?;
    let later = prepare_grants(&region, samples, 2 * cohort, true).await?;
    let mut pools = Vec::new();
    for id in MBOS {
        pools.push(database_pool(&region.node_database_url(id)?).await?);
    }
    let school = database_pool(&region.node_database_url(SCHOOL)?).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while notices(&pools).await? < cohort + samples {
        if Instant::now() > deadline {
            bail!("after 10 minutes the colleges do not hold every notice");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&region, &school, 1).await?;
    writeln!(
        out,
        "  ready after {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    let mut apis = Vec::new();
    for id in MBOS {
        apis.push(region.api(id).await?);
    }

    writeln!(
        out,
        "The colleges fetch {cohort} passports, 16 requests at a time..."
    )?;
    let started = Instant::now();
    for chunk in pulled.chunks(16) {
        let mut calls = tokio::task::JoinSet::new();
        for (grant_id, mbo) in chunk {
            let mut api = apis[*mbo].clone();
            let grant_id = grant_id.clone();
            calls.spawn(async move {
                api.fetch_passport(FetchPassportRequest {
                    grant_id,
                    staff_user: "bench".into(),
                })
                .await
            });
        }
        while let Some(r) = calls.join_next().await {
            r??;
        }
    }
    let pull_seconds = until_stored(&pools, cohort, started).await?;
    let pull_per_s = cohort as f64 / pull_seconds;
    writeln!(
        out,
        "  all stored at the colleges after {pull_seconds:.2} s ({pull_per_s:.0}/s)"
    )?;
    settle(&region, &school, 1).await?;

    writeln!(out, "The school sends {cohort} passports in one call...")?;
    let started = Instant::now();
    let results = region
        .api(SCHOOL)
        .await?
        .send_passports(SendPassportsRequest {
            grant_ids: pushed.iter().map(|(g, _)| g.clone()).collect(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .results;
    if let Some(failed) = results.iter().find(|r| !r.error.is_empty()) {
        bail!("{} was not sent: {}", failed.grant_id, failed.error);
    }
    let push_seconds = until_stored(&pools, 2 * cohort, started).await?;
    let push_per_s = cohort as f64 / push_seconds;
    writeln!(
        out,
        "  all stored at the colleges after {push_seconds:.2} s ({push_per_s:.0}/s)"
    )?;
    settle(&region, &school, 1).await?;

    let rate = pull_per_s / 2.0;
    writeln!(
        out,
        "Timing {samples} pulls one by one at {rate:.0}/s (half the pull rate)..."
    )?;
    let mut ms = time_one_by_one(
        &pools,
        later,
        Duration::from_secs_f64(1.0 / rate),
        |grant_id, mbo| {
            let mut api = apis[mbo].clone();
            async move {
                api.fetch_passport(FetchPassportRequest {
                    grant_id,
                    staff_user: "bench".into(),
                })
                .await?;
                Ok(())
            }
        },
    )
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
    Ok(PullBench {
        cohort,
        mbo_nodes: MBOS.len(),
        pull_seconds,
        pull_per_s,
        push_seconds,
        push_per_s,
        pull_to_push: pull_per_s / push_per_s,
        samples,
        latency_rate_per_s: rate,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: max,
    })
}

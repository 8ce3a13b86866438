//! `overstap demo --year`: a larger region (ten schools, four colleges, three municipalities)
//! and a school year of traffic through it, for the coordinators' dashboard to show. The year
//! runs through the real protocol on a moved clock; see [`overstap_region::year`].

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use overstap_region::region::Region;
use overstap_region::year::{self, MovedClock, YEAR_COORDINATOR, YearPlan};

/// Runs the year in a region under `dir` and writes what it handed over to `year-traffic.json`
/// there; with `serve`, prints the dashboard's link and keeps the region running until Ctrl-C.
pub async fn run(
    dir: &Path,
    out: &mut dyn Write,
    serve: bool,
    small: bool,
    handovers: Option<usize>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let clock = MovedClock::default();
    let school_year = YearPlan::last_school_year(clock.now());
    let mut plan = if small {
        YearPlan::small(school_year)
    } else {
        YearPlan::full(school_year)
    };
    if let Some(n) = handovers {
        plan.handovers = n;
    }
    let (since, _) = year::school_year_bounds(school_year);
    writeln!(
        out,
        "Overstap demo: a school year ({school_year}-{}) in a region of {} schools, {} mbo colleges and {} municipalities.",
        school_year + 1,
        plan.schools,
        plan.colleges,
        plan.municipalities
    )?;
    writeln!(
        out,
        "Every handover goes through the real protocol; only the clock is moved, day by day. Files under {}.",
        dir.display()
    )?;
    clock.set(since);
    let mut region = Region::start_with_clock(dir, &plan.orgs(), clock.as_clock()).await?;
    let terminal = std::io::stderr().is_terminal();
    let mut shown = 0;
    let traffic = year::run(&mut region, &clock, &plan, |done, all| {
        // A line that counts up at a terminal; every tenth part otherwise.
        let tenth = done * 10 / all.max(1);
        if terminal {
            eprint!(
                "\r   {done} of {all} handovers ({}%)",
                done * 100 / all.max(1)
            );
            if done == all {
                eprintln!();
            }
        } else if tenth > shown || done == all {
            shown = tenth;
            eprintln!(
                "   {done} of {all} handovers ({}%)",
                done * 100 / all.max(1)
            );
        }
    })
    .await;
    let traffic = match traffic {
        Ok(t) => t,
        Err(e) => {
            region.shutdown().await?;
            return Err(e.context("the school year did not run through"));
        }
    };
    std::fs::write(
        dir.join("year-traffic.json"),
        serde_json::to_vec_pretty(&traffic)?,
    )?;
    let picked = traffic
        .handovers
        .iter()
        .filter(|h| h.picked_up_at.is_some())
        .count();
    let withdrawn = traffic
        .handovers
        .iter()
        .filter(|h| h.withdrawn_at.is_some())
        .count();
    writeln!(
        out,
        "{} handovers in {:.0} s: {picked} picked up, {} never picked up, {withdrawn} consents withdrawn.",
        traffic.handovers.len(),
        started.elapsed().as_secs_f64(),
        traffic.handovers.len() - picked,
    )?;
    writeln!(
        out,
        "What was handed over, for checking: {}",
        dir.join("year-traffic.json").display()
    )?;
    if !serve {
        writeln!(
            out,
            "Run it with --serve to keep the region running and open the coordinators' dashboard."
        )?;
        return region.shutdown().await;
    }
    let token = region.authority.dashboard_token(YEAR_COORDINATOR, 12)?;
    writeln!(
        out,
        "The coordinators' dashboard, signed in as {YEAR_COORDINATOR} for 12 hours (your browser will warn that it does not know the region's own CA):"
    )?;
    writeln!(
        out,
        "   {}?period={}#token={token}",
        region.dashboard_url()?,
        traffic.school_year
    )?;
    writeln!(out, "Press Ctrl-C to stop.")?;
    out.flush()?;
    let _ = tokio::signal::ctrl_c().await;
    region.shutdown().await
}

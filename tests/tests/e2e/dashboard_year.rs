//! A coordinator reads a school year. The year region in small (three schools, two colleges, a
//! municipality, 160 handovers through the real protocol on a moved clock) runs in this process;
//! the dashboard, in Dutch, in a real headless browser, must show the numbers of the traffic that
//! was generated: each shown count exactly, each hidden count only where it is small or protects
//! a small one. The CSV export and the printable page carry the same numbers, and axe-core finds
//! nothing at 1280 and 390 px.

use std::collections::BTreeMap;
use std::path::PathBuf;

use overstap_region::region::Region;
use overstap_region::year::{self, MovedClock, YEAR_COORDINATOR, YearPlan};

/// What the page shows for a count whose true value is `truth`: the number itself, "<5" for
/// 1 to 4, or "x" (hidden to protect a small one).
fn agrees(shown: &str, truth: usize, what: &str) {
    match shown {
        "x" => {}
        "<5" => assert!((1..5).contains(&truth), "{what}: <5 shown for {truth}"),
        n => assert_eq!(
            n.parse::<usize>().ok(),
            Some(truth),
            "{what}: {n} shown for {truth}"
        ),
    }
}

fn month(t: i64) -> String {
    overstap_hub::stats::periods(t)[2].1.clone()
}

#[tokio::test]
async fn a_coordinator_reads_a_school_year_with_the_numbers_of_its_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = MovedClock::default();
    let school_year = YearPlan::last_school_year(clock.now());
    let plan = YearPlan::small(school_year);
    clock.set(year::school_year_bounds(school_year).0);
    let mut region = Region::start_with_clock(tmp.path(), &plan.orgs(), clock.as_clock())
        .await
        .unwrap();
    let mut steps = Vec::new();
    let traffic = year::run(&mut region, &clock, &plan, |done, all| {
        steps.push((done, all))
    })
    .await
    .unwrap();
    // Progress was told for every handover, up to all of them.
    assert_eq!(steps.len(), plan.handovers);
    assert_eq!(steps.last(), Some(&(plan.handovers, plan.handovers)));
    let handed = &traffic.handovers;
    assert_eq!(handed.len(), plan.handovers);
    // The year has what the plan promises: the spring peak, a receiver that never picked up
    // after 1 June, students who withdrew.
    let in_month = |m: &str| {
        handed
            .iter()
            .filter(|h| month(h.sent_at).ends_with(m))
            .count()
    };
    assert!(in_month("-04") > 2 * in_month("-10"), "a spring peak");
    let never: Vec<_> = handed.iter().filter(|h| h.picked_up_at.is_none()).collect();
    assert!(
        !never.is_empty()
            && never
                .iter()
                .all(|h| month(h.sent_at) >= month(traffic.until - 62 * 86_400))
    );
    assert!(handed.iter().any(|h| h.withdrawn_at.is_some()));

    let url = region.dashboard_url().unwrap();
    let token = region
        .authority
        .dashboard_token(YEAR_COORDINATOR, 1)
        .unwrap();
    let link = format!("{url}?period={}#token={token}", traffic.school_year);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let started = std::time::Instant::now();
    let run = crate::web::spawn_script(
        "dashboard_year.mjs",
        &[&link, &shots.to_string_lossy()],
        &[],
    );
    let seen = crate::web::browser_output(run, started, &shots).await;
    crate::web::check_pages(&seen, &["year", "year-print"]);
    let n = |id: &str| -> String {
        seen["numbers"][id]
            .as_str()
            .unwrap_or_else(|| panic!("the page shows no {id}"))
            .to_string()
    };

    // The totals.
    assert_eq!(n("total-packages"), handed.len().to_string());
    let withdrawn = handed.iter().filter(|h| h.withdrawn_at.is_some()).count();
    agrees(&n("revocations"), withdrawn, "withdrawn");
    // Each school to each receiver.
    let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    for h in handed {
        *pairs.entry((h.from.clone(), h.to.clone())).or_default() += 1;
    }
    let mut shown_pairs = 0;
    for ((from, to), count) in &pairs {
        let shown = n(&format!("flow-{from}-{to}"));
        agrees(&shown, *count, &format!("{from} to {to}"));
        shown_pairs += usize::from(shown.parse::<usize>().is_ok());
    }
    assert!(
        shown_pairs * 2 > pairs.len(),
        "most flows are shown: {pairs:?}"
    );
    // Each month of the school year, schools to colleges.
    let kind: BTreeMap<&str, &str> = traffic
        .members
        .iter()
        .map(|(org, _, kind)| (org.as_str(), kind.as_str()))
        .collect();
    for m in year_months(&traffic) {
        let truth = handed
            .iter()
            .filter(|h| month(h.sent_at) == m && kind[h.to.as_str()] == "mbo")
            .count();
        let id = format!("volume-{m}-school-mbo");
        match seen["numbers"][&id].as_str() {
            Some(shown) => agrees(shown, truth, &id),
            None => assert_eq!(truth, 0, "{id} is missing"),
        }
    }
    // Per receiver: the passports it never picked up.
    let off = &never[0].to;
    agrees(
        &n(&format!("dropout-{off}-never")),
        never.len(),
        "never picked up",
    );
    agrees(
        &n(&format!("dropout-{off}-packages")),
        handed.iter().filter(|h| &h.to == off).count(),
        "to the receiver switched off",
    );
    for (org, _, kind) in &traffic.members {
        if kind != "school" && kind != "coordinator" && org != off {
            assert_eq!(n(&format!("dropout-{org}-never")), "0", "{org}");
        }
    }
    // Per receiver: the passports picked up without an intake planned within 14 days.
    let mut no_intake_shown = 0;
    for (org, _, kind) in &traffic.members {
        if kind == "school" || kind == "coordinator" {
            continue;
        }
        let truth = handed
            .iter()
            .filter(|h| &h.to == org && h.picked_up_at.is_some())
            .filter(|h| h.intake_at.is_none_or(|t| t > h.sent_at + 14 * 86_400))
            .count();
        let shown = n(&format!("dropout-{org}-nointake"));
        agrees(&shown, truth, &format!("no intake at {org}"));
        no_intake_shown += usize::from(shown.parse::<usize>().is_ok_and(|v| v > 0));
    }
    assert!(
        no_intake_shown > 0,
        "a receiver shows passports without an intake"
    );
    // The words a coordinator reads.
    let text = seen["text"].as_str().unwrap();
    for words in [
        "Schooljaar",
        "Paspoorten per maand",
        "Hoe snel werden paspoorten opgehaald?",
        "Niet op tijd opgehaald",
        "Nog steeds niet",
        "Geen intake na 14 dagen",
        "Download de cijfers",
    ] {
        assert!(text.contains(words), "{words:?} in {text}");
    }
    // Text of the chart at a fixed size: no larger on a laptop than on a phone, and 12 px.
    for width in ["phone", "laptop"] {
        for h in seen[width]["chartFont"].as_array().unwrap() {
            let h = h.as_f64().unwrap();
            assert!((10.0..20.0).contains(&h), "{width}: chart text {h} px high");
        }
    }
    assert!(seen["phone"]["chartWidth"].as_f64().unwrap() <= 390.0);
    assert!(
        seen["phone"]["scrollHints"].as_u64().unwrap() >= 1,
        "a wide table says so on a phone"
    );

    // The CSV: the same numbers, as a download.
    let csv = &seen["csv"];
    assert_eq!(csv["status"], 200);
    assert!(csv["type"].as_str().unwrap().starts_with("text/csv"));
    assert!(
        csv["disposition"]
            .as_str()
            .unwrap()
            .contains(&format!("overstap-{}.csv", traffic.school_year))
    );
    let body = csv["body"].as_str().unwrap();
    assert!(body.starts_with("section,period,from_org,from_name,to_org,to_name,measure,value\n"));
    assert!(
        body.contains(&format!(
            "total,{},,,,,packages,{}\n",
            traffic.school_year,
            handed.len()
        )),
        "{body}"
    );
    for (from, to) in pairs.keys() {
        let shown = n(&format!("flow-{from}-{to}"));
        let row = body
            .lines()
            .find(|l| {
                l.starts_with("flow,")
                    && l.contains(&format!(",{from},"))
                    && l.contains(&format!(",{to},"))
                    && l.contains(",packages,")
            })
            .unwrap_or_else(|| panic!("no CSV row for {from} to {to}"));
        assert!(row.ends_with(&format!(",{shown}")), "{row} against {shown}");
    }
    // The printable page: the period's name and its totals.
    let print = seen["print"].as_str().unwrap();
    assert!(
        print.contains(&format!("Schooljaar {}", traffic.school_year)),
        "{print}"
    );
    assert!(
        print.contains(&format!("Paspoorten overgedragen\t{}", handed.len())),
        "{print}"
    );
    assert!(print.contains("Gemaakt op"), "{print}");

    // A quarter, chosen on the page: its numbers are the quarter's.
    let quarter = seen["quarter"].as_str().unwrap();
    let q = overstap_hub::stats::period::Period::parse(quarter).unwrap();
    let in_quarter = handed
        .iter()
        .filter(|h| h.sent_at >= q.since && h.sent_at < q.until)
        .count();
    agrees(
        seen["quarterNumbers"]["total-packages"].as_str().unwrap(),
        in_quarter,
        "the quarter's total",
    );
    assert!(
        seen["quarterText"]
            .as_str()
            .unwrap()
            .contains("2e kwartaal")
    );
    region.shutdown().await.unwrap();
}

/// The months of the school year, "2025-08" to "2026-07".
fn year_months(traffic: &year::Traffic) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = traffic.since + 86_400;
    while t < traffic.until {
        let m = month(t);
        if out.last() != Some(&m) {
            out.push(m);
        }
        t += 86_400;
    }
    out
}

//! `overstap stats`: the region's exchange in aggregate, for a coordinator. It asks the hub's
//! `Stats` service with the coordinator node's TLS identity and prints a table for people, or CSV
//! or JSON for programs. Counts below the hub's threshold arrive suppressed and read "<5" in
//! every format.

use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;
use overstap_proto::UnixTime;
use overstap_proto::pb::stats_client::StatsClient;
use overstap_proto::pb::{Count, StatsRequest, StatsResponse};

use crate::render_data::csv_field;
use overstap_region::client::{explain, hub_link_of};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

/// Which view of the exchange: organisation pairs, member kinds over time, who has envelopes
/// waiting, or the drop-out list per receiver.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum By {
    Pair,
    Kind,
    Waiting,
    Dropout,
}

/// `--since`: a date (`2026-09-01`) or a number of days back (`30d`).
pub fn parse_since(s: &str, now: UnixTime) -> anyhow::Result<UnixTime> {
    match s.strip_suffix('d').map(str::parse::<i64>) {
        Some(Ok(days)) if days > 0 => Ok(now - days * 86_400),
        Some(_) => anyhow::bail!("{s:?} is not a number of days such as 30d"),
        None => overstap_region::passport::parse_date(s),
    }
}

/// Asks the hub, as the coordinator whose node lives in `node_dir`.
pub async fn fetch(
    node_dir: &Path,
    since: UnixTime,
    until: UnixTime,
) -> anyhow::Result<StatsResponse> {
    let link = hub_link_of(node_dir)?;
    let mut client = StatsClient::new(link.channel()?);
    Ok(client
        .get_stats(StatsRequest { since, until })
        .await
        .map_err(explain)?
        .into_inner())
}

/// A count as every output shows it: the number, "<5" below the threshold, or "x" for one
/// hidden so that a small count cannot be worked out from it.
pub fn shown(c: &Option<Count>, threshold: u32) -> String {
    match c {
        Some(c) if !c.suppressed => c.value.to_string(),
        Some(c) if c.protects => "x".into(),
        _ => format!("<{threshold}"),
    }
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} days", s / 86_400),
    }
}

/// Renders the answer in the chosen view and format.
pub fn render(s: &StatsResponse, by: By, format: ReportFormat) -> anyhow::Result<String> {
    let t = s.threshold;
    let c = |x: &Option<Count>| shown(x, t);
    let mut out = String::new();
    match format {
        ReportFormat::Json => {
            out = serde_json::to_string_pretty(&overstap_hub::stats::to_json(s))?;
            out.push('\n');
        }
        ReportFormat::Csv => match by {
            By::Pair => {
                out.push_str(
                    "from_org,from_name,from_kind,to_org,to_name,to_kind,packages,envelopes\n",
                );
                for p in &s.pairs {
                    let fields = [
                        &p.from_org,
                        &p.from_name,
                        &p.from_kind,
                        &p.to_org,
                        &p.to_name,
                        &p.to_kind,
                        &c(&p.packages),
                        &c(&p.envelopes),
                    ];
                    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    writeln!(out, "{}", row.join(","))?;
                }
            }
            By::Kind => {
                out.push_str("granularity,period,from_kind,to_kind,packages,envelopes\n");
                for v in &s.volume {
                    writeln!(
                        out,
                        "{},{},{},{},{},{}",
                        v.granularity,
                        v.period,
                        v.from_kind,
                        v.to_kind,
                        c(&v.packages),
                        c(&v.envelopes)
                    )?;
                }
            }
            By::Dropout => {
                out.push_str("org_id,name,kind,packages,late,not_picked_up,no_intake\n");
                for d in &s.dropouts {
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{}",
                        csv_field(&d.org_id),
                        csv_field(&d.name),
                        d.kind,
                        c(&d.packages),
                        c(&d.late),
                        c(&d.not_picked_up),
                        c(&d.no_intake)
                    )?;
                }
            }
            By::Waiting => {
                out.push_str("org_id,name,kind,under_1_day,from_1_to_7_days,over_7_days,at_risk\n");
                for w in &s.waiting {
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{}",
                        csv_field(&w.org_id),
                        csv_field(&w.name),
                        w.kind,
                        c(&w.under_1_day),
                        c(&w.from_1_to_7_days),
                        c(&w.over_7_days),
                        w.at_risk
                    )?;
                }
            }
        },
        ReportFormat::Table => {
            writeln!(
                out,
                "The region's exchange from {} to {} (counts under {t} read \"<{t}\").",
                overstap_proto::format_date(s.since),
                overstap_proto::format_date(s.until)
            )?;
            match by {
                By::Pair => {
                    writeln!(
                        out,
                        "\nFrom → to                                     packages  envelopes"
                    )?;
                    for p in &s.pairs {
                        let from = format!("{} {}", p.from_org, p.from_name);
                        let to = format!("{} {}", p.to_org, p.to_name);
                        writeln!(
                            out,
                            "{:<20} → {:<22} {:>8} {:>10}",
                            from,
                            to,
                            c(&p.packages),
                            c(&p.envelopes)
                        )?;
                    }
                }
                By::Kind => {
                    writeln!(
                        out,
                        "\nWeek      From → to                  packages  envelopes"
                    )?;
                    for v in s.volume.iter().filter(|v| v.granularity == "week") {
                        writeln!(
                            out,
                            "{:<9} {:<26} {:>8} {:>10}",
                            v.period,
                            format!("{} → {}", v.from_kind, v.to_kind),
                            c(&v.packages),
                            c(&v.envelopes)
                        )?;
                    }
                    writeln!(out, "\nBy envelope kind:")?;
                    for k in &s.kinds {
                        writeln!(out, "  {:<18} {:>8}", k.kind, c(&k.envelopes))?;
                    }
                }
                By::Waiting => {}
                By::Dropout => {
                    writeln!(
                        out,
                        "\nNot picked up in time: handed over / not within 7 days / still not / no intake after 14 days"
                    )?;
                    for d in &s.dropouts {
                        writeln!(
                            out,
                            "  {:<8} {:<32} {:>6} / {:>5} / {:>5} / {:>5}",
                            d.org_id,
                            d.name,
                            c(&d.packages),
                            c(&d.late),
                            c(&d.not_picked_up),
                            c(&d.no_intake)
                        )?;
                    }
                }
            }
            writeln!(
                out,
                "\nWaiting to be picked up (under a day / 1-7 days / over 7 days):"
            )?;
            if s.waiting.is_empty() {
                writeln!(out, "  nothing is waiting")?;
            }
            for w in &s.waiting {
                writeln!(
                    out,
                    "  {:<8} {:<24} {:>4} / {:>4} / {:>4}{}",
                    w.org_id,
                    w.name,
                    c(&w.under_1_day),
                    c(&w.from_1_to_7_days),
                    c(&w.over_7_days),
                    if w.at_risk {
                        "  AT RISK: waiting over a week"
                    } else {
                        ""
                    }
                )?;
            }
            let latency = s.ack_latency.unwrap_or_default();
            match &latency.acked {
                Some(a) if !a.suppressed && a.value > 0 => writeln!(
                    out,
                    "\nPackages picked up: {}; from send to pick-up, median {}, 90% within {}.",
                    a.value,
                    duration(latency.median_secs),
                    duration(latency.p90_secs)
                )?,
                _ => writeln!(
                    out,
                    "\nPackages picked up: {}; too few to show how fast.",
                    c(&latency.acked)
                )?,
            }
            writeln!(
                out,
                "Erasures: {} (of which expiries: {}); consents withdrawn: {}.",
                c(&s.erasures),
                c(&s.expiries),
                c(&s.revocations)
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use overstap_proto::pb::{PairRow, WaitingRow};

    fn hidden() -> Option<Count> {
        Some(Count {
            value: 0,
            suppressed: true,
            protects: false,
        })
    }

    #[test]
    fn suppressed_counts_read_below_threshold_in_every_format() {
        let s = StatsResponse {
            threshold: 5,
            pairs: vec![PairRow {
                from_org: "25LP".into(),
                from_name: "Vmbo, \"De Brug\"".into(),
                to_org: "30RT".into(),
                packages: hidden(),
                envelopes: Some(Count {
                    value: 0,
                    suppressed: true,
                    protects: true,
                }),
                ..Default::default()
            }],
            waiting: vec![WaitingRow {
                org_id: "30RT".into(),
                over_7_days: hidden(),
                at_risk: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let csv = render(&s, By::Pair, ReportFormat::Csv).unwrap();
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "25LP,\"Vmbo, \"\"De Brug\"\"\",,30RT,,,<5,x"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&s, By::Pair, ReportFormat::Json).unwrap()).unwrap();
        assert_eq!(json["pairs"][0]["packages"], "<5");
        // Hidden to protect a small count: "x", never "<5" (it is not small) and never its value.
        assert_eq!(json["pairs"][0]["envelopes"], "x");
        assert_eq!(json["waiting"][0]["over_7_days"], "<5");
        assert_eq!(json["ack_latency"]["median_secs"], serde_json::Value::Null);
        let table = render(&s, By::Pair, ReportFormat::Table).unwrap();
        assert!(table.contains("AT RISK"), "{table}");
        assert!(table.contains("<5"), "{table}");
        let mut s = s;
        s.dropouts = vec![overstap_proto::pb::DropoutRow {
            org_id: "GM0148".into(),
            name: "Gemeente Dalfsen".into(),
            kind: "municipality".into(),
            packages: Some(Count {
                value: 12,
                ..Default::default()
            }),
            late: hidden(),
            not_picked_up: hidden(),
            no_intake: Some(Count {
                value: 0,
                ..Default::default()
            }),
        }];
        let csv = render(&s, By::Dropout, ReportFormat::Csv).unwrap();
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "GM0148,Gemeente Dalfsen,municipality,12,<5,<5,0"
        );
        let table = render(&s, By::Dropout, ReportFormat::Table).unwrap();
        assert!(table.contains("GM0148   Gemeente Dalfsen"), "{table}");
    }

    #[test]
    fn since_takes_a_date_or_days_back() {
        assert_eq!(parse_since("30d", 100 * 86_400).unwrap(), 70 * 86_400);
        assert_eq!(parse_since("1970-01-02", 0).unwrap(), 86_400);
        assert!(parse_since("soon", 0).is_err());
        assert!(parse_since("-3d", 0).is_err());
    }
}

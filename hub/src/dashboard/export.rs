//! The accounting exports of one period: a CSV file for spreadsheets and programs, and a page to
//! print. Both are made from the same JSON the dashboard draws ([`crate::stats::to_json`]), so
//! they carry exactly its numbers, with the same counts hidden ("<5", "x").

use overstap_words::{Lang, t};
use serde_json::Value;

/// A count as text: the number, "<5" or "x".
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A count for people: "1.500" in Dutch, "1,500" in English; "<5" and "x" as they are.
fn count(lang: Lang, v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return text(v);
    };
    let digits = n.to_string();
    let mark = if lang == Lang::Nl { '.' } else { ',' };
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(mark);
        }
        out.push(d);
    }
    out
}

/// The CSV: one row per count, `section,period,from_org,from_name,to_org,to_name,measure,value`.
/// Sections: `total` (the whole period), `volume` (per month or week and kind of flow, kinds in
/// the name columns), `flow` (per pair of organisations), `pickup` (per month handed over),
/// `dropout` (per receiving organisation) and `waiting` (what waits now, however old).
pub fn csv(data: &Value, period: &str) -> String {
    let mut out = String::from("section,period,from_org,from_name,to_org,to_name,measure,value\n");
    let mut row = |cols: [&str; 8]| {
        let line: Vec<String> = cols
            .iter()
            .map(|c| overstap_proto::spreadsheet_field(c))
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    };
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let kind_total = |k: &str| {
        data["kinds"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["kind"] == k))
            .map(|r| text(&r["envelopes"]))
            .unwrap_or_else(|| "0".into())
    };
    let latency = &data["ack_latency"];
    for (measure, value) in [
        ("packages", kind_total("package")),
        ("pull_requests", kind_total("pull_request")),
        ("status_messages", kind_total("status")),
        ("picked_up", text(&latency["acked"])),
        ("median_secs", text(&latency["median_secs"])),
        ("p90_secs", text(&latency["p90_secs"])),
        ("erasures", text(&data["erasures"])),
        ("expiries", text(&data["expiries"])),
        ("revocations", text(&data["revocations"])),
    ] {
        row(["total", period, "", "", "", "", measure, &value]);
    }
    for v in data["volume"].as_array().into_iter().flatten() {
        if v["granularity"] == "day" {
            continue;
        }
        let (from, to) = (s(v, "from_kind"), s(v, "to_kind"));
        let p = s(v, "period");
        row([
            "volume",
            &p,
            "",
            &from,
            "",
            &to,
            "packages",
            &text(&v["packages"]),
        ]);
        row([
            "volume",
            &p,
            "",
            &from,
            "",
            &to,
            "envelopes",
            &text(&v["envelopes"]),
        ]);
    }
    for p in data["pairs"].as_array().into_iter().flatten() {
        let cols = [
            s(p, "from_org"),
            s(p, "from_name"),
            s(p, "to_org"),
            s(p, "to_name"),
        ];
        for measure in ["packages", "envelopes"] {
            row([
                "flow",
                period,
                &cols[0],
                &cols[1],
                &cols[2],
                &cols[3],
                measure,
                &text(&p[measure]),
            ]);
        }
    }
    for p in data["pickup"].as_array().into_iter().flatten() {
        let month = s(p, "period");
        for (measure, key) in [
            ("picked_up", "acked"),
            ("median_secs", "median_secs"),
            ("p90_secs", "p90_secs"),
        ] {
            row(["pickup", &month, "", "", "", "", measure, &text(&p[key])]);
        }
    }
    for d in data["dropouts"].as_array().into_iter().flatten() {
        let (org, name) = (s(d, "org_id"), s(d, "name"));
        for measure in ["packages", "late", "not_picked_up", "no_intake"] {
            row([
                "dropout",
                period,
                "",
                "",
                &org,
                &name,
                measure,
                &text(&d[measure]),
            ]);
        }
    }
    for w in data["waiting"].as_array().into_iter().flatten() {
        let (org, name) = (s(w, "org_id"), s(w, "name"));
        for measure in ["under_1_day", "from_1_to_7_days", "over_7_days"] {
            row([
                "waiting",
                "now",
                "",
                "",
                &org,
                &name,
                measure,
                &text(&w[measure]),
            ]);
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A duration in the page's words: minutes, hours or days.
pub fn duration(lang: Lang, secs: &Value) -> String {
    let Some(s) = secs.as_i64() else {
        return "–".into();
    };
    if s < 60 {
        return t(lang, "dash_under_minute");
    }
    let (key, n) = if s < 120 {
        ("dash_secs", s)
    } else if s < 7_200 {
        ("dash_mins", (s + 30) / 60)
    } else if s < 172_800 {
        ("dash_hours", (s + 1_800) / 3_600)
    } else {
        ("dash_days", (s + 43_200) / 86_400)
    };
    t(lang, key).replace("{n}", &n.to_string())
}

/// A period's name for people: "Schooljaar 2025-2026", "1e kwartaal 2026".
pub fn period_label(lang: Lang, name: &str) -> String {
    match name.split_once('-') {
        Some((year, q)) if q.starts_with('Q') => t(lang, "dash_quarter")
            .replace("{q}", &q[1..])
            .replace("{year}", year),
        Some((from, to)) => t(lang, "dash_school_year")
            .replace("{from}", from)
            .replace("{to}", to),
        None => t(lang, "dash_last_year"),
    }
}

/// A month "2026-03" in words: "maart 2026".
pub fn month_label(lang: Lang, month: &str) -> String {
    let names = t(lang, "dash_months");
    let names: Vec<&str> = names.split(' ').collect();
    match month.split_once('-') {
        Some((y, m)) => match m.parse::<usize>() {
            Ok(m) if (1..=12).contains(&m) && names.len() == 12 => format!("{} {y}", names[m - 1]),
            _ => month.to_string(),
        },
        None => month.to_string(),
    }
}

/// A day "2026-12-07" in words: "7 december 2026".
pub fn day_label(lang: Lang, day: &str) -> String {
    match day.rsplit_once('-') {
        Some((month, d)) => {
            format!("{} {}", d.trim_start_matches('0'), month_label(lang, month))
        }
        None => day.to_string(),
    }
}

/// A table under its heading; the columns in `names` hold names, read from the left.
fn table(h: &mut String, caption: &str, head: &[String], rows: &[Vec<String>], names: &[usize]) {
    let class = |i: usize| {
        if names.contains(&i) {
            " class=\"name\""
        } else {
            ""
        }
    };
    h.push_str(&format!("<h2>{}</h2><table>", escape(caption)));
    h.push_str("<tr>");
    for (i, c) in head.iter().enumerate() {
        h.push_str(&format!("<th scope=\"col\"{}>{}</th>", class(i), escape(c)));
    }
    h.push_str("</tr>");
    for r in rows {
        h.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            h.push_str(&format!("<td{}>{}</td>", class(i), escape(c)));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// The printable page of one period: every table of the dashboard, as plain tables.
pub fn print_page(lang: Lang, data: &Value, period: &str, org: &str, today: &str) -> String {
    let w = |k: &str| escape(&t(lang, k));
    let kind = |k: &str| escape(&t(lang, &format!("dash_kind_{k}")));
    let mut h = String::new();
    let label = escape(&period_label(lang, period));
    h.push_str(&format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} · {label}</title><link rel=\"stylesheet\" href=\"/app.css\"><script src=\"/print.js\" defer></script></head><body class=\"print\"><main>",
        lang.tag(),
        w("dash_title"),
    ));
    h.push_str(&format!(
        "<h1>Overstap {} <span>{label}</span></h1><p class=\"hint\">{}</p><p class=\"no-print\"><button type=\"button\" id=\"print\">{}</button> <a href=\"/?period={}\">{}</a></p>",
        w("dash_region"),
        escape(
            &t(lang, "dash_print_made")
                .replace("{org}", org)
                .replace("{date}", &day_label(lang, today))
        ),
        w("dash_print_button"),
        escape(period),
        w("dash_print_back"),
    ));
    let kinds_total = |k: &str| {
        data["kinds"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["kind"] == k))
            .map(|r| count(lang, &r["envelopes"]))
            .unwrap_or_else(|| "0".into())
    };
    let latency = &data["ack_latency"];
    table(
        &mut h,
        &t(lang, "dash_print_totals"),
        &[t(lang, "dash_print_what"), t(lang, "dash_print_count")],
        &[
            vec![t(lang, "dash_packages"), kinds_total("package")],
            vec![t(lang, "dash_print_pulls"), kinds_total("pull_request")],
            vec![
                t(lang, "dash_print_picked_up"),
                count(lang, &latency["acked"]),
            ],
            vec![
                t(lang, "dash_median"),
                duration(lang, &latency["median_secs"]),
            ],
            vec![t(lang, "dash_erasures"), count(lang, &data["erasures"])],
            vec![
                t(lang, "dash_print_expired"),
                count(lang, &data["expiries"]),
            ],
            vec![
                t(lang, "dash_print_withdrawn"),
                count(lang, &data["revocations"]),
            ],
        ],
        &[],
    );
    // Per month (or week) and kind of flow.
    let volume: Vec<&Value> = data["volume"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["granularity"] == "month")
        .collect();
    let flows: std::collections::BTreeSet<(String, String)> = volume
        .iter()
        .filter(|v| v["packages"] != 0)
        .map(|v| (text(&v["from_kind"]), text(&v["to_kind"])))
        .collect();
    let months: std::collections::BTreeSet<String> =
        volume.iter().map(|v| text(&v["period"])).collect();
    let mut head = vec![t(lang, "dash_print_month")];
    head.extend(
        flows
            .iter()
            .map(|(f, to)| format!("{} → {}", kind(f), kind(to))),
    );
    let rows: Vec<Vec<String>> = months
        .iter()
        .map(|m| {
            let mut r = vec![month_label(lang, m)];
            r.extend(flows.iter().map(|(f, to)| {
                volume
                    .iter()
                    .find(|v| {
                        text(&v["period"]) == *m
                            && text(&v["from_kind"]) == *f
                            && text(&v["to_kind"]) == *to
                    })
                    .map(|v| count(lang, &v["packages"]))
                    .unwrap_or_else(|| "0".into())
            }));
            r
        })
        .collect();
    table(&mut h, &t(lang, "dash_per_month"), &head, &rows, &[]);
    let pairs: Vec<Vec<String>> = data["pairs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["packages"] != 0)
        .map(|p| {
            vec![
                format!("{} {}", text(&p["from_org"]), text(&p["from_name"])),
                format!("{} {}", text(&p["to_org"]), text(&p["to_name"])),
                count(lang, &p["packages"]),
            ]
        })
        .collect();
    table(
        &mut h,
        &t(lang, "dash_flows"),
        &[
            t(lang, "dash_print_from"),
            t(lang, "dash_print_to"),
            t(lang, "dash_packages"),
        ],
        &pairs,
        &[1],
    );
    let pickup: Vec<Vec<String>> = data["pickup"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                month_label(lang, &text(&p["period"])),
                count(lang, &p["acked"]),
                duration(lang, &p["median_secs"]),
                duration(lang, &p["p90_secs"]),
            ]
        })
        .collect();
    table(
        &mut h,
        &t(lang, "dash_pickup"),
        &[
            t(lang, "dash_print_month"),
            t(lang, "dash_print_picked_up"),
            t(lang, "dash_pickup_median"),
            t(lang, "dash_pickup_p90"),
        ],
        &pickup,
        &[],
    );
    let dropouts: Vec<Vec<String>> = data["dropouts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                format!("{} {}", text(&d["org_id"]), text(&d["name"])),
                count(lang, &d["packages"]),
                count(lang, &d["late"]),
                count(lang, &d["not_picked_up"]),
                count(lang, &d["no_intake"]),
            ]
        })
        .collect();
    table(
        &mut h,
        &t(lang, "dash_dropouts"),
        &[
            t(lang, "dash_organisation"),
            t(lang, "dash_packages"),
            t(lang, "dash_late"),
            t(lang, "dash_not_picked_up"),
            t(lang, "dash_no_intake"),
        ],
        &dropouts,
        &[],
    );
    h.push_str(&format!(
        "<p class=\"hint\">{}</p></main></body></html>",
        escape(&t(lang, "dash_legend").replace(
            "{threshold}",
            &data["threshold"].as_u64().unwrap_or(5).to_string()
        ))
    ));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_in_the_page_language() {
        assert_eq!(count(Lang::Nl, &serde_json::json!(1500)), "1.500");
        assert_eq!(count(Lang::En, &serde_json::json!(1234567)), "1,234,567");
        assert_eq!(count(Lang::Nl, &serde_json::json!(999)), "999");
        assert_eq!(count(Lang::Nl, &serde_json::json!("<5")), "<5");
    }
}

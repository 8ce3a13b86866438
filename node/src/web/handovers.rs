//! The school's handovers in a browser, for a mentor (their own students) and a decaan (the
//! whole school): to whom, the consent, the recipient's status, how long ago, and a flag where
//! a student was handed over more than two weeks ago and nobody picked the passport up or set
//! an intake status (the node's own drop-out signal). Sortable, and as CSV.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use overstap_proto::spreadsheet_field;

use super::Shared;
use super::i18n::{Lang, t, tf, when};
use super::page::{page, respond};
use super::staff::{Staff, staff_in, staff_nav};
use crate::core::people::FOLLOWERS;
use crate::store::GrantRow;

/// After how long a handover without pick-up or intake status is flagged.
pub const FLAG_AFTER_SECS: i64 = 14 * 86_400;

/// One row of the table.
struct Row {
    /// The name and class the school knows (none for a student enrolled at a terminal).
    name: String,
    class_name: String,
    pseudonym: String,
    to: String,
    purpose: String,
    /// active, revoked, expired or erased.
    consent: String,
    status: String,
    sent_at: Option<i64>,
    /// When the recipient last fetched the passport itself.
    fetched_at: Option<i64>,
    flagged: bool,
}

/// Whether a handover needs a look: sent more than two weeks ago, its consent still running,
/// and at the recipient either never read or read without an intake status.
pub fn flagged(g: &GrantRow, now: i64) -> bool {
    let waited = g.sent_at.is_some_and(|at| now - at > FLAG_AFTER_SECS);
    let no_intake = matches!(g.status.as_str(), "" | "ontvangen" | "gelezen");
    g.state == "active" && now < g.not_after && waited && (g.views == 0 || no_intake)
}

#[derive(Debug, Default, Deserialize)]
pub struct Sort {
    /// name, class, to, status, sent or flag.
    #[serde(default)]
    sort: String,
}

/// The handovers `staff` may see, as rows, sorted.
async fn rows(web: &Shared, staff: &Staff, sort: &str) -> Result<Vec<Row>, crate::core::NodeError> {
    let now = web.core.now();
    let people = if staff.role == "decaan" {
        web.core.store.all_people().await?
    } else {
        web.core.store.people_of(&staff.username).await?
    };
    let grants = web.core.handovers().await?;
    let mut out: Vec<Row> = grants
        .iter()
        .filter_map(|g| {
            let p = people.iter().find(|p| p.pseudonym == g.pseudonym);
            // A mentor sees their own students; a decaan every handover, also of students
            // enrolled at a terminal, whose names the web app does not know.
            if p.is_none() && staff.role != "decaan" {
                return None;
            }
            Some(Row {
                name: p.map(|p| p.name.clone()).unwrap_or_default(),
                class_name: p.map(|p| p.class_name.clone()).unwrap_or_default(),
                pseudonym: g.pseudonym.clone(),
                to: web.org_name(&g.recipient_org),
                purpose: g.purpose.clone(),
                consent: if g.state == "active" && now >= g.not_after {
                    "expired".into()
                } else {
                    g.state.clone()
                },
                status: g.status.clone(),
                sent_at: g.sent_at,
                fetched_at: g.fetched_at,
                flagged: flagged(g, now),
            })
        })
        .collect();
    match sort {
        "class" => out.sort_by(|a, b| (&a.class_name, &a.name).cmp(&(&b.class_name, &b.name))),
        "to" => out.sort_by(|a, b| (&a.to, &a.name).cmp(&(&b.to, &b.name))),
        "status" => out.sort_by(|a, b| (&a.status, &a.name).cmp(&(&b.status, &b.name))),
        "sent" => out.sort_by_key(|r| r.sent_at.unwrap_or(i64::MAX)),
        "name" => out.sort_by(|a, b| a.name.cmp(&b.name)),
        // By default the ones that need a look come first, the longest waiting first.
        _ => out.sort_by_key(|r| (!r.flagged, r.sent_at.unwrap_or(i64::MAX))),
    }
    Ok(out)
}

/// The mentor or decaan of this request and their rows; or the page to answer with.
async fn staff_rows(
    web: &Shared,
    headers: &HeaderMap,
    sort: &str,
) -> Result<(Staff, Vec<Row>), Response> {
    let staff = staff_in(web, headers, FOLLOWERS).await?;
    match rows(web, &staff, sort).await {
        Ok(rows) => Ok((staff, rows)),
        Err(e) => Err(web.server_error(Lang::of(headers), e)),
    }
}

fn consent_label(lang: Lang, state: &str) -> String {
    t(lang, &format!("handovers_consent_{state}"))
}

fn status_words(lang: Lang, status: &str) -> String {
    if status.is_empty() {
        t(lang, "handovers_no_status")
    } else {
        t(lang, &format!("status_{}", status.replace(' ', "_")))
    }
}

/// How long ago, in days (today, yesterday, n days).
fn ago(lang: Lang, now: i64, at: i64) -> String {
    match (now - at).max(0) / 86_400 {
        0 => t(lang, "ago_today"),
        1 => t(lang, "ago_yesterday"),
        n => tf(lang, "ago_days", &[("n", &n.to_string())]),
    }
}

pub async fn handovers_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(sort): Query<Sort>,
) -> Response {
    let lang = Lang::of(&headers);
    let (staff, rows) = match staff_rows(&web, &headers, &sort.sort).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = web.core.now();
    let flagged = rows.iter().filter(|r| r.flagged).count();
    let current = if sort.sort.is_empty() {
        "flag"
    } else {
        sort.sort.as_str()
    };
    let head = |key: &str, label: &str| {
        html! {
            th scope="col" aria-sort=(if current == key { "ascending" } else { "none" }) {
                a href=(format!("/handovers?sort={key}")) { (t(lang, label)) }
            }
        }
    };
    let body = html! {
        (staff_nav(lang, &staff))
        p.lead { (t(lang, if staff.role == "decaan" { "handovers_intro_school" } else { "handovers_intro_class" })) }
        @if flagged > 0 {
            p.notice role="status" { (tf(lang, "handovers_flagged", &[("n", &flagged.to_string())])) }
        }
        @if rows.is_empty() {
            p { (t(lang, "handovers_empty")) }
        } @else {
            div.scroll tabindex="0" role="region" aria-label=(t(lang, "handovers_title")) {
                table.handovers {
                    thead { tr {
                        (head("flag", "handovers_col_flag"))
                        (head("name", "handovers_col_name"))
                        (head("class", "handovers_col_class"))
                        (head("to", "handovers_col_to"))
                        th scope="col" { (t(lang, "handovers_col_consent")) }
                        (head("status", "handovers_col_status"))
                        (head("sent", "handovers_col_sent"))
                    } }
                    tbody {
                        @for r in &rows {
                            tr.flagged[r.flagged] {
                                td { @if r.flagged { strong { (t(lang, "handovers_flag")) } } }
                                td { @if r.name.is_empty() {
                                    (t(lang, "handovers_unknown_name")) " " span.pseudonym { (r.pseudonym) }
                                } @else { (r.name) } }
                                td { (r.class_name) }
                                td { (r.to) }
                                td { (consent_label(lang, &r.consent)) }
                                td { (status_words(lang, &r.status)) }
                                td {
                                    @match r.sent_at {
                                        Some(at) => { span title=(when(lang, at)) { (ago(lang, now, at)) } }
                                        None => { (t(lang, "handovers_not_sent")) }
                                    }
                                    @if let Some(at) = r.fetched_at {
                                        br;
                                        span title=(when(lang, at)) {
                                            (tf(lang, "handovers_fetched", &[("ago", &ago(lang, now, at))]))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p.hint { (t(lang, "handovers_flag_help")) }
            p { a.button.secondary href="/handovers.csv" download="overdrachten.csv" { (t(lang, "handovers_csv")) } }
        }
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "handovers_title"), body),
    )
}

/// A moment as RFC 3339 in UTC, for a program to read.
pub(super) fn rfc3339(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

/// A CSV download, never cached.
pub(super) fn csv_response(name: &str, body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

pub async fn handovers_csv(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(sort): Query<Sort>,
) -> Response {
    let (_, rows) = match staff_rows(&web, &headers, &sort.sort).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut out = String::from(
        "name,class,pseudonym,to,purpose,consent,status,sent_at,fetched_at,needs_a_look\n",
    );
    for r in &rows {
        let sent = r.sent_at.map(rfc3339).unwrap_or_default();
        let fetched = r.fetched_at.map(rfc3339).unwrap_or_default();
        let fields = [
            r.name.as_str(),
            &r.class_name,
            &r.pseudonym,
            &r.to,
            &r.purpose,
            &r.consent,
            &r.status,
            &sent,
            &fetched,
            if r.flagged { "yes" } else { "no" },
        ];
        let line: Vec<String> = fields.iter().map(|f| spreadsheet_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    csv_response("overdrachten.csv", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(state: &str, sent_days_ago: Option<i64>, status: &str, views: u32) -> GrantRow {
        let now = 100 * 86_400;
        GrantRow {
            grant_id: "g".into(),
            pseudonym: "p".into(),
            recipient_org: "roc".into(),
            purpose: "intake".into(),
            sections: vec![],
            not_before: 0,
            not_after: now + 86_400 * 300,
            live: false,
            passport_version: 1,
            signed: vec![],
            state: state.into(),
            sent_version: Some(1),
            sent_at: sent_days_ago.map(|d| now - d * 86_400),
            status: status.into(),
            status_at: None,
            views,
            fetched_at: None,
        }
    }

    #[test]
    fn a_handover_is_flagged_after_two_weeks_without_pick_up_or_intake_status() {
        let now = 100 * 86_400;
        assert!(flagged(&grant("active", Some(15), "", 0), now));
        assert!(flagged(&grant("active", Some(15), "gelezen", 1), now));
        assert!(!flagged(&grant("active", Some(13), "", 0), now));
        assert!(!flagged(
            &grant("active", Some(30), "intake gepland", 1),
            now
        ));
        assert!(!flagged(&grant("active", None, "", 0), now));
        assert!(!flagged(&grant("revoked", Some(30), "", 0), now));
    }
}

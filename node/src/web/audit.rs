//! The node admin's audit: what staff did here (sign-ins, views, statuses, pushes, invitations,
//! keys), who and when, newest first, for the last 90 days on the page and as CSV.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::Shared;
use super::handovers::{csv_response, rfc3339};
use super::i18n::{Lang, t, tf, when};
use super::page::{page, respond};
use super::staff::{staff_in, staff_nav};
use crate::store::AuditRow;
use overstap_proto::spreadsheet_field;

/// How far back the audit pages look, and the most rows they show.
const DAYS: i64 = 90;
const MAX_ROWS: u32 = 5_000;

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    /// Only this staff member's actions.
    #[serde(default)]
    who: String,
}

async fn rows(web: &Shared, filter: &Filter) -> Result<Vec<AuditRow>, crate::store::StoreError> {
    let since = web.core.now() - DAYS * 86_400;
    let who = filter.who.trim();
    Ok(web
        .core
        .store
        .audit_log(since, MAX_ROWS)
        .await?
        .into_iter()
        .filter(|r| who.is_empty() || r.who == who)
        .collect())
}

fn action_label(lang: Lang, action: &str) -> String {
    let key = format!("audit_action_{}", action.replace('-', "_"));
    if overstap_words::has(&key) {
        t(lang, &key)
    } else {
        action.to_string()
    }
}

pub async fn audit_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match staff_in(&web, &headers, &["admin"]).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match rows(&web, &filter).await {
        Ok(r) => r,
        Err(e) => return web.server_error(lang, e),
    };
    let body = html! {
        (staff_nav(lang, &staff))
        p.lead { (tf(lang, "audit_intro", &[("days", &DAYS.to_string())])) }
        form.filters method="get" action="/audit" role="search" {
            div.filter {
                label for="who" { (t(lang, "audit_who_filter")) }
                input #who type="search" name="who" value=(filter.who) autocomplete="off";
            }
            button type="submit" { (t(lang, "inbox_filter_button")) }
        }
        @if rows.is_empty() {
            p { (t(lang, "audit_empty")) }
        } @else {
            div.scroll tabindex="0" role="region" aria-label=(t(lang, "audit_title")) {
                table {
                    thead { tr {
                        th scope="col" { (t(lang, "audit_col_when")) }
                        th scope="col" { (t(lang, "audit_col_who")) }
                        th scope="col" { (t(lang, "audit_col_role")) }
                        th scope="col" { (t(lang, "audit_col_what")) }
                        th scope="col" { (t(lang, "audit_col_about")) }
                    } }
                    tbody {
                        @for r in &rows {
                            tr {
                                td { (when(lang, r.at)) }
                                td { (r.who) }
                                td { (r.role) }
                                td { (action_label(lang, &r.action)) }
                                td { (r.subject) @if !r.detail.is_empty() { " " (r.detail) } }
                            }
                        }
                    }
                }
            }
            form method="get" action="/audit.csv" {
                input type="hidden" name="who" value=(filter.who.trim());
                button.secondary type="submit" { (t(lang, "audit_csv")) }
            }
        }
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "audit_title"), body),
    )
}

pub async fn audit_csv(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let lang = Lang::of(&headers);
    if let Err(r) = staff_in(&web, &headers, &["admin"]).await {
        return r;
    }
    let rows = match rows(&web, &filter).await {
        Ok(r) => r,
        Err(e) => return web.server_error(lang, e),
    };
    let mut out = String::from("at,who,role,action,subject,detail\n");
    for r in &rows {
        let at = rfc3339(r.at);
        let fields = [&at, &r.who, &r.role, &r.action, &r.subject, &r.detail];
        let line: Vec<String> = fields.iter().map(|f| spreadsheet_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    csv_response("audit.csv", out)
}

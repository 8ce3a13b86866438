//! The receiving side: an intaker (mbo college) or a consultant (municipality) finds the
//! passports that arrived, by the student's name where the student shared it, reads one as the
//! student wrote it (the view is logged, and the student sees it in the trail), and sets the
//! status that travels back to the school. A passport whose consent ended shows the erasure
//! instead, with its date.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use overstap_proto::pb::{Disclosure, Section};
use overstap_proto::questions::PERSONALIA;
use prost::Message;
use serde::Deserialize;

use super::Shared;
use super::i18n::{Lang, day, t, tf, when};
use super::page::{error, page, respond};
use super::staff::{Staff, staff_in, staff_nav, staff_posting};
use super::student::answers;
use crate::core::people::READERS;
use crate::core::{NodeError, STATUSES, lets_fetch};
use crate::store::{Fetchable, Received};

/// The statuses an intaker sets (the first two come by themselves: received, read).
const SETTABLE: &[&str] = &["intake gepland", "gestart", "niet gestart"];

/// The student's name, where they shared the section with it.
pub(super) fn shared_name(r: &Received) -> Option<String> {
    let (_, bytes) = r.disclosures.iter().find(|(id, _)| id == PERSONALIA)?;
    let d = Disclosure::decode(bytes.as_slice()).ok()?;
    let s = Section::decode(d.section.as_slice()).ok()?;
    let name = s.answers.iter().find(|a| a.question_id == "naam")?;
    let name = name.answer.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The inbox's filters, from the query string; each empty means "all".
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    status: String,
    /// "week", "month" or "older".
    #[serde(default)]
    age: String,
    /// Part of a name (or of the code of a student who shared no name).
    #[serde(default)]
    q: String,
    /// The passport whose status was just set, to say so.
    #[serde(default)]
    set: String,
    /// The passport just asked for, to say so.
    #[serde(default)]
    asked: String,
}

impl Filter {
    fn keeps(&self, r: &Received, name: Option<&str>, now: i64) -> bool {
        let age = now - r.received_at;
        let q = self.q.trim().to_lowercase();
        (self.purpose.is_empty() || r.purpose == self.purpose)
            && (self.status.is_empty() || r.status == self.status)
            && match self.age.as_str() {
                "week" => age <= 7 * 86_400,
                "month" => age <= 31 * 86_400,
                "older" => age > 31 * 86_400,
                _ => true,
            }
            && (q.is_empty()
                || name.is_some_and(|n| n.to_lowercase().contains(&q))
                || r.pseudonym.to_lowercase().contains(&q))
    }
}

fn purpose_label(lang: Lang, purpose: &str) -> String {
    t(lang, &format!("inbox_purpose_{purpose}"))
}

fn status_label(lang: Lang, status: &str) -> String {
    t(lang, &format!("status_{}", status.replace(' ', "_")))
}

/// A select box of the filter `name` with its `options` (value, words), `chosen` selected.
fn select(label: &str, name: &str, chosen: &str, options: &[(String, String)]) -> Markup {
    html! {
        div.filter {
            label for=(name) { (label) }
            select id=(name) name=(name) {
                @for (value, words) in options {
                    option value=(value) selected[value == chosen] { (words) }
                }
            }
        }
    }
}

pub async fn inbox_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match staff_in(&web, &headers, READERS).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let all = match web.core.store.inbox().await {
        Ok(a) => a,
        Err(e) => return web.server_error(lang, e),
    };
    let now = web.core.now();
    // Pulls with a student's code the school said no to, in the last day.
    let code_refusals: Vec<_> = match web.core.store.code_pulls().await {
        Ok(c) => c
            .into_iter()
            .filter(|(_, _, at, refused)| refused.is_some() && now - at < 86_400)
            .collect(),
        Err(e) => return web.server_error(lang, e),
    };
    // What the college may fetch and does not hold yet.
    let fetchable: Vec<Fetchable> = match web.core.store.fetchables().await {
        Ok(f) => f
            .into_iter()
            .filter(|f| !all.iter().any(|r| r.grant_id == f.grant_id))
            .collect(),
        Err(e) => return web.server_error(lang, e),
    };
    let mut rows: Vec<(Received, Option<String>)> = all
        .into_iter()
        .filter(|r| now < r.not_after)
        .map(|r| {
            let name = shared_name(&r);
            (r, name)
        })
        .filter(|(r, name)| filter.keeps(r, name.as_deref(), now))
        .collect();
    // Newest first: the applicant in front of you arrived lately.
    rows.sort_by_key(|(r, _)| std::cmp::Reverse(r.received_at));
    let saved = rows
        .iter()
        .find(|(r, _)| !filter.set.is_empty() && r.grant_id == filter.set)
        .map(|(r, name)| {
            let who = name.clone().unwrap_or_else(|| t(lang, "inbox_no_name"));
            let status = status_label(lang, &r.status);
            tf(
                lang,
                "inbox_status_saved",
                &[("name", &who), ("status", &status)],
            )
        });
    let all_of = t(lang, "inbox_all");
    let purposes: Vec<(String, String)> = std::iter::once((String::new(), all_of.clone()))
        .chain(
            overstap_proto::consent::PURPOSES
                .iter()
                .map(|p| (p.to_string(), purpose_label(lang, p))),
        )
        .collect();
    let statuses: Vec<(String, String)> = std::iter::once((String::new(), all_of.clone()))
        .chain(
            STATUSES
                .iter()
                .map(|s| (s.to_string(), status_label(lang, s))),
        )
        .collect();
    let ages: Vec<(String, String)> = [
        ("", "inbox_all"),
        ("week", "inbox_age_week"),
        ("month", "inbox_age_month"),
        ("older", "inbox_age_older"),
    ]
    .iter()
    .map(|(v, k)| (v.to_string(), t(lang, k)))
    .collect();
    let body = html! {
        (staff_nav(lang, &staff))
        @if let Some(s) = &saved { p.done role="status" { (s) } }
        @if !filter.asked.is_empty() { p.done role="status" { (t(lang, "fetch_asked")) } }
        section.pickup aria-labelledby="code-title" {
            h2 #code-title { (t(lang, "pickup_have_code")) }
            @for (_, school, at, _) in code_refusals.iter() {
                p.error { (tf(lang, "pickup_refused", &[("school", &web.org_name(school)), ("when", &when(lang, *at))])) }
            }
            form method="post" action="/inbox/code" {
                input type="hidden" name="csrf" value=(staff.csrf);
                label for="code" { (t(lang, "pickup_code_label")) }
                p.hint #code-hint { (t(lang, "pickup_code_hint")) }
                input #code type="text" name="code" autocomplete="off" autocapitalize="characters"
                    spellcheck="false" maxlength="48" aria-describedby="code-hint" required;
                button type="submit" { (t(lang, "pickup_redeem")) }
            }
            // The camera reader: shown by scan.js where the browser has a camera to ask for.
            div #scanner data-reader="/assets/jsQR.js" data-found=(t(lang, "scan_found")) {
                button.secondary #scan type="button" hidden { (t(lang, "scan_start")) }
                p #scan-help hidden { (t(lang, "scan_help")) }
                video #scan-video playsinline muted hidden aria-label=(t(lang, "scan_video")) {}
                button.secondary #scan-stop type="button" hidden { (t(lang, "scan_stop")) }
                p.done #scan-status role="status" hidden {}
                p.error #scan-failed role="alert" hidden { (t(lang, "scan_no_camera")) }
                p.error #scan-wrong role="alert" hidden { (t(lang, "scan_not_a_code")) }
            }
        }
        @if !fetchable.is_empty() {
            section aria-labelledby="fetchable-title" {
                h2 #fetchable-title { (t(lang, "fetch_title")) }
                p { (t(lang, "fetch_help")) }
                ul.inbox {
                    @for f in &fetchable {
                        li {
                            strong { (tf(lang, "fetch_student_of", &[("school", &web.org_name(&f.from_org))])) }
                            " " span.pseudonym { (f.pseudonym) }
                            p { (tf(lang, "fetch_line", &[
                                ("purpose", &purpose_label(lang, &f.purpose)),
                                ("n", &f.sections.len().to_string()),
                                ("until", &day(lang, f.not_after)),
                            ])) }
                            @if f.refused.is_some() {
                                p.error { (t(lang, "fetch_refused")) }
                            } @else if let Some(at) = f.asked_at {
                                p { (tf(lang, "fetch_asked_at", &[("when", &when(lang, at))])) }
                            }
                            (fetch_button(lang, &staff, &f.grant_id, "fetch_button"))
                        }
                    }
                }
            }
            h2 { (t(lang, "inbox_received_title")) }
        }
        form.filters method="get" action="/inbox" role="search" {
            div.filter {
                label for="q" { (t(lang, "inbox_search")) }
                input #q type="search" name="q" value=(filter.q) autocomplete="off";
            }
            (select(&t(lang, "inbox_purpose"), "purpose", &filter.purpose, &purposes))
            (select(&t(lang, "inbox_status"), "status", &filter.status, &statuses))
            (select(&t(lang, "inbox_age"), "age", &filter.age, &ages))
            button type="submit" { (t(lang, "inbox_filter_button")) }
        }
        p role="status" {
            @if rows.len() == 1 { (t(lang, "inbox_count_one")) }
            @else { (tf(lang, "inbox_count", &[("n", &rows.len().to_string())])) }
        }
        @if rows.is_empty() {
            p { (t(lang, "inbox_empty")) }
        } @else {
            ul.inbox {
                @for (r, name) in &rows {
                    li {
                        a href=(format!("/inbox/{}", r.grant_id)) {
                            (name.clone().unwrap_or_else(|| t(lang, "inbox_no_name")))
                        }
                        @if name.is_none() { " " span.pseudonym { (r.pseudonym) } }
                        p {
                            (tf(lang, "inbox_line", &[
                                ("school", &web.org_name(&r.from_org)),
                                ("purpose", &purpose_label(lang, &r.purpose)),
                                ("when", &when(lang, r.received_at)),
                            ]))
                        }
                        span.status { (status_label(lang, &r.status)) }
                    }
                }
            }
        }
        script src="/assets/scan.js" defer {}
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "inbox_title"), body),
    )
}

/// The button that asks the student's school for the passport under `grant_id`.
fn fetch_button(lang: Lang, staff: &Staff, grant_id: &str, words: &str) -> Markup {
    html! {
        form method="post" action=(format!("/inbox/fetch/{grant_id}")) {
            input type="hidden" name="csrf" value=(staff.csrf);
            button.secondary type="submit" { (t(lang, words)) }
        }
    }
}

/// POST /inbox/fetch/{grant}: asks the student's school for the passport (a pull).
pub async fn fetch(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
    Form(form): Form<super::staff::WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match staff_posting(&web, &headers, READERS, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match web.core.pull(&grant_id, &staff.username, &staff.role).await {
        Ok(_) => Redirect::to(&format!("/inbox?asked={grant_id}")).into_response(),
        Err(NodeError::NotFound(_)) => gone(&web, lang, &grant_id).await,
        Err(NodeError::Precondition(reason)) => {
            tracing::info!(grant = %grant_id, %reason, "a pull was not asked for");
            error(
                lang,
                &web.school(),
                StatusCode::CONFLICT,
                &t(lang, "fetch_not_now"),
                Some(("/inbox", &t(lang, "inbox_back"))),
            )
        }
        Err(e) => web.server_error(lang, e),
    }
}

/// What stands where a passport stood once it is gone: erased (the student withdrew consent,
/// or it ran out) and when; or a kind "not here".
async fn gone(web: &Shared, lang: Lang, grant_id: &str) -> Response {
    let back_words = t(lang, "inbox_back");
    let back = Some(("/inbox", back_words.as_str()));
    match web.core.store.erased(grant_id).await {
        Ok(Some(e)) => {
            let key = if e.reason == "revoked" {
                "inbox_erased_revoked"
            } else {
                "inbox_erased_expired"
            };
            let what = tf(
                lang,
                key,
                &[
                    ("when", &when(lang, e.erased_at)),
                    ("school", &web.org_name(&e.from_org)),
                ],
            );
            let body = html! {
                p.notice role="status" { (what) }
                p { (t(lang, "inbox_erased_next")) }
                p { a.button href="/inbox" { (t(lang, "inbox_back")) } }
            };
            respond(
                StatusCode::GONE,
                page(lang, &web.school(), &t(lang, "inbox_erased_title"), body),
            )
        }
        Ok(None) => error(
            lang,
            &web.school(),
            StatusCode::NOT_FOUND,
            &t(lang, "inbox_not_here"),
            back,
        ),
        Err(e) => web.server_error(lang, e),
    }
}

pub async fn passport_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match staff_in(&web, &headers, READERS).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match web.core.view(&grant_id, &staff.username, &staff.role).await {
        Ok((received, sections)) => respond(
            StatusCode::OK,
            passport_view(&web, lang, &staff, &received, &sections),
        ),
        Err(NodeError::NotFound(_)) => gone(&web, lang, &grant_id).await,
        Err(e) => web.server_error(lang, e),
    }
}

fn passport_view(
    web: &Shared,
    lang: Lang,
    staff: &Staff,
    r: &Received,
    sections: &[Section],
) -> Markup {
    let name = shared_name(r);
    let title = match &name {
        Some(n) => tf(lang, "inbox_passport_of", &[("name", n)]),
        None => t(lang, "inbox_passport_no_name"),
    };
    let body = html! {
        (staff_nav(lang, staff))
        dl.facts {
            dt { (t(lang, "inbox_from")) } dd { (web.org_name(&r.from_org)) }
            dt { (t(lang, "inbox_purpose")) } dd { (purpose_label(lang, &r.purpose)) }
            dt { (t(lang, "inbox_arrived")) } dd { (when(lang, r.received_at)) }
            dt { (t(lang, "inbox_until")) } dd { (day(lang, r.not_after)) }
            @if name.is_none() { dt { (t(lang, "inbox_code")) } dd.pseudonym { (r.pseudonym) } }
        }
        section aria-labelledby="status-title" {
            h2 #status-title { (t(lang, "inbox_status_title")) }
            p { (tf(lang, "inbox_status_now", &[("status", &status_label(lang, &r.status))])) }
            form method="post" action=(format!("/inbox/{}/status", r.grant_id)) {
                input type="hidden" name="csrf" value=(staff.csrf);
                fieldset.choices {
                    legend { (t(lang, "inbox_status_set")) }
                    @for s in SETTABLE {
                        label.choice {
                            input type="radio" name="status" value=(s) checked[r.status == *s] required;
                            (status_label(lang, s))
                        }
                    }
                }
                button type="submit" { (t(lang, "inbox_status_button")) }
            }
            p.hint { (t(lang, "inbox_status_help")) }
        }
        @for s in sections {
            section.preview aria-labelledby=(format!("s-{}", s.section_id)) {
                h2 #(format!("s-{}", s.section_id)) { (s.title) }
                (answers(lang, s))
            }
        }
        p.hint { (t(lang, "inbox_only_shared")) }
        @if lets_fetch(&r.grant_signed).unwrap_or(false) {
            p { (t(lang, "fetch_newest_help")) }
            (fetch_button(lang, staff, &r.grant_id, "fetch_newest"))
        }
        p { a.button.secondary href="/inbox" { (t(lang, "inbox_back")) } }
    };
    page(lang, &web.school(), &title, body)
}

#[derive(Deserialize)]
pub struct StatusForm {
    csrf: String,
    #[serde(default)]
    status: String,
}

pub async fn set_status(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
    Form(form): Form<StatusForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match staff_posting(&web, &headers, READERS, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !SETTABLE.contains(&form.status.as_str()) {
        return error(
            lang,
            &web.school(),
            StatusCode::UNPROCESSABLE_ENTITY,
            &t(lang, "inbox_status_pick"),
            Some((&format!("/inbox/{grant_id}"), &t(lang, "back"))),
        );
    }
    match web
        .core
        .set_status(&grant_id, &form.status, &staff.username, &staff.role)
        .await
    {
        // Back to the list, which says what was saved: the next applicant waits there.
        Ok(()) => Redirect::to(&format!("/inbox?set={grant_id}")).into_response(),
        Err(NodeError::NotFound(_)) => gone(&web, lang, &grant_id).await,
        Err(e) => web.server_error(lang, e),
    }
}

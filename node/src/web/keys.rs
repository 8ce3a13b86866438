//! One more key on a student's card, through a one-time link like an invitation: a parent's key
//! (a card under 16 waits for one), the student's key on another device (made from a device
//! that already has one, or by the mentor), or a new key after a loss (by the mentor, in
//! person). The browser that opens the link makes the key; the person who made the link
//! compares its short code and only then does the card name it.

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::Shared;
use super::enrol::{mentor, mentor_posting, origin, public_key_in, qr_svg, short_code, token_hash};
use super::i18n::{Lang, day, t, tf, when};
use super::page::{error, page, refusal, respond};
use super::staff::{Staff, WithCsrf, csrf_ok};
use super::student::student;
use crate::core::NodeError;
use crate::core::keys::Confirmer;
use crate::store::{KeyLinkRow, LinkRole, StoreError};

/// Makes a link for one more key; returns its id.
pub(super) async fn new_link(
    web: &Shared,
    role: LinkRole,
    pseudonym: Option<&str>,
    made_by: &str,
) -> Result<i64, NodeError> {
    Ok(web
        .core
        .new_key_link(role, None, pseudonym, made_by)
        .await?
        .0)
}

/// Where a key link stands, as the pages' scripts watch it.
fn state(l: &KeyLinkRow, now: i64) -> &'static str {
    if l.used_at.is_some() {
        "enrolled"
    } else if l.expires_at <= now {
        "expired"
    } else if l.key.is_some() {
        "check"
    } else {
        "waiting"
    }
}

/// The first name of the student a link is for (the whole name stays with the school).
async fn first_name(web: &Shared, l: &KeyLinkRow) -> Result<String, StoreError> {
    let name = match (&l.pseudonym, l.invitation_id) {
        (Some(p), _) => web.core.store.person(p).await?.map(|p| p.name),
        (None, Some(i)) => web.core.store.invitation(i).await?.map(|i| i.name),
        (None, None) => None,
    }
    .unwrap_or_default();
    Ok(name
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The link a token names, or the kind page that says why it does not work.
async fn link_of_token(web: &Shared, lang: Lang, token: &str) -> Result<KeyLinkRow, Response> {
    let found = match web.core.store.key_link_by_token(&token_hash(token)).await {
        Ok(f) => f,
        Err(e) => return Err(web.server_error(lang, e)),
    };
    let refuse = |status, key: &str| error(lang, &web.school(), status, &t(lang, key), None);
    match found {
        None => Err(refuse(StatusCode::NOT_FOUND, "error_link_unknown")),
        Some(l) if l.used_at.is_some() => Err(refuse(StatusCode::GONE, "error_link_used")),
        Some(l) if l.expires_at <= web.core.now() => {
            Err(refuse(StatusCode::GONE, "error_link_expired"))
        }
        Some(l) => Ok(l),
    }
}

/// The page a link opens: this browser makes the key and shows its short code.
pub async fn link_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    let l = match link_of_token(&web, lang, &token).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let name = match first_name(&web, &l).await {
        Ok(n) => n,
        Err(e) => return web.server_error(lang, e),
    };
    let (title, intro, slot, next) = match l.role {
        LinkRole::Guardian => (
            t(lang, "parent_title"),
            tf(lang, "parent_intro", &[("name", &name)]),
            "guardian",
            "/guardian",
        ),
        LinkRole::Device => (
            t(lang, "device_title"),
            t(lang, "device_intro"),
            "student",
            "/student",
        ),
        LinkRole::Replace => (
            t(lang, "replace_title"),
            t(lang, "replace_intro"),
            "student",
            "/student",
        ),
    };
    let body = html! {
        div #enrol data-token=(token) data-base=(format!("/k/{token}")) data-slot=(slot)
            data-state=(state(&l, web.core.now())) {
            p.lead { (intro) }
            section #step-make hidden[l.key.is_some()] {
                p { (t(lang, "enrol_key_explained")) }
                p.hint { (t(lang, "enrol_own_device")) }
                button #make-key type="button" { (t(lang, "enrol_button")) }
            }
            p #working hidden aria-live="polite" { (t(lang, "enrol_working")) }
            section #step-code hidden {
                p { (t(lang, "link_show_code")) }
                p.code #code {}
                p.hint aria-live="polite" { (t(lang, "link_wait")) }
            }
            div #done hidden {
                p.done role="status" { (t(lang, "link_done")) }
                p { a.button href=(next) { (t(lang, "link_next")) } }
            }
            p.error #no-webcrypto role="alert" hidden { (t(lang, "enrol_no_webcrypto")) }
            p.error #failed role="alert" hidden { (t(lang, "enrol_failed")) }
        }
        script src="/assets/enrol.js" defer {}
    };
    respond(StatusCode::OK, page(lang, &web.school(), &title, body))
}

/// Takes the public key the browser made for a link, once.
pub async fn link_key(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let lang = Lang::of(&headers);
    let Ok(l) = link_of_token(&web, lang, &token).await else {
        return refusal(StatusCode::GONE, &t(lang, "enrol_failed"));
    };
    let key = match public_key_in(&body) {
        Ok(k) => k,
        Err(reason) => return refusal(StatusCode::BAD_REQUEST, reason),
    };
    match web
        .core
        .store
        .set_link_key(l.id, &key, web.core.now())
        .await
    {
        Ok(true) => Json(serde_json::json!({ "state": "check" })).into_response(),
        Ok(false) => refusal(StatusCode::CONFLICT, &t(lang, "error_link_used")),
        Err(e) => {
            tracing::error!(error = %e, "handing in a key failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, &t(lang, "error_server"))
        }
    }
}

/// Where a link stands, for the browser that holds its token.
pub async fn link_state(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    match web.core.store.key_link_by_token(&token_hash(&token)).await {
        Ok(Some(l)) => {
            Json(serde_json::json!({ "state": state(&l, web.core.now()) })).into_response()
        }
        Ok(None) => refusal(StatusCode::NOT_FOUND, &t(lang, "error_link_unknown")),
        Err(e) => {
            tracing::error!(error = %e, "reading a key link failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, &t(lang, "error_server"))
        }
    }
}

/// The page of the one who made a link: the link and its QR code while no key is in, then the
/// key's short code to compare and the button that puts the key on the card.
fn maker_view(
    lang: Lang,
    headers: &HeaderMap,
    l: &KeyLinkRow,
    at: &str,
    csrf: &str,
    now: i64,
    back: (&str, String),
) -> Markup {
    let st = state(l, now);
    html! {
        div #watch data-state-url=(format!("{at}/state")) data-state=(st) {
            @match st {
                "waiting" => {
                    @let link = format!("{}/k/{}", origin(headers), l.link_token.clone().unwrap_or_default());
                    p { (tf(lang, "link_help", &[("until", &when(lang, l.expires_at))])) }
                    p.link { a href=(link) { (link) } }
                    @if let Some(svg) = qr_svg(&link) {
                        figure.qr role="img" aria-label=(format!("QR-code: {link}")) { (PreEscaped(svg)) }
                    }
                    p.hint aria-live="polite" { (t(lang, "link_waiting")) }
                }
                "check" => {
                    @let code = short_code(l.key.as_deref().unwrap_or_default());
                    p { (t(lang, "link_compare")) }
                    p.code aria-label=(code.replace(' ', "")) { (code) }
                    form method="post" action=(format!("{at}/confirm")) {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { (t(lang, "link_codes_match")) }
                    }
                    p.hint { (t(lang, "codes_differ")) }
                }
                "enrolled" => { p.done role="status" { (t(lang, "link_added")) } }
                _ => { p.error { (t(lang, "error_link_expired")) } }
            }
            p { a.button.secondary href=(back.0) { (back.1) } }
        }
        @if st == "waiting" { script src="/assets/enrol.js" defer {} }
    }
}

fn link_title(lang: Lang, role: LinkRole) -> String {
    t(
        lang,
        match role {
            LinkRole::Guardian => "parent_title",
            LinkRole::Device => "device_title",
            LinkRole::Replace => "replace_title",
        },
    )
}

#[derive(Deserialize)]
pub struct NewLink {
    csrf: String,
    role: String,
}

/// A mentor makes a link for one of their students: another device, or a new key after a loss.
pub async fn mentor_new_link(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(pseudonym): Path<String>,
    Form(form): Form<NewLink>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor_posting(&web, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let role = match LinkRole::parse(&form.role) {
        Some(r @ (LinkRole::Device | LinkRole::Replace | LinkRole::Guardian)) => r,
        None => return refusal(StatusCode::BAD_REQUEST, "role: device, replace or guardian"),
    };
    match web.core.store.person(&pseudonym).await {
        Ok(Some(p)) if p.mentor == staff.username => {}
        Ok(_) => return not_found(&web, lang),
        Err(e) => return web.server_error(lang, e),
    }
    match new_link(&web, role, Some(&pseudonym), &staff.username).await {
        Ok(id) => {
            web.note(&staff, "key-link", &pseudonym, &form.role).await;
            Redirect::to(&format!("/mentor/keys/{id}")).into_response()
        }
        Err(e) => web.server_error(lang, e),
    }
}

fn not_found(web: &Shared, lang: Lang) -> Response {
    error(
        lang,
        &web.school(),
        StatusCode::NOT_FOUND,
        &t(lang, "error_not_found"),
        None,
    )
}

/// The link `id` if the signed-in mentor made it.
async fn mentors_link(
    web: &Shared,
    headers: &HeaderMap,
    id: i64,
    csrf: Option<&str>,
) -> Result<(KeyLinkRow, Staff), Response> {
    let lang = Lang::of(headers);
    let staff = match csrf {
        Some(c) => mentor_posting(web, headers, c).await?,
        None => mentor(web, headers).await?,
    };
    match web.core.store.key_link(id).await {
        Ok(Some(l)) if l.made_by == staff.username && l.pseudonym.is_some() => Ok((l, staff)),
        Ok(_) => Err(not_found(web, lang)),
        Err(e) => Err(web.server_error(lang, e)),
    }
}

pub async fn mentor_link_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let lang = Lang::of(&headers);
    let (l, staff) = match mentors_link(&web, &headers, id, None).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = first_name(&web, &l).await.unwrap_or_default();
    let at = format!("/mentor/keys/{id}");
    let back = ("/mentor", t(lang, "back_to_students"));
    let body = maker_view(lang, &headers, &l, &at, &staff.csrf, web.core.now(), back);
    let title = format!("{} · {name}", link_title(lang, l.role));
    respond(StatusCode::OK, page(lang, &web.school(), &title, body))
}

pub async fn mentor_link_state(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    match mentors_link(&web, &headers, id, None).await {
        Ok((l, _)) => {
            Json(serde_json::json!({ "state": state(&l, web.core.now()) })).into_response()
        }
        Err(r) => r,
    }
}

pub async fn mentor_confirm(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let (link, staff) = match mentors_link(&web, &headers, id, Some(&form.csrf)).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let subject = link.pseudonym.clone().unwrap_or_default();
    let at = format!("/mentor/keys/{id}");
    let r = confirmed(&web, lang, id, Confirmer::Staff(&staff.username), &at).await;
    if r.status().is_redirection() {
        web.note(&staff, "key-confirm", &subject, &format!("{:?}", link.role))
            .await;
    }
    r
}

/// Puts a link's key on the card and goes back to the link's page, which says it is done.
async fn confirmed(web: &Shared, lang: Lang, id: i64, by: Confirmer<'_>, at: &str) -> Response {
    match web.core.add_link_key(id, by).await {
        Ok(_) => Redirect::to(at).into_response(),
        // Used, run out, or no key yet: the link's page says which.
        Err(NodeError::Precondition(_)) => Redirect::to(at).into_response(),
        Err(NodeError::Invalid(reason)) | Err(NodeError::NotFound(reason)) => {
            tracing::info!(%reason, "a key was not added");
            error(
                lang,
                &web.school(),
                StatusCode::UNPROCESSABLE_ENTITY,
                &t(lang, "link_not_added"),
                Some((at, &t(lang, "back"))),
            )
        }
        Err(e) => web.server_error(lang, e),
    }
}

/// The student's devices: how many have a key, and a link to add one more from this one.
pub async fn devices_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, csrf)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    let card = match web.core.card(&pseudonym).await {
        Ok((_, c)) => c,
        Err(e) => return web.server_error(lang, e),
    };
    let count = (1 + card.device_keys.len()).to_string();
    let body = html! {
        p.lead { (tf(lang, "devices_count", &[("count", &count)])) }
        p { (t(lang, "devices_why")) }
        form method="post" action="/student/devices" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { (t(lang, "devices_add")) }
        }
        p.hint { (t(lang, "devices_shared_computer")) }
        (key_log(&web, lang, &pseudonym).await)
        p { a.button.secondary href="/student/passport" { (t(lang, "back_to_passport")) } }
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "devices_title"), body),
    )
}

/// Every time the student's card changed (a key made, added or replaced), as the region's log
/// holds it: by date and by whom, the card now marked, and a card their school did not make,
/// or one the log leaves out, named with what to do.
async fn key_log(web: &Shared, lang: Lang, pseudonym: &str) -> Markup {
    let listed = match web.core.student_cards(pseudonym, web.hub.clone()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "the key log could not be read from the hub");
            return html! {
                section aria-labelledby="key-log" {
                    h2 #key-log { (t(lang, "key_log_title")) }
                    p.hint { (t(lang, "key_log_unreachable")) }
                }
            };
        }
    };
    html! {
        section aria-labelledby="key-log" {
            h2 #key-log { (t(lang, "key_log_title")) }
            p { (t(lang, "key_log_why")) }
            ul.key-log {
                @for c in listed.cards.iter().rev() {
                    li {
                        strong { (day(lang, c.at)) } " · " (web.org_name(&c.from_org))
                        " "
                        @if !c.issued_here {
                            span.error { (t(lang, "key_log_foreign")) }
                        } @else if c.current {
                            span.status { (t(lang, "key_log_current")) }
                        } @else {
                            span.status { (t(lang, "key_log_earlier")) }
                        }
                    }
                }
            }
            @if !listed.missing.is_empty() {
                p.error role="alert" { (t(lang, "key_log_missing")) }
            }
        }
    }
}

/// A student, on a device with a key, makes a link for another device of theirs.
pub async fn student_new_link(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, csrf)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    if !csrf_ok(&csrf, &form.csrf) {
        return super::page::form_expired(lang, &web.school());
    }
    match new_link(&web, LinkRole::Device, Some(&pseudonym), "student").await {
        Ok(id) => Redirect::to(&format!("/student/devices/{id}")).into_response(),
        Err(e) => web.server_error(lang, e),
    }
}

/// The link `id` if the signed-in student made it for themselves.
async fn students_link(
    web: &Shared,
    headers: &HeaderMap,
    id: i64,
) -> Result<(KeyLinkRow, String, String), Response> {
    let lang = Lang::of(headers);
    let Some((pseudonym, csrf)) = student(web, headers).await else {
        return Err(Redirect::to("/student").into_response());
    };
    match web.core.store.key_link(id).await {
        Ok(Some(l))
            if l.made_by == "student" && l.pseudonym.as_deref() == Some(pseudonym.as_str()) =>
        {
            Ok((l, pseudonym, csrf))
        }
        Ok(_) => Err(not_found(web, lang)),
        Err(e) => Err(web.server_error(lang, e)),
    }
}

pub async fn student_link_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let lang = Lang::of(&headers);
    let (l, _, csrf) = match students_link(&web, &headers, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let at = format!("/student/devices/{id}");
    let back = ("/student/passport", t(lang, "back_to_passport"));
    let body = maker_view(lang, &headers, &l, &at, &csrf, web.core.now(), back);
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "device_title"), body),
    )
}

pub async fn student_link_state(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    match students_link(&web, &headers, id).await {
        Ok((l, _, _)) => {
            Json(serde_json::json!({ "state": state(&l, web.core.now()) })).into_response()
        }
        Err(r) => r,
    }
}

pub async fn student_confirm(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let (_, pseudonym, csrf) = match students_link(&web, &headers, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !csrf_ok(&csrf, &form.csrf) {
        return super::page::form_expired(lang, &web.school());
    }
    confirmed(
        &web,
        lang,
        id,
        Confirmer::Student(&pseudonym),
        &format!("/student/devices/{id}"),
    )
    .await
}

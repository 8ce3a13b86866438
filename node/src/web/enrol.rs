//! Enrolment: a mentor invites a student (a one-time link and QR code, valid for a set time);
//! the student's own browser makes an Ed25519 key that cannot be exported and hands in only its
//! public half; both screens show a short code derived from that key; the mentor compares them
//! in person and only then does the node issue the student's card.

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Shared;
use super::i18n::{Lang, t, tf, when};
use super::page::{error, form_expired, page, refusal, respond};
use super::staff::{Staff, WithCsrf, csrf_ok, staff_in};
use crate::core::NodeError;
use crate::core::people::FOLLOWERS;
use crate::store::InvitationRow;

pub use crate::core::invite::{INVITATION_HOURS, token_hash};

/// The short code both screens show for a key: six digits from the SHA-256 of a fixed tag and
/// the public key. The student's browser computes it from the key it made, the mentor's page
/// from the key the node received; the same code on both means the node got the student's key.
pub fn short_code(key: &[u8]) -> String {
    let d = Sha256::new()
        .chain_update(b"overstap short code v1")
        .chain_update(key)
        .finalize();
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 1_000_000;
    format!("{:03} {:03}", n / 1000, n % 1000)
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Check,
    Enrolled,
    Expired,
}

impl Stage {
    fn of(i: &InvitationRow, now: i64) -> Stage {
        if i.used_at.is_some() {
            Stage::Enrolled
        } else if i.expires_at <= now {
            Stage::Expired
        } else if i.student_key.is_some() {
            Stage::Check
        } else {
            Stage::Waiting
        }
    }

    fn word(self) -> &'static str {
        match self {
            Stage::Waiting => "waiting",
            Stage::Check => "check",
            Stage::Enrolled => "enrolled",
            Stage::Expired => "expired",
        }
    }

    fn label(self, lang: Lang) -> String {
        t(
            lang,
            match self {
                Stage::Waiting => "state_waiting",
                Stage::Check => "state_check",
                Stage::Enrolled => "state_enrolled",
                Stage::Expired => "state_expired",
            },
        )
    }
}

/// The mentor or decaan of this request; the sign-in page, or a refusal for another role.
pub(super) async fn mentor(web: &Shared, headers: &HeaderMap) -> Result<Staff, Response> {
    staff_in(web, headers, FOLLOWERS).await
}

/// [`mentor`] for a form: also its CSRF token must be the session's.
pub(super) async fn mentor_posting(
    web: &Shared,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Staff, Response> {
    let staff = mentor(web, headers).await?;
    if !csrf_ok(&staff.csrf, csrf) {
        let lang = Lang::of(headers);
        return Err(form_expired(lang, &web.school()));
    }
    Ok(staff)
}

pub(super) fn invitations_section(lang: Lang, list: &[InvitationRow], now: i64) -> Markup {
    html! {
        section aria-labelledby="list" {
            h2 #list { (t(lang, "invitations")) }
            @if list.is_empty() {
                p { (t(lang, "no_invitations")) }
            } @else {
                ul.cards {
                    @for i in list {
                        li {
                            a href=(format!("/mentor/invitations/{}", i.id)) {
                                strong { (i.name) }
                                " · " (i.class_name) " · "
                                span.state { (Stage::of(i, now).label(lang)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct Invite {
    csrf: String,
    name: String,
    class_name: String,
    birth_month: String,
}

pub async fn invite(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Invite>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor_posting(&web, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = web.core.now();
    let (name, class_name) = (form.name.trim(), form.class_name.trim());
    let problem =
        if name.is_empty() || class_name.is_empty() || name.len() > 100 || class_name.len() > 20 {
            Some(t(lang, "invite_missing"))
        } else {
            match overstap_proto::passport::under_16(form.birth_month.trim(), now) {
                Err(_) => Some(t(lang, "invite_bad_month")),
                Ok(_) => None,
            }
        };
    if let Some(problem) = problem {
        let list = web
            .core
            .store
            .invitations_of(&staff.username)
            .await
            .unwrap_or_default();
        let pupils = super::class::class_of(&web, &staff)
            .await
            .map(|(p, _)| p)
            .unwrap_or_default();
        return respond(
            StatusCode::UNPROCESSABLE_ENTITY,
            super::class::mentor_view(&web, lang, &staff, &list, &pupils, None, Some(problem)),
        );
    }
    match web
        .core
        .invite_student(name, class_name, form.birth_month.trim(), &staff.username)
        .await
    {
        Ok(invited) => {
            let detail = format!("{name} ({class_name})");
            web.note(&staff, "invite", "", &detail).await;
            Redirect::to(&format!("/mentor/invitations/{}", invited.id)).into_response()
        }
        Err(e) => web.server_error(lang, e),
    }
}

/// The invitation `id` if it is `staff`'s; anyone else's is as good as missing.
async fn own_invitation(
    web: &Shared,
    lang: Lang,
    staff: &Staff,
    id: i64,
) -> Result<InvitationRow, Response> {
    match web.core.store.invitation(id).await {
        Ok(Some(i)) if i.mentor == staff.username => Ok(i),
        Ok(_) => Err(error(
            lang,
            &web.school(),
            StatusCode::NOT_FOUND,
            &t(lang, "error_not_found"),
            Some(("/mentor", &t(lang, "back_to_students"))),
        )),
        Err(e) => Err(web.server_error(lang, e)),
    }
}

/// The address of the web app as the browser reached it (behind a proxy, as the proxy says).
pub(super) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(axum::http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// A QR code of `text` as inline SVG.
pub(super) fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    // The renderer writes an XML declaration first; inside HTML only the <svg> belongs.
    svg.find("<svg").map(|i| svg[i..].to_string())
}

pub async fn invitation_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor(&web, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let i = match own_invitation(&web, lang, &staff, id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let now = web.core.now();
    let state = Stage::of(&i, now);
    let until = when(lang, i.expires_at);
    let name = i.name.as_str();
    let parents = match web.core.store.key_links_of_invitation(id).await {
        Ok(l) => l,
        Err(e) => return web.server_error(lang, e),
    };
    let parent_keys: Vec<Vec<u8>> = parents.iter().filter_map(|l| l.key.clone()).collect();
    let waits_for_parent = !parents.is_empty() && parent_keys.is_empty();
    let body = html! {
        div #watch data-state-url=(format!("/mentor/invitations/{id}/state"))
            data-state=(progress(&i, &parents, now)) {
            @match state {
                Stage::Waiting => {
                    @let link = format!("{}/i/{}", origin(&headers), i.link_token.clone().unwrap_or_default());
                    p { (tf(lang, "invitation_link_help", &[("name", name), ("until", &until)])) }
                    p.link { a href=(link) { (link) } }
                    @if let Some(svg) = qr_svg(&link) {
                        figure.qr role="img" aria-label=(format!("QR-code: {link}")) { (PreEscaped(svg)) }
                    }
                    p.hint aria-live="polite" { (tf(lang, "invitation_waiting", &[("name", name)])) }
                }
                Stage::Check => {
                    @let code = short_code(i.student_key.as_deref().unwrap_or_default());
                    p { (tf(lang, "compare_code", &[("name", name)])) }
                    p.code.student-code aria-label=(code.replace(' ', "")) { (code) }
                    @if waits_for_parent {
                        p.hint aria-live="polite" { (t(lang, "parent_waiting")) }
                    } @else {
                        form method="post" action=(format!("/mentor/invitations/{id}/confirm")) {
                            input type="hidden" name="csrf" value=(staff.csrf);
                            button type="submit" {
                                @if parent_keys.is_empty() { (t(lang, "codes_match")) }
                                @else { (t(lang, "codes_match_both")) }
                            }
                        }
                        p.hint { (t(lang, "codes_differ")) }
                    }
                }
                Stage::Enrolled => {
                    p.done role="status" { (tf(lang, "enrolled_done", &[("name", name)])) }
                }
                Stage::Expired => {
                    p.error { (t(lang, "error_link_expired")) }
                }
            }
            @if state != Stage::Enrolled && !parents.is_empty() {
                section aria-labelledby="parent" {
                    h2 #parent { (t(lang, "parent_heading")) }
                    @for l in &parents {
                        @match (&l.link_token, &l.key) {
                            (_, Some(key)) => {
                                @let code = short_code(key);
                                p { (t(lang, "parent_compare_code")) }
                                p.code.parent-code aria-label=(code.replace(' ', "")) { (code) }
                            }
                            (Some(token), None) => {
                                @let link = format!("{}/k/{token}", origin(&headers));
                                p { (tf(lang, "parent_link_help", &[("name", name)])) }
                                p.link.parent-link { a href=(link) { (link) } }
                                @if let Some(svg) = qr_svg(&link) {
                                    figure.qr role="img" aria-label=(format!("QR-code: {link}")) { (PreEscaped(svg)) }
                                }
                            }
                            (None, None) => {}
                        }
                    }
                }
            }
            p { a.button.secondary href="/mentor" { (t(lang, "back_to_students")) } }
        }
        @if state == Stage::Waiting || state == Stage::Check && waits_for_parent
            || parents.iter().any(|l| l.key.is_none()) && state != Stage::Enrolled {
            script src="/assets/enrol.js" defer {}
        }
    };
    respond(
        StatusCode::OK,
        page(
            lang,
            &web.school(),
            &tf(lang, "invitation_for", &[("name", name)]),
            body,
        ),
    )
}

/// Where the mentor's own invitation stands, for the page that waits for the student.
pub async fn invitation_state(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor(&web, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match own_invitation(&web, lang, &staff, id).await {
        Ok(i) => match web.core.store.key_links_of_invitation(id).await {
            Ok(parents) => {
                Json(serde_json::json!({ "state": progress(&i, &parents, web.core.now()) }))
                    .into_response()
            }
            Err(e) => web.server_error(lang, e),
        },
        Err(r) => r,
    }
}

/// Where an enrolment stands, the parent's key included, as one word the mentor's page
/// watches: it reloads when the word changes.
fn progress(i: &InvitationRow, parents: &[crate::store::KeyLinkRow], now: i64) -> String {
    let parent_keys = parents.iter().filter(|l| l.key.is_some()).count();
    format!("{}-{parent_keys}", Stage::of(i, now).word())
}

pub async fn confirm(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor_posting(&web, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let invitation = match own_invitation(&web, lang, &staff, id).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    match web.core.enrol_student(id, &staff.username).await {
        Ok(_) => {
            let detail = format!("{} ({})", invitation.name, invitation.class_name);
            web.note(&staff, "enrol", "", &detail).await;
            Redirect::to(&format!("/mentor/invitations/{id}")).into_response()
        }
        Err(NodeError::Precondition(_)) => {
            // Used, run out, or no key yet: the invitation's own page says which.
            Redirect::to(&format!("/mentor/invitations/{id}")).into_response()
        }
        Err(NodeError::Invalid(reason)) => error(
            lang,
            &web.school(),
            StatusCode::UNPROCESSABLE_ENTITY,
            &reason,
            Some(("/mentor", &t(lang, "back_to_students"))),
        ),
        Err(e) => web.server_error(lang, e),
    }
}

/// The invitation a student's link names, or the kind page that says why it does not work.
async fn invitation_of_link(
    web: &Shared,
    lang: Lang,
    token: &str,
) -> Result<InvitationRow, Response> {
    let found = match web.core.store.invitation_by_token(&token_hash(token)).await {
        Ok(f) => f,
        Err(e) => return Err(web.server_error(lang, e)),
    };
    let refuse = |status, key: &str| error(lang, &web.school(), status, &t(lang, key), None);
    match found {
        None => Err(refuse(StatusCode::NOT_FOUND, "error_link_unknown")),
        Some(i) if i.used_at.is_some() => Err(refuse(StatusCode::GONE, "error_link_used")),
        Some(i) if i.expires_at <= web.core.now() => {
            Err(refuse(StatusCode::GONE, "error_link_expired"))
        }
        Some(i) => Ok(i),
    }
}

pub async fn student_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    let i = match invitation_of_link(&web, lang, &token).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    // The first name is enough to greet; the whole name stays with the mentor.
    let first = i
        .name
        .split_whitespace()
        .next()
        .unwrap_or(&i.name)
        .to_string();
    let mentor_name = match web.core.store.staff(&i.mentor).await {
        Ok(Some(s)) => s.display_name,
        _ => i.mentor.clone(),
    };
    let state = Stage::of(&i, web.core.now());
    // Under 16: the link for a parent, to pass on once the student's key is made.
    let parent_link = match web.core.store.key_links_of_invitation(i.id).await {
        Ok(l) => l
            .iter()
            .find_map(|l| l.link_token.as_ref())
            .map(|t| format!("{}/k/{t}", origin(&headers))),
        Err(e) => return web.server_error(lang, e),
    };
    let body = html! {
        div #enrol data-token=(token) data-state=(state.word()) {
            p.lead { (tf(lang, "enrol_intro", &[("mentor", &mentor_name)])) }
            section #step-make hidden[state != Stage::Waiting] {
                p { (t(lang, "enrol_key_explained")) }
                p.hint { (t(lang, "enrol_own_device")) }
                button #make-key type="button" { (t(lang, "enrol_button")) }
            }
            p #working hidden aria-live="polite" { (t(lang, "enrol_working")) }
            section #step-code hidden {
                p { (t(lang, "enrol_show_code")) }
                p.code #code {}
                p.hint aria-live="polite" { (t(lang, "enrol_wait_mentor")) }
                @if let Some(link) = &parent_link {
                    h2 { (t(lang, "enrol_parent_heading")) }
                    p { (t(lang, "enrol_parent_help")) }
                    p.link.parent-link { a href=(link) { (link) } }
                    @if let Some(svg) = qr_svg(link) {
                        figure.qr role="img" aria-label=(format!("QR-code: {link}")) { (PreEscaped(svg)) }
                    }
                }
            }
            div #done hidden {
                p.done role="status" { (t(lang, "enrol_done")) }
                p { a.button href="/student" { (t(lang, "to_my_passport")) } }
            }
            p.error #no-webcrypto role="alert" hidden { (t(lang, "enrol_no_webcrypto")) }
            p.error #failed role="alert" hidden { (t(lang, "enrol_failed")) }
        }
        script src="/assets/enrol.js" defer {}
    };
    respond(
        StatusCode::OK,
        page(
            lang,
            &web.school(),
            &tf(lang, "enrol_title", &[("name", &first)]),
            body,
        ),
    )
}

/// The public key a page hands in (`{"key": base64}`), checked to be an Ed25519 key; or what
/// is wrong with it, for the refusal.
pub(super) fn public_key_in(body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let Ok(KeyIn { key }) = serde_json::from_slice::<KeyIn>(body) else {
        return Err("expected {\"key\": \"<base64>\"}");
    };
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key.trim()) else {
        return Err("the key is not base64");
    };
    if overstap_proto::sign::verifying_key(&key, "public key").is_err() {
        return Err("the key is not a 32-byte Ed25519 public key");
    }
    Ok(key)
}

#[derive(Deserialize)]
pub struct KeyIn {
    /// The raw 32-byte Ed25519 public key, base64.
    key: String,
}

pub async fn hand_in_key(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let lang = Lang::of(&headers);
    let i = match invitation_of_link(&web, lang, &token).await {
        Ok(i) => i,
        Err(_) => return refusal(StatusCode::GONE, &t(lang, "enrol_failed")),
    };
    let key = match public_key_in(&body) {
        Ok(k) => k,
        Err(reason) => return refusal(StatusCode::BAD_REQUEST, reason),
    };
    match web
        .core
        .store
        .set_invitation_key(i.id, &key, web.core.now())
        .await
    {
        Ok(true) => Json(serde_json::json!({ "state": "check" })).into_response(),
        Ok(false) => refusal(StatusCode::CONFLICT, &t(lang, "error_link_used")),
        Err(e) => {
            tracing::error!(error = %e, "handing in a student's key failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, &t(lang, "error_server"))
        }
    }
}

pub async fn student_state(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    // A used link answers "enrolled" to the page that used it, and to no one else: only the
    // browser that holds the link's token asks.
    match web
        .core
        .store
        .invitation_by_token(&token_hash(&token))
        .await
    {
        Ok(Some(i)) => Json(serde_json::json!({ "state": Stage::of(&i, web.core.now()).word() }))
            .into_response(),
        Ok(None) => refusal(StatusCode::NOT_FOUND, &t(lang, "error_link_unknown")),
        Err(e) => {
            tracing::error!(error = %e, "reading an invitation failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, &t(lang, "error_server"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_code_is_six_digits_and_depends_on_every_byte_of_the_key() {
        let a = short_code(&[7u8; 32]);
        assert_eq!(a.len(), 7, "{a}");
        assert!(a.chars().enumerate().all(|(i, c)| if i == 3 {
            c == ' '
        } else {
            c.is_ascii_digit()
        }));
        let mut other = [7u8; 32];
        other[31] = 8;
        assert_ne!(a, short_code(&other));
        // Fixed, so the browser's own computation (assets/enrol.js) can be checked against it.
        assert_eq!(short_code(&[0u8; 32]), short_code(&[0u8; 32]));
    }
}

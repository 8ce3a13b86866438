//! Staff sign-in: local accounts (argon2id password hashes, made with `overstap staff add`),
//! a session in an HttpOnly, Secure, SameSite=Strict cookie of which the node keeps only the
//! SHA-256, a CSRF token on every form, and sign-in slowed down after wrong passwords.

use std::collections::HashMap;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::i18n::{Lang, t, tf};
use super::page::{error, form_expired, page, respond};
use super::{Shared, random_token};
use crate::core::people::password_matches;
use crate::store::SessionRow;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "overstap_web";
/// How long a staff session lasts: a working day.
pub const SESSION_SECS: i64 = 10 * 3600;
/// A session that nobody used for this long ends (on a shared computer too): an hour.
pub const IDLE_SECS: i64 = 3600;
/// Wrong passwords for one user name before sign-in pauses, and for how long.
const MAX_FAILURES: u32 = 5;
const PAUSE_SECS: i64 = 15 * 60;

/// A signed-in staff member.
#[derive(Debug, Clone)]
pub struct Staff {
    pub username: String,
    pub csrf: String,
    /// mentor, decaan or admin.
    pub role: String,
}

/// Failed sign-ins per user name: how many, since when.
#[derive(Default)]
pub struct Attempts(std::sync::Mutex<HashMap<String, (u32, i64)>>);

impl Attempts {
    fn paused(&self, user: &str, now: i64) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && now - since < PAUSE_SECS)
    }

    fn failed(&self, user: &str, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget old windows so the map cannot grow without bound.
        map.retain(|_, (_, since)| now - *since < PAUSE_SECS);
        let e = map.entry(user.to_string()).or_insert((0, now));
        e.0 += 1;
    }

    fn succeeded(&self, user: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
    }
}

pub(super) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

fn session_hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// This request's live session, whoever it belongs to.
pub async fn session(web: &Shared, headers: &HeaderMap) -> Option<SessionRow> {
    let id = cookie_value(headers, SESSION_COOKIE)?;
    web.core
        .store
        .session(&session_hash(id), web.core.now(), IDLE_SECS)
        .await
        .ok()?
}

/// Starts a session for `who` in `role` and answers with `response` carrying its cookie.
pub async fn start_session(
    web: &Shared,
    who: &str,
    role: &str,
    lasts: i64,
    mut response: Response,
) -> Result<Response, crate::store::StoreError> {
    let now = web.core.now();
    let id = random_token();
    let row = SessionRow {
        who: who.to_string(),
        role: role.to_string(),
        csrf: random_token(),
        expires_at: now + lasts,
    };
    web.core
        .store
        .insert_session(&session_hash(&id), &row, now)
        .await?;
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={lasts}; HttpOnly; Secure; SameSite=Strict"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// The staff member this request's session belongs to, if it has a live one: only a staff
/// role counts (a student's or a guardian's session is no staff member's).
pub async fn signed_in(web: &Shared, headers: &HeaderMap) -> Option<Staff> {
    let row = session(web, headers).await?;
    if !crate::core::people::ROLES.contains(&row.role.as_str()) {
        return None;
    }
    Some(Staff {
        username: row.who,
        csrf: row.csrf,
        role: row.role,
    })
}

/// The signed-in staff member if their role may open this page; otherwise the answer to give:
/// the sign-in page without a session, and for a role the page is not for a refusal that
/// is the same whatever the page would have shown (it is given before anything is looked up).
pub async fn staff_in(
    web: &Shared,
    headers: &HeaderMap,
    roles: &[&str],
) -> Result<Staff, Response> {
    let lang = Lang::of(headers);
    let Some(staff) = signed_in(web, headers).await else {
        return Err(sign_in_first(web, lang));
    };
    if !roles.contains(&staff.role.as_str()) {
        return Err(error(
            lang,
            &web.school(),
            StatusCode::FORBIDDEN,
            &t(lang, "error_not_your_page"),
            Some((home_of(&staff.role), &t(lang, "to_my_page"))),
        ));
    }
    Ok(staff)
}

/// [`staff_in`] for a form: also its CSRF token must be the session's.
pub async fn staff_posting(
    web: &Shared,
    headers: &HeaderMap,
    roles: &[&str],
    csrf: &str,
) -> Result<Staff, Response> {
    let staff = staff_in(web, headers, roles).await?;
    if !csrf_ok(&staff.csrf, csrf) {
        return Err(form_expired(Lang::of(headers), &web.school()));
    }
    Ok(staff)
}

/// The page a staff member starts from, by role.
pub fn home_of(role: &str) -> &'static str {
    match role {
        "intaker" | "consultant" => "/inbox",
        "admin" => "/audit",
        _ => "/mentor",
    }
}

/// The staff pages' own menu: the pages this role may open, and signing out.
pub fn staff_nav(lang: Lang, staff: &Staff) -> maud::Markup {
    let links: &[(&str, &str)] = match staff.role.as_str() {
        "intaker" | "consultant" => &[("/inbox", "nav_inbox")],
        "admin" => &[("/audit", "nav_audit")],
        "decaan" => &[("/mentor", "nav_school"), ("/handovers", "nav_handovers")],
        _ => &[("/mentor", "nav_class"), ("/handovers", "nav_handovers")],
    };
    html! {
        nav.staff aria-label=(t(lang, "nav_label")) {
            @for (href, key) in links { a href=(href) { (t(lang, key)) } }
            form method="post" action="/logout" {
                input type="hidden" name="csrf" value=(staff.csrf);
                button.link type="submit" { (t(lang, "sign_out")) }
            }
        }
    }
}

/// Whether a form's CSRF token is the session's (`expected`).
pub fn csrf_ok(expected: &str, token: &str) -> bool {
    use subtle_eq::eq;
    eq(expected.as_bytes(), token.as_bytes())
}

/// Compares two byte strings in time that depends on their length only.
mod subtle_eq {
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

pub async fn sign_in_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if let Some(staff) = signed_in(&web, &headers).await {
        return Redirect::to(home_of(&staff.role)).into_response();
    }
    respond(StatusCode::OK, sign_in_form(&web, lang, None))
}

fn sign_in_form(web: &Shared, lang: Lang, problem: Option<String>) -> maud::Markup {
    let body = html! {
        @if let Some(p) = &problem { p.error role="alert" { (p) } }
        @if let Some(o) = &web.oidc {
            p { a.button href="/login/oidc" { (tf(lang, "oidc_button", &[("provider", o.display_name())])) } }
            h2 { (t(lang, "oidc_or_local")) }
        }
        form method="post" action="/login" {
            label for="username" { (t(lang, "username")) }
            input #username type="text" name="username" autocomplete="username" required;
            label for="password" { (t(lang, "password")) }
            input #password type="password" name="password" autocomplete="current-password" required;
            button type="submit" { (t(lang, "sign_in")) }
        }
    };
    page(lang, &web.school(), &t(lang, "sign_in"), body)
}

#[derive(Deserialize)]
pub struct SignIn {
    username: String,
    password: String,
}

pub async fn sign_in(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let lang = Lang::of(&headers);
    let now = web.core.now();
    let user = form.username.trim().to_string();
    if web.attempts.paused(&user, now) {
        let problem = t(lang, "sign_in_slow_down");
        return respond(
            StatusCode::TOO_MANY_REQUESTS,
            sign_in_form(&web, lang, Some(problem)),
        );
    }
    let account = match web.core.store.staff(&user).await {
        Ok(a) => a,
        Err(e) => return web.server_error(lang, e),
    };
    // The hash is checked even for a user name that does not exist, so the time taken does
    // not tell which names do.
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| web.dummy_hash.clone());
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || password_matches(&hash, &password))
        .await
        .unwrap_or(false);
    let Some(account) = account.filter(|_| ok) else {
        web.attempts.failed(&user, now);
        tracing::info!(user = %user, "a staff sign-in failed");
        let problem = t(lang, "sign_in_failed");
        return respond(
            StatusCode::UNAUTHORIZED,
            sign_in_form(&web, lang, Some(problem)),
        );
    };
    web.attempts.succeeded(&user);
    tracing::info!(user = %account.username, role = %account.role, "staff signed in");
    if let Err(e) = web
        .core
        .audit(&account.username, &account.role, "sign-in", "", "")
        .await
    {
        return web.server_error(lang, e);
    }
    let to = Redirect::to(home_of(&account.role)).into_response();
    match start_session(&web, &account.username, &account.role, SESSION_SECS, to).await {
        Ok(r) => r,
        Err(e) => web.server_error(lang, e),
    }
}

#[derive(Deserialize)]
pub struct WithCsrf {
    pub(super) csrf: String,
}

pub async fn sign_out(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some(row) = session(&web, &headers).await else {
        return Redirect::to("/").into_response();
    };
    if !csrf_ok(&row.csrf, &form.csrf) {
        return form_expired(lang, &web.school());
    }
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        let _ = web.core.store.delete_session(&session_hash(id)).await;
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "overstap_web=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
    );
    r
}

/// The page a request without a staff session gets.
pub fn sign_in_first(web: &Shared, lang: Lang) -> Response {
    error(
        lang,
        &web.school(),
        StatusCode::UNAUTHORIZED,
        &t(lang, "error_sign_in_first"),
        Some(("/login", &t(lang, "sign_in"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_pauses_after_five_wrong_passwords_for_a_quarter_of_an_hour() {
        let a = Attempts::default();
        for _ in 0..MAX_FAILURES {
            assert!(!a.paused("jan", 1_000));
            a.failed("jan", 1_000);
        }
        assert!(a.paused("jan", 1_000));
        assert!(!a.paused("piet", 1_000));
        assert!(!a.paused("jan", 1_000 + PAUSE_SECS));
    }
}

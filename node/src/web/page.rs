//! The frame every page shares: the document head, a header with the school's name and the
//! language switch, big touch targets, and the kind error page that says what to do next.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::i18n::{Lang, t};

/// A whole page: `title` in the tab and as the heading, `body` below it.
pub fn page(lang: Lang, school: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (t(lang, "app_name")) }
                link rel="stylesheet" href="/assets/app.css";
                link rel="manifest" href="/assets/manifest.json";
            }
            body {
                header {
                    span.school { (school) }
                    a.lang href=(format!("?lang={}", lang.other().tag()))
                        hreflang=(lang.other().tag()) lang=(lang.other().tag())
                        aria-label=(t(lang, "switch_language_label")) {
                        (t(lang, "switch_language"))
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page as a response, never cached (pages hold personal data or one-time links).
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, axum::response::Html(markup.into_string())).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The kind error page: what happened, in plain words, and what to do now.
pub fn error(
    lang: Lang,
    school: &str,
    status: StatusCode,
    what: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let body = html! {
        p.error role="alert" { (what) }
        h2 { (t(lang, "error_what_now")) }
        @match link {
            Some((href, text)) => { p { a.button href=(href) { (text) } } }
            None => { p { a.button href="/" { (t(lang, "to_start")) } } }
        }
    };
    respond(status, page(lang, school, &t(lang, "error_title"), body))
}

/// The page for a form whose CSRF token is not its session's (forged, or from an old page).
pub fn form_expired(lang: Lang, school: &str) -> Response {
    error(
        lang,
        school,
        StatusCode::FORBIDDEN,
        &t(lang, "error_form_expired"),
        None,
    )
}

/// A refusal for the pages' own scripts (JSON): the status and a reason they can show.
pub fn refusal(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}

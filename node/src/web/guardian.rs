//! A guardian's pages: signing in with the key on the guardian's own device (a session for
//! that guardian's student, never a student's session), what the student under 16 signed and
//! waits for them, shown exactly as it will count, and co-signing it with that key or saying no.

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use overstap_proto::pb::{ConsentGrant, Manifest, Sig, Signed, StorePassportRequest};
use overstap_proto::sign::{Domain, decode_body};
use serde::Deserialize;

use super::Shared;
use super::consent::{Signer, review};
use super::i18n::{Lang, t, tf, when};
use super::page::{error, form_expired, page, refusal, respond};
use super::staff::{WithCsrf, csrf_ok, session};
use super::student::{preview, sign_box, sign_in_as};
use crate::core::NodeError;
use crate::store::HeldRow;

/// The guardian of this request's session: their student's pseudonym and the CSRF token.
async fn guardian(web: &Shared, headers: &HeaderMap) -> Option<(String, String)> {
    let row = session(web, headers).await?;
    (row.role == "guardian").then_some((row.who, row.csrf))
}

pub async fn sign_in_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if guardian(&web, &headers).await.is_some() {
        return Redirect::to("/guardian/waiting").into_response();
    }
    let body = html! {
        div #student-sign-in data-slot="guardian" data-url="/guardian/sign-in" {
            p.lead { (t(lang, "parent_sign_in_help")) }
            button #sign-in-with-key type="button" { (t(lang, "student_sign_in_button")) }
            p.error #no-key role="alert" hidden { (t(lang, "parent_no_key")) }
            p.error #sign-in-failed role="alert" hidden { (t(lang, "student_sign_in_failed")) }
            p.error #no-webcrypto role="alert" hidden { (t(lang, "enrol_no_webcrypto")) }
        }
        script src="/assets/student.js" defer {}
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "parent_pages_title"), body),
    )
}

pub async fn sign_in(State(web): State<Shared>, body: axum::body::Bytes) -> Response {
    sign_in_as(&web, &body, true).await
}

/// One line about a held item: what it is and since when it waits.
fn summary(web: &Shared, lang: Lang, row: &HeldRow) -> String {
    let since = when(lang, row.held_at);
    let signed = overstap_proto::pb::Signed::decode_from(&row.signed);
    match row.kind.as_str() {
        "consent" => {
            let org = signed
                .and_then(|s| decode_body::<ConsentGrant>(Domain::Grant, &s).ok())
                .map(|g| web.org_name(&g.recipient_org))
                .unwrap_or_default();
            tf(lang, "held_consent", &[("org", &org), ("since", &since)])
        }
        _ => tf(lang, "held_passport", &[("since", &since)]),
    }
}

pub async fn waiting_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, csrf)) = guardian(&web, &headers).await else {
        return Redirect::to("/guardian").into_response();
    };
    let held = match web.core.held(&pseudonym).await {
        Ok(h) => h,
        Err(e) => return web.server_error(lang, e),
    };
    let name = web.first_name(&pseudonym).await;
    let open: Vec<&HeldRow> = held.iter().filter(|h| h.declined_at.is_none()).collect();
    let body = html! {
        p.lead { (tf(lang, "parent_waiting_intro", &[("name", &name)])) }
        @if open.is_empty() {
            p.done role="status" { (t(lang, "parent_nothing_waits")) }
        } @else {
            ul.cards {
                @for h in &open {
                    li { a href=(format!("/guardian/waiting/{}", h.id)) { (summary(&web, lang, h)) } }
                }
            }
        }
        p { a.button.secondary href="/guardian/consents" { (t(lang, "parent_to_consents")) } }
        form method="post" action="/logout" {
            input type="hidden" name="csrf" value=(csrf);
            button.secondary type="submit" { (t(lang, "sign_out")) }
        }
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "parent_pages_title"), body),
    )
}

/// The held item `id` of the signed-in guardian's student, still open.
async fn held_item(
    web: &Shared,
    headers: &HeaderMap,
    id: i64,
) -> Result<(HeldRow, String, String), Response> {
    let lang = Lang::of(headers);
    let Some((pseudonym, csrf)) = guardian(web, headers).await else {
        return Err(Redirect::to("/guardian").into_response());
    };
    match web.core.held(&pseudonym).await {
        Ok(list) => match list
            .into_iter()
            .find(|h| h.id == id && h.declined_at.is_none())
        {
            Some(h) => Ok((h, pseudonym, csrf)),
            None => Err(error(
                lang,
                &web.school(),
                StatusCode::NOT_FOUND,
                &t(lang, "parent_item_gone"),
                Some(("/guardian/waiting", &t(lang, "back"))),
            )),
        },
        Err(e) => Err(web.server_error(lang, e)),
    }
}

pub async fn item_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let lang = Lang::of(&headers);
    let (row, pseudonym, csrf) = match held_item(&web, &headers, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(signed) = Signed::decode_from(&row.signed) else {
        return web.server_error(lang, "a held signature does not decode");
    };
    let name = web.first_name(&pseudonym).await;
    let url = format!("/guardian/waiting/{id}/sign");
    let what = match row.kind.as_str() {
        "consent" => {
            let Ok(grant) = decode_body::<ConsentGrant>(Domain::Grant, &signed) else {
                return web.server_error(lang, "a held grant does not decode");
            };
            let titles = super::consent::section_titles(&web, &pseudonym)
                .await
                .unwrap_or_default();
            html! {
                p { (tf(lang, "parent_consent_asks", &[("name", &name)])) }
                (review(lang, &grant, Some(&name), &web.org_name(&grant.recipient_org), &titles, Signer {
                    url: &url,
                    slot: "guardian",
                    button: t(lang, "parent_cosign_button"),
                }))
            }
        }
        _ => {
            let Ok(manifest) = decode_body::<Manifest>(Domain::Manifest, &signed) else {
                return web.server_error(lang, "a held manifest does not decode");
            };
            let sections = row
                .sections
                .as_deref()
                .and_then(StorePassportRequest::decode_from)
                .map(|p| p.sections)
                .unwrap_or_default();
            html! {
                p { (tf(lang, "parent_passport_asks", &[("name", &name), ("version", &manifest.version.to_string())])) }
                (preview(lang, &sections))
                (sign_box(lang, "sign", &signed.body, &url, "guardian", &t(lang, "parent_cosign_button")))
            }
        }
    };
    let body = html! {
        (what)
        form method="post" action=(format!("/guardian/waiting/{id}/decline")) {
            input type="hidden" name="csrf" value=(csrf);
            button.secondary type="submit" { (t(lang, "parent_decline_button")) }
        }
        p { a.button.secondary href="/guardian/waiting" { (t(lang, "back")) } }
        script src="/assets/student.js" defer {}
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "parent_item_title"), body),
    )
}

#[derive(Deserialize)]
struct Signature {
    key: String,
    signature: String,
}

/// The guardian's signature over exactly the bytes the student signed: the version or consent
/// counts from now.
pub async fn cosign(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, _)) = guardian(&web, &headers).await else {
        return refusal(StatusCode::UNAUTHORIZED, &t(lang, "error_sign_in_first"));
    };
    let Ok(form) = serde_json::from_slice::<Signature>(&body) else {
        return refusal(StatusCode::BAD_REQUEST, "expected {\"key\", \"signature\"}");
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(key), Ok(signature)) = (b64.decode(&form.key), b64.decode(&form.signature)) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the key or the signature is not base64",
        );
    };
    let sig = Sig {
        public_key: key,
        signature,
    };
    match web.core.cosign(&pseudonym, id, sig).await {
        Ok(kind) => Json(serde_json::json!({
            "message": t(lang, if kind == "consent" { "parent_cosigned_consent" } else { "parent_cosigned_passport" }),
        }))
        .into_response(),
        Err(NodeError::Store(e)) => {
            tracing::error!(error = %e, "keeping a co-signature failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, &t(lang, "error_server"))
        }
        Err(e) => {
            tracing::info!(reason = %e, "a co-signature was refused");
            refusal(StatusCode::UNPROCESSABLE_ENTITY, &t(lang, "sign_failed"))
        }
    }
}

pub async fn decline(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let (_, pseudonym, csrf) = match held_item(&web, &headers, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !csrf_ok(&csrf, &form.csrf) {
        return form_expired(lang, &web.school());
    }
    match web.core.decline(&pseudonym, id).await {
        Ok(()) => Redirect::to("/guardian/waiting").into_response(),
        Err(e) => web.server_error(lang, e),
    }
}

/// Decoding what this node stored itself, without a panic on damage.
trait DecodeFrom: Sized {
    fn decode_from(bytes: &[u8]) -> Option<Self>;
}

impl<T: prost::Message + Default> DecodeFrom for T {
    fn decode_from(bytes: &[u8]) -> Option<T> {
        T::decode(bytes).ok()
    }
}

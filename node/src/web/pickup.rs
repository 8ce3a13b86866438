//! Pickup codes in the browser. The student's own device makes the code (eight symbols from
//! the browser's random source), sends only its SHA-256, checks the code object the node
//! prepared (this grant, this digest, a quarter of an hour) and signs it with the device's key;
//! the code itself never reaches the home node until the recipient brings it. An intaker types
//! the code the student shows, and the college's node fetches with it.

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use overstap_proto::pb::PickupCode;
use prost::Message;
use serde::Deserialize;

use super::Shared;
use super::i18n::{Lang, t, tf, when};
use super::page::{error, page, refusal, respond};
use super::staff::staff_posting;
use super::student::{not_signed, signing, student};
use crate::core::NodeError;
use crate::core::people::READERS;
use crate::store::GrantRow;

/// How long a code made in the browser works.
const PICKUP_SECS: i64 = 15 * 60;

/// The signed-in student's active grant `grant_id`, or the page to answer with.
async fn own_grant(
    web: &Shared,
    headers: &HeaderMap,
    grant_id: &str,
) -> Result<(String, GrantRow), Response> {
    let lang = Lang::of(headers);
    let Some((pseudonym, _)) = student(web, headers).await else {
        return Err(Redirect::to("/student").into_response());
    };
    match web.core.store.grant(grant_id).await {
        Ok(Some(g)) if g.pseudonym == pseudonym && g.state == "active" => Ok((pseudonym, g)),
        Ok(_) => Err(error(
            lang,
            &web.school(),
            StatusCode::NOT_FOUND,
            &t(lang, "pickup_no_consent"),
            Some(("/student/consents", &t(lang, "back"))),
        )),
        Err(e) => Err(web.server_error(lang, e)),
    }
}

/// GET /student/pickup/{grant}: the page that makes a code on this device.
pub async fn pickup_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
) -> Response {
    let lang = Lang::of(&headers);
    let (_, g) = match own_grant(&web, &headers, &grant_id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let org = web.org_name(&g.recipient_org);
    let minutes = (PICKUP_SECS / 60).to_string();
    let body = html! {
        p.lead { (tf(lang, "pickup_intro", &[("org", &org), ("minutes", &minutes)])) }
        div #pickup data-grant=(g.grant_id) data-school=(web.core.org_id)
            data-prepare="/student/pickup/prepare" data-url="/student/pickup/sign" data-slot="student"
            data-minutes=(minutes) {
            button #make-code type="button" { (t(lang, "pickup_make")) }
            p #checking aria-live="polite" hidden {}
            p.code #pickup-code hidden {}
            figure.qr #pickup-qr role="img" aria-label=(t(lang, "pickup_qr")) hidden {}
            p.error #check-failed role="alert" hidden { (t(lang, "sign_check_failed")) }
            p.error #sign-failed role="alert" hidden { (t(lang, "sign_failed")) }
            p.error #no-key role="alert" hidden { (t(lang, "student_no_key")) }
            p.error #no-webcrypto role="alert" hidden { (t(lang, "enrol_no_webcrypto")) }
        }
        p.hint { (t(lang, "pickup_once")) }
        p { a.button.secondary href="/student/consents" { (t(lang, "back")) } }
        script src="/assets/qrcodegen.js" defer {}
        script src="/assets/student.js" defer {}
    };
    respond(
        StatusCode::OK,
        page(
            lang,
            &web.school(),
            &tf(lang, "pickup_title", &[("org", &org)]),
            body,
        ),
    )
}

#[derive(Deserialize)]
pub struct Prepare {
    grant: String,
    /// The SHA-256 of the code the browser made, base64.
    digest: String,
}

/// POST /student/pickup/prepare: the code object for the browser to check and sign.
pub async fn prepare(
    State(web): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let lang = Lang::of(&headers);
    let Ok(form) = serde_json::from_slice::<Prepare>(&body) else {
        return refusal(StatusCode::BAD_REQUEST, "expected {\"grant\", \"digest\"}");
    };
    let digest = base64::engine::general_purpose::STANDARD
        .decode(&form.digest)
        .unwrap_or_default();
    if digest.len() != 32 {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the digest is not 32 bytes of base64",
        );
    }
    let (pseudonym, g) = match own_grant(&web, &headers, &form.grant).await {
        Ok(x) => x,
        Err(_) => return refusal(StatusCode::NOT_FOUND, &t(lang, "pickup_no_consent")),
    };
    let now = web.core.now();
    let code = PickupCode {
        grant_id: g.grant_id,
        pseudonym: pseudonym.clone(),
        code_sha256: digest,
        issued_at: now,
        expires_at: now + PICKUP_SECS,
    };
    let bytes = code.encode_to_vec();
    web.pending.put(
        &format!("pickup:{pseudonym}"),
        bytes.clone(),
        Vec::new(),
        now,
    );
    Json(serde_json::json!({
        "body": base64::engine::general_purpose::STANDARD.encode(&bytes),
    }))
    .into_response()
}

/// POST /student/pickup/sign: the student's signature over the prepared code; kept.
pub async fn sign(
    State(web): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let s = match signing(&web, &headers, &body, |p| format!("pickup:{p}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match web.core.add_pickup_code(&s.signed).await {
        Ok(until) => Json(serde_json::json!({
            "message": tf(s.lang, "pickup_made", &[("until", &when(s.lang, until))]),
        }))
        .into_response(),
        Err(e) => not_signed(s.lang, e, "a pickup code"),
    }
}

#[derive(Deserialize)]
pub struct Redeem {
    csrf: String,
    #[serde(default)]
    code: String,
}

/// POST /inbox/code: the intaker types the code the student shows; the college fetches.
pub async fn redeem(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Redeem>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match staff_posting(&web, &headers, READERS, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let back_words = t(lang, "inbox_back");
    let back = Some(("/inbox", back_words.as_str()));
    match web
        .core
        .redeem_pickup_code(&form.code, &staff.username, &staff.role)
        .await
    {
        Ok(_) => Redirect::to("/inbox?asked=code").into_response(),
        Err(NodeError::Invalid(_)) => error(
            lang,
            &web.school(),
            StatusCode::UNPROCESSABLE_ENTITY,
            &t(lang, "pickup_not_a_code"),
            back,
        ),
        Err(NodeError::NotFound(_)) => error(
            lang,
            &web.school(),
            StatusCode::NOT_FOUND,
            &t(lang, "pickup_unknown_school"),
            back,
        ),
        Err(e) => web.server_error(lang, e),
    }
}

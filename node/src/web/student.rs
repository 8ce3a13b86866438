//! The student's own pages: signing in with the key on their device (a challenge signed under a
//! domain tag of its own, so a sign-in signature can never count as a document signature), and
//! signing: the preview of exactly what will be signed, the box that checks and signs it, and
//! what the node does with the signature. The passport form itself is in `passport`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::{Markup, html};
use overstap_proto::sign::{Domain, signing_bytes, verifying_key};
use rand_core::RngCore;
use serde::Deserialize;

use super::i18n::{Lang, t, tf};
use super::page::{error, form_expired, page, refusal, respond};
use super::passport::{DEFAULT_SET, smiley_face, smiley_label};
use super::staff::{csrf_ok, session, start_session};
use super::{Shared, random_token};
use crate::core::NodeError;
use crate::core::keys::Kept;
use crate::core::people::Draft;
use overstap_proto::pb::{Disclosure, Section, Sig, Signed};
use prost::Message;

/// How long a student's session lasts: an evening of filling in.
pub const STUDENT_SESSION_SECS: i64 = 4 * 3600;
/// How long a sign-in challenge may wait for its signature.
const CHALLENGE_SECS: i64 = 300;
/// Challenges waiting at once; past this, the oldest that ran out are dropped first.
const MAX_CHALLENGES: usize = 10_000;

/// Sign-in challenges waiting for a signature: id → (challenge, until).
#[derive(Default)]
pub struct Challenges(std::sync::Mutex<HashMap<String, ([u8; 32], i64)>>);

impl Challenges {
    fn issue(&self, now: i64) -> Option<(String, [u8; 32])> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, until)| *until > now);
        if map.len() >= MAX_CHALLENGES {
            return None;
        }
        let mut c = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut c);
        let id = random_token();
        map.insert(id.clone(), (c, now + CHALLENGE_SECS));
        Some((id, c))
    }

    /// The challenge `id`, once: a second use finds nothing.
    fn take(&self, id: &str, now: i64) -> Option<[u8; 32]> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id)
            .filter(|(_, until)| *until > now)
            .map(|(c, _)| c)
    }
}

/// The value of the form field `name`, if the form has one.
pub(super) fn form_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The student who posted `fields` (pseudonym, session CSRF token): signed in, and the form's
/// CSRF token is the session's; or the page to answer with.
pub(super) async fn student_form(
    web: &Shared,
    headers: &HeaderMap,
    fields: &[(String, String)],
) -> Result<(String, String), Response> {
    let Some((pseudonym, csrf)) = student(web, headers).await else {
        return Err(Redirect::to("/student").into_response());
    };
    if !csrf_ok(&csrf, form_field(fields, "csrf").unwrap_or_default()) {
        return Err(form_expired(Lang::of(headers), &web.school()));
    }
    Ok((pseudonym, csrf))
}

/// Versions prepared for signing, one per student: the manifest's body and the disclosures,
/// until a time. Signing takes exactly what was shown; a new preview replaces it.
#[derive(Default)]
pub struct Pending(std::sync::Mutex<HashMap<String, Prepared>>);

/// A prepared version: the manifest's body, the disclosures, and until when it waits.
type Prepared = (Vec<u8>, Vec<Disclosure>, i64);

/// How long a prepared version waits for its signature.
const PENDING_SECS: i64 = 1_800;

impl Pending {
    pub(super) fn put(
        &self,
        pseudonym: &str,
        body: Vec<u8>,
        disclosures: Vec<Disclosure>,
        now: i64,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, _, until)| *until > now);
        map.insert(
            pseudonym.to_string(),
            (body, disclosures, now + PENDING_SECS),
        );
    }

    pub(super) fn take(&self, pseudonym: &str, now: i64) -> Option<(Vec<u8>, Vec<Disclosure>)> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(pseudonym)
            .filter(|(_, _, until)| *until > now)
            .map(|(b, d, _)| (b, d))
    }
}

/// The student this request's session belongs to: their pseudonym and the session's CSRF token.
pub(super) async fn student(web: &Shared, headers: &HeaderMap) -> Option<(String, String)> {
    Who::Student.of(web, headers).await
}

/// Who signs in with a key: the student, or a guardian (for their student). Their pages live
/// under their own path and sign with the key in their own slot of the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    Student,
    Guardian,
}

impl Who {
    /// The session's role, the pages' base path and the browser's key slot.
    pub fn word(self) -> &'static str {
        match self {
            Who::Student => "student",
            Who::Guardian => "guardian",
        }
    }

    /// Where this person's pages start, and where they sign in.
    pub fn home(self) -> &'static str {
        match self {
            Who::Student => "/student/passport",
            Who::Guardian => "/guardian/waiting",
        }
    }

    /// The student's pseudonym and the CSRF token of this request's session, when it is this
    /// kind of person's.
    pub async fn of(self, web: &Shared, headers: &HeaderMap) -> Option<(String, String)> {
        let row = session(web, headers).await?;
        (row.role == self.word()).then_some((row.who, row.csrf))
    }
}

pub async fn sign_in_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    if student(&web, &headers).await.is_some() {
        return Redirect::to("/student/passport").into_response();
    }
    let body = html! {
        div #student-sign-in {
            p.lead { (t(lang, "student_sign_in_help")) }
            button #sign-in-with-key type="button" { (t(lang, "student_sign_in_button")) }
            p.error #no-key role="alert" hidden { (t(lang, "student_no_key")) }
            p.error #sign-in-failed role="alert" hidden { (t(lang, "student_sign_in_failed")) }
            p.error #no-webcrypto role="alert" hidden { (t(lang, "enrol_no_webcrypto")) }
        }
        script src="/assets/student.js" defer {}
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "student_title"), body),
    )
}

pub async fn challenge(State(web): State<Shared>) -> Response {
    match web.challenges.issue(web.core.now()) {
        Some((id, c)) => Json(serde_json::json!({
            "id": id,
            "challenge": base64::engine::general_purpose::STANDARD.encode(c),
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "error": "too many sign-ins at once; try again in a minute" }),
            ),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    id: String,
    key: String,
    signature: String,
}

pub async fn sign_in(State(web): State<Shared>, body: axum::body::Bytes) -> Response {
    sign_in_as(&web, &body, false).await
}

/// Signs in a student (or, with `guardian`, a guardian) who signed the node's challenge with a
/// key their card names. A guardian's session is for that guardian's student and is never a
/// student's session.
pub(super) async fn sign_in_as(web: &Shared, body: &[u8], guardian: bool) -> Response {
    let Ok(form) = serde_json::from_slice::<SignIn>(body) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "expected {\"id\", \"key\", \"signature\"}",
        );
    };
    let now = web.core.now();
    let Some(challenge) = web.challenges.take(&form.id, now) else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "this sign-in challenge is unknown, used or ran out; ask for a new one",
        );
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(key), Ok(signature)) = (b64.decode(&form.key), b64.decode(&form.signature)) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the key or the signature is not base64",
        );
    };
    let Ok(verifying) = verifying_key(&key, "student key") else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "the key is not an Ed25519 public key",
        );
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(&signature) else {
        return refusal(StatusCode::BAD_REQUEST, "the signature is not 64 bytes");
    };
    if verifying
        .verify_strict(&signing_bytes(Domain::SignIn, &challenge), &signature)
        .is_err()
    {
        return refusal(StatusCode::UNAUTHORIZED, "the signature does not verify");
    }
    let pseudonym = match web.core.student_by_key(&key, guardian).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "no student of this school has this key",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "finding a student by key failed");
            return refusal(StatusCode::INTERNAL_SERVER_ERROR, "try again in a minute");
        }
    };
    let (role, to) = if guardian {
        ("guardian", "/guardian/waiting")
    } else {
        ("student", "/student/passport")
    };
    let ok = Json(serde_json::json!({ "to": to })).into_response();
    match start_session(web, &pseudonym, role, STUDENT_SESSION_SECS, ok).await {
        Ok(r) => {
            tracing::info!(role, "signed in with a key");
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a student's session failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, "try again in a minute")
        }
    }
}

pub async fn sign_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, _)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    let draft = match web.core.draft(&pseudonym).await {
        Ok(Some(d)) => d,
        Ok(None) => Draft {
            question_set: DEFAULT_SET.into(),
            ..Default::default()
        },
        Err(e) => return web.server_error(lang, e),
    };
    let version = match web.core.prepare_version(&pseudonym, &draft).await {
        Ok(v) => v,
        Err(NodeError::Precondition(_)) => {
            return error(
                lang,
                &web.school(),
                StatusCode::CONFLICT,
                &t(lang, "nothing_to_sign"),
                Some(("/student/passport", &t(lang, "back_to_passport"))),
            );
        }
        Err(e) => return web.server_error(lang, e),
    };
    let body = version.manifest.encode_to_vec();
    let number = version.manifest.version.to_string();
    let markup = html! {
        p.lead { (tf(lang, "sign_intro", &[("version", &number)])) }
        (preview(lang, &version.disclosures))
        (sign_box(lang, "sign", &body, "/student/sign", "student", &t(lang, "sign_button")))
        p { a.button.secondary href="/student/passport" { (t(lang, "back_to_passport")) } }
        p { a.button.secondary href="/student/consent" { (t(lang, "to_consent")) } }
        script src="/assets/student.js" defer {}
    };
    web.pending
        .put(&pseudonym, body, version.disclosures, web.core.now());
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "sign_title"), markup),
    )
}

/// The sections of a passport version as they will be signed, each with its exact bytes and
/// salt for the page's script to check against what it shows.
pub(super) fn preview(lang: Lang, disclosures: &[Disclosure]) -> Markup {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sections: Vec<(Section, &Disclosure)> = disclosures
        .iter()
        .filter_map(|d| Section::decode(d.section.as_slice()).ok().map(|s| (s, d)))
        .collect();
    html! {
        @for (section, d) in &sections {
            section.preview aria-labelledby=(format!("p-{}", section.section_id))
                data-salt=(b64.encode(&d.salt)) data-section=(b64.encode(&d.section)) {
                h2 #(format!("p-{}", section.section_id)) { (section.title) }
                (answers(lang, section))
            }
        }
    }
}

/// A section's answers as the student wrote them: each question, the answer, the smiley.
pub(super) fn answers(lang: Lang, section: &Section) -> Markup {
    html! {
        @for a in &section.answers {
            div.answer data-smiley=(a.smiley) {
                p.q { (a.question) }
                p.a { (a.answer) }
                @if !a.smiley.is_empty() {
                    p.smiley-shown { (smiley_face(&a.smiley)) " " (smiley_label(lang, &a.smiley)) }
                }
            }
        }
    }
}

/// The box that checks `body` against the page and signs it with this browser's key in
/// `slot` ("student" or "guardian"), posting the signature to `url`. `id` says what the
/// script checks: "sign" (a passport version), "consent-sign" or "revoke-sign".
pub(super) fn sign_box(
    lang: Lang,
    id: &str,
    body: &[u8],
    url: &str,
    slot: &str,
    button: &str,
) -> Markup {
    let b64 = base64::engine::general_purpose::STANDARD;
    html! {
        div id=(id) data-body=(b64.encode(body)) data-url=(url) data-slot=(slot) {
            p #checking aria-live="polite" { (t(lang, "sign_checking")) }
            button #sign-with-key type="button" disabled { (button) }
            p.error #check-failed role="alert" hidden { (t(lang, "sign_check_failed")) }
            p.error #sign-failed role="alert" hidden { (t(lang, "sign_failed")) }
            p.error #no-key role="alert" hidden { (t(lang, "student_no_key")) }
        }
    }
}

#[derive(Deserialize)]
struct Signature {
    key: String,
    signature: String,
}

/// What a student signed in their browser, ready for the core: the `Signed` over exactly what
/// was prepared for them under `slot` (and its disclosures), and the language; or the refusal
/// to answer with. Every signing page posts `{key, signature}` here.
pub(super) struct Signing {
    pub signed: Signed,
    pub disclosures: Vec<Disclosure>,
    pub lang: Lang,
}

pub(super) async fn signing(
    web: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    slot: impl Fn(&str) -> String,
) -> Result<Signing, Response> {
    signing_as(Who::Student, web, headers, body, slot).await
}

/// [`signing`] for `who`: the session must be theirs.
pub(super) async fn signing_as(
    who: Who,
    web: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    slot: impl Fn(&str) -> String,
) -> Result<Signing, Response> {
    let lang = Lang::of(headers);
    let Some((pseudonym, _)) = who.of(web, headers).await else {
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            &t(lang, "error_sign_in_first"),
        ));
    };
    let Ok(form) = serde_json::from_slice::<Signature>(body) else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "expected {\"key\", \"signature\"}",
        ));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(key), Ok(signature)) = (b64.decode(&form.key), b64.decode(&form.signature)) else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "the key or the signature is not base64",
        ));
    };
    let Some((prepared, disclosures)) = web.pending.take(&slot(&pseudonym), web.core.now()) else {
        return Err(refusal(StatusCode::CONFLICT, &t(lang, "sign_failed")));
    };
    let signed = Signed {
        body: prepared,
        sigs: vec![Sig {
            public_key: key,
            signature,
        }],
    };
    Ok(Signing {
        signed,
        disclosures,
        lang,
    })
}

/// The answer to a signature the core refused or could not keep.
pub(super) fn not_signed(lang: Lang, e: NodeError, what: &str) -> Response {
    match e {
        NodeError::Store(e) => {
            tracing::error!(error = %e, "keeping {what} failed");
            refusal(StatusCode::INTERNAL_SERVER_ERROR, &t(lang, "error_server"))
        }
        e => {
            tracing::info!(reason = %e, "{what} was refused");
            refusal(StatusCode::UNPROCESSABLE_ENTITY, &t(lang, "sign_failed"))
        }
    }
}

/// Takes the student's signature over the version they were shown, and stores it as their next
/// passport version; the node checks the signature against the student's card.
pub async fn sign(
    State(web): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let s = match signing(&web, &headers, &body, |p| p.to_string()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match web
        .core
        .student_signed_passport(&s.signed, &s.disclosures)
        .await
    {
        Ok(Kept::Done(version)) => {
            tracing::info!(%version, "a student signed a passport version in the browser");
            Json(serde_json::json!({
                "version": version,
                "message": tf(s.lang, "signed_done", &[("version", &version)]),
            }))
            .into_response()
        }
        Ok(Kept::Held(version)) => Json(serde_json::json!({
            "version": version,
            "message": tf(s.lang, "signed_waits_for_parent", &[("version", &version)]),
        }))
        .into_response(),
        Err(e) => not_signed(s.lang, e, "a passport signature"),
    }
}

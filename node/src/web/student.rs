//! The student's own pages: signing in with the key on their device (a challenge signed under a
//! domain tag of its own, so a sign-in signature can never count as a document signature), and
//! the passport to fill in with smileys and read-aloud, saved at the home node as they go.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::{Markup, html};
use overstap_proto::questions::{CURRENT_SETS, PERSONALIA, question_set};
use overstap_proto::sign::{Domain, signing_bytes, verifying_key};
use rand_core::RngCore;
use serde::Deserialize;

use super::i18n::{Lang, month_name, t, tf, when};
use super::page::{error, form_expired, page, refusal, respond};
use super::staff::{csrf_ok, session, start_session};
use super::{Shared, random_token};
use crate::core::NodeError;
use crate::core::keys::Kept;
use crate::core::people::{Draft, DraftAnswer};
use overstap_proto::pb::{Disclosure, Section, Sig, Signed};
use prost::Message;

/// How long a student's session lasts: an evening of filling in.
pub const STUDENT_SESSION_SECS: i64 = 4 * 3600;
/// How long a sign-in challenge may wait for its signature.
const CHALLENGE_SECS: i64 = 300;
/// Challenges waiting at once; past this, the oldest that ran out are dropped first.
const MAX_CHALLENGES: usize = 10_000;
/// The question set a new passport starts from (the student can switch to the werk track).
const DEFAULT_SET: &str = "pvs-mbo-v2";

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

fn smiley_label(lang: Lang, smiley: &str) -> String {
    t(lang, &format!("smiley_{smiley}"))
}

/// A smiley as a picture (inline SVG, so nothing is fetched); its words stand beside it, so the
/// picture itself is hidden from screen readers.
fn smiley_face(smiley: &str) -> Markup {
    let mouth = match smiley {
        "blij" => "M10 19 Q16 26 22 19",
        "verdrietig" => "M10 24 Q16 17 22 24",
        _ => "M10 21 L22 21",
    };
    html! {
        svg.face width="32" height="32" viewBox="0 0 32 32" aria-hidden="true" focusable="false" {
            circle cx="16" cy="16" r="14.5" fill="#ffd23f" stroke="#1d2433" stroke-width="1.5" {}
            circle cx="11" cy="12.5" r="1.8" fill="#1d2433" {}
            circle cx="21" cy="12.5" r="1.8" fill="#1d2433" {}
            path d=(mouth) fill="none" stroke="#1d2433" stroke-width="2" stroke-linecap="round" {}
        }
    }
}

fn passport_form(
    lang: Lang,
    csrf: &str,
    draft: &Draft,
    problem: Option<String>,
    held: Option<(String, bool)>,
) -> Markup {
    let set = question_set(&draft.question_set).ok();
    let status = if draft.saved_at > 0 {
        tf(lang, "saved_on", &[("when", &when(lang, draft.saved_at))])
    } else {
        t(lang, "not_saved_yet")
    };
    html! {
        @if let Some(p) = &problem { p.error role="alert" { (p) } }
        nav.student aria-label=(t(lang, "student_title")) {
            a.button.secondary href="/student/consents" { (t(lang, "to_consents")) }
            " "
            a.button.secondary href="/student/trail" { (t(lang, "to_trail")) }
            " "
            a.button.secondary href="/student/devices" { (t(lang, "to_devices")) }
        }
        @if let Some((version, declined)) = &held {
            p.hint role="status" {
                @if *declined { (tf(lang, "version_parent_declined", &[("version", version)])) }
                @else { (tf(lang, "version_waits_for_parent", &[("version", version)])) }
            }
        }
        p.hint #saved role="status" { (status) }
        @if let Some(set) = &set {
            section.track aria-labelledby="track" {
                h2 #track { (t(lang, "track_question")) }
                form method="post" action="/student/track" {
                    input type="hidden" name="csrf" value=(csrf);
                    @for (track, id) in CURRENT_SETS {
                        button.choice.chosen[set.id == *id] type="submit" name="set" value=(id)
                            aria-pressed=(set.id == *id) {
                            (t(lang, &format!("track_{track}")))
                        }
                        " "
                    }
                }
            }
            p.lead { (set.intro) }
            form method="post" action="/student/passport" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="set" value=(set.id);
                @for section in &set.sections {
                    section aria-labelledby=(format!("h-{}", section.id)) {
                        h2 #(format!("h-{}", section.id)) { (section.title) }
                        p { (section.intro) }
                        @for q in &section.questions {
                            @let id = format!("{}.{}", section.id, q.id);
                            @let given = draft.answers.get(&section.id).and_then(|a| a.get(&q.id)).cloned().unwrap_or_default();
                            div.question {
                                label for=(format!("a.{id}")) id=(format!("q.{id}")) { (q.text) }
                                button.speak.secondary type="button" data-say=(format!("q.{id}")) data-answer=(format!("a.{id}")) hidden {
                                    (t(lang, "read_aloud"))
                                }
                                textarea id=(format!("a.{id}")) name=(format!("a.{id}")) rows="4" maxlength="2000" { (given.answer) }
                                @if q.smiley {
                                    fieldset.smileys {
                                        legend { (t(lang, "smiley_question")) }
                                        @for (smiley, _) in overstap_proto::questions::SMILEYS {
                                            @let sid = format!("s.{id}.{smiley}");
                                            label.smiley for=(sid) {
                                                input type="radio" id=(sid) name=(format!("s.{id}")) value=(smiley) checked[given.smiley == *smiley];
                                                (smiley_face(smiley))
                                                " " (smiley_label(lang, smiley))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                button type="submit" { (t(lang, "save_button")) }
            }
            @if draft.saved_at > 0 {
                p { a.button.secondary href="/student/sign" { (t(lang, "to_sign")) } }
            }
        }
        form method="post" action="/logout" {
            input type="hidden" name="csrf" value=(csrf);
            button.secondary type="submit" { (t(lang, "sign_out")) }
        }
        script src="/assets/student.js" defer {}
    }
}

pub async fn passport_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, csrf)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    let draft = match web.core.draft(&pseudonym).await {
        Ok(Some(d)) => d,
        Ok(None) => match new_draft(&web, lang, &pseudonym, DEFAULT_SET).await {
            Ok(d) => d,
            Err(e) => return web.server_error(lang, e),
        },
        Err(e) => return web.server_error(lang, e),
    };
    let held = match held_version(&web, &pseudonym).await {
        Ok(h) => h,
        Err(e) => return web.server_error(lang, e),
    };
    respond(
        StatusCode::OK,
        page(
            lang,
            &web.school(),
            &t(lang, "student_title"),
            passport_form(lang, &csrf, &draft, None, held),
        ),
    )
}

/// A new draft in `set`, with what the school knows filled in where the set asks it: the
/// student's name and birth month (the student checks it, and shares it only by consent).
async fn new_draft(
    web: &Shared,
    lang: Lang,
    pseudonym: &str,
    set: &str,
) -> Result<Draft, NodeError> {
    let mut draft = Draft {
        question_set: set.into(),
        ..Default::default()
    };
    let asks = question_set(set)
        .map(|s| s.sections.iter().any(|x| x.id == PERSONALIA))
        .unwrap_or(false);
    if asks {
        let (_, card) = web.core.card(pseudonym).await?;
        let name = web
            .core
            .store
            .person(pseudonym)
            .await?
            .map(|p| p.name)
            .unwrap_or_default();
        let born = overstap_proto::passport::parse_birth_month(&card.birth_month)
            .ok()
            .and_then(|(y, m)| {
                Some(format!(
                    "{} {y}",
                    month_name(lang, time::Month::try_from(m).ok()?)
                ))
            })
            .unwrap_or_default();
        let section = draft.answers.entry(PERSONALIA.into()).or_default();
        for (q, a) in [("naam", name), ("geboortedatum", born)] {
            if !a.is_empty() {
                section.insert(
                    q.into(),
                    DraftAnswer {
                        answer: a,
                        smiley: String::new(),
                    },
                );
            }
        }
    }
    Ok(draft)
}

#[derive(Deserialize)]
pub struct Track {
    csrf: String,
    set: String,
}

/// The student chooses their track (to the mbo, or to work): the draft moves to that set and
/// keeps every answer the set still asks.
pub async fn choose_track(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Track>,
) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, csrf)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    if !csrf_ok(&csrf, &form.csrf) {
        return form_expired(lang, &web.school());
    }
    if !CURRENT_SETS.iter().any(|(_, id)| *id == form.set) {
        return error(
            lang,
            &web.school(),
            StatusCode::UNPROCESSABLE_ENTITY,
            &t(lang, "draft_not_saved"),
            Some(("/student/passport", &t(lang, "back_to_passport"))),
        );
    }
    let draft = match web.core.draft(&pseudonym).await {
        Ok(Some(d)) => d,
        Ok(None) => match new_draft(&web, lang, &pseudonym, &form.set).await {
            Ok(d) => d,
            Err(e) => return web.server_error(lang, e),
        },
        Err(e) => return web.server_error(lang, e),
    };
    let Ok(set) = question_set(&form.set) else {
        return web.server_error(lang, "a current question set does not load");
    };
    let mut moved = Draft {
        question_set: form.set.clone(),
        answers: draft.answers,
        saved_at: 0,
    };
    // Only what the new set asks stays (a smiley only where it has one).
    moved.answers.retain(|section_id, answers| {
        let Some(section) = set.sections.iter().find(|s| &s.id == section_id) else {
            return false;
        };
        answers.retain(|q, a| {
            let Some(def) = section.questions.iter().find(|d| &d.id == q) else {
                return false;
            };
            if !def.smiley {
                a.smiley.clear();
            }
            true
        });
        !answers.is_empty()
    });
    match web.core.save_draft(&pseudonym, &moved).await {
        Ok(_) => Redirect::to("/student/passport").into_response(),
        Err(e) => web.server_error(lang, e),
    }
}

/// The passport version waiting for a guardian, if any: its number, and whether they declined.
async fn held_version(web: &Shared, pseudonym: &str) -> Result<Option<(String, bool)>, NodeError> {
    Ok(web
        .core
        .held(pseudonym)
        .await?
        .into_iter()
        .filter(|h| h.kind == "passport")
        .find_map(|h| {
            let signed = Signed::decode(h.signed.as_slice()).ok()?;
            let m: overstap_proto::pb::Manifest =
                overstap_proto::sign::decode_body(Domain::Manifest, &signed).ok()?;
            Some((m.version.to_string(), h.declined_at.is_some()))
        }))
}

pub async fn save_passport(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let (pseudonym, csrf) = match student_form(&web, &headers, &fields).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let field = |name: &str| form_field(&fields, name);
    let mut draft = Draft {
        question_set: field("set").unwrap_or(DEFAULT_SET).to_string(),
        answers: BTreeMap::new(),
        saved_at: 0,
    };
    for (name, value) in &fields {
        let (kind, rest) = match name.split_once('.') {
            Some(("a", rest)) => ("a", rest),
            Some(("s", rest)) => ("s", rest),
            _ => continue,
        };
        let Some((section, question)) = rest.split_once('.') else {
            continue;
        };
        let a: &mut DraftAnswer = draft
            .answers
            .entry(section.to_string())
            .or_default()
            .entry(question.to_string())
            .or_default();
        if kind == "a" {
            a.answer = value.replace("\r\n", "\n");
        } else {
            a.smiley = value.clone();
        }
    }
    // Empty answers without a smiley are not kept.
    for answers in draft.answers.values_mut() {
        answers.retain(|_, a| !a.answer.trim().is_empty() || !a.smiley.is_empty());
    }
    draft.answers.retain(|_, a| !a.is_empty());
    match web.core.save_draft(&pseudonym, &draft).await {
        // Back to the page by a GET, so a reload shows it again rather than saving again.
        Ok(_) => Redirect::to("/student/passport").into_response(),
        Err(crate::core::NodeError::Invalid(reason)) => {
            tracing::info!(%reason, "a draft was refused");
            let problem = Some(t(lang, "draft_not_saved"));
            respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                page(
                    lang,
                    &web.school(),
                    &t(lang, "student_title"),
                    passport_form(lang, &csrf, &draft, problem, None),
                ),
            )
        }
        Err(e) => web.server_error(lang, e),
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

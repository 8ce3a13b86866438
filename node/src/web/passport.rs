//! The passport as a student fills it in: the track (mbo or work), the questions of its set
//! with smileys and read-aloud, what the school fills in from its records (`personalia`), the
//! draft kept at the home node as they go, and what waits for a parent.

use std::collections::BTreeMap;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use overstap_proto::questions::{CURRENT_SETS, PERSONALIA, question_set};
use overstap_proto::sign::Domain;
use serde::Deserialize;

use super::Shared;
use super::i18n::{Lang, month_name, t, tf, when};
use super::page::{error, form_expired, page, respond};
use super::staff::csrf_ok;
use super::student::{form_field, student, student_form};
use crate::core::NodeError;
use crate::core::people::{Draft, DraftAnswer};
use overstap_proto::pb::Signed;
use prost::Message;

/// The question set a new passport starts from (the student can switch to the werk track).
pub(super) const DEFAULT_SET: &str = "pvs-mbo-v2";

pub(super) fn smiley_label(lang: Lang, smiley: &str) -> String {
    t(lang, &format!("smiley_{smiley}"))
}

/// A smiley as a picture (inline SVG, so nothing is fetched); its words stand beside it, so the
/// picture itself is hidden from screen readers.
pub(super) fn smiley_face(smiley: &str) -> Markup {
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

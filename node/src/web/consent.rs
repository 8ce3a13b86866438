//! Consent in the browser: the student chooses who may read (from the signed directory), which
//! parts of their signed passport, what for and until when; the node prepares the exact grant;
//! the page decodes it, checks it against what the screen says, and the student signs it with
//! the key on their device.

use axum::Json;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::{Markup, html};
use overstap_proto::consent::PURPOSES;
use overstap_proto::pb::{ConsentGrant, Disclosure, Manifest, MemberKind, Section, Signed};
use overstap_proto::questions::{PERSONALIA, question_set};
use overstap_proto::sign::{Domain, decode_body};
use prost::Message;
use rand_core::RngCore;

use super::Shared;
use super::i18n::{Lang, day, dutch_midnight, t, tf};
use super::page::{error, page, respond};
use super::student::{answers, form_field, not_signed, signing, student, student_form};
use crate::core::NodeError;
use crate::core::keys::Kept;

/// The organisations a student can give consent to, from the signed directory: mbo colleges,
/// municipalities and other schools, each with its kind ("mbo", "municipality", "school"), by
/// kind and name.
fn recipients_by_kind(web: &Shared) -> Vec<(String, String, &'static str)> {
    let Ok(dir) = web.core.directory() else {
        return Vec::new();
    };
    let mut list: Vec<(String, String, &'static str)> = dir
        .directory
        .members
        .iter()
        .filter(|m| {
            m.org_id != web.core.org_id
                && matches!(
                    m.kind(),
                    MemberKind::Mbo | MemberKind::Municipality | MemberKind::School
                )
        })
        .map(|m| {
            let kind = match m.kind() {
                MemberKind::Mbo => "mbo",
                MemberKind::Municipality => "municipality",
                _ => "school",
            };
            (m.org_id.clone(), m.display_name.clone(), kind)
        })
        .collect();
    list.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
    list
}

/// The sections of the student's newest stored passport version, by id and title.
pub(super) async fn section_titles(
    web: &Shared,
    pseudonym: &str,
) -> Result<Vec<(String, String)>, NodeError> {
    let Some(v) = web.core.store.latest_version(pseudonym).await? else {
        return Ok(Vec::new());
    };
    let signed: Signed = crate::core::stored(&v.manifest, "manifest")?;
    let manifest: Manifest = decode_body(Domain::Manifest, &signed)?;
    let set = question_set(&v.question_set).ok();
    Ok(manifest
        .digests
        .iter()
        .map(|d| {
            let title = set
                .as_ref()
                .and_then(|s| s.sections.iter().find(|x| x.id == d.section_id))
                .map(|x| x.title.clone())
                .unwrap_or_else(|| d.section_id.clone());
            (d.section_id.clone(), title)
        })
        .collect())
}

fn purpose_label(lang: Lang, purpose: &str) -> String {
    t(lang, &format!("purpose_{purpose}"))
}

fn form(
    lang: Lang,
    csrf: &str,
    recipients: &[(String, String, &'static str)],
    sections: &[(String, String)],
    problem: Option<String>,
) -> Markup {
    html! {
        p.lead { (t(lang, "consent_intro")) }
        @if let Some(p) = &problem { p.error role="alert" { (p) } }
        form method="post" action="/student/consent" {
            input type="hidden" name="csrf" value=(csrf);
            fieldset.choices {
                legend { (t(lang, "consent_to_whom")) }
                @for (id, name, kind) in recipients {
                    label.choice for=(format!("to-{id}")) {
                        input type="radio" id=(format!("to-{id}")) name="to" value=(id);
                        span { (name) " " span.kind { "(" (t(lang, &format!("kind_{kind}"))) ")" } }
                    }
                }
            }
            fieldset.choices {
                legend { (t(lang, "consent_which_parts")) }
                @for (id, title) in sections {
                    label.choice for=(format!("part-{id}")) {
                        input type="checkbox" id=(format!("part-{id}")) name="section" value=(id);
                        " " (title)
                    }
                    @if id == PERSONALIA {
                        p.hint { (t(lang, "consent_personalia_hint")) }
                    }
                }
            }
            fieldset.choices {
                legend { (t(lang, "consent_what_for")) }
                @for purpose in PURPOSES {
                    label.choice for=(format!("for-{purpose}")) {
                        input type="radio" id=(format!("for-{purpose}")) name="purpose" value=(purpose);
                        " " (purpose_label(lang, purpose))
                    }
                }
            }
            label for="until" { (t(lang, "consent_until")) }
            input #until type="date" name="until" required;
            fieldset.choices {
                legend { (t(lang, "consent_how")) }
                label.choice for="how-fetch" {
                    input type="radio" id="how-fetch" name="how" value="fetch" checked;
                    " " (t(lang, "consent_how_fetch"))
                }
                label.choice for="how-send" {
                    input type="radio" id="how-send" name="how" value="send";
                    " " (t(lang, "consent_how_send"))
                }
            }
            button type="submit" { (t(lang, "consent_next")) }
        }
    }
}

pub async fn consent_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, csrf)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    let sections = match section_titles(&web, &pseudonym).await {
        Ok(s) => s,
        Err(e) => return web.server_error(lang, e),
    };
    if sections.is_empty() {
        return error(
            lang,
            &web.school(),
            StatusCode::CONFLICT,
            &t(lang, "consent_sign_first"),
            Some(("/student/passport", &t(lang, "back_to_passport"))),
        );
    }
    let body = form(lang, &csrf, &recipients_by_kind(&web), &sections, None);
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "consent_title"), body),
    )
}

/// The start of `date` (YYYY-MM-DD) in the Netherlands, as the grant's end: it ends when that
/// day begins, as the page says ("tot 1 augustus 2027").
fn day_start(date: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(date.trim(), &format).ok()?;
    Some(dutch_midnight(d))
}

pub async fn prepare(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let (pseudonym, csrf) = match student_form(&web, &headers, &fields).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let one = |name: &str| form_field(&fields, name);
    let now = web.core.now();
    let sections_known = match section_titles(&web, &pseudonym).await {
        Ok(s) => s,
        Err(e) => return web.server_error(lang, e),
    };
    let recipients = recipients_by_kind(&web);
    let chosen: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "section")
        .map(|(_, v)| v.clone())
        .collect();
    let to = one("to")
        .and_then(|id| recipients.iter().find(|(o, _, _)| o == id))
        .map(|(o, n, _)| (o.clone(), n.clone()));
    let purpose = one("purpose")
        .filter(|p| PURPOSES.contains(p))
        .map(str::to_string);
    let until = one("until").and_then(day_start).filter(|u| *u > now);
    let all_known = !chosen.is_empty()
        && chosen
            .iter()
            .all(|c| sections_known.iter().any(|(id, _)| id == c));
    let (Some((org, name)), Some(purpose), Some(until), true) = (to, purpose, until, all_known)
    else {
        let body = form(
            lang,
            &csrf,
            &recipients,
            &sections_known,
            Some(t(lang, "consent_missing")),
        );
        return respond(
            StatusCode::UNPROCESSABLE_ENTITY,
            page(lang, &web.school(), &t(lang, "consent_title"), body),
        );
    };
    let mut id = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut id);
    let grant = ConsentGrant {
        grant_id: format!("g-{}", hex::encode(id)),
        pseudonym: pseudonym.clone(),
        home_org: web.core.org_id.clone(),
        recipient_org: org.clone(),
        sections: chosen.clone(),
        purpose: purpose.clone(),
        not_before: now - 60,
        not_after: until,
        live: true,
        issued_at: now,
        // The student chose; without a choice (an older page), the college may fetch for an
        // intake, which is when it moves first.
        may_fetch: match one("how") {
            Some("send") => false,
            Some(_) => true,
            None => purpose == "intake",
        },
    };
    let bytes = grant.encode_to_vec();
    let titles: Vec<(String, String)> = sections_known
        .into_iter()
        .filter(|(id, _)| chosen.contains(id))
        .collect();
    // What the recipient will see: the chosen parts of the newest version, as they are.
    let shown: Vec<Section> = match web.core.store.latest_version(&pseudonym).await {
        Ok(Some(v)) => v
            .disclosures
            .iter()
            .filter_map(|d| Disclosure::decode(d.as_slice()).ok())
            .filter_map(|d| Section::decode(d.section.as_slice()).ok())
            .filter(|s| chosen.contains(&s.section_id))
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return web.server_error(lang, e),
    };
    let review = html! {
        details.preview-recipient {
            summary { (tf(lang, "consent_preview", &[("org", &name)])) }
            @for s in &shown {
                h3 { (s.title) }
                (answers(lang, s))
            }
        }
        (review(lang, &grant, None, &name, &titles, Signer {
            url: "/student/consent/sign",
            slot: "student",
            button: t(lang, "consent_sign_button"),
        }))
        p { a.button.secondary href="/student/passport" { (t(lang, "back_to_passport")) } }
        script src="/assets/student.js" defer {}
    };
    web.pending
        .put(&format!("grant:{pseudonym}"), bytes, Vec::new(), now);
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "consent_title"), review),
    )
}

/// Who signs in a sign box: where the signature goes, the browser's key slot ("student" or
/// "guardian"), and the button's words.
pub(super) struct Signer<'a> {
    pub url: &'a str,
    pub slot: &'a str,
    pub button: String,
}

/// A consent as the one who signs it reads it: to whom, what for, until when, which parts; and
/// the box whose script checks the grant's bytes against exactly that before it signs.
pub(super) fn review(
    lang: Lang,
    grant: &ConsentGrant,
    child: Option<&str>,
    org_name: &str,
    titles: &[(String, String)],
    signer: Signer,
) -> Markup {
    let Signer { url, slot, button } = signer;
    let bytes = grant.encode_to_vec();
    let b64 = base64::engine::general_purpose::STANDARD;
    html! {
        p.lead {
            (tf(lang, if child.is_some() { "consent_review_parent" } else { "consent_review" }, &[
                ("name", child.unwrap_or_default()),
                ("org", org_name),
                ("purpose", &purpose_label(lang, &grant.purpose)),
                ("until", &day(lang, grant.not_after)),
            ]))
        }
        ul.parts {
            @for c in &grant.sections {
                li data-section=(c) {
                    (titles.iter().find(|(id, _)| id == c).map(|(_, t)| t.as_str()).unwrap_or(c))
                }
            }
        }
        @if grant.live { p { (t(lang, "consent_live")) } }
        @if grant.may_fetch { p { (tf(lang, "consent_may_fetch", &[("org", org_name)])) } }
        div #consent-sign data-body=(b64.encode(&bytes)) data-org=(grant.recipient_org)
            data-purpose=(grant.purpose) data-until=(grant.not_after) data-live=(grant.live)
            data-fetch=(grant.may_fetch)
            data-url=(url) data-slot=(slot) {
            p #checking aria-live="polite" { (t(lang, "sign_checking")) }
            button #sign-with-key type="button" disabled { (button) }
            p.error #check-failed role="alert" hidden { (t(lang, "sign_check_failed")) }
            p.error #sign-failed role="alert" hidden { (t(lang, "sign_failed")) }
            p.error #no-key role="alert" hidden { (t(lang, "student_no_key")) }
        }
    }
}

/// Takes the student's signature over the grant they were shown and keeps the grant; the node
/// checks it against the student's card and the directory.
pub async fn sign(
    State(web): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let s = match signing(&web, &headers, &body, |p| format!("grant:{p}")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match web.core.student_signed_grant(&s.signed).await {
        Ok(Kept::Done(grant_id)) => {
            tracing::info!(grant = %grant_id, "a student gave consent in the browser");
            Json(serde_json::json!({ "message": t(s.lang, "consent_given") })).into_response()
        }
        Ok(Kept::Held(_)) => {
            Json(serde_json::json!({ "message": t(s.lang, "consent_waits_for_parent") }))
                .into_response()
        }
        Err(e) => not_signed(s.lang, e, "a grant"),
    }
}

//! The mentor's class: their students by name (names, classes and mentors live only at the home
//! node), where each stands in the handover (enrolled, filled in, signed, consented, sent), the
//! keys of each (another device, a new key after a loss, a parent), inviting a student, and
//! sending the class's passports at transition time (the school's `send`).

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};

use super::Shared;
use super::enrol::{INVITATION_HOURS, invitations_section, mentor, mentor_posting};
use super::i18n::{Lang, t, tf};
use super::page::{page, respond};
use super::staff::{Staff, WithCsrf, staff_nav};
use crate::core::NodeError;
use crate::store::InvitationRow;

/// Where one of a mentor's students stands: name, class, and each step of the handover.
pub(super) struct Pupil {
    pseudonym: String,
    /// Whether the signed-in staff member is this student's mentor (who checks keys in person).
    own: bool,
    name: String,
    class_name: String,
    filled: bool,
    signed: Option<u32>,
    consents: Vec<String>,
    sent: usize,
}

/// The staff member's students and where each stands, with their active grants to send: a
/// mentor's own class; for a decaan or an admin, every student of the school.
pub(super) async fn class_of(
    web: &Shared,
    staff: &Staff,
) -> Result<(Vec<Pupil>, Vec<String>), NodeError> {
    let mut pupils = Vec::new();
    let mut active = Vec::new();
    let people = if staff.role == "mentor" {
        web.core.store.people_of(&staff.username).await?
    } else {
        web.core.store.all_people().await?
    };
    for p in people {
        let grants = web.core.store.grants(Some(&p.pseudonym)).await?;
        active.extend(
            grants
                .iter()
                .filter(|g| g.state == "active")
                .map(|g| g.grant_id.clone()),
        );
        pupils.push(Pupil {
            filled: web.core.store.draft(&p.pseudonym).await?.is_some(),
            signed: web
                .core
                .store
                .latest_version(&p.pseudonym)
                .await?
                .map(|v| v.version),
            consents: grants
                .iter()
                .filter(|g| g.state == "active")
                .map(|g| g.recipient_org.clone())
                .collect(),
            // Sealed for sending counts: the node pushes it on by itself.
            sent: grants.iter().filter(|g| g.sent_version.is_some()).count(),
            pseudonym: p.pseudonym,
            own: p.mentor == staff.username,
            name: p.name,
            class_name: p.class_name,
        });
    }
    Ok((pupils, active))
}

pub async fn mentor_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor(&web, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let list = match web.core.store.invitations_of(&staff.username).await {
        Ok(l) => l,
        Err(e) => return web.server_error(lang, e),
    };
    match class_of(&web, &staff).await {
        Ok((pupils, _)) => respond(
            StatusCode::OK,
            mentor_view(&web, lang, &staff, &list, &pupils, None, None),
        ),
        Err(e) => web.server_error(lang, e),
    }
}

/// Sends the passports of the mentor's students under every consent in force (the school's
/// `send`): what went before is named, not sealed again.
pub async fn send_class(
    State(web): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<WithCsrf>,
) -> Response {
    let lang = Lang::of(&headers);
    let staff = match mentor_posting(&web, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let active = match class_of(&web, &staff).await {
        Ok((_, active)) => active,
        Err(e) => return web.server_error(lang, e),
    };
    let results = web.core.send_passports(&active, false).await;
    let pupils = match class_of(&web, &staff).await {
        Ok((pupils, _)) => pupils,
        Err(e) => return web.server_error(lang, e),
    };
    let already = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.already_sent))
        .count();
    let failed = results.iter().filter(|r| r.is_err()).count();
    let sent = results.len() - already - failed;
    tracing::info!(mentor = %staff.username, sent, already, failed, "a mentor sent the class");
    let detail = format!("{sent} sent, {already} already sent, {failed} failed");
    web.note(&staff, "push", "", &detail).await;
    let list = web
        .core
        .store
        .invitations_of(&staff.username)
        .await
        .unwrap_or_default();
    let message = tf(
        lang,
        "send_result",
        &[
            ("sent", &sent.to_string()),
            ("already", &already.to_string()),
            ("failed", &failed.to_string()),
        ],
    );
    respond(
        StatusCode::OK,
        mentor_view(&web, lang, &staff, &list, &pupils, Some(message), None),
    )
}

pub(super) fn mentor_view(
    web: &Shared,
    lang: Lang,
    staff: &Staff,
    list: &[InvitationRow],
    pupils: &[Pupil],
    news: Option<String>,
    problem: Option<String>,
) -> Markup {
    let now = web.core.now();
    let hours = INVITATION_HOURS.to_string();
    let step = |done: bool, label: &str| {
        html! {
            li.step.ok[done] {
                (t(lang, label)) ": "
                @if done { "✓" } @else { (t(lang, "step_not_yet")) }
            }
        }
    };
    let body = html! {
        section aria-labelledby="class" {
            h2 #class { (t(lang, if staff.role == "mentor" { "class_title" } else { "school_title" })) }
            @if let Some(n) = &news { p.done role="status" { (n) } }
            @if pupils.is_empty() {
                p { (t(lang, "no_students")) }
            } @else {
                ul.cards {
                    @for p in pupils {
                        li.pupil {
                            strong { (p.name) } " · " (p.class_name)
                            ul.steps {
                                (step(true, "step_enrolled"))
                                (step(p.filled, "step_filled"))
                                (step(p.signed.is_some(), "step_signed"))
                                (step(!p.consents.is_empty(), "step_consented"))
                                (step(p.sent > 0, "step_sent"))
                            }
                            @if p.own { details.keys {
                                summary { (t(lang, "keys_summary")) }
                                @for (role, label) in [("device", "device_title"), ("replace", "key_lost_button"), ("guardian", "parent_add_button")] {
                                    form method="post" action=(format!("/mentor/students/{}/keys", p.pseudonym)) {
                                        input type="hidden" name="csrf" value=(staff.csrf);
                                        input type="hidden" name="role" value=(role);
                                        button.secondary type="submit" { (t(lang, label)) }
                                    }
                                }
                            } }
                        }
                    }
                }
                p.hint { (t(lang, "send_class_help")) }
                form method="post" action="/mentor/send" {
                    input type="hidden" name="csrf" value=(staff.csrf);
                    button type="submit" { (t(lang, "send_class")) }
                }
            }
        }
        (invite_section(lang, staff, &hours, problem))
        (invitations_section(lang, list, now))
    };
    let body = html! { (staff_nav(lang, staff)) (body) };
    page(lang, &web.school(), &t(lang, "mentor_title"), body)
}

fn invite_section(lang: Lang, staff: &Staff, hours: &str, problem: Option<String>) -> Markup {
    html! {
        section aria-labelledby="invite" {
            h2 #invite { (t(lang, "invite_title")) }
            p { (tf(lang, "invite_help", &[("hours", hours)])) }
            @if let Some(p) = &problem { p.error role="alert" { (p) } }
            form method="post" action="/mentor/invite" {
                input type="hidden" name="csrf" value=(staff.csrf);
                label for="name" { (t(lang, "student_name")) }
                input #name type="text" name="name" maxlength="100" autocomplete="off" required;
                label for="class_name" { (t(lang, "class_name")) }
                input #class_name type="text" name="class_name" maxlength="20" autocomplete="off" required;
                label for="birth_month" { (t(lang, "birth_month")) }
                input #birth_month type="month" name="birth_month" placeholder="2009-04" required;
                button type="submit" { (t(lang, "invite_button")) }
            }
        }
    }
}

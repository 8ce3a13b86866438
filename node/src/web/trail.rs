//! The student's overview: their consents with what became of each (in force, withdrawn, ended,
//! erased with proof), withdrawing one with their key (the page decodes the revocation and
//! checks it names that consent before it signs), and the trail of where the passport went, in
//! words a student reads, each event marked when the region's hub confirmed it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use overstap_proto::pb::Revocation;
use prost::Message;

use super::Shared;
use super::i18n::{Lang, day, t, tf, when};
use super::page::{error, page, respond};
use super::student::{Who, not_signed, signing_as, student};

/// "My consents" for the student; "Noor's consents" for a guardian.
async fn consents_title(web: &Shared, lang: Lang, who: Who, pseudonym: &str) -> String {
    match who {
        Who::Student => t(lang, "consents_title"),
        Who::Guardian => tf(
            lang,
            "parent_consents_title",
            &[("name", &web.first_name(pseudonym).await)],
        ),
    }
}

/// A section's title in the student's question sets (its id when unknown).
fn section_title(id: &str) -> String {
    overstap_proto::questions::known_sets()
        .into_iter()
        .filter_map(|s| overstap_proto::questions::question_set(s).ok())
        .flat_map(|s| s.sections)
        .find(|s| s.id == id)
        .map(|s| s.title)
        .unwrap_or_else(|| id.to_string())
}

pub async fn consents_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    consents(&web, &headers, Who::Student).await
}

pub async fn guardian_consents_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    consents(&web, &headers, Who::Guardian).await
}

/// The student's consents, for the student or for a guardian: what became of each, what waits
/// for a guardian, and a way to withdraw each one in force.
async fn consents(web: &Shared, headers: &HeaderMap, who: Who) -> Response {
    let lang = Lang::of(headers);
    let base = format!("/{}", who.word());
    let Some((pseudonym, _)) = who.of(web, headers).await else {
        return Redirect::to(&base).into_response();
    };
    let grants = match web.core.store.grants(Some(&pseudonym)).await {
        Ok(g) => g,
        Err(e) => return web.server_error(lang, e),
    };
    let held = match web.core.held(&pseudonym).await {
        Ok(h) => h,
        Err(e) => return web.server_error(lang, e),
    };
    let waiting: Vec<(String, bool)> = held
        .iter()
        .filter(|h| h.kind == "consent")
        .filter_map(|h| {
            let signed = overstap_proto::pb::Signed::decode(h.signed.as_slice()).ok()?;
            let g: overstap_proto::pb::ConsentGrant =
                overstap_proto::sign::decode_body(overstap_proto::sign::Domain::Grant, &signed)
                    .ok()?;
            Some((web.org_name(&g.recipient_org), h.declined_at.is_some()))
        })
        .collect();
    let body = html! {
        @if !waiting.is_empty() {
            ul.cards {
                @for (org, declined) in &waiting {
                    li.grant.held {
                        h2 { (org) }
                        p.state { strong {
                            @if *declined { (t(lang, "grant_parent_declined")) }
                            @else { (t(lang, "grant_waits_for_parent")) }
                        } }
                    }
                }
            }
        }
        @if grants.is_empty() && waiting.is_empty() {
            p { (t(lang, "no_consents")) }
        }
        @if !grants.is_empty() {
            ul.cards {
                @for g in &grants {
                    li.grant {
                        h2 { (web.org_name(&g.recipient_org)) }
                        dl {
                            dt { (t(lang, "label_parts")) }
                            dd { (g.sections.iter().map(|s| section_title(s)).collect::<Vec<_>>().join(", ")) }
                            dt { (t(lang, "label_purpose")) }
                            dd { (t(lang, &format!("purpose_{}", g.purpose))) }
                            dt { (t(lang, "label_until")) }
                            dd { (day(lang, g.not_after)) }
                        }
                        p.state { strong { (t(lang, &format!("grant_{}", g.state))) } }
                        @if g.state == "active" {
                            @if who == Who::Student {
                                p { a.button href=(format!("/student/pickup/{}", g.grant_id)) {
                                    (t(lang, "pickup_link"))
                                } }
                            }
                            p { a.button.secondary href=(format!("{base}/consents/{}/withdraw", g.grant_id)) {
                                (t(lang, "withdraw_button"))
                            } }
                        }
                    }
                }
            }
        }
        p { a.button.secondary href=(who.home()) { (t(lang, "back")) } }
    };
    respond(
        StatusCode::OK,
        page(
            lang,
            &web.school(),
            &consents_title(web, lang, who, &pseudonym).await,
            body,
        ),
    )
}

pub async fn withdraw_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
) -> Response {
    withdrawing(&web, &headers, &grant_id, Who::Student).await
}

pub async fn guardian_withdraw_page(
    State(web): State<Shared>,
    headers: HeaderMap,
    Path(grant_id): Path<String>,
) -> Response {
    withdrawing(&web, &headers, &grant_id, Who::Guardian).await
}

/// The page that withdraws one consent in force, for the student or for a guardian alone.
async fn withdrawing(web: &Shared, headers: &HeaderMap, grant_id: &str, who: Who) -> Response {
    let lang = Lang::of(headers);
    let base = format!("/{}", who.word());
    let Some((pseudonym, _)) = who.of(web, headers).await else {
        return Redirect::to(&base).into_response();
    };
    let title = consents_title(web, lang, who, &pseudonym).await;
    let grant = match web.core.store.grant(grant_id).await {
        Ok(Some(g)) if g.pseudonym == pseudonym && g.state == "active" => g,
        Ok(_) => {
            return error(
                lang,
                &web.school(),
                StatusCode::NOT_FOUND,
                &t(lang, "error_not_found"),
                Some((&format!("{base}/consents"), &title)),
            );
        }
        Err(e) => return web.server_error(lang, e),
    };
    let revocation = Revocation {
        grant_id: grant.grant_id.clone(),
        pseudonym: pseudonym.clone(),
        revoked_at: web.core.now(),
    };
    let bytes = revocation.encode_to_vec();
    let org = web.org_name(&grant.recipient_org);
    let body = html! {
        @if who == Who::Guardian {
            p.lead { (tf(lang, "withdraw_explain_parent", &[("org", &org), ("name", &web.first_name(&pseudonym).await)])) }
        } @else {
            p.lead { (tf(lang, "withdraw_explain", &[("org", &org)])) }
        }
        div #revoke-sign data-body=(base64::engine::general_purpose::STANDARD.encode(&bytes))
            data-grant=(grant.grant_id) data-url=(format!("{base}/withdraw")) data-slot=(who.word()) {
            p #checking aria-live="polite" { (t(lang, "sign_checking")) }
            button #sign-with-key type="button" disabled { (t(lang, "withdraw_sign_button")) }
            p.error #check-failed role="alert" hidden { (t(lang, "sign_check_failed")) }
            p.error #sign-failed role="alert" hidden { (t(lang, "sign_failed")) }
            p.error #no-key role="alert" hidden { (t(lang, if who == Who::Guardian { "parent_no_key" } else { "student_no_key" })) }
        }
        p { a.button.secondary href=(format!("{base}/consents")) { (title) } }
        script src="/assets/student.js" defer {}
    };
    web.pending.put(
        &format!("revoke:{}:{pseudonym}", who.word()),
        bytes,
        Vec::new(),
        web.core.now(),
    );
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "withdraw_title"), body),
    )
}

/// Takes the student's signature over the revocation they were shown; the node sends it on and
/// the recipient erases and answers with a signed receipt.
pub async fn withdraw(
    State(web): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    withdrawn(&web, &headers, &body, Who::Student).await
}

pub async fn guardian_withdraw(
    State(web): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    withdrawn(&web, &headers, &body, Who::Guardian).await
}

/// A withdrawal signed by the student, or by a guardian alone (the protocol takes either).
async fn withdrawn(web: &Shared, headers: &HeaderMap, body: &[u8], who: Who) -> Response {
    let s = match signing_as(who, web, headers, body, |p| {
        format!("revoke:{}:{p}", who.word())
    })
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    match web.core.revoke(&s.signed).await {
        Ok((grant_id, _)) => {
            tracing::info!(grant = %grant_id, who = who.word(), "a consent was withdrawn in the browser");
            Json(serde_json::json!({ "message": t(s.lang, "withdrawn_done") })).into_response()
        }
        Err(e) => not_signed(s.lang, e, "a withdrawal"),
    }
}

pub async fn trail_page(State(web): State<Shared>, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let Some((pseudonym, _)) = student(&web, &headers).await else {
        return Redirect::to("/student").into_response();
    };
    let events = match web.core.trail(&pseudonym).await {
        Ok(e) => e,
        Err(e) => return web.server_error(lang, e),
    };
    let line = |event: &str, org: &str, detail: &str| {
        let org = web.org_name(org);
        let key = format!("trail_{}", event.replace(' ', "_"));
        match event {
            "status" => {
                let status = detail.split_once(": ").map(|(_, s)| s).unwrap_or(detail);
                tf(lang, "trail_status", &[("org", &org), ("status", status)])
            }
            "consent" | "sent" | "delivered" | "viewed" | "refused" | "revoked"
            | "revocation sent" | "expired" | "erased" | "replaced" | "new key" => {
                tf(lang, &key, &[("org", &org)])
            }
            "fetched" if detail.ends_with("with your pickup code") => {
                tf(lang, "trail_fetched_code", &[("org", &org)])
            }
            "fetched" => tf(lang, "trail_fetched", &[("org", &org)]),
            other => tf(lang, "trail_other", &[("org", &org), ("event", other)]),
        }
    };
    let body = html! {
        @if events.is_empty() {
            p { (t(lang, "trail_empty")) }
        } @else {
            ol.trail {
                @for (row, _, checked, _) in events.iter().rev() {
                    li {
                        span.when { (when(lang, row.at)) }
                        " " (line(&row.event, &row.org, &row.detail))
                        @if *checked {
                            " " span.checked { "✓ " (t(lang, "trail_checked")) }
                        }
                    }
                }
            }
        }
        p { a.button.secondary href="/student/passport" { (t(lang, "back_to_passport")) } }
    };
    respond(
        StatusCode::OK,
        page(lang, &web.school(), &t(lang, "trail_title"), body),
    )
}

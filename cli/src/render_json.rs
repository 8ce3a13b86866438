//! Output for programs: JSON shapes of the node's answers.

use overstap_proto::pb::{Handover, InboxItem, OutboxItem, ShowPassportResponse, TrailEvent};
use serde_json::{Value, json};

pub fn inbox_item(i: &InboxItem) -> Value {
    json!({
        "grant_id": i.grant_id, "pseudonym": i.pseudonym, "from_org": i.from_org, "purpose": i.purpose,
        "sections": i.sections, "received_at": i.received_at, "not_after": i.not_after, "status": i.status,
    })
}

pub fn outbox_item(i: &OutboxItem) -> Value {
    json!({
        "envelope_id": hex::encode(&i.envelope_id), "to_org": i.to_org, "kind": i.kind, "state": i.state,
        "detail": i.detail, "created_at": i.created_at, "grant_id": i.grant_id,
    })
}

pub fn passport(p: &ShowPassportResponse) -> Value {
    json!({
        "item": p.item.as_ref().map(inbox_item),
        "question_set": p.question_set,
        "version": p.version,
        "sections": p.sections.iter().map(|s| json!({
            "section_id": s.section_id, "title": s.title,
            "answers": s.answers.iter().map(|a| json!({
                "question_id": a.question_id, "question": a.question, "answer": a.answer, "smiley": a.smiley,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn handover(h: &Handover) -> Value {
    json!({
        "grant_id": h.grant_id, "pseudonym": h.pseudonym, "to_org": h.to_org, "purpose": h.purpose,
        "sections": h.sections, "consent": h.grant_state, "status": h.status, "status_at": h.status_at,
        "sent_at": h.sent_at, "not_after": h.not_after, "views": h.views,
    })
}

pub fn trail_event(e: &TrailEvent) -> Value {
    json!({
        "at": e.at, "event": e.event, "org": e.org, "grant_id": e.grant_id, "detail": e.detail,
        "hub_receipt": e.hub_receipt.is_some(), "receipt_verified": e.receipt_verified, "log_index": e.log_index, "proven": e.proven,
    })
}

//! Output for programs: JSON shapes of the node's answers.

use overstap_proto::pb::{InboxItem, OutboxItem, ShowPassportResponse};
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

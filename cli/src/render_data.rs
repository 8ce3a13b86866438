//! Output for programs: JSON and CSV shapes of the node's answers. A CSV has the same columns
//! and values as the JSON (times in Unix seconds, a list of sections joined with `;`), so a
//! spreadsheet and a program read the same thing.

use overstap_proto::pb::{
    FetchableGrant, Handover, InboxItem, OutboxItem, ShowPassportResponse, TrailEvent,
};
use overstap_proto::questions::QuestionSet;
use serde_json::{Value, json};

pub fn inbox_item(i: &InboxItem) -> Value {
    json!({
        "grant_id": i.grant_id, "pseudonym": i.pseudonym, "from_org": i.from_org, "purpose": i.purpose,
        "sections": i.sections, "received_at": i.received_at, "not_after": i.not_after, "status": i.status,
    })
}

pub fn fetchable(g: &FetchableGrant) -> Value {
    json!({
        "grant_id": g.grant_id, "pseudonym": g.pseudonym, "from_org": g.from_org, "purpose": g.purpose,
        "sections": g.sections, "not_after": g.not_after, "asked_at": g.asked_at, "refused": g.refused,
    })
}

pub const FETCHABLE_COLUMNS: &[&str] = &[
    "grant_id",
    "pseudonym",
    "from_org",
    "purpose",
    "sections",
    "not_after",
    "asked_at",
    "refused",
];

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

/// Question sets with their sections and questions, for `overstap passport questions`.
pub fn question_sets(sets: &[QuestionSet]) -> Value {
    sets.iter()
        .map(|q| {
            json!({
                "id": q.id, "title": q.title,
                "sections": q.sections.iter().map(|s| json!({
                    "id": s.id, "title": s.title,
                    "questions": s.questions.iter().map(|x| json!({
                        "id": x.id, "text": x.text, "smiley": x.smiley,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Columns of the CSV of [`inbox_item`]s.
pub const INBOX_COLUMNS: &[&str] = &[
    "grant_id",
    "pseudonym",
    "from_org",
    "purpose",
    "sections",
    "received_at",
    "not_after",
    "status",
];
/// Columns of the CSV of [`outbox_item`]s.
pub const OUTBOX_COLUMNS: &[&str] = &[
    "envelope_id",
    "to_org",
    "kind",
    "state",
    "detail",
    "created_at",
    "grant_id",
];
/// Columns of the CSV of [`handover`]s.
pub const HANDOVER_COLUMNS: &[&str] = &[
    "grant_id",
    "pseudonym",
    "to_org",
    "purpose",
    "sections",
    "consent",
    "status",
    "status_at",
    "sent_at",
    "not_after",
    "views",
];
/// Columns of the CSV of [`trail_event`]s.
pub const TRAIL_COLUMNS: &[&str] = &[
    "at",
    "event",
    "org",
    "grant_id",
    "detail",
    "hub_receipt",
    "receipt_verified",
    "log_index",
    "proven",
];

/// Columns of the CSV of a passport's [`answers`].
pub const ANSWER_COLUMNS: &[&str] = &[
    "section_id",
    "section",
    "question_id",
    "question",
    "answer",
    "smiley",
];

/// A passport as rows, one per answer, for the CSV of `overstap inbox --show`.
pub fn answers(p: &ShowPassportResponse) -> Vec<Value> {
    p.sections
        .iter()
        .flat_map(|s| {
            s.answers.iter().map(|a| {
                json!({
                    "section_id": s.section_id, "section": s.title, "question_id": a.question_id,
                    "question": a.question, "answer": a.answer, "smiley": a.smiley,
                })
            })
        })
        .collect()
}

/// A CSV field, quoted where it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `rows` (JSON objects) as CSV: a header line of `columns`, then one line per row.
pub fn csv(columns: &[&str], rows: &[Value]) -> String {
    let mut out = columns.join(",") + "\n";
    for row in rows {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| match row.get(*c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => csv_field(s),
                Some(Value::Array(items)) => csv_field(
                    &items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(";"),
                ),
                Some(other) => csv_field(&other.to_string()),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it_and_joins_lists() {
        let rows = vec![json!({
            "grant_id": "g-1", "pseudonym": "p", "from_org": "25LP", "purpose": "intake",
            "sections": ["wie-ben-ik", "wat-kan-ik"], "received_at": 1_700_000_000,
            "status": "intake gepland, \"snel\"",
        })];
        assert_eq!(
            csv(INBOX_COLUMNS, &rows),
            "grant_id,pseudonym,from_org,purpose,sections,received_at,not_after,status\n\
             g-1,p,25LP,intake,wie-ben-ik;wat-kan-ik,1700000000,,\"intake gepland, \"\"snel\"\"\"\n"
        );
    }
}

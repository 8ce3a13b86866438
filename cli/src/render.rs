//! Output for people: received passports with headings, questions, answers and smileys; lists.

use overstap_proto::pb::{InboxItem, OutboxItem, ShowPassportResponse};
use overstap_proto::questions::smiley_face;
use overstap_proto::{format_date, format_time};

/// A received passport as an intaker reads it.
pub fn passport(p: &ShowPassportResponse) -> String {
    let mut out = String::new();
    if let Some(i) = &p.item {
        out.push_str(&format!(
            "Paspoort voor Succes van leerling {}\n",
            i.pseudonym
        ));
        out.push_str(&format!(
            "Van {} · doel: {} · versie {} ({}) · in te zien tot {} · status: {}\n",
            i.from_org,
            i.purpose,
            p.version,
            p.question_set,
            format_date(i.not_after),
            i.status
        ));
    }
    for s in &p.sections {
        out.push_str(&format!(
            "\n{}\n{}\n",
            s.title,
            "=".repeat(s.title.chars().count())
        ));
        if s.answers.is_empty() {
            out.push_str("  (nog niet ingevuld)\n");
        }
        for a in &s.answers {
            out.push_str(&format!("  {}\n", a.question));
            let face = smiley_face(&a.smiley)
                .map(|f| format!("  {f}"))
                .unwrap_or_default();
            let answer = if a.answer.is_empty() {
                "(geen antwoord)"
            } else {
                &a.answer
            };
            out.push_str(&format!("    {answer}{face}\n"));
        }
    }
    out
}

pub fn inbox(items: &[InboxItem]) -> String {
    if items.is_empty() {
        return "No passports have arrived at this node.\n".into();
    }
    let mut out = format!(
        "{:<20} {:<20} {:<8} {:<12} {:<17} {}\n",
        "GRANT", "STUDENT", "FROM", "PURPOSE", "RECEIVED", "STATUS"
    );
    for i in items {
        out.push_str(&format!(
            "{:<20} {:<20} {:<8} {:<12} {:<17} {}\n",
            i.grant_id,
            i.pseudonym,
            i.from_org,
            i.purpose,
            format_time(i.received_at).trim_end_matches(" UTC"),
            i.status
        ));
        out.push_str(&format!("{:<20} sections: {}\n", "", i.sections.join(", ")));
    }
    out
}

pub fn outbox(items: &[OutboxItem]) -> String {
    if items.is_empty() {
        return "Nothing has been sent from this node.\n".into();
    }
    let mut out = format!(
        "{:<34} {:<8} {:<8} {:<9} {}\n",
        "ENVELOPE", "TO", "KIND", "STATE", "DETAIL"
    );
    for i in items {
        let kind = overstap_proto::pb::EnvelopeKind::try_from(i.kind)
            .map(|k| format!("{k:?}").to_lowercase())
            .unwrap_or_else(|_| i.kind.to_string());
        out.push_str(&format!(
            "{:<34} {:<8} {:<8} {:<9} {}\n",
            hex::encode(&i.envelope_id),
            i.to_org,
            kind,
            i.state,
            i.detail
        ));
    }
    out
}

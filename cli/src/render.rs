//! Output for people: received passports with headings, questions, answers and smileys; lists.

use overstap_proto::pb::{
    FetchableGrant, Handover, InboxItem, OutboxItem, ShowPassportResponse, TrailEvent,
};
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

pub fn fetchable(grants: &[FetchableGrant]) -> String {
    if grants.is_empty() {
        return "No student has let this node fetch a passport.\n".into();
    }
    let mut out = format!(
        "{:<20} {:<20} {:<8} {:<12} {:<11} {}\n",
        "GRANT", "STUDENT", "FROM", "PURPOSE", "UNTIL", "ASKED"
    );
    for g in grants {
        let asked = match (g.asked_at, g.refused.as_str()) {
            (0, _) => "not yet".to_string(),
            (at, "") => format_time(at),
            (_, refused) => format!("refused: {refused}"),
        };
        out.push_str(&format!(
            "{:<20} {:<20} {:<8} {:<12} {:<11} {asked}\n",
            g.grant_id,
            g.pseudonym,
            g.from_org,
            g.purpose,
            format_date(g.not_after),
        ));
        out.push_str(&format!("{:<20} sections: {}\n", "", g.sections.join(", ")));
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

/// How long ago, in words.
pub fn age(now: i64, then: i64) -> String {
    if then == 0 {
        return "-".into();
    }
    let s = (now - then).max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// The school's view of its students' handovers.
pub fn handovers(items: &[Handover], now: i64) -> String {
    if items.is_empty() {
        return "No handovers yet.\n".into();
    }
    let mut out = format!(
        "{:<20} {:<20} {:<7} {:<12} {:<8} {:<15} {:>9} {:>6}\n",
        "GRANT", "STUDENT", "TO", "PURPOSE", "CONSENT", "STATUS", "SENT", "VIEWS"
    );
    for h in items {
        let status = if h.status.is_empty() { "-" } else { &h.status };
        let sent = if h.sent_at == 0 {
            "not yet".to_string()
        } else {
            format!("{} ago", age(now, h.sent_at))
        };
        out.push_str(&format!(
            "{:<20} {:<20} {:<7} {:<12} {:<8} {:<15} {:>9} {:>6}\n",
            h.grant_id, h.pseudonym, h.to_org, h.purpose, h.grant_state, status, sent, h.views
        ));
    }
    out
}

/// The student's trail: where the passport went and who looked at it.
pub fn trail(pseudonym: &str, events: &[TrailEvent]) -> String {
    if events.is_empty() {
        return format!("Nothing has happened with the passport of {pseudonym} yet.\n");
    }
    let mut out = format!("Where the passport of {pseudonym} went, and who looked at it:\n");
    for e in events {
        let proof = if e.hub_receipt.is_some() {
            if e.receipt_verified && e.proven {
                format!(
                    "  [hub receipt, log entry {}, signature checked, proven in the log]",
                    e.log_index
                )
            } else if e.receipt_verified {
                format!(
                    "  [hub receipt, log entry {}, signature checked]",
                    e.log_index
                )
            } else {
                "  [hub receipt DOES NOT CHECK OUT]".to_string()
            }
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {}  {:<16} {}{}\n",
            format_time(e.at),
            e.event,
            e.detail,
            proof
        ));
    }
    out
}

/// Question sets for people: each section's id and title, each question's id and text, so an
/// answers file and a consent can name them.
pub fn question_sets(sets: &[overstap_proto::questions::QuestionSet]) -> String {
    let mut out = String::new();
    for q in sets {
        out.push_str(&format!("{} — {}\n", q.id, q.title));
        for s in &q.sections {
            out.push_str(&format!("\n  section {}: {}\n", s.id, s.title));
            for x in &s.questions {
                let smiley = if x.smiley { " (with a smiley)" } else { "" };
                out.push_str(&format!("    {:<22} {}{smiley}\n", x.id, x.text));
            }
        }
        out.push('\n');
    }
    out
}

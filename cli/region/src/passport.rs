//! Filling in, signing and consenting, on the student's side. Every check the home node and the
//! recipient will make is made here first, so the student hears about a problem right away and
//! in plain words.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use overstap_proto::consent::{PURPOSES, verify_grant};
use overstap_proto::passport::{build_version, under_16};
use overstap_proto::pb::{
    AddGrantRequest, Answer, ConsentGrant, GetStudentRequest, Manifest, Revocation,
    RevokeGrantRequest, Section, Signed, StorePassportRequest,
};
use overstap_proto::questions::{QuestionSet, SMILEYS, question_set};
use overstap_proto::sign::{Domain, decode_body, sign_message};
use overstap_proto::{UnixTime, format_date};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::client::{Api, explain};
use crate::wallet::Wallet;

/// A filled-in passport before it is signed (what `passport fill` writes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Draft {
    pub question_set: String,
    pub sections: Vec<DraftSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DraftSection {
    pub id: String,
    pub title: String,
    pub answers: Vec<DraftAnswer>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DraftAnswer {
    pub question_id: String,
    pub question: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smiley: Option<String>,
}

/// One answer in an answers file: plain text, or text with a smiley.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AnswerInput {
    Text(String),
    WithSmiley {
        answer: String,
        smiley: Option<String>,
    },
}

/// An answers file for scripts: section id → question id → answer.
pub type Answers = BTreeMap<String, BTreeMap<String, AnswerInput>>;

fn check_smiley(s: &str) -> anyhow::Result<()> {
    if SMILEYS.iter().any(|(c, _)| *c == s) {
        Ok(())
    } else {
        bail!(
            "smiley {s:?} is not one of {}",
            SMILEYS
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Builds a draft from an answers file, checking every id against the question set.
pub fn draft_from_answers(set_id: &str, answers: &Answers) -> anyhow::Result<Draft> {
    let set = question_set(set_id)?;
    for (sid, qs) in answers {
        let Some(sec) = set.sections.iter().find(|s| &s.id == sid) else {
            bail!(
                "section {sid:?} is not in {set_id}; its sections are {}",
                set.sections
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        for qid in qs.keys() {
            if !sec.questions.iter().any(|q| &q.id == qid) {
                bail!("question {qid:?} is not in section {sid} of {set_id}");
            }
        }
    }
    let mut sections = Vec::new();
    for sec in &set.sections {
        let mut out = Vec::new();
        for q in &sec.questions {
            let Some(input) = answers.get(&sec.id).and_then(|a| a.get(&q.id)) else {
                continue;
            };
            let (answer, smiley) = match input {
                AnswerInput::Text(t) => (t.clone(), None),
                AnswerInput::WithSmiley { answer, smiley } => (answer.clone(), smiley.clone()),
            };
            if let Some(s) = &smiley {
                if !q.smiley {
                    bail!("question {} of section {} has no smiley", q.id, sec.id);
                }
                check_smiley(s)?;
            }
            out.push(DraftAnswer {
                question_id: q.id.clone(),
                question: q.text.clone(),
                answer,
                smiley,
            });
        }
        sections.push(DraftSection {
            id: sec.id.clone(),
            title: sec.title.clone(),
            answers: out,
        });
    }
    Ok(Draft {
        question_set: set.id,
        sections,
    })
}

/// Asks every question of the set on `output` and reads the answers from `input`.
pub fn fill_interactive(
    set: &QuestionSet,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> anyhow::Result<Draft> {
    writeln!(output, "{}\n\n{}\n", set.title, set.intro)?;
    writeln!(
        output,
        "Typ je antwoord en druk op Enter. Wil je een vraag overslaan? Druk dan alleen op Enter.\n"
    )?;
    let mut read_line = |output: &mut dyn Write, prompt: &str| -> anyhow::Result<String> {
        write!(output, "{prompt}")?;
        output.flush()?;
        let mut line = String::new();
        input.read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    let mut sections = Vec::new();
    for (i, sec) in set.sections.iter().enumerate() {
        writeln!(
            output,
            "== Deel {} van {}: {} ==\n{}\n",
            i + 1,
            set.sections.len(),
            sec.title,
            sec.intro
        )?;
        let mut answers = Vec::new();
        for q in &sec.questions {
            let answer = read_line(output, &format!("{}\n> ", q.text))?;
            let mut smiley = None;
            if q.smiley {
                loop {
                    let pick = read_line(
                        output,
                        "Hoe voel je je hierover? 1 = :-)  2 = :-|  3 = :-(  (Enter = geen) > ",
                    )?;
                    smiley = match pick.as_str() {
                        "" => None,
                        "1" => Some("blij".to_string()),
                        "2" => Some("neutraal".to_string()),
                        "3" => Some("verdrietig".to_string()),
                        _ => {
                            writeln!(output, "Kies 1, 2 of 3, of druk op Enter.")?;
                            continue;
                        }
                    };
                    break;
                }
            }
            if !answer.is_empty() || smiley.is_some() {
                answers.push(DraftAnswer {
                    question_id: q.id.clone(),
                    question: q.text.clone(),
                    answer,
                    smiley,
                });
            }
            writeln!(output)?;
        }
        sections.push(DraftSection {
            id: sec.id.clone(),
            title: sec.title.clone(),
            answers,
        });
    }
    writeln!(
        output,
        "Klaar! Lees je antwoorden nog eens na voordat je tekent."
    )?;
    Ok(Draft {
        question_set: set.id.clone(),
        sections,
    })
}

/// The draft as the protocol's sections, in the order of the question set.
pub fn to_sections(d: &Draft) -> Vec<Section> {
    d.sections
        .iter()
        .map(|s| Section {
            section_id: s.id.clone(),
            title: s.title.clone(),
            answers: s
                .answers
                .iter()
                .map(|a| Answer {
                    question_id: a.question_id.clone(),
                    question: a.question.clone(),
                    answer: a.answer.clone(),
                    smiley: a.smiley.clone().unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

/// What a guardian's signature is needed for, said plainly.
fn guardian_needed(w: &Wallet, what: &str, at: UnixTime) -> anyhow::Error {
    anyhow::anyhow!(
        "the student (born {}) is under 16 on {}, so a guardian must co-sign {what}: add --guardian-key FILE",
        w.birth_month,
        format_date(at)
    )
}

/// Signs the draft as the next passport version and stores it at the home node.
pub async fn sign_passport(
    api: &mut Api,
    wallet: &Wallet,
    draft: &Draft,
    guardian: Option<&SigningKey>,
    now: UnixTime,
) -> anyhow::Result<u32> {
    if under_16(&wallet.birth_month, now)? && guardian.is_none() {
        return Err(guardian_needed(wallet, "the passport", now));
    }
    let current = api
        .get_student(GetStudentRequest {
            pseudonym: wallet.pseudonym.clone(),
        })
        .await
        .map_err(explain)?
        .into_inner();
    let previous = match current.manifest {
        Some(m) => decode_body::<Manifest>(Domain::Manifest, &m)?.version,
        None => 0,
    };
    let version = build_version(
        &wallet.pseudonym,
        previous + 1,
        &draft.question_set,
        now,
        &to_sections(draft),
    )?;
    let mut keys = vec![&wallet.key];
    keys.extend(guardian);
    let manifest = sign_message(Domain::Manifest, &version.manifest, &keys);
    let stored = api
        .store_passport(StorePassportRequest {
            manifest: Some(manifest),
            sections: version.disclosures,
        })
        .await
        .map_err(explain)?
        .into_inner();
    Ok(stored.version)
}

/// What the student consents to.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub to: String,
    pub sections: Vec<String>,
    pub purpose: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub live: bool,
    /// The recipient may fetch the passport itself while the grant lasts.
    pub may_fetch: bool,
}

/// Makes and signs a grant, refusing anything the recipient would refuse.
pub fn make_grant(
    wallet: &Wallet,
    question_set_id: &str,
    req: &GrantRequest,
    guardian: Option<&SigningKey>,
    now: UnixTime,
) -> anyhow::Result<Signed> {
    if !PURPOSES.contains(&req.purpose.as_str()) {
        bail!(
            "purpose {:?} is not one of {}",
            req.purpose,
            PURPOSES.join(", ")
        );
    }
    if req.not_after <= now {
        bail!(
            "the end date {} is in the past: a grant must end in the future",
            format_date(req.not_after)
        );
    }
    let set = question_set(question_set_id)?;
    if req.sections.is_empty() {
        bail!(
            "name at least one section; {question_set_id} has {}",
            set.sections
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for s in &req.sections {
        if !set.sections.iter().any(|d| &d.id == s) {
            bail!(
                "section {s:?} is not in {question_set_id}; choose from {}",
                set.sections
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if under_16(&wallet.birth_month, now)? && guardian.is_none() {
        return Err(guardian_needed(wallet, "this consent", now));
    }
    let mut id = [0u8; 8];
    rand_core::OsRng.fill_bytes(&mut id);
    let grant = ConsentGrant {
        grant_id: format!("g-{}", hex::encode(id)),
        pseudonym: wallet.pseudonym.clone(),
        home_org: wallet.home_org.clone(),
        recipient_org: req.to.clone(),
        sections: req.sections.clone(),
        purpose: req.purpose.clone(),
        not_before: req.not_before,
        not_after: req.not_after,
        live: req.live,
        issued_at: now,
        may_fetch: req.may_fetch,
    };
    let mut keys = vec![&wallet.key];
    keys.extend(guardian);
    let signed = sign_message(Domain::Grant, &grant, &keys);
    verify_grant(&signed, &wallet.card()?, now)
        .context("the grant does not verify against the student card")?;
    Ok(signed)
}

/// Makes a pickup code for one of the student's grants, valid for `minutes`, signed by the
/// student: the code to show (the school's id first, "25LP-K7QM-3XPA") and the signed code
/// for the home node.
pub fn make_pickup_code(
    wallet: &Wallet,
    grant_id: &str,
    minutes: i64,
    now: UnixTime,
) -> anyhow::Result<(String, Signed)> {
    use overstap_proto::consent::{PICKUP_CODE_MAX_SECS, new_pickup_code, pickup_code_digest};
    if minutes < 1 || minutes * 60 > PICKUP_CODE_MAX_SECS {
        bail!(
            "a pickup code lives 1 to {} minutes",
            PICKUP_CODE_MAX_SECS / 60
        );
    }
    let code = new_pickup_code();
    let body = overstap_proto::pb::PickupCode {
        grant_id: grant_id.to_string(),
        pseudonym: wallet.pseudonym.clone(),
        code_sha256: pickup_code_digest(&code),
        issued_at: now,
        expires_at: now + minutes * 60,
    };
    let signed = sign_message(Domain::PickupCode, &body, &[&wallet.key]);
    Ok((format!("{}-{code}", wallet.home_org), signed))
}

/// Signs the withdrawal of a grant (with the guardian under 16). Revoking is as easy as
/// granting: one signature, one command.
pub fn make_revocation(
    wallet: &Wallet,
    grant_id: &str,
    guardian: Option<&SigningKey>,
    now: UnixTime,
) -> anyhow::Result<Signed> {
    if under_16(&wallet.birth_month, now)? && guardian.is_none() {
        return Err(guardian_needed(wallet, "the withdrawal", now));
    }
    let rev = Revocation {
        grant_id: grant_id.to_string(),
        pseudonym: wallet.pseudonym.clone(),
        revoked_at: now,
    };
    let mut keys = vec![&wallet.key];
    keys.extend(guardian);
    Ok(sign_message(Domain::Revocation, &rev, &keys))
}

/// Hands a signed revocation to the home node, which withdraws what has not left and tells the
/// recipient to erase.
pub async fn revoke(api: &mut Api, signed: Signed) -> anyhow::Result<String> {
    Ok(api
        .revoke_grant(RevokeGrantRequest {
            revocation: Some(signed),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .grant_id)
}

/// Hands a signed grant to the home node.
pub async fn upload_grant(api: &mut Api, signed: Signed) -> anyhow::Result<String> {
    Ok(api
        .add_grant(AddGrantRequest {
            grant: Some(signed),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .grant_id)
}

/// Parses `YYYY-MM-DD` as midnight UTC.
pub fn parse_date(s: &str) -> anyhow::Result<UnixTime> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &format)
        .with_context(|| format!("{s:?} is not a date of the form YYYY-MM-DD"))?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_file_is_checked_against_the_set() {
        let mut a: Answers = BTreeMap::new();
        a.entry("wie-ben-ik".into())
            .or_default()
            .insert("over-mij".into(), AnswerInput::Text("Ik ben Sam".into()));
        let d = draft_from_answers("pvs-mbo-v1", &a).unwrap();
        assert_eq!(d.sections.len(), 5);
        assert_eq!(d.sections[0].answers[0].answer, "Ik ben Sam");
        a.entry("bestaat-niet".into()).or_default();
        let e = draft_from_answers("pvs-mbo-v1", &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in pvs-mbo-v1"), "{e}");
    }

    #[test]
    fn interactive_fill_reads_answers_and_smileys() {
        let set = question_set("pvs-mbo-v1").unwrap();
        let mut script = String::new();
        for sec in &set.sections {
            for q in &sec.questions {
                script.push_str(&format!("antwoord op {}\n", q.id));
                if q.smiley {
                    script.push_str("7\n1\n");
                }
            }
        }
        let mut out = Vec::new();
        let d = fill_interactive(&set, &mut script.as_bytes(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Kies 1, 2 of 3"));
        let first = &d.sections[0].answers;
        assert_eq!(first[0].answer, "antwoord op over-mij");
        assert_eq!(first[1].smiley.as_deref(), Some("blij"));
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_date("1970-01-02").unwrap(), 86_400);
        assert!(
            parse_date("02-01-1970")
                .unwrap_err()
                .to_string()
                .contains("YYYY-MM-DD")
        );
    }
}

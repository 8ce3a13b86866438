//! Question sets are data: versioned TOML files under `proto/questionsets/`, compiled in.
//!
//! A passport section carries the question texts as the student saw them, so a recipient can
//! show a passport without knowing the set; the set is only needed to fill one in.

use serde::Deserialize;

use crate::ProtocolError;

#[derive(Debug, Clone, Deserialize)]
pub struct QuestionSet {
    pub id: String,
    pub title: String,
    pub intro: String,
    pub sections: Vec<SectionDef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SectionDef {
    pub id: String,
    pub title: String,
    pub intro: String,
    pub questions: Vec<QuestionDef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QuestionDef {
    pub id: String,
    pub text: String,
    /// Whether the student may add a smiley to the answer.
    #[serde(default)]
    pub smiley: bool,
}

const SETS: &[(&str, &str)] = &[
    (
        "pvs-mbo-v1",
        include_str!("../questionsets/pvs-mbo-v1.toml"),
    ),
    (
        "pvs-werk-v1",
        include_str!("../questionsets/pvs-werk-v1.toml"),
    ),
    (
        "pvs-mbo-v2",
        include_str!("../questionsets/pvs-mbo-v2.toml"),
    ),
    (
        "pvs-werk-v2",
        include_str!("../questionsets/pvs-werk-v2.toml"),
    ),
];

/// The sets a new passport starts from, one per track: to the mbo, or to work.
pub const CURRENT_SETS: &[(&str, &str)] = &[("mbo", "pvs-mbo-v2"), ("werk", "pvs-werk-v2")];

/// The section with the student's name, date of birth and how to reach them (v2 on), filled in
/// from the home school's records and shared only by consent.
pub const PERSONALIA: &str = "personalia";

/// The ids of every question set this build knows.
pub fn known_sets() -> Vec<&'static str> {
    SETS.iter().map(|(id, _)| *id).collect()
}

/// Loads a question set by id.
pub fn question_set(id: &str) -> Result<QuestionSet, ProtocolError> {
    let (_, text) =
        SETS.iter()
            .find(|(k, _)| *k == id)
            .ok_or_else(|| ProtocolError::Malformed {
                what: "question set",
                detail: format!(
                    "unknown question set {id:?}; known: {}",
                    known_sets().join(", ")
                ),
            })?;
    toml::from_str(text).map_err(|e| ProtocolError::malformed("question set", e))
}

/// The smileys a student can pick, as stored and as shown.
pub const SMILEYS: &[(&str, &str)] = &[("blij", ":-)"), ("neutraal", ":-|"), ("verdrietig", ":-(")];

/// How a stored smiley is shown to a person.
pub fn smiley_face(code: &str) -> Option<&'static str> {
    SMILEYS.iter().find(|(c, _)| *c == code).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_parses_and_has_the_design_sections() {
        for id in known_sets() {
            let set = question_set(id).unwrap();
            assert_eq!(set.id, id);
            let ids: Vec<_> = set.sections.iter().map(|s| s.id.as_str()).collect();
            for needed in [
                "wie-ben-ik",
                "wat-kan-ik",
                "wat-wil-ik",
                "wat-heb-ik-nodig",
                "ondersteuning-vo",
            ] {
                assert!(ids.contains(&needed), "{id} lacks {needed}");
            }
            for s in &set.sections {
                assert!(!s.questions.is_empty(), "{id}/{} has no questions", s.id);
            }
        }
        for (_, id) in CURRENT_SETS {
            let set = question_set(id).unwrap();
            assert_eq!(
                set.sections[0].id, PERSONALIA,
                "{id} starts with personalia"
            );
            let v1 = question_set(&id.replace("-v2", "-v1")).unwrap();
            assert_eq!(
                set.sections[1..].iter().map(|s| &s.id).collect::<Vec<_>>(),
                v1.sections.iter().map(|s| &s.id).collect::<Vec<_>>(),
                "{id} is v1 with personalia before it"
            );
        }
        let werk = question_set("pvs-werk-v1").unwrap();
        assert!(werk.sections.iter().any(|s| s.id == "werkervaring"));
        assert!(werk.sections.iter().any(|s| s.id == "praktijkverklaringen"));
    }

    #[test]
    fn unknown_set_names_the_known_ones() {
        let err = question_set("pvs-x").unwrap_err().to_string();
        assert!(err.contains("pvs-mbo-v1"), "{err}");
    }
}

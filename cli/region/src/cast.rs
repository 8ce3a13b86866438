//! The demo region's cast, shared by the demo, the tests and the benches: its members, two
//! students' answers, and registering a student with a key made on the spot.

use anyhow::Context;
use overstap_proto::pb::MemberKind;
use overstap_proto::sign::generate_signing_key;

use crate::client::{Api, explain};
use crate::passport::Answers;
use crate::region::Org;
use crate::wallet::Wallet;

pub const SCHOOL: &str = "25LP";
pub const MBO: &str = "30RT";
pub const GEMEENTE: &str = "GM0193";
pub const OTHER_MBO: &str = "27XK";

/// The regional coordinator `overstap demo --serve` admits, to open the dashboard with.
pub const COORDINATOR: &str = "RMC01";

/// The demo region's members.
pub fn demo_orgs() -> Vec<Org> {
    vec![
        Org::new(SCHOOL, MemberKind::School, "Vmbo De Brug"),
        Org::new(MBO, MemberKind::Mbo, "Techniek College Zwolle"),
        Org::new(
            GEMEENTE,
            MemberKind::Municipality,
            "Gemeente Zwolle, doorstroompunt",
        ),
        Org::new(OTHER_MBO, MemberKind::Mbo, "Zorgcollege Oost"),
    ]
}

/// Sam, 17: answers for pvs-mbo-v1.
pub const SAM_ANSWERS: &str = r#"{
  "wie-ben-ik": {
    "over-mij": "Ik ben Sam. Ik ben rustig maar als ik iemand ken praat ik veel.",
    "vrije-tijd": {"answer": "Ik sleutel aan brommers met mijn oom.", "smiley": "blij"},
    "trots": "Dat ik mijn diploma heb gehaald terwijl het thuis lastig was."
  },
  "wat-kan-ik": {
    "goed-in": {"answer": "Dingen uit elkaar halen en weer in elkaar zetten.", "smiley": "blij"},
    "moeilijk": "Lange teksten lezen en plannen.",
    "leren": "Door het te doen en iemand te zien die het voordoet."
  },
  "wat-wil-ik": {
    "opleiding": "Monteur mobiliteit, omdat ik graag met mijn handen werk.",
    "droom": {"answer": "Een eigen werkplaats.", "smiley": "blij"}
  },
  "wat-heb-ik-nodig": {
    "helpt-mij": "Een vaste plek in de klas, dicht bij de deur, en opdrachten in stapjes.",
    "lastig": "Als het druk is word ik stil. Vraag dan even of het goed gaat.",
    "gesprekken": {"answer": "Met een vaste coach, eens per twee weken.", "smiley": "neutraal"}
  },
  "ondersteuning-vo": {
    "werkte": {"answer": "Huiswerkbegeleiding na school en een mentor die belde als ik er niet was.", "smiley": "blij"},
    "werkte-niet": "Alles in een keer op papier krijgen.",
    "afspraken": "Toetsen in een rustig lokaal met wat extra tijd."
  }
}"#;

/// Noor, 15: answers for pvs-mbo-v1.
pub const NOOR_ANSWERS: &str = r#"{
  "wie-ben-ik": {
    "over-mij": "Ik ben Noor, ik teken graag en ik help thuis met mijn broertjes.",
    "vrije-tijd": {"answer": "Tekenen en dansen.", "smiley": "blij"}
  },
  "wat-kan-ik": {
    "goed-in": {"answer": "Zorgen voor kleine kinderen.", "smiley": "blij"},
    "moeilijk": "Rekenen, vooral breuken."
  },
  "wat-wil-ik": {
    "opleiding": "Pedagogisch medewerker kinderopvang.",
    "droom": {"answer": "Juf worden op een basisschool.", "smiley": "blij"}
  },
  "wat-heb-ik-nodig": {
    "helpt-mij": "Minder prikkels: een koptelefoon mag op.",
    "lastig": "Als ik te laat ben door de bus. Niet boos worden, ik doe mijn best.",
    "gesprekken": {"answer": "Met mijn mentor, elke week even.", "smiley": "neutraal"}
  },
  "ondersteuning-vo": {
    "werkte": "Een time-out kaart.",
    "afspraken": "Dat ik mijn koptelefoon mag gebruiken."
  }
}"#;

/// The birth month of someone who turned `years` a few months ago.
pub fn birth_month(years: i32) -> String {
    let today = time::OffsetDateTime::now_utc().date();
    let month = today.month().previous().previous().previous();
    let year = if u8::from(month) > u8::from(today.month()) {
        today.year() - 1
    } else {
        today.year()
    };
    format!("{:04}-{:02}", year - years, u8::from(month))
}

/// Every answer in an answers file, for the leak checks.
pub fn answer_texts(json: &str) -> Vec<String> {
    let answers: Answers = serde_json::from_str(json).unwrap_or_default();
    answers
        .values()
        .flat_map(|qs| qs.values())
        .map(|a| match a {
            crate::passport::AnswerInput::Text(t) => t.clone(),
            crate::passport::AnswerInput::WithSmiley { answer, .. } => answer.clone(),
        })
        .collect()
}

/// Registers a student of `birth_month` at the school `api` talks to, with a key made here;
/// returns the student's wallet.
pub async fn register(
    api: &mut Api,
    birth_month: &str,
    guardians: &[Vec<u8>],
) -> anyhow::Result<Wallet> {
    let key = generate_signing_key();
    let card = api
        .register_student(overstap_proto::pb::RegisterStudentRequest {
            student_key: key.verifying_key().to_bytes().to_vec(),
            birth_month: birth_month.to_string(),
            guardian_keys: guardians.to_vec(),
            staff_user: "mentor.devries".into(),
        })
        .await
        .map_err(explain)?
        .into_inner()
        .card
        .context("the node issued no card")?;
    Wallet::new(key, card)
}

//! A property-based state-machine test of the consent lifecycle. Random sequences of grant,
//! revoke, send, new passport version, clock jumps and node restarts run against a whole region
//! (on an injected clock) and against a small reference model. After every step, once the
//! region has settled:
//! - a recipient holds a section if and only if a valid, unrevoked, unexpired grant covers it
//!   (and, for a live grant, in the newest version);
//! - every erasure has its signed deletion receipt at the home node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use overstap_proto::pb::SendPassportRequest;
use overstap_region::passport::{
    AnswerInput, Answers, GrantRequest, draft_from_answers, make_grant, make_revocation, revoke,
    sign_passport, upload_grant,
};
use overstap_region::region::Region;
use overstap_tests::cast::{GEMEENTE, MBO, OTHER_MBO, SCHOOL, birth_month};
use overstap_tests::*;
use proptest::prelude::*;
use sqlx::Row;

const RECIPIENTS: [&str; 3] = [MBO, GEMEENTE, OTHER_MBO];
const SECTIONS: [&str; 5] = [
    "wie-ben-ik",
    "wat-kan-ik",
    "wat-wil-ik",
    "wat-heb-ik-nodig",
    "ondersteuning-vo",
];

#[derive(Debug, Clone)]
enum Op {
    Grant {
        to: usize,
        sections: u8,
        hours: i64,
        live: bool,
    },
    Revoke {
        which: usize,
    },
    Send {
        which: usize,
    },
    NewVersion,
    Advance {
        hours: i64,
    },
    Restart {
        node: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..32u8, 1..24i64, any::<bool>()).prop_map(|(to, sections, hours, live)| Op::Grant { to, sections, hours, live }),
        1 => (0..8usize).prop_map(|which| Op::Revoke { which }),
        3 => (0..8usize).prop_map(|which| Op::Send { which }),
        1 => Just(Op::NewVersion),
        2 => (1..48i64).prop_map(|hours| Op::Advance { hours }),
        1 => (0..3usize).prop_map(|node| Op::Restart { node }),
    ]
}

/// The reference model: what each grant is, and what its recipient should hold.
#[derive(Debug, Clone)]
struct ModelGrant {
    id: String,
    to: &'static str,
    sections: Vec<String>,
    not_after: i64,
    live: bool,
    version_at_grant: u32,
    revoked: bool,
    /// The version the recipient should hold, once sent under a valid grant.
    held_version: Option<u32>,
    /// Ever delivered: an end of it must bring a deletion receipt.
    delivered: bool,
}

impl ModelGrant {
    fn valid(&self, now: i64) -> bool {
        !self.revoked && now < self.not_after
    }
}

struct Model {
    grants: Vec<ModelGrant>,
    version: u32,
}

fn sections_of(mask: u8) -> Vec<String> {
    SECTIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn draft(version: u32) -> overstap_region::passport::Draft {
    let mut answers: Answers = serde_json::from_str(cast::SAM_ANSWERS).unwrap();
    answers.get_mut("wat-wil-ik").unwrap().insert(
        "droom".into(),
        AnswerInput::Text(format!("Mijn plan, versie {version}")),
    );
    draft_from_answers("pvs-mbo-v1", &answers).unwrap()
}

/// What a recipient holds: grant id → (sections, version).
async fn holdings(region: &Region, org: &str) -> BTreeMap<String, (Vec<String>, u32)> {
    let pool = overstap_tests::node_pool(region, org).await;
    let rows = sqlx::query(
        "SELECT r.grant_id, r.version, s.section_id FROM received r JOIN received_sections s USING (grant_id) ORDER BY s.section_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut out: BTreeMap<String, (Vec<String>, u32)> = BTreeMap::new();
    for r in rows {
        let e = out
            .entry(r.get(0))
            .or_insert((Vec::new(), r.get::<i64, _>(1) as u32));
        e.0.push(r.get(2));
    }
    out
}

/// Checks the invariants once; returns what is wrong, if anything.
async fn check(region: &Region, model: &Model, now: i64) -> Result<(), String> {
    for org in RECIPIENTS {
        let actual = holdings(region, org).await;
        let mut expected: BTreeMap<String, (Vec<String>, u32)> = BTreeMap::new();
        for g in model.grants.iter().filter(|g| g.to == org && g.valid(now)) {
            if let Some(v) = g.held_version {
                let mut s = g.sections.clone();
                s.sort();
                expected.insert(g.id.clone(), (s, v));
            }
        }
        if actual != expected {
            return Err(format!(
                "{org} holds {actual:?}, the model says {expected:?}"
            ));
        }
    }
    for g in model.grants.iter().filter(|g| g.delivered && !g.valid(now)) {
        match handover(region, &g.id).await {
            Some(h) if h.grant_state == "erased" => {}
            other => {
                return Err(format!(
                    "grant {} ended but its deletion receipt is not at the school: {other:?}",
                    g.id
                ));
            }
        }
    }
    let pending = hub_count(region, "mailbox").await;
    if pending != 0 {
        return Err(format!("{pending} envelopes still in the hub's mailboxes"));
    }
    Ok(())
}

/// What each node holds and says, for a person reading a failure: its status (outbox, hub
/// connection, log alarm), its outbox by state and kind, and the last envelopes it took in; and
/// what waits in the hub's mailboxes.
async fn report(region: &Region) -> String {
    let mut out = String::new();
    let hub = hub_pool(region).await;
    let rows = sqlx::query("SELECT to_org, COUNT(*) FROM mailbox GROUP BY to_org")
        .fetch_all(&hub)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| format!("{}={}", r.get::<String, _>(0), r.get::<i64, _>(1)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| e.to_string());
    out.push_str(&format!("hub mailboxes: {rows}\n"));
    hub.close().await;
    for org in [SCHOOL, MBO, GEMEENTE, OTHER_MBO] {
        let status = match region.api(org).await {
            Ok(mut api) => match api.status(overstap_proto::pb::NodeStatusRequest {}).await {
                Ok(s) => format!("{:?}", s.into_inner()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        out.push_str(&format!("{org} status: {status}\n"));
        let pool = node_pool(region, org).await;
        let outbox = sqlx::query(
            "SELECT state, kind, COUNT(*), MAX(attempts), MAX(detail) FROM outbox GROUP BY state, kind",
        )
        .fetch_all(&pool)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    format!(
                        "{}/kind {}={} (attempts {}, {})",
                        r.get::<String, _>(0),
                        r.get::<i64, _>(1),
                        r.get::<i64, _>(2),
                        r.get::<i64, _>(3),
                        r.get::<String, _>(4)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|e| e.to_string());
        out.push_str(&format!("{org} outbox: {outbox}\n"));
        let processed = sqlx::query(
            "SELECT from_org, kind, outcome, detail, processed_at FROM processed ORDER BY processed_at DESC LIMIT 6",
        )
        .fetch_all(&pool)
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    format!(
                        "{} kind {} {} {} at {}",
                        r.get::<String, _>(0),
                        r.get::<i64, _>(1),
                        r.get::<String, _>(2),
                        r.get::<String, _>(3),
                        r.get::<i64, _>(4)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|e| e.to_string());
        out.push_str(&format!("{org} last taken in: {processed}\n"));
        pool.close().await;
    }
    out
}

async fn settle(
    region: &Region,
    model: &Model,
    clock: &TestClock,
    step: &str,
) -> Result<(), String> {
    // Generous: on PostgreSQL, beside the process tests, a deletion receipt once took over 30 s
    // (a node's outbox backs off up to 15 s between tries while the machine is saturated).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check(region, model, clock.now()).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "after {step}: {e}\nwhat each part holds:\n{}",
                    report(region).await
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn run(ops: Vec<Op>) -> Result<(), String> {
    let (_tmp, mut region, clock) = region_with_clock().await;
    let sam = student(&region, &birth_month(17), None).await;
    let mut school = region.api(SCHOOL).await.unwrap();
    let mut model = Model {
        grants: Vec::new(),
        version: 1,
    };
    for (i, op) in ops.iter().enumerate() {
        let now = clock.now();
        match op {
            Op::Grant {
                to,
                sections,
                hours,
                live,
            } => {
                let req = GrantRequest {
                    to: RECIPIENTS[*to].into(),
                    sections: sections_of(*sections),
                    purpose: "intake".into(),
                    not_before: now - 60,
                    not_after: now + hours * 3600,
                    live: *live,
                    may_fetch: false,
                };
                let signed = make_grant(&sam.wallet, "pvs-mbo-v1", &req, None, now)
                    .map_err(|e| e.to_string())?;
                let id = upload_grant(&mut school, signed)
                    .await
                    .map_err(|e| e.to_string())?;
                model.grants.push(ModelGrant {
                    id,
                    to: RECIPIENTS[*to],
                    sections: req.sections,
                    not_after: req.not_after,
                    live: *live,
                    version_at_grant: model.version,
                    revoked: false,
                    held_version: None,
                    delivered: false,
                });
            }
            Op::Revoke { which } => {
                if model.grants.is_empty() {
                    continue;
                }
                let n = model.grants.len();
                let g = &mut model.grants[which % n];
                let result = revoke(
                    &mut school,
                    make_revocation(&sam.wallet, &g.id, None, now).unwrap(),
                )
                .await;
                if g.valid(now) {
                    result.map_err(|e| format!("step {i}: revoke: {e}"))?;
                    g.revoked = true;
                } else if result.is_ok() {
                    return Err(format!(
                        "step {i}: revoking the ended grant {} was accepted",
                        g.id
                    ));
                }
            }
            Op::Send { which } => {
                if model.grants.is_empty() {
                    continue;
                }
                let n = model.grants.len();
                let version = model.version;
                let g = &mut model.grants[which % n];
                let result = school
                    .send_passport(SendPassportRequest {
                        grant_id: g.id.clone(),
                        ..Default::default()
                    })
                    .await;
                let grant_state = handover(&region, &g.id)
                    .await
                    .map(|h| h.grant_state)
                    .unwrap_or_default();
                if g.valid(now) && grant_state == "active" {
                    result.map_err(|e| {
                        format!(
                            "step {i}: send under a valid grant refused: {}",
                            e.message()
                        )
                    })?;
                    g.held_version = Some(if g.live { version } else { g.version_at_grant });
                    g.delivered = true;
                } else if result.is_ok() {
                    return Err(format!(
                        "step {i}: a package left under an ended grant {}",
                        g.id
                    ));
                }
            }
            Op::NewVersion => {
                model.version += 1;
                let v = sign_passport(&mut school, &sam.wallet, &draft(model.version), None, now)
                    .await
                    .map_err(|e| e.to_string())?;
                assert_eq!(v, model.version);
                for g in model
                    .grants
                    .iter_mut()
                    .filter(|g| g.live && g.held_version.is_some() && g.valid(now))
                {
                    g.held_version = Some(model.version);
                }
            }
            Op::Advance { hours } => clock.advance(hours * 3600),
            Op::Restart { node } => {
                let org = RECIPIENTS[*node];
                region.stop_node(org).await.map_err(|e| e.to_string())?;
                region.start_node(org).await.map_err(|e| e.to_string())?;
            }
        }
        settle(&region, &model, &clock, &format!("step {i} {op:?}")).await?;
    }
    region.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

fn model_cases() -> u32 {
    std::env::var("OVERSTAP_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    // 24 cases by default; OVERSTAP_MODEL_CASES runs more (a longer hunt).
    #![proptest_config(ProptestConfig { cases: model_cases(), max_shrink_iters: 8, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn the_region_keeps_to_the_consent_model(ops in proptest::collection::vec(op(), 6..16)) {
        // The nodes' and the hub's log lines (RUST_LOG; errors only by default) come with a
        // failure.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let _turn = HEAVY.blocking_lock();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let result = rt.block_on(run(ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

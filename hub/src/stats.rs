//! The `Stats` gRPC service: the region's exchange in aggregate, for coordinators only. It
//! counts envelope metadata the hub holds anyway (org ids, kinds, times, whether picked up);
//! there is no student in it. Every count below the threshold is suppressed before it leaves
//! [`aggregate`], so no output can show it.

use std::collections::BTreeMap;

use overstap_proto::directory::{VerifiedDirectory, kind_name};
use overstap_proto::envelope::kind_name as envelope_kind;
use overstap_proto::pb::stats_server::Stats;
use overstap_proto::pb::{
    AckLatency, Count, EnvelopeKind, EnvelopeKindRow, MemberKind, PairRow, StatsRequest,
    StatsResponse, VolumeRow, WaitingRow,
};
use tonic::{Request, Response, Status};

use crate::service::{HubError, HubService};
use crate::store::{EnvelopeMeta, HubStore};

/// Counts below this are shown as "<5" unless the settings say otherwise.
pub const DEFAULT_THRESHOLD: u32 = 5;

const DAY: i64 = 86_400;

/// What one statistics answer is made from.
#[derive(Debug)]
pub struct Input<'a> {
    /// Envelopes accepted in `since..until`.
    pub accepted: &'a [EnvelopeMeta],
    /// Envelopes not picked up yet, however old.
    pub unacked: &'a [EnvelopeMeta],
    pub directory: Option<&'a VerifiedDirectory>,
    pub since: i64,
    pub until: i64,
    pub now: i64,
    pub threshold: u32,
}

/// Aggregates, with every count from one up to the threshold suppressed.
pub fn aggregate(input: &Input<'_>) -> StatsResponse {
    // Zero is shown: it identifies nobody, and "nobody waits" is what a coordinator needs to
    // read. One up to the threshold is hidden.
    let count = |v: u64| {
        if v > 0 && v < u64::from(input.threshold) {
            Count {
                value: 0,
                suppressed: true,
            }
        } else {
            Count {
                value: v,
                suppressed: false,
            }
        }
    };
    let member = |org: &str| -> (String, String) {
        match input.directory.and_then(|d| d.member(org).ok()) {
            Some(m) => (m.display_name.clone(), kind_name(m.kind()).to_string()),
            None => (String::new(), "unknown".into()),
        }
    };
    let is_package = |e: &EnvelopeMeta| e.kind == EnvelopeKind::Package as i32;

    let mut volume: BTreeMap<(&str, String, String, String), (u64, u64)> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    let mut waits = Vec::new();
    let (mut erasures, mut expiries, mut revocations) = (0, 0, 0);
    for e in input.accepted {
        let package = u64::from(is_package(e));
        let (from_kind, to_kind) = (member(&e.from_org).1, member(&e.to_org).1);
        for (granularity, period) in periods(e.received_at) {
            let v = volume
                .entry((granularity, period, from_kind.clone(), to_kind.clone()))
                .or_default();
            v.0 += 1;
            v.1 += package;
        }
        let p = pairs
            .entry((e.from_org.clone(), e.to_org.clone()))
            .or_default();
        p.0 += 1;
        p.1 += package;
        *kinds.entry(envelope_kind(e.kind)).or_default() += 1;
        match EnvelopeKind::try_from(e.kind) {
            Ok(EnvelopeKind::DeletionReceipt) => {
                erasures += 1;
                expiries += u64::from(e.erasure_reason == "expired");
            }
            Ok(EnvelopeKind::Revocation) => revocations += 1,
            _ => {}
        }
        if package == 1
            && let Some(acked) = e.acked_at
        {
            waits.push((acked - e.received_at).max(0));
        }
    }
    waits.sort_unstable();
    let rank = |q: f64| {
        let n = waits.len();
        waits[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    };
    let acked = count(waits.len() as u64);
    // Times only from enough picked-up packages (none at all, or too few to show, say nothing).
    let timed = !acked.suppressed && !waits.is_empty();
    let ack_latency = AckLatency {
        median_secs: if timed { rank(0.5) } else { 0 },
        p90_secs: if timed { rank(0.9) } else { 0 },
        acked: Some(acked),
    };

    let mut waiting: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for e in input.unacked {
        let age = input.now - e.received_at;
        let bucket = if age < DAY {
            0
        } else if age <= 7 * DAY {
            1
        } else {
            2
        };
        waiting.entry(&e.to_org).or_default()[bucket] += 1;
    }

    StatsResponse {
        since: input.since,
        until: input.until,
        threshold: input.threshold,
        volume: volume
            .into_iter()
            .map(
                |((granularity, period, from_kind, to_kind), (e, p))| VolumeRow {
                    granularity: granularity.into(),
                    period,
                    from_kind,
                    to_kind,
                    envelopes: Some(count(e)),
                    packages: Some(count(p)),
                },
            )
            .collect(),
        pairs: pairs
            .into_iter()
            .map(|((from, to), (e, p))| {
                let (from_name, from_kind) = member(&from);
                let (to_name, to_kind) = member(&to);
                PairRow {
                    from_org: from,
                    from_name,
                    from_kind,
                    to_org: to,
                    to_name,
                    to_kind,
                    envelopes: Some(count(e)),
                    packages: Some(count(p)),
                }
            })
            .collect(),
        kinds: kinds
            .into_iter()
            .map(|(kind, n)| EnvelopeKindRow {
                kind: kind.into(),
                envelopes: Some(count(n)),
            })
            .collect(),
        ack_latency: Some(ack_latency),
        waiting: waiting
            .into_iter()
            .map(|(org, [day, week, older])| {
                let (name, kind) = member(org);
                WaitingRow {
                    org_id: org.into(),
                    name,
                    kind,
                    under_1_day: Some(count(day)),
                    from_1_to_7_days: Some(count(week)),
                    over_7_days: Some(count(older)),
                    at_risk: older > 0,
                }
            })
            .collect(),
        erasures: Some(count(erasures)),
        expiries: Some(count(expiries)),
        revocations: Some(count(revocations)),
    }
}

/// The day ("2026-11-22"), ISO week ("2026-W47") and month ("2026-11") a time falls in, UTC.
pub fn periods(t: i64) -> [(&'static str, String); 3] {
    let dt =
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (iso_year, week, _) = dt.to_iso_week_date();
    [
        (
            "day",
            format!(
                "{:04}-{:02}-{:02}",
                dt.year(),
                u8::from(dt.month()),
                dt.day()
            ),
        ),
        ("week", format!("{iso_year:04}-W{week:02}")),
        (
            "month",
            format!("{:04}-{:02}", dt.year(), u8::from(dt.month())),
        ),
    ]
}

/// The gRPC service; it shares the hub's state.
pub struct StatsService<S> {
    hub: HubService<S>,
    threshold: u32,
}

impl<S> StatsService<S> {
    pub fn new(hub: HubService<S>, threshold: u32) -> Self {
        StatsService { hub, threshold }
    }
}

impl<S: HubStore> StatsService<S> {
    /// The statistics for `since..until` (0 for a year back, 0 for now), as `who` asked for them.
    pub async fn compute(
        &self,
        who: &str,
        since: i64,
        until: i64,
    ) -> Result<StatsResponse, Status> {
        let now = crate::service::now();
        // Up to and including this second.
        if since < 0 || until < 0 {
            return Err(Status::invalid_argument(
                "since and until are seconds since 1970 (or 0 for the defaults)",
            ));
        }
        let until = if until == 0 { now + 1 } else { until };
        let since = if since == 0 {
            until.saturating_sub(365 * DAY)
        } else {
            since
        };
        if since >= until {
            return Err(Status::invalid_argument(format!(
                "since ({since}) must come before until ({until})"
            )));
        }
        let store = &self.hub.state().store;
        let accepted = store
            .envelopes_between(since, until)
            .await
            .map_err(HubError::from)?;
        let unacked = store.unacked().await.map_err(HubError::from)?;
        let directory = self.hub.directory().ok();
        tracing::info!(coordinator = %who, since, until, "statistics read");
        Ok(aggregate(&Input {
            accepted: &accepted,
            unacked: &unacked,
            directory: directory.as_deref(),
            since,
            until,
            now,
            threshold: self.threshold,
        }))
    }

    pub fn hub(&self) -> &HubService<S> {
        &self.hub
    }
}

#[tonic::async_trait]
impl<S: HubStore> Stats for StatsService<S> {
    async fn get_stats(
        &self,
        request: Request<StatsRequest>,
    ) -> Result<Response<StatsResponse>, Status> {
        let caller = self.hub.caller(&request)?;
        if caller.kind() != MemberKind::Coordinator {
            return Err(Status::permission_denied(format!(
                "{} is a {}; only coordinators see the region's statistics",
                caller.org_id,
                kind_name(caller.kind())
            )));
        }
        let r = request.into_inner();
        Ok(Response::new(
            self.compute(&caller.org_id, r.since, r.until).await?,
        ))
    }
}

/// A count for JSON: the number, or the text "<5" below the threshold.
fn json_count(c: &Option<Count>, threshold: u32) -> serde_json::Value {
    match c {
        Some(c) if !c.suppressed => serde_json::json!(c.value),
        _ => serde_json::json!(format!("<{threshold}")),
    }
}

/// The statistics as JSON, every suppressed count as "<5": what `overstap stats --format json`
/// prints and what the dashboard reads.
pub fn to_json(s: &StatsResponse) -> serde_json::Value {
    use serde_json::json;
    let t = s.threshold;
    let latency = s.ack_latency.unwrap_or_default();
    let acked_suppressed = latency
        .acked
        .as_ref()
        .is_none_or(|a| a.suppressed || a.value == 0);
    json!({
        "since": s.since,
        "until": s.until,
        "threshold": t,
        "pairs": s.pairs.iter().map(|p| json!({
            "from_org": p.from_org, "from_name": p.from_name, "from_kind": p.from_kind,
            "to_org": p.to_org, "to_name": p.to_name, "to_kind": p.to_kind,
            "packages": json_count(&p.packages, t), "envelopes": json_count(&p.envelopes, t),
        })).collect::<Vec<_>>(),
        "volume": s.volume.iter().map(|v| json!({
            "granularity": v.granularity, "period": v.period,
            "from_kind": v.from_kind, "to_kind": v.to_kind,
            "packages": json_count(&v.packages, t), "envelopes": json_count(&v.envelopes, t),
        })).collect::<Vec<_>>(),
        "kinds": s.kinds.iter().map(|k| json!({
            "kind": k.kind, "envelopes": json_count(&k.envelopes, t),
        })).collect::<Vec<_>>(),
        "ack_latency": {
            "acked": json_count(&latency.acked, t),
            "median_secs": (!acked_suppressed).then_some(latency.median_secs),
            "p90_secs": (!acked_suppressed).then_some(latency.p90_secs),
        },
        "waiting": s.waiting.iter().map(|w| json!({
            "org_id": w.org_id, "name": w.name, "kind": w.kind,
            "under_1_day": json_count(&w.under_1_day, t),
            "from_1_to_7_days": json_count(&w.from_1_to_7_days, t),
            "over_7_days": json_count(&w.over_7_days, t),
            "at_risk": w.at_risk,
        })).collect::<Vec<_>>(),
        "erasures": json_count(&s.erasures, t),
        "expiries": json_count(&s.expiries, t),
        "revocations": json_count(&s.revocations, t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(from: &str, to: &str, kind: EnvelopeKind, at: i64, acked: Option<i64>) -> EnvelopeMeta {
        EnvelopeMeta {
            from_org: from.into(),
            to_org: to.into(),
            kind: kind as i32,
            received_at: at,
            acked_at: acked,
            erasure_reason: String::new(),
        }
    }

    #[test]
    fn counts_below_the_threshold_are_suppressed_everywhere() {
        let t = 1_763_800_000; // 2025-11-22
        let mut accepted: Vec<_> = (0..6)
            .map(|i| {
                meta(
                    "25LP",
                    "30RT",
                    EnvelopeKind::Package,
                    t + i,
                    Some(t + i + 10 * i),
                )
            })
            .collect();
        accepted.push(meta("25LP", "27XK", EnvelopeKind::Package, t, None));
        let mut erased = meta("30RT", "25LP", EnvelopeKind::DeletionReceipt, t, Some(t));
        erased.erasure_reason = "expired".into();
        accepted.push(erased);
        let unacked = vec![meta(
            "25LP",
            "27XK",
            EnvelopeKind::Package,
            t - 8 * DAY,
            None,
        )];
        let s = aggregate(&Input {
            accepted: &accepted,
            unacked: &unacked,
            directory: None,
            since: t - DAY,
            until: t + DAY,
            now: t,
            threshold: 5,
        });
        let pair = |to: &str| s.pairs.iter().find(|p| p.to_org == to).unwrap();
        assert_eq!(pair("30RT").packages.unwrap().value, 6);
        assert!(pair("27XK").packages.unwrap().suppressed);
        assert_eq!(pair("27XK").packages.unwrap().value, 0, "no value leaks");
        let latency = s.ack_latency.unwrap();
        // Waits of 0, 10, 20, 30, 40, 50 s: nearest-rank median 20, p90 50.
        assert_eq!((latency.median_secs, latency.p90_secs), (20, 50));
        assert!(s.expiries.unwrap().suppressed && s.erasures.unwrap().suppressed);
        let w = &s.waiting[0];
        assert!(w.at_risk && w.over_7_days.unwrap().suppressed);
        let weeks: Vec<_> = s
            .volume
            .iter()
            .filter(|v| v.granularity == "week")
            .collect();
        assert_eq!(weeks[0].period, "2025-W47");
        assert_eq!(weeks[0].envelopes.unwrap().value, 8);
    }

    #[test]
    fn pulls_are_counted_beside_pushes_and_few_are_suppressed() {
        let t = 1_763_800_000;
        let stats = |pulls: i64| {
            let mut accepted: Vec<_> = (0..6)
                .map(|i| meta("25LP", "30RT", EnvelopeKind::Package, t + i, Some(t + i)))
                .collect();
            accepted.extend(
                (0..pulls).map(|i| meta("30RT", "25LP", EnvelopeKind::PullRequest, t + i, None)),
            );
            aggregate(&Input {
                accepted: &accepted,
                unacked: &[],
                directory: None,
                since: t - DAY,
                until: t + DAY,
                now: t,
                threshold: 5,
            })
        };
        let kind = |s: &StatsResponse, k: &str| {
            s.kinds
                .iter()
                .find(|r| r.kind == k)
                .and_then(|r| r.envelopes)
        };
        let many = stats(7);
        assert_eq!(kind(&many, "pull_request").unwrap().value, 7);
        assert_eq!(kind(&many, "package").unwrap().value, 6);
        let few = stats(2);
        let pulls = kind(&few, "pull_request").unwrap();
        assert!(pulls.suppressed && pulls.value == 0);
    }

    /// Found in review: with packages sent but none picked up, the median's rank panicked.
    #[test]
    fn a_period_with_nothing_picked_up_has_no_times() {
        let t = 1_763_800_000;
        let accepted: Vec<_> = (0..6)
            .map(|i| meta("25LP", "30RT", EnvelopeKind::Package, t + i, None))
            .collect();
        let s = aggregate(&Input {
            accepted: &accepted,
            unacked: &accepted,
            directory: None,
            since: t - DAY,
            until: t + DAY,
            now: t,
            threshold: 5,
        });
        let latency = s.ack_latency.unwrap();
        assert_eq!(latency.acked.unwrap().value, 0);
        assert_eq!((latency.median_secs, latency.p90_secs), (0, 0));
        assert_eq!(
            to_json(&s)["ack_latency"]["median_secs"],
            serde_json::Value::Null
        );
        assert_eq!(s.waiting[0].under_1_day.unwrap().value, 6);
    }

    #[test]
    fn periods_follow_iso_weeks_across_the_new_year() {
        // 2027-01-01 is a Friday in ISO week 53 of 2026.
        let t = 1_798_761_600;
        let [day, week, month] = periods(t);
        assert_eq!(day.1, "2027-01-01");
        assert_eq!(week.1, "2026-W53");
        assert_eq!(month.1, "2027-01");
    }
}

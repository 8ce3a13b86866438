//! The `Stats` gRPC service: the region's exchange in aggregate, for coordinators only. It
//! counts envelope metadata the hub holds anyway (org ids, kinds, times, whether picked up);
//! there is no student in it. Every count below the threshold is suppressed before it leaves
//! [`aggregate`], so no output can show it.

use std::collections::BTreeMap;

use overstap_proto::directory::{VerifiedDirectory, kind_name};
use overstap_proto::envelope::kind_name as envelope_kind;
use overstap_proto::pb::stats_server::Stats;
use overstap_proto::pb::{
    AckLatency, Count, DropoutRow, EnvelopeKind, EnvelopeKindRow, MemberKind, PairRow, PickupRow,
    StatsRequest, StatsResponse, VolumeRow, WaitingRow,
};
use tonic::{Request, Response, Status};

use crate::service::{HubError, HubService};
use suppress::{Hide, Sum};

pub mod period;
pub mod suppress;
use crate::store::{EnvelopeMeta, HubStore};

/// Counts below this are shown as "<5" unless the settings say otherwise.
pub const DEFAULT_THRESHOLD: u32 = 5;

const DAY: i64 = 86_400;

/// A passport picked up without an intake status this many days after it was handed over is on
/// the drop-out list.
pub const INTAKE_DAYS: i64 = 14;

/// What one statistics answer is made from.
#[derive(Debug)]
pub struct Input<'a> {
    /// Envelopes accepted in `since..until`.
    pub accepted: &'a [EnvelopeMeta],
    /// Envelopes not picked up yet, however old.
    pub unacked: &'a [EnvelopeMeta],
    /// Per package (envelope id), when the hub took in the first intake status about it.
    pub intakes: &'a BTreeMap<Vec<u8>, i64>,
    pub directory: Option<&'a VerifiedDirectory>,
    pub since: i64,
    pub until: i64,
    pub now: i64,
    pub threshold: u32,
}

/// Days are counted only for a period up to this long; a longer one has weeks and months.
const MAX_DAYS: i64 = 31 * DAY;

/// The counts of one answer before suppression, each a cell, and the sums a reader can check
/// them by.
#[derive(Default)]
struct Cells {
    values: Vec<u64>,
}

impl Cells {
    fn add(&mut self, v: u64) -> usize {
        self.values.push(v);
        self.values.len() - 1
    }
}

/// Aggregates, with every count from one up to the threshold suppressed, and every count that
/// would give one of those away by adding and subtracting (see [`suppress`]).
pub fn aggregate(input: &Input<'_>) -> StatsResponse {
    let member = |org: &str| -> (String, String) {
        match input.directory.and_then(|d| d.member(org).ok()) {
            Some(m) => (m.display_name.clone(), kind_name(m.kind()).to_string()),
            None => (String::new(), "unknown".into()),
        }
    };
    let is_package = |e: &EnvelopeMeta| e.kind == EnvelopeKind::Package as i32;
    let with_days = input.until - input.since <= MAX_DAYS;

    let mut volume: BTreeMap<(&str, String, String, String), (u64, u64)> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    // Each day's week and month, for the sums days make.
    let mut day_of: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut waits = Vec::new();
    // Per month handed over, the times to pick-up; per receiver, [handed over, late, not yet,
    // picked up without an intake status 14 days on].
    let mut month_waits: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut dropouts: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    let (mut erasures, mut expiries, mut revocations) = (0, 0, 0);
    for e in input.accepted {
        let package = u64::from(is_package(e));
        let (from_kind, to_kind) = (member(&e.from_org).1, member(&e.to_org).1);
        let [day, week, month] = periods(e.received_at);
        let month_of = month.1.clone();
        if with_days {
            day_of.insert(day.1.clone(), (week.1.clone(), month.1.clone()));
        }
        for (granularity, period) in [day, week, month] {
            if granularity == "day" && !with_days {
                continue;
            }
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
        if package == 1 {
            let d = dropouts.entry(e.to_org.clone()).or_default();
            d[0] += 1;
            match e.acked_at {
                Some(acked) => {
                    let wait = (acked - e.received_at).max(0);
                    waits.push(wait);
                    month_waits.entry(month_of.clone()).or_default().push(wait);
                    d[1] += u64::from(wait > 7 * DAY);
                    let due = e.received_at + INTAKE_DAYS * DAY;
                    let intake = input.intakes.get(&e.envelope_id).is_some_and(|&t| t <= due);
                    d[3] += u64::from(due <= input.now && !intake);
                }
                None if input.now - e.received_at > 7 * DAY => {
                    d[1] += 1;
                    d[2] += 1;
                }
                None => {}
            }
        }
    }
    waits.sort_unstable();

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

    // Every count a cell; then the sums between them.
    let mut cells = Cells::default();
    let volume: Vec<_> = volume
        .into_iter()
        .map(|(key, (e, p))| (key, cells.add(e), cells.add(p)))
        .collect();
    let pairs: Vec<_> = pairs
        .into_iter()
        .map(|((from, to), (e, p))| {
            let kinds = (member(&from).1, member(&to).1);
            (from, to, kinds, cells.add(e), cells.add(p))
        })
        .collect();
    let kinds: Vec<_> = kinds
        .into_iter()
        .map(|(kind, n)| (kind, cells.add(n)))
        .collect();
    let acked = cells.add(waits.len() as u64);
    let pickup: Vec<_> = month_waits
        .into_iter()
        .map(|(month, mut w)| {
            w.sort_unstable();
            let c = cells.add(w.len() as u64);
            (month, c, w)
        })
        .collect();
    let dropouts: Vec<_> = dropouts
        .into_iter()
        .map(|(org, [all, late, never, no_intake])| {
            let cells = [all, late, never, no_intake].map(|v| cells.add(v));
            (org, cells)
        })
        .collect();
    let waiting: Vec<_> = waiting
        .into_iter()
        .map(|(org, [day, week, older])| {
            (
                org,
                [cells.add(day), cells.add(week), cells.add(older)],
                older > 0,
            )
        })
        .collect();
    let (erasures, expiries, revocations) = (
        cells.add(erasures),
        cells.add(expiries),
        cells.add(revocations),
    );

    let mut sums: Vec<Sum> = Vec::new();
    // All flows add up to the kinds' total; the packages of the flows to the package kind.
    let kind_cell = |k: &str| kinds.iter().find(|(n, _)| *n == k).map(|(_, c)| *c);
    let mut total: Sum = pairs.iter().map(|p| (p.3, 1)).collect();
    total.extend(kinds.iter().map(|(_, c)| (*c, -1)));
    sums.push(total);
    let mut packages: Sum = pairs.iter().map(|p| (p.4, 1)).collect();
    packages.extend(kind_cell("package").map(|c| (c, -1)));
    sums.push(packages);
    // The months' pick-ups add up to all pick-ups; a receiver's packages to its column of flows.
    if !pickup.is_empty() {
        let mut months: Sum = pickup.iter().map(|p| (p.1, 1)).collect();
        months.push((acked, -1));
        sums.push(months);
    }
    for (org, [all, ..]) in &dropouts {
        let mut column: Sum = vec![(*all, 1)];
        column.extend(pairs.iter().filter(|p| p.1 == *org).map(|p| (p.4, -1)));
        sums.push(column);
    }
    // Erasures and revocations are kinds of their own.
    sums.push(
        [(erasures, 1)]
            .into_iter()
            .chain(kind_cell("deletion_receipt").map(|c| (c, -1)))
            .collect(),
    );
    sums.push(
        [(revocations, 1)]
            .into_iter()
            .chain(kind_cell("revocation").map(|c| (c, -1)))
            .collect(),
    );
    // For each kind of flow: its flows add up to its periods of each granularity, and its
    // days to their weeks and months.
    let flow_kinds: std::collections::BTreeSet<(String, String)> =
        pairs.iter().map(|p| p.2.clone()).collect();
    for (fk, tk) in &flow_kinds {
        let of_kind =
            |v: &&((&str, String, String, String), usize, usize)| v.0.2 == *fk && v.0.3 == *tk;
        for which in [0, 1] {
            let pick = |e: usize, p: usize| if which == 0 { e } else { p };
            let flows: Sum = pairs
                .iter()
                .filter(|p| p.2 == (fk.clone(), tk.clone()))
                .map(|p| (pick(p.3, p.4), 1))
                .collect();
            for g in ["day", "week", "month"] {
                let mut sum = flows.clone();
                sum.extend(
                    volume
                        .iter()
                        .filter(of_kind)
                        .filter(|v| v.0.0 == g)
                        .map(|v| (pick(v.1, v.2), -1)),
                );
                if sum.len() > flows.len() {
                    sums.push(sum);
                }
            }
            for (whole, at) in [("week", 0), ("month", 1)] {
                for v in volume.iter().filter(of_kind).filter(|v| v.0.0 == whole) {
                    let mut sum: Sum = vec![(pick(v.1, v.2), 1)];
                    sum.extend(
                        volume
                            .iter()
                            .filter(of_kind)
                            .filter(|d| d.0.0 == "day")
                            .filter(|d| {
                                day_of
                                    .get(&d.0.1)
                                    .map(|w| if at == 0 { &w.0 } else { &w.1 })
                                    == Some(&v.0.1)
                            })
                            .map(|d| (pick(d.1, d.2), -1)),
                    );
                    if sum.len() > 1 {
                        sums.push(sum);
                    }
                }
            }
        }
    }
    let hide = suppress::suppress(&cells.values, &sums, input.threshold);
    let count = |c: usize| match hide[c] {
        Hide::Shown => Count {
            value: cells.values[c],
            suppressed: false,
            protects: false,
        },
        Hide::Small => Count {
            value: 0,
            suppressed: true,
            protects: false,
        },
        Hide::Complement => Count {
            value: 0,
            suppressed: true,
            protects: true,
        },
    };

    // Times only from enough picked-up packages (none at all, or too few to show, say nothing).
    let timed = hide[acked] == Hide::Shown && !waits.is_empty();
    let ack_latency = AckLatency {
        median_secs: if timed { rank(&waits, 0.5) } else { 0 },
        p90_secs: if timed { rank(&waits, 0.9) } else { 0 },
        acked: Some(count(acked)),
    };

    StatsResponse {
        since: input.since,
        until: input.until,
        threshold: input.threshold,
        volume: volume
            .into_iter()
            .map(
                |((granularity, period, from_kind, to_kind), e, p)| VolumeRow {
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
            .map(|(from, to, _, e, p)| {
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
            .map(|(org, [day, week, older], at_risk)| {
                let (name, kind) = member(org);
                WaitingRow {
                    org_id: org.into(),
                    name,
                    kind,
                    under_1_day: Some(count(day)),
                    from_1_to_7_days: Some(count(week)),
                    over_7_days: Some(count(older)),
                    at_risk,
                }
            })
            .collect(),
        erasures: Some(count(erasures)),
        expiries: Some(count(expiries)),
        revocations: Some(count(revocations)),
        pickup: pickup
            .into_iter()
            .map(|(period, c, w)| {
                let timed = hide[c] == Hide::Shown && !w.is_empty();
                PickupRow {
                    period,
                    acked: Some(count(c)),
                    median_secs: if timed { rank(&w, 0.5) } else { 0 },
                    p90_secs: if timed { rank(&w, 0.9) } else { 0 },
                }
            })
            .collect(),
        dropouts: dropouts
            .into_iter()
            .map(|(org, [all, late, never, no_intake])| {
                let (name, kind) = member(&org);
                DropoutRow {
                    org_id: org,
                    name,
                    kind,
                    packages: Some(count(all)),
                    late: Some(count(late)),
                    not_picked_up: Some(count(never)),
                    no_intake: Some(count(no_intake)),
                }
            })
            .collect(),
    }
}

/// The `q` quantile of sorted, non-empty `waits` (nearest rank).
fn rank(waits: &[i64], q: f64) -> i64 {
    let n = waits.len();
    waits[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
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
        let now = self.hub.state().now();
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
        // From the period's start until now: the period's envelopes, and the intake statuses
        // about its packages, which may come after it ended.
        let mut accepted = store
            .envelopes_between(since, until.max(now + 1))
            .await
            .map_err(HubError::from)?;
        let mut intakes: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for e in accepted.iter().filter(|e| !e.about_package.is_empty()) {
            let first = intakes
                .entry(e.about_package.clone())
                .or_insert(e.received_at);
            *first = (*first).min(e.received_at);
        }
        accepted.retain(|e| e.received_at < until);
        let unacked = store.unacked().await.map_err(HubError::from)?;
        let directory = self.hub.directory().ok();
        tracing::info!(coordinator = %who, since, until, "statistics read");
        Ok(aggregate(&Input {
            accepted: &accepted,
            unacked: &unacked,
            intakes: &intakes,
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

/// A count for JSON: the number, the text "<5" below the threshold, or "x" for a count hidden
/// so that a small one cannot be worked out from it.
fn json_count(c: &Option<Count>, threshold: u32) -> serde_json::Value {
    match c {
        Some(c) if !c.suppressed => serde_json::json!(c.value),
        Some(c) if c.protects => serde_json::json!("x"),
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
        "pickup": s.pickup.iter().map(|p| {
            let timed = p.acked.as_ref().is_some_and(|a| !a.suppressed && a.value > 0);
            json!({
                "period": p.period, "acked": json_count(&p.acked, t),
                "median_secs": timed.then_some(p.median_secs),
                "p90_secs": timed.then_some(p.p90_secs),
            })
        }).collect::<Vec<_>>(),
        "dropouts": s.dropouts.iter().map(|d| json!({
            "org_id": d.org_id, "name": d.name, "kind": d.kind,
            "packages": json_count(&d.packages, t), "late": json_count(&d.late, t),
            "not_picked_up": json_count(&d.not_picked_up, t),
            "no_intake": json_count(&d.no_intake, t),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;

//! A school year of traffic in a larger region, for the coordinators' dashboard to show: schools
//! hand students over to mbo colleges and municipalities from September to July, with the spring
//! peak, some students withdraw their consent, some consents run out, one college is away for
//! three weeks in March, one municipality picks up once a week and one switches its node off in
//! June for good. Everything goes through the real protocol: real nodes, real envelopes, the
//! hub's own clock. Only the clock is moved, day by day, on every party at once.
//!
//! The run returns what it handed over ([`Traffic`]), so a test can hold the dashboard's numbers
//! against it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use overstap_proto::UnixTime;
use overstap_proto::pb::{MemberKind, NodeStatusRequest, SendPassportRequest, SetStatusRequest};
use serde::{Deserialize, Serialize};

use crate::cast::{NOOR_ANSWERS, SAM_ANSWERS, register};
use crate::client::{Api, explain};
use crate::passport::{
    Answers, GrantRequest, draft_from_answers, make_grant, make_revocation, revoke, sign_passport,
    upload_grant,
};
use crate::region::{Org, Region};
use crate::wallet::Wallet;

const DAY: i64 = 86_400;

/// The region's schools (vmbo, praktijkonderwijs, vso), colleges and municipalities, in the
/// order a plan takes them.
const SCHOOLS: [(&str, &str); 10] = [
    ("25LP", "Vmbo De Brug"),
    ("20AB", "Praktijkschool Het Anker"),
    ("21CD", "Vso De Horizon"),
    ("22EF", "Vmbo Het Noordik"),
    ("23GH", "Vmbo Campus Kampen"),
    ("24JK", "Praktijkonderwijs De Rivier"),
    ("26MN", "Vmbo Vechtdal"),
    ("28PQ", "Vso Het Baken"),
    ("29RS", "Vmbo De Pijler"),
    ("19TU", "Vmbo Meander"),
];
const COLLEGES: [(&str, &str); 4] = [
    ("30RT", "Techniek College Zwolle"),
    ("27XK", "Zorgcollege Oost"),
    ("31GR", "Groen College IJssel"),
    ("32VD", "Vakcollege Deventer"),
];
const MUNICIPALITIES: [(&str, &str); 3] = [
    ("GM0193", "Gemeente Zwolle, doorstroompunt"),
    ("GM0166", "Gemeente Kampen"),
    ("GM0148", "Gemeente Dalfsen"),
];
/// The coordinator the year region admits, to open the dashboard with.
pub const YEAR_COORDINATOR: &str = "RMC01";

/// How large a year to run.
#[derive(Debug, Clone, Copy)]
pub struct YearPlan {
    pub schools: usize,
    pub colleges: usize,
    pub municipalities: usize,
    pub handovers: usize,
    /// The school year from 1 August of this year.
    pub school_year: i32,
    pub seed: u64,
}

impl YearPlan {
    /// Ten schools, four colleges, three municipalities and 1,500 handovers.
    pub fn full(school_year: i32) -> Self {
        YearPlan {
            schools: 10,
            colleges: 4,
            municipalities: 3,
            handovers: 1_500,
            school_year,
            seed: 2025,
        }
    }

    /// Three schools, two colleges and a municipality: the same year in small, for the tests.
    pub fn small(school_year: i32) -> Self {
        YearPlan {
            schools: 3,
            colleges: 2,
            municipalities: 1,
            handovers: 160,
            school_year,
            seed: 7,
        }
    }

    /// The last school year that has ended at `now`.
    pub fn last_school_year(now: UnixTime) -> i32 {
        let d = time::OffsetDateTime::from_unix_timestamp(now)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        if u8::from(d.month()) >= 8 {
            d.year() - 1
        } else {
            d.year() - 2
        }
    }

    fn schools(&self) -> &'static [(&'static str, &'static str)] {
        &SCHOOLS[..self.schools.min(SCHOOLS.len())]
    }

    /// The colleges, then the municipalities.
    fn receivers(&self) -> Vec<(&'static str, &'static str, MemberKind)> {
        COLLEGES[..self.colleges.min(COLLEGES.len())]
            .iter()
            .map(|(id, n)| (*id, *n, MemberKind::Mbo))
            .chain(
                MUNICIPALITIES[..self.municipalities.min(MUNICIPALITIES.len())]
                    .iter()
                    .map(|(id, n)| (*id, *n, MemberKind::Municipality)),
            )
            .collect()
    }

    /// Every member of the year region, the coordinator last.
    pub fn orgs(&self) -> Vec<Org> {
        let mut orgs: Vec<Org> = self
            .schools()
            .iter()
            .map(|(id, n)| Org::new(id, MemberKind::School, n))
            .collect();
        orgs.extend(
            self.receivers()
                .into_iter()
                .map(|(id, n, k)| Org::new(id, k, n)),
        );
        orgs.push(Org::new(
            YEAR_COORDINATOR,
            MemberKind::Coordinator,
            "RMC Regio IJssel-Vecht",
        ));
        orgs
    }

    /// The receiver that is away for three weeks from the first Monday of March.
    fn away_in_march(&self) -> Option<&'static str> {
        let r = self.receivers();
        (r.len() > 2).then(|| r[1].0)
    }

    /// The receiver whose node is switched off on 1 June for good.
    fn switched_off(&self) -> Option<&'static str> {
        self.receivers().last().map(|r| r.0)
    }

    /// The receiver that starts its node once a week, on Friday afternoon.
    fn weekly(&self) -> Option<&'static str> {
        let r = self.receivers();
        (r.len() > 3).then(|| r[r.len() - 2].0)
    }
}

/// One handover of the year, as it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handed {
    pub from: String,
    pub to: String,
    /// When the school sent it (the moved clock).
    pub sent_at: UnixTime,
    /// When its recipient took it in, if it ever did.
    pub picked_up_at: Option<UnixTime>,
    /// When the student withdrew the consent, if they did.
    pub withdrawn_at: Option<UnixTime>,
    /// When the recipient's intaker reported the intake planned, if they did.
    pub intake_at: Option<UnixTime>,
    /// When the consent ends.
    pub consent_ends: UnixTime,
}

/// Everything the year handed over, and the region's members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Traffic {
    pub school_year: String,
    pub since: UnixTime,
    pub until: UnixTime,
    pub members: Vec<(String, String, String)>,
    pub handovers: Vec<Handed>,
}

/// A clock every party of the region reads: the wall clock, or a moved time that runs on from
/// where it was set.
#[derive(Clone, Default)]
pub struct MovedClock {
    offset: Arc<AtomicI64>,
}

impl MovedClock {
    pub fn now(&self) -> UnixTime {
        wall() + self.offset.load(Ordering::SeqCst)
    }

    /// From now on the clock reads `t`, and runs on from there.
    pub fn set(&self, t: UnixTime) {
        self.offset.store(t - wall(), Ordering::SeqCst);
    }

    /// Moves the clock `secs` on.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// Back to the wall clock.
    pub fn reset(&self) {
        self.offset.store(0, Ordering::SeqCst);
    }

    pub fn as_clock(&self) -> overstap_node::Clock {
        let c = self.clone();
        Arc::new(move || c.now())
    }
}

fn wall() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A small deterministic generator (SplitMix64), so a plan makes the same year every time.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index drawn by `weights`.
    fn pick(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    fn chance(&mut self, p: f64) -> bool {
        self.pick(&[p, 1.0 - p]) == 0
    }
}

fn midnight(d: time::Date) -> UnixTime {
    d.midnight().assume_utc().unix_timestamp()
}

/// How busy each month of the school year is, September to July: the spring peak comes with
/// the mbo's registration deadline (1 April) and the intakes after it.
fn month_weight(month: u8) -> f64 {
    match month {
        9 | 10 => 0.5,
        11 => 0.6,
        12 => 0.35,
        1 => 0.7,
        2 => 1.0,
        3 => 2.2,
        4 => 2.6,
        5 => 1.8,
        6 => 2.4,
        7 => 0.7,
        _ => 0.0,
    }
}

/// The school days a handover can fall on: weekdays from 1 September to 10 July, without the
/// Christmas and May holidays.
fn school_days(year: i32) -> Vec<time::Date> {
    let mut out = Vec::new();
    let Ok(mut d) = time::Date::from_calendar_date(year, time::Month::September, 1) else {
        return out;
    };
    let Ok(end) = time::Date::from_calendar_date(year + 1, time::Month::July, 11) else {
        return out;
    };
    while d < end {
        let weekday = d.weekday().number_from_monday();
        let (m, day) = (u8::from(d.month()), d.day());
        let christmas = (m == 12 && day >= 22) || (m == 1 && day <= 4);
        let may = m == 4 && day >= 27 || m == 5 && day <= 3;
        if weekday <= 5 && !christmas && !may {
            out.push(d);
        }
        d = d.next_day().unwrap_or(end);
    }
    out
}

/// One planned handover.
struct Planned {
    day: time::Date,
    school: usize,
    to: usize,
    withdraw_after_days: Option<i64>,
    short_consent: bool,
    /// Days after the handover that the intaker plans the intake, if ever.
    intake_after_days: Option<i64>,
}

fn plan_handovers(plan: &YearPlan) -> Vec<Planned> {
    let mut dice = Dice(plan.seed);
    let days = school_days(plan.school_year);
    let day_weights: Vec<f64> = days
        .iter()
        .map(|d| month_weight(u8::from(d.month())))
        .collect();
    // Schools of different sizes; colleges and municipalities that draw differently.
    let school_weights: Vec<f64> = (0..plan.schools.min(SCHOOLS.len()))
        .map(|i| 10.0 - i as f64 * 0.7)
        .collect();
    let receivers = plan.receivers();
    let receiver_weights: Vec<f64> = receivers
        .iter()
        .enumerate()
        .map(|(i, r)| match r.2 {
            MemberKind::Mbo => 6.0 - i as f64,
            _ => 1.6,
        })
        .collect();
    let mut out: Vec<Planned> = (0..plan.handovers)
        .map(|_| {
            let day = days[dice.pick(&day_weights)];
            let school = dice.pick(&school_weights);
            let to = dice.pick(&receiver_weights);
            let withdraw_after_days = dice.chance(0.04).then(|| 3 + (dice.next() % 10) as i64);
            let short_consent = dice.chance(0.06);
            // Most intakes are planned within two weeks; some later, some never.
            let intake_after_days = if dice.chance(0.85) {
                Some(if dice.chance(0.06) {
                    16 + (dice.next() % 5) as i64
                } else {
                    1 + (dice.next() % 12) as i64
                })
            } else {
                None
            };
            Planned {
                day,
                school,
                to,
                withdraw_after_days,
                short_consent,
                intake_after_days,
            }
        })
        .collect();
    out.sort_by_key(|p| p.day);
    out
}

/// The hub's mailbox depths, read from its database beside the running hub.
enum HubDb {
    Sqlite(overstap_hub::SqliteStore),
    Postgres(overstap_hub::PostgresStore),
}

impl HubDb {
    async fn open(url: &str) -> anyhow::Result<Self> {
        Ok(if overstap_hub::store::is_postgres(url) {
            HubDb::Postgres(overstap_hub::PostgresStore::open(url).await?)
        } else {
            HubDb::Sqlite(overstap_hub::SqliteStore::open(url).await?)
        })
    }

    async fn depths(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        use overstap_hub::HubStore;
        Ok(match self {
            HubDb::Sqlite(s) => s.mailbox_depths().await?,
            HubDb::Postgres(s) => s.mailbox_depths().await?,
        }
        .into_iter()
        .collect())
    }
}

/// Keeps the year's books while it runs.
struct Year<'a> {
    region: &'a mut Region,
    clock: &'a MovedClock,
    hub: HubDb,
    apis: BTreeMap<String, Api>,
    /// Nodes not running now.
    down: Vec<String>,
    handed: Vec<Handed>,
    /// Per recipient, the handovers waiting for it to take them in (indexes into `handed`).
    waiting: BTreeMap<String, Vec<usize>>,
}

impl Year<'_> {
    async fn api(&mut self, org: &str) -> anyhow::Result<&mut Api> {
        if !self.apis.contains_key(org) {
            let api = self.region.api(org).await?;
            self.apis.insert(org.to_string(), api);
        }
        self.apis.get_mut(org).context("api")
    }

    async fn stop(&mut self, org: &str) -> anyhow::Result<()> {
        self.settle().await?;
        self.apis.remove(org);
        self.region.stop_node(org).await?;
        self.down.push(org.to_string());
        Ok(())
    }

    async fn start(&mut self, org: &str) -> anyhow::Result<()> {
        self.region.start_node(org).await?;
        self.down.retain(|o| o != org);
        self.settle().await
    }

    /// Plans the intakes due by `day` at the recipients that run and hold the passport; the
    /// others wait in `intakes`. A withdrawn consent has no intake.
    async fn plan_intakes(
        &mut self,
        intakes: &mut Vec<(time::Date, String, usize)>,
        day: time::Date,
    ) -> anyhow::Result<()> {
        let mut later = Vec::new();
        for (due, grant_id, index) in std::mem::take(intakes) {
            let h = &self.handed[index];
            if h.withdrawn_at.is_some() {
                continue;
            }
            let to = h.to.clone();
            if due > day || h.picked_up_at.is_none() || self.down.contains(&to) {
                later.push((due, grant_id, index));
                continue;
            }
            self.api(&to)
                .await?
                .set_status(SetStatusRequest {
                    grant_id,
                    status: "intake gepland".into(),
                    staff_user: "intake".into(),
                })
                .await
                .map_err(explain)?;
            self.handed[index].intake_at = Some(self.clock.now());
        }
        *intakes = later;
        Ok(())
    }

    /// Waits until every running node has sent what it had to send and taken in what waited for
    /// it; whatever a running recipient took in is picked up now.
    async fn settle(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let running: Vec<String> = self
            .region
            .orgs
            .iter()
            .map(|o| o.id.clone())
            .filter(|o| !self.down.contains(o))
            .collect();
        loop {
            let mut busy = false;
            for org in &running {
                let status = self
                    .api(org)
                    .await?
                    .status(NodeStatusRequest {})
                    .await
                    .map_err(explain)?
                    .into_inner();
                busy |= status.outbox_pending > 0;
            }
            if !busy {
                let depths = self.hub.depths().await?;
                busy = running
                    .iter()
                    .any(|o| depths.get(o).copied().unwrap_or(0) > 0);
            }
            if !busy {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the region did not settle within two minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = self.clock.now();
        for org in running {
            for i in self.waiting.remove(&org).unwrap_or_default() {
                self.handed[i].picked_up_at = Some(now);
            }
        }
        Ok(())
    }
}

/// Runs the school year `plan` describes in `region` (started on `clock` with `plan.orgs()`),
/// telling `progress` (handovers done, of all) as it goes. Leaves the clock on the wall clock.
pub async fn run(
    region: &mut Region,
    clock: &MovedClock,
    plan: &YearPlan,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Traffic> {
    let planned = plan_handovers(plan);
    let hub = HubDb::open(&region.hub_database_url()?).await?;
    let members = plan
        .orgs()
        .into_iter()
        .map(|o| {
            (
                o.id,
                o.name,
                overstap_proto::directory::kind_name(o.kind).to_string(),
            )
        })
        .collect();
    let mut year = Year {
        region,
        clock,
        hub,
        apis: BTreeMap::new(),
        down: Vec::new(),
        handed: Vec::new(),
        waiting: BTreeMap::new(),
    };
    let schools = plan.schools();
    let receivers = plan.receivers();
    let answers: [Answers; 2] = [
        serde_json::from_str(SAM_ANSWERS)?,
        serde_json::from_str(NOOR_ANSWERS)?,
    ];
    let drafts = [
        draft_from_answers("pvs-mbo-v1", &answers[0])?,
        draft_from_answers("pvs-mbo-v1", &answers[1])?,
    ];
    let first = school_days(plan.school_year)
        .first()
        .copied()
        .context("a school year has school days")?;
    let last = time::Date::from_calendar_date(plan.school_year + 1, time::Month::July, 31)?;
    let march = (1..=7)
        .filter_map(|d| {
            time::Date::from_calendar_date(plan.school_year + 1, time::Month::March, d).ok()
        })
        .find(|d| d.weekday() == time::Weekday::Monday)
        .context("March has a Monday")?;
    let back_from_march = march + time::Duration::days(21);
    let june = time::Date::from_calendar_date(plan.school_year + 1, time::Month::June, 1)?;
    // Withdrawals waiting for their day: (day, wallet, grant, handover).
    let mut withdrawals: Vec<(time::Date, Wallet, String, usize)> = Vec::new();
    // Intakes to plan from their day on, once the recipient has the passport: (day, grant,
    // handover).
    let mut intakes: Vec<(time::Date, String, usize)> = Vec::new();

    clock.set(midnight(first) + 8 * 3_600);
    if let Some(weekly) = plan.weekly() {
        year.stop(weekly).await?;
    }
    let mut next = 0;
    let mut day = first;
    while day <= last {
        // Morning: nodes that come back or go away today.
        clock.set(midnight(day) + 8 * 3_600);
        if Some(day) == Some(march)
            && let Some(org) = plan.away_in_march()
        {
            year.stop(org).await?;
        }
        if day == back_from_march
            && let Some(org) = plan.away_in_march()
        {
            year.start(org).await?;
        }
        if day == june
            && let Some(org) = plan.switched_off()
        {
            year.stop(org).await?;
        }
        // Ten o'clock: today's handovers.
        clock.set(midnight(day) + 10 * 3_600);
        while next < planned.len() && planned[next].day == day {
            let p = &planned[next];
            let (school, _) = schools[p.school];
            let (to, _, _) = receivers[p.to];
            let now = clock.now();
            let birth = format!("{}-{:02}", day.year() - 17, 1 + (next % 12));
            let api = year.api(school).await?;
            let wallet = register(api, &birth, &[]).await?;
            sign_passport(api, &wallet, &drafts[next % 2], None, now).await?;
            let consent_ends = if p.short_consent {
                now + 30 * DAY
            } else {
                midnight(time::Date::from_calendar_date(
                    plan.school_year + 1,
                    time::Month::October,
                    1,
                )?)
            };
            let grant = make_grant(
                &wallet,
                "pvs-mbo-v1",
                &GrantRequest {
                    to: to.into(),
                    sections: vec!["wie-ben-ik".into(), "wat-heb-ik-nodig".into()],
                    purpose: "intake".into(),
                    not_before: now - 60,
                    not_after: consent_ends,
                    live: false,
                    may_fetch: false,
                },
                None,
                now,
            )?;
            let grant_id = upload_grant(api, grant).await?;
            api.send_passport(SendPassportRequest {
                grant_id: grant_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(explain)?;
            let index = year.handed.len();
            year.handed.push(Handed {
                from: school.into(),
                to: to.into(),
                sent_at: now,
                picked_up_at: None,
                withdrawn_at: None,
                intake_at: None,
                consent_ends,
            });
            year.waiting.entry(to.into()).or_default().push(index);
            if let Some(after) = p.intake_after_days {
                intakes.push((day + time::Duration::days(after), grant_id.clone(), index));
            }
            if let Some(after) = p.withdraw_after_days {
                withdrawals.push((day + time::Duration::days(after), wallet, grant_id, index));
            }
            next += 1;
            progress(next, planned.len());
        }
        // Afternoon: students who withdraw today.
        clock.set(midnight(day) + 14 * 3_600);
        let (today, later): (Vec<_>, Vec<_>) =
            withdrawals.into_iter().partition(|(d, ..)| *d <= day);
        withdrawals = later;
        for (_, wallet, grant_id, index) in today {
            let now = clock.now();
            let signed = make_revocation(&wallet, &grant_id, None, now)?;
            revoke(year.api(&wallet.home_org).await?, signed).await?;
            year.handed[index].withdrawn_at = Some(now);
        }
        year.settle().await?;
        // Three o'clock: intakers plan the intakes due, where the passport is in and not
        // withdrawn; a recipient that is away plans them when it is back.
        clock.set(midnight(day) + 15 * 3_600);
        year.plan_intakes(&mut intakes, day).await?;
        year.settle().await?;
        // Friday, four o'clock: the weekly municipality collects.
        clock.set(midnight(day) + 16 * 3_600);
        if day.weekday() == time::Weekday::Friday
            && let Some(org) = plan.weekly()
        {
            year.start(org).await?;
            year.plan_intakes(&mut intakes, day).await?;
            year.stop(org).await?;
        }
        day = day.next_day().context("the calendar ends")?;
    }
    // The weekly municipality's last collection, before the summer.
    if let Some(org) = plan.weekly() {
        year.start(org).await?;
    }
    year.settle().await?;
    let handovers = year.handed;
    clock.reset();
    let period = crate::year::school_year_bounds(plan.school_year);
    Ok(Traffic {
        school_year: format!("{}-{}", plan.school_year, plan.school_year + 1),
        since: period.0,
        until: period.1,
        members,
        handovers,
    })
}

/// 1 August of `year` and of the year after, midnight UTC.
pub fn school_year_bounds(year: i32) -> (UnixTime, UnixTime) {
    let aug = |y| {
        time::Date::from_calendar_date(y, time::Month::August, 1)
            .map(midnight)
            .unwrap_or(0)
    };
    (aug(year), aug(year + 1))
}

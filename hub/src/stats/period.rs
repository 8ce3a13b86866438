//! The periods a coordinator accounts for: a school year ("2025-2026", from 1 August to 1 August)
//! and a calendar quarter ("2026-Q1"). Bounds are midnight UTC, like the days, weeks and months
//! the statistics count in.

use time::{Date, Month};

/// A period by name, with its bounds in Unix seconds (`since` included, `until` not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub name: String,
    pub since: i64,
    pub until: i64,
}

fn midnight(year: i32, month: u8) -> Option<i64> {
    let month = Month::try_from(month).ok()?;
    Some(
        Date::from_calendar_date(year, month, 1)
            .ok()?
            .midnight()
            .assume_utc()
            .unix_timestamp(),
    )
}

impl Period {
    /// The school year that starts on 1 August of `year`.
    pub fn school_year(year: i32) -> Option<Period> {
        Some(Period {
            name: format!("{year}-{}", year + 1),
            since: midnight(year, 8)?,
            until: midnight(year + 1, 8)?,
        })
    }

    /// Quarter `q` (1 to 4) of `year`.
    pub fn quarter(year: i32, q: u8) -> Option<Period> {
        if !(1..=4).contains(&q) {
            return None;
        }
        let start = 3 * (q - 1) + 1;
        let until = if q == 4 {
            midnight(year + 1, 1)?
        } else {
            midnight(year, start + 3)?
        };
        Some(Period {
            name: format!("{year}-Q{q}"),
            since: midnight(year, start)?,
            until,
        })
    }

    /// "2025-2026" or "2026-Q1"; an error names what is accepted.
    pub fn parse(name: &str) -> Result<Period, String> {
        let bad = || {
            format!(
                "unknown period {name:?}: name a school year (\"2025-2026\") or a quarter (\"2026-Q1\")"
            )
        };
        let (a, b) = name.split_once('-').ok_or_else(bad)?;
        let year: i32 = a.parse().map_err(|_| bad())?;
        if !(2000..=2200).contains(&year) {
            return Err(bad());
        }
        if let Some(q) = b.strip_prefix('Q') {
            return Period::quarter(year, q.parse().map_err(|_| bad())?).ok_or_else(bad);
        }
        if b.parse::<i32>().ok() != Some(year + 1) {
            return Err(bad());
        }
        Period::school_year(year).ok_or_else(bad)
    }

    /// What a coordinator can pick at `now`, newest first: this school year and the two before,
    /// each followed by the quarters that overlap it and have begun.
    pub fn choices(now: i64) -> Vec<Period> {
        let date = time::OffsetDateTime::from_unix_timestamp(now)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let this = if u8::from(date.month()) >= 8 {
            date.year()
        } else {
            date.year() - 1
        };
        let mut out = Vec::new();
        for year in (this - 2..=this).rev() {
            let Some(sy) = Period::school_year(year) else {
                continue;
            };
            out.push(sy.clone());
            for (y, q) in [(year + 1, 2), (year + 1, 1), (year, 4), (year, 3)] {
                if let Some(p) = Period::quarter(y, q)
                    && p.since < now
                    && p.until > sy.since
                    && p.since < sy.until
                    && !out.contains(&p)
                {
                    out.push(p);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn school_years_and_quarters_have_their_bounds() {
        let sy = Period::parse("2025-2026").unwrap();
        assert_eq!(sy.since, 1_754_006_400); // 2025-08-01
        assert_eq!(sy.until, 1_785_542_400); // 2026-08-01
        let q = Period::parse("2026-Q4").unwrap();
        assert_eq!(q.since, 1_790_812_800); // 2026-10-01
        assert_eq!(q.until, 1_798_761_600); // 2027-01-01
        for bad in [
            "2025-2027",
            "2026-Q5",
            "2026",
            "Q1-2026",
            "1900-1901",
            "2025-2026x",
        ] {
            let e = Period::parse(bad).unwrap_err();
            assert!(e.contains("school year"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_choices_are_school_years_with_their_begun_quarters() {
        let names: Vec<String> = Period::choices(1_796_601_600) // 2026-12-07
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            &names[..6],
            [
                "2026-2027",
                "2026-Q4",
                "2026-Q3",
                "2025-2026",
                "2026-Q2",
                "2026-Q1"
            ]
        );
        assert_eq!(names[8], "2024-2025");
        assert_eq!(names.len(), 13, "{names:?}");
    }
}

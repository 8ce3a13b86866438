//! The words people read in Overstap's pages, in Dutch and in English, from one catalogue
//! (`messages.toml`, compiled in): the node's web app and the hub's coordinators' dashboard both
//! take their texts from here. A page asks for a text by its key in the visitor's language: the
//! `lang` cookie when the visitor chose one, else the browser's `Accept-Language`, else Dutch.
//! Times and days read as people in the Netherlands read them, in Dutch local time.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use http::HeaderMap;
use http::header::{ACCEPT_LANGUAGE, COOKIE};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Nl,
    En,
}

impl Lang {
    /// The language tag, for `<html lang>` and the cookie.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Nl => "nl",
            Lang::En => "en",
        }
    }

    /// The other language, for the switch.
    pub fn other(self) -> Lang {
        match self {
            Lang::Nl => Lang::En,
            Lang::En => Lang::Nl,
        }
    }

    /// The visitor's language: the `lang` cookie, else the first of nl and en in
    /// `Accept-Language`, else Dutch.
    pub fn of(headers: &HeaderMap) -> Lang {
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("lang="));
        match cookie {
            Some("en") => return Lang::En,
            Some("nl") => return Lang::Nl,
            _ => {}
        }
        let accept = headers
            .get(ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        for range in accept.split(',') {
            let tag = range
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("nl") {
                return Lang::Nl;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::Nl
    }
}

#[derive(Debug, Deserialize)]
struct Entry {
    nl: String,
    en: String,
}

/// Every text whose key starts with `prefix`, in `lang`, by key: what a page's script needs.
pub fn all_with_prefix(lang: Lang, prefix: &str) -> BTreeMap<String, String> {
    CATALOGUE
        .keys()
        .filter(|k| k.starts_with(prefix))
        .map(|k| (k.clone(), t(lang, k)))
        .collect()
}

/// Whether the catalogue has a text under `key`.
pub fn has(key: &str) -> bool {
    CATALOGUE.contains_key(key)
}

static CATALOGUE: LazyLock<BTreeMap<String, Entry>> = LazyLock::new(|| {
    toml::from_str(include_str!("messages.toml")).expect("messages.toml is a valid catalogue")
});

/// The text `key` in `lang`. A key missing from the catalogue shows as itself, so a forgotten
/// text is seen on the page (and the catalogue test names it).
pub fn t(lang: Lang, key: &str) -> String {
    match CATALOGUE.get(key) {
        Some(e) => match lang {
            Lang::Nl => e.nl.clone(),
            Lang::En => e.en.clone(),
        },
        None => key.to_string(),
    }
}

/// [`t`] with `{name}` placeholders filled in.
pub fn tf(lang: Lang, key: &str, values: &[(&str, &str)]) -> String {
    let mut text = t(lang, key);
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

/// The Netherlands' offset from UTC at `at`, in hours: CET (1), or CEST (2) from the last
/// Sunday of March to the last Sunday of October, 01:00 UTC both.
fn dutch_offset_hours(at: i64) -> i64 {
    let Ok(utc) = time::OffsetDateTime::from_unix_timestamp(at) else {
        return 1;
    };
    let last_sunday = |month: time::Month| {
        let last = time::Date::from_calendar_date(utc.year(), month, 31).ok()?;
        let back = last.weekday().number_days_from_sunday() as i64;
        Some(
            (last - time::Duration::days(back))
                .with_hms(1, 0, 0)
                .ok()?
                .assume_utc(),
        )
    };
    match (
        last_sunday(time::Month::March),
        last_sunday(time::Month::October),
    ) {
        (Some(start), Some(end)) if utc >= start && utc < end => 2,
        _ => 1,
    }
}

/// `at` in Dutch local time.
fn local(at: i64) -> Option<time::OffsetDateTime> {
    let utc = time::OffsetDateTime::from_unix_timestamp(at).ok()?;
    Some(utc + time::Duration::hours(dutch_offset_hours(at)))
}

pub fn month_name(lang: Lang, month: time::Month) -> String {
    t(lang, "months")
        .split(',')
        .nth(u8::from(month) as usize - 1)
        .unwrap_or_default()
        .to_string()
}

/// `at` (Unix seconds) as people in the Netherlands read it, in their own time, e.g.
/// "9 december 2026 om 14:49".
pub fn when(lang: Lang, at: i64) -> String {
    let Some(local) = local(at) else {
        return at.to_string();
    };
    tf(
        lang,
        "date_time",
        &[
            ("day", &local.day().to_string()),
            ("month", &month_name(lang, local.month())),
            ("year", &local.year().to_string()),
            (
                "time",
                &format!("{:02}:{:02}", local.hour(), local.minute()),
            ),
        ],
    )
}

/// The day `at` falls on in the Netherlands, e.g. "1 augustus 2027".
pub fn day(lang: Lang, at: i64) -> String {
    match local(at) {
        Some(l) => format!("{} {} {}", l.day(), month_name(lang, l.month()), l.year()),
        None => at.to_string(),
    }
}

/// The moment `date` begins in the Netherlands (its midnight, Dutch time), in Unix seconds.
pub fn dutch_midnight(date: time::Date) -> i64 {
    let utc = date.midnight().assume_utc().unix_timestamp();
    // The offset at that moment; around a change the hour before tells the same.
    utc - 3600 * dutch_offset_hours(utc - 3600 * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_is_in_both_languages_with_the_same_placeholders() {
        assert!(CATALOGUE.len() > 40);
        let placeholders = |s: &str| {
            let mut p: Vec<String> = s
                .split('{')
                .skip(1)
                .filter_map(|x| x.split_once('}').map(|(n, _)| n.to_string()))
                .collect();
            p.sort();
            p.dedup();
            p
        };
        for (key, e) in CATALOGUE.iter() {
            assert!(!e.nl.trim().is_empty() && !e.en.trim().is_empty(), "{key}");
            assert_eq!(placeholders(&e.nl), placeholders(&e.en), "{key}");
        }
    }

    #[test]
    fn times_read_as_dutch_local_time_in_winter_and_in_summer() {
        // 2026-12-09 13:49 UTC is 14:49 in Amsterdam; 2026-07-01 12:00 UTC is 14:00.
        assert_eq!(when(Lang::Nl, 1_796_824_140), "9 december 2026 om 14:49");
        assert_eq!(when(Lang::En, 1_782_907_200), "1 July 2026 at 14:00");
        // Summer time starts at 01:00 UTC on the last Sunday of March (2026-03-29).
        assert_eq!(when(Lang::Nl, 1_774_745_940), "29 maart 2026 om 01:59");
        assert_eq!(when(Lang::Nl, 1_774_746_000), "29 maart 2026 om 03:00");
    }

    #[test]
    fn a_day_begins_at_dutch_midnight() {
        let d = time::Date::from_calendar_date(2027, time::Month::August, 1).unwrap();
        // 2027-07-31 22:00 UTC is midnight in Amsterdam in summer.
        assert_eq!(dutch_midnight(d), 1_817_071_200);
        assert_eq!(day(Lang::Nl, dutch_midnight(d)), "1 augustus 2027");
        let w = time::Date::from_calendar_date(2027, time::Month::January, 15).unwrap();
        assert_eq!(
            when(Lang::Nl, dutch_midnight(w)),
            "15 januari 2027 om 00:00"
        );
    }

    #[test]
    fn the_language_follows_the_cookie_then_the_browser() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::of(&h), Lang::Nl);
        h.insert(ACCEPT_LANGUAGE, "en-GB,en;q=0.9,nl;q=0.8".parse().unwrap());
        assert_eq!(Lang::of(&h), Lang::En);
        h.insert(COOKIE, "a=b; lang=nl".parse().unwrap());
        assert_eq!(Lang::of(&h), Lang::Nl);
    }
}

//! Dates as the user says them, read on the user's calendar: what the model
//! is told about now, and how the tools read a `due_date`. A plain date
//! (`2026-12-03`) is a day; a local date-time without offset
//! (`2026-12-03T09:00`) is read in the user's time zone; an RFC 3339
//! date-time with an offset is taken as is; and a few words the model may
//! pass through (`today`, `tomorrow`, `friday`, `next friday`, `in 2 weeks`)
//! are resolved from the user's today, never from UTC's.

use chrono::{
    Datelike, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, TimeZone, Weekday,
};

use taskpilot_chatkit::context::Caller;

/// What the model is told about the moment and place of the conversation.
pub fn context_note(caller: &Caller) -> String {
    let now = caller.local_now();
    let today = caller.today();
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let locale = caller
        .locale
        .as_deref()
        .map(|l| {
            format!("\n- The user's language: {l}. Answer in it unless the user writes in another.")
        })
        .unwrap_or_default();
    format!(
        "Context (from the user's device):\n\
         - Now: {weekday} {date} {time}, time zone {zone} (UTC{offset}).\n\
         - Today: {today}. Tomorrow: {tomorrow}. This week: {monday} to {sunday} (Monday to Sunday).{locale}\n\
         Read relative dates (\"tomorrow\", \"next Friday\", \"in two weeks\") on this calendar. \
         For due_date pass a date (YYYY-MM-DD) for a day, or a local date-time (YYYY-MM-DDTHH:MM) \
         for a time of day: it is read in the user's time zone.",
        weekday = now.format("%A"),
        date = today,
        time = now.format("%H:%M"),
        zone = caller.zone.name(),
        offset = now.format("%:z"),
        tomorrow = today + Duration::days(1),
        sunday = monday + Duration::days(6),
    )
}

/// A due date as the domain takes it (`2026-12-03` or an RFC 3339 date-time
/// in UTC), from what the model passed.
pub fn due_date(raw: &str, caller: &Caller) -> Result<String, String> {
    let text = raw.trim();
    if let Some(day) = relative_day(text, caller.today()) {
        return Ok(day.format("%Y-%m-%d").to_string());
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok());
    let Some(local) = naive else {
        // A plain date or an RFC 3339 date-time: the domain checks it.
        return Ok(text.to_owned());
    };
    match caller.zone.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        LocalResult::None => Err(format!(
            "{text} does not exist in {} (the clocks skip it)",
            caller.zone.name()
        )),
    }
}

/// A date-only bound (`due_before`) from a date or a relative day.
pub fn day(raw: &str, caller: &Caller) -> Option<NaiveDate> {
    let text = raw.trim();
    relative_day(text, caller.today()).or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
}

/// `today`, `tomorrow`, `the day after tomorrow`, `yesterday`, a weekday
/// (the next one after today; `this friday` may be today), `next week`
/// (next Monday), `next month` (its first day), `in N days|weeks|months`.
fn relative_day(text: &str, today: NaiveDate) -> Option<NaiveDate> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    match words.as_slice() {
        ["today" | "tonight"] => Some(today),
        ["tomorrow"] => today.succ_opt(),
        ["yesterday"] => today.pred_opt(),
        ["the", "day", "after", "tomorrow"] | ["day", "after", "tomorrow"] => {
            Some(today + Duration::days(2))
        }
        ["next", "week"] => {
            Some(today + Duration::days(7 - i64::from(today.weekday().num_days_from_monday())))
        }
        ["next", "month"] => today
            .with_day(1)
            .and_then(|first| first.checked_add_months(Months::new(1))),
        ["this", name] => weekday(name).map(|w| next_weekday(today, w, true)),
        ["next" | "on", name] | [name] => weekday(name).map(|w| next_weekday(today, w, false)),
        ["in", count, unit] => {
            let n = number(count)?;
            match unit.trim_end_matches('s') {
                "day" => Some(today + Duration::days(n)),
                "week" => Some(today + Duration::weeks(n)),
                "month" => today.checked_add_months(Months::new(u32::try_from(n).ok()?)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn next_weekday(today: NaiveDate, day: Weekday, today_counts: bool) -> NaiveDate {
    let ahead = (7 + i64::from(day.num_days_from_monday())
        - i64::from(today.weekday().num_days_from_monday()))
        % 7;
    let ahead = if ahead == 0 && !today_counts {
        7
    } else {
        ahead
    };
    today + Duration::days(ahead)
}

fn weekday(name: &str) -> Option<Weekday> {
    let name = name.trim_end_matches(',');
    if name.len() < 3 {
        return None;
    }
    [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ]
    .into_iter()
    .find(|w| {
        let full = match w {
            Weekday::Mon => "monday",
            Weekday::Tue => "tuesday",
            Weekday::Wed => "wednesday",
            Weekday::Thu => "thursday",
            Weekday::Fri => "friday",
            Weekday::Sat => "saturday",
            Weekday::Sun => "sunday",
        };
        full.starts_with(name)
    })
}

fn number(word: &str) -> Option<i64> {
    const WORDS: [&str; 12] = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve",
    ];
    if let Ok(n) = word.parse::<i64>() {
        return (0..=366).contains(&n).then_some(n);
    }
    match word {
        "a" | "an" => Some(1),
        other => WORDS.iter().position(|w| *w == other).map(|i| i as i64 + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpilot_domain::UserId;

    /// A user in `zone` at the UTC instant `at`.
    fn caller(zone: taskpilot_chatkit::zone::Zone, at: &str) -> Caller {
        Caller::new(UserId::new("alice").unwrap())
            .in_zone(zone)
            .at(at.parse().unwrap())
    }

    /// 22:00 on Wednesday 2 December in Honolulu (UTC-10): already Thursday in UTC.
    fn honolulu() -> Caller {
        caller(
            taskpilot_chatkit::zone::Zone::named("Pacific/Honolulu").unwrap(),
            "2026-12-03T08:00:00Z",
        )
    }

    /// 00:30 on Thursday 3 December on Kiritimati (UTC+14): still Wednesday in UTC.
    fn kiritimati() -> Caller {
        caller(
            taskpilot_chatkit::zone::Zone::named("Pacific/Kiritimati").unwrap(),
            "2026-12-02T10:30:00Z",
        )
    }

    #[test]
    fn tomorrow_is_the_users_tomorrow_at_both_edges_of_the_day() {
        assert_eq!(due_date("tomorrow", &honolulu()).unwrap(), "2026-12-03");
        assert_eq!(due_date("Tomorrow", &kiritimati()).unwrap(), "2026-12-04");
        assert_eq!(due_date("today", &honolulu()).unwrap(), "2026-12-02");
        assert_eq!(due_date("today", &kiritimati()).unwrap(), "2026-12-03");
    }

    #[test]
    fn weekdays_and_spans_count_from_the_users_today() {
        // Honolulu's today is a Wednesday, Kiritimati's a Thursday.
        assert_eq!(due_date("next friday", &honolulu()).unwrap(), "2026-12-04");
        assert_eq!(due_date("friday", &kiritimati()).unwrap(), "2026-12-04");
        assert_eq!(due_date("thursday", &kiritimati()).unwrap(), "2026-12-10");
        assert_eq!(
            due_date("this thursday", &kiritimati()).unwrap(),
            "2026-12-03"
        );
        assert_eq!(due_date("in two weeks", &honolulu()).unwrap(), "2026-12-16");
        assert_eq!(due_date("in 3 days", &kiritimati()).unwrap(), "2026-12-06");
        assert_eq!(due_date("next week", &honolulu()).unwrap(), "2026-12-07");
        assert_eq!(due_date("next month", &kiritimati()).unwrap(), "2027-01-01");
        assert_eq!(
            due_date("the day after tomorrow", &honolulu()).unwrap(),
            "2026-12-04"
        );
    }

    #[test]
    fn a_local_time_is_read_in_the_users_zone() {
        assert_eq!(
            due_date("2026-12-03T09:00", &honolulu()).unwrap(),
            "2026-12-03T19:00:00Z"
        );
        assert_eq!(
            due_date("2026-12-03 09:00", &kiritimati()).unwrap(),
            "2026-12-02T19:00:00Z"
        );
        // With an offset or as a plain date it passes through unchanged.
        assert_eq!(
            due_date("2026-12-03T09:00:00+01:00", &honolulu()).unwrap(),
            "2026-12-03T09:00:00+01:00"
        );
        assert_eq!(due_date("2026-12-24", &honolulu()).unwrap(), "2026-12-24");
        // A time the clocks skip is refused, not moved.
        let paris = caller(
            taskpilot_chatkit::zone::Zone::named("Europe/Paris").unwrap(),
            "2027-03-20T12:00:00Z",
        );
        assert!(due_date("2027-03-28T02:30", &paris).is_err());
    }

    #[test]
    fn the_model_is_told_the_users_day_time_zone_and_language() {
        let note = context_note(&honolulu().with_locale(Some("fr-FR".into())));
        assert!(
            note.contains(
                "Now: Wednesday 2026-12-02 22:00, time zone Pacific/Honolulu (UTC-10:00)"
            ),
            "{note}"
        );
        assert!(
            note.contains("Today: 2026-12-02. Tomorrow: 2026-12-03."),
            "{note}"
        );
        assert!(
            note.contains("This week: 2026-11-30 to 2026-12-06"),
            "{note}"
        );
        assert!(note.contains("language: fr-FR"), "{note}");
        let note = context_note(&kiritimati());
        assert!(
            note.contains(
                "Now: Thursday 2026-12-03 00:30, time zone Pacific/Kiritimati (UTC+14:00)"
            ),
            "{note}"
        );
        assert!(!note.contains("language"), "{note}");
    }

    #[test]
    fn due_before_takes_words_or_dates() {
        assert_eq!(
            day("next week", &kiritimati()).unwrap().to_string(),
            "2026-12-07"
        );
        assert_eq!(
            day("2026-12-31", &honolulu()).unwrap().to_string(),
            "2026-12-31"
        );
        assert_eq!(day("soon", &honolulu()), None);
    }

    #[test]
    fn every_relative_day_counts_from_the_users_wednesday() {
        // Honolulu's today: Wednesday 2026-12-02.
        for (words, expected) in [
            ("yesterday", Some("2026-12-01")),
            ("tonight", Some("2026-12-02")),
            ("day after tomorrow", Some("2026-12-04")),
            ("on friday", Some("2026-12-04")),
            ("fri", Some("2026-12-04")),
            ("Friday,", Some("2026-12-04")),
            ("wed", Some("2026-12-09")),
            ("this wed", Some("2026-12-02")),
            ("in a month", Some("2027-01-02")),
            ("in 2 months", Some("2027-02-02")),
            ("in one week", Some("2026-12-09")),
            ("in twelve days", Some("2026-12-14")),
            ("in 366 days", Some("2027-12-03")),
            ("in 0 days", Some("2026-12-02")),
            // Too short to tell a weekday by, or not a count we read.
            ("fr", None),
            ("in thirteen days", None),
            ("in 367 days", None),
            ("in -1 days", None),
            ("in two hours", None),
            ("in 2 fortnights", None),
        ] {
            assert_eq!(
                day(words, &honolulu()).map(|d| d.to_string()).as_deref(),
                expected,
                "{words}"
            );
        }
    }
}

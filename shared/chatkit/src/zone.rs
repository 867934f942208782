//! The user's time zone: an IANA zone of the tz database compiled into the
//! binary (jiff's bundled copy, the zones as TZif data parsed on first use),
//! usable as a chrono `TimeZone`. chrono-tz, which this replaces, compiled
//! every transition of every zone into tables of pointers: 1.9 MB of binary and
//! ~29,000 relocations the loader applied at every cold start.

use std::fmt;

use chrono::{FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone};
use jiff::tz::AmbiguousOffset;

/// An IANA time zone (or UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone(jiff::tz::TimeZone);

impl Zone {
    /// UTC.
    pub fn utc() -> Self {
        Self(jiff::tz::TimeZone::UTC)
    }

    /// The zone an IANA name (`Europe/Paris`, case-insensitive) names, if any.
    pub fn named(name: &str) -> Option<Self> {
        jiff::tz::TimeZone::get(name).ok().map(Self)
    }

    /// The zone's IANA name (`UTC` for UTC).
    pub fn name(&self) -> &str {
        self.0.iana_name().unwrap_or("UTC")
    }

    fn offset_at(&self, utc: &NaiveDateTime) -> ZoneOffset {
        let at = utc.and_utc();
        let instant = jiff::Timestamp::new(at.timestamp(), 0).unwrap_or(if at.timestamp() < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        });
        self.with_offset(self.0.to_offset(instant))
    }

    fn with_offset(&self, offset: jiff::tz::Offset) -> ZoneOffset {
        ZoneOffset {
            zone: self.clone(),
            // jiff's offsets are within ±25:59:59, chrono's within ±24h; real zones are well inside.
            fixed: FixedOffset::east_opt(offset.seconds()).unwrap_or_else(|| chrono::Utc.fix()),
        }
    }
}

/// The offset of a [`Zone`] at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneOffset {
    zone: Zone,
    fixed: FixedOffset,
}

impl chrono::Offset for ZoneOffset {
    fn fix(&self) -> FixedOffset {
        self.fixed
    }
}

impl fmt::Display for ZoneOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fixed, f)
    }
}

impl TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Self {
        offset.zone.clone()
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> LocalResult<ZoneOffset> {
        self.offset_from_local_datetime(&local.and_time(chrono::NaiveTime::MIN))
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> LocalResult<ZoneOffset> {
        use chrono::{Datelike, Timelike};
        let civil = i16::try_from(local.year()).ok().and_then(|year| {
            jiff::civil::DateTime::new(
                year,
                local.month() as i8,
                local.day() as i8,
                local.hour() as i8,
                local.minute() as i8,
                local.second().min(59) as i8,
                0,
            )
            .ok()
        });
        let Some(civil) = civil else {
            return LocalResult::None;
        };
        match self.0.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => {
                LocalResult::Single(self.with_offset(offset))
            }
            // Clocks went back: the earlier moment has the offset before the change.
            AmbiguousOffset::Fold { before, after } => {
                LocalResult::Ambiguous(self.with_offset(before), self.with_offset(after))
            }
            AmbiguousOffset::Gap { .. } => LocalResult::None,
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        self.offset_at(&utc.and_time(chrono::NaiveTime::MIN))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        self.offset_at(utc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(rfc3339: &str) -> NaiveDateTime {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .naive_utc()
    }

    /// The offset of `zone` at the start of `year` (UTC), in seconds.
    fn offset_in_year(zone: &str, year: i32) -> i32 {
        let utc = NaiveDate::from_ymd_opt(year, 1, 1)
            .unwrap()
            .and_time(chrono::NaiveTime::MIN);
        Zone::named(zone)
            .unwrap()
            .offset_from_utc_datetime(&utc)
            .fix()
            .local_minus_utc()
    }

    #[test]
    fn instants_beyond_the_tz_range_take_its_nearest_end() {
        // Paris before railway time: local mean time, +00:09:21.
        assert_eq!(offset_in_year("Europe/Paris", -100_000), 9 * 60 + 21);
        // Far ahead: the rule of today's winters, +01:00.
        assert_eq!(offset_in_year("Europe/Paris", 100_000), 3600);
    }

    #[test]
    fn an_offset_shows_as_hours_and_minutes() {
        let offset = Zone::named("Asia/Kolkata")
            .unwrap()
            .offset_from_utc_datetime(&at("2026-12-07T00:00:00Z"));
        assert_eq!(offset.to_string(), "+05:30");
    }

    fn offset(zone: &str, utc: &str) -> i32 {
        Zone::named(zone)
            .unwrap()
            .offset_from_utc_datetime(&at(utc))
            .fix()
            .local_minus_utc()
    }

    #[test]
    fn names_are_iana_zones() {
        assert_eq!(Zone::named("Europe/Paris").unwrap().name(), "Europe/Paris");
        assert_eq!(Zone::named("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::utc().name(), "UTC");
        assert!(Zone::named("Mars/Olympus_Mons").is_none());
        assert!(Zone::named("").is_none());
        assert!(Zone::named("../../etc/passwd").is_none());
    }

    #[test]
    fn offsets_follow_daylight_saving_time() {
        assert_eq!(offset("Europe/Paris", "2026-01-15T12:00:00Z"), 3600);
        assert_eq!(offset("Europe/Paris", "2026-07-15T12:00:00Z"), 7200);
        assert_eq!(
            offset("America/New_York", "2026-07-15T12:00:00Z"),
            -4 * 3600
        );
        assert_eq!(
            offset("Pacific/Kiritimati", "2026-07-15T12:00:00Z"),
            14 * 3600
        );
        assert_eq!(
            offset("Asia/Kolkata", "2026-07-15T12:00:00Z"),
            5 * 3600 + 1800
        );
        // Hawaii kept -10:30 from 1896 to 1947.
        assert_eq!(
            offset("Pacific/Honolulu", "1900-01-01T00:00:00Z"),
            -(10 * 3600 + 30 * 60)
        );
    }

    #[test]
    fn local_times_in_a_gap_do_not_exist_and_in_a_fold_come_twice() {
        let paris = Zone::named("Europe/Paris").unwrap();
        let local = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap();
        assert_eq!(
            paris.from_local_datetime(&local("2026-03-29T02:30")),
            LocalResult::None
        );
        let LocalResult::Ambiguous(first, second) =
            paris.from_local_datetime(&local("2026-10-25T02:30"))
        else {
            panic!("02:30 on 2026-10-25 comes twice in Paris");
        };
        assert_eq!(
            first.with_timezone(&Utc).to_rfc3339(),
            "2026-10-25T00:30:00+00:00"
        );
        assert_eq!(
            second.with_timezone(&Utc).to_rfc3339(),
            "2026-10-25T01:30:00+00:00"
        );
        let LocalResult::Single(noon) = paris.from_local_datetime(&local("2026-12-03T12:00"))
        else {
            panic!("noon exists");
        };
        assert_eq!(noon.to_rfc3339(), "2026-12-03T12:00:00+01:00");
        assert_eq!(
            noon.with_timezone(&Utc).to_rfc3339(),
            "2026-12-03T11:00:00+00:00"
        );
    }

    #[test]
    fn a_date_time_in_a_zone_formats_its_offset() {
        let tokyo = Zone::named("Asia/Tokyo").unwrap();
        let now = at("2026-12-03T00:30:00Z").and_utc().with_timezone(&tokyo);
        assert_eq!(
            now.format("%Y-%m-%d %H:%M %:z").to_string(),
            "2026-12-03 09:30 +09:00"
        );
        assert_eq!(now.date_naive().to_string(), "2026-12-03");
    }
}

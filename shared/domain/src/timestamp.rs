//! RFC 3339 timestamps with millisecond precision, always in UTC (`Z`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// The current time truncated to whole milliseconds, so it round-trips exactly.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Formats a timestamp as `2026-11-22T10:00:00.123Z`.
pub fn format(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde adapter: `#[serde(with = "timestamp")]`.
pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(ts))
}

/// Serde adapter: `#[serde(with = "timestamp")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

/// Serde adapter for optional timestamps: `#[serde(with = "timestamp::option")]`.
pub mod option {
    use super::*;

    /// Serializes `None` as `null`.
    pub fn serialize<S: Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => super::serialize(ts, s),
            None => s.serialize_none(),
        }
    }

    /// Accepts `null`, a missing value or an RFC 3339 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Stamped {
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
        #[serde(default, with = "crate::timestamp::option")]
        done: Option<DateTime<Utc>>,
    }

    #[test]
    fn timestamps_are_utc_to_the_millisecond() {
        let at: DateTime<Utc> = "2026-11-22T11:00:00.123456+01:00".parse().unwrap();
        assert_eq!(format(&at), "2026-11-22T10:00:00.123Z");
        let now = now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn timestamps_round_trip_with_and_without_a_value() {
        let at: DateTime<Utc> = "2026-11-22T10:00:00.123Z".parse().unwrap();
        let both = Stamped { at, done: Some(at) };
        let json = serde_json::to_value(&both).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"at": "2026-11-22T10:00:00.123Z", "done": "2026-11-22T10:00:00.123Z"})
        );
        assert_eq!(serde_json::from_value::<Stamped>(json).unwrap(), both);
        let open = Stamped { at, done: None };
        let json = serde_json::to_value(&open).unwrap();
        assert_eq!(json["done"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Stamped>(json).unwrap(), open);
        assert!(serde_json::from_value::<Stamped>(serde_json::json!({"at": "yesterday"})).is_err());
    }
}

//! The task model as clients see it.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::timestamp;

/// A task id: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// A new id, strictly greater than every id this process made before
    /// (monotonic within a millisecond), so creation order is listing order.
    pub fn generate() -> Self {
        static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
        let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
        let ulid = generator
            .get_or_insert_with(ulid::Generator::new)
            .generate()
            .unwrap_or_else(|_| ulid::Ulid::new());
        Self(ulid.to_string())
    }

    /// Parses a client-supplied id; anything that is not a ULID is rejected.
    pub fn parse(raw: &str) -> Option<Self> {
        ulid::Ulid::from_string(raw)
            .ok()
            .map(|u| Self(u.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Task priority; `medium` unless set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Do first.
    High,
}

/// A due date: either a calendar date or an instant (normalised to UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueDate {
    /// `2026-11-23`
    Date(NaiveDate),
    /// `2026-11-23T15:00:00Z`
    DateTime(DateTime<Utc>),
}

impl DueDate {
    /// The canonical string form; it sorts chronologically against other due dates
    /// and against a plain date (a date-time on day D sorts after the date D).
    pub fn canonical(&self) -> String {
        match self {
            DueDate::Date(d) => d.format("%Y-%m-%d").to_string(),
            DueDate::DateTime(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }
}

impl FromStr for DueDate {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.len() == 10 {
            return NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .map(DueDate::Date)
                .map_err(|_| format!("`{raw}` is not a valid date (YYYY-MM-DD)"));
        }
        DateTime::parse_from_rfc3339(raw)
            .map(|t| DueDate::DateTime(t.with_timezone(&Utc)))
            .map_err(|_| {
                format!("`{raw}` is not an RFC 3339 date (2026-11-23) or date-time (2026-11-23T15:00:00Z)")
            })
    }
}

impl Serialize for DueDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical())
    }
}

impl<'de> Deserialize<'de> for DueDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A task, exactly as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Time-sortable id (ULID), set by the server.
    pub id: TaskId,
    /// 1–200 characters, trimmed.
    pub title: String,
    /// Up to 4,000 characters.
    pub description: Option<String>,
    /// Whether the task is done.
    pub completed: bool,
    /// `low`, `medium` or `high`.
    pub priority: Priority,
    /// Optional date or date-time.
    pub due_date: Option<DueDate>,
    /// Up to 10 distinct tags.
    pub tags: Vec<String>,
    /// Creation time.
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    #[serde(with = "timestamp")]
    pub updated_at: DateTime<Utc>,
    /// When the task was completed; `null` while open.
    #[serde(with = "timestamp::option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Starts at 1 and grows by one on every change.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_displays_as_itself() {
        let id = TaskId::generate();
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(id.as_str().len(), 26);
    }
}

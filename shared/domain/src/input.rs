//! Client input for creating and changing tasks, and the rules that validate it.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::error::DomainError;
use crate::ports::TaskChange;
use crate::task::{DueDate, Priority};

/// Longest title, in characters, after trimming.
pub const TITLE_MAX: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX: usize = 4_000;
/// Most tags on one task.
pub const TAGS_MAX: usize = 10;
/// Longest tag, in characters.
pub const TAG_MAX: usize = 32;

/// The body of a create request, before validation. Server-owned fields
/// (`id`, timestamps, `version`, owner) are not part of it, so sending them fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTaskInput {
    /// Required.
    pub title: String,
    /// Optional; `null` or empty means none.
    #[serde(default)]
    pub description: Option<String>,
    /// Defaults to `false`.
    #[serde(default)]
    pub completed: bool,
    /// Defaults to `medium`; `null` is refused.
    #[serde(default, deserialize_with = "priority")]
    pub priority: Option<Priority>,
    /// RFC 3339 date or date-time.
    #[serde(default)]
    pub due_date: Option<DueDate>,
    /// Up to 10 tags; `null` is refused.
    #[serde(default, deserialize_with = "not_null")]
    pub tags: Option<Vec<String>>,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTask {
    /// Trimmed title.
    pub title: String,
    /// Description, if any.
    pub description: Option<String>,
    /// Initial completion state.
    pub completed: bool,
    /// Priority.
    pub priority: Priority,
    /// Due date.
    pub due_date: Option<DueDate>,
    /// Normalised tags.
    pub tags: Vec<String>,
}

impl NewTaskInput {
    /// Applies the validation rules.
    pub fn validate(self) -> Result<NewTask, DomainError> {
        Ok(NewTask {
            title: validate_title(&self.title)?,
            description: validate_description(self.description)?,
            completed: self.completed,
            priority: self.priority.unwrap_or_default(),
            due_date: self.due_date,
            tags: validate_tags(self.tags.unwrap_or_default())?,
        })
    }
}

impl NewTask {
    /// A stable fingerprint of the request, used to match idempotent retries.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    }
}

/// The body of a PATCH request, before validation. Absent fields stay as they
/// are; `null` clears `description` and `due_date` and is refused elsewhere.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatchInput {
    /// New title.
    #[serde(default, deserialize_with = "not_null")]
    pub title: Option<String>,
    /// New description; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    /// New completion state.
    #[serde(default, deserialize_with = "not_null")]
    pub completed: Option<bool>,
    /// New priority.
    #[serde(default, deserialize_with = "priority")]
    pub priority: Option<Priority>,
    /// New due date; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub due_date: Option<Option<DueDate>>,
    /// New tags (replaces the list).
    #[serde(default, deserialize_with = "not_null")]
    pub tags: Option<Vec<String>>,
    /// The version the client last saw (alternative to `If-Match`).
    #[serde(default, deserialize_with = "not_null")]
    pub version: Option<u64>,
}

impl TaskPatchInput {
    /// Applies the validation rules; returns the change and the expected
    /// version.
    pub fn validate(self) -> Result<(TaskChange, Option<u64>), DomainError> {
        let patch = TaskChange {
            title: self.title.as_deref().map(validate_title).transpose()?,
            description: self.description.map(validate_description).transpose()?,
            completed: self.completed,
            priority: self.priority,
            due_date: self.due_date,
            tags: self.tags.map(validate_tags).transpose()?,
        };
        if patch == TaskChange::default() {
            return Err(DomainError::validation(
                "body",
                "name at least one of title, description, completed, priority, due_date, tags",
            ));
        }
        Ok((patch, self.version))
    }
}

/// A client's `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a raw header value.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::validation(
                "Idempotency-Key",
                "must be 1-255 visible ASCII characters (a UUID is a good choice)",
            ))
        }
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Trims the title and checks its length and characters.
pub fn validate_title(raw: &str) -> Result<String, DomainError> {
    let title = raw.trim();
    let len = title.chars().count();
    if len == 0 {
        return Err(DomainError::validation("title", "must not be empty"));
    }
    if len > TITLE_MAX {
        return Err(DomainError::validation(
            "title",
            format!("must be at most {TITLE_MAX} characters (got {len})"),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(DomainError::validation(
            "title",
            "must not contain control characters",
        ));
    }
    Ok(title.to_owned())
}

/// Checks the description; an empty one means none. Newlines and tabs are allowed.
pub fn validate_description(raw: Option<String>) -> Result<Option<String>, DomainError> {
    let Some(text) = raw.filter(|d| !d.trim().is_empty()) else {
        return Ok(None);
    };
    let len = text.chars().count();
    if len > DESCRIPTION_MAX {
        return Err(DomainError::validation(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters (got {len})"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(DomainError::validation(
            "description",
            "must not contain control characters other than newlines and tabs",
        ));
    }
    Ok(Some(text))
}

/// Trims tags, drops exact duplicates and checks count, length and characters.
pub fn validate_tags(raw: Vec<String>) -> Result<Vec<String>, DomainError> {
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for (i, tag) in raw.iter().enumerate() {
        let tag = tag.trim();
        let len = tag.chars().count();
        if len == 0 || len > TAG_MAX {
            return Err(DomainError::validation(
                format!("tags[{i}]"),
                format!("must be 1-{TAG_MAX} characters"),
            ));
        }
        if tag.chars().any(char::is_control) {
            return Err(DomainError::validation(
                format!("tags[{i}]"),
                "must not contain control characters",
            ));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > TAGS_MAX {
        return Err(DomainError::validation(
            "tags",
            format!("at most {TAGS_MAX} tags are allowed (got {})", tags.len()),
        ));
    }
    Ok(tags)
}

/// Deserializes a field that may be absent (`None`), `null` (`Some(None)`) or set.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A field that may be left out but, when sent, must not be `null`.
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A priority, read as a string so that any other JSON type (`null`
/// included) is a type error on the field: serde_json reports an enum given
/// a number as a syntax error, which would read as malformed JSON.
fn priority<'de, D>(d: D) -> Result<Option<Priority>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = String::deserialize(d)?;
    Priority::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&raw)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<NewTask, DomainError> {
        let parsed: NewTaskInput = serde_json::from_str(json)
            .map_err(|e| DomainError::validation("json", e.to_string()))?;
        parsed.validate()
    }

    fn field_of(err: DomainError) -> String {
        match err {
            DomainError::Validation { field, .. } => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn title_is_trimmed_and_defaults_apply() {
        let t = input(r#"{"title":"  buy milk  "}"#).unwrap();
        assert_eq!(t.title, "buy milk");
        assert_eq!(t.priority, Priority::Medium);
        assert!(!t.completed);
        assert!(t.tags.is_empty());
        assert_eq!(t.description, None);
    }

    #[test]
    fn null_is_refused_where_a_field_cannot_be_empty() {
        for body in [
            r#"{"title":"a","priority":null}"#,
            r#"{"title":"a","tags":null}"#,
        ] {
            assert!(
                serde_json::from_str::<NewTaskInput>(body).is_err(),
                "{body}"
            );
        }
        for body in [
            r#"{"title":null}"#,
            r#"{"completed":null}"#,
            r#"{"priority":null}"#,
            r#"{"tags":null}"#,
            r#"{"version":null}"#,
        ] {
            assert!(
                serde_json::from_str::<TaskPatchInput>(body).is_err(),
                "{body}"
            );
        }
        let cleared: TaskPatchInput =
            serde_json::from_str(r#"{"description":null,"due_date":null}"#).unwrap();
        assert_eq!(cleared.description, Some(None));
        assert_eq!(cleared.due_date, Some(None));
        let absent: NewTaskInput = serde_json::from_str(r#"{"title":"a"}"#).unwrap();
        assert_eq!((absent.priority, absent.tags), (None, None));
    }

    #[test]
    fn title_rules() {
        assert_eq!(field_of(input(r#"{"title":"   "}"#).unwrap_err()), "title");
        let long = "é".repeat(201);
        assert_eq!(
            field_of(input(&format!(r#"{{"title":"{long}"}}"#)).unwrap_err()),
            "title"
        );
        // 200 multi-byte characters are fine: the limit counts characters, not bytes.
        let ok = "🚀".repeat(200);
        assert_eq!(input(&format!(r#"{{"title":"{ok}"}}"#)).unwrap().title, ok);
        assert_eq!(
            field_of(input(r#"{"title":"a\u0000b"}"#).unwrap_err()),
            "title"
        );
        assert_eq!(field_of(input(r#"{"title":"a\nb"}"#).unwrap_err()), "title");
    }

    #[test]
    fn description_rules() {
        let ok = "x".repeat(4000);
        assert!(input(&format!(r#"{{"title":"t","description":"{ok}"}}"#)).is_ok());
        let long = "x".repeat(4001);
        let err = input(&format!(r#"{{"title":"t","description":"{long}"}}"#)).unwrap_err();
        assert_eq!(field_of(err), "description");
        assert!(input(r#"{"title":"t","description":"line\nnext\ttab"}"#).is_ok());
        let err = input(r#"{"title":"t","description":"bell\u0007"}"#).unwrap_err();
        assert_eq!(field_of(err), "description");
        assert_eq!(
            input(r#"{"title":"t","description":""}"#)
                .unwrap()
                .description,
            None
        );
    }

    #[test]
    fn tag_rules() {
        let t = input(r#"{"title":"t","tags":[" home ","home","work"]}"#).unwrap();
        assert_eq!(t.tags, vec!["home", "work"]);
        // Exactly the limits pass; one more fails.
        let ten: Vec<String> = (0..10).map(|i| format!("\"t{i}\"")).collect();
        let t = input(&format!(r#"{{"title":"t","tags":[{}]}}"#, ten.join(","))).unwrap();
        assert_eq!(t.tags.len(), TAGS_MAX);
        let t = input(&format!(r#"{{"title":"t","tags":["{}"]}}"#, "é".repeat(32))).unwrap();
        assert_eq!(t.tags[0].chars().count(), TAG_MAX);
        let eleven: Vec<String> = (0..11).map(|i| format!("\"t{i}\"")).collect();
        let err = input(&format!(r#"{{"title":"t","tags":[{}]}}"#, eleven.join(","))).unwrap_err();
        assert_eq!(field_of(err), "tags");
        let err = input(&format!(r#"{{"title":"t","tags":["{}"]}}"#, "x".repeat(33))).unwrap_err();
        assert_eq!(field_of(err), "tags[0]");
        assert_eq!(
            field_of(input(r#"{"title":"t","tags":["ok",""]}"#).unwrap_err()),
            "tags[1]"
        );
    }

    #[test]
    fn due_dates_parse_and_normalise() {
        let t = input(r#"{"title":"t","due_date":"2026-11-23"}"#).unwrap();
        assert_eq!(t.due_date.unwrap().canonical(), "2026-11-23");
        let t = input(r#"{"title":"t","due_date":"2026-11-23T20:00:00-05:00"}"#).unwrap();
        assert_eq!(t.due_date.unwrap().canonical(), "2026-11-24T01:00:00Z");
        assert!(input(r#"{"title":"t","due_date":"tomorrow"}"#).is_err());
        assert!(input(r#"{"title":"t","due_date":"2026-02-30"}"#).is_err());
    }

    #[test]
    fn server_fields_are_rejected() {
        for field in [
            "id",
            "created_at",
            "updated_at",
            "completed_at",
            "version",
            "user_id",
        ] {
            let json = format!(r#"{{"title":"t","{field}":"x"}}"#);
            assert!(
                serde_json::from_str::<NewTaskInput>(&json).is_err(),
                "{field}"
            );
        }
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let p: TaskPatchInput = serde_json::from_str(r#"{"due_date":null}"#).unwrap();
        let (patch, version) = p.validate().unwrap();
        assert_eq!(patch.due_date, Some(None));
        assert_eq!(patch.description, None);
        assert_eq!(version, None);
        let p: TaskPatchInput = serde_json::from_str(r#"{"title":"x","version":3}"#).unwrap();
        assert_eq!(p.validate().unwrap().1, Some(3));
        let empty: TaskPatchInput = serde_json::from_str(r#"{"version":3}"#).unwrap();
        assert!(empty.validate().is_err());
    }

    #[test]
    fn fingerprint_ignores_formatting() {
        let a = input(r#"{"title":"t","tags":["a"]}"#).unwrap();
        let b = input(r#"{ "tags" : ["a"], "title" : " t " }"#).unwrap();
        let c = input(r#"{"title":"u","tags":["a"]}"#).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn priority_of_the_wrong_type_is_a_type_error() {
        use serde_json::error::Category;
        let p: NewTaskInput = serde_json::from_str(r#"{"title":"t","priority":"high"}"#).unwrap();
        assert_eq!(p.priority, Some(Priority::High));
        let p: TaskPatchInput = serde_json::from_str(r#"{"priority":"low"}"#).unwrap();
        assert_eq!(p.priority, Some(Priority::Low));
        for bad in [
            "5",
            "1.5",
            "true",
            "null",
            "[]",
            "{}",
            r#""urgent""#,
            r#""HIGH""#,
        ] {
            let json = format!(r#"{{"title":"t","priority":{bad}}}"#);
            let err = serde_json::from_str::<NewTaskInput>(&json).unwrap_err();
            assert_eq!(err.classify(), Category::Data, "{bad}: {err}");
            let json = format!(r#"{{"priority":{bad}}}"#);
            let err = serde_json::from_str::<TaskPatchInput>(&json).unwrap_err();
            assert_eq!(err.classify(), Category::Data, "{bad}: {err}");
        }
    }

    #[test]
    fn idempotency_keys() {
        let key = "6f1c2b1e-7d1f-4c5e-9a55-0c6a1f1f2b3c";
        assert_eq!(IdempotencyKey::parse(key).unwrap().as_str(), key);
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }
}

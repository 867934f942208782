//! The stored shape of tasks and idempotency records.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use taskpilot_domain::{DueDate, Priority, StoreError, Task, TaskId, search};

use crate::keys;

/// A stored row: attribute name → value.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// The folded title, searched by `GET /api/v1/tasks?q=`.
pub const SEARCH_TITLE: &str = "search_title";
/// The folded tags, one per line; absent when the task has none.
pub const SEARCH_TAGS: &str = "search_tags";

/// A task row: the task's fields, its keys and its folded search text
/// ([`SEARCH_TITLE`], [`SEARCH_TAGS`]). Rows written before search existed have
/// no search text; the list's filter falls back to their raw title and tags.
#[derive(Serialize, Deserialize)]
struct TaskItem {
    pk: String,
    sk: String,
    id: TaskId,
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    completed: bool,
    priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_date: Option<DueDate>,
    #[serde(default)]
    tags: Vec<String>,
    created_at: String,
    updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    search_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    search_tags: Option<String>,
}

/// Converts a task into a row of `pk`'s partition.
pub fn task_to_item(pk: String, task: &Task) -> Result<Item, StoreError> {
    let row = TaskItem {
        pk,
        sk: keys::task_sk(&task.id),
        id: task.id.clone(),
        title: task.title.clone(),
        description: task.description.clone(),
        completed: task.completed,
        priority: task.priority,
        due_date: task.due_date,
        tags: task.tags.clone(),
        created_at: taskpilot_domain::timestamp::format(&task.created_at),
        updated_at: taskpilot_domain::timestamp::format(&task.updated_at),
        completed_at: task
            .completed_at
            .as_ref()
            .map(taskpilot_domain::timestamp::format),
        version: task.version,
        search_title: Some(search::fold(&task.title)),
        search_tags: search_tags(&task.tags),
    };
    serde_dynamo::to_item(row).map_err(|e| StoreError::Internal(format!("task encoding: {e}")))
}

/// The stored [`SEARCH_TAGS`] of these tags: `None` (no attribute) for none.
pub fn search_tags(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| search::fold_tags(tags))
}

/// Reads a task row.
pub fn task_from_item(item: Item) -> Result<Task, StoreError> {
    let row: TaskItem = serde_dynamo::from_item(item)
        .map_err(|e| StoreError::Internal(format!("unreadable task row: {e}")))?;
    let ts = |raw: &str| {
        chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| StoreError::Internal(format!("unreadable timestamp `{raw}`: {e}")))
    };
    Ok(Task {
        id: row.id,
        title: row.title,
        description: row.description,
        completed: row.completed,
        priority: row.priority,
        due_date: row.due_date,
        tags: row.tags,
        created_at: ts(&row.created_at)?,
        updated_at: ts(&row.updated_at)?,
        completed_at: row.completed_at.as_deref().map(ts).transpose()?,
        version: row.version,
    })
}

/// Builds the idempotency record stored next to a created task.
pub fn idempotency_to_item(
    pk: String,
    sk: String,
    fingerprint: &str,
    task_row: Item,
    ttl: i64,
) -> Item {
    let mut item = keys::key(pk, sk);
    item.insert("fingerprint".into(), AttributeValue::S(fingerprint.into()));
    item.insert("task".into(), AttributeValue::M(task_row));
    item.insert(keys::TTL.into(), AttributeValue::N(ttl.to_string()));
    item
}

/// Reads an idempotency record: `(fingerprint, task)`.
pub fn idempotency_from_item(mut item: Item) -> Result<(String, Task), StoreError> {
    let fingerprint = match item.remove("fingerprint") {
        Some(AttributeValue::S(f)) => f,
        _ => {
            return Err(StoreError::Internal(
                "idempotency record without fingerprint".into(),
            ));
        }
    };
    let task = match item.remove("task") {
        Some(AttributeValue::M(row)) => task_from_item(row)?,
        _ => {
            return Err(StoreError::Internal(
                "idempotency record without task".into(),
            ));
        }
    };
    Ok((fingerprint, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_rows_round_trip_without_nulls() {
        let now = taskpilot_domain::timestamp::now();
        let task = Task {
            id: TaskId::generate(),
            title: "t".into(),
            description: None,
            completed: false,
            priority: Priority::High,
            due_date: Some("2026-11-23".parse().unwrap()),
            tags: vec!["a".into()],
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
        };
        let item = task_to_item("USER#u".into(), &task).unwrap();
        assert!(!item.values().any(|v| matches!(v, AttributeValue::Null(_))));
        assert!(!item.contains_key("description"));
        assert_eq!(item["priority"], AttributeValue::S("high".into()));
        assert_eq!(task_from_item(item).unwrap(), task);
    }

    #[test]
    fn task_rows_carry_their_folded_search_text() {
        let now = taskpilot_domain::timestamp::now();
        let mut task = Task {
            id: TaskId::generate(),
            title: "Buy ΟΔΟΣ Milk".into(),
            description: Some("Not Searched".into()),
            completed: false,
            priority: Priority::Low,
            due_date: None,
            tags: vec!["Home".into(), "ERRANDS".into()],
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
        };
        let item = task_to_item("USER#u".into(), &task).unwrap();
        assert_eq!(
            item[SEARCH_TITLE],
            AttributeValue::S("buy οδοσ milk".into())
        );
        assert_eq!(item[SEARCH_TAGS], AttributeValue::S("home\nerrands".into()));
        task.tags.clear();
        let item = task_to_item("USER#u".into(), &task).unwrap();
        assert!(!item.contains_key(SEARCH_TAGS), "no tags, no attribute");
        // A row without search text (written before search existed) still reads.
        let mut legacy = item.clone();
        legacy.remove(SEARCH_TITLE);
        assert_eq!(task_from_item(legacy).unwrap(), task);
    }

    fn sample_task() -> Task {
        let at = "2026-03-07T10:00:00Z".parse().unwrap();
        Task {
            id: TaskId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap(),
            title: "Pay rent".into(),
            description: Some("by transfer".into()),
            completed: true,
            priority: Priority::Medium,
            due_date: None,
            tags: vec![],
            created_at: at,
            updated_at: at,
            completed_at: Some(at),
            version: 3,
        }
    }

    fn idempotency_record(task: &Task) -> Item {
        let row = task_to_item("USER#u".into(), task).unwrap();
        idempotency_to_item(
            "USER#u".into(),
            "IDEMPOTENCY#TASK#k".into(),
            "fp-1",
            row,
            1_700_000_000,
        )
    }

    #[test]
    fn a_task_row_is_keyed_by_the_given_partition_and_its_task_sort_key() {
        let task = sample_task();
        let item = task_to_item("USER#u".into(), &task).unwrap();
        assert_eq!(item["pk"], AttributeValue::S("USER#u".into()));
        assert_eq!(item["sk"], AttributeValue::S(keys::task_sk(&task.id)));
    }

    #[test]
    fn no_tags_have_no_search_tags() {
        assert_eq!(search_tags(&[]), None);
    }

    #[test]
    fn search_tags_are_the_folded_tags_one_per_line() {
        let tags = vec!["Home".to_owned(), "ΟΔΟΣ".to_owned()];
        assert_eq!(search_tags(&tags), Some("home\nοδοσ".to_owned()));
    }

    #[test]
    fn a_row_with_an_unreadable_timestamp_is_an_internal_error() {
        let mut item = task_to_item("USER#u".into(), &sample_task()).unwrap();
        item.insert("updated_at".into(), AttributeValue::S("yesterday".into()));
        assert!(matches!(task_from_item(item), Err(StoreError::Internal(_))));
    }

    #[test]
    fn an_idempotency_record_holds_its_key_fingerprint_task_row_and_expiry() {
        let task = sample_task();
        let row = task_to_item("USER#u".into(), &task).unwrap();
        let item = idempotency_record(&task);
        assert_eq!(
            item,
            HashMap::from([
                ("pk".to_owned(), AttributeValue::S("USER#u".into())),
                (
                    "sk".to_owned(),
                    AttributeValue::S("IDEMPOTENCY#TASK#k".into())
                ),
                ("fingerprint".to_owned(), AttributeValue::S("fp-1".into())),
                ("task".to_owned(), AttributeValue::M(row)),
                ("ttl".to_owned(), AttributeValue::N("1700000000".into())),
            ])
        );
    }

    #[test]
    fn an_idempotency_record_reads_back_as_its_fingerprint_and_task() {
        let task = sample_task();
        let (fingerprint, read) = idempotency_from_item(idempotency_record(&task)).unwrap();
        assert_eq!(fingerprint, "fp-1");
        assert_eq!(read, task);
    }

    #[test]
    fn a_broken_idempotency_record_is_an_internal_error() {
        let breaks: [(&str, Option<AttributeValue>); 4] = [
            ("fingerprint", None),
            ("fingerprint", Some(AttributeValue::N("1".into()))),
            ("task", None),
            ("task", Some(AttributeValue::M(HashMap::new()))),
        ];
        for (name, value) in breaks {
            let mut item = idempotency_record(&sample_task());
            match value.clone() {
                None => item.remove(name),
                Some(v) => item.insert(name.into(), v),
            };
            assert!(
                matches!(idempotency_from_item(item), Err(StoreError::Internal(_))),
                "{name}: {value:?}"
            );
        }
    }
}

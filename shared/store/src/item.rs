//! The stored shape of tasks and idempotency records.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use taskpilot_domain::{DueDate, Priority, StoreError, Task, TaskId};

use crate::keys;

type Item = HashMap<String, AttributeValue>;

/// A task row: the task's fields plus its keys.
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
    };
    serde_dynamo::to_item(row).map_err(|e| StoreError::Internal(format!("task encoding: {e}")))
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
}

//! Mentions: the composer's `input_tag` content naming a task (`data.task_id`,
//! else the tag's `id`) gives the model that task's current fields, read as
//! the caller. A tag naming a task the caller cannot see (deleted, or
//! another user's: the read is scoped to the caller, so it is simply absent)
//! is reported as unavailable. Tags that name no task stay plain text.

use serde_json::json;

use taskpilot_domain::{DomainError, TaskId, TaskRepository, TaskService, UserId};

use taskpilot_chatkit::model::ModelInput;
use taskpilot_chatkit::types::{ItemKind, ThreadItem, UserContent};

/// Most mentions resolved in one message.
const MAX_MENTIONS: usize = 10;

/// The task ids a user message's tags name, with the tag's text.
pub fn mentioned(message: &ThreadItem) -> Vec<(TaskId, String)> {
    let ItemKind::UserMessage { content, .. } = &message.kind else {
        return Vec::new();
    };
    let mut ids: Vec<(TaskId, String)> = Vec::new();
    for part in content {
        let UserContent::InputTag { id, text, data, .. } = part else {
            continue;
        };
        let named = data
            .get("task_id")
            .and_then(|v| v.as_str())
            .unwrap_or(id.as_str());
        if let Some(task_id) = TaskId::parse(named)
            && !ids.iter().any(|(known, _)| *known == task_id)
        {
            ids.push((task_id, text.clone()));
        }
    }
    ids.truncate(MAX_MENTIONS);
    ids
}

/// What the model is told about the tasks `message` mentions: `None` when it
/// mentions none. A storage failure is reported as such, never guessed.
pub async fn context<R: TaskRepository>(
    tasks: &TaskService<R>,
    user: &UserId,
    message: &ThreadItem,
) -> Option<ModelInput> {
    let mentions = mentioned(message);
    if mentions.is_empty() {
        return None;
    }
    let mut described = Vec::with_capacity(mentions.len());
    for (id, text) in mentions {
        let entry = match tasks.get(user, &id).await {
            Ok(task) => json!({"mentioned_as": text, "task": task}),
            Err(DomainError::NotFound(_)) => json!({"mentioned_as": text, "task_id": id,
                "unavailable": "this task does not exist (deleted, or not one of the user's tasks)"}),
            Err(e) => {
                tracing::warn!(error = %e, "a mentioned task could not be read");
                json!({"mentioned_as": text, "task_id": id,
                       "unavailable": "task storage could not be read right now"})
            }
        };
        described.push(entry);
    }
    Some(ModelInput::user(format!(
        "The tasks I mentioned with @, as they are now: {}",
        serde_json::Value::Array(described)
    )))
}

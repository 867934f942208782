//! What the page hears while the assistant works: a `progress_update` line
//! before each tool runs ("Creating “Buy milk”…"), and one `client_effect`
//! named `tasks.changed` after a turn or widget action that created, changed
//! or deleted tasks, so the task list beside the chat refreshes only those.

use serde_json::{Map, Value, json};

use taskpilot_domain::{Task, TaskId};

use taskpilot_chatkit::types::StreamEvent;

use super::tools::Tool;

/// The effect's name (ChatKit's `onEffect` receives it).
pub const TASKS_CHANGED: &str = "tasks.changed";

/// Longest title quoted in a progress line.
const TITLE_CHARS: usize = 60;

/// How one tool call changed a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new task.
    Created,
    /// Fields or state of an existing task.
    Updated,
    /// The task is gone.
    Deleted,
}

/// The tasks a run changed, each id in one list: a task created and then
/// changed is `created`; one changed and then deleted is `deleted`; one
/// created and deleted within the run never reached the page and is left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskChanges {
    created: Vec<TaskId>,
    updated: Vec<TaskId>,
    deleted: Vec<TaskId>,
}

impl TaskChanges {
    /// Records one change.
    pub fn record(&mut self, id: &TaskId, change: Change) {
        let created = self.created.contains(id);
        match change {
            Change::Created if !created => self.created.push(id.clone()),
            Change::Updated if !created && !self.updated.contains(id) => {
                self.updated.push(id.clone());
            }
            Change::Deleted => {
                self.created.retain(|t| t != id);
                self.updated.retain(|t| t != id);
                if !created && !self.deleted.contains(id) {
                    self.deleted.push(id.clone());
                }
            }
            _ => {}
        }
    }

    /// Whether the run created or changed task `id` (and did not delete it).
    pub fn changed(&self, id: &TaskId) -> bool {
        self.created.contains(id) || self.updated.contains(id)
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }

    /// The `tasks.changed` effect, when something changed.
    pub fn effect(&self) -> Option<StreamEvent> {
        if self.is_empty() {
            return None;
        }
        let mut data = Map::new();
        for (key, ids) in [
            ("created", &self.created),
            ("updated", &self.updated),
            ("deleted", &self.deleted),
        ] {
            data.insert(key.into(), json!(ids));
        }
        Some(StreamEvent::ClientEffect {
            name: TASKS_CHANGED.into(),
            data,
        })
    }
}

/// The progress line shown while tool `name` runs. The title comes from the
/// arguments (`title`, else the task named by `task_id` among the tasks the
/// run already saw, else `task`, the title the user said); no extra read.
pub fn progress(name: &str, arguments: &str, known: &[Task]) -> StreamEvent {
    let args: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
    let title = args["title"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            let id = args["task_id"].as_str()?;
            known
                .iter()
                .find(|t| t.id.as_str() == id)
                .map(|t| t.title.clone())
        })
        .or_else(|| args["task"].as_str().map(str::to_owned))
        .map(|t| quoted(&t));
    let named = |verb: &str| match &title {
        Some(title) => format!("{verb} {title}…"),
        None => format!("{verb} the task…"),
    };
    let (icon, text) = match Tool::parse(name) {
        Some(Tool::ListTasks) => ("search", "Looking at your tasks…".to_owned()),
        Some(Tool::CreateTask) => ("plus", named("Creating")),
        Some(Tool::UpdateTask) => ("write", named("Updating")),
        Some(Tool::CompleteTask) => ("check-circle", named("Completing")),
        Some(Tool::ReopenTask) => ("reload", named("Reopening")),
        Some(Tool::DeleteTask) => ("lucide:trash-2", named("Deleting")),
        None => ("sparkle", "Working…".to_owned()),
    };
    StreamEvent::ProgressUpdate {
        icon: Some(icon.into()),
        text,
    }
}

/// `“title”`, cut to a readable length.
fn quoted(title: &str) -> String {
    let clean: String = title.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= TITLE_CHARS {
        return format!("“{clean}”");
    }
    let cut: String = clean.chars().take(TITLE_CHARS - 1).collect();
    format!("“{}…”", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TaskId {
        TaskId::parse(&format!("01KB000000000000000000000{n}")).unwrap()
    }

    fn data(changes: &TaskChanges) -> Value {
        match changes.effect() {
            Some(StreamEvent::ClientEffect { name, data }) => {
                assert_eq!(name, TASKS_CHANGED);
                Value::Object(data)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_task_is_listed_once_under_its_net_change() {
        let mut c = TaskChanges::default();
        assert_eq!(c.effect(), None);
        c.record(&id(1), Change::Created);
        c.record(&id(1), Change::Updated);
        c.record(&id(2), Change::Updated);
        c.record(&id(2), Change::Updated);
        c.record(&id(3), Change::Updated);
        c.record(&id(3), Change::Deleted);
        assert_eq!(
            data(&c),
            json!({"created": [id(1)], "updated": [id(2)], "deleted": [id(3)]})
        );
        // Created and deleted in the same run: the page never saw it.
        c.record(&id(1), Change::Deleted);
        assert_eq!(
            data(&c),
            json!({"created": [], "updated": [id(2)], "deleted": [id(3)]})
        );
    }

    #[test]
    fn progress_names_the_task() {
        let text = |e: StreamEvent| match e {
            StreamEvent::ProgressUpdate { icon, text } => (icon.unwrap(), text),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(progress("create_task", r#"{"title":"Buy  milk"}"#, &[])),
            ("plus".into(), "Creating “Buy milk”…".into())
        );
        assert_eq!(
            text(progress("complete_task", r#"{"task_id":"x"}"#, &[])),
            ("check-circle".into(), "Completing the task…".into())
        );
        let long = "word ".repeat(40);
        let (_, line) = text(progress(
            "update_task",
            &json!({"title": long}).to_string(),
            &[],
        ));
        assert!(line.chars().count() < 80, "{line}");
    }

    #[test]
    fn a_task_created_twice_is_listed_once() {
        let mut c = TaskChanges::default();
        c.record(&id(1), Change::Created);
        c.record(&id(1), Change::Created);
        assert_eq!(
            data(&c),
            json!({"created": [id(1)], "updated": [], "deleted": []})
        );
    }

    #[test]
    fn each_tool_has_its_icon_and_verb() {
        let known = [serde_json::from_value::<Task>(json!({
            "id": id(7), "title": "Pay rent", "description": null, "completed": false,
            "priority": "medium", "due_date": null, "tags": [],
            "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z",
            "completed_at": null, "version": 1
        }))
        .unwrap()];
        let by_id = json!({"task_id": id(7)}).to_string();
        for (tool, arguments, icon, text) in [
            ("list_tasks", "{}", "search", "Looking at your tasks…"),
            (
                "update_task",
                by_id.as_str(),
                "write",
                "Updating “Pay rent”…",
            ),
            (
                "reopen_task",
                r#"{"task":"rent"}"#,
                "reload",
                "Reopening “rent”…",
            ),
            ("delete_task", "{}", "lucide:trash-2", "Deleting the task…"),
            ("dance", "{}", "sparkle", "Working…"),
        ] {
            assert_eq!(
                progress(tool, arguments, &known),
                StreamEvent::ProgressUpdate {
                    icon: Some(icon.into()),
                    text: text.into()
                },
                "{tool}"
            );
        }
    }

    #[test]
    fn a_title_is_cut_to_its_length_with_an_ellipsis() {
        let fits = "a".repeat(TITLE_CHARS);
        assert_eq!(quoted(&fits), format!("“{fits}”"));
        let over = "b".repeat(TITLE_CHARS + 1);
        assert_eq!(quoted(&over), format!("“{}…”", "b".repeat(TITLE_CHARS - 1)));
    }
}

//! The assistant's function tools. Each runs as the calling user through the
//! same task service as the REST API (same validation, same version checks);
//! failures become tool output the model can read, never user-facing errors.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::dates;
use crate::effects::Change;
use taskpilot_chatkit::context::Caller;
use taskpilot_chatkit::model::ToolSpec;

use taskpilot_domain::{
    DomainError, NewTaskInput, SearchText, Task, TaskFilter, TaskId, TaskPatchInput,
    TaskRepository, TaskService, UserId,
};

/// The client tool: the page shows a task (its `onClientTool` handler).
/// A call ends the turn with a pending `client_tool_call` item; the page's
/// output (`threads.add_client_tool_output`) starts the rest of the answer.
pub const SHOW_TASK: &str = "show_task";

/// The tools offered to the model (built once per process): the task tools,
/// then the client tool.
pub fn specs() -> &'static [ToolSpec] {
    static SPECS: std::sync::LazyLock<Vec<ToolSpec>> = std::sync::LazyLock::new(build_specs);
    &SPECS
}

fn build_specs() -> Vec<ToolSpec> {
    let task_id = json!({"type": "string", "description": "The task's id, as returned by list_tasks or create_task."});
    let task = json!({"type": "string", "description": "Instead of task_id: the task's title as the user said it (\"milk\"). When several tasks match, the user is asked which one."});
    let fields = json!({
        "title": {"type": "string", "description": "1-200 characters."},
        "description": {"type": ["string", "null"], "description": "Up to 4000 characters; null clears it."},
        "priority": {"type": "string", "enum": ["low", "medium", "high"]},
        "due_date": {"type": ["string", "null"], "description": "A day (YYYY-MM-DD), a local date-time in the user's time zone (YYYY-MM-DDTHH:MM), or an RFC 3339 date-time with offset; null clears it."},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10}
    });
    let with = |mut props: Value, extra: Value| {
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        props
    };
    let tool = |name, description, properties: Value, required: &[&str]| ToolSpec {
        name,
        description,
        parameters: json!({"type": "object", "properties": properties, "required": required,
                           "additionalProperties": false}),
    };
    vec![
        tool(
            Tool::ListTasks.name(),
            "List the user's tasks, newest first. Use it before answering any question about tasks.",
            json!({"completed": {"type": "boolean", "description": "Only done (true) or open (false) tasks."},
                    "tag": {"type": "string"},
                    "due_before": {"type": "string", "description": "Only tasks due before this day (YYYY-MM-DD, on the user's calendar)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100}}),
            &[],
        ),
        tool(
            Tool::CreateTask.name(),
            "Create a task for the user.",
            fields.clone(),
            &["title"],
        ),
        tool(
            Tool::UpdateTask.name(),
            "Change fields of a task. Pass version to avoid overwriting someone else's change.",
            with(
                fields,
                json!({"task_id": task_id, "task": task, "completed": {"type": "boolean"},
                       "version": {"type": "integer", "description": "The version you last saw."}}),
            ),
            &[],
        ),
        tool(
            Tool::CompleteTask.name(),
            "Mark a task done.",
            json!({"task_id": task_id, "task": task}),
            &[],
        ),
        tool(
            Tool::ReopenTask.name(),
            "Mark a done task open again.",
            json!({"task_id": task_id, "task": task}),
            &[],
        ),
        tool(
            Tool::DeleteTask.name(),
            "Delete a task for good.",
            json!({"task_id": task_id, "task": task}),
            &[],
        ),
        tool(
            SHOW_TASK,
            "Show a task to the user in the task list on their page (scrolls to it and \
             highlights it), when they ask to see, open or find one. The page answers whether \
             it could.",
            json!({"task_id": task_id}),
            &["task_id"],
        ),
    ]
}

/// The assistant's tools, by the names the model calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `list_tasks`.
    ListTasks,
    /// `create_task`.
    CreateTask,
    /// `update_task`.
    UpdateTask,
    /// `complete_task`.
    CompleteTask,
    /// `reopen_task`.
    ReopenTask,
    /// `delete_task`.
    DeleteTask,
}

impl Tool {
    /// Every tool, in the order they are offered.
    pub const ALL: [Tool; 6] = [
        Tool::ListTasks,
        Tool::CreateTask,
        Tool::UpdateTask,
        Tool::CompleteTask,
        Tool::ReopenTask,
        Tool::DeleteTask,
    ];

    /// The name the model calls it by.
    pub fn name(self) -> &'static str {
        match self {
            Tool::ListTasks => "list_tasks",
            Tool::CreateTask => "create_task",
            Tool::UpdateTask => "update_task",
            Tool::CompleteTask => "complete_task",
            Tool::ReopenTask => "reopen_task",
            Tool::DeleteTask => "delete_task",
        }
    }

    /// The tool named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tool| tool.name() == name)
    }
}

/// The result of one tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// JSON text handed back to the model.
    pub output: String,
    /// Tasks the call listed or changed (for the task widget).
    pub shown: Vec<Task>,
    /// The task the call created, changed or deleted.
    pub change: Option<(TaskId, Change)>,
    /// Several tasks matched the title the model passed: the user is asked.
    pub ask: Option<Ambiguous>,
}

/// A change that matched several tasks, to be asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct Ambiguous {
    /// The tool.
    pub tool: String,
    /// Its arguments without `task` (the chosen `task_id` is added later).
    pub arguments: Value,
    /// The matching tasks, newest first.
    pub candidates: Vec<Task>,
}

/// Most candidates offered in one question.
const MAX_CANDIDATES: usize = 8;
/// Most pages of title matches read (newest first, 100 a page).
const MAX_PAGES: usize = 3;

fn failure(e: &DomainError) -> Value {
    let (code, message) = match e {
        DomainError::Validation { field, message } => {
            ("validation_failed", format!("{field}: {message}"))
        }
        DomainError::NotFound(_) => ("not_found", "no such task".to_owned()),
        DomainError::VersionConflict { current } => (
            "version_conflict",
            format!(
                "the task changed meanwhile; it is now at version {}",
                current.version
            ),
        ),
        DomainError::Store(_) => (
            "unavailable",
            "task storage is unavailable; try again".to_owned(),
        ),
        other => ("failed", other.to_string()),
    };
    json!({"error": {"code": code, "message": message}})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    completed: Option<bool>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    due_before: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdArgs {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    task: Option<String>,
}

/// The one task a call is about, or the tasks its title matched.
enum Target {
    One(TaskId),
    Several(Vec<Task>),
}

/// The task named by `task_id`, else by `task` (a title as the user said it):
/// an exact title first, else every title containing the words; a completion
/// prefers open tasks and a reopening done ones.
async fn target<R: TaskRepository>(
    service: &TaskService<R>,
    user: &UserId,
    tool: &str,
    task_id: Option<&str>,
    task: Option<&str>,
) -> Result<Target, DomainError> {
    if let Some(raw) = task_id {
        return id(raw).map(Target::One);
    }
    let wanted = task
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DomainError::validation("task_id", "name the task by task_id or task"))?;
    // The store narrows by the longest word (the REST API's `q` search, one
    // Query per page); the other words are checked here.
    let words: Vec<&str> = wanted.split_whitespace().collect();
    let longest = words
        .iter()
        .max_by_key(|w| w.chars().count())
        .copied()
        .unwrap_or("");
    let search = SearchText::parse(longest)?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..MAX_PAGES {
        let page = service
            .list_matching(
                user,
                TaskFilter::default(),
                Some(search.clone()),
                100,
                cursor.as_deref(),
            )
            .await?;
        all.extend(page.tasks);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let exact: Vec<&Task> = all
        .iter()
        .filter(|t| t.title.to_lowercase() == wanted)
        .collect();
    let mut matches: Vec<Task> = if exact.len() == 1 {
        exact.into_iter().cloned().collect()
    } else {
        all.into_iter()
            .filter(|t| {
                let title = t.title.to_lowercase();
                words.iter().all(|w| title.contains(w))
            })
            .collect()
    };
    let preferred = match Tool::parse(tool) {
        Some(Tool::CompleteTask) => Some(false),
        Some(Tool::ReopenTask) => Some(true),
        _ => None,
    };
    if let Some(done) = preferred
        && matches.iter().any(|t| t.completed == done)
    {
        matches.retain(|t| t.completed == done);
    }
    match matches.len() {
        0 => Err(DomainError::NotFound("task")),
        1 => Ok(Target::One(matches.remove(0).id)),
        _ => {
            matches.truncate(MAX_CANDIDATES);
            Ok(Target::Several(matches))
        }
    }
}

/// The result that asks the user to choose among `candidates`.
fn ask(tool: &str, arguments: Value, candidates: Vec<Task>) -> ToolResult {
    let titles: Vec<&str> = candidates.iter().map(|t| t.title.as_str()).collect();
    ToolResult {
        output: json!({"asked_user": "Several tasks match; the user was asked which one.",
                       "candidates": titles})
        .to_string(),
        shown: Vec::new(),
        change: None,
        ask: Some(Ambiguous {
            tool: tool.to_owned(),
            arguments,
            candidates,
        }),
    }
}

/// Runs tool `name` with JSON `arguments` for the caller (dates on the
/// caller's calendar).
pub async fn run<R: TaskRepository>(
    service: &TaskService<R>,
    caller: &Caller,
    name: &str,
    arguments: &str,
) -> ToolResult {
    match execute(service, caller, name, arguments).await {
        Ok(result) => result,
        Err(e) => ToolResult {
            output: failure(&e).to_string(),
            shown: Vec::new(),
            change: None,
            ask: None,
        },
    }
}

fn args<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, DomainError> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| DomainError::validation("arguments", e.to_string()))
}

fn id(raw: &str) -> Result<TaskId, DomainError> {
    TaskId::parse(raw).ok_or(DomainError::NotFound("task"))
}

fn one(task: Task, change: Change) -> ToolResult {
    ToolResult {
        output: json!({"task": task}).to_string(),
        change: Some((task.id.clone(), change)),
        shown: vec![task],
        ask: None,
    }
}

/// The arguments as an object, `due_date` read on the caller's calendar.
fn with_local_due_date(raw: &str, caller: &Caller) -> Result<Value, DomainError> {
    let mut value: Value = args(raw)?;
    if let Some(due) = value.get_mut("due_date")
        && let Some(text) = due.as_str()
    {
        let resolved = dates::due_date(text, caller)
            .map_err(|message| DomainError::validation("due_date", message))?;
        *due = Value::String(resolved);
    }
    Ok(value)
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, DomainError> {
    serde_json::from_value(value).map_err(|e| DomainError::validation("arguments", e.to_string()))
}

async fn execute<R: TaskRepository>(
    service: &TaskService<R>,
    caller: &Caller,
    name: &str,
    arguments: &str,
) -> Result<ToolResult, DomainError> {
    let user: &UserId = &caller.user;
    let Some(tool) = Tool::parse(name) else {
        return Err(DomainError::validation(
            "name",
            format!("unknown tool `{name}`"),
        ));
    };
    match tool {
        Tool::ListTasks => {
            let a: ListArgs = args(arguments)?;
            let due_before = a
                .due_before
                .map(|d| {
                    dates::day(&d, caller)
                        .ok_or_else(|| DomainError::validation("due_before", "must be YYYY-MM-DD"))
                })
                .transpose()?;
            let filter = TaskFilter {
                completed: a.completed,
                tag: a.tag,
                due_before,
            };
            let listing = service
                .list(user, filter, a.limit.unwrap_or(50).clamp(1, 100), None)
                .await?;
            Ok(ToolResult {
                output: json!({"tasks": listing.tasks, "more": listing.next_cursor.is_some()})
                    .to_string(),
                shown: listing.tasks,
                change: None,
                ask: None,
            })
        }
        Tool::CreateTask => {
            let input: NewTaskInput = from_value(with_local_due_date(arguments, caller)?)?;
            let created = service.create(user, input.validate()?, None).await?;
            Ok(one(created.task, Change::Created))
        }
        Tool::UpdateTask => {
            let mut value = with_local_due_date(arguments, caller)?;
            let mut take = |key: &str| {
                value
                    .as_object_mut()
                    .and_then(|o| o.remove(key))
                    .and_then(|v| v.as_str().map(str::to_owned))
            };
            let (task_id, task) = (take("task_id"), take("task"));
            let input: TaskPatchInput = from_value(value.clone())?;
            let (patch, version) = input.validate()?;
            match target(service, user, name, task_id.as_deref(), task.as_deref()).await? {
                Target::One(task_id) => {
                    let task = service.update(user, &task_id, patch, version).await?;
                    Ok(one(task, Change::Updated))
                }
                Target::Several(candidates) => Ok(ask(name, value, candidates)),
            }
        }
        Tool::CompleteTask | Tool::ReopenTask => {
            let a: IdArgs = args(arguments)?;
            let done = tool == Tool::CompleteTask;
            match target(service, user, name, a.task_id.as_deref(), a.task.as_deref()).await? {
                Target::One(task_id) => {
                    let task = service.set_completed(user, &task_id, done).await?;
                    Ok(one(task, Change::Updated))
                }
                Target::Several(candidates) => Ok(ask(name, json!({}), candidates)),
            }
        }
        Tool::DeleteTask => {
            let a: IdArgs = args(arguments)?;
            let task_id =
                match target(service, user, name, a.task_id.as_deref(), a.task.as_deref()).await? {
                    Target::One(task_id) => task_id,
                    Target::Several(candidates) => return Ok(ask(name, json!({}), candidates)),
                };
            let task = service.delete(user, &task_id, None).await?;
            Ok(ToolResult {
                output: json!({"deleted": task.id}).to_string(),
                shown: Vec::new(),
                change: Some((task.id, Change::Deleted)),
                ask: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_offered_under_its_name_in_order_then_the_client_tool() {
        let offered: Vec<&str> = specs().iter().map(|spec| spec.name).collect();
        let mut names: Vec<&str> = Tool::ALL.into_iter().map(Tool::name).collect();
        names.push(SHOW_TASK);
        assert_eq!(offered, names);
        names.pop();
        assert_eq!(
            names,
            [
                "list_tasks",
                "create_task",
                "update_task",
                "complete_task",
                "reopen_task",
                "delete_task"
            ]
        );
        for tool in Tool::ALL {
            assert_eq!(Tool::parse(tool.name()), Some(tool));
        }
        assert_eq!(Tool::parse("drop_tables"), None);
    }
    use taskpilot_domain::CursorCodec;
    use taskpilot_domain::memory::InMemoryTasks;

    fn service() -> TaskService<InMemoryTasks> {
        TaskService::new(
            InMemoryTasks::default(),
            CursorCodec::new(&[3u8; 32], chrono::Duration::hours(1)).unwrap(),
        )
    }

    #[tokio::test]
    async fn tools_share_the_rest_rules() {
        let s = service();
        let u = Caller::new(UserId::new("alice").unwrap());
        let created = run(
            &s,
            &u,
            "create_task",
            r#"{"title":"buy milk","due_date":"2026-11-23"}"#,
        )
        .await;
        let task = created.shown[0].clone();
        assert_eq!(task.title, "buy milk");
        let bad = run(&s, &u, "create_task", r#"{"title":"   "}"#).await;
        assert!(bad.output.contains("validation_failed"), "{}", bad.output);
        assert!(
            run(&s, &u, "create_task", r#"{"title":"x","id":"forged"}"#)
                .await
                .output
                .contains("error")
        );
        let done = run(
            &s,
            &u,
            "complete_task",
            &format!(r#"{{"task_id":"{}"}}"#, task.id),
        )
        .await;
        assert!(done.shown[0].completed);
        let stale = run(
            &s,
            &u,
            "update_task",
            &format!(r#"{{"task_id":"{}","title":"y","version":1}}"#, task.id),
        )
        .await;
        assert!(
            stale.output.contains("version_conflict"),
            "{}",
            stale.output
        );
        let listed = run(&s, &u, "list_tasks", r#"{"completed":true}"#).await;
        assert_eq!(listed.shown.len(), 1);
        // Another user's task is invisible to the tools too.
        let bob = Caller::new(UserId::new("bob").unwrap());
        let other = run(
            &s,
            &bob,
            "delete_task",
            &format!(r#"{{"task_id":"{}"}}"#, task.id),
        )
        .await;
        assert!(other.output.contains("not_found"));
        let gone = run(
            &s,
            &u,
            "delete_task",
            &format!(r#"{{"task_id":"{}"}}"#, task.id),
        )
        .await;
        assert_eq!(gone.change, Some((task.id, Change::Deleted)));
        assert!(
            run(&s, &u, "drop_database", "{}")
                .await
                .output
                .contains("unknown tool")
        );
    }

    #[tokio::test]
    async fn due_dates_are_read_on_the_users_calendar() {
        let s = service();
        // 22:00 on 2 December in Honolulu is 08:00 on 3 December in UTC.
        let late = Caller::new(UserId::new("alice").unwrap())
            .in_zone(taskpilot_chatkit::zone::Zone::named("Pacific/Honolulu").unwrap())
            .at("2026-12-03T08:00:00Z".parse().unwrap());
        let milk = run(
            &s,
            &late,
            "create_task",
            r#"{"title":"milk","due_date":"tomorrow"}"#,
        )
        .await;
        assert_eq!(milk.shown[0].due_date.unwrap().canonical(), "2026-12-03");
        let call = run(
            &s,
            &late,
            "create_task",
            r#"{"title":"call","due_date":"2026-12-03T09:30"}"#,
        )
        .await;
        assert_eq!(
            call.shown[0].due_date.unwrap().canonical(),
            "2026-12-03T19:30:00Z"
        );
        let moved = run(
            &s,
            &late,
            "update_task",
            &format!(
                r#"{{"task_id":"{}","due_date":"friday"}}"#,
                milk.shown[0].id
            ),
        )
        .await;
        assert_eq!(moved.shown[0].due_date.unwrap().canonical(), "2026-12-04");
        let bad = run(
            &s,
            &late,
            "create_task",
            r#"{"title":"x","due_date":"someday"}"#,
        )
        .await;
        assert!(bad.output.contains("validation_failed"), "{}", bad.output);
        // 00:30 on 3 December on Kiritimati is still 2 December in UTC.
        let early = Caller::new(UserId::new("alice").unwrap())
            .in_zone(taskpilot_chatkit::zone::Zone::named("Pacific/Kiritimati").unwrap())
            .at("2026-12-02T10:30:00Z".parse().unwrap());
        let due = run(&s, &early, "list_tasks", r#"{"due_before":"tomorrow"}"#).await;
        let titles: Vec<&str> = due.shown.iter().map(|t| t.title.as_str()).collect();
        assert_eq!(titles, ["call"], "{}", due.output);
    }
}

//! The task-list widget's actions: each checked as the tools are (the
//! caller's own task, through the task service's validation) and only for a
//! task the widget shows, then the widget drawn again from the current tasks.

use serde_json::Value;

use taskpilot_chatkit::request::Action;
use taskpilot_chatkit::responder::ActionRefused;
use taskpilot_chatkit::types::{ItemKind, ThreadItem};
use taskpilot_domain::input::validate_title;
use taskpilot_domain::{
    DomainError, DueDate, Task, TaskChange, TaskId, TaskRepository, TaskService, UserId,
};

use crate::effects::Change;
use crate::widgets::{self, RowMode};

/// What an action did: the widget item drawn again (when it came from one)
/// and the task it changed, if any.
#[derive(Debug)]
pub struct Applied {
    /// The sender, redrawn.
    pub item: Option<ThreadItem>,
    /// The change to announce (`tasks.changed`).
    pub change: Option<(TaskId, Change)>,
}

/// What an action asks for.
enum Step {
    /// Complete (`true`) or reopen.
    Complete(bool),
    /// Draw the row in this mode; nothing changes.
    Show(RowMode),
    /// Rename and set or clear the due date.
    Save,
    /// Delete for good.
    Delete,
}

fn step(kind: &str) -> Result<Step, ActionRefused> {
    Ok(match kind {
        widgets::COMPLETE => Step::Complete(true),
        widgets::REOPEN => Step::Complete(false),
        widgets::EDIT => Step::Show(RowMode::Editing),
        widgets::ASK_DELETE => Step::Show(RowMode::ConfirmingDelete),
        widgets::CANCEL => Step::Show(RowMode::Shown),
        widgets::SAVE => Step::Save,
        widgets::DELETE => Step::Delete,
        other => return Err(ActionRefused(format!("unknown action `{other}`"))),
    })
}

fn refused(e: DomainError) -> ActionRefused {
    match e {
        DomainError::NotFound(_) => ActionRefused("that task no longer exists".into()),
        DomainError::Validation { field, message } => ActionRefused(format!("{field}: {message}")),
        other => ActionRefused(other.to_string()),
    }
}

/// The change a Save makes from the form's `title` and `due_date` (a day;
/// empty or absent clears it; the day the task already has keeps its time).
pub fn save_change(payload: &Value, task: &Task) -> Result<TaskChange, ActionRefused> {
    let title = payload["title"]
        .as_str()
        .ok_or_else(|| ActionRefused("title: enter a title".into()))?;
    let title = validate_title(title).map_err(refused)?;
    let due_date = match payload["due_date"].as_str().map(str::trim) {
        None | Some("") => (task.due_date.is_some()).then_some(None),
        Some(picked) => {
            let day: DueDate = picked
                .get(..10)
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| ActionRefused(format!("due_date: `{picked}` is not a day")))?;
            let same_day = task
                .due_date
                .is_some_and(|due| due.canonical().get(..10) == day.canonical().get(..10));
            (!same_day).then_some(Some(day))
        }
    };
    Ok(TaskChange {
        title: (title != task.title).then_some(title),
        due_date,
        ..TaskChange::default()
    })
}

/// Applies `action` from `sender` (a task-list widget, or none) as `user`.
pub async fn apply<R: TaskRepository>(
    tasks: &TaskService<R>,
    user: &UserId,
    sender: Option<&ThreadItem>,
    action: &Action,
) -> Result<Applied, ActionRefused> {
    let step = step(&action.kind)?;
    let task_id = action.payload["task_id"]
        .as_str()
        .and_then(TaskId::parse)
        .ok_or_else(|| ActionRefused("the action needs payload.task_id".into()))?;
    let tree = match sender.map(|s| &s.kind) {
        Some(ItemKind::Widget { widget, .. }) => Some(widget),
        _ => None,
    };
    let shown = tree.map(widgets::task_ids).unwrap_or_default();
    if tree.is_some() && !shown.iter().any(|id| id == task_id.as_str()) {
        return Err(ActionRefused("that task is not in this list".into()));
    }
    let (change, mode) = match step {
        Step::Complete(done) => {
            tasks
                .set_completed(user, &task_id, done)
                .await
                .map_err(refused)?;
            (Some(Change::Updated), RowMode::Shown)
        }
        Step::Show(mode) => {
            // Only the owner may open a task's form or confirmation.
            tasks.get(user, &task_id).await.map_err(refused)?;
            (None, mode)
        }
        Step::Save => {
            let task = tasks.get(user, &task_id).await.map_err(refused)?;
            let change = save_change(&action.payload, &task)?;
            if change != TaskChange::default() {
                tasks
                    .update(user, &task_id, change, None)
                    .await
                    .map_err(refused)?;
                (Some(Change::Updated), RowMode::Shown)
            } else {
                (None, RowMode::Shown)
            }
        }
        Step::Delete => {
            tasks.delete(user, &task_id, None).await.map_err(refused)?;
            (Some(Change::Deleted), RowMode::Shown)
        }
    };
    let change = change.map(|c| (task_id.clone(), c));
    let (Some(sender), Some(_)) = (sender, tree) else {
        return Ok(Applied { item: None, change });
    };
    let mut listed = Vec::new();
    for id in shown.iter().filter_map(|id| TaskId::parse(id)) {
        if let Ok(task) = tasks.get(user, &id).await {
            listed.push(task);
        }
    }
    let (widget, copy_text) = widgets::task_list_with(&listed, Some((&task_id, mode)));
    let item = ThreadItem {
        kind: ItemKind::Widget {
            widget,
            copy_text: Some(copy_text),
        },
        ..sender.clone()
    };
    Ok(Applied {
        item: Some(item),
        change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(due: Option<&str>) -> Task {
        serde_json::from_value(json!({
            "id": TaskId::generate().to_string(), "title": "buy milk", "description": null,
            "completed": false, "priority": "medium", "due_date": due, "tags": [],
            "created_at": "2026-12-07T10:00:00Z", "updated_at": "2026-12-07T10:00:00Z",
            "completed_at": null, "version": 1}))
        .unwrap()
    }

    #[test]
    fn every_widget_action_is_known_and_others_are_refused() {
        for kind in [
            widgets::COMPLETE,
            widgets::REOPEN,
            widgets::EDIT,
            widgets::ASK_DELETE,
            widgets::CANCEL,
            widgets::SAVE,
            widgets::DELETE,
        ] {
            assert!(step(kind).is_ok(), "{kind}");
        }
        assert!(matches!(step(widgets::COMPLETE), Ok(Step::Complete(true))));
        assert!(matches!(step(widgets::REOPEN), Ok(Step::Complete(false))));
        assert!(matches!(
            step(widgets::EDIT),
            Ok(Step::Show(RowMode::Editing))
        ));
        assert!(matches!(
            step(widgets::ASK_DELETE),
            Ok(Step::Show(RowMode::ConfirmingDelete))
        ));
        assert!(matches!(
            step(widgets::CANCEL),
            Ok(Step::Show(RowMode::Shown))
        ));
        assert!(matches!(step(widgets::SAVE), Ok(Step::Save)));
        assert!(matches!(step(widgets::DELETE), Ok(Step::Delete)));
        assert_eq!(
            step("task.explode").err(),
            Some(ActionRefused("unknown action `task.explode`".into()))
        );
    }

    #[test]
    fn a_save_renames_and_sets_the_picked_day() {
        let t = task(None);
        let change = save_change(
            &json!({"title": " oat milk ", "due_date": "2026-12-09T00:00:00.000Z"}),
            &t,
        )
        .unwrap();
        assert_eq!(change.title.as_deref(), Some("oat milk"));
        assert_eq!(change.due_date, Some(Some("2026-12-09".parse().unwrap())));
    }

    #[test]
    fn an_unchanged_form_changes_nothing() {
        let t = task(Some("2026-12-09"));
        let change = save_change(
            &json!({"title": "buy milk", "due_date": "2026-12-09T00:00:00"}),
            &t,
        )
        .unwrap();
        assert_eq!(change, TaskChange::default());
        // A timed due keeps its time when the picker shows its day.
        let timed = task(Some("2026-12-09T15:30:00Z"));
        let change = save_change(
            &json!({"title": "buy milk", "due_date": "2026-12-09"}),
            &timed,
        )
        .unwrap();
        assert_eq!(change.due_date, None);
    }

    #[test]
    fn an_empty_due_date_clears_it_only_when_there_is_one() {
        let with = task(Some("2026-12-09"));
        for empty in [
            json!({"title": "buy milk"}),
            json!({"title": "buy milk", "due_date": ""}),
        ] {
            assert_eq!(save_change(&empty, &with).unwrap().due_date, Some(None));
            assert_eq!(save_change(&empty, &task(None)).unwrap().due_date, None);
        }
    }

    #[test]
    fn a_bad_title_or_day_is_refused_with_its_field() {
        let t = task(None);
        for (payload, field) in [
            (json!({"due_date": "2026-12-09"}), "title"),
            (json!({"title": "   "}), "title"),
            (json!({"title": "x".repeat(201)}), "title"),
            (json!({"title": "ok", "due_date": "someday"}), "due_date"),
            (json!({"title": "ok", "due_date": "2026-13-45"}), "due_date"),
        ] {
            let err = save_change(&payload, &t).unwrap_err();
            assert!(err.0.starts_with(field), "{payload}: {}", err.0);
        }
    }
}

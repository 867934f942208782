//! The task-list widget: a Card listing tasks with Done / Undo buttons whose
//! actions (`task.complete` / `task.reopen`, payload `{"task_id"}`) come back
//! as `threads.custom_action`.

use serde_json::{Value, json};

use taskpilot_domain::Task;

/// Action that completes a task.
pub const COMPLETE: &str = "task.complete";
/// Action that reopens a task.
pub const REOPEN: &str = "task.reopen";

fn row(task: &Task) -> Value {
    let (icon, color, button, action, variant) = if task.completed {
        ("check-circle-filled", "success", "Undo", REOPEN, "ghost")
    } else {
        ("empty-circle", "secondary", "Done", COMPLETE, "outline")
    };
    let mut text = json!({"type": "Text", "value": task.title, "weight": "medium"});
    if task.completed {
        text["lineThrough"] = json!(true);
        text["color"] = json!("tertiary");
    }
    let mut col = vec![text];
    if let Some(due) = task.due_date {
        col.push(json!({"type": "Caption", "value": format!("Due {}", due.canonical())}));
    }
    json!({
        "type": "Row", "key": task.id, "gap": 2, "align": "center",
        "children": [
            {"type": "Icon", "name": icon, "color": color},
            {"type": "Col", "gap": 0, "children": col},
            {"type": "Spacer"},
            {"type": "Button", "label": button, "size": "sm", "variant": variant,
             "onClickAction": {"type": action, "payload": {"task_id": task.id}, "loadingBehavior": "self"}}
        ]
    })
}

/// The Card for `tasks`, and its clipboard text.
pub fn task_list(tasks: &[Task]) -> (Value, String) {
    let open = tasks.iter().filter(|t| !t.completed).count();
    let body = if tasks.is_empty() {
        vec![json!({"type": "Text", "value": "No tasks.", "color": "secondary"})]
    } else {
        tasks.iter().map(row).collect()
    };
    let widget = json!({
        "type": "Card", "size": "md",
        "children": [
            {"type": "Row", "align": "center", "children": [
                {"type": "Title", "value": "Tasks", "size": "sm"},
                {"type": "Spacer"},
                {"type": "Badge", "label": format!("{open} open"), "color": "info", "variant": "soft"}
            ]},
            {"type": "Divider", "spacing": 2},
            {"type": "Col", "gap": 2, "children": body}
        ]
    });
    let copy = tasks
        .iter()
        .map(|t| format!("{} {}", if t.completed { "[x]" } else { "[ ]" }, t.title))
        .collect::<Vec<_>>()
        .join("\n");
    (widget, format!("Tasks:\n{copy}"))
}

/// The task ids a task-list widget shows, in order.
pub fn task_ids(widget: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    collect(widget, &mut ids);
    ids
}

fn collect(node: &Value, ids: &mut Vec<String>) {
    if let Some(id) = node["onClickAction"]["payload"]["task_id"].as_str() {
        ids.push(id.to_owned());
    }
    for child in node["children"].as_array().into_iter().flatten() {
        collect(child, ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(title: &str, completed: bool) -> Task {
        let now = taskpilot_domain::timestamp::now();
        Task {
            id: taskpilot_domain::TaskId::generate(),
            title: title.into(),
            description: None,
            completed,
            priority: Default::default(),
            due_date: None,
            tags: vec![],
            created_at: now,
            updated_at: now,
            completed_at: completed.then_some(now),
            version: 1,
        }
    }

    #[test]
    fn buttons_carry_the_task_ids() {
        let tasks = [task("Buy milk", false), task("Call mom", true)];
        let (widget, copy) = task_list(&tasks);
        assert_eq!(
            task_ids(&widget),
            vec![tasks[0].id.to_string(), tasks[1].id.to_string()]
        );
        let text = widget.to_string();
        assert!(
            text.contains(r#""type":"task.complete""#) && text.contains(r#""type":"task.reopen""#)
        );
        assert_eq!(widget["children"][0]["children"][2]["label"], "1 open");
        assert_eq!(copy, "Tasks:\n[ ] Buy milk\n[x] Call mom");
        assert!(task_list(&[]).0.to_string().contains("No tasks."));
    }
}

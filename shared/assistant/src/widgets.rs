//! The task-list widget: a Card listing tasks with Done / Undo buttons whose
//! actions (`task.complete` / `task.reopen`, payload `{"task_id"}`) come back
//! as `threads.custom_action`.

use serde_json::json;

use taskpilot_domain::Task;

use taskpilot_chatkit::widget::{
    ActionConfig, Align, Badge, BadgeColor, BadgeVariant, Button, Caption, Card, CardSize, Col,
    ControlSize, ControlVariant, Divider, Icon, LoadingBehavior, Row, Spacer, Text, Title,
    TitleSize, Weight, WidgetNode, WidgetRoot,
};

/// Action that completes a task.
pub const COMPLETE: &str = "task.complete";
/// Action that reopens a task.
pub const REOPEN: &str = "task.reopen";

fn row(task: &Task) -> WidgetNode {
    let (icon, color, label, action, variant) = if task.completed {
        (
            "check-circle-filled",
            "success",
            "Undo",
            REOPEN,
            ControlVariant::Ghost,
        )
    } else {
        (
            "empty-circle",
            "secondary",
            "Done",
            COMPLETE,
            ControlVariant::Outline,
        )
    };
    let mut text = Text::new(&task.title).weight(Weight::Medium);
    if task.completed {
        text = text.line_through(true).color("tertiary");
    }
    let mut col = vec![text.into()];
    if let Some(due) = task.due_date {
        col.push(Caption::new(format!("Due {}", due.canonical())).into());
    }
    let done = ActionConfig::new(action)
        .payload(json!({"task_id": task.id}))
        .loading_behavior(LoadingBehavior::Itself);
    Row::new(vec![
        Icon::new(icon).color(color).into(),
        Col::new(col).gap(0).into(),
        Spacer::new().into(),
        Button::new(label)
            .size(ControlSize::Sm)
            .variant(variant)
            .on_click(done)
            .into(),
    ])
    .key(task.id.to_string())
    .gap(2)
    .align(Align::Center)
    .into()
}

/// The Card for `tasks`, and its clipboard text.
pub fn task_list(tasks: &[Task]) -> (WidgetRoot, String) {
    let open = tasks.iter().filter(|t| !t.completed).count();
    let body = if tasks.is_empty() {
        vec![Text::new("No tasks.").color("secondary").into()]
    } else {
        tasks.iter().map(row).collect()
    };
    let header = Row::new(vec![
        Title::new("Tasks").size(TitleSize::Sm).into(),
        Spacer::new().into(),
        Badge::new(format!("{open} open"))
            .color(BadgeColor::Info)
            .variant(BadgeVariant::Soft)
            .into(),
    ])
    .align(Align::Center);
    let widget = Card::new(vec![
        header.into(),
        Divider::new().spacing(2).into(),
        Col::new(body).gap(2).into(),
    ])
    .size(CardSize::Md);
    let copy = tasks
        .iter()
        .map(|t| format!("{} {}", if t.completed { "[x]" } else { "[ ]" }, t.title))
        .collect::<Vec<_>>()
        .join("\n");
    (widget.into(), format!("Tasks:\n{copy}"))
}

/// The task ids a task-list widget shows, in order: each Button's
/// `onClickAction.payload.task_id`.
pub fn task_ids(widget: &WidgetRoot) -> Vec<String> {
    let mut ids = Vec::new();
    widget.walk(&mut |node| {
        if let WidgetNode::Button(button) = node
            && let Some(id) = button
                .on_click
                .as_ref()
                .and_then(|a| a.payload.as_ref()?.get("task_id")?.as_str())
        {
            ids.push(id.to_owned());
        }
    });
    ids
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use taskpilot_domain::{DueDate, TaskId};

    use super::*;

    fn task(id: &str, title: &str, completed: bool, due: Option<&str>) -> Task {
        let now = taskpilot_domain::timestamp::now();
        Task {
            id: TaskId::parse(id).unwrap(),
            title: title.into(),
            description: None,
            completed,
            priority: Default::default(),
            due_date: due.map(|d| d.parse::<DueDate>().unwrap()),
            tags: vec![],
            created_at: now,
            updated_at: now,
            completed_at: completed.then_some(now),
            version: 1,
        }
    }

    const A: &str = "01J0000000000000000000000A";
    const B: &str = "01J0000000000000000000000B";
    const C: &str = "01J0000000000000000000000C";
    const D: &str = "01J0000000000000000000000D";

    fn sample_lists() -> Vec<(&'static str, Vec<Task>)> {
        vec![
            ("empty", vec![]),
            (
                "open_done",
                vec![
                    task(A, "Buy milk", false, None),
                    task(B, "Call mom", true, None),
                ],
            ),
            (
                "due",
                vec![
                    task(C, "File taxes", false, Some("2026-04-15")),
                    task(D, "Dentist \"at 3\"", true, Some("2026-05-01T15:30:00Z")),
                ],
            ),
        ]
    }

    fn header(open: &str) -> Value {
        json!({"type": "Row", "align": "center", "children": [
            {"type": "Title", "value": "Tasks", "size": "sm"},
            {"type": "Spacer"},
            {"type": "Badge", "label": open, "color": "info", "variant": "soft"}]})
    }

    /// A task row exactly as the `json!`-built widget rendered it before the builders.
    fn fixture_row(id: &str, done: bool, col: Value) -> Value {
        let (icon, color, label, action, variant) = if done {
            (
                "check-circle-filled",
                "success",
                "Undo",
                "task.reopen",
                "ghost",
            )
        } else {
            (
                "empty-circle",
                "secondary",
                "Done",
                "task.complete",
                "outline",
            )
        };
        json!({"type": "Row", "key": id, "gap": 2, "align": "center", "children": [
            {"type": "Icon", "name": icon, "color": color},
            {"type": "Col", "gap": 0, "children": col},
            {"type": "Spacer"},
            {"type": "Button", "label": label, "size": "sm", "variant": variant,
             "onClickAction": {"type": action, "payload": {"task_id": id}, "loadingBehavior": "self"}}]})
    }

    fn card(open: &str, body: Value) -> Value {
        json!({"type": "Card", "size": "md", "children": [
            header(open), {"type": "Divider", "spacing": 2}, {"type": "Col", "gap": 2, "children": body}]})
    }

    #[test]
    fn task_list_json_is_unchanged() {
        let fixtures = [
            card(
                "0 open",
                json!([{"type": "Text", "value": "No tasks.", "color": "secondary"}]),
            ),
            card(
                "1 open",
                json!([
                    fixture_row(
                        A,
                        false,
                        json!([{"type": "Text", "value": "Buy milk", "weight": "medium"}])
                    ),
                    fixture_row(
                        B,
                        true,
                        json!([{"type": "Text", "value": "Call mom", "weight": "medium",
                                                 "lineThrough": true, "color": "tertiary"}])
                    ),
                ]),
            ),
            card(
                "1 open",
                json!([
                    fixture_row(
                        C,
                        false,
                        json!([{"type": "Text", "value": "File taxes", "weight": "medium"},
                                                 {"type": "Caption", "value": "Due 2026-04-15"}])
                    ),
                    fixture_row(
                        D,
                        true,
                        json!([{"type": "Text", "value": "Dentist \"at 3\"", "weight": "medium",
                                                 "lineThrough": true, "color": "tertiary"},
                                                {"type": "Caption", "value": "Due 2026-05-01T15:30:00Z"}])
                    ),
                ]),
            ),
        ];
        for ((name, tasks), fixture) in sample_lists().into_iter().zip(fixtures) {
            let (widget, _) = task_list(&tasks);
            assert_eq!(serde_json::to_value(&widget).unwrap(), fixture, "{name}");
            let back: WidgetRoot = serde_json::from_value(fixture).unwrap();
            assert_eq!(back, widget, "{name} round trip");
        }
    }

    #[test]
    fn the_badge_counts_the_open_tasks() {
        let tasks = [
            task(A, "Buy milk", false, None),
            task(B, "Call mom", true, None),
            task(C, "File taxes", false, None),
        ];
        let json = serde_json::to_value(task_list(&tasks).0).unwrap();
        assert_eq!(json["children"][0]["children"][2]["label"], "2 open");
    }

    #[test]
    fn buttons_carry_the_task_ids() {
        let tasks = [
            task(A, "Buy milk", false, None),
            task(B, "Call mom", true, Some("2026-04-15")),
        ];
        let (widget, copy) = task_list(&tasks);
        assert_eq!(task_ids(&widget), vec![A.to_owned(), B.to_owned()]);
        assert_eq!(copy, "Tasks:\n[ ] Buy milk\n[x] Call mom");
        assert!(task_ids(&task_list(&[]).0).is_empty());
        assert_eq!(task_list(&[]).1, "Tasks:\n");
    }
}

//! The task-list widget: a Card listing tasks, each row with Done / Undo and
//! Edit. Edit turns the row into a small form (rename, set or clear the due
//! date, Save / Cancel / Delete); Delete asks for a confirmation in the row.
//! Every button's action carries `{"task_id"}` and comes back as
//! `threads.custom_action`; a form's fields are merged into its payload.

use serde_json::json;

use taskpilot_domain::{Task, TaskId};

use taskpilot_chatkit::widget::{
    ActionConfig, Align, Badge, BadgeColor, BadgeVariant, Button, ButtonColor, ButtonStyle,
    Caption, Card, CardSize, Col, ControlSize, ControlVariant, DatePicker, Direction, Divider,
    Form, Icon, Input, LoadingBehavior, Row, Spacer, Text, Title, TitleSize, Weight, WidgetNode,
    WidgetRoot,
};

/// Action that completes a task.
pub const COMPLETE: &str = "task.complete";
/// Action that reopens a task.
pub const REOPEN: &str = "task.reopen";
/// Action that shows a task's row as a form.
pub const EDIT: &str = "task.edit";
/// Action of the form: `title` and `due_date` (a day, empty to clear).
pub const SAVE: &str = "task.save";
/// Action that asks to confirm a deletion.
pub const ASK_DELETE: &str = "task.delete.ask";
/// Action that deletes a task (the confirmation's button).
pub const DELETE: &str = "task.delete";
/// Action that puts a row back as it was.
pub const CANCEL: &str = "task.cancel";

/// How one row is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowMode {
    /// The task with Done / Undo and Edit.
    Shown,
    /// The form: title, due date, Save, Cancel, Delete.
    Editing,
    /// "Delete …?" with Delete and Cancel.
    ConfirmingDelete,
}

fn action(kind: &str, task: &Task) -> ActionConfig {
    ActionConfig::new(kind)
        .payload(json!({"task_id": task.id}))
        .loading_behavior(LoadingBehavior::Itself)
}

fn small(label: &str, variant: ControlVariant, on_click: ActionConfig) -> Button {
    Button::new(label)
        .size(ControlSize::Sm)
        .variant(variant)
        .on_click(on_click)
}

fn row(task: &Task, mode: RowMode) -> WidgetNode {
    match mode {
        RowMode::Shown => shown_row(task),
        RowMode::Editing => edit_form(task),
        RowMode::ConfirmingDelete => confirm_row(task),
    }
}

fn shown_row(task: &Task) -> WidgetNode {
    let (icon, color, label, toggle, variant) = if task.completed {
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
    Row::new(vec![
        Icon::new(icon).color(color).into(),
        Col::new(col).gap(0).into(),
        Spacer::new().into(),
        small(label, variant, action(toggle, task)).into(),
        small("Edit", ControlVariant::Ghost, action(EDIT, task)).into(),
    ])
    .key(task.id.to_string())
    .gap(2)
    .align(Align::Center)
    .into()
}

fn edit_form(task: &Task) -> WidgetNode {
    let mut due = DatePicker::new("due_date")
        .placeholder("Due date")
        .size(ControlSize::Sm)
        .clearable(true);
    if let Some(date) = task.due_date {
        // The picker's value is a date-time; a day is its midnight.
        let canonical = date.canonical();
        due = due.default_value(if canonical.len() == 10 {
            format!("{canonical}T00:00:00")
        } else {
            canonical
        });
    }
    Form::new(vec![
        Input::new("title")
            .default_value(task.title.clone())
            .required(true)
            .auto_focus(true)
            .size(ControlSize::Sm)
            .into(),
        due.into(),
        Row::new(vec![
            Button::new("Save")
                .submit(true)
                .style(ButtonStyle::Primary)
                .size(ControlSize::Sm)
                .into(),
            small("Cancel", ControlVariant::Ghost, action(CANCEL, task)).into(),
            Spacer::new().into(),
            small("Delete", ControlVariant::Ghost, action(ASK_DELETE, task))
                .color(ButtonColor::Danger)
                .into(),
        ])
        .gap(2)
        .into(),
    ])
    .on_submit(action(SAVE, task))
    .direction(Direction::Col)
    .gap(2)
    .key(task.id.to_string())
    .into()
}

fn confirm_row(task: &Task) -> WidgetNode {
    Row::new(vec![
        Icon::new("empty-circle").color("danger").into(),
        Text::new(format!("Delete “{}”?", task.title))
            .weight(Weight::Medium)
            .into(),
        Spacer::new().into(),
        small("Delete", ControlVariant::Solid, action(DELETE, task))
            .color(ButtonColor::Danger)
            .into(),
        small("Cancel", ControlVariant::Ghost, action(CANCEL, task)).into(),
    ])
    .key(task.id.to_string())
    .gap(2)
    .align(Align::Center)
    .into()
}

/// The Card for `tasks`, and its clipboard text.
pub fn task_list(tasks: &[Task]) -> (WidgetRoot, String) {
    task_list_with(tasks, None)
}

/// The Card for `tasks` with the row of `focus` drawn in its mode (the
/// others as shown), and its clipboard text.
pub fn task_list_with(tasks: &[Task], focus: Option<(&TaskId, RowMode)>) -> (WidgetRoot, String) {
    let open = tasks.iter().filter(|t| !t.completed).count();
    let body = if tasks.is_empty() {
        vec![Text::new("No tasks.").color("secondary").into()]
    } else {
        tasks
            .iter()
            .map(|t| {
                let mode = match focus {
                    Some((id, mode)) if *id == t.id => mode,
                    _ => RowMode::Shown,
                };
                row(t, mode)
            })
            .collect()
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

/// The task ids a task-list widget shows, in order, each once: the
/// `task_id` of its buttons' actions (every row has one, in every mode).
pub fn task_ids(widget: &WidgetRoot) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    widget.walk(&mut |node| {
        if let WidgetNode::Button(button) = node
            && let Some(id) = button
                .on_click
                .as_ref()
                .and_then(|a| a.payload.as_ref()?.get("task_id")?.as_str())
            && !ids.iter().any(|known| known == id)
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
             "onClickAction": {"type": action, "payload": {"task_id": id}, "loadingBehavior": "self"}},
            {"type": "Button", "label": "Edit", "size": "sm", "variant": "ghost",
             "onClickAction": {"type": "task.edit", "payload": {"task_id": id}, "loadingBehavior": "self"}}]})
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
    fn an_edited_row_is_a_form_with_the_title_and_the_due_day() {
        let tasks = [
            task(C, "File taxes", false, Some("2026-04-15")),
            task(D, "Dentist", false, Some("2026-05-01T15:30:00Z")),
        ];
        let c = TaskId::parse(C).unwrap();
        let (widget, _) = task_list_with(&tasks, Some((&c, RowMode::Editing)));
        let json = serde_json::to_value(&widget).unwrap();
        let rows = &json["children"][2]["children"];
        let form = &rows[0];
        assert_eq!(form["type"], "Form");
        assert_eq!(form["key"], C);
        assert_eq!(form["direction"], "col");
        assert_eq!(
            form["onSubmitAction"],
            json!({"type": "task.save", "payload": {"task_id": C}, "loadingBehavior": "self"})
        );
        assert_eq!(
            form["children"][0],
            json!({"type": "Input", "name": "title", "defaultValue": "File taxes",
                   "required": true, "autoFocus": true, "size": "sm"})
        );
        assert_eq!(form["children"][1]["name"], "due_date");
        assert_eq!(form["children"][1]["defaultValue"], "2026-04-15T00:00:00");
        assert_eq!(form["children"][1]["clearable"], true);
        let buttons = &form["children"][2]["children"];
        assert_eq!(buttons[0]["submit"], true);
        assert_eq!(buttons[1]["onClickAction"]["type"], "task.cancel");
        assert_eq!(buttons[3]["onClickAction"]["type"], "task.delete.ask");
        assert_eq!(buttons[3]["color"], "danger");
        // The other row is as shown.
        assert_eq!(rows[1]["type"], "Row");
        // A timed due is the picker's value as it is.
        let d = TaskId::parse(D).unwrap();
        let json =
            serde_json::to_value(task_list_with(&tasks, Some((&d, RowMode::Editing))).0).unwrap();
        assert_eq!(
            json["children"][2]["children"][1]["children"][1]["defaultValue"],
            "2026-05-01T15:30:00Z"
        );
        // Its ids are still found, once each.
        assert_eq!(task_ids(&widget), [C, D]);
    }

    #[test]
    fn a_row_asking_to_delete_names_the_task_with_delete_and_cancel() {
        let tasks = [task(A, "Buy milk", false, None)];
        let a = TaskId::parse(A).unwrap();
        let (widget, copy) = task_list_with(&tasks, Some((&a, RowMode::ConfirmingDelete)));
        let json = serde_json::to_value(&widget).unwrap();
        let row = &json["children"][2]["children"][0];
        assert_eq!(row["children"][1]["value"], "Delete “Buy milk”?");
        assert_eq!(row["children"][3]["onClickAction"]["type"], "task.delete");
        assert_eq!(row["children"][3]["variant"], "solid");
        assert_eq!(row["children"][4]["onClickAction"]["type"], "task.cancel");
        assert_eq!(copy, "Tasks:\n[ ] Buy milk");
        // Shown mode is the plain list.
        assert_eq!(
            task_list_with(&tasks, Some((&a, RowMode::Shown))),
            task_list(&tasks)
        );
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

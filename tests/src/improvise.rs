//! The stub model's unscripted answers, so a person (and the whole-stack
//! tests) can chat with the local stack without an API key and see every
//! path the assistant has. It reads what a real model reads: the
//! instructions, the application's context (the user's date and time zone)
//! and the conversation.
//!
//! - "what day is it?" → the date and time from the context it was given;
//! - "add buy milk tomorrow" → `create_task` with tomorrow's date on the
//!   user's calendar (from the context); other phrases ("next friday",
//!   "in two weeks") are passed to the tool, which reads them;
//! - "complete / reopen / delete <title>", "rename <title> to <new>" → the
//!   tool with `task: <title>` (the server asks when several tasks match);
//!   with an @-mentioned task, its id;
//! - "what's left?" → `list_tasks`;
//! - "show @task" → the page's `show_task` client tool, then a word on
//!   what the page answered;
//! - with a forced `tool_choice` (the tool menu), that tool: the message is
//!   the new task's title ("add a task"), the task to complete, or nothing
//!   (`list_tasks`, "plan my day");
//! - after a tool's result, a one-line summary; after a skipped question,
//!   an acknowledgement. Anything else gets a hint.

use serde_json::{Value, json};

use crate::openai_stub::Turn;

/// Prefix of the context message the agent adds for @-mentions.
const MENTIONS: &str = "The tasks I mentioned with @, as they are now: ";

/// The turn for a `POST /v1/responses` body.
pub fn turn(body: &Value) -> Turn {
    let items = body["input"].as_array().cloned().unwrap_or_default();
    // The user's date and zone: in the instructions or a developer message.
    let mut context = body["instructions"].as_str().unwrap_or_default().to_owned();
    for note in items
        .iter()
        .filter(|i| i["role"] == "developer")
        .filter_map(|i| i["content"].as_str())
    {
        context.push('\n');
        context.push_str(note);
    }
    let instructions = context.as_str();
    let items: Vec<Value> = items
        .into_iter()
        .filter(|i| i["role"] != "developer")
        .collect();
    let last = items.last().cloned().unwrap_or(Value::Null);
    if last["type"] == "function_call_output" {
        return Turn::Text(summary(&items, &last));
    }
    if let Some(parts) = last["content"].as_array() {
        // Files the user attached: the stub cannot look at them.
        let count = |kind: &str| parts.iter().filter(|p| p["type"] == kind).count();
        return Turn::Text(format!(
            "I received {} image(s) and {} document(s). The local stub model cannot read \
             them; deployed, the real model does (locally it cannot fetch them from 127.0.0.1).",
            count("input_image"),
            count("input_file")
        ));
    }
    let mentioned: Vec<Value> = items
        .iter()
        .rev()
        .take(2)
        .filter_map(|i| i["content"].as_str()?.strip_prefix(MENTIONS))
        .filter_map(|json| serde_json::from_str::<Vec<Value>>(json).ok())
        .flatten()
        .collect();
    let said = items
        .iter()
        .rev()
        .filter(|i| i["role"] == "user")
        .filter_map(|i| i["content"].as_str())
        .find(|c| !c.starts_with(MENTIONS))
        .unwrap_or_default()
        .trim()
        .to_owned();
    if said == "I skipped that question." {
        return Turn::Text("All right, I left your tasks as they are.".into());
    }
    if let Some(forced) = body["tool_choice"]["name"].as_str() {
        return forced_call(forced, &said, instructions, &mentioned);
    }
    answer(&said, instructions, &mentioned)
}

/// The call a forced `tool_choice` makes of what the user said.
fn forced_call(tool: &str, said: &str, instructions: &str, mentioned: &[Value]) -> Turn {
    let args = match tool {
        "create_task" => {
            let (title, due) = split_due(said, instructions);
            let mut args = json!({"title": title});
            if let Some(due) = due {
                args["due_date"] = json!(due);
            }
            args
        }
        "list_tasks" => json!({}),
        _ => mentioned
            .iter()
            .find_map(|m| m["task"]["id"].as_str())
            .map_or_else(|| json!({"task": said}), |id| json!({"task_id": id})),
    };
    Turn::Calls(vec![(tool.to_owned(), args)])
}

fn answer(said: &str, instructions: &str, mentioned: &[Value]) -> Turn {
    let lower = said.to_lowercase();
    let rest = |verb: &str| {
        lower
            .strip_prefix(verb)
            .map(|r| said[said.len() - r.len()..].trim().to_owned())
    };
    let calls = |name: &str, args: Value| Turn::Calls(vec![(name.to_owned(), args)]);
    if lower.contains("what day") || lower.contains("date today") || lower.contains("what time") {
        return Turn::Text(match context_line(instructions, "- Now: ") {
            Some(now) => format!("It is {now}."),
            None => "I was not told the date.".into(),
        });
    }
    if let Some(what) = rest("add ") {
        let (title, due) = split_due(&what, instructions);
        let mut args = json!({"title": title});
        if let Some(due) = due {
            args["due_date"] = json!(due);
        }
        return calls("create_task", args);
    }
    if let Some(what) = rest("rename ")
        && let Some((from, to)) = what.split_once(" to ")
    {
        return calls(
            "update_task",
            json!({"task": from.trim(), "title": to.trim()}),
        );
    }
    if rest("show ").is_some()
        && let Some(id) = mentioned.iter().find_map(|m| m["task"]["id"].as_str())
    {
        return calls("show_task", json!({"task_id": id}));
    }
    for (verbs, tool) in [
        (&["complete ", "done ", "finish "][..], "complete_task"),
        (&["reopen ", "undo "][..], "reopen_task"),
        (&["delete ", "remove "][..], "delete_task"),
    ] {
        if let Some(what) = verbs.iter().find_map(|v| rest(v)) {
            // An @-mention names the task exactly; otherwise its title as said.
            let target = mentioned
                .iter()
                .find_map(|m| m["task"]["id"].as_str())
                .map_or_else(|| json!({"task": what}), |id| json!({"task_id": id}));
            return calls(tool, target);
        }
    }
    if lower.contains("left") || lower.contains("list") || lower.contains("tasks") {
        return calls("list_tasks", json!({}));
    }
    if let Some(task) = mentioned.first() {
        return Turn::Text(match task["task"]["title"].as_str() {
            Some(title) => format!(
                "“{title}” is {}.",
                if task["task"]["completed"] == true {
                    "done"
                } else {
                    "open"
                }
            ),
            None => "I cannot see that task any more.".into(),
        });
    }
    Turn::Text(
        "I am the local stub model. Try \"add buy milk tomorrow\", \"what's left?\", \
         \"complete buy milk\", \"rename buy milk to buy oat milk\", \"what day is it?\" \
         or use the Done buttons."
            .into(),
    )
}

/// `title` and its due date from "buy milk tomorrow" / "call mum due next friday".
fn split_due(what: &str, instructions: &str) -> (String, Option<String>) {
    let lower = what.to_lowercase();
    for phrase in [
        "tomorrow",
        "today",
        "next monday",
        "next tuesday",
        "next wednesday",
        "next thursday",
        "next friday",
        "next saturday",
        "next sunday",
        "next week",
        "in two weeks",
        "in a week",
    ] {
        let Some(at) = lower.rfind(phrase) else {
            continue;
        };
        if at + phrase.len() != lower.len() {
            continue;
        }
        let title = what[..at]
            .trim_end()
            .trim_end_matches(" due")
            .trim_end_matches(" on")
            .trim_end()
            .to_owned();
        // A real model reads today and tomorrow off its context.
        let due = match phrase {
            "tomorrow" => context_line(instructions, "Tomorrow: "),
            "today" => context_line(instructions, "- Today: "),
            _ => None,
        }
        .and_then(|d| d.get(..10).map(str::to_owned))
        .unwrap_or_else(|| phrase.to_owned());
        return (title, Some(due));
    }
    (what.to_owned(), None)
}

/// What follows `label` on its line of the instructions (up to a full stop).
fn context_line(instructions: &str, label: &str) -> Option<String> {
    let at = instructions.find(label)? + label.len();
    let rest = &instructions[at..];
    let line = rest.lines().next()?;
    let end = line.find(". ").unwrap_or(line.len());
    Some(line[..end].trim_end_matches('.').to_owned())
}

/// A line about what the last tool call did.
fn summary(items: &[Value], last: &Value) -> String {
    let output: Value =
        serde_json::from_str(last["output"].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
    let tool = items
        .iter()
        .rev()
        .find(|i| i["type"] == "function_call" && i["call_id"] == last["call_id"])
        .and_then(|i| i["name"].as_str())
        .unwrap_or_default();
    if tool == "show_task" {
        return match output["shown"].as_bool() {
            Some(true) => "There it is, highlighted in your list.".to_owned(),
            _ => "I could not show it on your page.".to_owned(),
        };
    }
    if let Some(tasks) = output["tasks"].as_array() {
        let open: Vec<&str> = tasks
            .iter()
            .filter(|t| t["completed"] == false)
            .filter_map(|t| t["title"].as_str())
            .collect();
        return if open.is_empty() {
            "Nothing is left to do.".to_owned()
        } else {
            format!("Still open: {}.", open.join(", "))
        };
    }
    if output.get("deleted").is_some() {
        return "Deleted.".to_owned();
    }
    if let Some(task) = output.get("task") {
        let title = task["title"].as_str().unwrap_or("the task");
        let due = task["due_date"]
            .as_str()
            .map(|d| format!(", due {d}"))
            .unwrap_or_default();
        return match tool {
            "create_task" => format!("Added “{title}”{due}."),
            "update_task" => format!("Updated “{title}”{due}."),
            _ if task["completed"] == true => format!("Done: “{title}” is complete."),
            _ => format!("“{title}” is open again."),
        };
    }
    format!(
        "That did not work: {}",
        output["error"]["message"]
            .as_str()
            .unwrap_or("unknown error")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: &str = "Be brief.\n\nContext (from the user's device):\n\
        - Now: Wednesday 2026-12-02 22:00, time zone Pacific/Honolulu (UTC-10:00).\n\
        - Today: 2026-12-02. Tomorrow: 2026-12-03. This week: 2026-11-30 to 2026-12-06 (Monday to Sunday).\n";

    fn said(text: &str) -> Value {
        json!({"instructions": CONTEXT, "input": [{"role": "user", "content": text}]})
    }

    fn calls(turn: Turn) -> Vec<(String, Value)> {
        match turn {
            Turn::Calls(calls) => calls,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dates_come_from_the_context() {
        assert_eq!(
            calls(turn(&said("add buy milk tomorrow"))),
            [(
                "create_task".to_owned(),
                json!({"title": "buy milk", "due_date": "2026-12-03"})
            )]
        );
        assert_eq!(
            calls(turn(&said("Add call mum due next friday"))),
            [(
                "create_task".to_owned(),
                json!({"title": "call mum", "due_date": "next friday"})
            )]
        );
        match turn(&said("what day is it?")) {
            Turn::Text(text) => assert_eq!(
                text,
                "It is Wednesday 2026-12-02 22:00, time zone Pacific/Honolulu (UTC-10:00)."
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changes_name_the_task_by_title() {
        assert_eq!(
            calls(turn(&said("complete buy milk"))),
            [("complete_task".to_owned(), json!({"task": "buy milk"}))]
        );
        assert_eq!(
            calls(turn(&said("rename buy milk to buy oat milk"))),
            [(
                "update_task".to_owned(),
                json!({"task": "buy milk", "title": "buy oat milk"})
            )]
        );
        assert_eq!(calls(turn(&said("delete old plan")))[0].0, "delete_task");
        assert_eq!(calls(turn(&said("reopen buy milk")))[0].0, "reopen_task");
    }
}

//! Tasks in answers as ChatKit entities: when an answer names a task the
//! turn listed, created or changed, its text carries an annotation whose
//! source is the task (`data.task_id`), so the page can focus it on a click
//! (`entities.onClick`) and preview it (`entities.onRequestPreview`).
//!
//! Where: after the first place the answer names the task (its title,
//! verbatim, else ignoring letter case); a task the turn created or changed
//! that the answer does not name is annotated at the end; one the turn only
//! listed and the answer does not name is left out (a listing of fifty tasks
//! does not put fifty markers under "You have 50 tasks").

use serde_json::json;

use taskpilot_chatkit::types::{Annotation, EntitySource};
use taskpilot_domain::Task;

/// The icon of an open task and of a done one.
const OPEN_ICON: &str = "empty-circle";
const DONE_ICON: &str = "check-circle";

/// The annotations of answer `text` for `tasks` (listed or changed this
/// turn, in the order the turn met them); `changed` says whether the turn
/// created or changed a task. Ordered by position, ties in task order.
pub fn annotate(text: &str, tasks: &[Task], changed: impl Fn(&Task) -> bool) -> Vec<Annotation> {
    let end = utf16_len(text);
    let mut placed: Vec<(usize, Annotation)> = Vec::new();
    for task in tasks {
        if placed.iter().any(|(_, a)| a.source.id == task.id.as_str()) {
            continue;
        }
        let at = match named_at(text, &task.title) {
            Some(at) => at,
            None if changed(task) => end,
            None => continue,
        };
        placed.push((
            at,
            Annotation {
                source: source(task),
                index: Some(at),
            },
        ));
    }
    placed.sort_by_key(|(at, _)| *at);
    placed.into_iter().map(|(_, a)| a).collect()
}

/// The entity of a task.
fn source(task: &Task) -> EntitySource {
    EntitySource {
        id: task.id.to_string(),
        title: task.title.clone(),
        description: task
            .due_date
            .as_ref()
            .map(|due| format!("Due {}", due.canonical())),
        icon: Some(if task.completed { DONE_ICON } else { OPEN_ICON }.into()),
        interactive: true,
        data: json!({"task_id": task.id.to_string()})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

/// The UTF-16 offset just after the first place `text` names `title`.
fn named_at(text: &str, title: &str) -> Option<usize> {
    if title.is_empty() {
        return None;
    }
    let start = text.find(title).or_else(|| {
        let lower = text.to_lowercase();
        // Lowercasing may change lengths: only use a match that maps back.
        (lower.len() == text.len())
            .then(|| lower.find(&title.to_lowercase()))
            .flatten()
    })?;
    Some(utf16_len(&text[..start + title.len()]))
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpilot_domain::TaskId;

    fn task(title: &str, completed: bool) -> Task {
        let mut t: Task = serde_json::from_value(json!({
            "id": TaskId::generate().to_string(), "title": title, "description": null,
            "completed": completed, "priority": "medium", "due_date": null, "tags": [],
            "created_at": "2026-12-07T10:00:00Z", "updated_at": "2026-12-07T10:00:00Z",
            "completed_at": null, "version": 1}))
        .unwrap();
        t.completed = completed;
        t
    }

    #[test]
    fn a_named_task_is_annotated_just_after_its_name() {
        let milk = task("buy milk", false);
        let out = annotate(
            "I added buy milk for you.",
            std::slice::from_ref(&milk),
            |_| true,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].index, Some("I added buy milk".len()));
        let s = &out[0].source;
        assert_eq!(s.id, milk.id.to_string());
        assert_eq!(s.title, "buy milk");
        assert_eq!(s.icon.as_deref(), Some("empty-circle"));
        assert!(s.interactive);
        assert_eq!(s.data["task_id"], milk.id.to_string());
        assert_eq!(s.description, None);
    }

    #[test]
    fn the_name_is_found_ignoring_letter_case_and_counted_in_utf16() {
        let t = task("Call Mum", true);
        let out = annotate("✅ call mum is done.", &[t], |_| false);
        // "✅ call mum": the emoji is one UTF-16 unit, then a space and 8.
        assert_eq!(out[0].index, Some(10));
        assert_eq!(out[0].source.icon.as_deref(), Some("check-circle"));
    }

    #[test]
    fn a_changed_task_the_answer_does_not_name_goes_at_the_end() {
        let t = task("buy oat milk", false);
        let text = "Done — added it.";
        let out = annotate(text, &[t], |_| true);
        assert_eq!(out[0].index, Some(text.encode_utf16().count()));
    }

    #[test]
    fn a_listed_task_the_answer_does_not_name_is_left_out() {
        let out = annotate(
            "You have two tasks.",
            &[task("a1", false), task("b2", false)],
            |_| false,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn annotations_follow_the_text_and_each_task_comes_once() {
        let (a, b) = (task("walk the dog", false), task("pay rent", false));
        let text = "First pay rent, then walk the dog.";
        let out = annotate(text, &[a.clone(), b.clone(), a.clone()], |_| false);
        let ids: Vec<&str> = out.iter().map(|x| x.source.id.as_str()).collect();
        assert_eq!(ids, [b.id.as_str(), a.id.as_str()]);
        assert_eq!(out[0].index, Some("First pay rent".len()));
    }

    #[test]
    fn a_due_date_is_the_description() {
        let mut t = task("file taxes", false);
        t.due_date = Some("2026-12-31".parse().unwrap());
        let out = annotate("file taxes", &[t], |_| false);
        assert_eq!(out[0].source.description.as_deref(), Some("Due 2026-12-31"));
    }

    #[test]
    fn an_empty_title_is_never_found() {
        assert_eq!(named_at("anything", ""), None);
        assert_eq!(named_at("abc", "abcd"), None);
        assert_eq!(named_at("xabc", "abc"), Some(4));
    }
}

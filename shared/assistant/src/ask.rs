//! Asking instead of guessing: when a change names a task by title and
//! several match, the agent shows one multiple-choice question
//! (`structured_input`) listing them, and keeps the change it was about to
//! make in a hidden item beside it. When the user answers, the change is
//! made to the chosen task; a skip changes nothing; a free answer that
//! names exactly one of the candidates counts as choosing it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use taskpilot_domain::{Task, TaskId};

use crate::tools::Ambiguous;
use taskpilot_chatkit::structured::{Choice, InputStatus, Question};
use taskpilot_chatkit::types::{ItemKind, ThreadItem};

/// The hidden content's `type`.
const PENDING_CHANGE: &str = "pending_change";
/// The question's id within its item.
const QUESTION_ID: &str = "task";

/// A change waiting for the user's choice (a hidden item's content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingChange {
    /// Always `pending_change`.
    #[serde(rename = "type")]
    kind: String,
    /// The structured-input item that asks.
    pub question_item: String,
    /// The tool to run once a task is chosen.
    pub tool: String,
    /// Its arguments, without the task.
    pub arguments: Value,
    /// Each option's value and the task it stands for.
    pub options: Vec<(String, TaskId)>,
}

/// What the user's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chosen {
    /// One of the candidates.
    Task(TaskId),
    /// Skipped, or an answer that names none of the candidates.
    Nothing(Option<String>),
}

/// Whether a hidden item's content is a [`PendingChange`].
pub fn is_pending_change(content: &Value) -> bool {
    content["type"] == PENDING_CHANGE
}

/// The question and the hidden change for `ambiguous`: `(question, hidden)`
/// item kinds; `question_item` is the id the question item will have.
pub fn question(ambiguous: &Ambiguous, question_item: &str) -> (ItemKind, ItemKind) {
    let options = labels(&ambiguous.candidates);
    let verb = match ambiguous.tool.as_str() {
        "complete_task" => "mark done",
        "reopen_task" => "reopen",
        "delete_task" => "delete",
        _ => "change",
    };
    let asked = ItemKind::StructuredInput {
        status: InputStatus::Pending,
        inputs: vec![Question::MultipleChoice {
            id: QUESTION_ID.into(),
            question: format!("Several tasks match. Which one should I {verb}?"),
            options: options
                .iter()
                .map(|(value, _)| Choice {
                    value: value.clone(),
                })
                .collect(),
            multiple: false,
            answer: None,
        }],
    };
    let pending = PendingChange {
        kind: PENDING_CHANGE.into(),
        question_item: question_item.to_owned(),
        tool: ambiguous.tool.clone(),
        arguments: ambiguous.arguments.clone(),
        options,
    };
    let hidden = ItemKind::HiddenContextItem {
        content: serde_json::to_value(pending).unwrap_or(Value::Null),
    };
    (asked, hidden)
}

/// The change kept for `answered` among `items`, if any.
pub fn pending_for(items: &[ThreadItem], answered: &ThreadItem) -> Option<PendingChange> {
    items.iter().rev().find_map(|item| match &item.kind {
        ItemKind::HiddenContextItem { content } if is_pending_change(content) => {
            serde_json::from_value::<PendingChange>(content.clone())
                .ok()
                .filter(|p| p.question_item == answered.id)
        }
        _ => None,
    })
}

/// What the answer on `answered` chooses among `pending`'s options.
pub fn choice(pending: &PendingChange, answered: &ThreadItem) -> Chosen {
    let ItemKind::StructuredInput { status, inputs } = &answered.kind else {
        return Chosen::Nothing(None);
    };
    let answer = inputs
        .iter()
        .find(|q| q.id() == QUESTION_ID)
        .and_then(Question::answer);
    let value = match answer {
        Some(a) if *status == InputStatus::Answered && !a.skipped => a.values.first(),
        _ => None,
    };
    let Some(value) = value else {
        return Chosen::Nothing(None);
    };
    if let Some((_, id)) = pending.options.iter().find(|(v, _)| v == value) {
        return Chosen::Task(id.clone());
    }
    // A free answer: it counts when it names exactly one option.
    let lower = value.trim().to_lowercase();
    let named: Vec<&TaskId> = pending
        .options
        .iter()
        .filter(|(v, _)| !lower.is_empty() && v.to_lowercase().contains(&lower))
        .map(|(_, id)| id)
        .collect();
    match named.as_slice() {
        [one] => Chosen::Task((*one).clone()),
        _ => Chosen::Nothing(Some(value.clone())),
    }
}

/// One distinct label per candidate: its title, then its due date or state,
/// then the end of its id, as far as needed to tell them apart.
fn labels(candidates: &[Task]) -> Vec<(String, TaskId)> {
    let same_title = |t: &Task| {
        candidates
            .iter()
            .filter(|o| o.title.eq_ignore_ascii_case(&t.title))
            .count()
            > 1
    };
    let mut labels: Vec<(String, TaskId)> = candidates
        .iter()
        .map(|t| {
            let label = if same_title(t) {
                let mut details = Vec::new();
                if let Some(due) = t.due_date {
                    details.push(format!("due {}", due.canonical()));
                }
                if t.completed {
                    details.push("done".to_owned());
                }
                if details.is_empty() {
                    details.push(format!("added {}", t.created_at.format("%Y-%m-%d")));
                }
                format!("{} ({})", t.title, details.join(", "))
            } else {
                t.title.clone()
            };
            (label, t.id.clone())
        })
        .collect();
    let snapshot = labels.clone();
    for (label, id) in &mut labels {
        if snapshot.iter().filter(|(l, _)| l == label).count() > 1 {
            let tail: String = id
                .as_str()
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            label.push_str(&format!(" #{tail}"));
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskpilot_chatkit::structured::{Answer, Submission, apply};

    fn task(id: &str, title: &str, due: Option<&str>, completed: bool) -> Task {
        serde_json::from_value(json!({
            "id": id, "title": title, "description": null, "completed": completed,
            "priority": "medium", "due_date": due, "tags": [],
            "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z",
            "completed_at": null, "version": 1
        }))
        .unwrap()
    }

    fn ambiguous(candidates: Vec<Task>) -> Ambiguous {
        Ambiguous {
            tool: "complete_task".into(),
            arguments: json!({}),
            candidates,
        }
    }

    fn item(id: &str, kind: ItemKind) -> ThreadItem {
        ThreadItem::new(id, "thr_1", kind)
    }

    const A: &str = "01KB00000000000000000000AA";
    const B: &str = "01KB00000000000000000000BB";
    const C: &str = "01KB00000000000000000000CC";

    #[test]
    fn labels_tell_candidates_apart() {
        let tasks = vec![
            task(A, "Buy milk", Some("2026-12-04"), false),
            task(B, "Buy milk", None, false),
            task(C, "Buy oat milk", None, false),
        ];
        let values: Vec<String> = labels(&tasks).into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            values,
            [
                "Buy milk (due 2026-12-04)",
                "Buy milk (added 2026-12-01)",
                "Buy oat milk"
            ]
        );
        let twins = vec![task(A, "Call", None, false), task(B, "Call", None, false)];
        let values: Vec<String> = labels(&twins).into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            values,
            [
                "Call (added 2026-12-01) #00AA",
                "Call (added 2026-12-01) #00BB"
            ]
        );
    }

    fn answered(pending_kind: &ItemKind, question: &ItemKind, submission: Value) -> Chosen {
        let hidden = item("shcx_1", pending_kind.clone());
        let mut asked = item("sti_1", question.clone());
        if let ItemKind::StructuredInput { status, inputs } = &mut asked.kind {
            *status = apply(
                inputs,
                &serde_json::from_value::<Submission>(submission).unwrap(),
            );
        }
        let pending = pending_for(&[hidden], &asked).unwrap();
        choice(&pending, &asked)
    }

    #[test]
    fn an_answer_picks_a_candidate_and_a_skip_picks_nothing() {
        let tasks = vec![
            task(A, "Buy milk", None, false),
            task(C, "Buy oat milk", None, false),
        ];
        let (question, hidden) = question(&ambiguous(tasks), "sti_1");
        let id = |s: &str| TaskId::parse(s).unwrap();
        assert_eq!(
            answered(
                &hidden,
                &question,
                json!({"answers": {"task": {"values": ["Buy oat milk"]}}})
            ),
            Chosen::Task(id(C))
        );
        // A free answer naming one candidate counts; one naming none does not.
        assert_eq!(
            answered(
                &hidden,
                &question,
                json!({"answers": {"task": {"values": ["oat"]}}})
            ),
            Chosen::Task(id(C))
        );
        assert_eq!(
            answered(
                &hidden,
                &question,
                json!({"answers": {"task": {"values": ["bread"]}}})
            ),
            Chosen::Nothing(Some("bread".into()))
        );
        assert_eq!(
            answered(&hidden, &question, json!({"status": "skipped"})),
            Chosen::Nothing(None)
        );
    }

    /// The question for [`A`] and [`C`] as `status`, its answer `answer`;
    /// and the change kept beside it.
    fn asked_as(status: InputStatus, answer: Answer) -> (PendingChange, ThreadItem) {
        let tasks = vec![
            task(A, "Buy milk", None, false),
            task(C, "Buy oat milk", None, false),
        ];
        let (mut question, hidden) = question(&ambiguous(tasks), "sti_1");
        if let ItemKind::StructuredInput {
            status: s, inputs, ..
        } = &mut question
        {
            *s = status;
            if let Question::MultipleChoice { answer: a, .. } = &mut inputs[0] {
                *a = Some(answer);
            }
        }
        let asked = item("sti_1", question);
        let pending = pending_for(&[item("shcx_1", hidden)], &asked).unwrap();
        (pending, asked)
    }

    fn oat(skipped: bool) -> Answer {
        Answer {
            values: vec!["Buy oat milk".into()],
            skipped,
        }
    }

    #[test]
    fn only_an_answered_question_chooses() {
        let (pending, asked) = asked_as(InputStatus::Answered, oat(false));
        assert_eq!(
            choice(&pending, &asked),
            Chosen::Task(TaskId::parse(C).unwrap())
        );
        let (pending, asked) = asked_as(InputStatus::Pending, oat(false));
        assert_eq!(choice(&pending, &asked), Chosen::Nothing(None));
    }

    #[test]
    fn a_skipped_answer_chooses_nothing_even_with_values() {
        let (pending, asked) = asked_as(InputStatus::Answered, oat(true));
        assert_eq!(choice(&pending, &asked), Chosen::Nothing(None));
    }

    #[test]
    fn the_question_names_what_the_change_does() {
        let tasks = || {
            vec![
                task(A, "Buy milk", None, false),
                task(C, "Buy oat milk", None, false),
            ]
        };
        for (tool, verb) in [
            ("complete_task", "mark done"),
            ("reopen_task", "reopen"),
            ("delete_task", "delete"),
            ("update_task", "change"),
        ] {
            let ambiguous = Ambiguous {
                tool: tool.into(),
                ..ambiguous(tasks())
            };
            let (asked, _) = question(&ambiguous, "sti_1");
            let ItemKind::StructuredInput { inputs, .. } = asked else {
                panic!("a question")
            };
            let Question::MultipleChoice { question, .. } = &inputs[0] else {
                panic!("multiple choice")
            };
            assert_eq!(
                question,
                &format!("Several tasks match. Which one should I {verb}?")
            );
        }
    }

    #[test]
    fn only_a_pending_change_is_one() {
        let (_, hidden) = question(&ambiguous(vec![task(A, "Buy milk", None, false)]), "sti_1");
        let ItemKind::HiddenContextItem { content } = hidden else {
            panic!("hidden")
        };
        assert!(is_pending_change(&content));
        let mut other = content.clone();
        other["type"] = json!("note");
        assert!(!is_pending_change(&other));
        // A hidden note shaped like a change, but not one, is not taken for it.
        let asked = item(
            "sti_1",
            ItemKind::StructuredInput {
                status: InputStatus::Pending,
                inputs: vec![],
            },
        );
        let note = item("shcx_1", ItemKind::HiddenContextItem { content: other });
        assert_eq!(pending_for(&[note], &asked), None);
    }
}

//! Structured input (ChatKit 1.6.4): an item that asks the user questions,
//! the answers the client submits with `threads.add_structured_input`, and
//! how they are applied, exactly as ck-py's `_apply_structured_input_submission`:
//! a skipped submission, a missing answer, an answer marked skipped or one
//! with no values records `skipped`; a single-choice question keeps only the
//! first value; answers to unknown questions are ignored (and logged).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a structured-input item stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputStatus {
    /// Waiting for the user.
    #[default]
    Pending,
    /// Answered.
    Answered,
    /// Skipped as a whole.
    Skipped,
}

/// One question of a structured-input item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Question {
    /// Pick among options (the client also offers a free answer).
    MultipleChoice {
        /// Stable id within the item.
        id: String,
        /// What is asked.
        question: String,
        /// The suggested choices.
        options: Vec<Choice>,
        /// Whether several values may be picked.
        #[serde(default)]
        multiple: bool,
        /// The recorded answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<Answer>,
    },
    /// A free-text answer.
    Freeform {
        /// Stable id within the item.
        id: String,
        /// What is asked.
        question: String,
        /// Supporting text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The recorded answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<Answer>,
    },
}

impl Question {
    /// The question's id.
    pub fn id(&self) -> &str {
        match self {
            Question::MultipleChoice { id, .. } | Question::Freeform { id, .. } => id,
        }
    }

    /// The question's text.
    pub fn text(&self) -> &str {
        match self {
            Question::MultipleChoice { question, .. } | Question::Freeform { question, .. } => {
                question
            }
        }
    }

    /// The recorded answer.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Question::MultipleChoice { answer, .. } | Question::Freeform { answer, .. } => {
                answer.as_ref()
            }
        }
    }
}

/// A suggested choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// The text submitted when it is picked.
    pub value: String,
}

/// An answer, as recorded and as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The values given.
    #[serde(default)]
    pub values: Vec<String>,
    /// Whether the question was skipped.
    #[serde(default)]
    pub skipped: bool,
}

/// The submission's overall status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmissionStatus {
    /// Answered (the default).
    #[default]
    Answered,
    /// Skipped as a whole.
    Skipped,
}

/// `params.input` of `threads.add_structured_input`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// Answered or skipped.
    #[serde(default)]
    pub status: SubmissionStatus,
    /// Answers by question id.
    #[serde(default)]
    pub answers: BTreeMap<String, Answer>,
}

/// Records `submission` on `inputs`; returns the item's new status.
pub fn apply(inputs: &mut [Question], submission: &Submission) -> InputStatus {
    log_unknown_answers(inputs, submission);
    for question in inputs.iter_mut() {
        let given = submission.answers.get(question.id());
        let recorded = match given {
            Some(a)
                if submission.status == SubmissionStatus::Answered
                    && !a.skipped
                    && !a.values.is_empty() =>
            {
                let mut values = a.values.clone();
                if let Question::MultipleChoice {
                    multiple: false, ..
                } = question
                {
                    values.truncate(1);
                }
                Answer {
                    values,
                    skipped: false,
                }
            }
            _ => Answer {
                values: Vec::new(),
                skipped: true,
            },
        };
        match question {
            Question::MultipleChoice { answer, .. } | Question::Freeform { answer, .. } => {
                *answer = Some(recorded);
            }
        }
    }
    match submission.status {
        SubmissionStatus::Answered => InputStatus::Answered,
        SubmissionStatus::Skipped => InputStatus::Skipped,
    }
}

/// Logs the answers to questions `inputs` does not hold (they are ignored).
fn log_unknown_answers(inputs: &[Question], submission: &Submission) {
    let unknown: Vec<&String> = submission
        .answers
        .keys()
        .filter(|id| !inputs.iter().any(|q| q.id() == id.as_str()))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(?unknown, "answers to unknown questions ignored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn questions() -> Vec<Question> {
        serde_json::from_value(json!([
            {"type": "multiple_choice", "id": "one", "question": "Which?",
             "options": [{"value": "A"}, {"value": "B"}]},
            {"type": "multiple_choice", "id": "many", "question": "Which ones?",
             "options": [{"value": "A"}, {"value": "B"}], "multiple": true},
            {"type": "freeform", "id": "free", "question": "Why?"}
        ]))
        .unwrap()
    }

    fn submit(value: serde_json::Value) -> (InputStatus, serde_json::Value) {
        let mut inputs = questions();
        let submission: Submission = serde_json::from_value(value).unwrap();
        let status = apply(&mut inputs, &submission);
        let answers = inputs
            .iter()
            .map(|q| serde_json::to_value(q.answer()).unwrap())
            .collect();
        (status, answers)
    }

    #[test]
    fn answers_are_recorded_as_the_reference_does() {
        let (status, answers) = submit(json!({"answers": {
            "one": {"values": ["B", "A"]},
            "many": {"values": ["A", "B"]},
            "ghost": {"values": ["x"]}
        }}));
        assert_eq!(status, InputStatus::Answered);
        assert_eq!(
            answers,
            json!([
                {"values": ["B"], "skipped": false},
                {"values": ["A", "B"], "skipped": false},
                {"values": [], "skipped": true}
            ])
        );
    }

    #[test]
    fn skips_of_every_shape_record_skipped() {
        let (status, answers) = submit(json!({"status": "skipped",
            "answers": {"one": {"values": ["A"]}}}));
        assert_eq!(status, InputStatus::Skipped);
        assert!(
            answers
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["skipped"] == true)
        );
        let (status, answers) = submit(json!({"answers": {
            "one": {"values": ["A"], "skipped": true},
            "many": {"values": []}
        }}));
        assert_eq!(status, InputStatus::Answered);
        assert_eq!(answers[0]["skipped"], true);
        assert_eq!(answers[1]["skipped"], true);
    }
}

//! What the composer's menus choose for a turn: the model (ChatKit's model
//! picker, `inference_options.model`, among `CHATKIT_MODELS`) and a mode of
//! the tool menu (`inference_options.tool_choice.id`), checked when the
//! message arrives and read back from the stored message on every turn it
//! starts (a retry uses the same choice).

use serde_json::Value;

use taskpilot_chatkit::responder::InvalidOptions;
use taskpilot_chatkit::types::{InferenceOptions, ItemKind, ThreadItem};

use crate::tools::Tool;

/// An entry of the tool menu (`composer.tools` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `add_task`: the turn starts by creating a task from the message.
    AddTask,
    /// `complete_task`: the turn starts by completing the task the message names.
    CompleteTask,
    /// `plan_day`: the turn reads the open tasks and proposes a plan for today.
    PlanDay,
}

impl Mode {
    /// Every mode, in menu order.
    pub const ALL: [Mode; 3] = [Mode::AddTask, Mode::CompleteTask, Mode::PlanDay];

    /// Its id in `tool_choice.id`.
    pub fn id(self) -> &'static str {
        match self {
            Mode::AddTask => "add_task",
            Mode::CompleteTask => "complete_task",
            Mode::PlanDay => "plan_day",
        }
    }

    /// The mode with this id.
    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.id() == id)
    }

    /// The tool the turn's first model round must call.
    pub fn forced(self) -> Tool {
        match self {
            Mode::AddTask => Tool::CreateTask,
            Mode::CompleteTask => Tool::CompleteTask,
            Mode::PlanDay => Tool::ListTasks,
        }
    }

    /// What the model is told for the turn, if anything beyond the forced tool.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Mode::PlanDay => Some(
                "The user chose \"Plan my day\": read their open tasks, then propose an order \
                 for today (overdue and due today first, then the rest), in a short list. \
                 Change no task unless the user asks.",
            ),
            Mode::AddTask | Mode::CompleteTask => None,
        }
    }
}

/// A turn's choice: the model and the mode, if one was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<'a> {
    /// The model the turn asks.
    pub model: &'a str,
    /// The tool-menu entry, when the turn's input is the message that chose it.
    pub mode: Option<Mode>,
}

/// The models a user may pick: the default first, then the rest of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Models {
    allowed: Vec<String>,
}

impl Models {
    /// `default` (always allowed) and `others`.
    pub fn new(default: impl Into<String>, others: impl IntoIterator<Item = String>) -> Self {
        let mut allowed = vec![default.into()];
        for model in others {
            if !allowed.contains(&model) {
                allowed.push(model);
            }
        }
        Self { allowed }
    }

    /// The model of turns that chose none.
    pub fn default_model(&self) -> &str {
        &self.allowed[0]
    }

    /// Whether `model` may be picked.
    pub fn allows(&self, model: &str) -> bool {
        self.allowed.iter().any(|m| m == model)
    }

    /// Every model, the default first.
    pub fn all(&self) -> &[String] {
        &self.allowed
    }

    /// Checks a new message's options: a model off the list, or a tool id
    /// the menu does not hold, is refused with the allowed values.
    pub fn check(&self, options: &InferenceOptions) -> Result<(), InvalidOptions> {
        if let Some(model) = &options.model
            && !self.allows(model)
        {
            return Err(InvalidOptions(format!(
                "model `{model}` is not offered; choose one of: {}",
                self.allowed.join(", ")
            )));
        }
        match &options.tool_choice {
            None | Some(Value::Null) => Ok(()),
            Some(choice) => match choice["id"].as_str().and_then(Mode::parse) {
                Some(_) => Ok(()),
                None => Err(InvalidOptions(format!(
                    "unknown tool choice {choice}; the tool menu offers: {}",
                    Mode::ALL.map(Mode::id).join(", ")
                ))),
            },
        }
    }

    /// The choice of a turn: the model of the latest user message of
    /// `history` (a model no longer offered falls back to the default); the
    /// mode only when `input` is that message (a new one or a retried one).
    pub fn for_turn(&self, history: &[ThreadItem], input: Option<&ThreadItem>) -> Choice<'_> {
        fn options(item: &ThreadItem) -> Option<&InferenceOptions> {
            match &item.kind {
                ItemKind::UserMessage {
                    inference_options, ..
                } => Some(inference_options),
                _ => None,
            }
        }
        let latest = input
            .and_then(options)
            .or_else(|| history.iter().rev().find_map(options));
        let chosen = latest.and_then(|o| o.model.as_deref());
        let model = self
            .allowed
            .iter()
            .find(|m| Some(m.as_str()) == chosen)
            .unwrap_or(&self.allowed[0]);
        let mode = input
            .and_then(options)
            .and_then(|o| o.tool_choice.as_ref())
            .and_then(|c| c["id"].as_str())
            .and_then(Mode::parse);
        Choice { model, mode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskpilot_chatkit::types::UserContent;

    fn models() -> Models {
        Models::new("gpt-4.1", ["o4-mini".to_owned(), "gpt-4.1".to_owned()])
    }

    fn options(model: Option<&str>, tool: Option<Value>) -> InferenceOptions {
        InferenceOptions {
            model: model.map(str::to_owned),
            tool_choice: tool,
        }
    }

    fn said(model: Option<&str>, tool: Option<&str>) -> ThreadItem {
        ThreadItem::new(
            "msg_1",
            "thr_1",
            ItemKind::UserMessage {
                content: vec![UserContent::InputText { text: "hi".into() }],
                attachments: vec![],
                quoted_text: None,
                inference_options: options(model, tool.map(|id| json!({"id": id}))),
            },
        )
    }

    #[test]
    fn the_default_model_comes_first_and_only_once() {
        let m = models();
        assert_eq!(m.all(), ["gpt-4.1", "o4-mini"]);
        assert_eq!(m.default_model(), "gpt-4.1");
        assert!(m.allows("o4-mini"));
        assert!(!m.allows("gpt-4o"));
    }

    #[test]
    fn a_model_off_the_list_is_refused_naming_the_allowed_ones() {
        let err = models().check(&options(Some("gpt-4o"), None)).unwrap_err();
        assert_eq!(
            err.0,
            "model `gpt-4o` is not offered; choose one of: gpt-4.1, o4-mini"
        );
        assert!(models().check(&options(Some("o4-mini"), None)).is_ok());
        assert!(models().check(&options(None, None)).is_ok());
    }

    #[test]
    fn an_unknown_tool_id_is_refused_naming_the_menu() {
        for bad in [json!({"id": "search"}), json!({}), json!("add_task")] {
            let err = models()
                .check(&options(None, Some(bad.clone())))
                .unwrap_err();
            assert!(
                err.0
                    .ends_with("the tool menu offers: add_task, complete_task, plan_day"),
                "{bad}: {}",
                err.0
            );
        }
        for good in ["add_task", "complete_task", "plan_day"] {
            assert!(
                models()
                    .check(&options(None, Some(json!({"id": good}))))
                    .is_ok()
            );
        }
        assert!(models().check(&options(None, Some(Value::Null))).is_ok());
    }

    #[test]
    fn each_mode_forces_its_tool() {
        assert_eq!(Mode::AddTask.forced(), Tool::CreateTask);
        assert_eq!(Mode::CompleteTask.forced(), Tool::CompleteTask);
        assert_eq!(Mode::PlanDay.forced(), Tool::ListTasks);
        assert!(Mode::PlanDay.note().is_some());
        assert!(Mode::AddTask.note().is_none());
        assert!(Mode::CompleteTask.note().is_none());
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.id()), Some(mode));
        }
    }

    #[test]
    fn a_turn_uses_its_messages_choice() {
        let m = models();
        let input = said(Some("o4-mini"), Some("plan_day"));
        let choice = m.for_turn(&[], Some(&input));
        assert_eq!(choice.model, "o4-mini");
        assert_eq!(choice.mode, Some(Mode::PlanDay));
    }

    #[test]
    fn a_turn_without_a_message_keeps_the_latest_model_but_no_mode() {
        let m = models();
        let history = [
            said(Some("gpt-4.1"), None),
            said(Some("o4-mini"), Some("add_task")),
        ];
        let choice = m.for_turn(&history, None);
        assert_eq!(choice.model, "o4-mini");
        assert_eq!(choice.mode, None);
    }

    #[test]
    fn a_model_no_longer_offered_falls_back_to_the_default() {
        let m = models();
        let input = said(Some("gpt-3.5-turbo"), None);
        assert_eq!(m.for_turn(&[], Some(&input)).model, "gpt-4.1");
        assert_eq!(m.for_turn(&[], None).model, "gpt-4.1");
    }
}

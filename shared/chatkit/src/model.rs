//! The model port: one streamed model round in typed terms. The request says
//! what the agent wants (instructions, the conversation, the tools); the
//! events say what the model does (text as it streams, function calls, the
//! end). The OpenAI Responses API wire format and its mapping live in
//! `taskpilot-openai`; nothing here knows a vendor field name.

use std::future::Future;
use std::time::Instant;

use serde_json::Value;

pub use taskpilot_domain::budget::TokenUsage;

/// Why the model could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

/// Who said a message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (and context the server adds on the user's side).
    User,
    /// The assistant.
    Assistant,
    /// The application's per-turn context (the user's date, zone, language,
    /// a mode's note), sent after the conversation so that what comes
    /// before it stays the same from turn to turn (a cacheable prefix).
    Developer,
}

/// One entry of the conversation the model sees.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelInput {
    /// A message.
    Message {
        /// Who said it.
        role: Role,
        /// What was said.
        text: String,
    },
    /// A function call the model made earlier.
    FunctionCall(FunctionCall),
    /// The result of a function call.
    FunctionOutput {
        /// The call it answers.
        call_id: String,
        /// The result, as text (JSON for our tools).
        output: String,
    },
    /// Files the user attached to their message (images the model sees,
    /// documents it reads), by short-lived URLs.
    Files(Vec<ModelFile>),
}

/// A file the model is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// Where the model can read it (a short-lived URL).
    pub url: String,
    /// Whether it is an image (else a document such as a PDF).
    pub image: bool,
}

impl ModelInput {
    /// Roughly what it weighs in a request: its text in bytes.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Message { text, .. } => text.len(),
            Self::FunctionCall(call) => call.name.len() + call.arguments.len(),
            Self::FunctionOutput { output, .. } => output.len(),
            Self::Files(files) => files.iter().map(|f| f.url.len()).sum(),
        }
    }

    /// A message from the user's side.
    pub fn user(text: impl Into<String>) -> Self {
        Self::Message {
            role: Role::User,
            text: text.into(),
        }
    }

    /// A message from the assistant.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::Message {
            role: Role::Assistant,
            text: text.into(),
        }
    }
}

/// A function call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// Pairs the call with its output.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments, as JSON text.
    pub arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Its name.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// One model round.
#[derive(Debug, Clone, Copy)]
pub struct ModelRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// System instructions.
    pub instructions: &'a str,
    /// Sampling temperature.
    pub temperature: f64,
    /// The conversation so far.
    pub input: &'a [ModelInput],
    /// The tools offered.
    pub tools: &'a [ToolSpec],
    /// A tool the model must call this round (`None`: the model chooses).
    pub tool_choice: Option<&'a str>,
    /// Groups requests that share a prefix (a thread's turns) for the
    /// provider's prompt cache.
    pub cache_key: Option<&'a str>,
}

/// What a streamed round reports, in order. `item` names the model's own
/// message (a round may hold several); `part` indexes its content parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    /// An assistant message starts.
    MessageStarted {
        /// The model's id of the message.
        item: String,
    },
    /// A text part of a message starts.
    TextStarted {
        /// The message.
        item: String,
        /// The part.
        part: usize,
    },
    /// More text.
    TextDelta {
        /// The message.
        item: String,
        /// The part.
        part: usize,
        /// The new text.
        delta: String,
    },
    /// A text part is complete.
    TextDone {
        /// The message.
        item: String,
        /// The part.
        part: usize,
        /// The whole text of the part.
        text: String,
    },
    /// A message is complete.
    MessageDone {
        /// The message.
        item: String,
    },
    /// The model calls a function (complete, arguments included).
    FunctionCall(FunctionCall),
    /// What the round cost, as the model reports it (just before
    /// `Completed` or `Failed`; absent when the stream was cut off).
    Usage(TokenUsage),
    /// The round ended normally.
    Completed,
    /// The round failed or was cut short by the model's side.
    Failed {
        /// What happened (for logs, never shown to users).
        reason: String,
    },
}

/// Events of one streamed round.
pub trait ModelStream: Send {
    /// The next event; `None` at the end of the stream.
    fn next_event(&mut self)
    -> impl Future<Output = Option<Result<ModelEvent, ModelError>>> + Send;
}

/// Starts streamed rounds.
pub trait ModelClient: Send + Sync {
    /// The stream of one round.
    type Stream: ModelStream;

    /// Starts a round; retries before the first event are the client's
    /// business, within `deadline`.
    fn start(
        &self,
        request: &ModelRequest<'_>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Stream, ModelError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_call_weighs_its_name_and_arguments() {
        let call = ModelInput::FunctionCall(FunctionCall {
            call_id: "call_123456".into(),
            name: "list_tasks".into(),
            arguments: r#"{"a":1}"#.into(),
        });
        assert_eq!(call.bytes(), 10 + 7);
    }
}

//! The OpenAI Responses API (`POST /responses`, streamed) as the ChatKit
//! model port: the request body built from a [`ModelRequest`], the streamed
//! events as serde types, and their mapping to [`ModelEvent`]s. This is the
//! only place that knows the Responses API's field names.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use taskpilot_chatkit::model::{
    FunctionCall, ModelClient, ModelError, ModelEvent, ModelInput, ModelRequest, ModelStream, Role,
    TokenUsage,
};

use crate::sse::EventStream;
use crate::{Call, OpenAi};

/// The body of a streamed `POST /responses`.
#[derive(Debug, Serialize)]
pub struct ResponsesRequest<'a> {
    model: &'a str,
    instructions: &'a str,
    /// Left out for models that refuse it (reasoning models).
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    input: Vec<InputItem<'a>>,
    tools: Vec<FunctionTool<'a>>,
    /// A function the model must call (`{"type":"function","name"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ForcedFunction<'a>>,
    parallel_tool_calls: bool,
    /// Routes requests with one prefix to one prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<&'a str>,
    store: bool,
    stream: bool,
}

/// One input item: an easy message (`{role, content}`) or a typed item.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum InputItem<'a> {
    Message {
        role: &'static str,
        content: &'a str,
    },
    /// A user message of parts (images and files).
    Parts {
        role: &'static str,
        content: Vec<InputPart<'a>>,
    },
    Typed(TypedInput<'a>),
}

/// A part of a user message: an image or a file, by URL.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InputPart<'a> {
    InputImage {
        image_url: &'a str,
        detail: &'static str,
    },
    InputFile {
        file_url: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TypedInput<'a> {
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: &'a str,
    },
}

/// A function tool: `{"type":"function", name, description, parameters}`.
#[derive(Debug, Serialize)]
struct FunctionTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

/// `tool_choice` naming one function.
#[derive(Debug, Serialize)]
struct ForcedFunction<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
}

/// Whether `model` takes a sampling `temperature`: the reasoning models
/// (the o-series and the GPT-5 family but its chat models) refuse it with a
/// 400 (`unsupported_parameter`).
pub fn accepts_temperature(model: &str) -> bool {
    let reasoning_o = model
        .strip_prefix('o')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    let gpt5 = model.starts_with("gpt-5") && !model.starts_with("gpt-5-chat");
    !(reasoning_o || gpt5)
}

impl<'a> ResponsesRequest<'a> {
    /// The streamed, unstored request for `request` (parallel tool calls on).
    pub fn new(request: &ModelRequest<'a>) -> Self {
        let input = request
            .input
            .iter()
            .map(|item| match item {
                ModelInput::Message { role, text } => InputItem::Message {
                    role: match role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                        Role::Developer => "developer",
                    },
                    content: text,
                },
                ModelInput::FunctionCall(call) => InputItem::Typed(TypedInput::FunctionCall {
                    call_id: &call.call_id,
                    name: &call.name,
                    arguments: &call.arguments,
                }),
                ModelInput::FunctionOutput { call_id, output } => {
                    InputItem::Typed(TypedInput::FunctionCallOutput { call_id, output })
                }
                ModelInput::Files(files) => InputItem::Parts {
                    role: "user",
                    content: files
                        .iter()
                        .map(|f| match f.image {
                            true => InputPart::InputImage {
                                image_url: &f.url,
                                detail: "auto",
                            },
                            false => InputPart::InputFile { file_url: &f.url },
                        })
                        .collect(),
                },
            })
            .collect();
        let tools = request
            .tools
            .iter()
            .map(|t| FunctionTool {
                kind: "function",
                name: t.name,
                description: t.description,
                parameters: &t.parameters,
            })
            .collect();
        Self {
            model: request.model,
            instructions: request.instructions,
            temperature: accepts_temperature(request.model).then_some(request.temperature),
            input,
            tools,
            tool_choice: request.tool_choice.map(|name| ForcedFunction {
                kind: "function",
                name,
            }),
            parallel_tool_calls: true,
            prompt_cache_key: request.cache_key,
            store: false,
            stream: true,
        }
    }
}

/// The streamed events this client acts on; every other type is `Other`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub enum StreamedEvent {
    /// `response.output_item.added`
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// The item so far.
        item: OutputItem,
    },
    /// `response.output_item.done`
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        /// The complete item.
        item: OutputItem,
    },
    /// `response.content_part.added`
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        /// The message.
        item_id: String,
        /// The part.
        content_index: usize,
    },
    /// `response.output_text.delta`
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        /// The message.
        item_id: String,
        /// The part.
        content_index: usize,
        /// New text.
        delta: String,
    },
    /// `response.content_part.done`
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        /// The message.
        item_id: String,
        /// The part.
        content_index: usize,
        /// The complete part.
        part: ContentPart,
    },
    /// `response.completed`
    #[serde(rename = "response.completed")]
    Completed {
        /// The response, with its `usage`.
        #[serde(default)]
        response: Option<Value>,
    },
    /// `response.failed`
    #[serde(rename = "response.failed")]
    Failed {
        /// The response, with its `error`.
        #[serde(default)]
        response: Option<Value>,
    },
    /// `response.incomplete`
    #[serde(rename = "response.incomplete")]
    Incomplete {
        /// The response, with its `incomplete_details`.
        #[serde(default)]
        response: Option<Value>,
    },
    /// `error`
    #[serde(rename = "error")]
    Error {
        /// Error code.
        #[serde(default)]
        code: Option<String>,
        /// Error message.
        #[serde(default)]
        message: Option<String>,
    },
    /// Any other event (`response.created`, argument deltas, …).
    #[serde(other)]
    Other,
}

/// Output items this client acts on.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// An assistant message.
    Message {
        /// Its id.
        id: String,
    },
    /// A function call.
    FunctionCall {
        /// Pairs the call with its output.
        call_id: String,
        /// The tool.
        name: String,
        /// JSON arguments (complete on `done`).
        #[serde(default)]
        arguments: String,
    },
    /// Reasoning, web search, …
    #[serde(other)]
    Other,
}

/// A message content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    OutputText {
        /// The text.
        text: String,
    },
    /// A refusal, shown as the answer's text.
    Refusal {
        /// The refusal.
        refusal: String,
    },
    /// Anything else.
    #[serde(other)]
    Other,
}

impl StreamedEvent {
    /// The round's token usage, carried by the event that ends it
    /// (`response.completed`, `.incomplete` or `.failed`).
    pub fn usage(&self) -> Option<TokenUsage> {
        let (Self::Completed { response }
        | Self::Failed { response }
        | Self::Incomplete { response }) = self
        else {
            return None;
        };
        let usage = response.as_ref()?.get("usage")?;
        let count = |v: &Value| v.as_u64();
        Some(TokenUsage {
            input: count(&usage["input_tokens"])?,
            cached_input: count(&usage["input_tokens_details"]["cached_tokens"]).unwrap_or(0),
            output: count(&usage["output_tokens"]).unwrap_or(0),
        })
    }

    /// The model event this stands for, if any.
    pub fn into_model_event(self) -> Option<ModelEvent> {
        Some(match self {
            Self::OutputItemAdded {
                item: OutputItem::Message { id },
            } => ModelEvent::MessageStarted { item: id },
            Self::OutputItemDone { item } => match item {
                OutputItem::Message { id } => ModelEvent::MessageDone { item: id },
                OutputItem::FunctionCall {
                    call_id,
                    name,
                    arguments,
                } => ModelEvent::FunctionCall(FunctionCall {
                    call_id,
                    name,
                    arguments,
                }),
                OutputItem::Other => return None,
            },
            Self::ContentPartAdded {
                item_id,
                content_index,
            } => ModelEvent::TextStarted {
                item: item_id,
                part: content_index,
            },
            Self::OutputTextDelta {
                item_id,
                content_index,
                delta,
            } => ModelEvent::TextDelta {
                item: item_id,
                part: content_index,
                delta,
            },
            Self::ContentPartDone {
                item_id,
                content_index,
                part,
            } => ModelEvent::TextDone {
                item: item_id,
                part: content_index,
                text: match part {
                    ContentPart::OutputText { text } => text,
                    ContentPart::Refusal { refusal } => refusal,
                    ContentPart::Other => String::new(),
                },
            },
            Self::Completed { .. } => ModelEvent::Completed,
            Self::Failed { response } | Self::Incomplete { response } => ModelEvent::Failed {
                reason: response
                    .map(|r| {
                        let why = if r["error"].is_null() {
                            &r["incomplete_details"]
                        } else {
                            &r["error"]
                        };
                        why.to_string()
                    })
                    .unwrap_or_else(|| "the response failed".into()),
            },
            Self::Error { code, message } => ModelEvent::Failed {
                reason: format!(
                    "{}: {}",
                    code.as_deref().unwrap_or("error"),
                    message.as_deref().unwrap_or("")
                ),
            },
            Self::OutputItemAdded { .. } | Self::Other => return None,
        })
    }
}

/// A streamed `POST /responses` as model events (the usage an ending event
/// carries comes first, as its own event).
pub struct ResponsesStream {
    events: EventStream,
    queued: Option<ModelEvent>,
}

impl ModelStream for ResponsesStream {
    async fn next_event(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(event) = self.queued.take() {
            return Some(Ok(event));
        }
        loop {
            match self.events.next_as::<StreamedEvent>().await? {
                Ok(event) => {
                    let usage = event.usage();
                    if let Some(event) = event.into_model_event() {
                        let Some(usage) = usage else {
                            return Some(Ok(event));
                        };
                        self.queued = Some(event);
                        return Some(Ok(ModelEvent::Usage(usage)));
                    }
                }
                Err(e) => return Some(Err(ModelError(e.to_string()))),
            }
        }
    }
}

impl ModelClient for OpenAi {
    type Stream = ResponsesStream;

    async fn start(
        &self,
        request: &ModelRequest<'_>,
        deadline: Instant,
    ) -> Result<ResponsesStream, ModelError> {
        let body = serde_json::to_value(ResponsesRequest::new(request))
            .map_err(|e| ModelError(format!("request encoding: {e}")))?;
        let call = Call {
            method: reqwest::Method::POST,
            path: "/responses",
            body: Some(&body),
            header: None,
            not_found: "the Responses API was not found (check OPENAI_BASE_URL and CHATKIT_MODEL)",
        };
        self.stream(&call, deadline)
            .await
            .map(|events| ResponsesStream {
                events,
                queued: None,
            })
            .map_err(|e| ModelError(e.to_string()))
    }
}

#[cfg(test)]
mod tests;

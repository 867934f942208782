//! Parsing the request envelope `{type, params, metadata?}` into a typed
//! request, with errors that name the offending field. Unknown fields inside
//! `params` are ignored (as ck-py does); an unknown `type` is an error.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{InferenceOptions, UserContent};

/// Page size when none is given.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page served (larger requests are clamped).
pub const MAX_LIMIT: usize = 100;
/// Longest text a user message may carry, in characters.
pub const MAX_MESSAGE_CHARS: usize = 8_000;

/// Why a request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or not an envelope.
    #[error("the request is not a ChatKit envelope: {0}")]
    Malformed(String),
    /// `type` names no operation.
    #[error("unknown request type `{0}`")]
    UnknownType(String),
    /// `params` do not fit the operation.
    #[error("params.{field}: {message}")]
    InvalidParams { field: String, message: String },
    /// A real ChatKit operation this server does not offer.
    #[error("`{0}` is not supported by this server")]
    NotSupported(String),
}

/// Sort order of pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

/// What the user sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserMessageInput {
    /// Text and tags.
    pub content: Vec<UserContent>,
    /// Attachment ids (none are accepted by this server).
    #[serde(default)]
    pub attachments: Vec<String>,
    /// Text the user quoted.
    #[serde(default)]
    pub quoted_text: Option<String>,
    /// Composer choices.
    #[serde(default)]
    pub inference_options: Option<InferenceOptions>,
}

/// A widget action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Action {
    /// E.g. `task.complete`.
    #[serde(rename = "type")]
    pub kind: String,
    /// E.g. `{"task_id": "…"}`.
    #[serde(default)]
    pub payload: Value,
}

/// Positive or negative feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    /// Thumbs up.
    Positive,
    /// Thumbs down.
    Negative,
}

/// Paging parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// 1–100.
    pub limit: usize,
    /// Direction.
    pub order: Order,
    /// Continue after this id.
    pub after: Option<String>,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `threads.create` (streaming).
    CreateThread { input: UserMessageInput },
    /// `threads.add_user_message` (streaming).
    AddUserMessage {
        thread_id: String,
        input: UserMessageInput,
    },
    /// `threads.add_client_tool_output` (streaming).
    AddClientToolOutput { thread_id: String, result: Value },
    /// `threads.retry_after_item` (streaming).
    RetryAfterItem { thread_id: String, item_id: String },
    /// `threads.custom_action` (streaming) or `threads.sync_custom_action` (JSON).
    CustomAction {
        thread_id: String,
        item_id: Option<String>,
        action: Action,
        streaming: bool,
    },
    /// `threads.get_by_id`.
    GetThread { thread_id: String },
    /// `threads.list`.
    ListThreads { paging: Paging },
    /// `threads.update`.
    UpdateThread { thread_id: String, title: String },
    /// `threads.delete`.
    DeleteThread { thread_id: String },
    /// `items.list`.
    ListItems { thread_id: String, paging: Paging },
    /// `items.feedback`.
    Feedback {
        thread_id: String,
        item_ids: Vec<String>,
        kind: FeedbackKind,
    },
}

impl Request {
    /// Whether the answer is a server-sent event stream.
    pub fn is_streaming(&self) -> bool {
        match self {
            Request::CreateThread { .. }
            | Request::AddUserMessage { .. }
            | Request::AddClientToolOutput { .. }
            | Request::RetryAfterItem { .. } => true,
            Request::CustomAction { streaming, .. } => *streaming,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    params: Value,
}

#[derive(Deserialize)]
struct ThreadParams {
    thread_id: String,
}

#[derive(Deserialize)]
struct CreateParams {
    input: UserMessageInput,
}

#[derive(Deserialize)]
struct AddMessageParams {
    thread_id: String,
    input: UserMessageInput,
}

#[derive(Deserialize)]
struct ToolOutputParams {
    thread_id: String,
    #[serde(default)]
    result: Value,
}

#[derive(Deserialize)]
struct RetryParams {
    thread_id: String,
    item_id: String,
}

#[derive(Deserialize)]
struct ActionParams {
    thread_id: String,
    #[serde(default)]
    item_id: Option<String>,
    action: Action,
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<Order>,
    #[serde(default)]
    after: Option<String>,
}

#[derive(Deserialize)]
struct ListItemsParams {
    thread_id: String,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<Order>,
    #[serde(default)]
    after: Option<String>,
}

#[derive(Deserialize)]
struct UpdateParams {
    thread_id: String,
    title: String,
}

#[derive(Deserialize)]
struct FeedbackParams {
    thread_id: String,
    item_ids: Vec<String>,
    kind: FeedbackKind,
}

fn params<T: DeserializeOwned>(value: Value) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            Some(name) if path == "." => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if path == "." => "params".to_owned(),
            None => path,
        };
        RequestError::InvalidParams { field, message }
    })
}

fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    RequestError::InvalidParams {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn paging(p: ListParams) -> Result<Paging, RequestError> {
    let limit = match p.limit {
        None => DEFAULT_LIMIT,
        Some(n) if n < 1 => return Err(invalid("limit", "must be at least 1")),
        Some(n) => (n as usize).min(MAX_LIMIT),
    };
    Ok(Paging {
        limit,
        order: p.order.unwrap_or_default(),
        after: p.after,
    })
}

fn checked(input: UserMessageInput) -> Result<UserMessageInput, RequestError> {
    if !input.attachments.is_empty() {
        return Err(RequestError::NotSupported("attachments".into()));
    }
    let text: usize = input
        .content
        .iter()
        .map(|c| match c {
            UserContent::InputText { text } | UserContent::InputTag { text, .. } => {
                text.chars().count()
            }
        })
        .sum();
    if text == 0 {
        return Err(invalid("input.content", "the message is empty"));
    }
    if text > MAX_MESSAGE_CHARS {
        return Err(invalid(
            "input.content",
            format!("the message is longer than {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(input)
}

/// Parses a request body.
pub fn parse(body: &[u8]) -> Result<Request, RequestError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let p = envelope.params;
    Ok(match envelope.kind.as_str() {
        "threads.create" => {
            let CreateParams { input } = params(p)?;
            Request::CreateThread {
                input: checked(input)?,
            }
        }
        "threads.add_user_message" => {
            let AddMessageParams { thread_id, input } = params(p)?;
            Request::AddUserMessage {
                thread_id,
                input: checked(input)?,
            }
        }
        "threads.add_client_tool_output" => {
            let ToolOutputParams { thread_id, result } = params(p)?;
            Request::AddClientToolOutput { thread_id, result }
        }
        "threads.retry_after_item" => {
            let RetryParams { thread_id, item_id } = params(p)?;
            Request::RetryAfterItem { thread_id, item_id }
        }
        kind @ ("threads.custom_action" | "threads.sync_custom_action") => {
            let ActionParams {
                thread_id,
                item_id,
                action,
            } = params(p)?;
            Request::CustomAction {
                thread_id,
                item_id,
                action,
                streaming: kind == "threads.custom_action",
            }
        }
        "threads.get_by_id" => {
            let ThreadParams { thread_id } = params(p)?;
            Request::GetThread { thread_id }
        }
        "threads.list" => Request::ListThreads {
            paging: paging(params(if p.is_null() {
                Value::Object(Default::default())
            } else {
                p
            })?)?,
        },
        "threads.update" => {
            let UpdateParams { thread_id, title } = params(p)?;
            let title = title.trim().to_owned();
            if title.is_empty()
                || title.chars().count() > 200
                || title.chars().any(char::is_control)
            {
                return Err(invalid(
                    "title",
                    "must be 1-200 characters without control characters",
                ));
            }
            Request::UpdateThread { thread_id, title }
        }
        "threads.delete" => {
            let ThreadParams { thread_id } = params(p)?;
            Request::DeleteThread { thread_id }
        }
        "items.list" => {
            let ListItemsParams {
                thread_id,
                limit,
                order,
                after,
            } = params(p)?;
            Request::ListItems {
                thread_id,
                paging: paging(ListParams {
                    limit,
                    order,
                    after,
                })?,
            }
        }
        "items.feedback" => {
            let FeedbackParams {
                thread_id,
                item_ids,
                kind,
            } = params(p)?;
            Request::Feedback {
                thread_id,
                item_ids,
                kind,
            }
        }
        kind @ ("threads.add_structured_input"
        | "attachments.create"
        | "attachments.delete"
        | "input.transcribe") => return Err(RequestError::NotSupported(kind.to_owned())),
        other => return Err(RequestError::UnknownType(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<Request, RequestError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn every_operation_parses() {
        let input = json!({"content":[{"type":"input_text","text":"hi"}],"attachments":[],"inference_options":{"tool_choice":null,"model":null}});
        let cases = [
            (
                json!({"type":"threads.create","params":{"input":input}}),
                true,
            ),
            (
                json!({"type":"threads.add_user_message","params":{"thread_id":"thr_1","input":input}}),
                true,
            ),
            (
                json!({"type":"threads.add_client_tool_output","params":{"thread_id":"thr_1","result":{"x":1}}}),
                true,
            ),
            (
                json!({"type":"threads.retry_after_item","params":{"thread_id":"thr_1","item_id":"msg_1"}}),
                true,
            ),
            (
                json!({"type":"threads.custom_action","params":{"thread_id":"thr_1","item_id":"wdg_1","action":{"type":"task.complete","payload":{"task_id":"t"}}}}),
                true,
            ),
            (
                json!({"type":"threads.sync_custom_action","params":{"thread_id":"thr_1","item_id":null,"action":{"type":"task.reopen"}}}),
                false,
            ),
            (
                json!({"type":"threads.get_by_id","params":{"thread_id":"thr_1"}}),
                false,
            ),
            (
                json!({"type":"threads.list","params":{"limit":9999,"order":"desc"}}),
                false,
            ),
            (json!({"type":"threads.list"}), false),
            (
                json!({"type":"threads.update","params":{"thread_id":"thr_1","title":"Renamed"}}),
                false,
            ),
            (
                json!({"type":"threads.delete","params":{"thread_id":"thr_1"}}),
                false,
            ),
            (
                json!({"type":"items.list","params":{"thread_id":"thr_1","limit":2,"order":"asc","after":"msg_1"}}),
                false,
            ),
            (
                json!({"type":"items.feedback","params":{"thread_id":"thr_1","item_ids":["msg_1"],"kind":"positive"}}),
                false,
            ),
        ];
        for (body, streaming) in cases {
            let r = req(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(r.is_streaming(), streaming, "{body}");
        }
        match req(json!({"type":"threads.list","params":{"limit":9999}})).unwrap() {
            Request::ListThreads { paging } => {
                assert_eq!((paging.limit, paging.order), (MAX_LIMIT, Order::Desc))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        assert!(matches!(parse(b"{"), Err(RequestError::Malformed(_))));
        assert!(matches!(parse(b"[]"), Err(RequestError::Malformed(_))));
        assert!(matches!(
            req(json!({"params":{}})),
            Err(RequestError::Malformed(_))
        ));
        assert_eq!(
            req(json!({"type":"threads.explode"})),
            Err(RequestError::UnknownType("threads.explode".into()))
        );
        for kind in [
            "attachments.create",
            "input.transcribe",
            "threads.add_structured_input",
            "attachments.delete",
        ] {
            assert!(
                matches!(
                    req(json!({"type":kind,"params":{}})),
                    Err(RequestError::NotSupported(_))
                ),
                "{kind}"
            );
        }
        match req(json!({"type":"threads.get_by_id","params":{}})) {
            Err(RequestError::InvalidParams { field, .. }) => assert_eq!(field, "thread_id"),
            other => panic!("{other:?}"),
        }
        match req(json!({"type":"items.list","params":{"thread_id":"t","order":"sideways"}})) {
            Err(RequestError::InvalidParams { field, .. }) => assert_eq!(field, "order"),
            other => panic!("{other:?}"),
        }
        let empty =
            json!({"type":"threads.create","params":{"input":{"content":[],"attachments":[]}}});
        assert!(matches!(
            req(empty),
            Err(RequestError::InvalidParams { .. })
        ));
        let attached = json!({"type":"threads.create","params":{"input":{"content":[{"type":"input_text","text":"x"}],"attachments":["atc_1"]}}});
        assert!(matches!(req(attached), Err(RequestError::NotSupported(_))));
        assert!(matches!(
            req(json!({"type":"threads.list","params":{"limit":0}})),
            Err(RequestError::InvalidParams { .. })
        ));
    }
}

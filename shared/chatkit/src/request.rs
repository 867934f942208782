//! The request envelope `{type, params, metadata?}` as one serde-derived
//! union (like ck-py's `ChatKitReq`), then [`Request::validate`] for the rules
//! serde cannot say. Unknown fields are ignored (as ck-py does); an unknown
//! `type` is an error; errors name the offending field.

use serde::Deserialize;
use serde_json::Value;

use taskpilot_domain::DomainError;

use crate::attachments::MAX_PER_MESSAGE;
use crate::ids;
use crate::structured::Submission;
use crate::types::UserContent;
use taskpilot_domain::input::validate_title;

pub use crate::params::{
    Action, ActionParams, DEFAULT_LIMIT, FeedbackKind, ItemsQuery, MAX_LIMIT, Order, Paging,
    UserMessageInput, content_text,
};

/// Longest text a user message may carry (its text and tags), in characters.
pub const MAX_MESSAGE_CHARS: usize = 8_000;
/// Longest quoted text, in characters.
pub const MAX_QUOTE_CHARS: usize = 8_000;
/// Most content parts in one message.
pub const MAX_PARTS: usize = 50;
/// Longest tag id, in characters.
pub const MAX_TAG_ID_CHARS: usize = 128;
/// Longest tag text (or group), in characters.
pub const MAX_TAG_TEXT_CHARS: usize = 200;
/// Largest tag `data`, as JSON bytes.
pub const MAX_TAG_DATA_BYTES: usize = 2_048;
/// Most items one `items.feedback` may rate.
pub const MAX_FEEDBACK_ITEMS: usize = 50;

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
    InvalidParams {
        /// Dotted path below `params`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A real ChatKit operation this server does not offer.
    #[error("`{0}` is not supported by this server")]
    NotSupported(String),
}

/// A request, by its `type`, with its `params`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", content = "params")]
pub enum Request {
    /// Starts a thread with a message (streamed).
    #[serde(rename = "threads.create")]
    CreateThread {
        /// The first message.
        input: UserMessageInput,
    },
    /// Adds a message to a thread (streamed).
    #[serde(rename = "threads.add_user_message")]
    AddUserMessage {
        /// The thread.
        thread_id: String,
        /// The message.
        input: UserMessageInput,
    },
    /// The browser's result of a client tool call (streamed).
    #[serde(rename = "threads.add_client_tool_output")]
    AddClientToolOutput {
        /// The thread.
        thread_id: String,
        /// The result.
        #[serde(default)]
        result: Value,
    },
    /// Answers again after a user message (streamed).
    #[serde(rename = "threads.retry_after_item")]
    RetryAfterItem {
        /// The thread.
        thread_id: String,
        /// The user message to answer again.
        item_id: String,
    },
    /// A widget action (streamed).
    #[serde(rename = "threads.custom_action")]
    CustomAction(ActionParams),
    /// A widget action answered as JSON.
    #[serde(rename = "threads.sync_custom_action")]
    SyncCustomAction(ActionParams),
    /// One thread with its first items.
    #[serde(rename = "threads.get_by_id")]
    GetThread {
        /// The thread.
        thread_id: String,
    },
    /// A page of threads.
    #[serde(rename = "threads.list")]
    ListThreads(Paging),
    /// Renames a thread.
    #[serde(rename = "threads.update")]
    UpdateThread {
        /// The thread.
        thread_id: String,
        /// The new title.
        title: String,
    },
    /// Deletes a thread and its items.
    #[serde(rename = "threads.delete")]
    DeleteThread {
        /// The thread.
        thread_id: String,
    },
    /// A page of a thread's items.
    #[serde(rename = "items.list")]
    ListItems(ItemsQuery),
    /// Thumbs up or down on items.
    #[serde(rename = "items.feedback")]
    Feedback {
        /// The thread.
        thread_id: String,
        /// The items.
        item_ids: Vec<String>,
        /// Up or down.
        kind: FeedbackKind,
    },
    /// Answers to a structured-input item (streamed).
    #[serde(rename = "threads.add_structured_input")]
    AddStructuredInput {
        /// The thread.
        thread_id: String,
        /// The structured-input item.
        item_id: String,
        /// The answers.
        input: Submission,
    },
    /// Two-phase upload start: an attachment and where to upload it.
    #[serde(rename = "attachments.create")]
    CreateAttachment {
        /// The file name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its mime type.
        mime_type: String,
    },
    /// Removes an attachment and its file.
    #[serde(rename = "attachments.delete")]
    DeleteAttachment {
        /// The attachment.
        attachment_id: String,
    },
    /// Dictation: audio to text.
    #[serde(rename = "input.transcribe")]
    Transcribe {
        /// The audio, base64-encoded.
        audio_base64: String,
        /// Its mime type (e.g. `audio/webm;codecs=opus`).
        mime_type: String,
    },
}

/// A request body as the endpoint receives it: the request, and the time
/// zone the envelope's `metadata.timezone` names (the page's, when its
/// `api.fetch` adds it).
#[derive(Debug)]
pub struct Envelope {
    /// The request.
    pub request: Request,
    /// `metadata.timezone`, unchecked (a non-string as its JSON text).
    pub zone: Option<String>,
}

impl Envelope {
    /// Parses and validates a request body and reads its metadata. (The
    /// request and the metadata are two serde passes over the body: the
    /// request's enum is adjacently tagged, which leaves no room for a
    /// sibling field.)
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        Ok(Self {
            request: Request::parse(body)?,
            zone: envelope_zone(body),
        })
    }
}

/// The part of the envelope's `metadata` this server reads.
#[derive(Debug, Default, Deserialize)]
struct EnvelopeMetadata {
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    timezone: Option<serde_json::Value>,
}

/// `metadata.timezone` of a request body, when it is there. A value that is
/// not a string is returned as its JSON text (and then refused as a zone).
fn envelope_zone(body: &[u8]) -> Option<String> {
    let envelope: EnvelopeMetadata = serde_json::from_slice(body).ok()?;
    match envelope.metadata?.timezone? {
        serde_json::Value::Null => None,
        serde_json::Value::String(name) => Some(name),
        other => Some(other.to_string()),
    }
}

impl Request {
    /// Whether `body` is a dictation (`"type": "input.transcribe"`), read
    /// without building the request: the endpoint applies the chat size
    /// limit to everything else before parsing anything.
    pub fn is_dictation(body: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        serde_json::from_slice::<Kind<'_>>(body)
            .is_ok_and(|k| k.kind.as_deref() == Some("input.transcribe"))
    }

    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let error = match deserialize(body) {
            Ok(request) => return request.validate(),
            Err(error) => error,
        };
        // The slow path: tell a broken envelope from broken params, read absent
        // or null params as `{}`, and parse again with `type` first (serde can
        // only track the path inside params when it sees the tag first).
        let envelope: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::Malformed(e.to_string()))?;
        let Some(fields) = envelope.as_object() else {
            return Err(RequestError::Malformed("expected a JSON object".into()));
        };
        let kind = match fields.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => return Err(RequestError::Malformed("`type` must be a string".into())),
            None => return Err(RequestError::Malformed("missing field `type`".into())),
        };
        let params = match fields.get("params") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(params) => params.clone(),
        };
        let canonical = format!(
            "{{\"type\":{},\"params\":{params}}}",
            Value::String(kind.clone())
        );
        match deserialize(canonical.as_bytes()) {
            Ok(request) => request.validate(),
            Err(again) if again.path().to_string() == "." => Err(params_error(error, &kind)),
            Err(again) => Err(params_error(again, &kind)),
        }
    }

    /// The rules beyond the types: message length, no attachments, title
    /// rules, and the operations this server does not offer.
    pub fn validate(self) -> Result<Self, RequestError> {
        match self {
            Request::CreateThread { input } => Ok(Request::CreateThread {
                input: checked(input)?,
            }),
            Request::AddUserMessage { thread_id, input } => Ok(Request::AddUserMessage {
                thread_id,
                input: checked(input)?,
            }),
            Request::Feedback {
                thread_id,
                item_ids,
                kind,
            } => {
                // None is a no-op, as in ck-py; too many is refused before any read.
                if item_ids.len() > MAX_FEEDBACK_ITEMS {
                    return Err(invalid(
                        "item_ids",
                        format!("at most {MAX_FEEDBACK_ITEMS} items per request"),
                    ));
                }
                Ok(Request::Feedback {
                    thread_id,
                    item_ids,
                    kind,
                })
            }
            Request::UpdateThread { thread_id, title } => {
                let title = validate_title(&title).map_err(|e| match e {
                    DomainError::Validation { field, message } => {
                        RequestError::InvalidParams { field, message }
                    }
                    other => invalid("title", other.to_string()),
                })?;
                Ok(Request::UpdateThread { thread_id, title })
            }
            other => Ok(other),
        }
    }

    /// Whether answering it asks a model (a turn the per-user budget
    /// counts): the streamed requests the assistant answers, and dictation.
    pub fn asks_model(&self) -> bool {
        matches!(
            self,
            Request::CreateThread { .. }
                | Request::AddUserMessage { .. }
                | Request::AddClientToolOutput { .. }
                | Request::RetryAfterItem { .. }
                | Request::AddStructuredInput { .. }
                | Request::Transcribe { .. }
        )
    }

    /// Whether the answer is a server-sent event stream.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            Request::CreateThread { .. }
                | Request::AddUserMessage { .. }
                | Request::AddClientToolOutput { .. }
                | Request::RetryAfterItem { .. }
                | Request::CustomAction(_)
                | Request::AddStructuredInput { .. }
        )
    }
}

type PathError = serde_path_to_error::Error<serde_json::Error>;

fn deserialize(body: &[u8]) -> Result<Request, PathError> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
}

/// Names the field a deserialization error is about.
fn params_error(e: PathError, kind: &str) -> RequestError {
    let path = e.path().to_string();
    if path == "type" {
        return RequestError::UnknownType(kind.to_owned());
    }
    // serde_json adds the position; the path says where.
    let message = e.inner().to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m)
        .to_owned();
    let below = path.strip_prefix("params").unwrap_or(&path);
    let below = below.trim_start_matches('.');
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next());
    let field = match (below, missing) {
        ("", Some(name)) => name.to_owned(),
        (below, Some(name)) => format!("{below}.{name}"),
        ("", None) => "params".to_owned(),
        (below, None) => below.to_owned(),
    };
    RequestError::InvalidParams { field, message }
}

fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    RequestError::InvalidParams {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn checked(input: UserMessageInput) -> Result<UserMessageInput, RequestError> {
    if input.attachments.len() > MAX_PER_MESSAGE {
        return Err(invalid(
            "input.attachments",
            format!("at most {MAX_PER_MESSAGE} attachments per message"),
        ));
    }
    if let Some(bad) = input.attachments.iter().find(|id| !ids::plausible(id)) {
        let shown: String = bad.chars().take(64).collect();
        return Err(invalid(
            "input.attachments",
            format!("`{shown}` is not an attachment id"),
        ));
    }
    let chars: usize = content_text(&input.content).chars().count();
    if chars == 0 && input.attachments.is_empty() {
        return Err(invalid("input.content", "the message is empty"));
    }
    if chars > MAX_MESSAGE_CHARS {
        return Err(invalid(
            "input.content",
            format!("the message is longer than {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    if input.content.len() > MAX_PARTS {
        return Err(invalid(
            "input.content",
            format!("a message has at most {MAX_PARTS} parts"),
        ));
    }
    for part in &input.content {
        if let UserContent::InputTag {
            id,
            text,
            data,
            group,
            ..
        } = part
        {
            let data_bytes = serde_json::to_string(data).map_or(usize::MAX, |d| d.len());
            if id.chars().count() > MAX_TAG_ID_CHARS
                || text.chars().count() > MAX_TAG_TEXT_CHARS
                || group
                    .as_ref()
                    .is_some_and(|g| g.chars().count() > MAX_TAG_TEXT_CHARS)
                || data_bytes > MAX_TAG_DATA_BYTES
            {
                return Err(invalid(
                    "input.content",
                    format!(
                        "a tag's id is at most {MAX_TAG_ID_CHARS} characters, its text and group \
                         {MAX_TAG_TEXT_CHARS}, its data {MAX_TAG_DATA_BYTES} bytes of JSON"
                    ),
                ));
            }
        }
    }
    if input
        .quoted_text
        .as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUOTE_CHARS)
    {
        return Err(invalid(
            "input.quoted_text",
            format!("the quoted text is longer than {MAX_QUOTE_CHARS} characters"),
        ));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_zone_is_read_from_metadata() {
        let body =
            br#"{"type":"threads.list","params":{},"metadata":{"timezone":"Asia/Tokyo","x":1}}"#;
        assert_eq!(envelope_zone(body), Some("Asia/Tokyo".into()));
        assert_eq!(envelope_zone(br#"{"type":"threads.list"}"#), None);
        assert_eq!(
            envelope_zone(br#"{"type":"t","metadata":{"timezone":5}}"#),
            Some("5".into())
        );
    }

    #[test]
    fn a_dictation_is_told_apart_without_parsing_its_params() {
        let dictation = br#"{"params":{"audio_base64":"AAAA"},"type":"input.transcribe"}"#;
        assert!(Request::is_dictation(dictation));
        for other in [
            &br#"{"type":"threads.create","params":{"input":{}}}"#[..],
            br#"{"type":"input.transcribe.not"}"#,
            br#"{"params":{"type":"input.transcribe"}}"#,
            br#"{"type":7}"#,
            b"not json",
        ] {
            assert!(
                !Request::is_dictation(other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
    use serde_json::json;

    fn req(v: Value) -> Result<Request, RequestError> {
        Request::parse(v.to_string().as_bytes())
    }

    fn field_of(v: Value) -> String {
        match req(v) {
            Err(RequestError::InvalidParams { field, .. }) => field,
            other => panic!("{other:?}"),
        }
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
                json!({"type":"threads.add_user_message","params":{"thread_id":"thr_1","input":input},"metadata":{"k":1}}),
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
            (json!({"type":"threads.list","params":null}), false),
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
    }

    #[test]
    fn only_requests_the_assistant_answers_and_dictation_ask_a_model() {
        let input = json!({"content":[{"type":"input_text","text":"hi"}],"attachments":[],"inference_options":{}});
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
                json!({"type":"threads.add_client_tool_output","params":{"thread_id":"thr_1","result":{}}}),
                true,
            ),
            (
                json!({"type":"threads.retry_after_item","params":{"thread_id":"thr_1","item_id":"msg_1"}}),
                true,
            ),
            (
                json!({"type":"threads.add_structured_input","params":{"thread_id":"thr_1","item_id":"sti_1","input":{}}}),
                true,
            ),
            (
                json!({"type":"input.transcribe","params":{"audio_base64":"AAAA","mime_type":"audio/webm"}}),
                true,
            ),
            (
                json!({"type":"threads.custom_action","params":{"thread_id":"thr_1","item_id":"wdg_1","action":{"type":"task.complete"}}}),
                false,
            ),
            (json!({"type":"threads.list"}), false),
            (
                json!({"type":"threads.delete","params":{"thread_id":"thr_1"}}),
                false,
            ),
        ];
        for (body, asks) in cases {
            let r = req(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(r.asks_model(), asks, "{body}");
        }
    }

    /// `threads.create` with `content` and `attachments`.
    fn create_with(content: Value, attachments: Value) -> Result<Request, RequestError> {
        req(json!({"type":"threads.create","params":{"input":{
            "content": content, "attachments": attachments, "inference_options": {}}}}))
    }

    fn text(chars: usize) -> Value {
        json!([{"type":"input_text","text":"x".repeat(chars)}])
    }

    fn tag(id: usize, text: usize, group: usize, data: usize) -> Value {
        // `{"k":"…"}` is 8 bytes of JSON around the value.
        json!([{"type":"input_tag","id":"i".repeat(id),"text":"t".repeat(text),
                "group":"g".repeat(group),"data":{"k":"d".repeat(data - 8)},
                "interactive":false}])
    }

    #[test]
    fn every_message_limit_holds_at_its_value_and_refuses_one_more() {
        let ids = |n: usize| json!((0..n).map(|i| format!("atc_{i}")).collect::<Vec<_>>());
        let parts = |n: usize| {
            json!(
                (0..n)
                    .map(|_| json!({"type":"input_text","text":"a"}))
                    .collect::<Vec<_>>()
            )
        };
        let at_and_over = [
            (
                create_with(text(1), ids(MAX_PER_MESSAGE)),
                create_with(text(1), ids(MAX_PER_MESSAGE + 1)),
            ),
            (
                create_with(text(MAX_MESSAGE_CHARS), json!([])),
                create_with(text(MAX_MESSAGE_CHARS + 1), json!([])),
            ),
            (
                create_with(parts(MAX_PARTS), json!([])),
                create_with(parts(MAX_PARTS + 1), json!([])),
            ),
            (
                create_with(tag(MAX_TAG_ID_CHARS, 1, 1, 9), json!([])),
                create_with(tag(MAX_TAG_ID_CHARS + 1, 1, 1, 9), json!([])),
            ),
            (
                create_with(tag(1, MAX_TAG_TEXT_CHARS, 1, 9), json!([])),
                create_with(tag(1, MAX_TAG_TEXT_CHARS + 1, 1, 9), json!([])),
            ),
            (
                create_with(tag(1, 1, MAX_TAG_TEXT_CHARS, 9), json!([])),
                create_with(tag(1, 1, MAX_TAG_TEXT_CHARS + 1, 9), json!([])),
            ),
            (
                create_with(tag(1, 1, 1, MAX_TAG_DATA_BYTES), json!([])),
                create_with(tag(1, 1, 1, MAX_TAG_DATA_BYTES + 1), json!([])),
            ),
        ];
        for (i, (at, over)) in at_and_over.into_iter().enumerate() {
            assert!(at.is_ok(), "case {i}: {at:?}");
            assert!(
                matches!(over, Err(RequestError::InvalidParams { ref field, .. }) if field.starts_with("input.")),
                "case {i}: {over:?}"
            );
        }
        let feedback = |n: usize| {
            req(
                json!({"type":"items.feedback","params":{"thread_id":"thr_1",
                "item_ids": (0..n).map(|i| format!("msg_{i}")).collect::<Vec<_>>(), "kind":"positive"}}),
            )
        };
        assert!(feedback(MAX_FEEDBACK_ITEMS).is_ok());
        assert!(feedback(MAX_FEEDBACK_ITEMS + 1).is_err());
    }

    #[test]
    fn pages_are_clamped_and_zero_means_the_default() {
        let paging =
            |params: Value| match req(json!({"type":"threads.list","params":params})).unwrap() {
                Request::ListThreads(p) => p,
                other => panic!("{other:?}"),
            };
        assert_eq!(paging(json!({"limit":9999})).limit, MAX_LIMIT);
        assert_eq!(paging(json!({"limit":0})).limit, DEFAULT_LIMIT);
        assert_eq!(paging(json!({})), Paging::default());
        let items = req(json!({"type":"items.list","params":{"thread_id":"t","limit":0,"order":"asc","after":"msg_1"}}))
            .unwrap();
        assert_eq!(
            items,
            Request::ListItems(ItemsQuery {
                thread_id: "t".into(),
                paging: Paging {
                    limit: DEFAULT_LIMIT,
                    order: Order::Asc,
                    after: Some("msg_1".into())
                }
            })
        );
        assert!(matches!(
            req(json!({"type":"threads.list","params":{"limit":-1}})),
            Err(RequestError::InvalidParams { .. })
        ));
    }

    #[test]
    fn envelopes_that_are_not_requests_are_malformed() {
        for body in [&b"{"[..], b"[]", b"{\"params\":{}}", b"{\"type\":3}"] {
            assert!(
                matches!(Request::parse(body), Err(RequestError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            req(json!({"type":"threads.explode"})),
            Err(RequestError::UnknownType("threads.explode".into()))
        );
    }

    #[test]
    fn attachment_and_dictation_requests_are_typed() {
        assert_eq!(
            req(
                json!({"type":"attachments.create","params":{"name":"a.png","size":5,"mime_type":"image/png"}})
            ),
            Ok(Request::CreateAttachment {
                name: "a.png".into(),
                size: 5,
                mime_type: "image/png".into()
            })
        );
        assert_eq!(
            field_of(
                json!({"type":"attachments.create","params":{"name":"a","size":-1,"mime_type":"x"}})
            ),
            "size"
        );
        assert_eq!(
            field_of(json!({"type":"attachments.delete","params":{}})),
            "attachment_id"
        );
        assert_eq!(
            field_of(json!({"type":"input.transcribe","params":{"audio_base64":"AA=="}})),
            "mime_type"
        );
    }

    #[test]
    fn a_message_may_be_only_attachments_but_not_too_many_or_junk() {
        let with = |ids: Value, text: &str| {
            req(json!({"type":"threads.create","params":{"input":{
                "content":[{"type":"input_text","text":text}],"attachments":ids}}}))
        };
        assert!(with(json!(["atc_1"]), "").is_ok());
        assert!(with(json!([]), "").is_err());
        let many: Vec<String> = (0..11).map(|i| format!("atc_{i}")).collect();
        assert!(
            matches!(with(json!(many), "x"), Err(RequestError::InvalidParams { field, .. }) if field == "input.attachments")
        );
        assert!(
            matches!(with(json!(["../../etc"]), "x"), Err(RequestError::InvalidParams { field, .. }) if field == "input.attachments")
        );
    }

    #[test]
    fn bad_params_name_the_field() {
        assert_eq!(
            field_of(json!({"type":"threads.get_by_id","params":{}})),
            "thread_id"
        );
        assert_eq!(
            field_of(json!({"type":"threads.get_by_id","params":{"thread_id":5}})),
            "thread_id"
        );
        assert_eq!(
            field_of(json!({"type":"items.list","params":{"thread_id":"t","order":"sideways"}})),
            "order"
        );
        assert_eq!(
            field_of(
                json!({"type":"threads.create","params":{"input":{"content":[],"attachments":[]}}})
            ),
            "input.content"
        );
        assert_eq!(
            field_of(json!({"type":"threads.update","params":{"thread_id":"t","title":"  "}})),
            "title"
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            field_of(
                json!({"type":"threads.create","params":{"input":{"content":[{"type":"input_text","text":long}]}}})
            ),
            "input.content"
        );
    }

    #[test]
    fn every_user_controlled_field_is_bounded() {
        let message = |content: Value, quoted: Option<String>| {
            json!({"type":"threads.create","params":{"input":{"content":content,
                   "attachments":[],"quoted_text":quoted}}})
        };
        let text = json!([{"type":"input_text","text":"hi"}]);
        let tag = |id: &str, text: &str, data: Value| {
            json!([{"type":"input_text","text":"see"},
                   {"type":"input_tag","id":id,"text":text,"data":data}])
        };
        let long = |n: usize| "x".repeat(n);
        for (body, field) in [
            (
                message(text.clone(), Some(long(MAX_QUOTE_CHARS + 1))),
                "input.quoted_text",
            ),
            (
                message(tag(&long(MAX_TAG_ID_CHARS + 1), "@a", json!({})), None),
                "input.content",
            ),
            (
                message(tag("t1", &long(MAX_TAG_TEXT_CHARS + 1), json!({})), None),
                "input.content",
            ),
            (
                message(
                    tag("t1", "@a", json!({"blob": long(MAX_TAG_DATA_BYTES)})),
                    None,
                ),
                "input.content",
            ),
            (
                message(
                    json!(vec![json!({"type":"input_text","text":"a"}); MAX_PARTS + 1]),
                    None,
                ),
                "input.content",
            ),
            (
                json!({"type":"threads.list","params":{"after": long(65)}}),
                "after",
            ),
            (
                json!({"type":"items.list","params":{"thread_id":"thr_1","after":"thr_1#x"}}),
                "after",
            ),
        ] {
            assert_eq!(field_of(body.clone()), field, "{body}");
        }
        // At the limits, all is well.
        assert!(req(message(text, Some(long(MAX_QUOTE_CHARS)))).is_ok());
        assert!(
            req(message(
                tag(&long(MAX_TAG_ID_CHARS), "@a", json!({"task_id": "01KB"})),
                None
            ))
            .is_ok()
        );
        assert!(
            req(json!({"type":"threads.list","params":{"after":"thr_01kb0000000000000000000000"}}))
                .is_ok()
        );
    }

    #[test]
    fn titles_are_trimmed() {
        assert_eq!(
            req(json!({"type":"threads.update","params":{"thread_id":"t","title":"  Groceries "}})),
            Ok(Request::UpdateThread {
                thread_id: "t".into(),
                title: "Groceries".into()
            })
        );
    }
}

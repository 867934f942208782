//! ChatKit wire types. Null fields are omitted (like ck-py's `exclude_none`),
//! timestamps are RFC 3339 in UTC, and thread `metadata` is server-only: it is
//! always sent to clients as `{}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use taskpilot_domain::timestamp;

use crate::structured::{InputStatus, Question};
use crate::widget::WidgetRoot;

/// A page: `{data, has_more, after?}`; `after` is the id to continue from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The elements.
    pub data: Vec<T>,
    /// Whether more follow.
    pub has_more: bool,
    /// The last id of this page, when `has_more`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl<T> Page<T> {
    /// An empty page.
    pub fn empty() -> Self {
        Self {
            data: Vec::new(),
            has_more: false,
            after: None,
        }
    }

    /// The page of the first `limit` of `rows` (read with one row more than
    /// a page, to tell whether more follow), continuing after its last id.
    pub fn first(mut rows: Vec<T>, limit: usize, id_of: impl Fn(&T) -> String) -> Self {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let after = if has_more {
            rows.last().map(id_of)
        } else {
            None
        };
        Self {
            data: rows,
            has_more,
            after,
        }
    }
}

/// Whether the composer is usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThreadStatus {
    /// Open.
    Active,
    /// Composer disabled.
    Locked {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Composer replaced by a banner.
    Closed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A thread as stored (metadata only; items are stored apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadMetadata {
    /// `thr_…`
    pub id: String,
    /// Short title, set from the first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Creation time.
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    /// Status.
    pub status: ThreadStatus,
    /// Server-only data (never sent to clients).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A thread as clients see it: metadata emptied, with a page of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    /// `thr_…`
    pub id: String,
    /// Title, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Creation time.
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    /// Status.
    pub status: ThreadStatus,
    /// Always `{}` on the wire.
    pub metadata: Map<String, Value>,
    /// A page of visible items.
    pub items: Page<ThreadItem>,
}

impl Thread {
    /// The client view of `meta` with `items`.
    pub fn view(meta: &ThreadMetadata, items: Page<ThreadItem>) -> Self {
        Self {
            id: meta.id.clone(),
            title: meta.title.clone(),
            created_at: meta.created_at,
            status: meta.status.clone(),
            metadata: Map::new(),
            items,
        }
    }
}

/// One item of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadItem {
    /// Item id (`msg_…`, `wdg_…`).
    pub id: String,
    /// Its thread.
    pub thread_id: String,
    /// Creation time.
    #[serde(with = "timestamp")]
    pub created_at: DateTime<Utc>,
    /// What it is.
    #[serde(flatten)]
    pub kind: ItemKind,
}

impl ThreadItem {
    /// The ids of the attachments it uses (a user message's).
    pub fn attachment_ids(&self) -> Vec<&str> {
        match &self.kind {
            ItemKind::UserMessage { attachments, .. } => {
                attachments.iter().map(|a| a.id.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// A new item of `thread_id`, created now.
    pub fn new(id: impl Into<String>, thread_id: impl Into<String>, kind: ItemKind) -> Self {
        Self {
            id: id.into(),
            thread_id: thread_id.into(),
            created_at: taskpilot_domain::timestamp::now(),
            kind,
        }
    }

    /// Hidden items are stored (and given to the model) but never sent to clients.
    pub fn is_hidden(&self) -> bool {
        matches!(
            self.kind,
            ItemKind::HiddenContextItem { .. } | ItemKind::SdkHiddenContext { .. }
        )
    }
}

/// The kinds of items, by their `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemKind {
    /// What the user wrote.
    UserMessage {
        content: Vec<UserContent>,
        #[serde(default)]
        attachments: Vec<Attachment>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quoted_text: Option<String>,
        #[serde(default)]
        inference_options: InferenceOptions,
    },
    /// What the assistant answered.
    AssistantMessage { content: Vec<AssistantContent> },
    /// A tool the browser runs.
    ClientToolCall {
        #[serde(default)]
        status: ToolCallStatus,
        call_id: String,
        name: String,
        arguments: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
    },
    /// A rendered widget.
    Widget {
        widget: WidgetRoot,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        copy_text: Option<String>,
    },
    /// Questions for the user (answered with `threads.add_structured_input`).
    StructuredInput {
        #[serde(default)]
        status: InputStatus,
        inputs: Vec<Question>,
    },
    /// End-of-turn marker.
    EndOfTurn,
    /// Context for the model only.
    HiddenContextItem { content: Value },
    /// Context the server adds for itself (e.g. after a cancelled stream).
    SdkHiddenContext { content: String },
}

/// A file on a user message (ck-py `Attachment`): a `file`, or an `image`
/// with a preview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// `atc_…`
    pub id: String,
    /// The file name.
    pub name: String,
    /// Its mime type.
    pub mime_type: String,
    /// File or image.
    #[serde(flatten)]
    pub kind: AttachmentKind,
    /// Where to upload it (two-phase uploads; only until it is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_descriptor: Option<UploadDescriptor>,
    /// The thread of the message that uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// An attachment's `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttachmentKind {
    /// A document.
    File,
    /// An image and a URL showing it.
    Image {
        /// A short-lived URL of the image.
        preview_url: String,
    },
}

/// Where and how the browser uploads an attachment's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadDescriptor {
    /// The presigned URL.
    pub url: String,
    /// `PUT`.
    pub method: String,
    /// Headers the upload must carry exactly.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Status of a client tool call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCallStatus {
    /// Waiting for the browser.
    #[default]
    Pending,
    /// Output received.
    Completed,
}

/// Parts of a user message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserContent {
    /// Plain text.
    InputText { text: String },
    /// An @-mention tag.
    InputTag {
        id: String,
        text: String,
        #[serde(default)]
        data: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default)]
        interactive: bool,
    },
}

/// Parts of an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AssistantContent {
    /// Text with its annotations.
    OutputText {
        text: String,
        #[serde(default)]
        annotations: Vec<Annotation>,
    },
}

/// A reference attached to assistant text (`{"type":"annotation"}`): the
/// page shows it as a marker at `index` and hands an entity's `data` to its
/// `entities.onClick` / `onRequestPreview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "annotation")]
pub struct Annotation {
    /// What it refers to.
    pub source: EntitySource,
    /// Where the marker goes: an offset into the text in UTF-16 code units
    /// (a JavaScript string index); `None`, at the end.
    #[serde(default)]
    pub index: Option<usize>,
}

/// An entity of the application (`{"type":"entity"}`), here a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "entity")]
pub struct EntitySource {
    /// The entity's id.
    pub id: String,
    /// Its name, shown to the user.
    pub title: String,
    /// A line under the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A ChatKit icon name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Whether the page's entity callbacks apply to it.
    #[serde(default)]
    pub interactive: bool,
    /// What the page's callbacks receive.
    #[serde(default)]
    pub data: serde_json::Map<String, Value>,
}

/// Model and tool choices the user made in the composer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InferenceOptions {
    /// `{id}` of a chosen tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// A chosen model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Stream options sent at the start of every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Whether the Stop button is shown.
    pub allow_cancel: bool,
}

/// Server-sent events (`data: <json>\n\n`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    /// First event of `threads.create`.
    #[serde(rename = "thread.created")]
    ThreadCreated { thread: Thread },
    /// The thread's metadata changed (e.g. its title).
    #[serde(rename = "thread.updated")]
    ThreadUpdated { thread: Thread },
    /// A streamed item starts.
    #[serde(rename = "thread.item.added")]
    ItemAdded { item: ThreadItem },
    /// A delta to a streamed item.
    #[serde(rename = "thread.item.updated")]
    ItemUpdated { item_id: String, update: ItemUpdate },
    /// An item is complete (persisted).
    #[serde(rename = "thread.item.done")]
    ItemDone { item: ThreadItem },
    /// An item was removed.
    #[serde(rename = "thread.item.removed")]
    ItemRemoved { item_id: String },
    /// An item was replaced in place.
    #[serde(rename = "thread.item.replaced")]
    ItemReplaced { item: ThreadItem },
    /// Options of this run.
    #[serde(rename = "stream_options")]
    StreamOptions { stream_options: StreamOptions },
    /// A transient status line.
    #[serde(rename = "progress_update")]
    ProgressUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        icon: Option<String>,
        text: String,
    },
    /// A side effect for the page (ChatKit's `onEffect`); never persisted.
    #[serde(rename = "client_effect")]
    ClientEffect {
        name: String,
        #[serde(default)]
        data: serde_json::Map<String, serde_json::Value>,
    },
    /// A user-visible error.
    #[serde(rename = "error")]
    Error {
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        allow_retry: bool,
    },
    /// A banner.
    #[serde(rename = "notice")]
    Notice {
        level: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

/// Deltas inside `thread.item.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ItemUpdate {
    /// A content part starts.
    #[serde(rename = "assistant_message.content_part.added")]
    ContentPartAdded {
        content_index: usize,
        content: AssistantContent,
    },
    /// More text.
    #[serde(rename = "assistant_message.content_part.text_delta")]
    TextDelta { content_index: usize, delta: String },
    /// An annotation on a content part.
    #[serde(rename = "assistant_message.content_part.annotation_added")]
    AnnotationAdded {
        content_index: usize,
        annotation_index: usize,
        annotation: Annotation,
    },
    /// A content part is complete.
    #[serde(rename = "assistant_message.content_part.done")]
    ContentPartDone {
        content_index: usize,
        content: AssistantContent,
    },
    /// A widget's whole tree changed.
    #[serde(rename = "widget.root.updated")]
    WidgetRootUpdated { widget: WidgetRoot },
}

/// One SSE frame: `data: <compact JSON>\n\n` (no `event:`/`id:` lines).
pub fn sse_frame(event: &StreamEvent) -> Vec<u8> {
    let mut frame = b"data: ".to_vec();
    // Serializing these types cannot fail (string keys, no custom errors).
    frame.extend(serde_json::to_vec(event).unwrap_or_default());
    frame.extend_from_slice(b"\n\n");
    frame
}

/// A user-visible error of a stream, as the reference SDK types them
/// (`StreamError` and `CustomStreamError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// Something failed on the server's side (`stream.error`); `message`
    /// says what the user is told, if anything.
    Stream {
        /// The text shown.
        message: Option<String>,
        /// Whether the client offers a retry.
        allow_retry: bool,
    },
    /// The application's own message (`custom`).
    Custom {
        /// The text shown.
        message: String,
        /// Whether the client offers a retry.
        allow_retry: bool,
    },
}

impl StreamError {
    /// The code of a server-side failure.
    pub const STREAM: &str = "stream.error";
    /// The code of an application's own message.
    pub const CUSTOM: &str = "custom";

    /// A server-side failure the user may retry, saying `message`.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Stream {
            message: Some(message.into()),
            allow_retry: true,
        }
    }
}

impl From<StreamError> for StreamEvent {
    fn from(e: StreamError) -> Self {
        let (code, message, allow_retry) = match e {
            StreamError::Stream {
                message,
                allow_retry,
            } => (StreamError::STREAM, message, allow_retry),
            StreamError::Custom {
                message,
                allow_retry,
            } => (StreamError::CUSTOM, Some(message), allow_retry),
        };
        StreamEvent::Error {
            code: code.into(),
            message,
            allow_retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("id{i}")).collect()
    }

    #[test]
    fn a_row_more_than_the_page_means_more_follow_after_its_last_id() {
        let page = Page::first(ids(3), 2, String::clone);
        assert_eq!(page.data, ids(2));
        assert!(page.has_more);
        assert_eq!(page.after.as_deref(), Some("id2"));
    }

    #[test]
    fn a_full_page_read_to_the_end_is_the_last() {
        let page = Page::first(ids(2), 2, String::clone);
        assert_eq!(
            (page.data, page.has_more, page.after),
            (ids(2), false, None)
        );
    }

    #[test]
    fn a_short_page_is_the_last() {
        let page = Page::first(ids(1), 2, String::clone);
        assert_eq!(
            (page.data, page.has_more, page.after),
            (ids(1), false, None)
        );
    }
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        "2026-11-22T03:28:55.219Z".parse().unwrap()
    }

    #[test]
    fn items_match_the_wire_shapes() {
        let user = ThreadItem {
            id: "msg_1".into(),
            thread_id: "thr_1".into(),
            created_at: at(),
            kind: ItemKind::UserMessage {
                content: vec![UserContent::InputText { text: "hi".into() }],
                attachments: vec![],
                quoted_text: None,
                inference_options: InferenceOptions::default(),
            },
        };
        assert_eq!(
            serde_json::to_value(&user).unwrap(),
            json!({"id":"msg_1","thread_id":"thr_1","created_at":"2026-11-22T03:28:55.219Z",
                   "type":"user_message","content":[{"type":"input_text","text":"hi"}],
                   "attachments":[],"inference_options":{}})
        );
        let back: ThreadItem =
            serde_json::from_value(serde_json::to_value(&user).unwrap()).unwrap();
        assert_eq!(back, user);
        let done = StreamEvent::ItemUpdated {
            item_id: "msg_2".into(),
            update: ItemUpdate::TextDelta {
                content_index: 0,
                delta: "Hel".into(),
            },
        };
        assert_eq!(
            String::from_utf8(sse_frame(&done)).unwrap(),
            "data: {\"type\":\"thread.item.updated\",\"item_id\":\"msg_2\",\"update\":{\"type\":\"assistant_message.content_part.text_delta\",\"content_index\":0,\"delta\":\"Hel\"}}\n\n"
        );
    }

    #[test]
    fn threads_never_expose_metadata() {
        let mut meta = ThreadMetadata {
            id: "thr_1".into(),
            title: None,
            created_at: at(),
            status: ThreadStatus::Active,
            metadata: Map::new(),
        };
        meta.metadata.insert("secret".into(), json!("server-only"));
        let thread = serde_json::to_value(Thread::view(&meta, Page::empty())).unwrap();
        assert_eq!(
            thread,
            json!({"id":"thr_1","created_at":"2026-11-22T03:28:55.219Z","status":{"type":"active"},
                   "metadata":{},"items":{"data":[],"has_more":false}})
        );
        let error = StreamEvent::from(StreamError::Stream {
            message: None,
            allow_retry: true,
        });
        assert_eq!(
            serde_json::to_value(error).unwrap(),
            json!({"type":"error","code":"stream.error","allow_retry":true})
        );
    }

    #[test]
    fn a_custom_error_carries_its_message_and_code() {
        let error = StreamEvent::from(StreamError::Custom {
            message: "over budget".into(),
            allow_retry: false,
        });
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"type":"error","code":"custom","message":"over budget","allow_retry":false})
        );
    }
}

//! The parameter types of requests (ck-py's `*Params` models): paging,
//! the user's message, widget actions, feedback.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{InferenceOptions, UserContent};

/// Page size when none (or 0, as ck-py reads it) is given.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page served (larger requests are clamped).
pub const MAX_LIMIT: usize = 100;

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

/// Paging parameters (`limit`, `order`, `after`), checked while parsing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPaging")]
pub struct Paging {
    /// 1–100.
    pub limit: usize,
    /// Direction.
    pub order: Order,
    /// Continue after this: a previous page's `after` (an item's id for
    /// `items.list`; an opaque listing cursor for `threads.list`).
    pub after: Option<String>,
}

impl Default for Paging {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            order: Order::Desc,
            after: None,
        }
    }
}

#[derive(Deserialize)]
struct RawPaging {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<Order>,
    #[serde(default, deserialize_with = "cursor")]
    after: Option<String>,
}

/// A cursor is a previous page's `after` (1–64 of `[A-Za-z0-9_-]`): anything
/// else could never match, and a long one would be refused by DynamoDB as a
/// start key.
fn cursor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let after = Option::<String>::deserialize(d)?;
    match after {
        Some(id) if !crate::ids::plausible(&id) => Err(serde::de::Error::custom(
            "must be the `after` of a previous page",
        )),
        other => Ok(other),
    }
}

impl TryFrom<RawPaging> for Paging {
    type Error = String;

    fn try_from(raw: RawPaging) -> Result<Self, String> {
        let limit = match raw.limit {
            None | Some(0) => DEFAULT_LIMIT,
            Some(n) if n < 0 => return Err("limit must not be negative".into()),
            Some(n) => usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
        };
        Ok(Self {
            limit,
            order: raw.order.unwrap_or_default(),
            after: raw.after,
        })
    }
}

/// Parameters of `items.list`: the thread and the page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawItemsQuery")]
pub struct ItemsQuery {
    /// The thread.
    pub thread_id: String,
    /// Which page.
    pub paging: Paging,
}

#[derive(Deserialize)]
struct RawItemsQuery {
    thread_id: String,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<Order>,
    #[serde(default, deserialize_with = "cursor")]
    after: Option<String>,
}

impl TryFrom<RawItemsQuery> for ItemsQuery {
    type Error = String;

    fn try_from(raw: RawItemsQuery) -> Result<Self, String> {
        Ok(Self {
            thread_id: raw.thread_id,
            paging: Paging::try_from(RawPaging {
                limit: raw.limit,
                order: raw.order,
                after: raw.after,
            })?,
        })
    }
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

/// The text of user content parts, joined by spaces.
pub fn content_text(content: &[UserContent]) -> String {
    content
        .iter()
        .map(|c| match c {
            UserContent::InputText { text } | UserContent::InputTag { text, .. } => text.as_str(),
        })
        .collect::<Vec<_>>()
        .join(" ")
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

/// Parameters of `threads.custom_action` and `threads.sync_custom_action`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ActionParams {
    /// The thread.
    pub thread_id: String,
    /// The widget item that sent the action, if any.
    #[serde(default)]
    pub item_id: Option<String>,
    /// The action.
    pub action: Action,
}

/// Positive or negative feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    /// Thumbs up.
    Positive,
    /// Thumbs down.
    Negative,
}

impl FeedbackKind {
    /// `positive` or `negative`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Positive => "positive",
            FeedbackKind::Negative => "negative",
        }
    }
}

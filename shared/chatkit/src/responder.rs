//! The responder port: what an application plugs into the engine, the
//! counterpart of ck-py's `ChatKitServer.respond()` / `action()` /
//! `sync_action()`. The engine owns the protocol (which events come first,
//! what is persisted, disconnects); a responder only produces events through
//! the [`Turn`] it is given.

use std::future::Future;

use taskpilot_domain::UserId;

use crate::request::{Action, FeedbackKind};
use crate::sink::EventSink;
use crate::store::ChatStore;
use crate::turn::{Interrupted, Turn};
use crate::types::{InferenceOptions, ThreadItem, ThreadMetadata};

/// An action the responder refuses, with a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionRefused(pub String);

/// Composer choices (`inference_options`) the responder does not offer,
/// with a message naming what it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOptions(pub String);

/// Answers users and widget actions.
pub trait Responder: Send + Sync {
    /// Checks a new user message's `inference_options` (the model picker's
    /// model, the tool menu's `tool_choice`) before anything is stored.
    fn check_options(&self, _options: &InferenceOptions) -> Result<(), InvalidOptions> {
        Ok(())
    }

    /// Answers the thread: after a new or retried user message (`input`, the
    /// last item of the turn's history), after an answered structured input
    /// (`input`, the item as answered, also in the history), or after a
    /// client tool output (`None`). Model trouble is the responder's to report as `error`
    /// events; only a disconnect or a storage failure ends it early.
    fn respond<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        input: Option<&ThreadItem>,
    ) -> impl Future<Output = Result<(), Interrupted>> + Send;

    /// Handles a streamed widget action; `sender` is the widget item when the
    /// action names one.
    fn action<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        action: &Action,
        sender: Option<&ThreadItem>,
    ) -> impl Future<Output = Result<(), Interrupted>> + Send;

    /// Handles a widget action without streaming: the item that replaces
    /// `sender`, if any (the engine saves it).
    fn sync_action(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        action: &Action,
        sender: Option<&ThreadItem>,
    ) -> impl Future<Output = Result<Option<ThreadItem>, ActionRefused>> + Send;

    /// Hears ratings the engine has just stored (the reference SDK's
    /// `add_feedback`): `kind` on the items `item_ids` of `thread_id`.
    fn add_feedback(
        &self,
        _user: &UserId,
        _thread_id: &str,
        _item_ids: &[String],
        _kind: FeedbackKind,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

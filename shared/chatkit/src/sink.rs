//! Where streamed events go.

use std::future::Future;

use crate::types::StreamEvent;

/// The client went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client disconnected")]
pub struct Disconnected;

/// Receives the events of a streamed request, in order.
pub trait EventSink: Send {
    /// Sends one event; fails once the client has disconnected.
    fn send(&mut self, event: StreamEvent)
    -> impl Future<Output = Result<(), Disconnected>> + Send;
}

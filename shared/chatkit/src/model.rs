//! The model port: a streamed Responses API call.

use std::future::Future;
use std::time::Instant;

use serde_json::Value;

/// Why the model could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ModelError(pub String);

/// Events of one streamed call (`data` objects of the Responses API SSE).
pub trait ModelStream: Send {
    /// The next event; `None` at the end.
    fn next_event(&mut self) -> impl Future<Output = Option<Result<Value, ModelError>>> + Send;
}

/// Starts streamed calls.
pub trait ModelClient: Send + Sync {
    /// The stream type.
    type Stream: ModelStream;

    /// Starts `POST /responses` with `body`; retries before the first event are
    /// the client's business.
    fn start(
        &self,
        body: &Value,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Stream, ModelError>> + Send;
}

//! Domain and storage errors.

use crate::task::Task;

/// Why a domain operation failed. The HTTP layer maps each variant to one status.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A field failed validation; `field` names it for the caller.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// The named thing (`"task"`, `"session"`…) does not exist for this user
    /// (or belongs to someone else).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The expected version is stale; carries the current task.
    #[error("version conflict: the task is at version {}", current.version)]
    VersionConflict { current: Box<Task> },
    /// The idempotency key was used before with a different request.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyMismatch,
    /// The first request with this idempotency key is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyInFlight,
    /// A pagination cursor was tampered with, foreign, malformed or expired.
    #[error("the cursor is invalid or has expired; restart from the first page")]
    InvalidCursor,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DomainError {
    /// Builds a validation error for `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A storage failure, free of any SDK type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttled or unreachable: the caller may retry after a pause.
    #[error("storage is temporarily unavailable: {0}")]
    Unavailable(String),
    /// The store rejected the request or returned data we cannot read.
    #[error("storage error: {0}")]
    Internal(String),
}

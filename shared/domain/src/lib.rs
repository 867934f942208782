//! TaskPilot's domain: the task model, its validation rules, the storage ports
//! and the service that applies them. No AWS or HTTP types live here.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod budget;
pub mod cursor;
pub mod error;
pub mod input;
pub mod ports;
pub mod remembered;
pub mod search;
pub mod service;
pub mod session;
pub mod task;
pub mod timestamp;
pub mod user;

#[cfg(any(test, feature = "testing"))]
pub mod memory;

pub use cursor::CursorCodec;
pub use error::{DomainError, StoreError};
pub use input::{IdempotencyKey, NewTask, NewTaskInput, TaskPatchInput};
pub use ports::{
    IdempotencyClaim, InsertOutcome, ListPage, ListQuery, TaskChange, TaskFilter, TaskRepository,
    UpdateOutcome, WriteGuard,
};
pub use search::SearchText;
pub use service::{Created, TaskListing, TaskService};
pub use task::{DueDate, Priority, Task, TaskId};
pub use user::UserId;

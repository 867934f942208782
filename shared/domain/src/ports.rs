//! Storage ports: the small traits the service needs, implemented by the
//! DynamoDB adapter (and an in-memory fake for unit tests).

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::StoreError;
use crate::input::IdempotencyKey;
use crate::search::SearchText;
use crate::task::{DueDate, Priority, Task, TaskId};
use crate::user::UserId;

/// Filters for listing tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only completed (`true`) or open (`false`) tasks.
    pub completed: Option<bool>,
    /// Only tasks carrying this tag.
    pub tag: Option<String>,
    /// Only tasks due strictly before the start of this date.
    pub due_before: Option<NaiveDate>,
}

impl TaskFilter {
    /// Whether any filter is set.
    pub fn is_empty(&self) -> bool {
        self.completed.is_none() && self.tag.is_none() && self.due_before.is_none()
    }

    /// Whether `task` passes the filter (the store applies the same rule).
    pub fn matches(&self, task: &Task) -> bool {
        self.completed.is_none_or(|c| task.completed == c)
            && self
                .tag
                .as_ref()
                .is_none_or(|tag| task.tags.iter().any(|t| t == tag))
            && self.due_before.is_none_or(|d| {
                task.due_date
                    .is_some_and(|due| due.canonical() < d.format("%Y-%m-%d").to_string())
            })
    }
}

/// One page request: newest first, starting after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Filters.
    pub filter: TaskFilter,
    /// Only tasks whose title or a tag contains this text, ignoring case.
    pub search: Option<SearchText>,
    /// Page size, 1–100.
    pub limit: usize,
    /// Exclusive start: the last id of the previous page.
    pub after: Option<TaskId>,
}

impl ListQuery {
    /// Whether `task` passes the filter and the search (the store applies the same rules).
    pub fn matches(&self, task: &Task) -> bool {
        self.filter.matches(task) && self.search.as_ref().is_none_or(|s| s.matches(task))
    }
}

/// One page of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
    /// Where the next page starts, if there may be one.
    pub next_after: Option<TaskId>,
}

/// An idempotency record to claim together with a create.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// The client's key (scoped to the user by the store's keys).
    pub key: IdempotencyKey,
    /// Fingerprint of the validated request.
    pub fingerprint: String,
    /// When the record stops counting (the store's TTL).
    pub expires_at: DateTime<Utc>,
}

/// What happened to a create.
#[derive(Debug, Clone)]
pub enum InsertOutcome {
    /// The task was written (with its idempotency record, if any).
    Created,
    /// The key was already used: the first request's fingerprint and result.
    Replay {
        fingerprint: String,
        task: Box<Task>,
    },
    /// Another request with the same key is being written right now.
    InFlight,
}

/// Field changes for an update; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskChange {
    /// New title.
    pub title: Option<String>,
    /// `Some(None)` removes.
    pub description: Option<Option<String>>,
    /// New completion state; sets or clears `completed_at`.
    pub completed: Option<bool>,
    /// New priority.
    pub priority: Option<Priority>,
    /// `Some(None)` removes.
    pub due_date: Option<Option<DueDate>>,
    /// New tags.
    pub tags: Option<Vec<String>>,
}

/// Conditions a write must meet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteGuard {
    /// The stored version must equal this.
    pub version: Option<u64>,
    /// Skip the write (answer `Unchanged`) when `completed` already has this value.
    pub unless_completed_is: Option<bool>,
}

impl WriteGuard {
    /// Why a write to `current` must not happen, if it must not.
    pub fn refusal(&self, current: &Task) -> Option<UpdateOutcome> {
        if self.version.is_some_and(|v| v != current.version) {
            return Some(UpdateOutcome::VersionMismatch(current.clone()));
        }
        if self.unless_completed_is == Some(current.completed) {
            return Some(UpdateOutcome::Unchanged(current.clone()));
        }
        None
    }
}

/// What happened to an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// Written; the new state (for a delete, the removed task).
    Written(Task),
    /// Nothing to do (see [`WriteGuard::unless_completed_is`]); the current state.
    Unchanged(Task),
    /// No such task for this user.
    NotFound,
    /// The version did not match; the current state.
    VersionMismatch(Task),
}

/// Task storage, one request per call.
pub trait TaskRepository: Send + Sync {
    /// Reads one task.
    fn get(
        &self,
        user: &UserId,
        id: &TaskId,
    ) -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;

    /// Writes a new task; with a claim, atomically with its idempotency record.
    fn insert(
        &self,
        user: &UserId,
        task: &Task,
        claim: Option<&IdempotencyClaim>,
    ) -> impl Future<Output = Result<InsertOutcome, StoreError>> + Send;

    /// Applies `change`, bumps the version and sets `updated_at = now`.
    fn update(
        &self,
        user: &UserId,
        id: &TaskId,
        change: &TaskChange,
        guard: WriteGuard,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send;

    /// Deletes a task.
    fn delete(
        &self,
        user: &UserId,
        id: &TaskId,
        guard: WriteGuard,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send;

    /// Lists one page, newest first.
    fn list(
        &self,
        user: &UserId,
        query: &ListQuery,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;
}

impl TaskChange {
    /// Applies the change to a task in memory (the store does the same in one request).
    pub fn apply(&self, task: &mut Task, now: DateTime<Utc>) {
        if let Some(title) = &self.title {
            task.title.clone_from(title);
        }
        if let Some(description) = &self.description {
            task.description.clone_from(description);
        }
        if let Some(priority) = self.priority {
            task.priority = priority;
        }
        if let Some(due) = self.due_date {
            task.due_date = due;
        }
        if let Some(tags) = &self.tags {
            task.tags.clone_from(tags);
        }
        if let Some(completed) = self.completed {
            task.completed = completed;
            task.completed_at = if completed {
                task.completed_at.or(Some(now))
            } else {
                None
            };
        }
        task.updated_at = now;
        task.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(completed: bool, due: Option<&str>, tags: &[&str]) -> Task {
        let now = Utc::now();
        Task {
            id: TaskId::generate(),
            title: "t".into(),
            description: None,
            completed,
            priority: Priority::Medium,
            due_date: due.map(|d| d.parse::<DueDate>().unwrap()),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
        }
    }

    fn date(d: &str) -> NaiveDate {
        d.parse().unwrap()
    }

    #[test]
    fn a_filter_is_empty_only_with_nothing_set() {
        let cases = [
            (TaskFilter::default(), true),
            (
                TaskFilter {
                    completed: Some(false),
                    ..TaskFilter::default()
                },
                false,
            ),
            (
                TaskFilter {
                    tag: Some("x".into()),
                    ..TaskFilter::default()
                },
                false,
            ),
            (
                TaskFilter {
                    due_before: Some(date("2026-12-07")),
                    ..TaskFilter::default()
                },
                false,
            ),
        ];
        for (filter, empty) in cases {
            assert_eq!(filter.is_empty(), empty, "{filter:?}");
        }
    }

    #[test]
    fn the_completed_filter_keeps_only_that_state() {
        let (open, done) = (task(false, None, &[]), task(true, None, &[]));
        let only = |completed| TaskFilter {
            completed: Some(completed),
            ..TaskFilter::default()
        };
        assert_eq!(
            [
                only(true).matches(&open),
                only(true).matches(&done),
                only(false).matches(&open),
                only(false).matches(&done),
            ],
            [false, true, true, false]
        );
        assert!(TaskFilter::default().matches(&open) && TaskFilter::default().matches(&done));
    }

    #[test]
    fn due_before_is_strictly_before_the_start_of_the_day() {
        let filter = TaskFilter {
            due_before: Some(date("2026-12-07")),
            ..TaskFilter::default()
        };
        let cases = [
            (Some("2026-12-06"), true),
            (Some("2026-12-06T23:59:59Z"), true),
            (Some("2026-12-07"), false),
            (Some("2026-12-07T00:00:00Z"), false),
            (Some("2026-12-08"), false),
            (None, false),
        ];
        for (due, kept) in cases {
            assert_eq!(filter.matches(&task(false, due, &[])), kept, "{due:?}");
        }
    }

    #[test]
    fn the_tag_filter_keeps_tasks_carrying_that_exact_tag() {
        let filter = TaskFilter {
            tag: Some("home".into()),
            ..TaskFilter::default()
        };
        assert!(filter.matches(&task(false, None, &["work", "home"])));
        assert!(!filter.matches(&task(false, None, &["homework"])));
        assert!(!filter.matches(&task(false, None, &[])));
    }
}

//! The task service: validation, versioning, idempotency and paging on top of
//! a [`TaskRepository`]. The REST API and the ChatKit tools both go through it.

use chrono::{DateTime, Utc};

use crate::cursor::CursorCodec;
use crate::error::DomainError;
use crate::input::{IdempotencyKey, NewTask};
use crate::ports::{
    IdempotencyClaim, InsertOutcome, ListQuery, TaskChange, TaskFilter, TaskRepository,
    UpdateOutcome, WriteGuard,
};
use crate::search::SearchText;
use crate::task::{Task, TaskId};
use crate::timestamp;
use crate::user::UserId;

/// How long an idempotency record counts.
pub const IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::hours(24);
/// Default page size.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest page size.
pub const MAX_LIMIT: usize = 100;

/// A created (or replayed) task.
#[derive(Debug, Clone)]
pub struct Created {
    /// The task as first created.
    pub task: Task,
    /// `true` when an earlier request with the same key created it.
    pub replayed: bool,
}

/// One page of a listing, with the signed cursor of the next page.
#[derive(Debug, Clone)]
pub struct TaskListing {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
    /// Opaque cursor for the next page, if any.
    pub next_cursor: Option<String>,
}

/// Task operations for one repository.
pub struct TaskService<R> {
    repo: R,
    cursors: CursorCodec,
}

impl<R: TaskRepository> TaskService<R> {
    /// Wires a repository and the cursor codec.
    pub fn new(repo: R, cursors: CursorCodec) -> Self {
        Self { repo, cursors }
    }

    /// Creates a task; with a key, repeats of the same request return the first result.
    pub async fn create(
        &self,
        user: &UserId,
        new: NewTask,
        key: Option<IdempotencyKey>,
    ) -> Result<Created, DomainError> {
        let now = timestamp::now();
        let fingerprint = new.fingerprint();
        let task = Task {
            id: TaskId::generate(),
            title: new.title,
            description: new.description,
            completed: new.completed,
            priority: new.priority,
            due_date: new.due_date,
            tags: new.tags,
            created_at: now,
            updated_at: now,
            completed_at: new.completed.then_some(now),
            version: 1,
        };
        let claim = key.map(|key| IdempotencyClaim {
            key,
            fingerprint: fingerprint.clone(),
            expires_at: now + IDEMPOTENCY_TTL,
        });
        match self.repo.insert(user, &task, claim.as_ref()).await? {
            InsertOutcome::Created => Ok(Created {
                task,
                replayed: false,
            }),
            InsertOutcome::Replay {
                fingerprint: first,
                task,
            } if first == fingerprint => Ok(Created {
                task: *task,
                replayed: true,
            }),
            InsertOutcome::Replay { .. } => Err(DomainError::IdempotencyMismatch),
            InsertOutcome::InFlight => Err(DomainError::IdempotencyInFlight),
        }
    }

    /// Reads one task.
    pub async fn get(&self, user: &UserId, id: &TaskId) -> Result<Task, DomainError> {
        self.repo
            .get(user, id)
            .await?
            .ok_or(DomainError::NotFound("task"))
    }

    /// Applies a validated change, optionally only if the task is at
    /// `expected_version`.
    pub async fn update(
        &self,
        user: &UserId,
        id: &TaskId,
        change: TaskChange,
        expected_version: Option<u64>,
    ) -> Result<Task, DomainError> {
        let guard = WriteGuard {
            version: expected_version,
            unless_completed_is: None,
        };
        settle(
            self.repo
                .update(user, id, &change, guard, timestamp::now())
                .await?,
        )
    }

    /// Marks a task done (`true`) or open again (`false`); repeating it changes nothing.
    pub async fn set_completed(
        &self,
        user: &UserId,
        id: &TaskId,
        completed: bool,
    ) -> Result<Task, DomainError> {
        let change = TaskChange {
            completed: Some(completed),
            ..TaskChange::default()
        };
        let guard = WriteGuard {
            version: None,
            unless_completed_is: Some(completed),
        };
        settle(
            self.repo
                .update(user, id, &change, guard, timestamp::now())
                .await?,
        )
    }

    /// Deletes a task, optionally only if it is at `expected_version`.
    pub async fn delete(
        &self,
        user: &UserId,
        id: &TaskId,
        expected_version: Option<u64>,
    ) -> Result<Task, DomainError> {
        let guard = WriteGuard {
            version: expected_version,
            unless_completed_is: None,
        };
        settle(self.repo.delete(user, id, guard).await?)
    }

    /// Lists one page, newest first, resuming from a cursor of an earlier page.
    pub async fn list(
        &self,
        user: &UserId,
        filter: TaskFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<TaskListing, DomainError> {
        self.list_matching(user, filter, None, limit, cursor).await
    }

    /// Lists one page like [`Self::list`], keeping only the tasks whose title or
    /// a tag contains `search`, ignoring case (all of them for `None`). Its
    /// cursors are bound to the search text as well as to the filter.
    pub async fn list_matching(
        &self,
        user: &UserId,
        filter: TaskFilter,
        search: Option<SearchText>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<TaskListing, DomainError> {
        let query = ListQuery {
            filter,
            search,
            limit,
            after: None,
        };
        self.list_at(user, query, cursor, Utc::now()).await
    }

    async fn list_at(
        &self,
        user: &UserId,
        mut query: ListQuery,
        cursor: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<TaskListing, DomainError> {
        if !(1..=MAX_LIMIT).contains(&query.limit) {
            return Err(DomainError::validation(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let search = query.search.as_ref();
        query.after = cursor
            .map(|c| self.cursors.decode(user, &query.filter, search, c, now))
            .transpose()?;
        let page = self.repo.list(user, &query).await?;
        let next_cursor = page
            .next_after
            .map(|id| self.cursors.encode(user, &query.filter, search, &id, now));
        Ok(TaskListing {
            tasks: page.tasks,
            next_cursor,
        })
    }
}

fn settle(outcome: UpdateOutcome) -> Result<Task, DomainError> {
    match outcome {
        UpdateOutcome::Written(task) | UpdateOutcome::Unchanged(task) => Ok(task),
        UpdateOutcome::NotFound => Err(DomainError::NotFound("task")),
        UpdateOutcome::VersionMismatch(current) => Err(DomainError::VersionConflict {
            current: Box::new(current),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::NewTaskInput;
    use crate::memory::InMemoryTasks;

    fn service() -> TaskService<InMemoryTasks> {
        let codec = CursorCodec::new(&[1u8; 32], chrono::Duration::hours(1)).unwrap();
        TaskService::new(InMemoryTasks::default(), codec)
    }

    fn new(title: &str) -> NewTask {
        NewTaskInput {
            title: title.into(),
            description: None,
            completed: false,
            priority: None,
            due_date: None,
            tags: None,
        }
        .validate()
        .unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    #[tokio::test]
    async fn lifecycle_bumps_versions_once_per_change() {
        let s = service();
        let u = user("u");
        let t = s.create(&u, new("a"), None).await.unwrap().task;
        assert_eq!(t.version, 1);
        let done = s.set_completed(&u, &t.id, true).await.unwrap();
        assert_eq!((done.version, done.completed), (2, true));
        assert!(done.completed_at.is_some());
        let again = s.set_completed(&u, &t.id, true).await.unwrap();
        assert_eq!(again, done, "repeating complete changes nothing");
        let open = s.set_completed(&u, &t.id, false).await.unwrap();
        assert_eq!((open.version, open.completed_at), (3, None));
        let patch = TaskChange {
            title: Some("b".into()),
            ..TaskChange::default()
        };
        let err = s
            .update(&u, &t.id, patch.clone(), Some(1))
            .await
            .unwrap_err();
        assert!(matches!(err, DomainError::VersionConflict { current } if current.version == 3));
        let b = s.update(&u, &t.id, patch, Some(3)).await.unwrap();
        assert_eq!((b.title.as_str(), b.version), ("b", 4));
        s.delete(&u, &t.id, None).await.unwrap();
        assert!(matches!(
            s.get(&u, &t.id).await,
            Err(DomainError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn other_users_see_nothing() {
        let s = service();
        let t = s.create(&user("a"), new("x"), None).await.unwrap().task;
        let b = user("b");
        assert!(matches!(
            s.get(&b, &t.id).await,
            Err(DomainError::NotFound(_))
        ));
        assert!(matches!(
            s.delete(&b, &t.id, None).await,
            Err(DomainError::NotFound(_))
        ));
        assert!(
            s.list(&b, TaskFilter::default(), 10, None)
                .await
                .unwrap()
                .tasks
                .is_empty()
        );
        assert_eq!(s.get(&user("a"), &t.id).await.unwrap(), t);
    }

    #[tokio::test]
    async fn idempotent_creates() {
        let s = service();
        let u = user("u");
        let key = IdempotencyKey::parse("k1").unwrap();
        let first = s.create(&u, new("a"), Some(key.clone())).await.unwrap();
        let again = s.create(&u, new("a"), Some(key.clone())).await.unwrap();
        assert!(again.replayed);
        assert_eq!(again.task, first.task);
        assert!(matches!(
            s.create(&u, new("b"), Some(key.clone())).await,
            Err(DomainError::IdempotencyMismatch)
        ));
        // Keys are per user.
        let other = s.create(&user("v"), new("a"), Some(key)).await.unwrap();
        assert!(!other.replayed);
        assert_ne!(other.task.id, first.task.id);
    }

    #[tokio::test]
    async fn paging_returns_each_task_once() {
        let s = service();
        let u = user("u");
        let mut ids = Vec::new();
        for i in 0..23 {
            ids.push(
                s.create(&u, new(&format!("t{i}")), None)
                    .await
                    .unwrap()
                    .task
                    .id,
            );
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s
                .list(&u, TaskFilter::default(), 5, cursor.as_deref())
                .await
                .unwrap();
            seen.extend(page.tasks.into_iter().map(|t| t.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        ids.reverse();
        assert_eq!(seen, ids);
        assert!(matches!(
            s.list(&u, TaskFilter::default(), 0, None).await,
            Err(DomainError::Validation { .. })
        ));
    }

    #[tokio::test]
    async fn search_pages_like_the_list_and_binds_its_cursors() {
        let s = service();
        let (u, other) = (user("u"), user("v"));
        let mut milk = Vec::new();
        for i in 0..12 {
            let title = match i % 3 {
                0 => format!("Buy MILK {i}"),
                1 => format!("bread {i}"),
                _ => format!("oat milk {i}"),
            };
            let task = s.create(&u, new(&title), None).await.unwrap().task;
            if i % 3 != 1 {
                milk.push(task.id.clone());
            }
            if i % 4 == 0 {
                s.set_completed(&u, &task.id, true).await.unwrap();
            }
        }
        s.create(&other, new("milk for someone else"), None)
            .await
            .unwrap();
        let tagged = NewTask {
            tags: vec!["Dairy".into()],
            ..new("cheese")
        };
        let cheese = s.create(&u, tagged, None).await.unwrap();

        let q = |raw: &str| Some(SearchText::parse(raw).unwrap());
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s
                .list_matching(&u, TaskFilter::default(), q("Milk"), 3, cursor.as_deref())
                .await
                .unwrap();
            assert!(page.tasks.len() <= 3);
            seen.extend(page.tasks.into_iter().map(|t| t.id));
            match page.next_cursor {
                // The same query in another case resumes the same listing.
                Some(c) if seen.len() == 3 => {
                    let again = s
                        .list_matching(&u, TaskFilter::default(), q(" MILK"), 3, Some(&c))
                        .await;
                    assert!(again.is_ok());
                    for other_query in [q("bread"), None] {
                        let replay = s
                            .list_matching(&u, TaskFilter::default(), other_query, 3, Some(&c))
                            .await;
                        assert!(matches!(replay, Err(DomainError::InvalidCursor)));
                    }
                    cursor = Some(c);
                }
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        milk.reverse();
        assert_eq!(seen, milk, "every match once, newest first, no one else's");

        let open_milk = s
            .list_matching(
                &u,
                TaskFilter {
                    completed: Some(false),
                    ..TaskFilter::default()
                },
                q("milk"),
                100,
                None,
            )
            .await
            .unwrap();
        assert!(open_milk.tasks.iter().all(|t| !t.completed));
        assert_eq!(open_milk.tasks.len(), 6);
        let by_tag = s
            .list_matching(&u, TaskFilter::default(), q("dair"), 100, None)
            .await
            .unwrap();
        assert_eq!(by_tag.tasks, vec![cheese.task]);
        let none = s
            .list_matching(&other, TaskFilter::default(), q("bread"), 100, None)
            .await
            .unwrap();
        assert!(none.tasks.is_empty() && none.next_cursor.is_none());
    }
}

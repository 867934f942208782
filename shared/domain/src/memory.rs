//! An in-memory [`TaskRepository`] for unit tests of domain logic.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::ports::{
    IdempotencyClaim, InsertOutcome, ListPage, ListQuery, TaskChange, TaskRepository,
    UpdateOutcome, WriteGuard,
};
use crate::task::{Task, TaskId};
use crate::user::UserId;

type Key = (String, TaskId);

/// Tasks and idempotency records in a map, with the same semantics as the DynamoDB adapter.
#[derive(Default)]
pub struct InMemoryTasks {
    tasks: Mutex<BTreeMap<Key, Task>>,
    claims: Mutex<BTreeMap<(String, String), (String, Task)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TaskRepository for InMemoryTasks {
    async fn get(&self, user: &UserId, id: &TaskId) -> Result<Option<Task>, StoreError> {
        Ok(lock(&self.tasks)
            .get(&(user.as_str().to_owned(), id.clone()))
            .cloned())
    }

    async fn insert(
        &self,
        user: &UserId,
        task: &Task,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<InsertOutcome, StoreError> {
        if let Some(claim) = claim {
            let mut claims = lock(&self.claims);
            let key = (user.as_str().to_owned(), claim.key.as_str().to_owned());
            if let Some((fingerprint, first)) = claims.get(&key) {
                return Ok(InsertOutcome::Replay {
                    fingerprint: fingerprint.clone(),
                    task: Box::new(first.clone()),
                });
            }
            claims.insert(key, (claim.fingerprint.clone(), task.clone()));
        }
        lock(&self.tasks).insert((user.as_str().to_owned(), task.id.clone()), task.clone());
        Ok(InsertOutcome::Created)
    }

    async fn update(
        &self,
        user: &UserId,
        id: &TaskId,
        change: &TaskChange,
        guard: WriteGuard,
        now: DateTime<Utc>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut tasks = lock(&self.tasks);
        let Some(task) = tasks.get_mut(&(user.as_str().to_owned(), id.clone())) else {
            return Ok(UpdateOutcome::NotFound);
        };
        if let Some(refusal) = guard.refusal(task) {
            return Ok(refusal);
        }
        change.apply(task, now);
        Ok(UpdateOutcome::Written(task.clone()))
    }

    async fn delete(
        &self,
        user: &UserId,
        id: &TaskId,
        guard: WriteGuard,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut tasks = lock(&self.tasks);
        let key = (user.as_str().to_owned(), id.clone());
        let Some(task) = tasks.get(&key) else {
            return Ok(UpdateOutcome::NotFound);
        };
        if let Some(refusal) = guard.refusal(task) {
            return Ok(refusal);
        }
        Ok(tasks
            .remove(&key)
            .map_or(UpdateOutcome::NotFound, UpdateOutcome::Written))
    }

    async fn list(&self, user: &UserId, query: &ListQuery) -> Result<ListPage, StoreError> {
        let tasks = lock(&self.tasks);
        let mut matching = tasks
            .iter()
            .rev()
            .filter(|((owner, id), _)| {
                owner == user.as_str() && query.after.as_ref().is_none_or(|after| id < after)
            })
            .map(|(_, task)| task)
            .filter(|task| query.filter.matches(task))
            .take(query.limit + 1)
            .cloned()
            .collect::<Vec<_>>();
        let more = matching.len() > query.limit;
        matching.truncate(query.limit);
        let next_after = more
            .then(|| matching.last().map(|t| t.id.clone()))
            .flatten();
        Ok(ListPage {
            tasks: matching,
            next_after,
        })
    }
}

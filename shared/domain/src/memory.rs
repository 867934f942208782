//! In-memory ports for unit tests: a [`TaskRepository`], and a
//! [`SessionStore`] with a [`RateLimiter`], each with the DynamoDB adapter's
//! semantics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::ports::{
    IdempotencyClaim, InsertOutcome, ListPage, ListQuery, TaskChange, TaskRepository,
    UpdateOutcome, WriteGuard,
};
use crate::session::{
    ChatSession, RateDecision, RateLimiter, RateWindow, SessionStatus, SessionStore,
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
            .filter(|task| query.matches(task))
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

/// Sessions and fixed-window counters in maps.
#[derive(Default)]
pub struct InMemorySessions {
    sessions: Mutex<BTreeMap<(String, String), ChatSession>>,
    counters: Mutex<BTreeMap<(String, String, i64), u32>>,
}

impl SessionStore for InMemorySessions {
    async fn put_session(&self, user: &UserId, session: &ChatSession) -> Result<(), StoreError> {
        let key = (user.as_str().to_owned(), session.id.clone());
        let mut sessions = lock(&self.sessions);
        if sessions.contains_key(&key) {
            return Err(StoreError::Internal("the session exists".into()));
        }
        sessions.insert(key, session.clone());
        Ok(())
    }

    async fn get_session(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<ChatSession>, StoreError> {
        Ok(lock(&self.sessions)
            .get(&(user.as_str().to_owned(), id.to_owned()))
            .cloned())
    }

    async fn cancel_session(
        &self,
        user: &UserId,
        id: &str,
    ) -> Result<Option<ChatSession>, StoreError> {
        Ok(lock(&self.sessions)
            .get_mut(&(user.as_str().to_owned(), id.to_owned()))
            .map(|s| {
                s.status = SessionStatus::Cancelled;
                s.clone()
            }))
    }

    async fn find_session_by_secret(
        &self,
        user: &UserId,
        hash: &str,
    ) -> Result<Option<ChatSession>, StoreError> {
        Ok(lock(&self.sessions)
            .iter()
            .find(|((owner, _), s)| {
                owner == user.as_str() && s.secret_hash.as_deref() == Some(hash)
            })
            .map(|(_, s)| s.clone()))
    }
}

impl RateLimiter for InMemorySessions {
    async fn hit(
        &self,
        user: &UserId,
        bucket: &str,
        limit: u32,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        let window = RateWindow::at(now, window_secs);
        let mut counters = lock(&self.counters);
        let count = counters
            .entry((user.as_str().to_owned(), bucket.to_owned(), window.start))
            .or_insert(0);
        if *count >= limit {
            return Ok(RateDecision::Limited {
                retry_after: window.retry_after(now),
            });
        }
        *count += 1;
        Ok(RateDecision::Allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionMode, new_session_id};

    fn session(hash: &str) -> ChatSession {
        let now = Utc::now();
        ChatSession {
            id: new_session_id(),
            mode: SessionMode::SelfHosted,
            status: SessionStatus::Active,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(10),
            max_requests_per_minute: 30,
            workflow_id: None,
            secret_hash: Some(hash.into()),
        }
    }

    #[tokio::test]
    async fn sessions_belong_to_their_user() {
        let store = InMemorySessions::default();
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let s = session("h1");
        store.put_session(&alice, &s).await.unwrap();
        assert!(store.put_session(&alice, &s).await.is_err(), "no overwrite");
        assert_eq!(
            store.get_session(&alice, &s.id).await.unwrap(),
            Some(s.clone())
        );
        assert_eq!(store.get_session(&bob, &s.id).await.unwrap(), None);
        assert_eq!(store.cancel_session(&bob, &s.id).await.unwrap(), None);
        assert_eq!(
            store
                .find_session_by_secret(&alice, "h1")
                .await
                .unwrap()
                .map(|s| s.id),
            Some(s.id.clone())
        );
        let cancelled = store.cancel_session(&alice, &s.id).await.unwrap().unwrap();
        assert_eq!(cancelled.status, SessionStatus::Cancelled);
        assert!(
            !store
                .get_session(&alice, &s.id)
                .await
                .unwrap()
                .unwrap()
                .is_usable(Utc::now())
        );
    }

    #[tokio::test]
    async fn the_limit_holds_per_window_and_bucket() {
        let limiter = InMemorySessions::default();
        let alice = UserId::new("alice").unwrap();
        let now: DateTime<Utc> = "2026-12-02T10:00:05Z".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(
                limiter.hit(&alice, "b", 2, 60, now).await.unwrap(),
                RateDecision::Allowed
            );
        }
        assert_eq!(
            limiter.hit(&alice, "b", 2, 60, now).await.unwrap(),
            RateDecision::Limited { retry_after: 55 }
        );
        assert_eq!(
            limiter.hit(&alice, "other", 2, 60, now).await.unwrap(),
            RateDecision::Allowed
        );
        let next = now + chrono::Duration::seconds(60);
        assert_eq!(
            limiter.hit(&alice, "b", 2, 60, next).await.unwrap(),
            RateDecision::Allowed
        );
    }
}

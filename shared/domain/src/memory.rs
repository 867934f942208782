//! In-memory ports for unit tests: a [`TaskRepository`], and a
//! [`SessionStore`] with a [`RateLimiter`], each with the DynamoDB adapter's
//! semantics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::budget::{DayUsage, TokenUsage, UsageDay, UsageStore};
use crate::error::StoreError;
use crate::ports::{
    IdempotencyClaim, InsertOutcome, ListPage, ListQuery, TaskChange, TaskRepository,
    UpdateOutcome, WriteGuard,
};
use crate::session::{
    ChatSession, RateDecision, RateLimiter, RateWindow, SessionMode, SessionStatus, SessionStore,
    first_session_id_since, session_id_ceiling,
};
use crate::task::{Task, TaskId};
use crate::user::UserId;

type Key = (String, TaskId);

/// Tasks and idempotency records in a map, with the same semantics as the DynamoDB adapter.
#[derive(Default)]
pub struct InMemoryTasks {
    tasks: Mutex<BTreeMap<Key, Task>>,
    claims: Mutex<BTreeMap<(String, String), Claimed>>,
}

/// An idempotency claim: the request's fingerprint, its task, its expiry.
struct Claimed {
    fingerprint: String,
    task: Task,
    expires_at: DateTime<Utc>,
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
            // As the store's condition: a claim expired by the time of this
            // create (`created_at`) is replaced.
            if let Some(first) = claims.get(&key)
                && first.expires_at >= task.created_at
            {
                return Ok(InsertOutcome::Replay {
                    fingerprint: first.fingerprint.clone(),
                    task: Box::new(first.task.clone()),
                });
            }
            claims.insert(
                key,
                Claimed {
                    fingerprint: claim.fingerprint.clone(),
                    task: task.clone(),
                    expires_at: claim.expires_at,
                },
            );
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

/// Sessions, fixed-window counters and daily usage in maps.
#[derive(Default)]
pub struct InMemorySessions {
    sessions: Mutex<BTreeMap<(String, String), ChatSession>>,
    counters: Mutex<BTreeMap<(String, String, i64), u32>>,
    usage: Mutex<BTreeMap<(String, UsageDay), DayUsage>>,
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

    async fn active_sessions(
        &self,
        user: &UserId,
        created_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ChatSession>, StoreError> {
        // The same key range as the DynamoDB adapter, in id (creation) order.
        let (from, to) = (first_session_id_since(created_since), session_id_ceiling());
        Ok(lock(&self.sessions)
            .iter()
            .filter(|((owner, id), s)| {
                owner == user.as_str()
                    && (&from..=&to).contains(&id)
                    && s.mode == SessionMode::SelfHosted
                    && s.is_usable(now)
            })
            .map(|(_, s)| s.clone())
            .collect())
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

    async fn give_back(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> Result<(), StoreError> {
        if let Some(count) = lock(&self.counters).get_mut(&(
            user.as_str().to_owned(),
            bucket.to_owned(),
            window.start,
        )) {
            *count = count.saturating_sub(1);
        }
        Ok(())
    }

    async fn count(
        &self,
        user: &UserId,
        bucket: &str,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let window = RateWindow::at(now, window_secs);
        let mut counters = lock(&self.counters);
        let count = counters
            .entry((user.as_str().to_owned(), bucket.to_owned(), window.start))
            .or_insert(0);
        *count = count.saturating_add(1);
        Ok(*count)
    }

    async fn hits(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> Result<u32, StoreError> {
        Ok(lock(&self.counters)
            .get(&(user.as_str().to_owned(), bucket.to_owned(), window.start))
            .copied()
            .unwrap_or(0))
    }
}

impl UsageStore for InMemorySessions {
    async fn day_usage(&self, user: &UserId, day: UsageDay) -> Result<DayUsage, StoreError> {
        Ok(lock(&self.usage)
            .get(&(user.as_str().to_owned(), day))
            .copied()
            .unwrap_or_default())
    }

    async fn add_usage(
        &self,
        user: &UserId,
        day: UsageDay,
        tokens: TokenUsage,
        first_round: bool,
    ) -> Result<DayUsage, StoreError> {
        let mut usage = lock(&self.usage);
        let day = usage.entry((user.as_str().to_owned(), day)).or_default();
        day.tokens = day.tokens.plus(tokens);
        day.rounds += 1;
        day.turns += u64::from(first_round);
        Ok(*day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::IdempotencyKey;
    use crate::ports::TaskFilter;
    use crate::session::new_session_id;
    use crate::task::Priority;

    fn task(at: DateTime<Utc>) -> Task {
        Task {
            id: TaskId::generate(),
            title: "t".into(),
            description: None,
            completed: false,
            priority: Priority::Medium,
            due_date: None,
            tags: Vec::new(),
            created_at: at,
            updated_at: at,
            completed_at: None,
            version: 1,
        }
    }

    fn page(limit: usize, after: Option<TaskId>) -> ListQuery {
        ListQuery {
            filter: TaskFilter::default(),
            search: None,
            limit,
            after,
        }
    }

    #[tokio::test]
    async fn a_page_says_there_is_more_only_when_there_is() {
        let store = InMemoryTasks::default();
        let alice = UserId::new("alice").unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let t = task(Utc::now());
            ids.push(t.id.clone());
            store.insert(&alice, &t, None).await.unwrap();
        }
        ids.reverse(); // newest first
        let exactly = store.list(&alice, &page(3, None)).await.unwrap();
        assert_eq!(exactly.tasks.len(), 3);
        assert_eq!(exactly.next_after, None, "exactly `limit` rows: no more");
        let first = store.list(&alice, &page(2, None)).await.unwrap();
        assert_eq!(first.next_after.as_ref(), Some(&ids[1]));
        let rest = store
            .list(&alice, &page(2, first.next_after))
            .await
            .unwrap();
        assert_eq!(
            (
                rest.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
                rest.next_after
            ),
            (vec![ids[2].clone()], None)
        );
    }

    #[tokio::test]
    async fn a_claim_replays_until_it_expires_then_is_replaced() {
        let store = InMemoryTasks::default();
        let alice = UserId::new("alice").unwrap();
        let now = Utc::now();
        let claim = |expires_at| IdempotencyClaim {
            key: IdempotencyKey::parse("key-1").unwrap(),
            fingerprint: "f".into(),
            expires_at,
        };
        let day = chrono::Duration::hours(24);
        let first = task(now);
        let created = store
            .insert(&alice, &first, Some(&claim(now + day)))
            .await
            .unwrap();
        assert!(matches!(created, InsertOutcome::Created));
        // Up to and at its expiry: the first task again.
        let at_expiry = store
            .insert(&alice, &task(now + day), Some(&claim(now + day + day)))
            .await
            .unwrap();
        assert!(
            matches!(&at_expiry, InsertOutcome::Replay { task, .. } if task.id == first.id),
            "{at_expiry:?}"
        );
        // After it: a new claim and a new task.
        let later = now + day + chrono::Duration::seconds(1);
        let after = store
            .insert(&alice, &task(later), Some(&claim(later + day)))
            .await
            .unwrap();
        assert!(matches!(after, InsertOutcome::Created), "{after:?}");
    }

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
        // Another user's secret, or another secret, finds nothing.
        assert_eq!(
            store.find_session_by_secret(&bob, "h1").await.unwrap(),
            None
        );
        assert_eq!(
            store.find_session_by_secret(&alice, "h2").await.unwrap(),
            None
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

    #[tokio::test]
    async fn count_counts_every_call_and_hits_reads_it() {
        let limiter = InMemorySessions::default();
        let alice = UserId::new("alice").unwrap();
        let now: DateTime<Utc> = "2026-12-02T10:00:05Z".parse().unwrap();
        let counted = [
            limiter.count(&alice, "b", 60, now).await.unwrap(),
            limiter.count(&alice, "b", 60, now).await.unwrap(),
            limiter.count(&alice, "b", 60, now).await.unwrap(),
        ];
        assert_eq!(counted, [1, 2, 3]);
        let window = RateWindow::at(now, 60);
        assert_eq!(limiter.hits(&alice, "b", window).await.unwrap(), 3);
        assert_eq!(limiter.hits(&alice, "c", window).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn usage_adds_up_per_user_and_day() {
        let store = InMemorySessions::default();
        let alice = UserId::new("alice").unwrap();
        let day = UsageDay::of("2026-12-02T10:00:05Z".parse().unwrap());
        let tokens = |input, output| TokenUsage {
            input,
            output,
            ..TokenUsage::default()
        };
        store
            .add_usage(&alice, day, tokens(100, 20), true)
            .await
            .unwrap();
        store
            .add_usage(&alice, day, tokens(50, 5), false)
            .await
            .unwrap();
        let used = store
            .add_usage(&alice, day, tokens(10, 1), true)
            .await
            .unwrap();
        assert_eq!((used.tokens.total(), used.rounds, used.turns), (186, 3, 2));
        assert_eq!(store.day_usage(&alice, day).await.unwrap(), used);
        let bob = UserId::new("bob").unwrap();
        assert_eq!(
            store.day_usage(&bob, day).await.unwrap(),
            DayUsage::default()
        );
    }

    /// A self-hosted session minted at `at`, living `ttl`.
    fn minted_at(at: DateTime<Utc>, ttl: chrono::Duration) -> ChatSession {
        ChatSession {
            id: crate::session::session_id_at(at),
            mode: SessionMode::SelfHosted,
            status: SessionStatus::Active,
            created_at: at,
            expires_at: at + ttl,
            max_requests_per_minute: 30,
            workflow_id: None,
            secret_hash: None,
        }
    }

    fn ids(sessions: &[ChatSession]) -> Vec<&str> {
        sessions.iter().map(|s| s.id.as_str()).collect()
    }

    #[tokio::test]
    async fn active_sessions_are_the_users_usable_recent_ones_oldest_first() {
        let store = InMemorySessions::default();
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let now: DateTime<Utc> = "2026-12-02T10:00:00Z".parse().unwrap();
        let ttl = chrono::Duration::minutes(10);
        let at = |secs_ago: i64| now - chrono::Duration::seconds(secs_ago);
        // Inserted out of order: the answer is in creation order.
        let newest = minted_at(at(1), ttl);
        let oldest = minted_at(at(540), ttl);
        let middle = minted_at(at(60), ttl);
        let cancelled = minted_at(at(30), ttl);
        let expired = minted_at(at(700), ttl);
        // Created in the window but already past a shorter expiry.
        let mut short = minted_at(at(20), ttl);
        short.expires_at = now;
        for s in [&newest, &oldest, &middle, &cancelled, &expired, &short] {
            store.put_session(&alice, s).await.unwrap();
        }
        store.cancel_session(&alice, &cancelled.id).await.unwrap();
        store
            .put_session(&bob, &minted_at(at(10), ttl))
            .await
            .unwrap();
        // A hosted session (legacy mode) does not count, even with an id in range.
        let mut hosted = minted_at(at(5), ttl);
        hosted.mode = SessionMode::Hosted;
        store.put_session(&alice, &hosted).await.unwrap();

        let active = store.active_sessions(&alice, now - ttl, now).await.unwrap();
        assert_eq!(
            ids(&active),
            [oldest.id.as_str(), middle.id.as_str(), newest.id.as_str()]
        );
        // Only ids minted at or after `created_since` are read.
        let recent = store.active_sessions(&alice, at(60), now).await.unwrap();
        assert_eq!(ids(&recent), [middle.id.as_str(), newest.id.as_str()]);
        assert_eq!(
            store
                .active_sessions(&UserId::new("carol").unwrap(), now - ttl, now)
                .await
                .unwrap(),
            []
        );
    }

    /// What the sessions function does before storing a new session.
    async fn mint(
        store: &InMemorySessions,
        user: &UserId,
        cap: crate::session::ActiveSessionCap,
        now: DateTime<Utc>,
    ) -> (ChatSession, usize) {
        let active = store
            .active_sessions(user, cap.created_since(now), now)
            .await
            .unwrap();
        let victims = cap.to_cancel(&active);
        for s in victims {
            store.cancel_session(user, &s.id).await.unwrap();
        }
        let session = minted_at(now, cap.ttl);
        store.put_session(user, &session).await.unwrap();
        (session, victims.len())
    }

    #[tokio::test]
    async fn minting_past_the_cap_cancels_the_oldest_sessions() {
        let store = InMemorySessions::default();
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        let cap = crate::session::ActiveSessionCap {
            max_active: 2,
            ttl: chrono::Duration::minutes(10),
        };
        let start: DateTime<Utc> = "2026-12-02T10:00:00Z".parse().unwrap();
        let at = |secs: i64| start + chrono::Duration::seconds(secs);
        let bobs = mint(&store, &bob, cap, at(0)).await.0;
        let (first, cancelled) = mint(&store, &alice, cap, at(1)).await;
        assert_eq!(cancelled, 0);
        let (second, cancelled) = mint(&store, &alice, cap, at(2)).await;
        assert_eq!(cancelled, 0);
        let (third, cancelled) = mint(&store, &alice, cap, at(3)).await;
        assert_eq!(cancelled, 1, "the third cancels the first");
        let usable = |user: &UserId, s: &ChatSession| {
            let (store, user, id) = (&store, user.clone(), s.id.clone());
            async move {
                store
                    .get_session(&user, &id)
                    .await
                    .unwrap()
                    .is_some_and(|s| s.is_usable(at(3)))
            }
        };
        assert!(!usable(&alice, &first).await);
        assert!(usable(&alice, &second).await && usable(&alice, &third).await);
        assert!(usable(&bob, &bobs).await, "another user's sessions stay");

        // Over the cap already (concurrent mints): back to the cap at once.
        for s in [minted_at(at(4), cap.ttl), minted_at(at(5), cap.ttl)] {
            store.put_session(&alice, &s).await.unwrap();
        }
        let (last, cancelled) = mint(&store, &alice, cap, at(6)).await;
        assert_eq!(cancelled, 3);
        let active = store
            .active_sessions(&alice, cap.created_since(at(6)), at(6))
            .await
            .unwrap();
        assert_eq!(active.len(), 2);
        assert_eq!(active[1].id, last.id);

        // Expired sessions do not count: after a lifetime, nothing is cancelled.
        let later = |secs: i64| at(6) + cap.ttl + chrono::Duration::seconds(secs);
        assert_eq!(mint(&store, &alice, cap, later(0)).await.1, 0);
        assert_eq!(mint(&store, &alice, cap, later(1)).await.1, 0);
        assert_eq!(mint(&store, &alice, cap, later(2)).await.1, 1);
    }
}

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::TimeZone;

use super::*;
use crate::memory::InMemorySessions;

/// The in-memory store, counting requests; `day_usage` can be made to fail.
#[derive(Default)]
struct Counted {
    inner: InMemorySessions,
    requests: AtomicUsize,
    usage_fails: AtomicBool,
}

impl Counted {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn tally(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }
}

impl RateLimiter for &Counted {
    async fn hit(
        &self,
        user: &UserId,
        bucket: &str,
        limit: u32,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        self.tally();
        self.inner.hit(user, bucket, limit, window_secs, now).await
    }

    async fn give_back(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> Result<(), StoreError> {
        self.tally();
        self.inner.give_back(user, bucket, window).await
    }
    async fn count(
        &self,
        user: &UserId,
        bucket: &str,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        self.tally();
        RateLimiter::count(&self.inner, user, bucket, window_secs, now).await
    }
    async fn hits(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> Result<u32, StoreError> {
        self.inner.hits(user, bucket, window).await
    }
}

impl UsageStore for &Counted {
    async fn day_usage(&self, user: &UserId, day: UsageDay) -> Result<DayUsage, StoreError> {
        self.tally();
        if self.usage_fails.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("down".into()));
        }
        self.inner.day_usage(user, day).await
    }
    async fn add_usage(
        &self,
        user: &UserId,
        day: UsageDay,
        tokens: TokenUsage,
        first_round: bool,
    ) -> Result<DayUsage, StoreError> {
        self.tally();
        self.inner.add_usage(user, day, tokens, first_round).await
    }
}

fn alice() -> UserId {
    UserId::new("alice").unwrap()
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, h, m, s).unwrap()
}

fn budget(turns: u32, tokens: u64) -> ChatBudget {
    ChatBudget {
        turns_per_minute: turns,
        tokens_per_day: tokens,
        warn_percent: 80,
    }
}

fn tokens(input: u64, output: u64) -> TokenUsage {
    TokenUsage {
        input,
        cached_input: 0,
        output,
    }
}

#[tokio::test]
async fn the_minute_admits_exactly_its_limit() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(3, 1_000));
    let now = at(10, 0, 5);
    for _ in 0..3 {
        assert!(gate.admit(&alice(), now).await.unwrap().is_ok());
    }
    assert_eq!(
        gate.admit(&alice(), now).await.unwrap(),
        Err(Refusal::TurnsPerMinute {
            limit: 3,
            retry_after: 55
        })
    );
}

#[tokio::test]
async fn the_next_minute_admits_again() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    assert!(gate.admit(&alice(), at(10, 0, 59)).await.unwrap().is_ok());
    assert!(gate.admit(&alice(), at(10, 0, 59)).await.unwrap().is_err());
    assert!(gate.admit(&alice(), at(10, 1, 0)).await.unwrap().is_ok());
}

#[tokio::test]
async fn users_have_their_own_budgets() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    let now = at(10, 0, 0);
    assert!(gate.admit(&alice(), now).await.unwrap().is_ok());
    assert!(gate.admit(&alice(), now).await.unwrap().is_err());
    let bob = UserId::new("bob").unwrap();
    assert!(gate.admit(&bob, now).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_day_at_its_token_limit_refuses_until_midnight() {
    let store = Counted::default();
    let day = UsageDay::of(at(10, 0, 0));
    (&store)
        .add_usage(&alice(), day, tokens(600, 400), true)
        .await
        .unwrap();
    let gate = BudgetGate::new(&store, budget(10, 1_000));
    assert_eq!(
        gate.admit(&alice(), at(22, 0, 0)).await.unwrap(),
        Err(Refusal::TokensPerDay {
            limit: 1_000,
            retry_after: 7_200
        })
    );
}

#[tokio::test]
async fn a_day_one_token_below_its_limit_admits() {
    let store = Counted::default();
    let now = at(10, 0, 0);
    (&store)
        .add_usage(&alice(), UsageDay::of(now), tokens(600, 399), true)
        .await
        .unwrap();
    let gate = BudgetGate::new(&store, budget(10, 1_000));
    let admitted = gate.admit(&alice(), now).await.unwrap().unwrap();
    assert_eq!(admitted.used.tokens.total(), 999);
    assert_eq!(admitted.day, UsageDay::of(now));
    assert_eq!(admitted.window, RateWindow::at(now, 60));
}

#[tokio::test]
async fn a_refusal_for_tokens_gives_the_minute_back() {
    let store = Counted::default();
    let now = at(10, 0, 0);
    (&store)
        .add_usage(&alice(), UsageDay::of(now), tokens(1_000, 0), true)
        .await
        .unwrap();
    let gate = BudgetGate::new(&store, budget(10, 1_000));
    assert!(gate.admit(&alice(), now).await.unwrap().is_err());
    let window = RateWindow::at(now, 60);
    assert_eq!(
        (&store).hits(&alice(), TURNS_BUCKET, window).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn both_limits_reached_report_the_day() {
    let store = Counted::default();
    let now = at(10, 0, 0);
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    assert!(gate.admit(&alice(), now).await.unwrap().is_ok());
    (&store)
        .add_usage(&alice(), UsageDay::of(now), tokens(2_000, 0), true)
        .await
        .unwrap();
    let refused = gate.admit(&alice(), now).await.unwrap().unwrap_err();
    assert_eq!(refused.reason(), "tokens_per_day");
    // The turn counted by the first admission stays counted.
    assert_eq!(
        (&store)
            .hits(&alice(), TURNS_BUCKET, RateWindow::at(now, 60))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn a_known_refusal_costs_no_storage_request() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    let now = at(10, 0, 30);
    gate.admit(&alice(), now).await.unwrap().unwrap();
    gate.admit(&alice(), now).await.unwrap().unwrap_err();
    let before = store.requests();
    let again = gate.admit(&alice(), at(10, 0, 50)).await.unwrap();
    assert_eq!(store.requests(), before);
    assert_eq!(
        again,
        Err(Refusal::TurnsPerMinute {
            limit: 1,
            retry_after: 10
        })
    );
}

#[tokio::test]
async fn a_known_refusal_expires_with_its_window() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    gate.admit(&alice(), at(10, 0, 30)).await.unwrap().unwrap();
    gate.admit(&alice(), at(10, 0, 30))
        .await
        .unwrap()
        .unwrap_err();
    assert!(gate.known_refusal(&alice(), at(10, 0, 59)).is_some());
    // Under a second left: no Retry-After of 0; the store decides.
    let almost = at(10, 0, 59) + chrono::Duration::milliseconds(500);
    assert_eq!(gate.known_refusal(&alice(), almost), None);
    assert_eq!(gate.known_refusal(&alice(), at(10, 1, 0)), None);
    assert!(gate.admit(&alice(), at(10, 1, 0)).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_known_refusal_is_the_users_own() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    let now = at(10, 0, 0);
    gate.admit(&alice(), now).await.unwrap().unwrap();
    gate.admit(&alice(), now).await.unwrap().unwrap_err();
    assert_eq!(gate.known_refusal(&UserId::new("bob").unwrap(), now), None);
}

#[tokio::test]
async fn an_unreadable_day_is_an_error_and_gives_the_minute_back() {
    let store = Counted::default();
    store.usage_fails.store(true, Ordering::SeqCst);
    let gate = BudgetGate::new(&store, budget(5, 1_000));
    let now = at(10, 0, 0);
    assert!(gate.admit(&alice(), now).await.is_err());
    assert_eq!(
        (&store)
            .hits(&alice(), TURNS_BUCKET, RateWindow::at(now, 60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(gate.known_refusal(&alice(), now), None);
}

#[tokio::test]
async fn giving_back_an_admission_frees_its_turn() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(1, 1_000));
    let now = at(10, 0, 0);
    let admitted = gate.admit(&alice(), now).await.unwrap().unwrap();
    gate.give_back(&alice(), &admitted).await.unwrap();
    assert!(gate.admit(&alice(), now).await.unwrap().is_ok());
}

#[tokio::test]
async fn the_status_shows_the_minute_and_the_day() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(5, 1_000));
    let now = at(10, 0, 20);
    gate.admit(&alice(), now).await.unwrap().unwrap();
    gate.admit(&alice(), now).await.unwrap().unwrap();
    (&store)
        .add_usage(&alice(), UsageDay::of(now), tokens(30, 12), true)
        .await
        .unwrap();
    let status = gate.status(&alice(), now).await.unwrap();
    assert_eq!(status.turns_this_minute, 2);
    assert_eq!(status.minute_resets_at, at(10, 1, 0));
    assert_eq!(status.today.tokens.total(), 42);
    assert_eq!(status.today.turns, 1);
    assert_eq!(
        status.day_resets_at,
        at(0, 0, 0) + chrono::Duration::days(1)
    );
}

#[test]
fn the_warning_starts_at_its_share_of_the_day() {
    assert_eq!(budget(1, 200_000).warn_at(), 160_000);
    let none = ChatBudget {
        warn_percent: 0,
        ..budget(1, 1_000)
    };
    assert_eq!(none.warn_at(), 0);
}

#[test]
fn usage_totals_input_and_output() {
    let a = TokenUsage {
        input: 100,
        cached_input: 40,
        output: 7,
    };
    assert_eq!(a.total(), 107);
    assert_eq!(
        a.plus(a),
        TokenUsage {
            input: 200,
            cached_input: 80,
            output: 14
        }
    );
}

#[test]
fn a_day_is_a_utc_date_and_ends_at_midnight() {
    let day = UsageDay::of(at(23, 59, 59));
    assert_eq!(day.key(), "2026-12-07");
    assert_eq!(day.retry_after(at(23, 59, 59)), 1);
    assert_eq!(day.retry_after(at(0, 0, 0)), 86_400);
    assert!(UsageDay::of(at(0, 0, 0)) < UsageDay::of(at(0, 0, 0) + chrono::Duration::days(1)));
}

#[test]
fn refusals_say_why_and_when() {
    let minute = Refusal::TurnsPerMinute {
        limit: 10,
        retry_after: 12,
    };
    assert_eq!(minute.reason(), "turns_per_minute");
    assert_eq!(minute.retry_after(), 12);
    assert_eq!(
        minute.message(),
        "you can send the assistant 10 messages a minute; retry in 12 s"
    );
    let day = Refusal::TokensPerDay {
        limit: 200_000,
        retry_after: 3 * 3600 + 12 * 60 + 5,
    };
    assert_eq!(day.reason(), "tokens_per_day");
    assert_eq!(
        day.message(),
        "you have used today's assistant budget (200000 tokens); it resets at 00:00 UTC, in 3 h 12 min"
    );
}

#[test]
fn waits_read_as_people_say_them() {
    assert_eq!(human_wait(40), "40 s");
    assert_eq!(human_wait(60), "1 min");
    assert_eq!(human_wait(61), "2 min");
    assert_eq!(human_wait(3_599), "60 min");
    assert_eq!(human_wait(3_600), "1 h");
    assert_eq!(human_wait(3_659), "1 h");
    assert_eq!(human_wait(3_660), "1 h 1 min");
}

#[test]
fn the_gate_reports_its_own_limits() {
    let store = Counted::default();
    assert_eq!(
        BudgetGate::new(&store, budget(3, 77)).budget(),
        budget(3, 77)
    );
}

#[tokio::test]
async fn a_charge_goes_to_the_admitted_turns_day_as_one_turn() {
    let store = Counted::default();
    let gate = BudgetGate::new(&store, budget(5, 1_000));
    let now = at(23, 59, 59);
    let admitted = gate.admit(&alice(), now).await.unwrap().unwrap();
    let after = gate
        .charge(&alice(), &admitted, tokens(30, 12))
        .await
        .unwrap();
    assert_eq!(after.tokens.total(), 42);
    assert_eq!(after.turns, 1);
    let next_day = now + chrono::Duration::seconds(1);
    assert_eq!(
        (&store)
            .day_usage(&alice(), UsageDay::of(now))
            .await
            .unwrap(),
        after
    );
    assert_eq!(
        (&store)
            .day_usage(&alice(), UsageDay::of(next_day))
            .await
            .unwrap(),
        DayUsage::default()
    );
}

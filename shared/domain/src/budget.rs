//! The per-user chat budget: turns per minute that reach the model and model
//! tokens per UTC day, counted in the store so every process (and every
//! restart) sees the same count, whatever identity (user JWT or ChatKit
//! client secret) the user calls with.
//!
//! A turn is admitted by [`BudgetGate::admit`]: one conditional counter
//! update for the minute and one read of the day's tokens, run concurrently.
//! Tokens are added after every model round ([`UsageStore::add_usage`]); a
//! turn already running may finish its round past the daily limit, the next
//! turn is refused. Refusals are remembered in the process until they expire,
//! so a client hammering an exhausted budget costs no storage request.

use std::future::Future;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::remembered::Remembered;
use crate::session::{RateDecision, RateLimiter, RateWindow};
use crate::user::UserId;

/// Counter bucket of the turns a user sends to the model, per minute.
pub const TURNS_BUCKET: &str = "chatkit.user.turns";
/// Length of the turn window, in seconds.
pub const TURN_WINDOW_SECS: u64 = 60;

/// The limits (`CHATKIT_USER_TURNS_PER_MINUTE`, `CHATKIT_USER_TOKENS_PER_DAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatBudget {
    /// Turns per minute that reach the model.
    pub turns_per_minute: u32,
    /// Model tokens (input + output) per UTC day.
    pub tokens_per_day: u64,
    /// From this share of the daily tokens on, turns end with a warning.
    pub warn_percent: u8,
}

impl Default for ChatBudget {
    fn default() -> Self {
        Self {
            turns_per_minute: 10,
            tokens_per_day: 200_000,
            warn_percent: 80,
        }
    }
}

impl ChatBudget {
    /// The token count from which a turn carries a warning.
    pub fn warn_at(&self) -> u64 {
        self.tokens_per_day
            .saturating_mul(u64::from(self.warn_percent))
            / 100
    }
}

/// Tokens of one model round (or a sum of rounds), as the model reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Input tokens, cached ones included.
    pub input: u64,
    /// Of the input, tokens served from the prompt cache.
    pub cached_input: u64,
    /// Output tokens (reasoning included).
    pub output: u64,
}

impl TokenUsage {
    /// What counts against the budget: input plus output.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// The sum of both.
    pub fn plus(self, other: TokenUsage) -> TokenUsage {
        TokenUsage {
            input: self.input.saturating_add(other.input),
            cached_input: self.cached_input.saturating_add(other.cached_input),
            output: self.output.saturating_add(other.output),
        }
    }
}

/// A UTC calendar day: the daily budget's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UsageDay(NaiveDate);

impl UsageDay {
    /// The day `now` falls in.
    pub fn of(now: DateTime<Utc>) -> Self {
        Self(now.date_naive())
    }

    /// `YYYY-MM-DD`.
    pub fn key(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}",
            self.0.year(),
            self.0.month(),
            self.0.day()
        )
    }

    /// When the next day starts (the daily budget resets).
    pub fn resets_at(&self) -> DateTime<Utc> {
        let next = self.0.checked_add_days(Days::new(1)).unwrap_or(self.0);
        next.and_hms_opt(0, 0, 0)
            .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
    }

    /// Seconds from `now` until the day ends (at least 1).
    pub fn retry_after(&self, now: DateTime<Utc>) -> u64 {
        u64::try_from((self.resets_at() - now).num_seconds()).map_or(1, |s| s.max(1))
    }
}

/// What a user used on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayUsage {
    /// Tokens by kind.
    pub tokens: TokenUsage,
    /// Model rounds.
    pub rounds: u64,
    /// Turns that used the model.
    pub turns: u64,
}

/// Why a turn was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The minute's turns are used up.
    TurnsPerMinute {
        /// The limit.
        limit: u32,
        /// Seconds until the next minute.
        retry_after: u64,
    },
    /// The day's tokens are used up.
    TokensPerDay {
        /// The limit.
        limit: u64,
        /// Seconds until the next UTC day.
        retry_after: u64,
    },
}

impl Refusal {
    /// A stable, low-cardinality name (`turns_per_minute`, `tokens_per_day`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TurnsPerMinute { .. } => "turns_per_minute",
            Self::TokensPerDay { .. } => "tokens_per_day",
        }
    }

    /// Seconds to wait.
    pub fn retry_after(&self) -> u64 {
        match self {
            Self::TurnsPerMinute { retry_after, .. } | Self::TokensPerDay { retry_after, .. } => {
                *retry_after
            }
        }
    }

    /// What the user is told.
    pub fn message(&self) -> String {
        match self {
            Self::TurnsPerMinute { limit, retry_after } => format!(
                "you can send the assistant {limit} messages a minute; retry in {retry_after} s"
            ),
            Self::TokensPerDay { limit, retry_after } => format!(
                "you have used today's assistant budget ({limit} tokens); it resets at 00:00 UTC, in {}",
                human_wait(*retry_after)
            ),
        }
    }
}

/// `3 h 12 min`, `12 min`, `40 s`.
fn human_wait(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs.div_ceil(60)),
        _ if secs % 3600 < 60 => format!("{} h", secs / 3600),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// An admitted turn: counted in its minute; what the day held when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The minute window the turn was counted in.
    pub window: RateWindow,
    /// The day it is charged to.
    pub day: UsageDay,
    /// The day's usage when it was admitted.
    pub used: DayUsage,
}

/// Where usage is kept: per user and day, atomic, expiring.
pub trait UsageStore: Send + Sync {
    /// The user's usage on `day` (zero when nothing was used).
    fn day_usage(
        &self,
        user: &UserId,
        day: UsageDay,
    ) -> impl Future<Output = Result<DayUsage, StoreError>> + Send;

    /// Adds one model round's tokens to `day` (and one turn when
    /// `first_round`), atomically; the day's usage after it.
    fn add_usage(
        &self,
        user: &UserId,
        day: UsageDay,
        tokens: TokenUsage,
        first_round: bool,
    ) -> impl Future<Output = Result<DayUsage, StoreError>> + Send;
}

/// The budget's state for one user, as the usage route shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStatus {
    /// Turns counted in the current minute.
    pub turns_this_minute: u32,
    /// When the minute ends.
    pub minute_resets_at: DateTime<Utc>,
    /// Today's usage.
    pub today: DayUsage,
    /// When the day ends.
    pub day_resets_at: DateTime<Utc>,
}

/// Admits turns within the budget. Built once per process.
pub struct BudgetGate<S> {
    store: S,
    budget: ChatBudget,
    remembered: Remembered<Refusal>,
}

impl<S: UsageStore + RateLimiter> BudgetGate<S> {
    /// A gate over `store` with `budget`.
    pub fn new(store: S, budget: ChatBudget) -> Self {
        Self {
            store,
            budget,
            remembered: Remembered::default(),
        }
    }

    /// The limits.
    pub fn budget(&self) -> ChatBudget {
        self.budget
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A refusal this process already knows holds at `now`: no storage
    /// request is needed to refuse again.
    pub fn known_refusal(&self, user: &UserId, now: DateTime<Utc>) -> Option<Refusal> {
        let (refusal, until) = self.remembered.get(user.as_str(), now)?;
        let left = u64::try_from((until - now).num_seconds()).ok()?;
        Some(match refusal {
            Refusal::TurnsPerMinute { limit, .. } => Refusal::TurnsPerMinute {
                limit,
                retry_after: left,
            },
            Refusal::TokensPerDay { limit, .. } => Refusal::TokensPerDay {
                limit,
                retry_after: left,
            },
        })
        .filter(|_| left > 0)
    }

    /// Counts a turn for `user` when both limits allow it. The minute's
    /// counter and the day's tokens are asked concurrently; a turn counted
    /// and then refused for its tokens is given back. The daily refusal wins
    /// (its wait is the longer one).
    pub async fn admit(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
    ) -> Result<Result<Admission, Refusal>, StoreError> {
        if let Some(refusal) = self.known_refusal(user, now) {
            return Ok(Err(refusal));
        }
        let day = UsageDay::of(now);
        let window = RateWindow::at(now, TURN_WINDOW_SECS);
        let limit = self.budget.turns_per_minute;
        let (turn, used) = futures_util::join!(
            self.store
                .hit(user, TURNS_BUCKET, limit, TURN_WINDOW_SECS, now),
            self.store.day_usage(user, day)
        );
        let turn = turn?;
        let counted = turn == RateDecision::Allowed;
        let used = match used {
            Ok(used) => used,
            Err(e) => {
                if counted {
                    self.give_back_quietly(user, window).await;
                }
                return Err(e);
            }
        };
        let refusal = if used.tokens.total() >= self.budget.tokens_per_day {
            if counted {
                self.give_back_quietly(user, window).await;
            }
            Refusal::TokensPerDay {
                limit: self.budget.tokens_per_day,
                retry_after: day.retry_after(now),
            }
        } else if let RateDecision::Limited { retry_after } = turn {
            Refusal::TurnsPerMinute { limit, retry_after }
        } else {
            return Ok(Ok(Admission { window, day, used }));
        };
        let until = now + chrono::Duration::seconds(refusal.retry_after() as i64);
        self.remembered.remember(user.as_str(), refusal, until, now);
        Ok(Err(refusal))
    }

    /// Charges `tokens` to an admitted turn's day (a call that is a turn of
    /// its own, such as a dictation); the day's usage after it.
    pub async fn charge(
        &self,
        user: &UserId,
        admission: &Admission,
        tokens: TokenUsage,
    ) -> Result<DayUsage, StoreError> {
        self.store
            .add_usage(user, admission.day, tokens, true)
            .await
    }

    /// Gives back an admitted turn that was then refused (unknown thread,
    /// bad input, expired session…), so only turns that reach the model
    /// count. When this fails the minute counts one turn too many.
    pub async fn give_back(&self, user: &UserId, admission: &Admission) -> Result<(), StoreError> {
        self.store
            .give_back(user, TURNS_BUCKET, admission.window)
            .await
    }

    async fn give_back_quietly(&self, user: &UserId, window: RateWindow) {
        // A failure leaves the minute one turn too high; the refusal stands.
        let _ = self.store.give_back(user, TURNS_BUCKET, window).await;
    }

    /// Where `user` stands at `now`.
    pub async fn status(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
    ) -> Result<BudgetStatus, StoreError> {
        let window = RateWindow::at(now, TURN_WINDOW_SECS);
        let day = UsageDay::of(now);
        let (turns, today) = futures_util::join!(
            self.store.hits(user, TURNS_BUCKET, window),
            self.store.day_usage(user, day)
        );
        Ok(BudgetStatus {
            turns_this_minute: turns?,
            minute_resets_at: DateTime::from_timestamp(window.start + window.secs, 0)
                .unwrap_or(now),
            today: today?,
            day_resets_at: day.resets_at(),
        })
    }
}

#[cfg(test)]
mod tests;

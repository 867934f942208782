//! The caller's side of a ChatKit request, as the engine asks for it
//! ([`Gate`]): a client secret's session (still active, within its budget),
//! the user's chat budget, the OpenAI key, and what the model cost. The
//! session and the budget are read concurrently, and concurrently with the
//! engine's own reads.

use chrono::{DateTime, Utc};

use taskpilot_chatkit::engine::{Gate, Need};
use taskpilot_chatkit::model::TokenUsage;
use taskpilot_chatkit::turn::{Meter, Spent};
use taskpilot_domain::budget::{Admission, BudgetGate, Refusal, UsageStore};
use taskpilot_domain::session::{RateLimiter, SessionStore};
use taskpilot_http::ApiError;
use taskpilot_http::metrics::Emf;

use crate::identity::{Identity, Verified};

/// One request's gate: who asks, and when.
pub struct CallerGate<'a, P> {
    /// The caller's sessions.
    pub identity: &'a Identity<P>,
    /// The per-user budget.
    pub budget: &'a BudgetGate<P>,
    /// The caller, as its token says.
    pub verified: &'a Verified,
    /// When the request arrived.
    pub now: DateTime<Utc>,
}

impl<P: SessionStore + RateLimiter + UsageStore> Gate for CallerGate<'_, P> {
    type Ticket = Admission;
    type Error = ApiError;

    /// The session's verdict first (401 or the session's 429), then the
    /// budget's (429); a stream or a turn also needs the OpenAI key (503).
    /// Whatever refuses, an admitted turn is given back.
    async fn admit(&self, need: Need) -> Result<Option<Admission>, ApiError> {
        let user = self.verified.user();
        // A refusal this process already knows costs no request at all.
        if need.turn
            && let Some(refusal) = self.budget.known_refusal(user, self.now)
        {
            return Err(over_budget(refusal));
        }
        let (session, admitted) = futures_util::join!(
            self.identity.check_session(self.verified, self.now),
            async {
                match need.turn {
                    true => self
                        .budget
                        .admit(user, self.now)
                        .await?
                        .map(Some)
                        .map_err(over_budget),
                    false => Ok(None),
                }
            }
        );
        if let Err(e) = session {
            if let Ok(Some(admission)) = admitted {
                self.give_back(admission).await;
            }
            match e {
                ApiError::RateLimited { .. } => refusal_metric("session_requests_per_minute"),
                ApiError::Unauthorized(_) => refusal_metric("unauthenticated"),
                _ => {}
            }
            return Err(e);
        }
        let admitted = admitted?;
        if (need.stream || need.turn)
            && let Err(e) = self.identity.require_openai_key().await
        {
            if let Some(admission) = admitted {
                self.give_back(admission).await;
            }
            return Err(e);
        }
        Ok(admitted)
    }

    fn meter(&self, admission: &Admission) -> Meter {
        Meter {
            day: admission.day,
            used: admission.used.tokens.total(),
            budget: self.budget.budget(),
        }
    }

    async fn give_back(&self, admission: Admission) {
        if let Err(e) = self
            .budget
            .give_back(self.verified.user(), &admission)
            .await
        {
            tracing::warn!(error = %e, "could not give back an unused turn");
        }
    }

    async fn charge(&self, admission: Admission, tokens: TokenUsage) {
        let user = self.verified.user();
        if let Err(e) = self.budget.charge(user, &admission, tokens).await {
            tracing::error!(error = %e, "could not charge a dictation");
        }
        usage_metric(user, Spent { tokens, rounds: 1 });
    }
}

/// A budget refusal as the answer (and its metric).
fn over_budget(refusal: Refusal) -> ApiError {
    refusal_metric(refusal.reason());
    ApiError::OverBudget(refusal)
}

/// `TaskPilot` › `ChatRefusals` by `Function` and `Reason`
/// (`unauthenticated`, `session_requests_per_minute`, `turns_per_minute`,
/// `tokens_per_day`): one count per refused request.
pub fn refusal_metric(reason: &'static str) {
    Emf::new("TaskPilot")
        .dimension("Function", "chatkit")
        .dimension("Reason", reason)
        .metric("ChatRefusals", "Count", 1)
        .print();
}

/// After a turn that asked the model: `TaskPilot` › `InputTokens`,
/// `CachedInputTokens`, `OutputTokens` and `ModelRounds` by `Function`, and a
/// `turn usage` log line naming the user, for finding who spends.
pub fn usage_metric(user: &taskpilot_domain::UserId, spent: Spent) {
    if spent.rounds == 0 {
        return;
    }
    let tokens = spent.tokens;
    tracing::info!(
        user = user.as_str(),
        input_tokens = tokens.input,
        cached_input_tokens = tokens.cached_input,
        output_tokens = tokens.output,
        rounds = spent.rounds,
        "turn usage"
    );
    Emf::new("TaskPilot")
        .dimension("Function", "chatkit")
        .metric("InputTokens", "Count", tokens.input)
        .metric("CachedInputTokens", "Count", tokens.cached_input)
        .metric("OutputTokens", "Count", tokens.output)
        .metric("ModelRounds", "Count", u64::from(spent.rounds))
        .print();
}

//! `POST /api/chatkit/sessions` (also under `/api/v1`), `…/{session_id}/cancel`
//! and `GET /api/v1/chatkit/usage` (the caller's chat budget).

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use taskpilot_domain::UserId;
use taskpilot_domain::budget::{BudgetGate, BudgetStatus, ChatBudget, UsageStore};
use taskpilot_domain::session::{
    ActiveSessionCap, ChatSession, RateDecision, RateLimiter, SessionMode, SessionStatus,
    SessionStore, SessionTokens, TOKEN_PREFIX, secret_hash, session_id_at,
};
use taskpilot_http::json::{parse_body, respond};
use taskpilot_http::request::deadline;
use taskpilot_http::{ApiError, Authenticator, UpstreamError};
use taskpilot_openai::{CHATKIT_BETA, Call, OpenAi};

use crate::settings::{SessionRules, Workflow};

const PREFIXES: [&str; 2] = ["/api/chatkit/sessions", "/api/v1/chatkit/sessions"];
/// The caller's chat budget.
const USAGE: &str = "/api/v1/chatkit/usage";
/// Rate-limit bucket of session creation.
const CREATE_BUCKET: &str = "sessions.create";

/// The handlers over a session store (DynamoDB in `main`, the in-memory fake
/// in the tests), built once.
pub struct SessionsApi<S> {
    settings: SessionRules,
    store: S,
    openai: OpenAi,
    auth: Authenticator,
    budget: BudgetGate<S>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    current_client_secret: Option<String>,
}

/// The answer to a create or refresh.
#[derive(Serialize)]
struct Minted {
    client_secret: String,
    session_id: String,
    expires_at: i64,
    status: SessionStatus,
    mode: SessionMode,
    chatkit_url: Option<String>,
}

/// `GET /api/v1/chatkit/usage`: where the caller stands against the chat budget.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Usage {
    turns_per_minute: Allowance,
    tokens_per_day: Allowance,
    today: Today,
}

/// One limit: what is used in its window and when the window ends.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Allowance {
    limit: u64,
    used: u64,
    /// `limit - used`, never below 0.
    remaining: u64,
    /// Unix seconds.
    resets_at: i64,
}

/// Today's (UTC) usage by kind.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Today {
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    rounds: u64,
    turns: u64,
}

impl Usage {
    fn of(budget: ChatBudget, status: &BudgetStatus) -> Self {
        let allowance = |limit: u64, used: u64, resets_at: DateTime<Utc>| Allowance {
            limit,
            used,
            remaining: limit.saturating_sub(used),
            resets_at: resets_at.timestamp(),
        };
        let today = &status.today;
        Self {
            turns_per_minute: allowance(
                u64::from(budget.turns_per_minute),
                u64::from(status.turns_this_minute),
                status.minute_resets_at,
            ),
            tokens_per_day: allowance(
                budget.tokens_per_day,
                today.tokens.total(),
                status.day_resets_at,
            ),
            today: Today {
                input_tokens: today.tokens.input,
                cached_input_tokens: today.tokens.cached_input,
                output_tokens: today.tokens.output,
                rounds: today.rounds,
                turns: today.turns,
            },
        }
    }
}

enum Route {
    Create,
    Cancel(String),
    Usage,
}

impl Route {
    /// The one method the route serves.
    fn method(&self) -> Method {
        match self {
            Self::Usage => Method::GET,
            Self::Create | Self::Cancel(_) => Method::POST,
        }
    }
}

fn route(path: &str) -> Option<Route> {
    if path == USAGE {
        return Some(Route::Usage);
    }
    let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
    if rest.is_empty() {
        return Some(Route::Create);
    }
    let id = rest.strip_prefix('/')?.strip_suffix("/cancel")?;
    let plausible = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    Some(Route::Cancel(if plausible {
        id.to_owned()
    } else {
        String::new()
    }))
}

impl<S: SessionStore + RateLimiter + UsageStore> SessionsApi<S> {
    /// Wires the dependencies; `budget` is the per-user chat budget the
    /// `chatkit` function enforces, read here to show it.
    pub fn new(
        settings: SessionRules,
        store: S,
        openai: OpenAi,
        auth: Authenticator,
        budget: BudgetGate<S>,
    ) -> Self {
        Self {
            settings,
            store,
            openai,
            auth,
            budget,
        }
    }

    /// Routes, authenticates and answers one request.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_owned();
        let route = route(&path).ok_or_else(|| ApiError::RouteNotFound {
            method: req.method().to_string(),
            path: path.clone(),
        })?;
        if req.method() != route.method() {
            return Err(taskpilot_http::routes::refused(req.method(), &path));
        }
        let user = self.auth.authenticate(&req).await?;
        match route {
            Route::Create => self.create(&user, &req).await,
            Route::Cancel(id) => self.cancel(&user, &id, &req).await,
            Route::Usage => self.usage(&user).await,
        }
    }

    /// The caller's own budget: turns this minute, tokens today.
    async fn usage(&self, user: &UserId) -> Result<Response<Body>, ApiError> {
        let status = self.budget.status(user, Utc::now()).await?;
        Ok(respond(
            StatusCode::OK,
            &Usage::of(self.budget.budget(), &status),
        ))
    }

    async fn create(&self, user: &UserId, req: &Request) -> Result<Response<Body>, ApiError> {
        let body: CreateBody = parse_body(req)?;
        let now = Utc::now();
        let limit = self.settings.create_per_minute;
        if let RateDecision::Limited { retry_after } =
            self.store.hit(user, CREATE_BUCKET, limit, 60, now).await?
        {
            return Err(ApiError::RateLimited {
                message: format!("at most {limit} sessions a minute; retry in {retry_after} s"),
                retry_after,
            });
        }
        let deadline = deadline(req, self.openai.timeout());
        if let Some(current) = body.current_client_secret.as_deref() {
            self.retire(user, current, now, deadline).await?;
        }
        let minted = match &self.settings.workflow {
            None => self.mint_self_hosted(user, now, req, deadline).await?,
            Some(workflow) => self.mint_hosted(user, workflow, deadline).await?,
        };
        tracing::info!(session_id = %minted.session_id, mode = ?minted.mode, refreshed = body.current_client_secret.is_some(), "session created");
        Ok(respond(StatusCode::OK, &minted))
    }

    async fn tokens(&self) -> Result<SessionTokens, ApiError> {
        let secrets = self
            .openai
            .secrets()
            .get()
            .await
            .map_err(UpstreamError::from)?;
        SessionTokens::new(secrets.session_signing_key.expose().as_bytes())
            .ok_or_else(|| ApiError::Internal("unusable signing key".into()))
    }

    async fn mint_self_hosted(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
        req: &Request,
        deadline: std::time::Instant,
    ) -> Result<Minted, ApiError> {
        let tokens = self.tokens().await?;
        self.make_room(user, now, deadline).await?;
        let session = ChatSession {
            // Its id's ULID time is `created_at`: what `active_sessions` reads.
            id: session_id_at(now),
            mode: SessionMode::SelfHosted,
            status: SessionStatus::Active,
            created_at: now,
            expires_at: now + chrono::Duration::seconds(self.settings.ttl_secs as i64),
            max_requests_per_minute: self.settings.max_requests_per_minute,
            workflow_id: None,
            secret_hash: None,
        };
        self.store.put_session(user, &session).await?;
        Ok(Minted {
            client_secret: tokens.sign(&session, user),
            session_id: session.id,
            expires_at: session.expires_at.timestamp(),
            status: session.status,
            mode: session.mode,
            chatkit_url: Some(self.chatkit_url(req)),
        })
    }

    async fn mint_hosted(
        &self,
        user: &UserId,
        workflow: &Workflow,
        deadline: std::time::Instant,
    ) -> Result<Minted, ApiError> {
        let mut wf = json!({ "id": workflow.id });
        if let Some(version) = &workflow.version {
            wf["version"] = json!(version);
        }
        let body = json!({
            "user": user.as_str(),
            "workflow": wf,
            "expires_after": { "anchor": "created_at", "seconds": self.settings.ttl_secs },
            "rate_limits": { "max_requests_per_1_minute": self.settings.max_requests_per_minute },
        });
        let not_found = format!(
            "workflow {} was not found upstream; check CHATKIT_WORKFLOW_ID and that the API key belongs to the same project",
            workflow.id
        );
        let call = Call {
            method: reqwest::Method::POST,
            path: "/chatkit/sessions",
            body: Some(&body),
            header: Some(CHATKIT_BETA),
            not_found: &not_found,
        };
        let answer = self.openai.send(&call, deadline).await?;
        let unreadable = || UpstreamError::Unavailable("unreadable session response".into());
        let id = answer["id"].as_str().ok_or_else(unreadable)?.to_owned();
        let secret = answer["client_secret"]
            .as_str()
            .ok_or_else(unreadable)?
            .to_owned();
        let expires_at = answer["expires_at"].as_i64().ok_or_else(unreadable)?;
        let session = ChatSession {
            id,
            mode: SessionMode::Hosted,
            status: SessionStatus::Active,
            created_at: Utc::now(),
            expires_at: DateTime::from_timestamp(expires_at, 0).ok_or_else(unreadable)?,
            max_requests_per_minute: answer["rate_limits"]["max_requests_per_1_minute"]
                .as_u64()
                .map_or(self.settings.max_requests_per_minute, |n| n as u32),
            workflow_id: Some(workflow.id.clone()),
            secret_hash: Some(secret_hash(&secret)),
        };
        self.store.put_session(user, &session).await?;
        Ok(Minted {
            client_secret: secret,
            session_id: session.id,
            expires_at,
            status: SessionStatus::Active,
            mode: SessionMode::Hosted,
            chatkit_url: None,
        })
    }

    /// Keeps `user` within `CHATKIT_MAX_ACTIVE_SESSIONS` once the new session
    /// is stored: at the cap, the oldest active sessions are cancelled (their
    /// secrets are refused from then on), so a user who reloads the page is
    /// never locked out. Self-hosted mode only: hosted sessions live upstream
    /// and are not capped.
    ///
    /// Not atomic: mints that run concurrently each see the others' sessions
    /// missing, so the user may briefly hold up to the cap plus the number of
    /// concurrent mints; the next mint brings them back to the cap.
    async fn make_room(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
        deadline: std::time::Instant,
    ) -> Result<(), ApiError> {
        let cap = ActiveSessionCap {
            max_active: self.settings.max_active_sessions,
            ttl: chrono::Duration::seconds(self.settings.ttl_secs as i64),
        };
        let active = self
            .store
            .active_sessions(user, cap.created_since(now), now)
            .await?;
        let oldest = cap.to_cancel(&active);
        if oldest.is_empty() {
            return Ok(());
        }
        for session in oldest {
            self.cancel_session(user, session, deadline).await?;
        }
        tracing::info!(
            cancelled = oldest.len(),
            active = active.len(),
            max_active = cap.max_active,
            "oldest active sessions cancelled to make room"
        );
        Ok(())
    }

    /// Cancels the session behind `current` (a refresh). Secrets that were not
    /// issued to this user by this service are refused.
    async fn retire(
        &self,
        user: &UserId,
        current: &str,
        now: DateTime<Utc>,
        deadline: std::time::Instant,
    ) -> Result<(), ApiError> {
        let invalid = || ApiError::BadParameter {
            name: "current_client_secret".into(),
            message: "current_client_secret was not issued to you by this service".into(),
        };
        let session_id = if current.starts_with(TOKEN_PREFIX) {
            let claims = self
                .tokens()
                .await?
                .verify(current, now, true)
                .map_err(|_| invalid())?;
            if claims.sub != user.as_str() {
                return Err(invalid());
            }
            claims.sid
        } else {
            self.store
                .find_session_by_secret(user, &secret_hash(current))
                .await?
                .ok_or_else(invalid)?
                .id
        };
        if let Some(session) = self.store.get_session(user, &session_id).await? {
            self.cancel_session(user, &session, deadline).await?;
        }
        Ok(())
    }

    async fn cancel(
        &self,
        user: &UserId,
        id: &str,
        req: &Request,
    ) -> Result<Response<Body>, ApiError> {
        let not_found = || ApiError::Domain(taskpilot_domain::DomainError::NotFound("session"));
        let session = match id {
            "" => None,
            id => self.store.get_session(user, id).await?,
        }
        .ok_or_else(not_found)?;
        let cancelled = self
            .cancel_session(user, &session, deadline(req, self.openai.timeout()))
            .await?
            .ok_or_else(not_found)?;
        Ok(respond(
            StatusCode::OK,
            &json!({
                "session_id": cancelled.id,
                "status": cancelled.status,
                "mode": cancelled.mode,
                "expires_at": cancelled.expires_at.timestamp(),
            }),
        ))
    }

    /// Cancels upstream (hosted) and in the table.
    async fn cancel_session(
        &self,
        user: &UserId,
        session: &ChatSession,
        deadline: std::time::Instant,
    ) -> Result<Option<ChatSession>, ApiError> {
        if session.mode == SessionMode::Hosted && session.status == SessionStatus::Active {
            let path = format!("/chatkit/sessions/{}/cancel", session.id);
            let call = Call {
                method: reqwest::Method::POST,
                path: &path,
                body: None,
                header: Some(CHATKIT_BETA),
                not_found: "the session no longer exists upstream",
            };
            match self.openai.send(&call, deadline).await {
                Ok(_) | Err(UpstreamError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.store.cancel_session(user, &session.id).await?)
    }

    fn chatkit_url(&self, req: &Request) -> String {
        if let Some(url) = &self.settings.chatkit_url {
            return url.clone();
        }
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("https://{host}/api/v1/chatkit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskpilot_domain::budget::{DayUsage, TokenUsage};

    #[test]
    fn usage_counts_input_and_output_and_never_goes_negative() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
        let budget = ChatBudget {
            turns_per_minute: 10,
            tokens_per_day: 1_000,
            warn_percent: 80,
        };
        let status = BudgetStatus {
            turns_this_minute: 3,
            minute_resets_at: at(1_800_000_060),
            today: DayUsage {
                tokens: TokenUsage {
                    input: 900,
                    cached_input: 400,
                    output: 345,
                },
                rounds: 4,
                turns: 2,
            },
            day_resets_at: at(1_800_028_800),
        };
        let usage = serde_json::to_value(Usage::of(budget, &status)).unwrap_or_default();
        assert_eq!(
            usage,
            json!({
                "turns_per_minute": {"limit": 10, "used": 3, "remaining": 7, "resets_at": 1_800_000_060},
                "tokens_per_day": {"limit": 1_000, "used": 1_245, "remaining": 0, "resets_at": 1_800_028_800},
                "today": {"input_tokens": 900, "cached_input_tokens": 400, "output_tokens": 345,
                          "rounds": 4, "turns": 2}
            })
        );
    }

    #[test]
    fn each_route_has_its_method() {
        assert!(matches!(route(USAGE), Some(Route::Usage)));
        assert_eq!(route(USAGE).map(|r| r.method()), Some(Method::GET));
        assert_eq!(
            route("/api/v1/chatkit/sessions").map(|r| r.method()),
            Some(Method::POST)
        );
        assert!(route("/api/chatkit/usage").is_none());
        assert!(route("/api/v1/chatkit/usage/x").is_none());
    }
}

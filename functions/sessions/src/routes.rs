//! `POST /api/chatkit/sessions` (also under `/api/v1`) and `…/{session_id}/cancel`.

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use taskpilot_domain::UserId;
use taskpilot_domain::session::{
    ChatSession, RateDecision, RateLimiter, SessionMode, SessionStatus, SessionStore,
    SessionTokens, new_session_id, secret_hash,
};
use taskpilot_http::json::{parse_body, respond};
use taskpilot_http::request::deadline;
use taskpilot_http::{ApiError, Authenticator, UpstreamError};
use taskpilot_openai::{CHATKIT_BETA, Call, OpenAi};
use taskpilot_store::DynamoStore;

use crate::settings::{Settings, Workflow};

const PREFIXES: [&str; 2] = ["/api/chatkit/sessions", "/api/v1/chatkit/sessions"];
/// Rate-limit bucket of session creation.
const CREATE_BUCKET: &str = "sessions.create";

/// The handlers with their dependencies.
pub struct SessionsApi {
    settings: Settings,
    store: DynamoStore,
    openai: OpenAi,
    auth: Authenticator,
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

enum Route {
    Create,
    Cancel(String),
}

fn route(path: &str) -> Option<Route> {
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

impl SessionsApi {
    /// Wires the dependencies.
    pub fn new(
        settings: Settings,
        store: DynamoStore,
        openai: OpenAi,
        auth: Authenticator,
    ) -> Self {
        Self {
            settings,
            store,
            openai,
            auth,
        }
    }

    /// Routes, authenticates and answers one request.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_owned();
        let route = route(&path).ok_or_else(|| ApiError::RouteNotFound {
            method: req.method().to_string(),
            path: path.clone(),
        })?;
        if req.method() != Method::POST {
            return Err(ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allowed: "POST, OPTIONS".into(),
            });
        }
        let user = self.auth.authenticate(&req).await?;
        match route {
            Route::Create => self.create(&user, &req).await,
            Route::Cancel(id) => self.cancel(&user, &id, &req).await,
        }
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
            None => self.mint_self_hosted(user, now, req).await?,
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
    ) -> Result<Minted, ApiError> {
        let tokens = self.tokens().await?;
        let session = ChatSession {
            id: new_session_id(),
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
        let session_id = if current.starts_with("cks_") {
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

//! Who is calling the ChatKit endpoint: a client secret minted by the sessions
//! function (signature, expiry, session still active, per-session budget), or
//! a user JWT exactly as for the REST API.

use std::sync::Arc;

use lambda_http::Request;

use taskpilot_domain::UserId;
use taskpilot_domain::session::{
    RateDecision, RateLimiter, SessionStore, SessionTokens, TokenError,
};
use taskpilot_http::{ApiError, Authenticator, UpstreamError};
use taskpilot_secrets::SecretCache;
use taskpilot_store::DynamoStore;

/// Verifies callers.
pub struct Identity {
    store: DynamoStore,
    secrets: Arc<SecretCache>,
    auth: Authenticator,
}

impl Identity {
    /// Wires the dependencies.
    pub fn new(store: DynamoStore, secrets: Arc<SecretCache>, auth: Authenticator) -> Self {
        Self {
            store,
            secrets,
            auth,
        }
    }

    /// The caller's user id, 401 when unknown, 429 past the session's budget.
    pub async fn user(&self, req: &Request) -> Result<UserId, ApiError> {
        let bearer = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match bearer {
            Some(token) if token.starts_with("cks_") => self.client_secret(token).await,
            _ => self.auth.authenticate(req).await,
        }
    }

    /// Fails (503 `secret_unavailable`) when the OpenAI key cannot be read, so
    /// a stream never starts, and nothing is stored, without it.
    pub async fn require_openai_key(&self) -> Result<(), ApiError> {
        self.secrets.get().await.map_err(UpstreamError::from)?;
        Ok(())
    }

    async fn client_secret(&self, token: &str) -> Result<UserId, ApiError> {
        let secrets = self.secrets.get().await.map_err(UpstreamError::from)?;
        let tokens = SessionTokens::new(secrets.session_signing_key.expose().as_bytes())
            .ok_or_else(|| ApiError::Internal("unusable signing key".into()))?;
        let now = chrono::Utc::now();
        let claims = tokens.verify(token, now, false).map_err(|e| match e {
            TokenError::Expired => {
                ApiError::Unauthorized("the client secret has expired; ask for a new one".into())
            }
            TokenError::Invalid => ApiError::Unauthorized("the client secret is not valid".into()),
        })?;
        let user = UserId::new(claims.sub)
            .map_err(|_| ApiError::Unauthorized("the client secret is not valid".into()))?;
        let session = self
            .store
            .get_session(&user, &claims.sid)
            .await?
            .filter(|s| s.is_usable(now))
            .ok_or_else(|| {
                ApiError::Unauthorized("the session was cancelled or has expired".into())
            })?;
        let bucket = format!("chatkit.session.{}", session.id);
        if let RateDecision::Limited { retry_after } = self
            .store
            .hit(&user, &bucket, session.max_requests_per_minute, 60, now)
            .await?
        {
            return Err(ApiError::RateLimited {
                message: format!(
                    "this session allows {} requests a minute; retry in {retry_after} s",
                    session.max_requests_per_minute
                ),
                retry_after,
            });
        }
        Ok(user)
    }
}

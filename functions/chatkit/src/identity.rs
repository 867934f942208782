//! Who is calling the ChatKit endpoint: a user JWT exactly as for the REST
//! API, or a client secret minted by the sessions function. The token itself
//! is checked first, with no storage request ([`Identity::verify`]); a
//! client secret's session (still active, within its per-session budget) is
//! checked by [`Identity::check_session`], which the endpoint runs
//! concurrently with the rest of the request's reads.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lambda_http::Request;

use taskpilot_domain::UserId;
use taskpilot_domain::remembered::Remembered;
use taskpilot_domain::session::{
    RateLimiter, RateWindow, SessionStore, SessionTokens, TOKEN_PREFIX, TokenError,
};
use taskpilot_http::auth::bearer;
use taskpilot_http::{ApiError, Authenticator, UpstreamError};
use taskpilot_secrets::SecretCache;

/// The window of a session's request budget, in seconds.
const SESSION_WINDOW_SECS: u64 = 60;

/// Verifies callers.
pub struct Identity<S> {
    store: S,
    secrets: Arc<SecretCache>,
    auth: Authenticator,
    /// Sessions found cancelled (or gone), until their secret expires.
    refused: Remembered<()>,
}

/// A caller whose token was verified.
#[derive(Debug, Clone)]
pub enum Verified {
    /// A user JWT (or API Gateway's verified claims).
    User(UserId),
    /// A ChatKit client secret: signed by us for this user and session, not
    /// expired; the session's state is checked separately.
    Session {
        /// The user it was issued to.
        user: UserId,
        /// The session it belongs to.
        session_id: String,
        /// When the secret expires (Unix seconds).
        expires: i64,
    },
}

impl Verified {
    /// The verified user.
    pub fn user(&self) -> &UserId {
        match self {
            Self::User(user) | Self::Session { user, .. } => user,
        }
    }
}

impl<S: SessionStore + RateLimiter> Identity<S> {
    /// Wires the dependencies.
    pub fn new(store: S, secrets: Arc<SecretCache>, auth: Authenticator) -> Self {
        Self {
            store,
            secrets,
            auth,
            refused: Remembered::default(),
        }
    }

    /// The caller, from the token alone (401 when unknown). A client
    /// secret's signature is checked with the cached signing key: no
    /// storage request.
    pub async fn verify(&self, req: &Request) -> Result<Verified, ApiError> {
        match bearer(req) {
            Ok(token) if token.starts_with(TOKEN_PREFIX) => self.client_secret(token).await,
            _ => self.auth.authenticate(req).await.map(Verified::User),
        }
    }

    /// Fails (503 `secret_unavailable`) when the OpenAI key cannot be read, so
    /// a stream never starts, and nothing is stored, without it.
    pub async fn require_openai_key(&self) -> Result<(), ApiError> {
        self.secrets.get().await.map_err(UpstreamError::from)?;
        Ok(())
    }

    async fn client_secret(&self, token: &str) -> Result<Verified, ApiError> {
        let secrets = self.secrets.get().await.map_err(UpstreamError::from)?;
        let tokens = SessionTokens::new(secrets.session_signing_key.expose().as_bytes())
            .ok_or_else(|| ApiError::Internal("unusable signing key".into()))?;
        let claims = tokens
            .verify(token, Utc::now(), false)
            .map_err(|e| match e {
                TokenError::Expired => ApiError::Unauthorized(
                    "the client secret has expired; ask for a new one".into(),
                ),
                TokenError::Invalid => {
                    ApiError::Unauthorized("the client secret is not valid".into())
                }
            })?;
        let user = UserId::new(claims.sub)
            .map_err(|_| ApiError::Unauthorized("the client secret is not valid".into()))?;
        if self.refused.get(&claims.sid, Utc::now()).is_some() {
            return Err(session_gone());
        }
        Ok(Verified::Session {
            user,
            session_id: claims.sid,
            expires: claims.exp,
        })
    }

    /// For a client secret: its session is still active (401) and within
    /// its per-session budget (429). The session's read and its counter run
    /// concurrently; a JWT caller passes at once.
    pub async fn check_session(
        &self,
        caller: &Verified,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let Verified::Session {
            user,
            session_id,
            expires,
        } = caller
        else {
            return Ok(());
        };
        let bucket = format!("chatkit.session.{session_id}");
        let (session, counted) = futures_util::join!(
            self.store.get_session(user, session_id),
            // The limit is the session's own, known once it is read: the
            // request is counted meanwhile and the limit applied after.
            self.store.count(user, &bucket, SESSION_WINDOW_SECS, now)
        );
        let retry_after = RateWindow::at(now, SESSION_WINDOW_SECS).retry_after(now);
        let Some(session) = session?.filter(|s| s.is_usable(now)) else {
            // A cancelled session never comes back: until its secret
            // expires, it is refused again with no storage request.
            let until = DateTime::from_timestamp(*expires, 0).unwrap_or(now);
            self.refused.remember(session_id, (), until, now);
            return Err(session_gone());
        };
        let count = counted?;
        if count > session.max_requests_per_minute {
            return Err(ApiError::RateLimited {
                message: format!(
                    "this session allows {} requests a minute; retry in {retry_after} s",
                    session.max_requests_per_minute
                ),
                retry_after,
            });
        }
        Ok(())
    }
}

/// A client secret whose session was cancelled (or is gone).
fn session_gone() -> ApiError {
    ApiError::Unauthorized("the session was cancelled or has expired".into())
}

//! Who is calling: the verified JWT `sub`.
//!
//! Behind API Gateway's JWT authorizer the claims arrive already verified in
//! `requestContext.authorizer.jwt.claims`. Everywhere else (local stack,
//! `sam local`, Function URLs) the function verifies the `Authorization:
//! Bearer` token itself, with the algorithm pinned by configuration.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde::Deserialize;

use taskpilot_domain::UserId;

use crate::config::{self, ConfigError};
use crate::error::ApiError;
use crate::jwks::JwksCache;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// Where verification keys come from.
enum Keys {
    /// One shared HS256 secret.
    Shared(DecodingKey),
    /// A JWKS endpoint, cached.
    Jwks(JwksCache),
}

/// Verifies callers. Built once at start-up.
pub struct Authenticator {
    verifier: Option<Verifier>,
}

struct Verifier {
    keys: Keys,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    /// Reads `AUTH_JWT_SECRET` or `AUTH_JWKS_URL` (not both), `AUTH_ISSUER`,
    /// `AUTH_AUDIENCE` and `AUTH_JWT_ALGORITHM` (default `HS256` with a secret,
    /// `RS256` with a JWKS URL; `ES256` and `EdDSA` are also accepted). With
    /// neither key source, only API Gateway authorizer claims are accepted.
    /// `http` gives the HTTP client for the JWKS; it is only called with a JWKS URL.
    pub fn from_env(
        http: impl FnOnce() -> Result<reqwest::Client, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let secret = config::optional("AUTH_JWT_SECRET");
        let jwks_url = config::optional("AUTH_JWKS_URL");
        let keys = match (secret, jwks_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "AUTH_JWKS_URL",
                    reason: "set either AUTH_JWT_SECRET or AUTH_JWKS_URL, not both".into(),
                });
            }
            (None, None) => {
                tracing::warn!(
                    "neither AUTH_JWT_SECRET nor AUTH_JWKS_URL is set: only API Gateway authorizer claims are accepted"
                );
                return Ok(Self { verifier: None });
            }
            (Some(secret), None) => {
                if secret.len() < 32 {
                    return Err(ConfigError::Invalid {
                        name: "AUTH_JWT_SECRET",
                        reason: "must be at least 32 bytes".into(),
                    });
                }
                (
                    Keys::Shared(DecodingKey::from_secret(secret.as_bytes())),
                    Algorithm::HS256,
                )
            }
            (None, Some(url)) => (Keys::Jwks(JwksCache::new(url, http()?)), Algorithm::RS256),
        };
        let (keys, default_alg) = keys;
        let algorithm = match config::optional("AUTH_JWT_ALGORITHM") {
            None => default_alg,
            Some(raw) => raw.parse::<Algorithm>().map_err(|_| ConfigError::Invalid {
                name: "AUTH_JWT_ALGORITHM",
                reason: format!("`{raw}` is not a JWT algorithm"),
            })?,
        };
        let allowed = match keys {
            Keys::Shared(_) => matches!(algorithm, Algorithm::HS256),
            Keys::Jwks(_) => matches!(
                algorithm,
                Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
            ),
        };
        if !allowed {
            return Err(ConfigError::Invalid {
                name: "AUTH_JWT_ALGORITHM",
                reason: format!(
                    "{algorithm:?} does not fit the key source (HS256 with AUTH_JWT_SECRET; RS256, ES256 or EdDSA with AUTH_JWKS_URL)"
                ),
            });
        }
        let issuer = config::required("AUTH_ISSUER")?;
        let audience = config::required("AUTH_AUDIENCE")?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            verifier: Some(Verifier { keys, validation }),
        })
    }

    /// The caller's user id, or 401.
    pub async fn authenticate(&self, req: &Request) -> Result<UserId, ApiError> {
        if let Some(sub) = authorizer_sub(req) {
            return UserId::new(sub)
                .map_err(|_| ApiError::Unauthorized("the token's subject is not usable".into()));
        }
        let token = bearer(req)?;
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            ApiError::Unauthorized(
                "this endpoint only accepts API Gateway-authorized requests".into(),
            )
        })?;
        verifier.verify(token).await
    }
}

impl Verifier {
    async fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let invalid = || ApiError::Unauthorized("the bearer token is invalid or expired".into());
        let header = decode_header(token).map_err(|_| invalid())?;
        // The algorithm is pinned: the token's own `alg` is never trusted.
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(invalid());
        }
        let data = match &self.keys {
            Keys::Shared(key) => decode::<Claims>(token, key, &self.validation),
            Keys::Jwks(cache) => {
                let kid = header.kid.as_deref().ok_or_else(invalid)?;
                let key = cache
                    .key(kid, header.alg)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "JWKS unavailable");
                        ApiError::Unauthorized("signing keys are unavailable; retry shortly".into())
                    })?
                    .ok_or_else(invalid)?;
                decode::<Claims>(token, &key, &self.validation)
            }
        }
        .map_err(|e| {
            tracing::info!(reason = ?e.kind(), "token rejected");
            invalid()
        })?;
        UserId::new(data.claims.sub).map_err(|_| invalid())
    }
}

/// `sub` from API Gateway's JWT authorizer, when it ran.
fn authorizer_sub(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx
            .authorizer
            .as_ref()?
            .jwt
            .as_ref()?
            .claims
            .get("sub")
            .cloned(),
        _ => None,
    }
}

/// The token from `Authorization: Bearer <token>`.
fn bearer(req: &Request) -> Result<&str, ApiError> {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is malformed".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        )),
    }
}

/// Timeout for fetching a JWKS document.
pub(crate) const JWKS_TIMEOUT: Duration = Duration::from_secs(3);

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

use crate::error::ApiError;
use crate::jwks::JwksCache;
use taskpilot_config::{ConfigError, Vars};

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

/// How callers are verified: `AUTH_JWT_SECRET` or `AUTH_JWKS_URL` (not both),
/// `AUTH_ISSUER`, `AUTH_AUDIENCE` and `AUTH_JWT_ALGORITHM` (default `HS256`
/// with a secret, `RS256` with a JWKS URL; `ES256` and `EdDSA` are also
/// accepted). With neither key source, only API Gateway authorizer claims are
/// accepted.
#[derive(Clone)]
pub struct AuthSettings {
    verification: Option<Verification>,
}

#[derive(Clone)]
struct Verification {
    keys: KeySource,
    algorithm: Algorithm,
    issuer: String,
    audience: String,
}

#[derive(Clone)]
enum KeySource {
    Secret(String),
    Jwks(String),
}

impl AuthSettings {
    /// Reads and checks the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let secret = vars.optional("AUTH_JWT_SECRET");
        let jwks_url = vars.optional("AUTH_JWKS_URL");
        let algorithm = vars.optional("AUTH_JWT_ALGORITHM");
        let (keys, default_alg) = match (secret, jwks_url) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "AUTH_JWKS_URL",
                    "set either AUTH_JWT_SECRET or AUTH_JWKS_URL, not both",
                ));
            }
            (None, None) => return Ok(Self { verification: None }),
            (Some(secret), None) => {
                if secret.len() < 32 {
                    return Err(ConfigError::invalid(
                        "AUTH_JWT_SECRET",
                        "must be at least 32 bytes",
                    ));
                }
                (KeySource::Secret(secret), Algorithm::HS256)
            }
            (None, Some(url)) => (KeySource::Jwks(url), Algorithm::RS256),
        };
        let algorithm = match algorithm {
            None => default_alg,
            Some(raw) => raw.parse::<Algorithm>().map_err(|_| {
                ConfigError::invalid(
                    "AUTH_JWT_ALGORITHM",
                    format!("`{raw}` is not a JWT algorithm"),
                )
            })?,
        };
        let allowed = match keys {
            KeySource::Secret(_) => matches!(algorithm, Algorithm::HS256),
            KeySource::Jwks(_) => matches!(
                algorithm,
                Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
            ),
        };
        if !allowed {
            return Err(ConfigError::invalid(
                "AUTH_JWT_ALGORITHM",
                format!(
                    "{algorithm:?} does not fit the key source (HS256 with AUTH_JWT_SECRET; RS256, ES256 or EdDSA with AUTH_JWKS_URL)"
                ),
            ));
        }
        Ok(Self {
            verification: Some(Verification {
                keys,
                algorithm,
                issuer: vars.required("AUTH_ISSUER")?,
                audience: vars.required("AUTH_AUDIENCE")?,
            }),
        })
    }

    /// HS256 tokens signed with `secret` (at least 32 bytes) for `issuer` and
    /// `audience`, as the local stack and the tests mint them.
    pub fn shared_secret(secret: &str, issuer: &str, audience: &str) -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_pairs([
            ("AUTH_JWT_SECRET", secret),
            ("AUTH_ISSUER", issuer),
            ("AUTH_AUDIENCE", audience),
        ]))
    }
}

impl Authenticator {
    /// The verifier `settings` describe. `http` gives the HTTP client for the
    /// JWKS; it is only called with a JWKS URL.
    pub fn new(
        settings: AuthSettings,
        http: impl FnOnce() -> Result<reqwest::Client, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let Some(v) = settings.verification else {
            tracing::warn!(
                "neither AUTH_JWT_SECRET nor AUTH_JWKS_URL is set: only API Gateway authorizer claims are accepted"
            );
            return Ok(Self { verifier: None });
        };
        let keys = match v.keys {
            KeySource::Secret(secret) => Keys::Shared(DecodingKey::from_secret(secret.as_bytes())),
            KeySource::Jwks(url) => Keys::Jwks(JwksCache::new(url, http()?)),
        };
        let mut validation = Validation::new(v.algorithm);
        validation.set_issuer(&[v.issuer]);
        validation.set_audience(&[v.audience]);
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
/// The token of `Authorization: Bearer <token>` (any case of the scheme,
/// trimmed); 401 when absent or malformed.
pub fn bearer(req: &Request) -> Result<&str, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use lambda_http::Body;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn from_pairs(set: &[(&'static str, &'static str)]) -> Result<Authenticator, ConfigError> {
        Authenticator::new(
            AuthSettings::from_vars(&Vars::from_pairs(set.iter().copied()))?,
            no_http,
        )
    }

    fn no_http() -> Result<reqwest::Client, ConfigError> {
        panic!("only a JWKS URL needs an HTTP client")
    }

    fn shared_secret(secret: &'static str) -> Result<Authenticator, ConfigError> {
        from_pairs(&[
            ("AUTH_JWT_SECRET", secret),
            ("AUTH_ISSUER", "https://issuer.example"),
            ("AUTH_AUDIENCE", "taskpilot"),
        ])
    }

    fn refused(built: Result<Authenticator, ConfigError>) -> ConfigError {
        match built {
            Ok(_) => panic!("the configuration was accepted"),
            Err(e) => e,
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(alg: Algorithm, exp: u64) -> String {
        let claims = json!({
            "sub": "user-1",
            "iss": "https://issuer.example",
            "aud": "taskpilot",
            "exp": exp,
        });
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn with_authorization(value: &str) -> Request {
        let mut req = Request::new(Body::Empty);
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, value.parse().unwrap());
        req
    }

    fn unauthorized(result: Result<UserId, ApiError>) -> String {
        match result {
            Err(ApiError::Unauthorized(message)) => message,
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_valid_token_names_its_subject() {
        let auth = shared_secret(SECRET).unwrap_or_else(|e| panic!("{e}"));
        let req = with_authorization(&format!("Bearer {}", token(Algorithm::HS256, now() + 600)));
        assert_eq!(
            auth.authenticate(&req).await.unwrap(),
            UserId::new("user-1").unwrap()
        );
    }

    #[tokio::test]
    async fn a_token_with_another_algorithm_is_refused() {
        let auth = shared_secret(SECRET).unwrap_or_else(|e| panic!("{e}"));
        let req = with_authorization(&format!("Bearer {}", token(Algorithm::HS384, now() + 600)));
        unauthorized(auth.authenticate(&req).await);
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let auth = shared_secret(SECRET).unwrap_or_else(|e| panic!("{e}"));
        let expired = now() - 2 * LEEWAY_SECS;
        let req = with_authorization(&format!("Bearer {}", token(Algorithm::HS256, expired)));
        unauthorized(auth.authenticate(&req).await);
    }

    #[tokio::test]
    async fn api_gateway_claims_are_trusted_without_a_token() {
        let auth = Authenticator { verifier: None };
        let payload = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/api/v1/tasks",
            "rawQueryString": "",
            "headers": {},
            "isBase64Encoded": false,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api",
                "stage": "$default",
                "requestId": "id",
                "authorizer": { "jwt": { "claims": { "sub": "user-7" }, "scopes": [] } },
                "http": {
                    "method": "GET",
                    "path": "/api/v1/tasks",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "192.0.2.1",
                    "userAgent": "test"
                }
            }
        });
        let req = crate::events::to_request(payload, lambda_http::Context::default()).unwrap();
        assert_eq!(
            auth.authenticate(&req).await.unwrap(),
            UserId::new("user-7").unwrap()
        );
    }

    #[tokio::test]
    async fn without_a_key_source_a_bearer_token_is_refused() {
        let auth = from_pairs(&[]).unwrap_or_else(|e| panic!("{e}"));
        let req = with_authorization(&format!("Bearer {}", token(Algorithm::HS256, now() + 600)));
        let message = unauthorized(auth.authenticate(&req).await);
        assert!(message.contains("API Gateway"), "{message}");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_trimmed() {
        let req = with_authorization("bearer  abc.def ");
        assert_eq!(bearer(&req).unwrap(), "abc.def");
    }

    #[test]
    fn another_scheme_is_refused() {
        let req = with_authorization("Basic abc");
        assert!(matches!(bearer(&req), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn an_empty_bearer_token_is_refused() {
        let req = with_authorization("Bearer   ");
        assert!(matches!(bearer(&req), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn a_missing_authorization_header_is_refused() {
        let req = Request::new(Body::Empty);
        assert!(matches!(bearer(&req), Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn a_32_byte_secret_is_enough() {
        assert!(shared_secret(SECRET).is_ok());
    }

    #[test]
    fn a_secret_under_32_bytes_is_refused() {
        let err = refused(shared_secret(&SECRET[1..]));
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    name: "AUTH_JWT_SECRET",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_secret_and_a_jwks_url_together_are_refused() {
        let err = refused(from_pairs(&[
            ("AUTH_JWT_SECRET", SECRET),
            ("AUTH_JWKS_URL", "https://issuer.example/jwks"),
        ]));
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    name: "AUTH_JWKS_URL",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_algorithm_that_does_not_fit_the_key_source_is_refused() {
        let err = refused(from_pairs(&[
            ("AUTH_JWT_SECRET", SECRET),
            ("AUTH_JWT_ALGORITHM", "RS256"),
            ("AUTH_ISSUER", "https://issuer.example"),
            ("AUTH_AUDIENCE", "taskpilot"),
        ]));
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    name: "AUTH_JWT_ALGORITHM",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_issuer_is_required() {
        let err = refused(from_pairs(&[
            ("AUTH_JWT_SECRET", SECRET),
            ("AUTH_AUDIENCE", "taskpilot"),
        ]));
        assert!(matches!(err, ConfigError::Missing("AUTH_ISSUER")), "{err}");
    }
}

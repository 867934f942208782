//! API errors and the single place that turns them into HTTP responses.

use http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use taskpilot_domain::budget::Refusal;
use taskpilot_domain::{DomainError, StoreError};

/// Every way a request can fail. [`ApiError::into_response`] is the only
/// mapping to status codes and bodies.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain rule or storage failure.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No valid identity.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is not valid JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body names a field the endpoint does not accept.
    #[error("{0}")]
    UnknownField(String),
    /// A header or query parameter is malformed or not accepted.
    #[error("{message}")]
    BadParameter { name: String, message: String },
    /// The body is over the limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not JSON by its content type.
    #[error("send the body as UTF-8 application/json (got `{0}`)")]
    UnsupportedMediaType(String),
    /// An upload is not a form by its content type.
    #[error("send the file as multipart/form-data with one `file` field (got `{0}`)")]
    NotAForm(String),
    /// No such route.
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    /// The route exists but not for this method.
    #[error("{method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed { method: String, allowed: String },
    /// A real operation this server does not offer.
    #[error("{0}")]
    NotSupported(String),
    /// A file (attachment or audio) whose type is not accepted.
    #[error("{0}")]
    FileTypeNotAllowed(String),
    /// A file over its size limit.
    #[error("{0}")]
    FileTooLarge(String),
    /// The caller's storage quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The request conflicts with the state of what it names (e.g. an
    /// attachment not uploaded yet, or used elsewhere); `code` says which.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well-formed but cannot be processed (e.g. an upload that is not what
    /// was declared, a silent recording); `code` says which.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// A CORS preflight from an origin that is not allowed.
    #[error("origin `{0}` is not allowed")]
    OriginNotAllowed(String),
    /// Too many requests from this caller.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The user's chat budget is used up (`turns_per_minute` answers
    /// `rate_limited`, `tokens_per_day` answers `budget_exhausted`).
    #[error("{}", .0.message())]
    OverBudget(taskpilot_domain::budget::Refusal),
    /// An upstream service (OpenAI, Secrets Manager) failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A bug or an unexpected failure; details stay in the logs.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How an upstream dependency failed. Upstream bodies are never forwarded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The API key was rejected, even after refreshing it.
    #[error("OpenAI rejected our credentials")]
    Auth,
    /// The upstream says the named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Upstream rate limiting; retry after this many seconds.
    #[error("OpenAI is rate limiting requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// 5xx, connection failure or an unreadable answer, after retries.
    #[error("OpenAI is unavailable ({0})")]
    Unavailable(String),
    /// No answer within the configured time.
    #[error("OpenAI did not answer within {0} ms")]
    Timeout(u64),
    /// Another 4xx: our request was refused.
    #[error("OpenAI refused the request (HTTP {0})")]
    Rejected(u16),
    /// The API key could not be read from Secrets Manager.
    #[error("the OpenAI key cannot be read right now ({0})")]
    Secret(String),
}

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: u64 = 1;
/// Seconds before retrying when the OpenAI key cannot be read.
const SECRET_RETRY_AFTER_SECS: u64 = 5;

/// An error as the client sees it: status, stable code, message, details
/// and `Retry-After`.
struct ErrorBody {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
    retry_after: Option<u64>,
}

impl ErrorBody {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            details: None,
            retry_after: None,
        }
    }

    fn details(self, details: Value) -> Self {
        Self {
            details: Some(details),
            ..self
        }
    }

    fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }
}

impl ApiError {
    /// The one mapping from an error to what the client is told.
    fn body(&self) -> ErrorBody {
        use ApiError as E;
        use StatusCode as S;
        let message = self.to_string();
        let plain = |status, code| ErrorBody::new(status, code, message.clone());
        let internal = || {
            ErrorBody::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side".into(),
            )
        };
        match self {
            E::Domain(DomainError::Validation { field, message }) => ErrorBody::new(
                S::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("{field}: {message}"),
            )
            .details(json!({ "field": field })),
            E::Domain(DomainError::NotFound(_)) => plain(S::NOT_FOUND, "not_found"),
            E::Domain(DomainError::VersionConflict { current }) => ErrorBody::new(
                S::CONFLICT,
                "version_conflict",
                format!(
                    "the task was changed by someone else and is now at version {}; \
                     re-apply your change to the current task",
                    current.version
                ),
            )
            .details(json!({ "current": current })),
            E::Domain(DomainError::IdempotencyMismatch) => {
                plain(S::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            E::Domain(DomainError::IdempotencyInFlight) => {
                plain(S::CONFLICT, "idempotency_in_flight")
            }
            E::Domain(DomainError::InvalidCursor) => plain(S::BAD_REQUEST, "invalid_cursor"),
            E::Domain(DomainError::Store(StoreError::Unavailable(_))) => ErrorBody::new(
                S::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "storage is temporarily unavailable; retry shortly".into(),
            )
            .retry_after(RETRY_AFTER_SECS),
            E::Domain(DomainError::Store(StoreError::Internal(_))) | E::Internal(_) => internal(),
            E::Unauthorized(_) => plain(S::UNAUTHORIZED, "unauthorized"),
            E::MalformedJson(_) => plain(S::BAD_REQUEST, "malformed_json"),
            E::UnknownField(_) => plain(S::BAD_REQUEST, "unknown_field"),
            E::BadParameter { name, .. } => {
                plain(S::BAD_REQUEST, "invalid_parameter").details(json!({ "parameter": name }))
            }
            E::PayloadTooLarge { .. } => plain(S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            E::UnsupportedMediaType(_) | E::NotAForm(_) => {
                plain(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            E::RouteNotFound { .. } => plain(S::NOT_FOUND, "route_not_found"),
            E::MethodNotAllowed { .. } => plain(S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            E::OriginNotAllowed(_) => plain(S::FORBIDDEN, "origin_not_allowed"),
            E::NotSupported(_) => plain(S::BAD_REQUEST, "not_supported"),
            E::FileTypeNotAllowed(_) => plain(S::UNSUPPORTED_MEDIA_TYPE, "file_type_not_allowed"),
            E::FileTooLarge(_) => plain(S::PAYLOAD_TOO_LARGE, "file_too_large"),
            E::QuotaExceeded(_) => plain(S::FORBIDDEN, "quota_exceeded"),
            E::Conflict { code, .. } => plain(S::CONFLICT, code),
            E::Unprocessable { code, .. } => plain(S::UNPROCESSABLE_ENTITY, code),
            E::RateLimited { retry_after, .. } => {
                plain(S::TOO_MANY_REQUESTS, "rate_limited").retry_after(*retry_after)
            }
            E::OverBudget(refusal @ Refusal::TurnsPerMinute { .. }) => {
                plain(S::TOO_MANY_REQUESTS, "rate_limited").retry_after(refusal.retry_after())
            }
            E::OverBudget(refusal @ Refusal::TokensPerDay { .. }) => {
                plain(S::TOO_MANY_REQUESTS, "budget_exhausted").retry_after(refusal.retry_after())
            }
            E::Upstream(UpstreamError::Auth) => plain(S::BAD_GATEWAY, "upstream_auth"),
            E::Upstream(UpstreamError::NotFound(_)) => plain(S::BAD_GATEWAY, "upstream_not_found"),
            E::Upstream(UpstreamError::RateLimited { retry_after }) => {
                plain(S::SERVICE_UNAVAILABLE, "upstream_rate_limited").retry_after(*retry_after)
            }
            E::Upstream(UpstreamError::Unavailable(_)) => {
                plain(S::BAD_GATEWAY, "upstream_unavailable")
            }
            E::Upstream(UpstreamError::Timeout(_)) => plain(S::GATEWAY_TIMEOUT, "upstream_timeout"),
            E::Upstream(UpstreamError::Rejected(_)) => plain(S::BAD_GATEWAY, "upstream_rejected"),
            E::Upstream(UpstreamError::Secret(_)) => {
                plain(S::SERVICE_UNAVAILABLE, "secret_unavailable")
                    .retry_after(SECRET_RETRY_AFTER_SECS)
            }
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.body().status
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.body().code
    }

    /// Renders `{"error":{"code","message","details"?}}`, with `Retry-After` on 503
    /// and `WWW-Authenticate` on 401.
    pub fn into_response(self) -> Response<Body> {
        let ErrorBody {
            status,
            code,
            message,
            details,
            retry_after,
        } = self.body();
        if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
        } else {
            tracing::info!(error = %self, code, status = status.as_u16(), "request rejected");
        }
        let mut error = json!({ "code": code, "message": message });
        if let Some(details) = details {
            error["details"] = details;
        }
        let mut builder = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(seconds) = retry_after {
            builder = builder.header(http::header::RETRY_AFTER, seconds);
        }
        if status == StatusCode::UNAUTHORIZED {
            builder = builder.header(http::header::WWW_AUTHENTICATE, "Bearer");
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            builder = builder.header(http::header::ALLOW, allowed.as_str());
        }
        let body = json!({ "error": error }).to_string();
        builder
            .body(Body::Text(body))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Domain(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Response<Body>) -> Value {
        serde_json::from_slice(r.body().as_ref()).unwrap()
    }

    #[test]
    fn every_error_has_the_envelope() {
        let errors = vec![
            ApiError::Unauthorized("no token".into()),
            ApiError::MalformedJson("eof".into()),
            ApiError::PayloadTooLarge { limit: 16 },
            ApiError::Domain(DomainError::NotFound("task")),
            ApiError::Domain(DomainError::InvalidCursor),
            ApiError::Domain(StoreError::Unavailable("x".into()).into()),
            ApiError::Internal("secret detail".into()),
        ];
        for e in errors {
            let r = e.into_response();
            let b = body(&r);
            assert!(b["error"]["code"].is_string(), "{b}");
            assert!(b["error"]["message"].is_string(), "{b}");
            assert!(!b.to_string().contains("secret detail"));
        }
    }

    #[test]
    fn each_error_has_its_status_and_code() {
        let text = || "x".to_owned();
        let cases = vec![
            (
                ApiError::Domain(DomainError::validation("title", "is empty")),
                422,
                "validation_failed",
            ),
            (
                ApiError::Domain(DomainError::NotFound("task")),
                404,
                "not_found",
            ),
            (
                ApiError::Domain(DomainError::IdempotencyMismatch),
                422,
                "idempotency_key_reused",
            ),
            (
                ApiError::Domain(DomainError::IdempotencyInFlight),
                409,
                "idempotency_in_flight",
            ),
            (
                ApiError::Domain(DomainError::InvalidCursor),
                400,
                "invalid_cursor",
            ),
            (
                ApiError::from(StoreError::Unavailable(text())),
                503,
                "service_unavailable",
            ),
            (
                ApiError::from(StoreError::Internal(text())),
                500,
                "internal",
            ),
            (ApiError::Unauthorized(text()), 401, "unauthorized"),
            (ApiError::MalformedJson(text()), 400, "malformed_json"),
            (ApiError::UnknownField(text()), 400, "unknown_field"),
            (
                ApiError::BadParameter {
                    name: text(),
                    message: text(),
                },
                400,
                "invalid_parameter",
            ),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType(text()),
                415,
                "unsupported_media_type",
            ),
            (ApiError::NotAForm(text()), 415, "unsupported_media_type"),
            (
                ApiError::RouteNotFound {
                    method: text(),
                    path: text(),
                },
                404,
                "route_not_found",
            ),
            (
                ApiError::MethodNotAllowed {
                    method: text(),
                    allowed: text(),
                },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::OriginNotAllowed(text()),
                403,
                "origin_not_allowed",
            ),
            (ApiError::NotSupported(text()), 400, "not_supported"),
            (
                ApiError::FileTypeNotAllowed(text()),
                415,
                "file_type_not_allowed",
            ),
            (ApiError::FileTooLarge(text()), 413, "file_too_large"),
            (ApiError::QuotaExceeded(text()), 403, "quota_exceeded"),
            (
                ApiError::Conflict {
                    code: "attachment_in_use",
                    message: text(),
                },
                409,
                "attachment_in_use",
            ),
            (
                ApiError::Unprocessable {
                    code: "silent_recording",
                    message: text(),
                },
                422,
                "silent_recording",
            ),
            (ApiError::Internal(text()), 500, "internal"),
        ];
        for (error, status, code) in cases {
            let what = format!("{error:?}");
            assert_eq!(
                (error.status().as_u16(), error.code()),
                (status, code),
                "{what}"
            );
            let r = error.into_response();
            assert_eq!(r.status(), status, "{what}");
            assert_eq!(body(&r)["error"]["code"], code, "{what}");
        }
    }

    #[test]
    fn upstream_failures_are_gateway_errors() {
        let cases = [
            (UpstreamError::Auth, 502, "upstream_auth", None),
            (
                UpstreamError::NotFound("x".into()),
                502,
                "upstream_not_found",
                None,
            ),
            (
                UpstreamError::RateLimited { retry_after: 9 },
                503,
                "upstream_rate_limited",
                Some("9"),
            ),
            (
                UpstreamError::Unavailable("x".into()),
                502,
                "upstream_unavailable",
                None,
            ),
            (UpstreamError::Timeout(10), 504, "upstream_timeout", None),
            (UpstreamError::Rejected(400), 502, "upstream_rejected", None),
            (
                UpstreamError::Secret("x".into()),
                503,
                "secret_unavailable",
                Some("5"),
            ),
        ];
        for (upstream, status, code, retry_after) in cases {
            let what = format!("{upstream:?}");
            let r = ApiError::Upstream(upstream).into_response();
            assert_eq!(r.status(), status, "{what}");
            assert_eq!(body(&r)["error"]["code"], code, "{what}");
            assert_eq!(
                r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
                retry_after,
                "{what}"
            );
        }
    }

    #[test]
    fn a_rate_limit_is_a_429_with_its_retry_after() {
        let r = ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: 7,
        }
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(body(&r)["error"]["code"], "rate_limited");
        assert_eq!(body(&r)["error"]["message"], "slow down");
    }

    #[test]
    fn a_spent_minute_budget_is_rate_limited() {
        let refusal = taskpilot_domain::budget::Refusal::TurnsPerMinute {
            limit: 10,
            retry_after: 12,
        };
        let r = ApiError::OverBudget(refusal).into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "12");
        assert_eq!(body(&r)["error"]["code"], "rate_limited");
    }

    #[test]
    fn a_spent_day_budget_is_budget_exhausted() {
        let refusal = taskpilot_domain::budget::Refusal::TokensPerDay {
            limit: 1000,
            retry_after: 3600,
        };
        let r = ApiError::OverBudget(refusal).into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3600");
        assert_eq!(body(&r)["error"]["code"], "budget_exhausted");
        assert_eq!(body(&r)["error"]["message"], refusal.message());
    }

    #[test]
    fn a_client_error_has_no_retry_after() {
        let r = ApiError::Domain(DomainError::NotFound("task")).into_response();
        assert!(r.headers().get("retry-after").is_none());
    }

    #[test]
    fn a_401_asks_for_a_bearer_token() {
        let r = ApiError::Unauthorized("no token".into()).into_response();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }

    #[test]
    fn other_errors_do_not_ask_for_a_token() {
        let r = ApiError::OriginNotAllowed("https://evil.example".into()).into_response();
        assert!(r.headers().get("www-authenticate").is_none());
    }

    #[test]
    fn a_405_names_the_allowed_methods() {
        let r = ApiError::MethodNotAllowed {
            method: "PUT".into(),
            allowed: "GET, OPTIONS".into(),
        }
        .into_response();
        assert_eq!(r.headers()["allow"], "GET, OPTIONS");
    }

    #[test]
    fn a_validation_error_names_the_field() {
        let r = ApiError::Domain(DomainError::validation("title", "is empty")).into_response();
        let b = body(&r);
        assert_eq!(b["error"]["details"]["field"], "title");
        assert_eq!(b["error"]["message"], "title: is empty");
    }

    #[test]
    fn a_bad_parameter_names_the_parameter() {
        let r = ApiError::BadParameter {
            name: "limit".into(),
            message: "must be a number".into(),
        }
        .into_response();
        assert_eq!(body(&r)["error"]["details"]["parameter"], "limit");
    }

    #[test]
    fn unavailable_storage_is_a_retryable_503() {
        let r =
            ApiError::Domain(StoreError::Unavailable("throttled".into()).into()).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
    }
}

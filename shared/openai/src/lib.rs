//! The OpenAI API client used by the Lambdas.
//!
//! One retry layer, sized for Lambda deadlines: a 401/403 refreshes the key
//! once and retries; 5xx and connection failures are retried at most twice
//! with backoff while the deadline allows; 429 is reported with its
//! `Retry-After`; running out of time is a timeout. Upstream bodies are never
//! passed on; the upstream request id is logged.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use taskpilot_config::{ConfigError, Vars};
use taskpilot_http::UpstreamError;
use taskpilot_secrets::{SecretCache, SecretSettings, Secrets};

#[cfg(feature = "chat")]
pub mod responses;
pub mod sse;
#[cfg(feature = "chat")]
pub mod transcribe;

pub use sse::EventStream;
#[cfg(feature = "chat")]
pub use transcribe::{DEFAULT_TRANSCRIBE_MODEL, Dictation, TranscribeError};

/// `OPENAI_BASE_URL` when unset.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// Header that enables the ChatKit beta endpoints.
pub const CHATKIT_BETA: (&str, &str) = ("OpenAI-Beta", "chatkit_beta=v1");
/// Retries after a 5xx or a connection failure.
const MAX_RETRIES: u32 = 2;
/// First backoff; doubles per retry.
const BACKOFF: Duration = Duration::from_millis(200);

/// The client; built once in `main`.
#[derive(Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
    secrets: Arc<SecretCache>,
}

/// One request to send.
pub struct Call<'a> {
    /// HTTP method.
    pub method: Method,
    /// Path below the base URL, e.g. `/chatkit/sessions`.
    pub path: &'a str,
    /// JSON body.
    pub body: Option<&'a Value>,
    /// Extra header (the ChatKit beta header).
    pub header: Option<(&'a str, &'a str)>,
    /// What a 404 means, for the error message.
    pub not_found: &'a str,
}

/// Where OpenAI is and how long a call may take: `OPENAI_BASE_URL` (an
/// http(s) URL, default the public API) and `OPENAI_TIMEOUT_MS` (default
/// 10000).
#[derive(Clone, Debug)]
pub struct OpenAiSettings {
    base_url: String,
    timeout: Duration,
}

impl OpenAiSettings {
    /// Reads and checks the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let base_url = vars
            .optional("OPENAI_BASE_URL")
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "OPENAI_BASE_URL",
                "must be an http(s) URL",
            ));
        }
        let timeout = Duration::from_millis(vars.parsed("OPENAI_TIMEOUT_MS", 10_000u64)?);
        Ok(Self { base_url, timeout })
    }
}

impl OpenAi {
    /// A client for `base_url` with a time budget per call.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        timeout: Duration,
        secrets: Arc<SecretCache>,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
            secrets,
        }
    }

    /// The client `settings` describe, with its key cache as `secrets`
    /// describes it (`sdk` reaches Secrets Manager).
    pub fn connect(
        settings: &OpenAiSettings,
        secrets: &SecretSettings,
        sdk: &aws_types::SdkConfig,
        http: reqwest::Client,
    ) -> Self {
        let cache = Arc::new(SecretCache::new(secrets, sdk));
        Self::new(http, &settings.base_url, settings.timeout, cache)
    }

    /// The configured time budget of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The secret cache.
    pub fn secrets(&self) -> &Arc<SecretCache> {
        &self.secrets
    }

    /// Sends `call`, finishing by `deadline` (capped at the configured timeout),
    /// and returns the JSON answer.
    pub async fn send(&self, call: &Call<'_>, deadline: Instant) -> Result<Value, UpstreamError> {
        self.send_payload(call, Payload::of(call), deadline).await
    }

    /// [`OpenAi::send`] with `payload` as the body instead of `call.body`.
    pub(crate) async fn send_payload(
        &self,
        call: &Call<'_>,
        payload: Payload<'_>,
        deadline: Instant,
    ) -> Result<Value, UpstreamError> {
        match self.execute(call, payload, deadline, Want::Json).await? {
            Outcome::Json(value) => Ok(value),
            Outcome::Stream(_) => Err(UpstreamError::Unavailable("unexpected stream".into())),
        }
    }

    /// Starts a streamed call (`"stream": true`): failures before the first
    /// event, 429 included, are retried within `deadline`; the caller then reads
    /// the events.
    pub async fn stream(
        &self,
        call: &Call<'_>,
        deadline: Instant,
    ) -> Result<EventStream, UpstreamError> {
        match self
            .execute(call, Payload::of(call), deadline, Want::Stream)
            .await?
        {
            Outcome::Stream(stream) => Ok(stream),
            Outcome::Json(_) => Err(UpstreamError::Unavailable("expected a stream".into())),
        }
    }

    /// One call, retries included; a failure is counted as an EMF line
    /// ([`failure_metric`]).
    async fn execute(
        &self,
        call: &Call<'_>,
        payload: Payload<'_>,
        deadline: Instant,
        want: Want,
    ) -> Result<Outcome, UpstreamError> {
        let outcome = self.attempt(call, payload, deadline, want).await;
        if let Err(e) = &outcome {
            failure_metric(e);
        }
        outcome
    }

    async fn attempt(
        &self,
        call: &Call<'_>,
        payload: Payload<'_>,
        deadline: Instant,
        want: Want,
    ) -> Result<Outcome, UpstreamError> {
        // A JSON call is bounded by the configured timeout. A stream is bounded
        // by the caller's deadline as a whole; the configured timeout bounds
        // only the wait for its head and each gap between its events, so a
        // healthy long answer is never cut off.
        let whole = deadline;
        let deadline = deadline.min(Instant::now() + self.timeout);
        let budget_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let mut secrets: Arc<Secrets> = self.secrets.get().await.map_err(UpstreamError::from)?;
        let mut refreshed = false;
        let mut retries = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(UpstreamError::Timeout(budget_ms));
            }
            let mut req = self
                .http
                .request(
                    call.method.clone(),
                    format!("{}{}", self.base_url, call.path),
                )
                .bearer_auth(secrets.openai_api_key.expose())
                .timeout(match want {
                    Want::Json => remaining,
                    Want::Stream => whole.saturating_duration_since(Instant::now()),
                });
            if let Some((name, value)) = call.header {
                req = req.header(name, value);
            }
            req = match payload {
                Payload::Empty => req,
                Payload::Json(body) => req.json(body),
                #[cfg(feature = "chat")]
                Payload::Encoded {
                    content_type,
                    bytes,
                } => req
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.to_vec()),
            };
            let mut pause = Duration::ZERO;
            let sent = match tokio::time::timeout(remaining, req.send()).await {
                Ok(sent) => sent,
                Err(_) => return Err(UpstreamError::Timeout(budget_ms)),
            };
            let failure = match sent {
                Err(e) if e.is_timeout() => return Err(UpstreamError::Timeout(budget_ms)),
                Err(e) => format!("connection failed: {}", without_url(e)),
                Ok(resp) => {
                    let status = resp.status();
                    let request_id = resp
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    tracing::info!(
                        upstream = "openai",
                        path = call.path,
                        status = status.as_u16(),
                        upstream_request_id = %request_id,
                        "OpenAI answered"
                    );
                    match status {
                        s if s.is_success() && want == Want::Stream => {
                            return Ok(Outcome::Stream(EventStream::new(resp, self.timeout)));
                        }
                        s if s.is_success() => match resp.bytes().await {
                            Ok(bytes) => {
                                return serde_json::from_slice(&bytes)
                                    .map(Outcome::Json)
                                    .map_err(|_| unreadable());
                            }
                            Err(e) if e.is_timeout() => {
                                return Err(UpstreamError::Timeout(budget_ms));
                            }
                            Err(_) => "the response was cut off".to_owned(),
                        },
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if !refreshed => {
                            refreshed = true;
                            tracing::warn!("OpenAI rejected the key; refreshing it once");
                            secrets = self
                                .secrets
                                .refresh(&secrets)
                                .await
                                .map_err(UpstreamError::from)?;
                            continue;
                        }
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            return Err(UpstreamError::Auth);
                        }
                        StatusCode::NOT_FOUND => {
                            return Err(UpstreamError::NotFound(call.not_found.to_owned()));
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            let retry_after = resp
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<f64>().ok())
                                .map(|s| s.ceil().max(1.0) as u64)
                                .unwrap_or(1);
                            // A stream that has not started yet may wait its turn.
                            if want == Want::Json {
                                return Err(UpstreamError::RateLimited { retry_after });
                            }
                            pause = Duration::from_secs(retry_after);
                            format!("HTTP 429 (retry after {retry_after} s)")
                        }
                        s if s.is_server_error() => format!("HTTP {}", s.as_u16()),
                        s => return Err(UpstreamError::Rejected(s.as_u16())),
                    }
                }
            };
            let backoff = (BACKOFF * 2u32.pow(retries)).max(pause);
            let time_left = deadline.saturating_duration_since(Instant::now());
            if retries >= MAX_RETRIES || time_left <= backoff {
                if pause > Duration::ZERO {
                    return Err(UpstreamError::RateLimited {
                        retry_after: pause.as_secs(),
                    });
                }
                return Err(UpstreamError::Unavailable(failure));
            }
            tracing::warn!(%failure, retry = retries + 1, "retrying OpenAI");
            tokio::time::sleep(backoff).await;
            retries += 1;
        }
    }
}

/// The body of one request.
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// None.
    Empty,
    /// JSON.
    Json(&'a Value),
    /// Already encoded, with its `Content-Type` (dictation's
    /// `multipart/form-data`).
    #[cfg(feature = "chat")]
    Encoded {
        content_type: &'a str,
        bytes: &'a [u8],
    },
}

impl<'a> Payload<'a> {
    /// The JSON body of `call`, if any.
    fn of(call: &Call<'a>) -> Self {
        call.body.map_or(Self::Empty, Self::Json)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Json,
    Stream,
}

enum Outcome {
    Json(Value),
    Stream(EventStream),
}

/// A 2xx answer whose body is not what the call expects.
pub(crate) fn unreadable() -> UpstreamError {
    UpstreamError::Unavailable("unreadable response".into())
}

/// A reqwest error's text without the URL (which may carry internal hosts).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    kind.to_owned()
}

/// The kind of an OpenAI failure, as the `OpenAiFailures` metric names it.
pub fn failure_kind(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Auth => "auth",
        UpstreamError::NotFound(_) => "not_found",
        UpstreamError::RateLimited { .. } => "rate_limited",
        UpstreamError::Unavailable(_) => "server_error",
        UpstreamError::Timeout(_) => "timeout",
        UpstreamError::Rejected(_) => "rejected",
        UpstreamError::Secret(_) => "secret_unavailable",
    }
}

/// `TaskPilot` › `OpenAiFailures` (Count) by `Kind`: one per OpenAI call that
/// failed after its retries (`server_error`, `rate_limited`, `timeout`,
/// `auth`, `rejected`, `not_found`, `secret_unavailable`).
fn failure_metric(e: &UpstreamError) {
    taskpilot_http::metrics::Emf::new("TaskPilot")
        .dimension("Kind", failure_kind(e))
        .metric("OpenAiFailures", "Count", 1)
        .print();
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn every_failure_has_its_own_kind() {
        let kinds = [
            UpstreamError::Auth,
            UpstreamError::NotFound("x".into()),
            UpstreamError::RateLimited { retry_after: 1 },
            UpstreamError::Unavailable("x".into()),
            UpstreamError::Timeout(1),
            UpstreamError::Rejected(400),
            UpstreamError::Secret("x".into()),
        ]
        .map(|e| failure_kind(&e));
        assert_eq!(
            kinds,
            [
                "auth",
                "not_found",
                "rate_limited",
                "server_error",
                "timeout",
                "rejected",
                "secret_unavailable"
            ]
        );
    }
}

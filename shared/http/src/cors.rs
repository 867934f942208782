//! CORS for the origins in `ALLOWED_ORIGINS`; never `*`.

use http::{HeaderValue, Method};
use lambda_http::{Body, Request, Response};

use crate::config;
use crate::error::ApiError;

const ALLOW_METHODS: &str = "GET, POST, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str =
    "authorization, content-type, idempotency-key, if-match, accept-language, x-timezone";
const EXPOSE_HEADERS: &str = "location, etag, retry-after, idempotent-replayed";
const MAX_AGE_SECS: &str = "600";

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// Reads `ALLOWED_ORIGINS` (comma-separated, exact origins). `*` is refused.
    pub fn from_env() -> Result<Self, config::ConfigError> {
        let origins: Vec<String> = config::optional("ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            return Err(config::ConfigError::Invalid {
                name: "ALLOWED_ORIGINS",
                reason: "`*` is not allowed; list the exact origins".into(),
            });
        }
        Ok(Self { origins })
    }

    /// A policy for these origins.
    pub fn new(origins: Vec<String>) -> Self {
        Self { origins }
    }

    fn allowed<'r>(&self, req: &'r Request) -> Option<&'r HeaderValue> {
        let origin = req.headers().get(http::header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins.iter().any(|o| o == text).then_some(origin)
    }

    /// Whether `req` is a CORS preflight.
    pub fn is_preflight(req: &Request) -> bool {
        req.method() == Method::OPTIONS
    }

    /// Answers a preflight: 204 for an allowed origin, 403 otherwise.
    pub fn preflight(&self, req: &Request) -> Response<Body> {
        let Some(origin) = self.allowed(req) else {
            let origin = req
                .headers()
                .get(http::header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .unwrap_or("(none)");
            return ApiError::OriginNotAllowed(origin.to_owned()).into_response();
        };
        Response::builder()
            .status(204)
            .header("access-control-allow-origin", origin)
            .header("access-control-allow-methods", ALLOW_METHODS)
            .header("access-control-allow-headers", ALLOW_HEADERS)
            .header("access-control-max-age", MAX_AGE_SECS)
            .header("vary", "Origin")
            .body(Body::Empty)
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }

    /// Adds the CORS headers to a response for an allowed origin.
    pub fn decorate(&self, req: &Request, resp: &mut Response<Body>) {
        let headers = resp.headers_mut();
        headers.append(http::header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed(req) {
            headers.insert("access-control-allow-origin", origin.clone());
            headers.insert(
                "access-control-expose-headers",
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

//! CORS for the origins in `ALLOWED_ORIGINS`; never `*`.

use http::{HeaderMap, HeaderValue, Method};
use lambda_http::{Body, Request, Response};

use crate::error::ApiError;
use taskpilot_config::{ConfigError, Vars};

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
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Self::parse(&vars.optional("ALLOWED_ORIGINS").unwrap_or_default())
    }

    /// The policy for an `ALLOWED_ORIGINS` value.
    fn parse(raw: &str) -> Result<Self, ConfigError> {
        let origins: Vec<String> = raw
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.iter().any(|o| o == "*") {
            return Err(ConfigError::invalid(
                "ALLOWED_ORIGINS",
                "`*` is not allowed; list the exact origins",
            ));
        }
        Ok(Self { origins })
    }

    /// A policy for these origins.
    pub fn new(origins: Vec<String>) -> Self {
        Self { origins }
    }

    fn allowed<'r>(&self, req: &'r Request) -> Option<&'r HeaderValue> {
        self.allows(req.headers().get(http::header::ORIGIN))
    }

    /// `origin`, when it is one of the allowed origins.
    fn allows<'o>(&self, origin: Option<&'o HeaderValue>) -> Option<&'o HeaderValue> {
        let origin = origin?;
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

    /// Adds the CORS headers of a response to a request from `origin` (its
    /// `Origin` header) when the origin is allowed.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(http::header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allows(origin) {
            headers.insert("access-control-allow-origin", origin.clone());
            headers.insert(
                "access-control-expose-headers",
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "https://app.example";

    fn request(method: Method, origin: Option<&str>) -> Request {
        let mut req = Request::new(Body::Empty);
        *req.method_mut() = method;
        if let Some(o) = origin {
            req.headers_mut()
                .insert(http::header::ORIGIN, o.parse().unwrap());
        }
        req
    }

    fn cors() -> Cors {
        Cors::new(vec![APP.into()])
    }

    #[test]
    fn origins_are_trimmed_without_a_trailing_slash_or_blanks() {
        let cors = Cors::parse(" https://app.example/ ,, https://admin.example").unwrap();
        assert_eq!(
            cors.origins,
            ["https://app.example", "https://admin.example"]
        );
    }

    #[test]
    fn the_setting_is_read_from_allowed_origins() {
        let vars =
            Vars::from_pairs([("ALLOWED_ORIGINS", "https://app.example, https://b.example/")]);
        let cors = Cors::from_vars(&vars).unwrap();
        assert_eq!(cors.origins, ["https://app.example", "https://b.example"]);
        assert_eq!(vars.read(), ["ALLOWED_ORIGINS"]);
    }

    #[test]
    fn an_empty_setting_allows_no_origin() {
        assert!(Cors::parse("").unwrap().origins.is_empty());
    }

    #[test]
    fn a_wildcard_is_refused() {
        let err = Cors::parse("https://app.example, *").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    name: "ALLOWED_ORIGINS",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn options_is_a_preflight() {
        assert!(Cors::is_preflight(&request(Method::OPTIONS, Some(APP))));
    }

    #[test]
    fn other_methods_are_not_preflights() {
        assert!(!Cors::is_preflight(&request(Method::GET, Some(APP))));
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_gets_the_policy() {
        let resp = cors().preflight(&request(Method::OPTIONS, Some(APP)));
        assert_eq!(resp.status(), 204);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], APP);
        assert_eq!(h["access-control-allow-methods"], ALLOW_METHODS);
        assert_eq!(h["access-control-allow-headers"], ALLOW_HEADERS);
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn a_preflight_from_another_origin_is_forbidden() {
        let resp = cors().preflight(&request(Method::OPTIONS, Some("https://evil.example")));
        assert_eq!(resp.status(), 403);
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        let body: serde_json::Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["error"]["code"], "origin_not_allowed");
    }

    #[test]
    fn a_response_to_an_allowed_origin_names_it_and_the_exposed_headers() {
        let mut h = HeaderMap::new();
        cors().decorate(Some(&HeaderValue::from_static(APP)), &mut h);
        assert_eq!(h["access-control-allow-origin"], APP);
        assert_eq!(h["access-control-expose-headers"], EXPOSE_HEADERS);
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn a_response_to_another_origin_only_varies_by_origin() {
        let mut h = HeaderMap::new();
        cors().decorate(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut h,
        );
        assert!(h.get("access-control-allow-origin").is_none());
        assert!(h.get("access-control-expose-headers").is_none());
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn a_response_without_an_origin_only_varies_by_origin() {
        let mut h = HeaderMap::new();
        cors().decorate(None, &mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["vary"], "Origin");
    }
}

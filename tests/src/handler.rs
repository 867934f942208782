//! Calling a function's handler in process, as API Gateway would: the request
//! becomes the HTTP API's event (the local gateway's own), `lambda_http`
//! parses it, and the answer is checked against the OpenAPI spec.

use std::net::SocketAddr;
use std::sync::OnceLock;

use emulators::tokens::DevAuth;
use lambda_http::{Body, Request, Response};
use serde_json::{Map, Value};
use taskpilot_http::auth::AuthSettings;
use taskpilot_http::{ApiError, Authenticator, Cors, serve};

use crate::contract::Contract;

/// One request to build.
pub struct Call {
    builder: http::request::Builder,
    body: Vec<u8>,
    claims: Option<Map<String, Value>>,
}

/// A request for `method path` (the path may carry a query string).
pub fn call(method: &str, path: &str) -> Call {
    Call {
        builder: http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "api.example.com"),
        body: Vec::new(),
        claims: None,
    }
}

impl Call {
    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// Signed in as `sub` with a dev token (`Authorization: Bearer`).
    pub fn user(self, sub: &str) -> Self {
        let token = DevAuth::default().token(sub);
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// As API Gateway's JWT authorizer passes `sub`: verified claims, no token.
    pub fn authorizer_claims(mut self, sub: &str) -> Self {
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(sub.into()));
        self.claims = Some(claims);
        self
    }

    /// With a JSON body.
    pub fn json(self, body: &Value) -> Self {
        self.raw_body("application/json", body.to_string().into_bytes())
    }

    /// With a body of any type.
    pub fn raw_body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.builder = self.builder.header("content-type", content_type);
        self.body = body;
        self
    }

    /// The request as the function receives it.
    pub fn request(self) -> Request {
        let (parts, ()) = self
            .builder
            .body(())
            .unwrap_or_else(|e| panic!("a bad test request: {e}"))
            .into_parts();
        let addr: SocketAddr = SocketAddr::from(([203, 0, 113, 10], 443));
        let peer: SocketAddr = SocketAddr::from(([198, 51, 100, 7], 50000));
        let event =
            emulators::gateway::event(&parts, &self.body, "$default", &[], self.claims, addr, peer);
        lambda_http::request::from_str(&event.to_string())
            .unwrap_or_else(|e| panic!("lambda_http refused the event: {e}"))
    }
}

/// An answer, its body decoded.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: http::HeaderMap,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// Decodes `resp`, the answer to `method path`, and checks it against the
/// OpenAPI spec (a documented status with a valid body, or the error
/// envelope); panics when it does not conform.
pub fn answer(method: &str, path: &str, resp: Response<Body>) -> Answer {
    let (parts, body) = resp.into_parts();
    let raw: Vec<u8> = body.to_vec();
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    let contract =
        CONTRACT.get_or_init(|| Contract::load().unwrap_or_else(|e| panic!("openapi.yaml: {e}")));
    if let Err(e) = contract.check_answer(method, path, parts.status.as_u16(), &raw) {
        panic!("{e}");
    }
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        },
    }
}

/// The authenticator of the local stack's functions: HS256 dev tokens, as
/// [`Call::user`] signs them.
pub fn dev_authenticator() -> Authenticator {
    let dev = DevAuth::default();
    AuthSettings::shared_secret(&dev.secret, &dev.issuer, &dev.audience)
        .and_then(|settings| Authenticator::new(settings, || panic!("no JWKS with a secret")))
        .unwrap_or_else(|e| panic!("the dev authenticator: {e}"))
}

/// Sends `c`, built for `method path`, to `handler` through the shared runner
/// (CORS, panics and errors rendered as `main` renders them), and returns
/// the checked [`answer`].
pub async fn dispatch<F, Fut>(method: &str, path: &str, c: Call, handler: F) -> Answer
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let resp = serve::dispatch(&Cors::default(), c.request(), handler).await;
    answer(method, path, resp)
}

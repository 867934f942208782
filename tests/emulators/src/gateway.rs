//! An API Gateway HTTP API (payload v2.0) front on 127.0.0.1: it matches the
//! template's routes, turns each request into the event API Gateway would
//! send, invokes the function and turns its answer back into HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::Result;
use crate::dev_page::DevPage;
use crate::http_server::{Body, full};
use crate::runtime_api::{Answer, InvokeError, LambdaFunction};
use crate::template::{Route, match_path};

/// API Gateway's request payload limit.
pub const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// Lambda's synchronous invocation payload limit: a bigger event (body plus
/// everything around it) is refused before the function runs, and API Gateway
/// answers 413 itself.
pub const MAX_INVOKE_PAYLOAD: usize = 6 * 1024 * 1024;

/// One request as the gateway's log line tells it: method, path, status,
/// the time to the answer's head, and the function that answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLine {
    /// `GET`…
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// From the request's head to the answer's head (a stream's first bytes).
    pub latency: std::time::Duration,
    /// The function invoked (`None`: the gateway answered itself).
    pub function: Option<String>,
}

impl std::fmt::Display for AccessLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {:.1} ms {}",
            self.method,
            self.path,
            self.status,
            self.latency.as_secs_f64() * 1e3,
            self.function.as_deref().unwrap_or("(gateway)")
        )
    }
}

/// Most access lines a tally keeps (the latest).
const KEPT_LINES: usize = 1_000;

#[derive(Default)]
struct Tallied {
    by_status: BTreeMap<u16, usize>,
    lines: std::collections::VecDeque<AccessLine>,
}

/// How many answers of each status the gateway has given, and its latest
/// access lines.
#[derive(Clone, Default)]
pub struct StatusTally(Arc<std::sync::Mutex<Tallied>>);

impl StatusTally {
    fn record(&self, line: AccessLine) {
        let mut tallied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *tallied.by_status.entry(line.status).or_default() += 1;
        if tallied.lines.len() == KEPT_LINES {
            tallied.lines.pop_front();
        }
        tallied.lines.push_back(line);
    }

    /// Answers given so far, by status.
    pub fn by_status(&self) -> BTreeMap<u16, usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_status
            .clone()
    }

    /// The latest access lines, oldest first.
    pub fn lines(&self) -> Vec<AccessLine> {
        let tallied = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tallied.lines.iter().cloned().collect()
    }

    /// Answers given so far.
    pub fn total(&self) -> usize {
        self.by_status().values().sum()
    }

    /// Answers with a 5xx status so far.
    pub fn server_errors(&self) -> usize {
        self.by_status()
            .iter()
            .filter(|(status, _)| **status >= 500)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Verifies bearer tokens the way API Gateway's JWT authorizer would (HS256
/// here), and passes the claims in `requestContext.authorizer.jwt.claims`.
#[derive(Clone)]
pub struct JwtAuthorizer {
    /// HS256 secret.
    pub secret: String,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
}

/// A route served by a function.
#[derive(Clone)]
pub struct Binding {
    /// The route.
    pub route: Route,
    /// The function.
    pub function: LambdaFunction,
    /// Whether the authorizer applies (health routes have none).
    pub authorized: bool,
}

struct Gateway {
    bindings: Vec<Binding>,
    authorizer: Option<JwtAuthorizer>,
    addr: SocketAddr,
    /// The dev page and the change feed, when served.
    page: Option<DevPage>,
    changes: Changes,
}

/// How the gateway serves, besides its routes.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Print each access line to stderr (they are kept in the tally either way).
    pub echo: bool,
    /// Serve a development page at `GET /` and the change feed at
    /// [`CHANGES_PATH`] (API Gateway serves neither: local use only).
    pub page: Option<DevPage>,
}

/// Serves the gateway on a bound listener; the tally counts its answers and
/// keeps their access lines, which `echo` also prints to stderr.
pub fn serve(
    listener: TcpListener,
    bindings: Vec<Binding>,
    authorizer: Option<JwtAuthorizer>,
    echo: bool,
) -> Result<StatusTally> {
    let options = ServeOptions { echo, page: None };
    serve_with(listener, bindings, authorizer, options)
}

/// [`serve`] with [`ServeOptions`]. Request targets are percent-encoded as a
/// browser would before parsing (`/tasks/<id>` arrives as `/tasks/%3Cid%3E`),
/// so such a request reaches routing and its function, which answers it, as
/// API Gateway passes it to the integration.
pub fn serve_with(
    listener: TcpListener,
    bindings: Vec<Binding>,
    authorizer: Option<JwtAuthorizer>,
    options: ServeOptions,
) -> Result<StatusTally> {
    let addr = listener.local_addr()?;
    let ServeOptions { echo, page } = options;
    let gateway = Arc::new(Gateway {
        bindings,
        authorizer,
        addr,
        page,
        changes: Changes::default(),
    });
    let tally = StatusTally::default();
    let counted = tally.clone();
    crate::http_server::serve_encoding_targets(listener, move |req, peer| {
        let (gateway, counted) = (gateway.clone(), counted.clone());
        async move {
            let started = std::time::Instant::now();
            let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
            let (resp, function) = match gateway.local(&req) {
                Some(resp) => (resp, None),
                None => gateway.handle(req, peer).await,
            };
            let status = resp.status().as_u16();
            let resp = if gateway.page.is_some() && is_change(&method, status, function.as_deref())
            {
                // Announced once the answer has been sent whole (a stream's end).
                let change = json!({
                    "method": method,
                    "path": path,
                    "status": status,
                    "function": function,
                });
                let (parts, body) = resp.into_parts();
                let body = AnnounceOnEnd::wrap(body, gateway.changes.clone(), change.to_string());
                Response::from_parts(parts, body)
            } else {
                resp
            };
            let line = AccessLine {
                method,
                path,
                status,
                latency: started.elapsed(),
                function,
            };
            if echo {
                eprintln!("{line}");
            }
            counted.record(line);
            resp
        }
    });
    Ok(tally)
}

/// The change feed's path: server-sent events, one `data:` line of JSON
/// (`method`, `path`, `status`, `function`) per change ([`is_change`]).
pub const CHANGES_PATH: &str = "/_local/changes";

/// Whether an answer announces a change on the feed: a function answered
/// (not the gateway itself) with a 2xx to a request that may write (any
/// method but `GET`, `HEAD` and `OPTIONS`). A ChatKit request is one (its
/// tools may change tasks), even when it only read.
pub fn is_change(method: &str, status: u16, function: Option<&str>) -> bool {
    function.is_some()
        && (200..300).contains(&status)
        && !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// The change feed's subscribers.
#[derive(Clone)]
struct Changes(tokio::sync::broadcast::Sender<String>);

impl Default for Changes {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(64).0)
    }
}

/// How often the feed sends a comment line while nothing changes, so a
/// subscriber that has gone is noticed.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

impl Changes {
    /// An event-stream answer that lasts until the client leaves.
    fn subscribe(&self) -> Response<Body> {
        let mut events = self.0.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
        tokio::spawn(async move {
            // A first line at once: the client knows it is subscribed.
            if tx
                .send(Ok(Bytes::from_static(b": subscribed\n\n")))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let frame = tokio::select! {
                    event = events.recv() => match event {
                        Ok(data) => format!("data: {data}\n\n"),
                        // Missed some: one change stands for them.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            "data: {}\n\n".to_owned()
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_owned(),
                };
                if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(crate::http_server::streamed(rx));
        let headers = resp.headers_mut();
        headers.insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            "cache-control",
            hyper::header::HeaderValue::from_static("no-store"),
        );
        resp
    }
}

/// A body that announces a change on the feed when it has been sent whole
/// or dropped (the client left), whichever comes first.
struct AnnounceOnEnd {
    inner: Body,
    announce: Option<(Changes, String)>,
}

impl AnnounceOnEnd {
    fn wrap(inner: Body, changes: Changes, event: String) -> Body {
        let body = Self {
            inner,
            announce: Some((changes, event)),
        };
        BodyExt::boxed(body)
    }

    fn announce(&mut self) {
        if let Some((changes, event)) = self.announce.take() {
            // No subscriber is no error.
            let _ = changes.0.send(event);
        }
    }
}

impl Drop for AnnounceOnEnd {
    fn drop(&mut self) {
        self.announce();
    }
}

impl hyper::body::Body for AnnounceOnEnd {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, std::io::Error>>>
    {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            this.announce();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn message(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(json!({ "message": text }).to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

impl Gateway {
    /// The gateway's own answer, when `req` asks for the dev page or the
    /// change feed and they are served.
    fn local(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let page = self.page.as_ref()?;
        if req.method() != hyper::Method::GET {
            return None;
        }
        match req.uri().path() {
            "/" => {
                let chatkit = self
                    .bindings
                    .iter()
                    .find(|b| b.route.function_url)
                    .map(|b| b.route.path.as_str());
                Some(page.response(chatkit, CHANGES_PATH))
            }
            CHANGES_PATH => Some(self.changes.subscribe()),
            _ => None,
        }
    }

    /// The answer to `req`, and the function that gave it (`None`: the
    /// gateway answered itself).
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<Body>, Option<String>) {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        // Like API Gateway: a matching route, else `$default` if there is one.
        // A Function URL (its own host when deployed) sends every path to its
        // function: here, a path below its route that no route declares for
        // any method (the ChatKit upload URL, `<ChatKit URL>/attachments`;
        // not `/api/v1/chatkit/usage`, an API route).
        let declared = self
            .bindings
            .iter()
            .any(|b| b.route.path != "$default" && match_path(&b.route.path, &path).is_some());
        let below = |b: &&Binding| {
            !declared && b.route.function_url && path.starts_with(&format!("{}/", b.route.path))
        };
        let found = self
            .bindings
            .iter()
            .filter(|b| b.route.path != "$default")
            .find_map(|b| {
                let params = match_path(&b.route.path, &path)?;
                let method_ok = b.route.method == "ANY" || b.route.method == method;
                (method_ok || method == "OPTIONS").then_some((b, params))
            })
            .or_else(|| self.bindings.iter().find(below).map(|b| (b, Vec::new())))
            .or_else(|| {
                self.bindings
                    .iter()
                    .find(|b| b.route.path == "$default")
                    .map(|b| (b, Vec::new()))
            });
        let Some((binding, params)) = found else {
            return (message(StatusCode::NOT_FOUND, "Not Found"), None);
        };
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_PAYLOAD).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                let refused = message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
                return (refused, None);
            }
        };
        let claims = match (&self.authorizer, binding.authorized, method.as_str()) {
            (Some(auth), true, m) if m != "OPTIONS" => match authorize(auth, &parts.headers) {
                Some(claims) => Some(claims),
                None => return (message(StatusCode::UNAUTHORIZED, "Unauthorized"), None),
            },
            _ => None,
        };
        let route_key = match binding.route.path.as_str() {
            _ if binding.route.function_url => "$default".to_owned(),
            "$default" => "$default".to_owned(),
            path => format!("{} {path}", binding.route.method),
        };
        let event = event(&parts, &body, &route_key, &params, claims, self.addr, peer).to_string();
        if event.len() > MAX_INVOKE_PAYLOAD {
            let refused = message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
            return (refused, None);
        }
        let answer = match binding.function.invoke_answer(event).await {
            Ok(Answer::Whole(answer)) => response(&answer),
            Ok(Answer::Streamed(rx)) => streamed_response(rx).await,
            Err(InvokeError::Timeout(_)) => {
                message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            }
            Err(_) => message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        };
        (answer, Some(binding.function.name().to_owned()))
    }
}

fn authorize(auth: &JwtAuthorizer, headers: &hyper::HeaderMap) -> Option<Map<String, Value>> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&[&auth.issuer]);
    validation.set_audience(&[&auth.audience]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(auth.secret.as_bytes()),
        &validation,
    )
    .ok()?;
    // API Gateway passes every claim as a string.
    Some(
        data.claims
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, Value::String(s))
            })
            .collect(),
    )
}

/// The API Gateway v2 event for a request.
pub fn event(
    parts: &http::request::Parts,
    body: &[u8],
    route_key: &str,
    params: &[(String, String)],
    claims: Option<Map<String, Value>>,
    addr: SocketAddr,
    peer: SocketAddr,
) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(value.split("; ").map(str::to_owned));
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    // API Gateway sets these itself: a client cannot choose the Host a request
    // reaches the function with, and X-Forwarded-* describe API Gateway's side.
    headers.insert("host".into(), addr.to_string());
    let proto = if addr.port() == 443 { "https" } else { "http" };
    headers.insert("x-forwarded-proto".into(), proto.into());
    headers.insert("x-forwarded-port".into(), addr.port().to_string());
    let client = peer.ip().to_string();
    headers
        .entry("x-forwarded-for".into())
        .and_modify(|v| {
            v.push_str(", ");
            v.push_str(&client);
        })
        .or_insert(client);
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k);
        let v = decode(v);
        query
            .entry(k)
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&v);
            })
            .or_insert(v);
    }
    let now = chrono::Utc::now();
    let (body, encoded) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (B64.encode(body), true),
    };
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "local",
        "domainName": addr.to_string(),
        "domainPrefix": "local",
        "http": {
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "protocol": "HTTP/1.1",
            "sourceIp": peer.ip().to_string(),
            "userAgent": headers.get("user-agent").cloned().unwrap_or_default(),
        },
        "requestId": ulid::Ulid::new().to_string(),
        "routeKey": route_key,
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
        "timeEpoch": now.timestamp_millis(),
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({ "jwt": { "claims": claims, "scopes": null } });
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": encoded,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !params.is_empty() {
        event["pathParameters"] = params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>()
            .into();
    }
    if !body.is_empty() {
        event["body"] = Value::String(body);
    }
    event
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A streamed answer (Function URL with `RESPONSE_STREAM`): the prelude gives
/// status and headers, the rest streams through as it arrives.
async fn streamed_response(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> Response<Body> {
    let mut head = Vec::new();
    let (prelude, rest) = loop {
        match rx.recv().await {
            Some(Ok(chunk)) => {
                head.extend_from_slice(&chunk);
                if let Some(split) = crate::runtime_api::split_prelude(&head) {
                    break split;
                }
            }
            _ => return message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
        }
    };
    let (tx, body_rx) = tokio::sync::mpsc::channel(32);
    tokio::spawn(async move {
        if !rest.is_empty() && tx.send(Ok(rest)).await.is_err() {
            return;
        }
        while let Some(chunk) = rx.recv().await {
            if tx.send(chunk).await.is_err() {
                return; // the client left: dropping `rx` tells the function
            }
        }
    });
    let mut resp = Response::new(crate::http_server::streamed(body_rx));
    *resp.status_mut() = prelude["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    for (name, value) in prelude["headers"].as_object().into_iter().flatten() {
        if let (Ok(n), Some(Ok(v))) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            value.as_str().map(hyper::header::HeaderValue::from_str),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

/// Turns a Lambda proxy answer into HTTP (what API Gateway does).
pub fn response(answer: &[u8]) -> Response<Body> {
    let Ok(v) = serde_json::from_slice::<Value>(answer) else {
        return message(StatusCode::BAD_GATEWAY, "Internal Server Error");
    };
    let status = v["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match v["body"].as_str() {
        Some(b) if v["isBase64Encoded"].as_bool() == Some(true) => {
            Bytes::from(B64.decode(b).unwrap_or_default())
        }
        Some(b) => Bytes::from(b.to_owned()),
        None => Bytes::new(),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    for (name, value) in v["headers"].as_object().into_iter().flatten() {
        if let (Ok(n), Some(Ok(val))) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            value.as_str().map(hyper::header::HeaderValue::from_str),
        ) {
            headers.append(n, val);
        }
    }
    for (name, values) in v["multiValueHeaders"].as_object().into_iter().flatten() {
        for value in values.as_array().into_iter().flatten() {
            if let (Ok(n), Some(Ok(val))) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(hyper::header::HeaderValue::from_str),
            ) && !headers.get_all(&n).iter().any(|existing| existing == val)
            {
                headers.append(n, val);
            }
        }
    }
    for cookie in v["cookies"].as_array().into_iter().flatten() {
        if let Some(Ok(val)) = cookie.as_str().map(hyper::header::HeaderValue::from_str) {
            headers.append("set-cookie", val);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(status: u16, function: Option<&str>) -> AccessLine {
        AccessLine {
            method: "GET".into(),
            path: "/api/v1/tasks".into(),
            status,
            latency: std::time::Duration::from_micros(3_140),
            function: function.map(str::to_owned),
        }
    }

    #[test]
    fn an_access_line_reads_method_path_status_latency_function() {
        assert_eq!(
            line(200, Some("tasks")).to_string(),
            "GET /api/v1/tasks 200 3.1 ms tasks"
        );
        assert_eq!(
            line(404, None).to_string(),
            "GET /api/v1/tasks 404 3.1 ms (gateway)"
        );
    }

    #[test]
    fn a_change_is_a_functions_2xx_to_a_request_that_may_write() {
        let f = Some("tasks");
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(is_change(method, 200, f), "{method}");
            assert!(is_change(method, 201, f), "{method}");
            assert!(is_change(method, 204, f), "{method}");
            assert!(!is_change(method, 304, f), "{method}");
            assert!(!is_change(method, 400, f), "{method}");
            assert!(!is_change(method, 404, f), "{method}");
            assert!(!is_change(method, 500, f), "{method}");
            // The gateway's own answers change nothing.
            assert!(!is_change(method, 200, None), "{method}");
        }
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert!(!is_change(method, 200, f), "{method}");
        }
    }

    /// The next frame of an event stream, within a generous bound.
    async fn next_frame(body: &mut Body) -> String {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream goes on")
            .expect("a good frame");
        String::from_utf8(frame.into_data().expect("data").to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_change_is_announced_once_its_answer_was_sent_or_dropped() {
        let changes = Changes::default();
        let (parts, mut feed) = changes.subscribe().into_parts();
        assert_eq!(parts.headers["content-type"], "text/event-stream");
        assert_eq!(next_frame(&mut feed).await, ": subscribed\n\n");

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = AnnounceOnEnd::wrap(
            crate::http_server::streamed(rx),
            changes.clone(),
            "1".into(),
        );
        tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
        assert!(body.frame().await.is_some());
        // Not before the answer's end.
        assert!(changes.0.is_empty());
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(next_frame(&mut feed).await, "data: 1\n\n");
        drop(body); // announced once only

        // A client that leaves mid-answer: announced on drop.
        let (_tx, rx) = tokio::sync::mpsc::channel(4);
        drop(AnnounceOnEnd::wrap(
            crate::http_server::streamed(rx),
            changes.clone(),
            "2".into(),
        ));
        assert_eq!(next_frame(&mut feed).await, "data: 2\n\n");
    }

    /// Writes `request` on a fresh connection and reads the answer to EOF.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            stream.read_to_end(&mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    async fn gateway(page: Option<DevPage>) -> (SocketAddr, StatusTally) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ServeOptions { echo: false, page };
        (
            addr,
            serve_with(listener, Vec::new(), None, options).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_path_with_bytes_a_browser_encodes_reaches_routing() {
        let (addr, tally) = gateway(None).await;
        let answer = exchange(
            addr,
            "POST /api/v1/tasks/<id>/complete HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        // No route here: the gateway's own JSON 404, not hyper's empty 400.
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.ends_with(r#"{"message":"Not Found"}"#), "{answer}");
        assert_eq!(tally.lines()[0].path, "/api/v1/tasks/%3Cid%3E/complete");
    }

    #[tokio::test]
    async fn the_page_and_the_feed_are_served_only_when_asked_for() {
        let (addr, _) = gateway(None).await;
        for path in ["/", CHANGES_PATH] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let answer = exchange(addr, &request).await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        }
        let page = DevPage::new(crate::tokens::DevAuth::default(), "dev-user");
        let (addr, tally) = gateway(Some(page)).await;
        let answer = exchange(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("content-type: text/html"), "{answer}");
        assert!(answer.contains("\"user\":\"dev-user\""), "{answer}");
        // No ChatKit route here: the page is told so.
        assert!(answer.contains("\"chatkitPath\":null"), "{answer}");
        let line = &tally.lines()[0];
        assert_eq!(
            (line.path.as_str(), line.status, &line.function),
            ("/", 200, &None)
        );
    }

    #[test]
    fn a_tally_counts_by_status_and_keeps_the_latest_lines() {
        let tally = StatusTally::default();
        for i in 0..KEPT_LINES + 2 {
            tally.record(line(if i == 0 { 500 } else { 200 }, Some("tasks")));
        }
        assert_eq!(
            tally.by_status(),
            BTreeMap::from([(200, KEPT_LINES + 1), (500, 1)])
        );
        let lines = tally.lines();
        assert_eq!(lines.len(), KEPT_LINES);
        assert!(lines.iter().all(|l| l.status == 200));
        assert_eq!(tally.server_errors(), 1);
    }
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;
use std::time::{Duration, Instant};
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::contract::Contract;
use taskpilot_testkit::stack::{LocalStack, StackOptions};

/// Every response a test receives must match `shared/http/openapi.yaml`
/// ([`Contract::check_answer`]).
pub fn check_contract(method: &str, path: &str, status: u16, raw: &[u8]) {
    static CONTRACT: std::sync::OnceLock<Contract> = std::sync::OnceLock::new();
    let contract = CONTRACT.get_or_init(|| Contract::load().expect("openapi.yaml loads"));
    if let Err(e) = contract.check_answer(method, path, status, raw) {
        panic!("contract: {e}");
    }
}

/// `text` percent-encoded for a query string: every byte but ASCII letters
/// and digits as `%XX`, so spaces, `+`, `&`, `#` and `%` arrive as text.
pub fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A stack plus an HTTP client.
pub struct Api {
    pub stack: LocalStack,
    pub http: reqwest::Client,
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an error body (and checks the envelope).
    pub fn code(&self) -> &str {
        let err = &self.body["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{:?}",
            self.body
        );
        err["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
    }
}

impl Api {
    pub async fn start(functions: &[&str]) -> Self {
        Self::start_with(StackOptions {
            functions: Some(functions.iter().map(|s| (*s).to_owned()).collect()),
            ..StackOptions::default()
        })
        .await
    }

    /// `functions` with extra environment.
    pub async fn start_env(functions: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with(StackOptions {
            functions: Some(functions.iter().map(|s| (*s).to_owned()).collect()),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..StackOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: StackOptions) -> Self {
        let stack = LocalStack::start(opts).await.expect("stack starts");
        Self {
            stack,
            http: taskpilot_testkit::http_client(),
        }
    }

    pub fn token(&self, user: &str) -> String {
        self.stack.token(user)
    }

    /// Sends a request as `user` (None: no Authorization header).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method_name = method.to_string();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.stack.url));
        if let Some(user) = user {
            req = req.bearer_auth(self.token(user));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        check_contract(&method_name, path, status.as_u16(), &bytes);
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, user: &str) -> Reply {
        self.send(Method::GET, path, Some(user), None, &[]).await
    }

    pub async fn post(&self, path: &str, user: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(user), Some(body), &[])
            .await
    }

    pub async fn patch(&self, path: &str, user: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(user), Some(body), &[])
            .await
    }

    pub async fn delete(&self, path: &str, user: &str) -> Reply {
        self.send(Method::DELETE, path, Some(user), None, &[]).await
    }

    /// Creates a task and returns its JSON.
    pub async fn create(&self, user: &str, body: Value) -> Value {
        let r = self.post("/api/v1/tasks", user, body).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body
    }

    /// Every item of the table whose sort key starts with `prefix`.
    pub async fn rows(
        &self,
        prefix: &str,
    ) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .stack
                .dynamodb
                .scan()
                .table_name(&self.stack.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            rows.extend(out.items.unwrap_or_default().into_iter().filter(|i| {
                i.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|s| s.starts_with(prefix))
            }));
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return rows,
            }
        }
    }
}

/// A ChatKit answer as it came: status, `Retry-After`, content type, body.
pub struct ChatAnswer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub stream: bool,
    pub text: String,
}

impl ChatAnswer {
    /// The events of a stream.
    pub fn events(&self) -> Vec<Value> {
        sse_events(&self.text)
    }
}

/// The events of a streamed body, one per `data:` line.
pub fn sse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// A ChatKit request with `bearer` (a user JWT or a client secret). The
/// request must be one the official ChatKit types accept, and the answer
/// must keep to them ([`chatkit_contract::check_response`]) and, when it is
/// JSON, to the OpenAPI spec.
pub async fn chatkit_with(api: &Api, bearer: &str, envelope: &Value) -> ChatAnswer {
    if let Err(e) = chatkit_contract::check_request(envelope) {
        panic!("not a ChatKit request: {envelope}\n  {e}");
    }
    let resp = api
        .http
        .post(format!("{}/api/v1/chatkit", api.stack.url))
        .bearer_auth(bearer)
        .json(envelope)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let stream = content_type
        .as_deref()
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let kind = envelope["type"].as_str().unwrap_or_default();
    if let Err(e) = chatkit_contract::check_response(kind, status, content_type.as_deref(), &text) {
        panic!("ChatKit contract: {e}");
    }
    if !stream {
        check_contract("POST", "/api/v1/chatkit", status, text.as_bytes());
    }
    ChatAnswer {
        status,
        retry_after,
        stream,
        text,
    }
}

/// A ChatKit request as `user` ([`chatkit_with`]): the status and, for a
/// stream, its events, else the JSON answer.
pub async fn chatkit(api: &Api, user: &str, envelope: Value) -> (u16, Vec<Value>, Value, Duration) {
    let started = Instant::now();
    let answer = chatkit_with(api, &api.token(user), &envelope).await;
    let took = started.elapsed();
    if answer.stream {
        (answer.status, answer.events(), Value::Null, took)
    } else {
        (
            answer.status,
            Vec::new(),
            serde_json::from_str(&answer.text).unwrap(),
            took,
        )
    }
}

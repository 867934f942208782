//! The sample events in `events/` and `env.json`, generated from the template
//! so they always match its routes: one API Gateway v2 event per route (plus
//! one with JWT authorizer claims for authorized routes) and an EventBridge
//! scheduled event. `sam local invoke -e`, `cargo lambda invoke --data-file`
//! and the contract tests all use them.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::stack::DEV_CURSOR_KEY;
use crate::{Result, repo_root};
use emulators::template::{Route, Template};
use emulators::tokens::DevAuth;

/// A task id used in sample paths.
pub const SAMPLE_TASK_ID: &str = "01JDZ6W2Y9Q0V4S8X3C5B7N1M2";
/// A session id used in sample paths.
pub const SAMPLE_SESSION_ID: &str = "cksess_01jdz6w2y9q0v4s8x3c5b7n1m2";
/// The user of the sample events.
pub const SAMPLE_USER: &str = "dev-user";

/// The folder of the sample events.
pub fn dir() -> PathBuf {
    repo_root().join("events")
}

/// A long-lived dev token (HS256, the local stack's dev secret), fixed so the
/// files are stable.
fn sample_claims(auth: &DevAuth) -> Value {
    json!({
        "sub": SAMPLE_USER,
        "iss": auth.issuer,
        "aud": auth.audience,
        "iat": 1_795_000_000,
        "exp": 4_102_444_800i64
    })
}

/// `ListTasksRoute` → `list-tasks`.
fn file_stem(route: &Route) -> String {
    let base = route.name.strip_suffix("Route").unwrap_or(&route.name);
    let mut out = String::new();
    for (i, c) in base.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn sample_body(route: &Route) -> Option<Value> {
    if route.function_url {
        return Some(json!({"type": "threads.list", "params": {"limit": 20, "order": "desc"}}));
    }
    match route.name.as_str() {
        "CreateTaskRoute" => {
            Some(json!({"title": "Buy milk", "due_date": "2026-11-23", "tags": ["home"]}))
        }
        "UpdateTaskRoute" => Some(json!({"title": "Buy oat milk", "version": 1})),
        _ => None,
    }
}

fn sample_path(route: &Route) -> String {
    match route.path.as_str() {
        "$default" => "/api/v1/unknown".to_owned(),
        path => path
            .replace("{id}", SAMPLE_TASK_ID)
            .replace("{session_id}", SAMPLE_SESSION_ID),
    }
}

/// One route's event, optionally with authorizer claims.
fn route_event(route: &Route, auth: &DevAuth, with_claims: bool) -> Result<Value> {
    let path = sample_path(route);
    let method = match route.method.as_str() {
        "ANY" if route.function_url => "POST",
        "ANY" => "GET",
        m => m,
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(&path)
        .header("host", "api.example.com")
        .header("user-agent", "taskpilot-sample")
        .header("origin", "http://localhost:3000");
    if !route.public || route.function_url {
        builder = builder.header(
            "authorization",
            format!("Bearer {}", auth.sign(sample_claims(auth))),
        );
    }
    let body = sample_body(route);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let (parts, ()) = builder.body(())?.into_parts();
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let params: Vec<(String, String)> =
        emulators::template::match_path(&route.path, &path).unwrap_or_default();
    let claims = with_claims.then(|| {
        sample_claims(auth)
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
                )
            })
            .collect::<Map<_, _>>()
    });
    let route_key = match route.path.as_str() {
        _ if route.function_url => "$default".to_owned(),
        "$default" => "$default".to_owned(),
        p => format!("{} {p}", route.method),
    };
    let addr: SocketAddr = "203.0.113.10:443".parse()?;
    let peer: SocketAddr = "198.51.100.7:50000".parse()?;
    let mut event = emulators::gateway::event(
        &parts,
        bytes.as_bytes(),
        &route_key,
        &params,
        claims,
        addr,
        peer,
    );
    // Fixed values instead of "now", so the files do not change on every run.
    event["requestContext"]["requestId"] = json!("sample-request-0001");
    event["requestContext"]["time"] = json!("22/Nov/2026:10:00:00 +0000");
    event["requestContext"]["timeEpoch"] = json!(1_795_341_600_000i64);
    event["requestContext"]["domainName"] = json!("api.example.com");
    event["requestContext"]["domainPrefix"] = json!("api");
    Ok(event)
}

/// The EventBridge event of the scheduled health probe.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T10:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/taskpilot-health-probe"],
        "detail": {}
    })
}

/// `env.json` for `sam local invoke --env-vars env.json`: every variable each
/// function's template declares, with local values.
fn env_json(template: &Template, auth: &DevAuth) -> Value {
    let local = |name: &str| -> Value {
        json!(match name {
            "TABLE_NAME" => "taskpilot-local",
            "ALLOWED_ORIGINS" => "http://localhost:3000",
            "AUTH_ISSUER" => auth.issuer.as_str(),
            "AUTH_AUDIENCE" => auth.audience.as_str(),
            "AUTH_JWT_ALGORITHM" => "HS256",
            "CURSOR_SIGNING_KEY" => DEV_CURSOR_KEY,
            "OPENAI_BASE_URL" => "https://api.openai.com/v1",
            "CHATKIT_SESSION_TTL_SECONDS" => "600",
            "CHATKIT_MAX_REQUESTS_PER_MINUTE" => "30",
            "SESSION_CREATE_PER_MINUTE" => "20",
            "OPENAI_TIMEOUT_MS" => "10000",
            "SECRET_TTL_SECONDS" => "900",
            "CHATKIT_MODEL" => "gpt-4.1",
            "CHATKIT_TEMPERATURE" => "0.7",
            "CHATKIT_MAX_TOOL_STEPS" => "8",
            "CHATKIT_MAX_TOOL_CALLS" => "20",
            _ => "",
        })
    };
    let mut out = Map::new();
    for f in template.functions() {
        let mut vars: Map<String, Value> =
            f.env_names.iter().map(|n| (n.clone(), local(n))).collect();
        // sam local runs in Docker: DynamoDB Local on the host, HS256 dev tokens,
        // and the key from the environment instead of Secrets Manager.
        vars.insert(
            "AWS_ENDPOINT_URL_DYNAMODB".into(),
            json!("http://host.docker.internal:8000"),
        );
        if vars.contains_key("AUTH_ISSUER") {
            vars.insert("AUTH_JWT_SECRET".into(), json!(auth.secret));
        }
        if vars.contains_key("APP_KEYS_SECRET_ARN") {
            vars.insert("CURSOR_SIGNING_KEY".into(), json!(DEV_CURSOR_KEY));
        }
        if vars.contains_key("OPENAI_SECRET_ARN") {
            vars.insert(
                "OPENAI_API_KEY".into(),
                json!(taskpilot_secrets::PLACEHOLDER_KEY),
            );
        }
        out.insert(f.logical_id, Value::Object(vars));
    }
    Value::Object(out)
}

/// Every generated file: `(path, contents)`.
pub fn expected_files() -> Result<Vec<(PathBuf, String)>> {
    let template = Template::load()?;
    let auth = DevAuth::default();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).map(|s| s + "\n");
    let mut files = Vec::new();
    for f in template.functions() {
        for route in &f.routes {
            let stem = file_stem(route);
            files.push((
                dir().join(format!("{stem}.json")),
                pretty(&route_event(route, &auth, false)?)?,
            ));
            if !route.public {
                files.push((
                    dir().join(format!("{stem}.authorizer.json")),
                    pretty(&route_event(route, &auth, true)?)?,
                ));
            }
        }
    }
    files.push((dir().join("scheduled.json"), pretty(&scheduled_event())?));
    files.push((
        repo_root().join("env.json"),
        pretty(&env_json(&template, &auth))?,
    ));
    Ok(files)
}

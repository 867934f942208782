//! A stub of the OpenAI HTTP API on 127.0.0.1: the real paths, headers and
//! bodies, a bearer key it enforces, a record of every request, and faults a
//! test can script (an error status, a slow or gated answer, a cut-off or
//! garbage body). It serves the Responses API (streamed), the ChatKit
//! sessions and the Audio API's transcriptions (dictation).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::Result;
use emulators::http_server::{Body, full};

/// What the next request gets instead of a normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// An OpenAI-style error with this status (and `Retry-After` if given).
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// The normal answer, after a pause.
    Slow(Duration),
    /// A 200 whose body stops half-way.
    Truncated,
    /// A 200 whose body is not JSON.
    Garbage,
    /// The normal answer, once the test opens the gate: the moment the
    /// request arrived is known, and what happens meanwhile is up to the test.
    Gated(Gate),
}

/// Holds one request until [`Gate::open`]; [`Gate::arrived`] waits for it.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    arrived: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::Notify>,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until the gated request has arrived (its body read).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }

    /// Lets the gated request be answered.
    pub fn open(&self) {
        self.open.notify_one();
    }
}

/// One scripted model turn of `POST /v1/responses` (streamed).
#[derive(Debug, Clone)]
pub enum Turn {
    /// An assistant message, streamed word by word.
    Text(String),
    /// Function calls: `(name, arguments)`.
    Calls(Vec<(String, Value)>),
    /// The first half of a text, then the connection is cut.
    Broken(String),
}

/// What an unscripted transcription says of binary (real) audio.
pub const DEFAULT_TRANSCRIPT: &str = "remind me to call the plumber on Monday";

/// The file extensions `POST /v1/audio/transcriptions` accepts, as OpenAI's.
const AUDIO_EXTENSIONS: &[&str] = &[
    "flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm",
];

/// A request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1/chatkit/sessions`.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// JSON body (`Null` when none); a `multipart/form-data` body as a
    /// summary: each text field by name, and the `file` part as `file_name`,
    /// `file_type` and `file_bytes` (its length).
    pub body: Value,
    /// When the stub had read the request's head (before its body).
    pub received_at: std::time::Instant,
}

#[derive(Default)]
struct State {
    key: String,
    workflows: Vec<String>,
    faults: VecDeque<Fault>,
    requests: Vec<Recorded>,
    served: u64,
    turns: VecDeque<Turn>,
    transcripts: VecDeque<String>,
    chunk_delay: Duration,
    first_delta_at: Option<std::time::Instant>,
    /// The last prompt seen per `prompt_cache_key` (its canonical text).
    prompts: std::collections::HashMap<String, String>,
}

/// A running stub.
#[derive(Clone)]
pub struct OpenAiStub {
    /// Base URL including `/v1`, for `OPENAI_BASE_URL`.
    pub base_url: String,
    state: Arc<Mutex<State>>,
}

impl OpenAiStub {
    /// Starts a stub that accepts `key` and knows `workflows`.
    pub async fn start(key: &str, workflows: &[&str]) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            key: key.to_owned(),
            workflows: workflows.iter().map(|w| (*w).to_owned()).collect(),
            ..State::default()
        }));
        let shared = state.clone();
        emulators::http_server::serve(listener, move |req, _peer| {
            let state = shared.clone();
            let received_at = std::time::Instant::now();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let form = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|ct| Form::parse(ct, &bytes));
                let recorded = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: match &form {
                        Some(form) => form.summary(),
                        None => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    },
                    received_at,
                };
                let (fault, n) = {
                    let mut s = lock(&state);
                    s.requests.push(recorded.clone());
                    s.served += 1;
                    (s.faults.pop_front(), s.served)
                };
                match &fault {
                    Some(Fault::Slow(pause)) => tokio::time::sleep(*pause).await,
                    Some(Fault::Gated(gate)) => {
                        gate.arrived.notify_one();
                        gate.open.notified().await;
                    }
                    _ => {}
                }
                let mut resp = match fault {
                    Some(Fault::Status {
                        status,
                        retry_after,
                    }) => {
                        let mut r = error(status, "scripted failure");
                        if let Some(secs) = retry_after
                            && let Ok(v) = secs.to_string().parse()
                        {
                            r.headers_mut().insert("retry-after", v);
                        }
                        r
                    }
                    Some(Fault::Garbage) => raw(StatusCode::OK, "<html>502 Bad Gateway</html>"),
                    Some(Fault::Truncated) => {
                        // Announce more than we send: the client sees a cut-off body.
                        let mut r = raw(StatusCode::OK, "{\"id\":\"cksess_trunc");
                        r.headers_mut().insert(
                            "content-length",
                            hyper::header::HeaderValue::from_static("400"),
                        );
                        r
                    }
                    _ => answer(&state, &recorded, form.as_ref(), n),
                };
                if let Ok(id) = format!("req_stub_{n}").parse() {
                    resp.headers_mut().insert("x-request-id", id);
                }
                resp
            }
        });
        Ok(Self { base_url, state })
    }

    /// Scripts the next request's fault (faults queue up in order).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.state).faults.push_back(fault);
    }

    /// Drops the faults no request has met yet (a client may give up before
    /// it used all it was given).
    pub fn clear_faults(&self) {
        lock(&self.state).faults.clear();
    }

    /// Scripts the next model turn (turns queue up; an unscripted turn says "OK.").
    pub fn push_turn(&self, turn: Turn) {
        lock(&self.state).turns.push_back(turn);
    }

    /// Scripts the next transcription's text (texts queue up; an unscripted
    /// one says what text-only "audio" holds, or [`DEFAULT_TRANSCRIPT`]).
    pub fn push_transcript(&self, text: &str) {
        lock(&self.state).transcripts.push_back(text.to_owned());
    }

    /// Pauses this long between streamed chunks.
    pub fn set_chunk_delay(&self, delay: Duration) {
        lock(&self.state).chunk_delay = delay;
    }

    /// When the first text delta of the current stream was sent (then cleared).
    pub fn take_first_delta_at(&self) -> Option<std::time::Instant> {
        lock(&self.state).first_delta_at.take()
    }

    /// Accepts another key from now on (a rotation).
    pub fn set_key(&self, key: &str) {
        key.clone_into(&mut lock(&self.state).key);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// Requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// The input tokens the stub reports for a `POST /v1/responses` body: its
/// instructions, input and tools at ~4 bytes a token, and 85 per image or
/// file (a low-detail image), as a real model's `usage` grows with the prompt.
pub fn prompt_tokens(body: &Value) -> u64 {
    let text = |v: &Value| v.to_string().len() as u64;
    let files = body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["content"].as_array())
        .flatten()
        .filter(|part| matches!(part["type"].as_str(), Some("input_image" | "input_file")))
        .count() as u64;
    (text(&body["instructions"]) + text(&body["input"]) + text(&body["tools"])).div_ceil(4)
        + 85 * files
}

/// Shortest prefix OpenAI's prompt caching serves, in tokens.
const CACHE_MIN_TOKENS: u64 = 1_024;
/// Its granularity beyond that, in tokens.
const CACHE_STEP_TOKENS: u64 = 128;

/// A prompt as the cache reads it: the tools, the instructions, then each
/// input item, as text.
pub fn canonical_prompt(body: &Value) -> String {
    let mut text = body["tools"].to_string();
    text.push_str(body["instructions"].as_str().unwrap_or_default());
    for item in body["input"].as_array().into_iter().flatten() {
        text.push_str(&item.to_string());
    }
    text
}

/// The tokens OpenAI's automatic prompt caching would serve for `body`, as
/// it documents it: the prefix shared with the previous request of the same
/// `prompt_cache_key` (~4 bytes a token), from 1,024 tokens on, in steps of
/// 128; 0 without a key or below that. Remembers `body` for the next one.
fn cached_tokens(prompts: &mut std::collections::HashMap<String, String>, body: &Value) -> u64 {
    let Some(key) = body["prompt_cache_key"].as_str() else {
        return 0;
    };
    let prompt = canonical_prompt(body);
    let shared = prompts.get(key).map_or(0, |previous| {
        previous
            .bytes()
            .zip(prompt.bytes())
            .take_while(|(a, b)| a == b)
            .count() as u64
    });
    prompts.insert(key.to_owned(), prompt);
    let tokens = shared / 4;
    if tokens < CACHE_MIN_TOKENS {
        0
    } else {
        tokens / CACHE_STEP_TOKENS * CACHE_STEP_TOKENS
    }
}

/// Streams a turn as Responses API server-sent events; `response.completed`
/// reports `input_tokens` (of which `cached_tokens` served from the prompt
/// cache) and the output's tokens (~4 bytes a token).
fn stream_turn(
    turn: Turn,
    n: u64,
    delay: Duration,
    (input_tokens, cached_tokens): (u64, u64),
    state: Arc<Mutex<State>>,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut seq = 0u64;
        let response_id = format!("resp_stub{n}");
        let mut send = |event: Value| {
            let mut event = event;
            event["sequence_number"] = json!(seq);
            seq += 1;
            let kind = event["type"].as_str().unwrap_or("message").to_owned();
            Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
        };
        let mut frames = vec![send(json!({"type": "response.created",
            "response": {"id": response_id, "object": "response", "status": "in_progress", "output": []}}))];
        let mut output = Vec::new();
        let mut cut = false;
        match &turn {
            Turn::Text(text) | Turn::Broken(text) => {
                let msg = format!("msg_stub{n}");
                frames.push(send(json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"id": msg, "type": "message", "status": "in_progress", "role": "assistant", "content": []}})));
                frames.push(send(json!({"type": "response.content_part.added", "item_id": msg, "output_index": 0,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})));
                let words: Vec<&str> = text.split_inclusive(' ').collect();
                let upto = if matches!(turn, Turn::Broken(_)) {
                    words.len() / 2
                } else {
                    words.len()
                };
                for w in &words[..upto] {
                    frames.push(send(
                        json!({"type": "response.output_text.delta", "item_id": msg,
                        "output_index": 0, "content_index": 0, "delta": w}),
                    ));
                }
                if matches!(turn, Turn::Broken(_)) {
                    cut = true;
                } else {
                    let part = json!({"type": "output_text", "text": text, "annotations": []});
                    frames.push(send(
                        json!({"type": "response.output_text.done", "item_id": msg,
                        "output_index": 0, "content_index": 0, "text": text}),
                    ));
                    frames.push(send(
                        json!({"type": "response.content_part.done", "item_id": msg,
                        "output_index": 0, "content_index": 0, "part": part}),
                    ));
                    let item = json!({"id": msg, "type": "message", "status": "completed",
                        "role": "assistant", "content": [part]});
                    frames.push(send(json!({"type": "response.output_item.done", "output_index": 0, "item": item})));
                    output.push(item);
                }
            }
            Turn::Calls(calls) => {
                for (i, (name, args)) in calls.iter().enumerate() {
                    let id = format!("fc_stub{n}_{i}");
                    let call_id = format!("call_stub{n}_{i}");
                    let arguments = args.to_string();
                    frames.push(send(
                        json!({"type": "response.output_item.added", "output_index": i,
                        "item": {"id": id, "type": "function_call", "status": "in_progress",
                                 "call_id": call_id, "name": name, "arguments": ""}}),
                    ));
                    frames.push(send(
                        json!({"type": "response.function_call_arguments.delta",
                        "item_id": id, "output_index": i, "delta": arguments}),
                    ));
                    frames.push(send(
                        json!({"type": "response.function_call_arguments.done",
                        "item_id": id, "output_index": i, "arguments": arguments}),
                    ));
                    let item = json!({"id": id, "type": "function_call", "status": "completed",
                        "call_id": call_id, "name": name, "arguments": arguments});
                    frames.push(send(json!({"type": "response.output_item.done", "output_index": i, "item": item})));
                    output.push(item);
                }
            }
        }
        if !cut {
            let output_tokens = (Value::Array(output.clone()).to_string().len() as u64).div_ceil(4);
            frames.push(send(
                json!({"type": "response.completed", "response": {"id": response_id,
                "object": "response", "status": "completed", "output": output,
                "usage": {"input_tokens": input_tokens,
                          "input_tokens_details": {"cached_tokens": cached_tokens},
                          "output_tokens": output_tokens,
                          "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": input_tokens + output_tokens}}}),
            ));
        }
        for frame in frames {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if frame.windows(10).any(|w| w == b"text.delta") {
                let mut s = lock(&state);
                s.first_delta_at.get_or_insert_with(std::time::Instant::now);
            }
            if tx.send(Ok(frame)).await.is_err() {
                return; // the client went away
            }
        }
        if cut {
            // Let what was sent reach the client before the connection drops.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "cut",
                )))
                .await;
        }
    });
    let mut resp = Response::new(emulators::http_server::streamed(rx));
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn raw(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok(body: Value) -> Response<Body> {
    raw(StatusCode::OK, &body.to_string())
}

fn error(status: u16, message: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    raw(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
            .to_string(),
    )
}

/// What the Responses API refuses in a well-formed body: `temperature` for
/// a reasoning model (o-series, GPT-5 but its chat models), a `tool_choice`
/// naming a function the request does not offer.
fn refused_parameters(body: &Value) -> Option<Response<Body>> {
    let model = body["model"].as_str().unwrap_or_default();
    let reasoning = (model.starts_with('o')
        && model[1.min(model.len())..].starts_with(|c: char| c.is_ascii_digit()))
        || (model.starts_with("gpt-5") && !model.starts_with("gpt-5-chat"));
    if reasoning && body.get("temperature").is_some() {
        return Some(raw(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "Unsupported parameter: 'temperature' is not supported with this model.",
                "type": "invalid_request_error", "param": "temperature", "code": "unsupported_parameter"}})
            .to_string(),
        ));
    }
    let forced = body["tool_choice"]["name"].as_str()?;
    let offered = body["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["name"] == forced));
    (!offered).then(|| {
        error(
            400,
            &format!("Tool choice '{forced}' not found in 'tools' parameter."),
        )
    })
}

/// The normal answers of the endpoints the product uses.
fn answer(
    state: &Arc<Mutex<State>>,
    req: &Recorded,
    form: Option<&Form>,
    n: u64,
) -> Response<Body> {
    let (key, workflows) = {
        let s = lock(state);
        (s.key.clone(), s.workflows.clone())
    };
    if req.headers.get("authorization") != Some(&format!("Bearer {key}")) {
        return error(401, "Incorrect API key provided.");
    }
    let chatkit = req.path.starts_with("/v1/chatkit/");
    if chatkit && req.headers.get("openai-beta").map(String::as_str) != Some("chatkit_beta=v1") {
        return error(
            400,
            "ChatKit requires the OpenAI-Beta: chatkit_beta=v1 header.",
        );
    }
    let now = chrono::Utc::now().timestamp();
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/responses") => {
            if req.body["stream"] != json!(true) || req.body["model"].as_str().is_none() {
                return error(
                    400,
                    "This stub serves streamed responses with a model only.",
                );
            }
            if let Some(refusal) = refused_parameters(&req.body) {
                return refusal;
            }
            let (turn, delay) = {
                let mut s = lock(state);
                (s.turns.pop_front(), s.chunk_delay)
            };
            let turn = turn.unwrap_or_else(|| crate::improvise::turn(&req.body));
            let input_tokens = prompt_tokens(&req.body);
            let cached = {
                let mut s = lock(state);
                cached_tokens(&mut s.prompts, &req.body).min(input_tokens)
            };
            stream_turn(turn, n, delay, (input_tokens, cached), state.clone())
        }
        ("POST", "/v1/audio/transcriptions") => transcription(state, form),
        ("GET", "/v1/models") => ok(json!({
            "object": "list",
            "data": [{"id": "gpt-4.1", "object": "model", "created": 1_700_000_000, "owned_by": "openai"}]
        })),
        ("POST", "/v1/chatkit/sessions") => {
            let b = &req.body;
            let workflow = b["workflow"]["id"].as_str().unwrap_or_default();
            if b["user"].as_str().is_none_or(str::is_empty) {
                return error(400, "Missing required parameter: 'user'.");
            }
            if !workflows.iter().any(|w| w == workflow) {
                return error(404, &format!("Workflow with id '{workflow}' not found."));
            }
            let seconds = b["expires_after"]["seconds"].as_i64().unwrap_or(600);
            let rpm = b["rate_limits"]["max_requests_per_1_minute"]
                .as_u64()
                .unwrap_or(10);
            ok(json!({
                "id": format!("cksess_stub{n}"),
                "object": "chatkit.session",
                "client_secret": format!("ek_stub_{n}_{}", ulid::Ulid::new()),
                "expires_at": now + seconds,
                "status": "active",
                "user": b["user"],
                "workflow": {
                    "id": workflow,
                    "version": b["workflow"]["version"],
                    "state_variables": null,
                    "tracing": {"enabled": true}
                },
                "rate_limits": {"max_requests_per_1_minute": rpm},
                "max_requests_per_1_minute": rpm,
                "chatkit_configuration": {
                    "automatic_thread_titling": {"enabled": true},
                    "file_upload": {"enabled": false},
                    "history": {"enabled": true}
                }
            }))
        }
        ("POST", path)
            if path.starts_with("/v1/chatkit/sessions/") && path.ends_with("/cancel") =>
        {
            let id = path
                .trim_start_matches("/v1/chatkit/sessions/")
                .trim_end_matches("/cancel");
            ok(json!({"id": id, "object": "chatkit.session", "status": "cancelled"}))
        }
        _ => error(404, "Unknown endpoint."),
    }
}

/// `POST /v1/audio/transcriptions` with `response_format` json (the default).
fn transcription(state: &Arc<Mutex<State>>, form: Option<&Form>) -> Response<Body> {
    let Some(form) = form else {
        return error(400, "The request must be multipart/form-data.");
    };
    let Some(file) = form.file("file") else {
        return error(400, "Missing required parameter: 'file'.");
    };
    if form.text("model").is_none_or(str::is_empty) {
        return error(400, "Missing required parameter: 'model'.");
    }
    if form.text("response_format").is_some_and(|f| f != "json") {
        return error(400, "This stub answers response_format 'json' only.");
    }
    let extension = file
        .file_name
        .as_deref()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    if !extension.is_some_and(|ext| AUDIO_EXTENSIONS.contains(&ext.as_str())) {
        return error(
            400,
            &format!("Invalid file format. Supported formats: {AUDIO_EXTENSIONS:?}"),
        );
    }
    let scripted = lock(state).transcripts.pop_front();
    let text = scripted.unwrap_or_else(|| heard(&file.content));
    let words = text.split_whitespace().count();
    ok(json!({
        "text": text,
        "usage": {"type": "tokens", "input_tokens": file.content.len() / 100 + 1,
                  "output_tokens": words, "total_tokens": file.content.len() / 100 + 1 + words}
    }))
}

/// What the stub "hears" in `audio`: a test's text-only audio says its text;
/// real (binary) audio says [`DEFAULT_TRANSCRIPT`].
fn heard(audio: &[u8]) -> String {
    match std::str::from_utf8(audio) {
        Ok(text)
            if !text.trim().is_empty()
                && text.chars().all(|c| !c.is_control() || c.is_whitespace()) =>
        {
            text.trim().to_owned()
        }
        _ => DEFAULT_TRANSCRIPT.to_owned(),
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug)]
struct FormPart {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    content: Vec<u8>,
}

/// A parsed `multipart/form-data` body (RFC 7578).
#[derive(Debug)]
struct Form(Vec<FormPart>);

impl Form {
    /// The parts of `body`; `None` unless `content_type` is multipart/form-data
    /// with a boundary and `body` is well formed.
    fn parse(content_type: &str, body: &[u8]) -> Option<Self> {
        let (essence, params) = content_type.split_once(';')?;
        if !essence.trim().eq_ignore_ascii_case("multipart/form-data") {
            return None;
        }
        let boundary = params
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))?
            .trim_matches('"');
        let opening = format!("--{boundary}");
        let delimiter = format!("\r\n--{boundary}");
        let mut rest = &body[find(body, opening.as_bytes())? + opening.len()..];
        let mut parts = Vec::new();
        while !rest.starts_with(b"--") {
            rest = rest.strip_prefix(b"\r\n")?;
            let end = find(rest, delimiter.as_bytes())?;
            parts.push(FormPart::parse(&rest[..end])?);
            rest = &rest[end + delimiter.len()..];
        }
        Some(Self(parts))
    }

    /// The text field `name`.
    fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.name == name && p.file_name.is_none())
            .and_then(|p| std::str::from_utf8(&p.content).ok())
    }

    /// The file part `name`.
    fn file(&self, name: &str) -> Option<&FormPart> {
        self.0
            .iter()
            .find(|p| p.name == name && p.file_name.is_some())
    }

    /// What [`Recorded::body`] holds for a form.
    fn summary(&self) -> Value {
        let mut summary = serde_json::Map::new();
        for part in &self.0 {
            if part.file_name.is_some() {
                summary.insert(format!("{}_name", part.name), json!(part.file_name));
                summary.insert(format!("{}_type", part.name), json!(part.content_type));
                summary.insert(format!("{}_bytes", part.name), json!(part.content.len()));
            } else {
                let text = String::from_utf8_lossy(&part.content);
                summary.insert(part.name.clone(), json!(text));
            }
        }
        Value::Object(summary)
    }
}

impl FormPart {
    /// A part's headers, a blank line and its content.
    fn parse(part: &[u8]) -> Option<Self> {
        let head_end = find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..head_end]).ok()?;
        let mut parsed = Self {
            name: String::new(),
            file_name: None,
            content_type: None,
            content: part[head_end + 4..].to_vec(),
        };
        for line in head.split("\r\n") {
            let (header, value) = line.split_once(':')?;
            match header.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for param in value.split(';').map(str::trim) {
                        if let Some(name) = param.strip_prefix("name=") {
                            name.trim_matches('"').clone_into(&mut parsed.name);
                        } else if let Some(file_name) = param.strip_prefix("filename=") {
                            parsed.file_name = Some(file_name.trim_matches('"').to_owned());
                        }
                    }
                }
                "content-type" => parsed.content_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        (!parsed.name.is_empty()).then_some(parsed)
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_prefix_is_cached_from_1024_tokens_in_steps_of_128() {
        let mut prompts = std::collections::HashMap::new();
        let body = |key: Option<&str>, said: &str| {
            let mut b = json!({"instructions": "i".repeat(4_600), "tools": [],
                               "input": [{"role": "user", "content": said}]});
            if let Some(k) = key {
                b["prompt_cache_key"] = json!(k);
            }
            b
        };
        // The first request of a key has nothing cached; no key, never.
        assert_eq!(cached_tokens(&mut prompts, &body(Some("t"), "a")), 0);
        assert_eq!(cached_tokens(&mut prompts, &body(None, "a")), 0);
        // 2 + 4,600 + the item's first bytes are shared: 1,15x tokens, so 1,152.
        assert_eq!(cached_tokens(&mut prompts, &body(Some("t"), "b")), 1_152);
        // Another key has its own cache.
        assert_eq!(cached_tokens(&mut prompts, &body(Some("u"), "b")), 0);
        // Below 1,024 tokens of shared prefix: nothing.
        let short = json!({"instructions": "x".repeat(100), "prompt_cache_key": "v", "input": []});
        cached_tokens(&mut prompts, &short);
        assert_eq!(cached_tokens(&mut prompts, &short), 0);
    }

    #[test]
    fn a_form_is_parsed_and_summarized() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n\
            whisper-1\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.ogg\"\r\n\
            Content-Type: audio/ogg\r\n\r\n\x00\r\n--X\r\n--XyZ--\r\n";
        let form = Form::parse("multipart/form-data; boundary=\"XyZ\"", body).unwrap();
        assert_eq!(form.text("model"), Some("whisper-1"));
        assert_eq!(form.file("file").unwrap().content, b"\x00\r\n--X");
        assert_eq!(
            form.summary(),
            json!({"model": "whisper-1", "file_name": "a.ogg", "file_type": "audio/ogg", "file_bytes": 6})
        );
        assert!(Form::parse("application/json", body).is_none());
        assert!(Form::parse("multipart/form-data; boundary=XyZ", b"--XyZ\r\nbroken").is_none());
    }

    #[test]
    fn text_audio_is_heard_as_its_text_and_real_audio_as_the_default() {
        assert_eq!(heard(b" buy milk\n"), "buy milk");
        assert_eq!(heard(b"\x1aE\xdf\xa3"), DEFAULT_TRANSCRIPT);
        assert_eq!(heard(b"\x00\x01"), DEFAULT_TRANSCRIPT);
        assert_eq!(heard(b"  "), DEFAULT_TRANSCRIPT);
    }
}

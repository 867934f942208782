//! The endpoint in process, on the in-memory fakes (chat store, tasks,
//! sessions and budget, attachments, a scripted model, a scripted
//! transcriber): routing, identity, the size limits, the one parse, the gate,
//! JSON answers and event streams, direct uploads, each request an API
//! Gateway v2 event through the shared runner, each answer checked against
//! the official ChatKit types.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use taskpilot_assistant::TaskAgent;
use taskpilot_assistant::testing::scripted_agent;
use taskpilot_chatkit::dictation::{Transcriber, Transcript};
use taskpilot_chatkit::engine::Engine;
use taskpilot_chatkit::testing::{InMemoryChat, InMemoryFiles, Round, ScriptedModel};
use taskpilot_domain::UserId;
use taskpilot_domain::budget::{BudgetGate, ChatBudget};
use taskpilot_domain::memory::{InMemorySessions, InMemoryTasks};
use taskpilot_domain::session::{
    ChatSession, SessionMode, SessionStatus, SessionStore, SessionTokens, session_id_at,
};
use taskpilot_http::serve::{self, StreamBody};
use taskpilot_http::{Cors, UpstreamError};
use taskpilot_openai::TranscribeError;
use taskpilot_secrets::{SecretCache, Secrets};
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::handler::{Call, call, dev_authenticator};

use crate::endpoint::Endpoint;
use crate::identity::Identity;

const PATH: &str = "/api/v1/chatkit";
const KEY: &str = "sk-test-chatkit";

type Agent = TaskAgent<InMemoryTasks, ScriptedModel>;
type Ep = Endpoint<InMemoryChat, Agent, InMemoryFiles, Scribe, InMemorySessions>;

/// A transcriber that answers what it was given, in order.
#[derive(Clone, Default)]
struct Scribe(Arc<Mutex<Vec<Result<Transcript, TranscribeError>>>>);

impl Scribe {
    fn push(&self, answer: Result<Transcript, TranscribeError>) {
        self.0.lock().unwrap().push(answer);
    }
}

impl Transcriber for Scribe {
    type Error = TranscribeError;

    fn check_type(&self, mime: &str) -> Result<(), TranscribeError> {
        match mime.starts_with("audio/") {
            true => Ok(()),
            false => Err(TranscribeError::UnsupportedType(mime.into())),
        }
    }

    async fn transcribe(
        &self,
        _audio: &[u8],
        _mime: &str,
        _deadline: Instant,
    ) -> Result<Transcript, TranscribeError> {
        self.0.lock().unwrap().remove(0)
    }
}

struct Fixture {
    endpoint: &'static Ep,
    model: ScriptedModel,
    scribe: Scribe,
}

fn fixture_with(budget: ChatBudget, sessions: InMemorySessions) -> Fixture {
    let secrets = SecretCache::fixed(Secrets::parse(KEY).unwrap());
    fixture_of(budget, sessions, secrets)
}

/// An endpoint whose OpenAI key cannot be read: Secrets Manager refuses
/// every connection.
fn fixture_without_key() -> Fixture {
    let vars = taskpilot_config::Vars::from_pairs([
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "example"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        (
            "OPENAI_SECRET_ARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
        ),
    ]);
    let aws = taskpilot_runtime::aws::AwsSettings::from_vars(&vars).unwrap();
    let sdk = aws.sdk_config(taskpilot_runtime::tls::aws_http_client(&Default::default()).unwrap());
    let settings = taskpilot_secrets::SecretSettings::from_vars(&vars).unwrap();
    fixture_of(
        ChatBudget::default(),
        InMemorySessions::default(),
        SecretCache::new(&settings, &sdk),
    )
}

fn fixture_of(budget: ChatBudget, sessions: InMemorySessions, secrets: SecretCache) -> Fixture {
    let model = ScriptedModel::default();
    let scribe = Scribe::default();
    let engine = Engine::new(InMemoryChat::default(), scripted_agent(model.clone(), 4))
        .with_attachments(InMemoryFiles::default(), Default::default())
        .with_dictation(scribe.clone());
    let secrets = Arc::new(secrets);
    let identity = Identity::new(sessions, secrets, dev_authenticator());
    let endpoint = Endpoint::new(
        engine,
        identity,
        BudgetGate::new(InMemorySessions::default(), budget),
    );
    Fixture {
        endpoint: Box::leak(Box::new(endpoint)),
        model,
        scribe,
    }
}

fn fixture() -> Fixture {
    fixture_with(ChatBudget::default(), InMemorySessions::default())
}

/// An answer, its body read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The events of a stream.
    fn events(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter_map(|frame| frame.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }
}

impl Fixture {
    /// Sends `c` through the shared runner as `main` does; a ChatKit answer
    /// (`kind` set) must keep to the official types.
    async fn send(&self, kind: Option<&str>, c: Call) -> Answer {
        let endpoint = self.endpoint;
        let resp: http::Response<StreamBody> =
            serve::dispatch(&Cors::default(), c.request(), |req| endpoint.answer(req)).await;
        let (parts, body) = resp.into_parts();
        let bytes: Bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        if let Some(kind) = kind
            && let Err(e) =
                chatkit_contract::check_response(kind, parts.status.as_u16(), content_type, &text)
        {
            panic!("ChatKit contract: {e}");
        }
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            text,
        }
    }

    /// `envelope` as `user`, with a dev JWT.
    async fn post(&self, user: &str, envelope: Value) -> Answer {
        chatkit_contract::check_request(&envelope).unwrap();
        let kind = envelope["type"].as_str().unwrap().to_owned();
        self.send(Some(&kind), call("POST", PATH).user(user).json(&envelope))
            .await
    }
}

fn message(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {}})
}

fn create(text: &str) -> Value {
    json!({"type": "threads.create", "params": {"input": message(text)}})
}

#[tokio::test]
async fn a_new_thread_streams_its_events_and_the_list_shows_it() {
    let f = fixture();
    f.model.push(Round::text("Hello!"));
    let a = f.post("alice", create("hi")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.headers["content-type"], "text/event-stream",
        "{:?}",
        a.headers
    );
    assert_eq!(a.headers["x-accel-buffering"], "no");
    let events = a.events();
    assert_eq!(events[0]["type"], "thread.created");
    let thread = events[0]["thread"]["id"].as_str().unwrap().to_owned();
    let listed = f
        .post("alice", json!({"type": "threads.list", "params": {}}))
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["data"][0]["id"], thread);
    let others = f
        .post(
            "bob",
            json!({"type": "threads.get_by_id", "params": {"thread_id": thread}}),
        )
        .await;
    assert_eq!((others.status, others.code().as_str()), (404, "not_found"));
}

#[tokio::test]
async fn other_paths_methods_and_callers_are_refused_before_the_body_is_read() {
    let f = fixture();
    let a = f
        .send(None, call("POST", "/api/v1/chatkit/x").user("alice"))
        .await;
    assert_eq!((a.status, a.code().as_str()), (404, "route_not_found"));
    let a = f.send(None, call("GET", PATH).user("alice")).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.headers["allow"], "POST, OPTIONS");
    let a = f
        .send(
            None,
            call("POST", PATH).raw_body("application/json", b"{".to_vec()),
        )
        .await;
    assert_eq!((a.status, a.code().as_str()), (401, "unauthorized"));
}

#[tokio::test]
async fn a_chat_body_over_64_kb_is_413_but_a_dictation_may_be_larger() {
    let f = fixture();
    let huge = create(&"x".repeat(100 * 1024));
    let a = f
        .send(None, call("POST", PATH).user("alice").json(&huge))
        .await;
    assert_eq!((a.status, a.code().as_str()), (413, "payload_too_large"));
    let garbled = format!("{{\"type\":\"threads.create\",{}", " ".repeat(100 * 1024));
    let a = f
        .send(
            None,
            call("POST", PATH)
                .user("alice")
                .raw_body("application/json", garbled.into_bytes()),
        )
        .await;
    assert_eq!(a.status, 413);
    use base64::Engine as _;
    let audio = base64::engine::general_purpose::STANDARD.encode(vec![1u8; 100 * 1024]);
    f.scribe.push(Ok(Transcript {
        text: "buy milk".into(),
        usage: None,
    }));
    let a = f
        .post(
            "alice",
            json!({"type": "input.transcribe", "params": {"audio_base64": audio, "mime_type": "audio/webm"}}),
        )
        .await;
    assert_eq!((a.status, a.json()), (200, json!({"text": "buy milk"})));
}

#[tokio::test]
async fn a_bad_envelope_is_400_naming_what_is_wrong() {
    let f = fixture();
    let a = f
        .send(
            None,
            call("POST", PATH)
                .user("alice")
                .raw_body("application/json", b"{".to_vec()),
        )
        .await;
    assert_eq!((a.status, a.code().as_str()), (400, "malformed_json"));
    let a = f
        .send(
            None,
            call("POST", PATH)
                .user("alice")
                .json(&json!({"type": "threads.explode", "params": {}})),
        )
        .await;
    assert_eq!((a.status, a.code().as_str()), (400, "invalid_parameter"));
    let a = f
        .send(
            None,
            call("POST", PATH)
                .user("alice")
                .header("x-timezone", "Mars/Olympus")
                .json(&json!({"type": "threads.list", "params": {}})),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
}

#[tokio::test]
async fn the_turn_budget_is_429_and_json_requests_are_not_counted() {
    let budget = ChatBudget {
        turns_per_minute: 1,
        ..ChatBudget::default()
    };
    let f = fixture_with(budget, InMemorySessions::default());
    for _ in 0..3 {
        let a = f
            .post("alice", json!({"type": "threads.list", "params": {}}))
            .await;
        assert_eq!(a.status, 200);
    }
    f.model.push(Round::text("One."));
    assert_eq!(f.post("alice", create("one")).await.status, 200);
    let a = f.post("alice", create("two")).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (429, "rate_limited"),
        "{}",
        a.text
    );
    assert!(a.headers.get("retry-after").is_some());
}

/// A client secret for `user`'s session, stored as `status`.
async fn client_secret(sessions: &InMemorySessions, user: &str, status: SessionStatus) -> String {
    let now = chrono::Utc::now();
    let session = ChatSession {
        id: session_id_at(now),
        mode: SessionMode::SelfHosted,
        status,
        created_at: now,
        expires_at: now + chrono::Duration::minutes(10),
        max_requests_per_minute: 2,
        workflow_id: None,
        secret_hash: None,
    };
    let user = UserId::new(user).unwrap();
    sessions.put_session(&user, &session).await.unwrap();
    let secrets = Secrets::parse(KEY).unwrap();
    SessionTokens::new(secrets.session_signing_key.expose().as_bytes())
        .unwrap()
        .sign(&session, &user)
}

#[tokio::test]
async fn a_client_secret_is_held_to_its_session_and_its_budget() {
    let sessions = InMemorySessions::default();
    let active = client_secret(&sessions, "alice", SessionStatus::Active).await;
    let cancelled = client_secret(&sessions, "alice", SessionStatus::Cancelled).await;
    let f = fixture_with(ChatBudget::default(), sessions);
    let list = json!({"type": "threads.list", "params": {}});
    let with = |secret: &str| {
        call("POST", PATH)
            .header("authorization", &format!("Bearer {secret}"))
            .json(&list)
    };
    for _ in 0..2 {
        assert_eq!(
            f.send(Some("threads.list"), with(&active)).await.status,
            200
        );
    }
    let a = f.send(Some("threads.list"), with(&active)).await;
    assert_eq!((a.status, a.code().as_str()), (429, "rate_limited"));
    let a = f.send(Some("threads.list"), with(&cancelled)).await;
    assert_eq!((a.status, a.code().as_str()), (401, "unauthorized"));
    let a = f.send(Some("threads.list"), with("cks_forged.sig")).await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn dictation_failures_keep_their_statuses() {
    let f = fixture();
    let transcribe = |audio: &str, mime: &str| json!({"type": "input.transcribe", "params": {"audio_base64": audio, "mime_type": mime}});
    let a = f.post("alice", transcribe("AAAA", "video/mp4")).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (415, "file_type_not_allowed")
    );
    let a = f
        .post("alice", transcribe("not base64!", "audio/webm"))
        .await;
    assert_eq!((a.status, a.code().as_str()), (400, "invalid_parameter"));
    f.scribe.push(Err(TranscribeError::NoSpeech));
    let a = f.post("alice", transcribe("AAAA", "audio/webm")).await;
    assert_eq!((a.status, a.code().as_str()), (422, "no_speech"));
    f.scribe
        .push(Err(TranscribeError::Upstream(UpstreamError::RateLimited {
            retry_after: 3,
        })));
    let a = f.post("alice", transcribe("AAAA", "audio/webm")).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (503, "upstream_rate_limited")
    );
    assert_eq!(a.headers["retry-after"], "3");
}

fn dictation(audio: &[u8]) -> Value {
    use base64::Engine as _;
    let audio_base64 = base64::engine::general_purpose::STANDARD.encode(audio);
    json!({"type": "input.transcribe", "params": {"audio_base64": audio_base64, "mime_type": "audio/webm"}})
}

#[tokio::test]
async fn a_dictation_may_carry_4_mb_of_audio_in_a_body_of_at_most_6_mb() {
    let f = fixture();
    f.scribe.push(Ok(Transcript {
        text: "a long note".into(),
        usage: None,
    }));
    let four_mb = vec![1u8; 4 * 1024 * 1024];
    let a = f.post("alice", dictation(&four_mb)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let a = f
        .post("alice", dictation(&vec![1u8; 4 * 1024 * 1024 + 1]))
        .await;
    assert_eq!((a.status, a.code().as_str()), (413, "file_too_large"));
    // A body of exactly 6 MB is read; one byte more is refused before it is.
    let mut body = dictation(&four_mb).to_string().into_bytes();
    let padding = 6 * 1024 * 1024 - body.len();
    body.truncate(body.len() - 1);
    body.extend(std::iter::repeat_n(b' ', padding));
    body.push(b'}');
    assert_eq!(body.len(), 6 * 1024 * 1024);
    let exactly = |body: Vec<u8>| {
        call("POST", PATH)
            .user("alice")
            .raw_body("application/json", body)
    };
    f.scribe.push(Ok(Transcript {
        text: "padded".into(),
        usage: None,
    }));
    let a = f.send(None, exactly(body.clone())).await;
    assert_eq!((a.status, a.json()), (200, json!({"text": "padded"})));
    body.insert(body.len() - 1, b' ');
    let a = f.send(None, exactly(body)).await;
    assert_eq!((a.status, a.code().as_str()), (413, "payload_too_large"));
}

#[tokio::test]
async fn a_chat_body_of_exactly_64_kb_is_read() {
    let f = fixture();
    let mut body = br#"{"type":"threads.list","params":{}"#.to_vec();
    body.extend(std::iter::repeat_n(b' ', 64 * 1024 - body.len() - 1));
    body.push(b'}');
    assert_eq!(body.len(), 64 * 1024);
    let list = |body: Vec<u8>| {
        call("POST", PATH)
            .user("alice")
            .raw_body("application/json", body)
    };
    assert_eq!(
        f.send(Some("threads.list"), list(body.clone()))
            .await
            .status,
        200
    );
    body.insert(body.len() - 1, b' ');
    let a = f.send(None, list(body)).await;
    assert_eq!((a.status, a.code().as_str()), (413, "payload_too_large"));
}

#[tokio::test]
async fn a_turn_refused_by_its_session_is_given_back_to_the_budget() {
    let sessions = InMemorySessions::default();
    let cancelled = client_secret(&sessions, "alice", SessionStatus::Cancelled).await;
    let budget = ChatBudget {
        turns_per_minute: 1,
        ..ChatBudget::default()
    };
    let f = fixture_with(budget, sessions);
    let refused = f
        .send(
            Some("threads.create"),
            call("POST", PATH)
                .header("authorization", &format!("Bearer {cancelled}"))
                .json(&create("hi")),
        )
        .await;
    assert_eq!(refused.status, 401);
    f.model.push(Round::text("Hello."));
    let a = f.post("alice", create("hi")).await;
    assert_eq!(a.status, 200, "the refused turn was given back: {}", a.text);
}

#[tokio::test]
async fn what_a_dictation_cost_is_charged_to_the_day() {
    let budget = ChatBudget {
        tokens_per_day: 100,
        ..ChatBudget::default()
    };
    let f = fixture_with(budget, InMemorySessions::default());
    f.scribe.push(Ok(Transcript {
        text: "buy milk".into(),
        usage: Some(taskpilot_chatkit::model::TokenUsage {
            input: 150,
            cached_input: 0,
            output: 10,
        }),
    }));
    assert_eq!(f.post("alice", dictation(b"voice")).await.status, 200);
    let a = f.post("alice", create("hi")).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (429, "budget_exhausted"),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn without_the_openai_key_streams_and_dictations_are_503_but_reads_answer() {
    let f = fixture_without_key();
    let list = f
        .post("alice", json!({"type": "threads.list", "params": {}}))
        .await;
    assert_eq!(list.status, 200, "a read needs no key: {}", list.text);
    for request in [create("hi"), dictation(b"voice")] {
        let a = f.post("alice", request).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (503, "secret_unavailable"),
            "{}",
            a.text
        );
    }
}

const UPLOAD: &str = "/api/v1/chatkit/attachments";
const BOUNDARY: &str = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake image bytes";

use crate::upload::tests::Part;

/// A form as a browser's `FormData` sends it.
fn form(parts: &[Part<'_>]) -> Vec<u8> {
    crate::upload::tests::form_with(BOUNDARY, parts)
}

/// One file in the `file` field.
fn one_file(name: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    form(&[("file", Some(name), Some(content_type), bytes)])
}

/// `body` to the upload URL as `multipart/form-data`.
fn upload_call(body: Vec<u8>) -> Call {
    call("POST", UPLOAD).raw_body(&format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

impl Fixture {
    /// `c` to the upload URL; the answer must be an `Attachment` or the
    /// error envelope.
    async fn upload(&self, c: Call) -> Answer {
        let a = self.send(None, c).await;
        let content_type = a.headers.get("content-type").and_then(|v| v.to_str().ok());
        if let Err(e) = chatkit_contract::check_upload_response(a.status, content_type, &a.text) {
            panic!("ChatKit contract: {e}");
        }
        a
    }
}

#[tokio::test]
async fn a_direct_upload_answers_the_attachment_that_a_message_may_then_show() {
    let f = fixture();
    let a = f
        .upload(upload_call(one_file("list.png", "image/png", PNG)).user("alice"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let photo = a.json();
    assert_eq!(
        (&photo["type"], &photo["name"], &photo["mime_type"]),
        (&json!("image"), &json!("list.png"), &json!("image/png"))
    );
    assert!(photo["preview_url"].is_string());
    // A document, and at the Function URL's root path too.
    let a = f
        .upload(call("POST", "/attachments").user("alice").raw_body(
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            one_file("notes.pdf", "application/pdf", b"%PDF-1.4"),
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let pdf = a.json();
    assert_eq!(pdf["type"], "file");
    f.model.push(Round::text("Two files."));
    let ids = [&photo["id"], &pdf["id"]];
    let envelope = json!({"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": "look"}], "attachments": ids,
        "inference_options": {}}}});
    let a = f.post("alice", envelope.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let shown = a
        .events()
        .into_iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "user_message")
        .unwrap();
    assert_eq!(shown["item"]["attachments"][0]["id"], photo["id"]);
    // Another user naming them finds nothing.
    let a = f.post("bob", envelope).await;
    assert_eq!((a.status, a.code().as_str()), (404, "not_found"));
}

#[tokio::test]
async fn the_upload_route_refuses_other_methods_and_unknown_callers() {
    let f = fixture();
    let a = f.upload(call("GET", UPLOAD).user("alice")).await;
    assert_eq!((a.status, a.code().as_str()), (405, "method_not_allowed"));
    assert_eq!(a.headers["allow"], "POST, OPTIONS");
    let a = f
        .upload(upload_call(one_file("a.png", "image/png", PNG)))
        .await;
    assert_eq!((a.status, a.code().as_str()), (401, "unauthorized"));
    let a = f
        .upload(
            upload_call(one_file("a.png", "image/png", PNG))
                .header("authorization", "Bearer cks_forged.sig"),
        )
        .await;
    assert_eq!((a.status, a.code().as_str()), (401, "unauthorized"));
    // A path under it that is not the upload URL.
    let a = f
        .send(
            None,
            call("POST", "/api/v1/chatkit/attachments/x").user("alice"),
        )
        .await;
    assert_eq!((a.status, a.code().as_str()), (404, "route_not_found"));
}

#[tokio::test]
async fn an_upload_that_is_not_a_form_with_a_file_is_415_or_400() {
    let f = fixture();
    let as_json = call("POST", UPLOAD)
        .user("alice")
        .json(&json!({"file": "x"}));
    let a = f.upload(as_json).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (415, "unsupported_media_type")
    );
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data")
    );
    let bare = call("POST", UPLOAD)
        .user("alice")
        .raw_body("image/png", PNG.to_vec());
    assert_eq!(f.upload(bare).await.status, 415);
    let cases: [(Call, &str); 5] = [
        (
            upload_call(form(&[("photo", Some("a.png"), Some("image/png"), PNG)])),
            "file",
        ),
        (
            upload_call(form(&[("file", None, None, b"just text")])),
            "file",
        ),
        (upload_call(b"not a form at all".to_vec()), "body"),
        (
            call("POST", UPLOAD)
                .raw_body("multipart/form-data", one_file("a.png", "image/png", PNG)),
            "body",
        ),
        (upload_call(one_file("empty.png", "image/png", b"")), "file"),
    ];
    for (c, parameter) in cases {
        let a = f.upload(c.user("alice")).await;
        assert_eq!(
            (a.status, a.code().as_str()),
            (400, "invalid_parameter"),
            "{}",
            a.text
        );
        assert_eq!(
            a.json()["error"]["details"]["parameter"],
            parameter,
            "{}",
            a.text
        );
    }
    // A type off the allow-list is the policy's 415.
    let a = f
        .upload(upload_call(one_file("x.html", "text/html", b"<html>")).user("alice"))
        .await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (415, "file_type_not_allowed")
    );
}

#[tokio::test]
async fn a_direct_upload_may_carry_4_mb_of_file_in_a_body_of_at_most_6_mb() {
    let f = fixture();
    let four_mb = vec![7u8; 4 * 1024 * 1024];
    let a = f
        .upload(upload_call(one_file("big.pdf", "application/pdf", &four_mb)).user("alice"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let mut over = four_mb.clone();
    over.push(7);
    let a = f
        .upload(upload_call(one_file("big.pdf", "application/pdf", &over)).user("alice"))
        .await;
    assert_eq!((a.status, a.code().as_str()), (413, "file_too_large"));
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 MB allowed for direct uploads"),
        "{}",
        a.text
    );
    // A body of exactly Lambda's 6 MB is read (its file is then too big)...
    let overhead = one_file("huge.pdf", "application/pdf", &[]).len();
    let file = vec![7u8; crate::upload::MAX_UPLOAD_BODY - overhead];
    let exact = one_file("huge.pdf", "application/pdf", &file);
    assert_eq!(exact.len(), crate::upload::MAX_UPLOAD_BODY);
    let a = f.upload(upload_call(exact).user("alice")).await;
    assert_eq!((a.status, a.code().as_str()), (413, "file_too_large"));
    // ...and one byte more is refused before it is read.
    let mut huge = file;
    huge.push(7);
    let huge = one_file("huge.pdf", "application/pdf", &huge);
    let a = f.upload(upload_call(huge).user("alice")).await;
    assert_eq!((a.status, a.code().as_str()), (413, "payload_too_large"));
}

#[tokio::test]
async fn the_upload_urls_preflight_and_answers_carry_cors() {
    let f = fixture();
    let cors = Cors::new(vec!["https://app.example".into()]);
    let endpoint = f.endpoint;
    let preflight = |origin: &str| {
        call("OPTIONS", UPLOAD)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .request()
    };
    let resp: http::Response<StreamBody> =
        serve::dispatch(&cors, preflight("https://app.example"), |req| {
            endpoint.answer(req)
        })
        .await;
    assert_eq!(resp.status(), 204);
    let headers = resp.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    let resp: http::Response<StreamBody> =
        serve::dispatch(&cors, preflight("https://evil.example"), |req| {
            endpoint.answer(req)
        })
        .await;
    assert_eq!(resp.status(), 403);
    // The upload itself, from the page's origin.
    let req = upload_call(one_file("a.png", "image/png", PNG))
        .user("alice")
        .header("origin", "https://app.example")
        .request();
    let resp: http::Response<StreamBody> =
        serve::dispatch(&cors, req, |req| endpoint.answer(req)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn a_client_secret_uploads_within_its_session_and_no_turn_is_counted() {
    let sessions = InMemorySessions::default();
    let active = client_secret(&sessions, "alice", SessionStatus::Active).await;
    let cancelled = client_secret(&sessions, "alice", SessionStatus::Cancelled).await;
    let budget = ChatBudget {
        turns_per_minute: 1,
        ..ChatBudget::default()
    };
    let f = fixture_with(budget, sessions);
    let with = |secret: &str| {
        upload_call(one_file("a.png", "image/png", PNG))
            .header("authorization", &format!("Bearer {secret}"))
    };
    let a = f.upload(with(&cancelled)).await;
    assert_eq!((a.status, a.code().as_str()), (401, "unauthorized"));
    // The session allows two requests a minute: uploads count there...
    for _ in 0..2 {
        let a = f.upload(with(&active)).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let a = f.upload(with(&active)).await;
    assert_eq!((a.status, a.code().as_str()), (429, "rate_limited"));
    // ... but not as turns: the user's one turn of the minute is still there.
    for _ in 0..2 {
        let a = f
            .upload(upload_call(one_file("b.png", "image/png", PNG)).user("alice"))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    f.model.push(Round::text("Hello."));
    let a = f.post("alice", create("hi")).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

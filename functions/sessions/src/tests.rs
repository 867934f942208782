//! The routes in process, on the in-memory session store (and, for the legacy
//! hosted mode, the OpenAI stub: a loopback server speaking the real API),
//! each answer checked against the OpenAPI spec.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use taskpilot_domain::budget::{BudgetGate, ChatBudget};
use taskpilot_domain::memory::InMemorySessions;
use taskpilot_openai::OpenAi;
use taskpilot_secrets::{SecretCache, Secrets};
use taskpilot_testkit::handler::{Answer, Call, call, dev_authenticator, dispatch};
use taskpilot_testkit::openai_stub::OpenAiStub;

use crate::routes::SessionsApi;
use crate::settings::{SessionRules, Workflow};

const ALICE: &str = "alice";
const KEY: &str = "sk-test-sessions";
const CREATE: &str = "/api/v1/chatkit/sessions";

fn rules() -> SessionRules {
    SessionRules {
        ttl_secs: 600,
        max_requests_per_minute: 30,
        create_per_minute: 3,
        max_active_sessions: 2,
        workflow: None,
        chatkit_url: Some("https://chat.example/api/v1/chatkit".into()),
    }
}

fn api_with(rules: SessionRules, base_url: &str) -> SessionsApi<InMemorySessions> {
    let openai = OpenAi::new(
        taskpilot_runtime::tls::http_client(&Default::default()).unwrap(),
        base_url,
        Duration::from_secs(5),
        Arc::new(SecretCache::fixed(Secrets::parse(KEY).unwrap())),
    );
    let gate = BudgetGate::new(InMemorySessions::default(), ChatBudget::default());
    SessionsApi::new(
        rules,
        InMemorySessions::default(),
        openai,
        dev_authenticator(),
        gate,
    )
}

fn api() -> SessionsApi<InMemorySessions> {
    api_with(rules(), "http://127.0.0.1:9/v1")
}

async fn send(api: &SessionsApi<InMemorySessions>, method: &str, path: &str, c: Call) -> Answer {
    dispatch(method, path, c, |req| api.handle(req)).await
}

async fn create(api: &SessionsApi<InMemorySessions>, body: Value) -> Answer {
    send(
        api,
        "POST",
        CREATE,
        call("POST", CREATE).user(ALICE).json(&body),
    )
    .await
}

#[tokio::test]
async fn a_self_hosted_session_is_minted_with_the_chatkit_url() {
    let api = api();
    for path in ["/api/chatkit/sessions", CREATE] {
        let a = send(
            &api,
            "POST",
            path,
            call("POST", path).user(ALICE).json(&json!({})),
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body["mode"], "self_hosted");
        assert_eq!(a.body["status"], "active");
        assert!(
            a.body["client_secret"]
                .as_str()
                .unwrap()
                .starts_with(taskpilot_domain::session::TOKEN_PREFIX)
        );
        assert_eq!(a.body["chatkit_url"], "https://chat.example/api/v1/chatkit");
    }
}

#[tokio::test]
async fn a_refresh_retires_the_current_secret_and_a_cancel_is_final() {
    let api = api();
    let first = create(&api, json!({})).await;
    let secret = first.body["client_secret"].as_str().unwrap();
    let refreshed = create(&api, json!({ "current_client_secret": secret })).await;
    assert_eq!(refreshed.status, 200);
    assert_ne!(refreshed.body["session_id"], first.body["session_id"]);
    let id = refreshed.body["session_id"].as_str().unwrap();
    let path = format!("{CREATE}/{id}/cancel");
    let cancelled = send(&api, "POST", &path, call("POST", &path).user(ALICE)).await;
    assert_eq!(
        (cancelled.status, cancelled.body["status"].as_str()),
        (200, Some("cancelled"))
    );
    let by_another = send(&api, "POST", &path, call("POST", &path).user("mallory")).await;
    assert_eq!(
        by_another.status, 404,
        "another user's session is not found"
    );
    let unknown = format!("{CREATE}/cksess_nope/cancel");
    let a = send(&api, "POST", &unknown, call("POST", &unknown).user(ALICE)).await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
}

#[tokio::test]
async fn creating_too_fast_is_429_with_retry_after() {
    let api = api();
    for _ in 0..3 {
        assert_eq!(create(&api, json!({})).await.status, 200);
    }
    let a = create(&api, json!({})).await;
    assert_eq!((a.status, a.code()), (429, "rate_limited"));
    assert!(a.header("retry-after").is_some());
}

#[tokio::test]
async fn a_bad_body_is_400_413_or_415_and_no_token_401() {
    let api = api();
    let unknown = create(&api, json!({ "workflow": "x" })).await;
    assert_eq!((unknown.status, unknown.code()), (400, "unknown_field"));
    let malformed = call("POST", CREATE)
        .user(ALICE)
        .raw_body("application/json", b"{".to_vec());
    assert_eq!(send(&api, "POST", CREATE, malformed).await.status, 400);
    let huge = create(
        &api,
        json!({ "current_client_secret": "x".repeat(100 * 1024) }),
    )
    .await;
    assert_eq!(huge.status, 413);
    let text = call("POST", CREATE)
        .user(ALICE)
        .raw_body("text/plain", b"{}".to_vec());
    assert_eq!(send(&api, "POST", CREATE, text).await.status, 415);
    let anonymous = send(&api, "POST", CREATE, call("POST", CREATE).json(&json!({}))).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn usage_shows_the_budget_and_only_answers_get() {
    let api = api();
    let path = "/api/v1/chatkit/usage";
    let a = send(&api, "GET", path, call("GET", path).user(ALICE)).await;
    assert_eq!(a.status, 200, "{a:?}");
    let budget = ChatBudget::default();
    assert_eq!(a.body["turns_per_minute"]["limit"], budget.turns_per_minute);
    assert_eq!(a.body["tokens_per_day"]["used"], 0);
    let post = send(&api, "POST", path, call("POST", path).user(ALICE)).await;
    assert_eq!(
        (post.status, post.header("allow")),
        (405, Some("GET, OPTIONS"))
    );
    assert_eq!(send(&api, "GET", path, call("GET", path)).await.status, 401);
    let nowhere = "/api/v1/chatkit/sessions/a/b/c";
    let a = send(&api, "POST", nowhere, call("POST", nowhere).user(ALICE)).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn hosted_mode_mints_upstream_and_maps_upstream_failures() {
    let stub = OpenAiStub::start(KEY, &["wf_known"]).await.unwrap();
    let hosted = |id: &str| SessionRules {
        workflow: Some(Workflow {
            id: id.into(),
            version: None,
        }),
        ..rules()
    };
    let api = api_with(hosted("wf_known"), &stub.base_url);
    let a = create(&api, json!({})).await;
    assert_eq!(
        (a.status, a.body["mode"].as_str()),
        (200, Some("hosted")),
        "{a:?}"
    );
    assert_eq!(a.body["chatkit_url"], Value::Null);
    let missing = api_with(hosted("wf_missing"), &stub.base_url);
    let a = create(&missing, json!({})).await;
    assert_eq!((a.status, a.code()), (502, "upstream_not_found"), "{a:?}");
    assert!(
        a.body.to_string().contains("wf_missing"),
        "the message names the workflow"
    );
    let unreachable = api_with(hosted("wf_known"), "http://127.0.0.1:9/v1");
    let a = create(&unreachable, json!({})).await;
    assert_eq!((a.status, a.code()), (502, "upstream_unavailable"), "{a:?}");
}

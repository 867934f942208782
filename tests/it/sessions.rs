//! The real `sessions` binary against DynamoDB Local, moto (Secrets Manager)
//! and the OpenAI stub, all on 127.0.0.1 (with the `chatkit` binary where a
//! client secret must be tried); and the session store's active-session
//! listing on DynamoDB Local.
use std::time::Duration;

use crate::common::Api;
use reqwest::Method;
use serde_json::{Value, json};
use taskpilot_testkit::openai_stub::Fault;
use taskpilot_testkit::stack::{STUB_OPENAI_KEY, STUB_WORKFLOW, StackOptions};

const SESSIONS: &str = "/api/chatkit/sessions";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn start(pairs: &[(&str, &str)], max_instances: usize) -> Api {
    Api::start_with(StackOptions {
        functions: Some(vec!["sessions".into()]),
        env: env(pairs),
        max_instances,
        ..StackOptions::default()
    })
    .await
}

async fn hosted(extra: &[(&str, &str)]) -> Api {
    let mut pairs = vec![
        ("CHATKIT_WORKFLOW_ID", STUB_WORKFLOW),
        // Generous, so retries fit on a busy machine; under the function's 10 s.
        ("OPENAI_TIMEOUT_MS", "6000"),
    ];
    pairs.extend_from_slice(extra);
    start(&pairs, 1).await
}

fn stub(api: &Api) -> &taskpilot_testkit::openai_stub::OpenAiStub {
    api.stack.openai.as_ref().unwrap()
}

/// The session row as stored.
async fn row(api: &Api, user: &str, id: &str) -> Value {
    let out = api
        .stack
        .dynamodb
        .get_item()
        .table_name(&api.stack.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{user}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("SESSION#{id}")),
        )
        .send()
        .await
        .unwrap();
    out.item
        .map(|item| serde_dynamo::from_item::<_, Value>(item).unwrap())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn self_hosted_sessions_mint_refresh_and_cancel() {
    let api = start(&[], 4).await;
    let r = api
        .send(Method::POST, SESSIONS, Some("alice"), None, &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = &r.body;
    assert_eq!(s["status"], "active");
    assert_eq!(s["mode"], "self_hosted");
    assert_eq!(
        s["chatkit_url"],
        format!("{}/api/v1/chatkit", api.stack.url)
    );
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("cksess_"));
    let secret = s["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cks_"));
    let now = chrono::Utc::now().timestamp();
    let expires = s["expires_at"].as_i64().unwrap();
    assert!(
        (now + 590..=now + 610).contains(&expires),
        "{expires} vs {now}"
    );
    // The record carries the owner, expiry, TTL and the per-session budget.
    let stored = row(&api, "alice", &id).await;
    assert_eq!(stored["status"], "active");
    assert_eq!(stored["max_requests_per_minute"], 30);
    assert!(stored["ttl"].as_i64().unwrap() > expires);
    // Nothing went upstream in self-hosted mode.
    assert!(stub(&api).requests_to("/v1/chatkit/sessions").is_empty());

    // Refresh: the old session is cancelled, a new one returned (same path under /api/v1).
    let r = api
        .send(
            Method::POST,
            "/api/v1/chatkit/sessions",
            Some("alice"),
            Some(json!({"current_client_secret": secret})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let new_id = r.body["session_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(row(&api, "alice", &id).await["status"], "cancelled");
    assert_eq!(row(&api, "alice", &new_id).await["status"], "active");

    // Another user's secret cannot be used to refresh (or cancel) it.
    let r = api
        .send(
            Method::POST,
            SESSIONS,
            Some("bob"),
            Some(json!({"current_client_secret": r.body["client_secret"]})),
            &[],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_parameter"));
    assert_eq!(row(&api, "alice", &new_id).await["status"], "active");
    for bad in ["cks_garbage.sig", "not-ours"] {
        let r = api
            .send(
                Method::POST,
                SESSIONS,
                Some("alice"),
                Some(json!({"current_client_secret": bad})),
                &[],
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    let r = api
        .send(
            Method::POST,
            SESSIONS,
            Some("alice"),
            Some(json!({"refresh": true})),
            &[],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "unknown_field"));

    // Cancel: someone else's session is a 404 and stays active.
    let cancel = format!("{SESSIONS}/{new_id}/cancel");
    assert_eq!(
        api.post(&cancel, "bob", json!(null)).await.code(),
        "not_found"
    );
    assert_eq!(row(&api, "alice", &new_id).await["status"], "active");
    let r = api.post(&cancel, "alice", json!(null)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(row(&api, "alice", &new_id).await["status"], "cancelled");
    let r = api
        .post(
            &format!("{SESSIONS}/cksess_unknown/cancel"),
            "alice",
            json!(null),
        )
        .await;
    assert_eq!(r.body["error"]["message"], "session not found");

    // No identity, no session.
    let r = api.send(Method::POST, SESSIONS, None, None, &[]).await;
    assert_eq!(r.status, 401);
    // API Gateway has no GET route here.
    assert_eq!(api.get(SESSIONS, "alice").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creation_is_rate_limited_per_user() {
    let api = start(
        &[
            ("SESSION_CREATE_PER_MINUTE", "3"),
            ("CHATKIT_MAX_REQUESTS_PER_MINUTE", "12"),
        ],
        2,
    )
    .await;
    // Stay inside one minute window.
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    for _ in 0..3 {
        let r = api
            .send(Method::POST, SESSIONS, Some("alice"), None, &[])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            row(&api, "alice", r.body["session_id"].as_str().unwrap()).await["max_requests_per_minute"],
            12
        );
    }
    let r = api
        .send(Method::POST, SESSIONS, Some("alice"), None, &[])
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited"));
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // The limit is per user.
    assert_eq!(
        api.send(Method::POST, SESSIONS, Some("bob"), None, &[])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosted_mode_sends_the_exact_upstream_request() {
    let api = hosted(&[("CHATKIT_WORKFLOW_VERSION", "7")]).await;
    let r = api
        .send(Method::POST, SESSIONS, Some("alice"), None, &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["mode"], "hosted");
    assert!(
        r.body["client_secret"]
            .as_str()
            .unwrap()
            .starts_with("ek_stub_")
    );
    let sent = stub(&api).requests_to("/v1/chatkit/sessions");
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.headers["authorization"],
        format!("Bearer {STUB_OPENAI_KEY}")
    );
    assert_eq!(req.headers["openai-beta"], "chatkit_beta=v1");
    assert!(req.headers["content-type"].starts_with("application/json"));
    assert_eq!(
        req.body,
        json!({
            "user": "alice",
            "workflow": {"id": STUB_WORKFLOW, "version": "7"},
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "rate_limits": {"max_requests_per_1_minute": 30}
        })
    );
    // A client-chosen user is impossible: the body has no such field to send.
    let r = api
        .send(
            Method::POST,
            SESSIONS,
            Some("alice"),
            Some(json!({"user": "mallory"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 400);

    // Refresh cancels upstream and in the table.
    let id = r_id(&api, "alice").await;
    let secret = id.1.clone();
    let r = api
        .send(
            Method::POST,
            SESSIONS,
            Some("alice"),
            Some(json!({"current_client_secret": secret})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    let cancels = stub(&api).requests_to(&format!("/v1/chatkit/sessions/{}/cancel", id.0));
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].headers["openai-beta"], "chatkit_beta=v1");
    assert_eq!(row(&api, "alice", &id.0).await["status"], "cancelled");
    // The stored record never holds the secret itself.
    assert!(
        !row(&api, "alice", &id.0)
            .await
            .to_string()
            .contains(&secret)
    );
}

/// Creates a hosted session: `(id, client_secret)`.
async fn r_id(api: &Api, user: &str) -> (String, String) {
    let r = api
        .send(Method::POST, SESSIONS, Some(user), None, &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    (
        r.body["session_id"].as_str().unwrap().to_owned(),
        r.body["client_secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_failures_map_to_clear_errors() {
    let api = hosted(&[]).await;
    let s = stub(&api);
    let create = || api.send(Method::POST, SESSIONS, Some("alice"), None, &[]);
    let before = s.requests_to("/v1/chatkit/sessions").len();

    // 429 → 503 with the upstream Retry-After, no retry.
    s.push_fault(Fault::Status {
        status: 429,
        retry_after: Some(7),
    });
    let r = create().await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (503, "upstream_rate_limited")
    );
    assert_eq!(r.headers["retry-after"], "7");

    // 5xx → two retries, then 502; never the upstream body.
    for _ in 0..3 {
        s.push_fault(Fault::Status {
            status: 500,
            retry_after: None,
        });
    }
    let r = create().await;
    assert_eq!((r.status.as_u16(), r.code()), (502, "upstream_unavailable"));
    assert!(!r.body.to_string().contains("scripted failure"));
    // 5xx then success: the retry hides it.
    s.push_fault(Fault::Status {
        status: 503,
        retry_after: None,
    });
    assert_eq!(create().await.status, 200);
    // A cut-off body is retried like a connection failure.
    s.push_fault(Fault::Truncated);
    assert_eq!(create().await.status, 200);
    // Garbage is not retried (the create may have happened): 502.
    s.push_fault(Fault::Garbage);
    assert_eq!(create().await.code(), "upstream_unavailable");
    // Too slow → 504 from the function itself (OPENAI_TIMEOUT_MS = 6000),
    // before Lambda's 10 s would cut it.
    s.push_fault(Fault::Slow(Duration::from_secs(30)));
    let r = create().await;
    assert_eq!((r.status.as_u16(), r.code()), (504, "upstream_timeout"));
    let sessions = api.stack.function("sessions").unwrap();
    assert!(
        !sessions.logs().iter().any(|l| l.contains("timed out")),
        "{}",
        sessions.logs().join("\n")
    );
    // Other 4xx → 502.
    s.push_fault(Fault::Status {
        status: 400,
        retry_after: None,
    });
    assert_eq!(create().await.code(), "upstream_rejected");
    // 401 twice (even after a key refresh) → 502 upstream_auth.
    s.push_fault(Fault::Status {
        status: 401,
        retry_after: None,
    });
    s.push_fault(Fault::Status {
        status: 401,
        retry_after: None,
    });
    let r = create().await;
    assert_eq!((r.status.as_u16(), r.code()), (502, "upstream_auth"));
    assert!(!r.body.to_string().contains(STUB_OPENAI_KEY));
    let sent = s.requests_to("/v1/chatkit/sessions").len() - before;
    assert_eq!(
        sent,
        1 + 3 + 2 + 2 + 1 + 1 + 1 + 2,
        "attempts made upstream"
    );

    // An unknown workflow → 502 naming it.
    let api = hosted(&[("CHATKIT_WORKFLOW_ID", "wf_missing")]).await;
    let r = api
        .send(Method::POST, SESSIONS, Some("alice"), None, &[])
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (502, "upstream_not_found"));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wf_missing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secret_is_fetched_once_and_again_after_a_401() {
    let api = hosted(&[("SESSION_CREATE_PER_MINUTE", "1000")]).await;
    let side = api.stack.secrets.as_ref().unwrap();
    for _ in 0..50 {
        r_id(&api, "alice").await;
    }
    let f = api.stack.function("sessions").unwrap();
    assert_eq!(f.cold_starts(), 1, "one process served all 50");
    assert_eq!(
        side.get_secret_value_calls(),
        1,
        "one GetSecretValue across 50 invocations"
    );

    // Rotate the key: the stub now wants the new one, the function still has the old.
    let rotated = "sk-rotated-key-0001";
    side.rotate(rotated).await.unwrap();
    stub(&api).set_key(rotated);
    r_id(&api, "alice").await;
    assert_eq!(
        side.get_secret_value_calls(),
        2,
        "refreshed once after the 401"
    );
    let last = stub(&api)
        .requests_to("/v1/chatkit/sessions")
        .pop()
        .unwrap();
    assert_eq!(last.headers["authorization"], format!("Bearer {rotated}"));
    r_id(&api, "alice").await;
    assert_eq!(side.get_secret_value_calls(), 2);

    // Neither key ever reached the logs (read once the last request's line is in).
    let captured = f
        .wait_for_log(|l| l.contains("session created"), Duration::from_secs(60))
        .await;
    assert!(captured.is_some(), "the logs were captured");
    let logs = f.logs().join("\n");
    for key in [STUB_OPENAI_KEY, rotated] {
        assert!(!logs.contains(key), "{key} leaked into the logs");
    }
}

/// Sends a JSON ChatKit request with `bearer` (a client secret or a JWT): the
/// status and the body, checked against the ChatKit types and the spec.
async fn chatkit(api: &Api, bearer: &str, envelope: Value) -> (u16, String) {
    let answer = crate::common::chatkit_with(api, bearer, &envelope).await;
    (answer.status, answer.text)
}

/// Whether the ChatKit endpoint accepts `secret` (a cheap `threads.list`).
async fn accepted(api: &Api, secret: &str) -> bool {
    let (status, body) = chatkit(api, secret, json!({"type": "threads.list", "params": {}})).await;
    assert!(
        status == 200 || status == 401,
        "threads.list answered {status}: {body}"
    );
    status == 200
}

/// Mints a self-hosted session for `user`: `(id, client_secret)`.
async fn mint(api: &Api, user: &str, body: Option<Value>) -> (String, String) {
    let r = api
        .send(Method::POST, SESSIONS, Some(user), body, &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    (
        r.body["session_id"].as_str().unwrap().to_owned(),
        r.body["client_secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minting_past_the_active_cap_cancels_the_oldest_session() {
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["sessions".into(), "chatkit".into()]),
        env: env(&[("CHATKIT_MAX_ACTIVE_SESSIONS", "2")]),
        ..StackOptions::default()
    })
    .await;
    let bobs = [mint(&api, "bob", None).await, mint(&api, "bob", None).await];
    let first = mint(&api, "alice", None).await;
    let second = mint(&api, "alice", None).await;
    assert!(accepted(&api, &first.1).await, "within the cap");
    let third = mint(&api, "alice", None).await;

    // The third session cancelled the first (the oldest): its secret is refused.
    assert_eq!(row(&api, "alice", &first.0).await["status"], "cancelled");
    assert!(
        !accepted(&api, &first.1).await,
        "the oldest session is cancelled"
    );
    assert!(accepted(&api, &second.1).await);
    assert!(accepted(&api, &third.1).await);
    let sessions = api.stack.function("sessions").unwrap();
    let logged = sessions
        .wait_for_log(
            |l| l.contains("oldest active sessions cancelled"),
            Duration::from_secs(60),
        )
        .await
        .expect("the cancellation is logged");
    assert!(
        logged.contains("cancelled=1") || logged.contains("\"cancelled\":1"),
        "{logged}"
    );
    // Another user's sessions are theirs: bob still has both.
    for (id, secret) in &bobs {
        assert_eq!(row(&api, "bob", id).await["status"], "active");
        assert!(accepted(&api, secret).await);
    }

    // A refresh retires the current session first: at the cap, nothing else goes.
    let refreshed = mint(
        &api,
        "alice",
        Some(json!({"current_client_secret": third.1})),
    )
    .await;
    assert!(
        !accepted(&api, &third.1).await,
        "the refreshed one is retired"
    );
    assert!(accepted(&api, &second.1).await, "the other one stays");
    assert!(accepted(&api, &refreshed.1).await);
    // A reload (a new session, no refresh) is never refused: the oldest goes.
    let reload = mint(&api, "alice", None).await;
    assert!(accepted(&api, &reload.1).await);
    assert!(!accepted(&api, &second.1).await);
    assert!(accepted(&api, &refreshed.1).await);
}

#[tokio::test]
async fn active_sessions_read_only_the_recent_key_range() {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    use emulators::proxy::CountingProxy;
    use taskpilot_domain::UserId;
    use taskpilot_domain::session::{
        ChatSession, SessionMode, SessionStatus, SessionStore, session_id_at,
    };

    let (client, table, endpoint) = taskpilot_testkit::stack::fresh_table("sessions")
        .await
        .unwrap();
    let alice = UserId::new("alice").unwrap();
    // Whole milliseconds, as stored.
    let now = taskpilot_domain::timestamp::now();
    let ttl = chrono::Duration::minutes(10);
    let at = |secs_ago: i64| now - chrono::Duration::seconds(secs_ago);
    let session = |minted: chrono::DateTime<chrono::Utc>| ChatSession {
        id: session_id_at(minted),
        mode: SessionMode::SelfHosted,
        status: SessionStatus::Active,
        created_at: minted,
        expires_at: minted + ttl,
        max_requests_per_minute: 30,
        workflow_id: None,
        secret_hash: None,
    };
    // A day of an abuser's history, kept past expiry (never cancelled): more
    // than one 1 MB Query page if it were read.
    let old: Vec<ChatSession> = (0..5_000).map(|i| session(at(11 * 60 + i * 17))).collect();
    for chunk in old.chunks(25) {
        let writes = chunk
            .iter()
            .map(|s| {
                let mut item: std::collections::HashMap<String, AttributeValue> =
                    serde_dynamo::to_item(s).unwrap();
                item.insert("pk".into(), AttributeValue::S("USER#alice".into()));
                item.insert("sk".into(), AttributeValue::S(format!("SESSION#{}", s.id)));
                item.insert("padding".into(), AttributeValue::S("x".repeat(200)));
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                    .build()
            })
            .collect();
        let mut pending = Some(std::collections::HashMap::from([(table.clone(), writes)]));
        while let Some(items) = pending.filter(|p| !p.is_empty()) {
            let out = client
                .batch_write_item()
                .set_request_items(Some(items))
                .send()
                .await
                .unwrap();
            pending = out.unprocessed_items;
        }
    }
    let proxy = CountingProxy::start(&endpoint).await.unwrap();
    let store = taskpilot_store::DynamoStore::new(
        emulators::aws::dynamodb_client(&proxy.endpoint).await,
        table,
    );
    let (oldest, cancelled, newest) = (session(at(500)), session(at(300)), session(at(2)));
    let mut short = session(at(100));
    short.expires_at = at(1);
    for s in [&newest, &short, &cancelled, &oldest] {
        store.put_session(&alice, s).await.unwrap();
    }
    store.cancel_session(&alice, &cancelled.id).await.unwrap();
    store
        .put_session(&UserId::new("bob").unwrap(), &session(at(3)))
        .await
        .unwrap();

    let before = proxy.count("DynamoDB_20120810.Query");
    let active = store.active_sessions(&alice, now - ttl, now).await.unwrap();
    assert_eq!(
        active.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [oldest.id.as_str(), newest.id.as_str()],
        "active, unexpired, alice's, oldest first"
    );
    assert_eq!(active[0], oldest);
    assert_eq!(
        proxy.count("DynamoDB_20120810.Query") - before,
        1,
        "one page: the old records are outside the key range"
    );
}

/// `GET /api/v1/chatkit/usage` as `user`, checked against the spec.
async fn usage(api: &Api, user: &str) -> Value {
    let r = api.get(USAGE, user).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

const USAGE: &str = "/api/v1/chatkit/usage";

/// The end of the minute window holding `t` (Unix seconds).
fn minute_end(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp() - t.timestamp().rem_euclid(60) + 60
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_usage_route_shows_the_callers_own_budget() {
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["sessions".into(), "chatkit".into(), "health".into()]),
        // The template's defaults (the harness raises them for other tests).
        env: env(&[
            ("CHATKIT_USER_TURNS_PER_MINUTE", "10"),
            ("CHATKIT_USER_TOKENS_PER_DAY", "200000"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let midnight = |t: chrono::DateTime<chrono::Utc>| {
        (t.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    };

    // A fresh user: nothing used, everything left.
    let before = chrono::Utc::now();
    let fresh = usage(&api, "carol").await;
    let after = chrono::Utc::now();
    let minute = fresh["turns_per_minute"]["resets_at"].as_i64().unwrap();
    assert!(
        [minute_end(before), minute_end(after)].contains(&minute),
        "{fresh}"
    );
    let day = fresh["tokens_per_day"]["resets_at"].as_i64().unwrap();
    assert!(
        [midnight(before), midnight(after)].contains(&day),
        "{fresh}"
    );
    assert_eq!(
        fresh,
        json!({
            "turns_per_minute": {"limit": 10, "used": 0, "remaining": 10, "resets_at": minute},
            "tokens_per_day": {"limit": 200000, "used": 0, "remaining": 200000, "resets_at": day},
            "today": {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
                      "rounds": 0, "turns": 0}
        })
    );

    // One turn, with a client secret: it counts for alice, whatever identity she used.
    let (_, secret) = mint(&api, "alice", None).await;
    stub(&api).push_turn(taskpilot_testkit::openai_stub::Turn::Text("Hello!".into()));
    let started = chrono::Utc::now();
    let input = json!({"content": [{"type": "input_text", "text": "hi"}], "attachments": [],
                       "inference_options": {"tool_choice": null, "model": null}});
    let (status, stream) = chatkit(
        &api,
        &secret,
        json!({"type": "threads.create", "params": {"input": input}}),
    )
    .await;
    assert_eq!(status, 200, "{stream}");
    assert!(stream.contains("Hello!"), "{stream}");
    // Usage is written as the turn's rounds end: wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (read_at, alice) = loop {
        let read_at = chrono::Utc::now();
        let body = usage(&api, "alice").await;
        if body["today"]["turns"] == 1 && body["today"]["rounds"].as_u64() >= Some(1) {
            break (read_at, body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice's turn is not counted (awaits the chatkit side's counting?): {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let today = &alice["today"];
    let tokens = today["input_tokens"].as_u64().unwrap() + today["output_tokens"].as_u64().unwrap();
    assert!(tokens > 0, "{alice}");
    assert!(
        today["cached_input_tokens"].as_u64().unwrap() <= today["input_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        alice["tokens_per_day"],
        json!({"limit": 200000, "used": tokens, "remaining": 200000 - tokens,
               "resets_at": alice["tokens_per_day"]["resets_at"]})
    );
    // The turn is in its minute's count while that minute lasts.
    let turns = &alice["turns_per_minute"];
    if minute_end(started) == minute_end(read_at) {
        assert_eq!(
            (turns["used"].clone(), turns["remaining"].clone()),
            (json!(1), json!(9)),
            "{alice}"
        );
    }
    assert_eq!(
        turns["limit"].as_u64().unwrap() - turns["used"].as_u64().unwrap(),
        turns["remaining"].as_u64().unwrap()
    );
    // Carol's count is her own.
    assert_eq!(usage(&api, "carol").await["today"]["turns"], 0);

    // No identity: 401; another method: 405 naming GET (the gateway's
    // `$default`, and the function itself if it ever gets one).
    let r = api.send(Method::GET, USAGE, None, None, &[]).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "unauthorized"));
    let r = api
        .send(Method::POST, USAGE, Some("alice"), Some(json!({})), &[])
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "method_not_allowed"));
    assert_eq!(r.headers["allow"], "GET, OPTIONS");
    let sample =
        std::fs::read_to_string(taskpilot_testkit::events::dir().join("chat-kit-usage.json"))
            .unwrap();
    let mut event: Value = serde_json::from_str(&sample).unwrap();
    event["requestContext"]["http"]["method"] = json!("DELETE");
    let out = api
        .stack
        .function("sessions")
        .unwrap()
        .invoke(event.to_string())
        .await
        .unwrap();
    let resp: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(resp["statusCode"], 405, "{resp}");
    assert_eq!(resp["headers"]["allow"], "GET, OPTIONS", "{resp}");
}

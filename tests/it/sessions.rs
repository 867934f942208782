//! The real `sessions` binary against DynamoDB Local, moto (Secrets Manager)
//! and the OpenAI stub, all on 127.0.0.1.
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

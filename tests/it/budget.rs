//! The per-user chat budget end to end: the real `chatkit` and `sessions`
//! binaries, DynamoDB Local's counters, the OpenAI stub's reported usage.
//! A turn is counted in its minute before anything is stored or the model
//! is asked; a user's JWT and client secrets share one budget; the counters
//! outlive the processes.
use std::time::Duration;

use chrono::{Timelike, Utc};
use serde_json::{Value, json};

use crate::common::{Api, chatkit, chatkit_with, check_contract, sse_events};
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::openai_stub::{OpenAiStub, prompt_tokens};

const CHATKIT: &str = "/api/v1/chatkit";

fn stub(api: &Api) -> &OpenAiStub {
    api.stack.openai.as_ref().unwrap()
}

fn message(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {}})
}

fn create(text: &str) -> Value {
    json!({"type": "threads.create", "params": {"input": message(text)}})
}

fn add(thread: &str, text: &str) -> Value {
    json!({"type": "threads.add_user_message",
           "params": {"thread_id": thread, "input": message(text)}})
}

/// One ChatKit request with any bearer: the status, `Retry-After`, and the
/// body, checked against the official types and the spec.
async fn post(api: &Api, bearer: &str, envelope: &Value) -> (u16, Option<u64>, String) {
    let answer = chatkit_with(api, bearer, envelope).await;
    (answer.status, answer.retry_after, answer.text)
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// The minute window holding now (epoch seconds of its start).
fn window() -> i64 {
    let now = Utc::now().timestamp();
    now - now.rem_euclid(60)
}

/// Waits, when less than `margin` is left of the current minute, for the
/// next one to begin: the counters' windows are UTC minutes, and a burst
/// that straddles two may be admitted in both (the documented edge).
async fn fresh_minute(margin: Duration) {
    let second = u64::from(Utc::now().second());
    if 60 - second < margin.as_secs() {
        let until_next = Duration::from_millis(
            (60 - second) * 1000 - u64::from(Utc::now().timestamp_subsec_millis()),
        );
        tokio::time::sleep(until_next + Duration::from_millis(50)).await;
    }
}

/// The user's stored threads.
async fn threads_of(api: &Api, user: &str) -> usize {
    api.rows("THREAD#")
        .await
        .iter()
        .filter(|r| r["pk"].as_s().unwrap() == &format!("USER#{user}"))
        .count()
}

/// Mints a ChatKit client secret for `user`.
async fn client_secret(api: &Api, user: &str) -> String {
    let reply = api.post("/api/chatkit/sessions", user, json!({})).await;
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
    reply.body["client_secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_burst_from_one_user_reaches_the_model_exactly_the_minutes_budget() {
    const LIMIT: usize = 10;
    let api = Api::start_env(
        &["chatkit", "sessions"],
        &[("CHATKIT_USER_TURNS_PER_MINUTE", "10")],
    )
    .await;
    let jwt = api.token("alice");
    fresh_minute(Duration::from_secs(40)).await;
    let first_window = window();
    // 100 turns from 10 concurrent connections.
    let mut tasks = Vec::new();
    for c in 0..10 {
        let http = taskpilot_testkit::http_client();
        let url = format!("{}{CHATKIT}", api.stack.url);
        let jwt = jwt.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..10 {
                let resp = http
                    .post(&url)
                    .bearer_auth(&jwt)
                    .json(&create(&format!("note {c}-{i}")))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").cloned();
                answers.push((status, retry_after, resp.text().await.unwrap()));
            }
            answers
        }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    for task in tasks {
        for (status, retry_after, body) in task.await.unwrap() {
            match status {
                200 => admitted += 1,
                429 => {
                    refused += 1;
                    assert_eq!(error_code(&body), "rate_limited", "{body}");
                    let wait: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
                    assert!((1..=60).contains(&wait), "Retry-After {wait}");
                    chatkit_contract::check_response(
                        "threads.create",
                        429,
                        Some("application/json"),
                        &body,
                    )
                    .unwrap();
                    check_contract("POST", CHATKIT, 429, body.as_bytes());
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    let windows = (window() - first_window) / 60 + 1;
    assert_eq!(admitted + refused, 100);
    let model_requests = stub(&api).requests_to("/v1/responses").len();
    assert_eq!(
        model_requests, admitted,
        "one model request per admitted turn"
    );
    if windows == 1 {
        assert_eq!(admitted, LIMIT, "exactly the minute's budget, no overshoot");
    } else {
        // The burst crossed into the next minute, which has its own budget.
        assert!(
            (LIMIT..=2 * LIMIT).contains(&admitted),
            "{admitted} over two windows"
        );
    }
    assert_eq!(
        threads_of(&api, "alice").await,
        admitted,
        "a refused turn stores nothing"
    );
    // Another user is unaffected.
    let (status, _, _) = post(&api, &api.token("bob"), &create("hello")).await;
    assert_eq!(status, 200);
    // JSON requests are not turns: alice can still read her threads.
    let (status, _, _) = post(&api, &jwt, &json!({"type": "threads.list", "params": {}})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_jwt_caller_and_a_client_secret_caller_share_one_budget() {
    let api = Api::start_env(
        &["chatkit", "sessions"],
        &[("CHATKIT_USER_TURNS_PER_MINUTE", "4")],
    )
    .await;
    fresh_minute(Duration::from_secs(30)).await;
    let first_window = window();
    let jwt = api.token("carol");
    let secret = client_secret(&api, "carol").await;
    let other_secret = client_secret(&api, "carol").await;
    for bearer in [&jwt, &secret, &jwt, &other_secret] {
        let (status, _, body) = post(&api, bearer, &create("hi")).await;
        assert_eq!(status, 200, "{body}");
    }
    for bearer in [&jwt, &secret, &other_secret] {
        let (status, retry_after, body) = post(&api, bearer, &create("hi")).await;
        if window() != first_window {
            return; // a new minute began: nothing more to learn here
        }
        assert_eq!(status, 429, "{body}");
        assert_eq!(error_code(&body), "rate_limited");
        assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
    }
    assert_eq!(threads_of(&api, "carol").await, 4);
    let (status, _, _) = post(&api, &client_secret(&api, "dave").await, &create("hi")).await;
    assert_eq!(status, 200, "another user's budget is their own");
}

#[tokio::test]
async fn the_daily_token_cap_reached_mid_conversation_refuses_the_next_turn() {
    const LIMIT: u64 = 4_000;
    let api = Api::start_env(&["chatkit"], &[("CHATKIT_USER_TOKENS_PER_DAY", "4000")]).await;
    let (status, events, _, _) = chatkit(&api, "erin", create("remember this")).await;
    assert_eq!(status, 200);
    let thread = events
        .iter()
        .find(|e| e["type"] == "thread.created")
        .and_then(|e| e["thread"]["id"].as_str())
        .unwrap()
        .to_owned();
    let mut notices = Vec::new();
    let mut turns = 1;
    let refused = loop {
        assert!(turns < 20, "the cap never refused a turn");
        let (status, retry_after, body) =
            post(&api, &api.token("erin"), &add(&thread, "and this")).await;
        if status == 429 {
            break (retry_after, body);
        }
        assert_eq!(status, 200, "{body}");
        notices.extend(
            events_of_type(&body, "notice")
                .into_iter()
                .map(|n| n["level"].as_str().unwrap().to_owned()),
        );
        turns += 1;
    };
    let (retry_after, body) = refused;
    assert_eq!(error_code(&body), "budget_exhausted", "{body}");
    let to_midnight = 86_400 - u64::from(Utc::now().num_seconds_from_midnight());
    let wait = retry_after.unwrap();
    assert!(
        wait.abs_diff(to_midnight) <= 5,
        "Retry-After {wait}, midnight in {to_midnight}"
    );
    assert!(
        !notices.is_empty(),
        "a turn past 80 % carried a notice before the refusal"
    );
    // What was charged is what the model reported, round by round.
    let requests = stub(&api).requests_to("/v1/responses");
    let reported_input: u64 = requests.iter().map(|r| prompt_tokens(&r.body)).sum();
    let usage = api.rows("USAGE#").await;
    assert_eq!(usage.len(), 1);
    let number = |name: &str| -> u64 { usage[0][name].as_n().unwrap().parse().unwrap() };
    assert_eq!(number("input_tokens"), reported_input);
    assert_eq!(number("rounds"), requests.len() as u64);
    assert_eq!(number("turns"), turns as u64);
    assert!(number("input_tokens") + number("output_tokens") >= LIMIT);
    // The refused turn stored nothing and asked nothing.
    let items = api.rows(&format!("ITEM#{thread}#")).await.len();
    let (status, _, _) = post(&api, &api.token("erin"), &add(&thread, "one more")).await;
    assert_eq!(status, 429);
    assert_eq!(api.rows(&format!("ITEM#{thread}#")).await.len(), items);
    assert_eq!(
        stub(&api).requests_to("/v1/responses").len(),
        requests.len()
    );
    // Another user still chats.
    let (status, _, _, _) = chatkit(&api, "frank", create("hello")).await;
    assert_eq!(status, 200);
}

fn events_of_type(body: &str, kind: &str) -> Vec<Value> {
    sse_events(body)
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test]
async fn counters_survive_a_restart_of_the_function_processes() {
    let api = Api::start_with(taskpilot_testkit::stack::StackOptions {
        functions: Some(vec!["chatkit".into()]),
        env: vec![("CHATKIT_USER_TURNS_PER_MINUTE".into(), "3".into())],
        max_instances: 1,
        ..Default::default()
    })
    .await;
    fresh_minute(Duration::from_secs(40)).await;
    let first_window = window();
    let jwt = api.token("gina");
    for _ in 0..3 {
        let (status, _, body) = post(&api, &jwt, &create("hi")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, _) = post(&api, &jwt, &create("hi")).await;
    assert_eq!(status, 429);
    let chatkit_fn = api.stack.function("chatkit").unwrap();
    let before = chatkit_fn.pids();
    for pid in &before {
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    // The runtime must have reaped them, or the next job could be handed to
    // a dead process's pending `next` call.
    let reaped = chatkit_fn
        .wait_for_log(
            |l| l.starts_with("[runtime] process exited"),
            Duration::from_secs(30),
        )
        .await;
    assert!(reaped.is_some(), "the killed process was not reaped");
    let (status, _, body) = post(&api, &jwt, &create("hi")).await;
    if window() != first_window {
        return; // a new minute began: its budget is fresh, nothing to learn
    }
    assert_eq!(status, 429, "the new process reads the same count: {body}");
    let after = chatkit_fn.pids();
    assert!(
        after.iter().any(|pid| !before.contains(pid)),
        "a new process answered ({before:?} → {after:?})"
    );
    assert_eq!(threads_of(&api, "gina").await, 3);
}

#[tokio::test]
async fn refusals_cost_no_dynamodb_request_once_known() {
    let api = Api::start_with(taskpilot_testkit::stack::StackOptions {
        functions: Some(vec!["chatkit".into(), "sessions".into()]),
        env: vec![("CHATKIT_USER_TURNS_PER_MINUTE".into(), "1".into())],
        max_instances: 1,
        count_dynamodb: true,
        ..Default::default()
    })
    .await;
    fresh_minute(Duration::from_secs(40)).await;
    let first_window = window();
    let proxy = api.stack.dynamodb_proxy.as_ref().unwrap();
    let jwt = api.token("hana");
    let (status, _, _) = post(&api, &jwt, &create("hi")).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&api, &jwt, &create("hi")).await;
    assert_eq!(status, 429);
    // A cancelled session's secret: refused once from DynamoDB, then from
    // the process's memory.
    let minted = api.post("/api/chatkit/sessions", "ivan", json!({})).await;
    let secret = minted.body["client_secret"].as_str().unwrap().to_owned();
    let session = minted.body["session_id"].as_str().unwrap().to_owned();
    let cancelled = api
        .post(
            &format!("/api/chatkit/sessions/{session}/cancel"),
            "ivan",
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status.as_u16(), 200);
    let (status, _, _) = post(&api, &secret, &create("hi")).await;
    assert_eq!(status, 401);
    let total = || proxy.counts().values().sum::<usize>();
    let before = total();
    // No token, a bad token, and a known refusal: none reads DynamoDB.
    let anonymous = api
        .http
        .post(format!("{}{CHATKIT}", api.stack.url))
        .json(&create("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, _, _) = post(&api, "not-a-token", &create("hi")).await;
    assert_eq!(status, 401);
    let (status, _, body) = post(&api, &secret, &create("hi")).await;
    assert_eq!(status, 401, "{body}");
    for _ in 0..5 {
        let (status, _, _) = post(&api, &jwt, &create("hi")).await;
        if window() != first_window {
            return;
        }
        assert_eq!(status, 429);
    }
    assert_eq!(total(), before, "refusals made DynamoDB requests");
}

#[tokio::test]
async fn an_unusable_budget_setting_stops_start_up_naming_it() {
    for (name, value) in [
        ("CHATKIT_USER_TURNS_PER_MINUTE", "0"),
        ("CHATKIT_USER_TOKENS_PER_DAY", "lots"),
        ("CHATKIT_USER_BUDGET_WARN_PERCENT", "101"),
    ] {
        let api = Api::start_env(&["sessions"], &[(name, value)]).await;
        // The gateway answers for a function that could not start.
        let reply = api
            .http
            .get(format!("{}/api/v1/chatkit/usage", api.stack.url))
            .bearer_auth(api.token("jo"))
            .send()
            .await
            .unwrap();
        assert!(
            reply.status().is_server_error(),
            "{name}={value}: {}",
            reply.status()
        );
        let f = api.stack.function("sessions").unwrap();
        let named = f
            .wait_for_log(|l| l.contains(name), Duration::from_secs(60))
            .await;
        assert!(
            named.is_some(),
            "{name} not named in: {}",
            f.logs().join("\n")
        );
    }
}

//! The self-hosted ChatKit endpoint end to end: HTTP → the real `chatkit`
//! binary (Lambda response streaming) → the OpenAI stub's scripted Responses
//! turns and DynamoDB Local; the REST API sees the same tasks.
use std::time::Duration;

use crate::common::Api;
use reqwest::Method;
use serde_json::{Value, json};
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::openai_stub::{OpenAiStub, Turn};

const CHATKIT: &str = "/api/v1/chatkit";

async fn start(env: &[(&str, &str)]) -> Api {
    Api::start_env(&["tasks", "sessions", "chatkit"], env).await
}

fn stub(api: &Api) -> &OpenAiStub {
    api.stack.openai.as_ref().unwrap()
}

/// A streamed answer, split into its SSE frames (asserting the exact framing).
struct Sse {
    status: u16,
    headers: reqwest::header::HeaderMap,
    events: Vec<Value>,
}

impl Sse {
    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    fn types(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect()
    }
}

fn parse_frames(raw: &str) -> Vec<Value> {
    assert!(
        raw.ends_with("\n\n"),
        "the stream ends after a whole frame: {raw:?}"
    );
    raw.strip_suffix("\n\n")
        .unwrap()
        .split("\n\n")
        .map(|frame| {
            let json = frame
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data frame: {frame:?}"));
            assert!(!json.contains('\n'), "one line per frame");
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

/// Sends a ChatKit request, which must be one the official types accept.
async fn send(api: &Api, bearer: &str, envelope: Value) -> reqwest::Response {
    if let Err(e) = chatkit_contract::check_request(&envelope) {
        panic!("not a ChatKit request: {envelope}\n  {e}");
    }
    post(api, bearer, envelope.to_string()).await
}

/// Sends any body, unchecked.
async fn post(api: &Api, bearer: &str, body: String) -> reqwest::Response {
    api.http
        .post(format!("{}{CHATKIT}", api.stack.url))
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A whole answer, checked against the ChatKit contract
/// ([`chatkit_contract::check_response`]).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    async fn read(request_type: &str, resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        if let Err(e) = chatkit_contract::check_response(request_type, status, content_type, &text)
        {
            panic!("ChatKit contract: {e}");
        }
        Self {
            status,
            headers,
            text,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }
}

/// Sends a ChatKit request and reads the whole, checked answer.
async fn call(api: &Api, bearer: &str, envelope: Value) -> Answer {
    let kind = envelope["type"].as_str().unwrap_or_default().to_owned();
    Answer::read(&kind, send(api, bearer, envelope).await).await
}

async fn stream(api: &Api, user: &str, envelope: Value) -> Sse {
    let Answer {
        status,
        headers,
        text,
    } = call(api, &api.token(user), envelope).await;
    assert_eq!(status, 200, "{text}");
    Sse {
        status,
        headers,
        events: parse_frames(&text),
    }
}

async fn json_call(api: &Api, user: &str, envelope: Value) -> (u16, Value) {
    let answer = call(api, &api.token(user), envelope).await;
    (answer.status, answer.json())
}

fn message(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {"tool_choice": null, "model": null}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_creates_lists_and_completes_tasks() {
    let api = start(&[]).await;
    let s = stub(&api);
    s.push_turn(Turn::Calls(vec![(
        "create_task".into(),
        json!({"title": "buy milk", "due_date": "2026-11-23"}),
    )]));
    s.push_turn(Turn::Text("Added buy milk, due tomorrow.".into()));
    let first = stream(&api, "alice", json!({"type": "threads.create", "params": {"input": message("add buy milk due tomorrow")}})).await;
    assert_eq!(first.headers["content-type"], "text/event-stream");
    assert_eq!(first.headers["cache-control"], "no-cache, no-transform");
    assert_eq!(first.headers["x-accel-buffering"], "no");
    let types = first.types();
    assert_eq!(
        &types[..3],
        ["thread.created", "thread.item.done", "stream_options"],
        "{types:?}"
    );
    assert_eq!(*types.last().unwrap(), "thread.updated");
    let thread_id = first.events[0]["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first.events[0]["thread"]["metadata"], json!({}));
    assert_eq!(first.events[1]["item"]["type"], "user_message");
    // The answer streams as deltas that add up to the whole text.
    let deltas: String = first
        .of_type("thread.item.updated")
        .iter()
        .filter(|e| e["update"]["type"] == "assistant_message.content_part.text_delta")
        .map(|e| e["update"]["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Added buy milk, due tomorrow.");
    let done: Vec<&Value> = first.of_type("thread.item.done");
    let answer = done
        .iter()
        .find(|e| e["item"]["type"] == "assistant_message")
        .unwrap();
    assert_eq!(
        answer["item"]["content"][0]["text"],
        "Added buy milk, due tomorrow."
    );
    let widget = done.iter().find(|e| e["item"]["type"] == "widget").unwrap();
    assert!(widget["item"]["widget"].to_string().contains("buy milk"));
    assert_eq!(
        first.of_type("thread.updated")[0]["thread"]["title"],
        "add buy milk due tomorrow"
    );
    // The tool ran through the task service: the REST API sees the task.
    let tasks = api.get("/api/v1/tasks", "alice").await.body["tasks"].clone();
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    assert_eq!(
        (tasks[0]["title"].clone(), tasks[0]["due_date"].clone()),
        (json!("buy milk"), json!("2026-11-23"))
    );
    let task_id = tasks[0]["id"].as_str().unwrap().to_owned();
    // The page heard which task was created, and saw progress while the tool ran.
    assert_eq!(
        first.of_type("client_effect"),
        [&json!({"type": "client_effect", "name": "tasks.changed",
                 "data": {"created": [task_id], "updated": [], "deleted": []}})]
    );
    assert_eq!(
        first.of_type("progress_update"),
        [&json!({"type": "progress_update", "icon": "plus", "text": "Creating “buy milk”…"})]
    );
    // What the model was sent: the tools, the model, and the tool output in round two.
    let sent = s.requests_to("/v1/responses");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body["model"], "gpt-4.1");
    assert_eq!(sent[0].body["stream"], true);
    let tools: Vec<&str> = sent[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "list_tasks",
            "create_task",
            "update_task",
            "complete_task",
            "reopen_task",
            "delete_task",
            "show_task"
        ]
    );
    let round_two = sent[1].body["input"].as_array().unwrap();
    assert!(round_two.iter().any(|i| i["type"] == "function_call_output"
        && i["output"].as_str().unwrap().contains("buy milk")));

    // "what's left?" → list_tasks, a widget that lists it.
    s.push_turn(Turn::Calls(vec![(
        "list_tasks".into(),
        json!({"completed": false}),
    )]));
    s.push_turn(Turn::Text("One task is left: buy milk.".into()));
    let second = stream(&api, "alice", json!({"type": "threads.add_user_message", "params": {"thread_id": thread_id, "input": message("what's left?")}})).await;
    assert_eq!(&second.types()[..2], ["thread.item.done", "stream_options"]);
    let widget_item = second
        .of_type("thread.item.done")
        .into_iter()
        .find(|e| e["item"]["type"] == "widget")
        .unwrap()["item"]
        .clone();
    assert!(widget_item["widget"].to_string().contains(&task_id));
    // The history reached the model: the first exchange comes before the new question.
    let input = s.requests_to("/v1/responses")[2].body["input"].clone();
    assert!(
        input.to_string().contains("add buy milk due tomorrow")
            && input.to_string().contains("what's left?")
    );

    // The Done button: the task is completed and the widget replaced in place.
    let action = stream(
        &api,
        "alice",
        json!({"type": "threads.custom_action", "params": {
        "thread_id": thread_id, "item_id": widget_item["id"],
        "action": {"type": "task.complete", "payload": {"task_id": task_id}}}}),
    )
    .await;
    assert_eq!(
        action.types(),
        ["stream_options", "thread.item.replaced", "client_effect"]
    );
    assert_eq!(action.events[2]["data"]["updated"], json!([task_id]));
    let replaced = &action.events[1]["item"];
    assert_eq!(replaced["id"], widget_item["id"]);
    assert!(replaced["widget"].to_string().contains("task.reopen"));
    let task = api
        .get(&format!("/api/v1/tasks/{task_id}"), "alice")
        .await
        .body;
    assert_eq!(task["completed"], true);
    // Undo without streaming.
    let (status, body) = json_call(
        &api,
        "alice",
        json!({"type": "threads.sync_custom_action", "params": {
        "thread_id": thread_id, "item_id": widget_item["id"],
        "action": {"type": "task.reopen", "payload": {"task_id": task_id}}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["updated_item"]["widget"]
            .to_string()
            .contains("task.complete")
    );
    assert_eq!(
        api.get(&format!("/api/v1/tasks/{task_id}"), "alice")
            .await
            .body["completed"],
        false
    );

    // Reload: the thread and its items come back from DynamoDB.
    let (status, thread) = json_call(
        &api,
        "alice",
        json!({"type": "threads.get_by_id", "params": {"thread_id": thread_id}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(thread["title"], "add buy milk due tomorrow");
    assert_eq!(thread["metadata"], json!({}));
    let kinds: Vec<&str> = thread["items"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "user_message",
            "assistant_message",
            "widget",
            "user_message",
            "assistant_message",
            "widget"
        ]
    );
    // The replaced widget was persisted.
    let stored_widget = thread["items"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == widget_item["id"])
        .unwrap();
    assert!(
        stored_widget["widget"]
            .to_string()
            .contains("task.complete")
    );
    // items.list pages in both orders, each item once.
    for order in ["asc", "desc"] {
        let mut ids = Vec::new();
        let mut after = Value::Null;
        loop {
            let (_, page) = json_call(&api, "alice", json!({"type": "items.list", "params": {"thread_id": thread_id, "limit": 2, "order": order, "after": after}})).await;
            ids.extend(
                page["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["id"].as_str().unwrap().to_owned()),
            );
            if page["has_more"] != true {
                assert!(page.get("after").is_none());
                break;
            }
            after = page["after"].clone();
        }
        let mut expected: Vec<String> = thread["items"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!(ids, expected, "{order}");
    }
    let (_, list) = json_call(
        &api,
        "alice",
        json!({"type": "threads.list", "params": {"limit": 10, "order": "desc"}}),
    )
    .await;
    assert_eq!(list["data"][0]["id"], thread_id.as_str());
    assert_eq!(
        list["data"][0]["items"],
        json!({"data": [], "has_more": false})
    );
    let (_, renamed) = json_call(
        &api,
        "alice",
        json!({"type": "threads.update", "params": {"thread_id": thread_id, "title": "Groceries"}}),
    )
    .await;
    assert_eq!(renamed["title"], "Groceries");
    let item_id = thread["items"]["data"][1]["id"].clone();
    let (status, ok) = json_call(&api, "alice", json!({"type": "items.feedback", "params": {"thread_id": thread_id, "item_ids": [item_id], "kind": "positive"}})).await;
    assert_eq!((status, ok), (200, json!({})));
    // The rating is kept (one record per item) and counted as an EMF metric.
    let ratings = api.rows("FEEDBACK#").await;
    assert_eq!(ratings.len(), 1);
    let rating: Value = serde_json::from_str(ratings[0]["data"].as_s().unwrap()).unwrap();
    assert_eq!(
        (&rating["item_id"], &rating["kind"]),
        (&item_id, &json!("positive"))
    );
    let metric = api
        .stack
        .function("chatkit")
        .unwrap()
        .wait_for_log(
            |l| l.contains("\"_aws\"") && l.contains("\"Feedback\""),
            Duration::from_secs(30),
        )
        .await
        .expect("an EMF line for the rating");
    let metric: Value = serde_json::from_str(&metric).unwrap();
    assert_eq!(metric["Kind"], "positive");
    assert_eq!(metric["Feedback"], 1);
    assert_eq!(
        metric["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "TaskPilot"
    );

    // Another user can neither read, list, continue nor delete it.
    let (status, _) = json_call(
        &api,
        "bob",
        json!({"type": "threads.get_by_id", "params": {"thread_id": thread_id}}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, bobs) = json_call(&api, "bob", json!({"type": "threads.list", "params": {}})).await;
    assert_eq!(bobs["data"], json!([]));
    let resp = call(&api, &api.token("bob"), json!({"type": "threads.add_user_message", "params": {"thread_id": thread_id, "input": message("mine now")}})).await;
    assert_eq!(resp.status, 404);
    let (status, _) = json_call(
        &api,
        "bob",
        json!({"type": "threads.delete", "params": {"thread_id": thread_id}}),
    )
    .await;
    assert_eq!(status, 404);
    let resp = call(&api, &api.token("bob"), json!({"type": "threads.custom_action", "params": {"thread_id": thread_id, "item_id": widget_item["id"], "action": {"type": "task.complete", "payload": {"task_id": task_id}}}})).await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        api.get(&format!("/api/v1/tasks/{task_id}"), "alice")
            .await
            .body["completed"],
        false
    );

    // Delete: the thread and its items are gone.
    let (status, _) = json_call(
        &api,
        "alice",
        json!({"type": "threads.delete", "params": {"thread_id": thread_id}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json_call(
            &api,
            "alice",
            json!({"type": "threads.get_by_id", "params": {"thread_id": thread_id}})
        )
        .await
        .0,
        404
    );
    assert!(api.rows(&format!("ITEM#{thread_id}#")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnect_keeps_the_partial_answer_and_retry_replays_from_it() {
    let api = start(&[]).await;
    let s = stub(&api);
    let words: Vec<String> = (0..60).map(|i| format!("word{i}")).collect();
    s.push_turn(Turn::Text(words.join(" ")));
    s.set_chunk_delay(Duration::from_millis(40));
    let mut resp = send(
        &api,
        &api.token("alice"),
        json!({"type": "threads.create", "params": {"input": message("tell me a long story")}}),
    )
    .await;
    let mut seen = String::new();
    while !seen.contains("text_delta") || seen.matches("text_delta").count() < 5 {
        let chunk = resp.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let whole_frames = &seen[..seen.rfind("\n\n").unwrap() + 2];
    chatkit_contract::check_stream(whole_frames).unwrap();
    let thread_id = parse_frames(whole_frames)[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(resp); // the user pressed Stop
    // The function notices, stops the upstream call and keeps what was said.
    let mut items = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, page) = json_call(
            &api,
            "alice",
            json!({"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}),
        )
        .await;
        items = page["data"].as_array().unwrap().clone();
        if items.len() == 2 {
            break;
        }
    }
    assert_eq!(items.len(), 2, "{items:?}");
    let partial = items[1]["content"][0]["text"].as_str().unwrap();
    assert!(partial.starts_with("word0 word1"), "{partial}");
    assert!(partial.len() < words.join(" ").len(), "the answer was cut");
    // The hidden note exists but is never shown.
    // The thread's items (the head, `ITEM#<thread>#~`, holds the thread).
    let mut rows = api.rows(&format!("ITEM#{thread_id}#")).await;
    rows.retain(|r| !r["sk"].as_s().unwrap().ends_with('~'));
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .any(|r| r["data"].as_s().unwrap().contains("sdk_hidden_context"))
    );

    // Retry after the user message: the partial answer goes, a new one streams.
    s.set_chunk_delay(Duration::ZERO);
    s.push_turn(Turn::Text("A short story.".into()));
    let user_item = items[0]["id"].clone();
    let retry = stream(&api, "alice", json!({"type": "threads.retry_after_item", "params": {"thread_id": thread_id, "item_id": user_item}})).await;
    assert_eq!(retry.types()[0], "stream_options");
    let (_, page) = json_call(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}),
    )
    .await;
    let texts: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["content"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, ["tell me a long story", "A short story."]);
    // The model saw the cancellation note and the question.
    let last = s.requests_to("/v1/responses").pop().unwrap();
    assert!(
        last.body["input"]
            .to_string()
            .contains("tell me a long story")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_secrets_are_checked_and_budgeted() {
    let api = start(&[("CHATKIT_MAX_REQUESTS_PER_MINUTE", "3")]).await;
    let minted = api
        .send(
            Method::POST,
            "/api/chatkit/sessions",
            Some("alice"),
            None,
            &[],
        )
        .await;
    let secret = minted.body["client_secret"].as_str().unwrap().to_owned();
    let list = json!({"type": "threads.list", "params": {}});
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    for _ in 0..3 {
        assert_eq!(call(&api, &secret, list.clone()).await.status, 200);
    }
    let limited = call(&api, &secret, list.clone()).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
    // A cancelled session's secret is refused.
    let other = api
        .send(
            Method::POST,
            "/api/chatkit/sessions",
            Some("alice"),
            None,
            &[],
        )
        .await;
    let (id, secret) = (
        other.body["session_id"].as_str().unwrap(),
        other.body["client_secret"].as_str().unwrap(),
    );
    assert_eq!(call(&api, secret, list.clone()).await.status, 200);
    api.post(
        &format!("/api/chatkit/sessions/{id}/cancel"),
        "alice",
        json!(null),
    )
    .await;
    let refused = call(&api, secret, list.clone()).await;
    assert_eq!(refused.status, 401);
    // Expired, forged and foreign secrets too.
    let signing = taskpilot_secrets::Secrets::parse(taskpilot_testkit::stack::STUB_OPENAI_KEY)
        .unwrap()
        .session_signing_key;
    let tokens =
        taskpilot_domain::session::SessionTokens::new(signing.expose().as_bytes()).unwrap();
    let past = taskpilot_domain::session::ChatSession {
        id: id.to_owned(),
        mode: taskpilot_domain::session::SessionMode::SelfHosted,
        status: taskpilot_domain::session::SessionStatus::Active,
        created_at: chrono::Utc::now() - chrono::Duration::hours(2),
        expires_at: chrono::Utc::now() - chrono::Duration::hours(1),
        max_requests_per_minute: 30,
        workflow_id: None,
        secret_hash: None,
    };
    let expired = tokens.sign(&past, &taskpilot_domain::UserId::new("alice").unwrap());
    for bad in [expired.as_str(), "cks_forged.token", "not-a-token"] {
        let resp = call(&api, bad, list.clone()).await;
        assert_eq!(resp.status, 401, "{bad}");
        let body = resp.json();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

/// The limits of docs/api.md: 64 KB for a chat request, checked before the body is
/// parsed (a 100 KB `threads.create` whose text alone would be refused is a
/// 413, not a 400); only a dictation may be larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chat_body_over_64_kb_is_413_before_it_is_parsed() {
    let api = start(&[]).await;
    let bearer = api.token("big-body");
    let huge = json!({
        "type": "threads.create",
        "params": { "input": message(&"x".repeat(100 * 1024)) },
    });
    let answer = Answer::read(
        "threads.create",
        post(&api, &bearer, huge.to_string()).await,
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "payload_too_large");
    let garbled = format!(
        "{{\"type\":\"threads.create\",\"params\":\"{}",
        "x".repeat(100 * 1024)
    );
    let answer = Answer::read("threads.create", post(&api, &bearer, garbled).await).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_type_answers_and_bad_envelopes_are_400() {
    let api = start(&[]).await;
    let cases = [
        ("{", 400, false),
        (r#"{"params":{}}"#, 400, false),
        (r#"{"type":"threads.explode","params":{}}"#, 400, false),
        (r#"{"type":"threads.get_by_id","params":{}}"#, 400, false),
        (
            r#"{"type":"threads.create","params":{"input":{"content":[],"attachments":[]}}}"#,
            400,
            false,
        ),
        (
            r#"{"type":"attachments.create","params":{"name":"a","size":1,"mime_type":"text/plain"}}"#,
            200,
            true,
        ),
        (
            r#"{"type":"attachments.create","params":{"name":"a","size":1,"mime_type":"text/html"}}"#,
            415,
            true,
        ),
        (
            r#"{"type":"attachments.delete","params":{"attachment_id":"atc_nope"}}"#,
            404,
            true,
        ),
        (r#"{"type":"input.transcribe","params":{}}"#, 400, false),
        (
            r#"{"type":"threads.add_structured_input","params":{}}"#,
            400,
            false,
        ),
        (
            r#"{"type":"threads.get_by_id","params":{"thread_id":"thr_nope"}}"#,
            404,
            true,
        ),
        (
            r#"{"type":"threads.add_client_tool_output","params":{"thread_id":"thr_nope","result":{}}}"#,
            404,
            true,
        ),
        (
            r#"{"type":"threads.retry_after_item","params":{"thread_id":"thr_nope","item_id":"msg_1"}}"#,
            404,
            true,
        ),
        (
            r#"{"type":"threads.update","params":{"thread_id":"thr_nope","title":"x"}}"#,
            404,
            true,
        ),
        (
            r#"{"type":"items.list","params":{"thread_id":"thr_nope"}}"#,
            404,
            true,
        ),
        (
            r#"{"type":"items.feedback","params":{"thread_id":"thr_nope","item_ids":[],"kind":"negative"}}"#,
            404,
            true,
        ),
        (r#"{"type":"threads.list","params":{}}"#, 200, true),
    ];
    for (body, status, official) in cases {
        // Whether the official types accept the body: the malformed ones are
        // refused there too; the others are real requests.
        let envelope: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        assert_eq!(
            chatkit_contract::check_request(&envelope).is_ok(),
            official,
            "{body}"
        );
        let resp = api
            .http
            .post(format!("{}{CHATKIT}", api.stack.url))
            .bearer_auth(api.token("alice"))
            .body(body)
            .send()
            .await
            .unwrap();
        let resp = Answer::read(envelope["type"].as_str().unwrap_or_default(), resp).await;
        assert_eq!(resp.status, status, "{body}");
        let json = resp.json();
        if status != 200 {
            assert!(
                json["error"]["code"].is_string() && json["error"]["message"].is_string(),
                "{body}: {json}"
            );
        }
    }
    // Oversized input is a 400 naming the field, never a 500 or a 1 MB model request:
    // a cursor DynamoDB would refuse as a start key, a huge quote, tag or tag data.
    let long = |n: usize| "x".repeat(n);
    let tagged = |id: String, data: Value| {
        json!({"type": "threads.create", "params": {"input": {"content": [
            {"type": "input_text", "text": "see"},
            {"type": "input_tag", "id": id, "text": "@a", "data": data}],
            "attachments": [], "inference_options": {}}}})
    };
    for (envelope, field) in [
        (
            json!({"type": "items.list", "params": {"thread_id": "thr_1", "after": long(2_000)}}),
            "params.after",
        ),
        (
            json!({"type": "threads.list", "params": {"after": long(1_100)}}),
            "params.after",
        ),
        (
            json!({"type": "threads.create", "params": {"input": {"content": [{"type": "input_text", "text": "hi"}],
                   "attachments": [], "inference_options": {}, "quoted_text": long(60_000)}}}),
            "params.input.quoted_text",
        ),
        (tagged(long(30_000), json!({})), "params.input.content"),
        (
            tagged("t1".into(), json!({"blob": long(30_000)})),
            "params.input.content",
        ),
    ] {
        let kind = envelope["type"].as_str().unwrap().to_owned();
        let answer = call(&api, &api.token("alice"), envelope).await;
        assert_eq!(answer.status, 400, "{kind}: {}", answer.text);
        assert_eq!(
            answer.json()["error"]["details"]["parameter"],
            field,
            "{}",
            answer.text
        );
    }
    assert!(stub(&api).requests_to("/v1/responses").is_empty());
    let token = api.token("alice");
    let malformed = json!({"type": "input.transcribe", "params": {}});
    let refused = post(&api, &token, malformed.to_string()).await;
    let body = Answer::read("input.transcribe", refused).await.json();
    assert_eq!(body["error"]["code"], "invalid_parameter");
    assert_eq!(body["error"]["details"]["parameter"], "params.audio_base64");
    // No identity, no chat.
    let anonymous = api
        .http
        .post(format!("{}{CHATKIT}", api.stack.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(Answer::read("", anonymous).await.status, 401);
    // Upstream trouble before the first token becomes an error event the UI can retry.
    for _ in 0..3 {
        stub(&api).push_fault(taskpilot_testkit::openai_stub::Fault::Status {
            status: 500,
            retry_after: None,
        });
    }
    let failed = stream(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("hello")}}),
    )
    .await;
    let error = failed.of_type("error");
    assert_eq!(error.len(), 1);
    assert_eq!(error[0]["allow_retry"], true);
    assert_eq!(failed.status, 200);
    // A stream cut mid-answer keeps the partial text and reports a retryable error.
    stub(&api).push_turn(Turn::Broken("first half then nothing more at all".into()));
    let cut = stream(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("again")}}),
    )
    .await;
    assert_eq!(cut.of_type("error")[0]["allow_retry"], true);
    let kept = cut
        .of_type("thread.item.done")
        .into_iter()
        .find(|e| e["item"]["type"] == "assistant_message")
        .unwrap();
    assert_eq!(kept["item"]["content"][0]["text"], "first half then ");
    // What is stored is what the client was told: the message, the half answer.
    let thread = cut.events[0]["thread"]["id"].clone();
    let (status, page) = json_call(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}}),
    )
    .await;
    assert_eq!(status, 200);
    let stored: Vec<&Value> = page["data"].as_array().unwrap().iter().collect();
    assert_eq!(stored.len(), 2, "{page}");
    assert_eq!(stored[1], &kept["item"]);
}

/// Where the reference SDK defines the answer, the endpoint gives the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misuse_the_reference_answers_with_a_stream_gets_the_same_stream() {
    let api = start(&[]).await;
    stub(&api).push_turn(Turn::Text("Hello.".into()));
    let first = stream(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("hi")}}),
    )
    .await;
    let thread_id = first.events[0]["thread"]["id"].as_str().unwrap().to_owned();
    let user_item = first.events[1]["item"]["id"].as_str().unwrap().to_owned();
    // A widget action naming an item that is not a widget: one error event.
    let refused = stream(
        &api,
        "alice",
        json!({"type": "threads.custom_action", "params": {"thread_id": thread_id,
               "item_id": user_item, "action": {"type": "task.complete", "payload": {}}}}),
    )
    .await;
    assert_eq!(
        refused.events,
        [json!({"type": "error", "code": "stream.error", "allow_retry": false})]
    );
    // A retry after an unknown item: an empty stream, nothing changes.
    let empty = call(
        &api,
        &api.token("alice"),
        json!({"type": "threads.retry_after_item", "params": {"thread_id": thread_id,
               "item_id": "msg_01kbzzzzzzzzzzzzzzzzzzzzzz"}}),
    )
    .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.headers["content-type"], "text/event-stream");
    assert_eq!(empty.text, "");
    // A zero limit is the default page.
    let (status, items) = json_call(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread_id, "limit": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"].as_array().unwrap().len(), 2);
    let (status, threads) = json_call(
        &api,
        "alice",
        json!({"type": "threads.list", "params": {"limit": 0}}),
    )
    .await;
    assert_eq!(
        (status, threads["data"].as_array().unwrap().len()),
        (200, 1)
    );
}

/// Posts a ChatKit request with extra headers and reads the checked answer.
async fn call_with(api: &Api, user: &str, envelope: Value, headers: &[(&str, &str)]) -> Answer {
    if let Err(e) = chatkit_contract::check_request(&envelope) {
        panic!("not a ChatKit request: {envelope}\n  {e}");
    }
    let mut req = api
        .http
        .post(format!("{}{CHATKIT}", api.stack.url))
        .bearer_auth(api.token(user))
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let kind = envelope["type"].as_str().unwrap_or_default().to_owned();
    Answer::read(&kind, req.body(envelope.to_string()).send().await.unwrap()).await
}

/// The date in `zone` now, read before and after `during` so a test that
/// straddles midnight there can accept either day.
/// The per-turn context of a Responses request: its developer message,
/// after the conversation (the instructions stay the same for everyone).
fn developer_context(body: &Value) -> String {
    let input = body["input"].as_array().unwrap();
    let notes: Vec<&str> = input
        .iter()
        .filter(|i| i["role"] == "developer")
        .filter_map(|i| i["content"].as_str())
        .collect();
    assert_eq!(notes.len(), 1, "one context message: {input:?}");
    assert!(!body["instructions"].as_str().unwrap().contains("Context"));
    notes[0].to_owned()
}

fn days_in(zone: taskpilot_chatkit::zone::Zone) -> impl Fn() -> chrono::NaiveDate {
    move || chrono::Utc::now().with_timezone(&zone).date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_users_time_zone_and_language_reach_the_model_and_the_tools() {
    let api = start(&[]).await;
    let s = stub(&api);
    let kiritimati = days_in(taskpilot_chatkit::zone::Zone::named("Pacific/Kiritimati").unwrap());

    // The header's zone: "tomorrow" is Kiritimati's tomorrow (UTC+14).
    s.push_turn(Turn::Calls(vec![(
        "create_task".into(),
        json!({"title": "Buy milk", "due_date": "tomorrow"}),
    )]));
    s.push_turn(Turn::Text("Added.".into()));
    let before = kiritimati();
    let answer = call_with(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("buy milk tomorrow")}}),
        &[
            ("x-timezone", "Pacific/Kiritimati"),
            ("accept-language", "fr-FR,fr;q=0.9,en;q=0.5"),
        ],
    )
    .await;
    let after = kiritimati();
    assert_eq!(answer.status, 200, "{}", answer.text);
    let seen = s.requests_to("/v1/responses");
    assert_eq!(seen.len(), 2);
    for request in &seen {
        let instructions = &developer_context(&request.body);
        assert!(
            instructions.contains("time zone Pacific/Kiritimati (UTC+14:00)"),
            "{instructions}"
        );
        assert!(instructions.contains("language: fr-FR"), "{instructions}");
        assert!(
            [before, after]
                .iter()
                .any(|d| instructions.contains(&format!("Today: {d}."))),
            "{instructions}"
        );
    }
    let tasks = api.get("/api/v1/tasks", "alice").await.body;
    let due = tasks["tasks"][0]["due_date"].as_str().unwrap().to_owned();
    assert!(
        [before, after]
            .iter()
            .any(|d| due == d.succ_opt().unwrap().to_string()),
        "{due} is not tomorrow in Kiritimati ({before})"
    );

    // The envelope's zone wins over the header's.
    s.push_turn(Turn::Text("Hello.".into()));
    let answer = call_with(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("hi")},
               "metadata": {"timezone": "America/Adak"}}),
        &[("x-timezone", "Pacific/Kiritimati")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let last = s.requests_to("/v1/responses").pop().unwrap();
    let instructions = &developer_context(&last.body);
    assert!(
        instructions.contains("time zone America/Adak"),
        "{instructions}"
    );
    assert!(!instructions.contains("language:"), "{instructions}");

    // A name that is not an IANA zone is a 400 naming where it came from.
    for (envelope, headers, parameter) in [
        (
            json!({"type": "threads.list", "params": {}, "metadata": {"timezone": "Mars/Olympus"}}),
            vec![],
            "metadata.timezone",
        ),
        (
            json!({"type": "threads.list", "params": {}}),
            vec![("x-timezone", "UTC+3")],
            "X-Timezone",
        ),
    ] {
        let answer = call_with(&api, "alice", envelope, &headers).await;
        assert_eq!(answer.status, 400, "{}", answer.text);
        let body = answer.json();
        assert_eq!(body["error"]["code"], "invalid_parameter");
        assert_eq!(body["error"]["details"]["parameter"], parameter, "{body}");
    }
}

/// A streamed request with the user's time zone; its events.
async fn said(api: &Api, envelope: Value) -> Vec<Value> {
    let answer = call_with(
        api,
        "alice",
        envelope,
        &[("x-timezone", "Pacific/Kiritimati")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    parse_frames(&answer.text)
}

fn answer_text(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message")
        .map(|e| e["item"]["content"][0]["text"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn effect(events: &[Value]) -> Value {
    let effects: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "client_effect")
        .collect();
    assert_eq!(effects.len(), 1, "{events:?}");
    assert_eq!(effects[0]["name"], "tasks.changed");
    effects[0]["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_stub_model_walks_every_assistant_path() {
    let api = start(&[]).await;
    let kiritimati = days_in(taskpilot_chatkit::zone::Zone::named("Pacific/Kiritimati").unwrap());

    // It knows the day, on the user's calendar.
    let events = said(
        &api,
        json!({"type": "threads.create", "params": {"input": message("what day is it?")}}),
    )
    .await;
    let thread = events[0]["thread"]["id"].as_str().unwrap().to_owned();
    let text = answer_text(&events);
    assert!(
        text.contains("time zone Pacific/Kiritimati (UTC+14:00)"),
        "{text}"
    );
    let add = |text: &str| json!({"type": "threads.add_user_message", "params": {"thread_id": thread, "input": message(text)}});

    // "tomorrow" is the user's tomorrow; the page hears of the new task.
    let before = kiritimati();
    let events = said(&api, add("add buy milk tomorrow")).await;
    let after = kiritimati();
    let listed = api.get("/api/v1/tasks", "alice").await.body["tasks"].clone();
    let milk = listed[0].clone();
    assert_eq!(milk["title"], "buy milk");
    assert!(
        [before, after]
            .iter()
            .any(|d| milk["due_date"] == d.succ_opt().unwrap().to_string()),
        "{milk}"
    );
    assert_eq!(effect(&events)["created"], json!([milk["id"]]));
    assert!(answer_text(&events).starts_with("Added “buy milk”, due "));

    // Two tasks match "milk": it asks, and the answer completes the chosen one.
    said(&api, add("add buy oat milk")).await;
    let events = said(&api, add("complete milk")).await;
    let question = events
        .iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "structured_input")
        .expect("a question")["item"]
        .clone();
    assert_eq!(
        question["inputs"][0]["options"],
        json!([{"value": "buy oat milk"}, {"value": "buy milk"}])
    );
    assert!(!events.iter().any(|e| e["type"] == "client_effect"));
    let events = said(
        &api,
        json!({"type": "threads.add_structured_input", "params": {"thread_id": thread,
               "item_id": question["id"], "input": {"answers": {"task": {"values": ["buy milk"]}}}}}),
    )
    .await;
    assert_eq!(events[1]["type"], "thread.item.replaced");
    assert_eq!(events[1]["item"]["status"], "answered");
    assert_eq!(effect(&events)["updated"], json!([milk["id"]]));
    assert_eq!(answer_text(&events), "Done: “buy milk” is complete.");
    let milk_now = task_of(&api, "alice", &milk).await.body;
    assert_eq!(milk_now["completed"], true);
    // Another user cannot answer it: the thread is not theirs.
    let pick = json!({"type": "threads.add_structured_input", "params": {"thread_id": thread,
                      "item_id": question["id"], "input": {"answers": {"task": {"values": ["buy oat milk"]}}}}});
    let bobs = call_with(&api, "bob", pick, &[]).await;
    assert_eq!(bobs.status, 404, "{}", bobs.text);
    // The same question cannot be answered twice.
    let again = call_with(
        &api,
        "alice",
        json!({"type": "threads.add_structured_input", "params": {"thread_id": thread,
               "item_id": question["id"], "input": {"status": "skipped"}}}),
        &[],
    )
    .await;
    assert_eq!(again.status, 400, "{}", again.text);

    // Rename, reopen and delete by name.
    let events = said(&api, add("rename buy oat milk to buy almond milk")).await;
    assert_eq!(answer_text(&events), "Updated “buy almond milk”.");
    let almond = effect(&events)["updated"][0].clone();
    let events = said(&api, add("reopen buy milk")).await;
    assert_eq!(answer_text(&events), "“buy milk” is open again.");
    let events = said(&api, add("delete buy almond milk")).await;
    assert_eq!(effect(&events)["deleted"], json!([almond]));
    assert_eq!(answer_text(&events), "Deleted.");

    // A mention gives the model the task's current fields.
    let events = said(
        &api,
        json!({"type": "threads.add_user_message", "params": {"thread_id": thread, "input": {
            "content": [{"type": "input_text", "text": "how is"},
                        {"type": "input_tag", "id": milk["id"], "text": "@buy milk",
                         "data": {"task_id": milk["id"]}, "interactive": false}],
            "attachments": [], "inference_options": {}}}}),
    )
    .await;
    assert_eq!(answer_text(&events), "“buy milk” is open.");
    let left: Vec<String> = api.get("/api/v1/tasks", "alice").await.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["buy milk"]);
}

/// Streams `threads.create` and, once the answer has started, sends `meddle`
/// for the new thread; returns the thread id and the whole stream.
async fn meddle_mid_answer(api: &Api, meddle: impl Fn(&str) -> Value) -> (String, String) {
    let s = stub(api);
    let words: Vec<String> = (0..30).map(|i| format!("word{i}")).collect();
    s.push_turn(Turn::Text(words.join(" ")));
    s.set_chunk_delay(Duration::from_millis(40));
    let mut resp = send(
        api,
        &api.token("alice"),
        json!({"type": "threads.create", "params": {"input": message("tell me a story")}}),
    )
    .await;
    let mut seen = String::new();
    while !seen.contains("thread.item.updated") {
        let chunk = resp.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let thread = parse_frames(&seen[..seen.rfind("\n\n").unwrap() + 2])[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = call(api, &api.token("alice"), meddle(&thread)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    s.set_chunk_delay(Duration::ZERO);
    (thread, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thread_deleted_or_renamed_mid_answer_stays_as_the_user_left_it() {
    let api = start(&[]).await;
    // Deleted during its first answer: it stays deleted, nothing of it remains.
    let (thread, stream) = meddle_mid_answer(
        &api,
        |t| json!({"type": "threads.delete", "params": {"thread_id": t}}),
    )
    .await;
    let events = parse_frames(&stream);
    assert!(!events.iter().any(|e| e["type"] == "error"), "{events:?}");
    let (status, _) = json_call(
        &api,
        "alice",
        json!({"type": "threads.get_by_id", "params": {"thread_id": thread}}),
    )
    .await;
    assert_eq!(status, 404);
    assert!(api.rows(&format!("ITEM#{thread}#")).await.is_empty());
    assert!(api.rows(&format!("THREAD#{thread}")).await.is_empty());
    // Renamed during its first answer: the rename stands.
    let (thread, stream) = meddle_mid_answer(
        &api,
        |t| json!({"type": "threads.update", "params": {"thread_id": t, "title": "Mine"}}),
    )
    .await;
    assert!(
        !parse_frames(&stream)
            .iter()
            .any(|e| e["type"] == "thread.updated")
    );
    let (_, got) = json_call(
        &api,
        "alice",
        json!({"type": "threads.get_by_id", "params": {"thread_id": thread}}),
    )
    .await;
    assert_eq!(got["title"], "Mine");
    assert_eq!(got["items"]["data"].as_array().unwrap().len(), 2, "{got}");
}

fn choosing(text: &str, model: Value, tool: Value) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {"tool_choice": tool, "model": model}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_picker_and_the_tool_menu_choose_the_model_and_the_first_tool() {
    let api = start(&[("CHATKIT_MODELS", "gpt-4.1, o4-mini")]).await;
    // A reasoning model with "Add a task": the stub refuses a temperature for
    // it, as the Responses API does, and makes the forced call.
    let first = stream(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input":
            choosing("buy oat milk", json!("o4-mini"), json!({"id": "add_task"}))}}),
    )
    .await;
    assert!(first.of_type("error").is_empty(), "{:?}", first.events);
    let tasks = api.get("/api/v1/tasks", "alice").await;
    assert_eq!(tasks.body["tasks"][0]["title"], "buy oat milk");
    let requests = stub(&api).requests_to("/v1/responses");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body["model"], "o4-mini");
    assert!(requests[0].body.get("temperature").is_none());
    assert_eq!(
        requests[0].body["tool_choice"],
        json!({"type": "function", "name": "create_task"})
    );
    assert_eq!(requests[1].body["model"], "o4-mini");
    assert!(requests[1].body.get("tool_choice").is_none());
    // No choice: the default model, with its temperature.
    let thread = first.events[0]["thread"]["id"].as_str().unwrap();
    stream(
        &api,
        "alice",
        json!({"type": "threads.add_user_message",
               "params": {"thread_id": thread, "input": message("what day is it?")}}),
    )
    .await;
    let last = stub(&api).requests_to("/v1/responses").pop().unwrap();
    assert_eq!(
        (&last.body["model"], &last.body["temperature"]),
        (&json!("gpt-4.1"), &json!(0.7))
    );

    // Off the lists: 400 naming what is offered, and nothing is stored.
    for (model, tool, named) in [
        (
            json!("gpt-4o"),
            Value::Null,
            "choose one of: gpt-4.1, o4-mini",
        ),
        (
            Value::Null,
            json!({"id": "search"}),
            "the tool menu offers: add_task, complete_task, plan_day",
        ),
    ] {
        let (status, body) = json_call(
            &api,
            "alice",
            json!({"type": "threads.create", "params": {"input": choosing("hi", model, tool)}}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_parameter");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
    }
    let (_, threads) =
        json_call(&api, "alice", json!({"type": "threads.list", "params": {}})).await;
    assert_eq!(threads["data"].as_array().unwrap().len(), 1);
    assert_eq!(stub(&api).requests_to("/v1/responses").len(), 3);
}

/// `GET /api/v1/tasks/{id}` of `task` (a REST answer) as `user`.
async fn task_of(api: &Api, user: &str, task: &Value) -> crate::common::Reply {
    let id = task["id"].as_str().unwrap();
    api.get(&format!("/api/v1/tasks/{id}"), user).await
}

/// A new thread where `user` asks the stub what is left: it lists the tasks.
async fn whats_left(api: &Api, user: &str) -> Sse {
    stream(
        api,
        user,
        json!({"type": "threads.create", "params": {"input": message("what's left?")}}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_an_answer_names_are_entities_the_page_can_open() {
    let api = start(&[]).await;
    let rent = api.create("alice", json!({"title": "pay rent"})).await;
    let milk = api.create("alice", json!({"title": "buy milk"})).await;
    let listed = whats_left(&api, "alice").await;
    let done = listed
        .of_type("thread.item.done")
        .into_iter()
        .find(|e| e["item"]["type"] == "assistant_message")
        .unwrap()
        .clone();
    let text = done["item"]["content"][0]["text"].as_str().unwrap();
    let annotations = done["item"]["content"][0]["annotations"]
        .as_array()
        .unwrap();
    let named: Vec<(&str, usize)> = annotations
        .iter()
        .map(|a| {
            assert_eq!(a["source"]["type"], "entity");
            assert_eq!(a["source"]["interactive"], true);
            assert_eq!(a["source"]["data"]["task_id"], a["source"]["id"]);
            (
                a["source"]["title"].as_str().unwrap(),
                a["index"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(named.len(), 2, "{text}");
    for (title, at) in &named {
        assert!(text[..*at].ends_with(title), "{text} / {title} at {at}");
    }
    let ids: Vec<&Value> = annotations.iter().map(|a| &a["source"]["id"]).collect();
    assert!(ids.contains(&&rent["id"]) && ids.contains(&&milk["id"]));
    assert_eq!(
        listed
            .events
            .iter()
            .filter(|e| e["update"]["type"] == "assistant_message.content_part.annotation_added")
            .count(),
        2
    );
    // A reload shows them; the preview the page asks for is the task's REST answer.
    let thread = listed.events[0]["thread"]["id"].as_str().unwrap();
    let (status, page) = json_call(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}}),
    )
    .await;
    assert_eq!(status, 200);
    let reloaded = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "assistant_message")
        .unwrap();
    assert_eq!(
        reloaded["content"][0]["annotations"].as_array().unwrap(),
        annotations
    );
    let id = annotations[0]["source"]["data"]["task_id"]
        .as_str()
        .unwrap();
    let preview = api.get(&format!("/api/v1/tasks/{id}"), "alice").await;
    assert_eq!(preview.status, 200);
    assert_eq!(preview.body["title"], annotations[0]["source"]["title"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_show_task_client_tool_round_trips_through_the_page() {
    let api = start(&[]).await;
    let milk = api.create("alice", json!({"title": "buy milk"})).await;
    let first = stream(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": {
            "content": [{"type": "input_text", "text": "show"},
                        {"type": "input_tag", "id": milk["id"], "text": "@buy milk",
                         "data": {"task_id": milk["id"]}, "interactive": false}],
            "attachments": [], "inference_options": {}}}}),
    )
    .await;
    let call = first
        .of_type("thread.item.done")
        .into_iter()
        .find(|e| e["item"]["type"] == "client_tool_call")
        .unwrap_or_else(|| panic!("{:?}", first.events))
        .clone();
    assert_eq!(call["item"]["name"], "show_task");
    assert_eq!(call["item"]["status"], "pending");
    assert_eq!(call["item"]["arguments"]["task_id"], milk["id"]);
    assert!(first.of_type("error").is_empty());
    // The page's onClientTool answer.
    let thread = first.events[0]["thread"]["id"].as_str().unwrap();
    let next = stream(
        &api,
        "alice",
        json!({"type": "threads.add_client_tool_output",
               "params": {"thread_id": thread, "result": {"shown": true}}}),
    )
    .await;
    assert_eq!(next.types()[0], "stream_options");
    assert_eq!(
        answer_text(&next.events),
        "There it is, highlighted in your list."
    );
    // The model was given the call and the page's output.
    let last = stub(&api).requests_to("/v1/responses").pop().unwrap();
    // The conversation, less the per-turn context that follows it.
    let input: Vec<&Value> = last.body["input"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["role"] != "developer")
        .collect();
    let n = input.len();
    assert_eq!(input[n - 2]["type"], "function_call");
    assert_eq!(input[n - 2]["name"], "show_task");
    assert_eq!(
        *input[n - 1],
        json!({"type": "function_call_output", "call_id": input[n - 2]["call_id"],
               "output": "{\"shown\":true}"})
    );
    // Stored as answered: a reload shows the completed call.
    let (_, page) = json_call(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}}),
    )
    .await;
    let stored = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "client_tool_call")
        .unwrap();
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["output"], json!({"shown": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_task_list_widget_renames_sets_the_due_day_and_deletes_after_asking() {
    let api = start(&[]).await;
    let milk = api.create("alice", json!({"title": "buy milk"})).await;
    let bobs = api.create("bob", json!({"title": "bob's"})).await;
    let listed = whats_left(&api, "alice").await;
    let thread = listed.events[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let widget = listed
        .of_type("thread.item.done")
        .into_iter()
        .find(|e| e["item"]["type"] == "widget")
        .unwrap()["item"]["id"]
        .clone();
    let act = |kind: &str, payload: Value| {
        json!({"type": "threads.custom_action", "params": {"thread_id": thread,
               "item_id": widget, "action": {"type": kind, "payload": payload}}})
    };
    let replaced = |sse: &Sse| sse.of_type("thread.item.replaced")[0]["item"]["widget"].clone();

    let edit = stream(
        &api,
        "alice",
        act("task.edit", json!({"task_id": milk["id"]})),
    )
    .await;
    assert_eq!(
        replaced(&edit)["children"][2]["children"][0]["type"],
        "Form"
    );
    let save = stream(
        &api,
        "alice",
        act(
            "task.save",
            json!({"task_id": milk["id"], "title": "buy oat milk", "due_date": "2026-12-24"}),
        ),
    )
    .await;
    assert!(replaced(&save).to_string().contains("buy oat milk"));
    assert_eq!(
        save.of_type("client_effect")[0]["data"]["updated"],
        json!([milk["id"]])
    );
    let now = task_of(&api, "alice", &milk).await;
    assert_eq!(
        (&now.body["title"], &now.body["due_date"]),
        (&json!("buy oat milk"), &json!("2026-12-24"))
    );

    // Bob's task through Alice's widget: an error, and Bob's task unchanged.
    for (kind, payload) in [
        (
            "task.save",
            json!({"task_id": bobs["id"], "title": "pwned"}),
        ),
        ("task.delete", json!({"task_id": bobs["id"]})),
    ] {
        let refused = stream(&api, "alice", act(kind, payload)).await;
        assert_eq!(refused.of_type("error").len(), 1, "{kind}");
    }
    let theirs = task_of(&api, "bob", &bobs).await;
    assert_eq!(theirs.body["title"], "bob's");

    let ask = stream(
        &api,
        "alice",
        act("task.delete.ask", json!({"task_id": milk["id"]})),
    )
    .await;
    assert!(
        replaced(&ask)
            .to_string()
            .contains("Delete “buy oat milk”?")
    );
    let gone = stream(
        &api,
        "alice",
        act("task.delete", json!({"task_id": milk["id"]})),
    )
    .await;
    assert_eq!(
        gone.of_type("client_effect")[0]["data"]["deleted"],
        json!([milk["id"]])
    );
    let after = task_of(&api, "alice", &milk).await;
    assert_eq!(after.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_threads_next_turn_reuses_its_prompt_prefix_and_the_cached_tokens_are_counted() {
    let api = start(&[]).await;
    let first = stream(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("what day is it?")}}),
    )
    .await;
    let thread = first.events[0]["thread"]["id"].as_str().unwrap();
    let before = api.get("/api/v1/chatkit/usage", "alice").await.body;
    assert_eq!(before["today"]["cached_input_tokens"], 0, "{before}");
    stream(
        &api,
        "alice",
        json!({"type": "threads.add_user_message",
               "params": {"thread_id": thread, "input": message("and the time?")}}),
    )
    .await;
    let requests = stub(&api).requests_to("/v1/responses");
    let (one, two) = (&requests[0].body, &requests[1].body);
    assert_eq!(one["prompt_cache_key"], thread);
    assert_eq!(two["prompt_cache_key"], thread);
    // Turn 2 starts with turn 1's request less its context (the last item).
    let sent = one["input"].as_array().unwrap();
    let again = two["input"].as_array().unwrap();
    assert_eq!(sent.last().unwrap()["role"], "developer");
    assert_eq!(again[..sent.len() - 1], sent[..sent.len() - 1]);
    assert_eq!(
        (&one["instructions"], &one["tools"]),
        (&two["instructions"], &two["tools"])
    );
    // The stub caches that prefix as OpenAI does; the day counts it.
    let after = api.get("/api/v1/chatkit/usage", "alice").await.body;
    let cached = after["today"]["cached_input_tokens"].as_u64().unwrap();
    assert!(cached >= 1_024 && cached % 128 == 0, "{after}");
    assert!(cached < after["today"]["input_tokens"].as_u64().unwrap());
}

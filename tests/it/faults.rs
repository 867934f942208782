//! Faults with the stack running: DynamoDB cut off in the middle of a stream
//! of writes and reachable again; Secrets Manager (moto, behind a fault
//! proxy) and the OpenAI stub failing, hanging and answering garbage. Every
//! request answers within its deadline with a clear 5xx in the error envelope,
//! nothing is half-written, and the next request after recovery succeeds with
//! the same processes.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Api, Reply, chatkit};
use emulators::dynamodb_local::DynamoDbLocal;
use emulators::outage::Switch;
use emulators::proxy::ProxyFault;
use reqwest::Method;
use serde_json::{Value, json};
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::openai_stub::Fault;
use taskpilot_testkit::stack::StackOptions;

const TASKS: &str = "/api/v1/tasks";
const SESSIONS: &str = "/api/chatkit/sessions";
const CHATKIT: &str = "/api/v1/chatkit";

/// One create of the write stream.
struct Write {
    key: String,
    title: String,
    reply: Reply,
    started: Instant,
    took: Duration,
}

async fn create(api: &Api, user: &str, key: &str, title: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = api
        .send(
            Method::POST,
            TASKS,
            Some(user),
            Some(json!({ "title": title })),
            &[("idempotency-key", key)],
        )
        .await;
    (reply, started.elapsed())
}

/// A 503 the function itself gave, in time, telling the client to retry.
fn assert_retryable_503(reply: &Reply, code: &str, took: Duration, deadline: Duration) {
    assert_eq!(
        (reply.status.as_u16(), reply.code()),
        (503, code),
        "{:?}",
        reply.body
    );
    assert!(
        reply.headers.contains_key("retry-after"),
        "no Retry-After: {:?}",
        reply.headers
    );
    assert!(
        took < deadline,
        "answered after {took:?}, deadline {deadline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_stopped_mid_stream_loses_and_duplicates_nothing() {
    let ddb = tokio::task::spawn_blocking(DynamoDbLocal::shared)
        .await
        .unwrap()
        .unwrap();
    let line = Switch::start(&ddb.endpoint).await.unwrap();
    let api = Arc::new(
        Api::start_with(StackOptions {
            functions: Some(vec!["tasks".into()]),
            dynamodb_endpoint: Some(line.endpoint.clone()),
            max_instances: 2,
            ..StackOptions::default()
        })
        .await,
    );
    let function = api.stack.function("tasks").unwrap();
    let deadline = function.config().timeout;

    // Two writers create tasks back to back until told to stop, counting
    // what was created and what failed.
    let done = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let created = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (api, done, counter) = (api.clone(), done.clone(), counter.clone());
        let (created, refused) = (created.clone(), refused.clone());
        writers.push(tokio::spawn(async move {
            let mut writes = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let key = format!("fault-{n:05}-{}", ulid::Ulid::new());
                let title = format!("write {n}");
                let started = Instant::now();
                let (reply, took) = create(&api, "writer", &key, &title).await;
                match reply.status.as_u16() {
                    201 => created.fetch_add(1, Ordering::SeqCst),
                    _ => refused.fetch_add(1, Ordering::SeqCst),
                };
                writes.push(Write {
                    key,
                    title,
                    reply,
                    started,
                    took,
                });
            }
            writes
        }));
    }
    // Each phase lasts until the writers have seen it, within a generous bound.
    let reached = |count: &Arc<AtomicUsize>, at_least: usize, what: &str| {
        let (count, what) = (count.clone(), what.to_owned());
        async move {
            let waited = tokio::time::timeout(Duration::from_secs(120), async {
                while count.load(Ordering::SeqCst) < at_least {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(waited.is_ok(), "never reached {at_least} {what}");
        }
    };
    reached(&created, 30, "writes before the outage").await;
    let before_stop = counter.load(Ordering::SeqCst);
    line.cut();
    reached(&refused, 4, "refused writes during the outage").await;
    line.restore().await.unwrap();
    let restored = Instant::now();
    let after = created.load(Ordering::SeqCst) + 20;
    reached(&created, after, "writes after the outage").await;
    done.store(true, Ordering::SeqCst);
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.unwrap());
    }
    let by_status = writes.iter().fold(BTreeMap::new(), |mut m, w| {
        *m.entry(w.reply.status.as_u16()).or_insert(0) += 1;
        m
    });
    println!(
        "{} writes ({before_stop} before the outage): {by_status:?}",
        writes.len()
    );

    // Each answer: created, or the function's own 503 in time.
    for w in &writes {
        match w.reply.status.as_u16() {
            201 => assert!(w.took < deadline),
            _ => assert_retryable_503(&w.reply, "service_unavailable", w.took, deadline),
        }
    }
    let failed: Vec<&Write> = writes.iter().filter(|w| w.reply.status != 201).collect();
    assert!(!failed.is_empty(), "the outage was not seen: {by_status:?}");
    let later: Vec<&Write> = writes.iter().filter(|w| w.started > restored).collect();
    assert!(later.len() >= 20, "{} writes after the outage", later.len());
    for w in later {
        assert_eq!(
            w.reply.status, 201,
            "a write after the outage: {}",
            w.reply.body
        );
    }

    // The client retries what failed, with the same key: one task each.
    for w in &failed {
        let (retry, _) = create(&api, "writer", &w.key, &w.title).await;
        assert_eq!(retry.status, 201, "{:?}", retry.body);
        assert_eq!(retry.body["title"], w.title.as_str());
    }
    // The table: one task and one completed idempotency record per key, no
    // more; every created id is there with its own title.
    let tasks = api.rows("TASK#").await;
    let records = api.rows("IDEMPOTENCY#TASK#").await;
    let stored_titles: BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t.get("title").and_then(|v| v.as_s().ok()))
        .map(String::as_str)
        .collect();
    let record_keys: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.get("sk").and_then(|v| v.as_s().ok()))
        .map(String::as_str)
        .collect();
    for w in writes
        .iter()
        .filter(|w| !stored_titles.contains(w.title.as_str()))
    {
        let record = record_keys.iter().any(|k| k.ends_with(w.key.as_str()));
        println!(
            "missing task {:?}: first answer {} after {:?} {}, record stored: {record}",
            w.title, w.reply.status, w.took, w.reply.body
        );
    }
    assert_eq!(tasks.len(), writes.len(), "one task per write");
    assert_eq!(records.len(), writes.len(), "one record per key");
    let titles: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["title"].as_s().unwrap().clone())
        .collect();
    assert_eq!(titles.len(), writes.len(), "no duplicates");
    for w in writes.iter().filter(|w| w.reply.status == 201) {
        assert!(titles.contains(&w.title));
    }
    // Still the same processes: nothing was restarted to recover.
    assert!(function.pids().len() <= 2, "{:?}", function.pids());
    assert_eq!(api.stack.responses.by_status().get(&500), None);
}

fn message(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {"tool_choice": null, "model": null}})
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Every item of a thread, through the protocol.
async fn items(api: &Api, user: &str, thread: &str) -> Vec<Value> {
    let (status, _, body, _) = chatkit(
        api,
        user,
        json!({"type": "items.list", "params": {"thread_id": thread, "limit": 100, "order": "asc"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_manager_failing_hanging_or_garbled_answers_503_then_recovers() {
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["sessions".into(), "chatkit".into()]),
        max_instances: 1,
        ..StackOptions::default()
    })
    .await;
    let secrets = api.stack.secrets.as_ref().unwrap();
    let sessions = api.stack.function("sessions").unwrap();
    let chatkit_fn = api.stack.function("chatkit").unwrap();
    let faults = [
        ProxyFault::Status(500),
        ProxyFault::Hang,
        ProxyFault::Garbage,
    ];
    for fault in faults {
        secrets.proxy.set_fault(fault.clone());
        // Sessions: the key signs client secrets, so no key, no session.
        let started = Instant::now();
        let r = api
            .send(Method::POST, SESSIONS, Some("alice"), None, &[])
            .await;
        assert_retryable_503(
            &r,
            "secret_unavailable",
            started.elapsed(),
            sessions.config().timeout,
        );
        // ChatKit: refused before anything is stored.
        let (status, events, body, took) = chatkit(
            &api,
            "alice",
            json!({"type": "threads.create", "params": {"input": message("add milk")}}),
        )
        .await;
        println!("{fault:?}: chatkit {status} {body} {events:?} in {took:?}");
        assert!(took < chatkit_fn.config().timeout);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("secret_unavailable")),
            "{events:?}"
        );
    }
    // Nothing was stored for the refused requests.
    assert!(api.rows("SESSION#").await.is_empty());
    assert!(api.rows("THREAD#").await.is_empty());

    // Secrets Manager is back: the same processes serve again.
    secrets.proxy.set_fault(ProxyFault::None);
    let r = api
        .send(Method::POST, SESSIONS, Some("alice"), None, &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (status, events, _, _) = chatkit(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("add milk")}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(of_type(&events, "error").is_empty(), "{events:?}");
    assert_eq!(sessions.pids().len(), 1);
    assert_eq!(chatkit_fn.pids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_failing_hanging_or_garbled_mid_chat_keeps_threads_whole() {
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["tasks".into(), "chatkit".into()]),
        max_instances: 1,
        env: vec![("OPENAI_TIMEOUT_MS".into(), "2000".into())],
        ..StackOptions::default()
    })
    .await;
    let stub = api.stack.openai.as_ref().unwrap();
    let chatkit_fn = api.stack.function("chatkit").unwrap();
    let (status, events, _, _) = chatkit(
        &api,
        "alice",
        json!({"type": "threads.create", "params": {"input": message("hello")}}),
    )
    .await;
    assert_eq!(status, 200);
    let thread = of_type(&events, "thread.created")[0]["thread"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut whole = items(&api, "alice", &thread).await.len();

    let faults: [(&str, Vec<Fault>); 4] = [
        (
            "500 three times",
            vec![
                Fault::Status {
                    status: 500,
                    retry_after: None,
                };
                3
            ],
        ),
        (
            "429",
            vec![Fault::Status {
                status: 429,
                retry_after: Some(3),
            }],
        ),
        ("hang", vec![Fault::Slow(Duration::from_secs(30))]),
        ("garbage", vec![Fault::Garbage]),
    ];
    for (name, scripted) in faults {
        for f in scripted {
            stub.push_fault(f);
        }
        let (status, events, body, took) = chatkit(
            &api,
            "alice",
            json!({"type": "threads.add_user_message",
                   "params": {"thread_id": thread, "input": message("add bread")}}),
        )
        .await;
        println!("{name}: {status} {body} {:?} in {took:?}", events.last());
        assert!(
            took < Duration::from_secs(6),
            "{name}: answered after {took:?}"
        );
        // The stream had started: the failure is its retryable last event.
        assert_eq!(status, 200, "{name}: {body}");
        let errors = of_type(&events, "error");
        assert_eq!(errors.len(), 1, "{name}: {events:?}");
        assert_eq!(errors[0]["allow_retry"], true, "{name}");
        assert_eq!(events.last().unwrap()["type"], "error", "{name}");
        // Stored: the user's message, and no half assistant answer.
        let now = items(&api, "alice", &thread).await;
        let added: Vec<&str> = now[whole..]
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(added, ["user_message"], "{name}: {now:?}");
        // Retrying the turn after recovery answers it in the same thread.
        let user_item = now.last().unwrap()["id"].as_str().unwrap().to_owned();
        let (status, events, _, _) = chatkit(
            &api,
            "alice",
            json!({"type": "threads.retry_after_item",
                   "params": {"thread_id": thread, "item_id": user_item}}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(of_type(&events, "error").is_empty(), "{name}: {events:?}");
        assert!(
            events.iter().any(
                |e| e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message"
            ),
            "{name}: {events:?}"
        );
        whole = items(&api, "alice", &thread).await.len();
    }
    assert_eq!(chatkit_fn.pids().len(), 1, "no process was restarted");
}

/// Starts `threads.create` "hello" as alice: the streamed response, unread.
async fn start_chat(api: &Api) -> reqwest::Response {
    let body = json!({"type": "threads.create", "params": {"input": {"content": [
        {"type": "input_text", "text": "hello"}], "attachments": [], "inference_options": {}}}});
    api.http
        .post(format!("{}{CHATKIT}", api.stack.url))
        .bearer_auth(api.token("alice"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// The local Runtime API cuts a streamed answer at the function's timeout and
/// stops the process, as Lambda does. (The chat function itself ends its
/// streams in time, so a bootstrap that never ends one plays the culprit.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_invocation_is_cut_at_the_function_timeout_as_lambda_does() {
    use emulators::runtime_api::{Answer, FunctionConfig, LambdaFunction};
    let function = LambdaFunction::new(FunctionConfig {
        name: "overrunning".into(),
        binary: taskpilot_testkit::repo_root().join("tests/fixtures/overrunning-bootstrap.py"),
        env: Vec::new(),
        timeout: Duration::from_secs(2),
        max_instances: 1,
        echo_logs: false,
    });
    let answer = tokio::time::timeout(Duration::from_secs(60), function.invoke_answer("{}"))
        .await
        .expect("the invocation never started")
        .unwrap();
    let Answer::Streamed(mut rx) = answer else {
        panic!("not a streamed answer");
    };
    // What was streamed arrives; then the stream is cut with the timeout.
    let mut got = Vec::new();
    let cut = loop {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(Ok(chunk))) => got.extend_from_slice(&chunk),
            Ok(Some(Err(e))) => break e.to_string(),
            Ok(None) => panic!("the stream ended cleanly: {}", function.logs().join("\n")),
            Err(_) => panic!("the stream was never cut: {}", function.logs().join("\n")),
        }
    };
    assert!(String::from_utf8_lossy(&got).contains("data: first"));
    assert_eq!(cut, "Task timed out after 2s");
    let logged = function
        .wait_for_log(
            |l| l.contains("streamed invocation timed out"),
            Duration::from_secs(60),
        )
        .await;
    assert!(logged.is_some(), "{}", function.logs().join("\n"));
    // The process was stopped: the next invocation starts another one.
    let _ = tokio::time::timeout(Duration::from_secs(60), function.invoke_answer("{}"))
        .await
        .expect("the next invocation never started")
        .unwrap();
    assert_eq!(function.pids().len(), 2, "{}", function.logs().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_whose_write_lands_after_a_freeze_is_not_kept() {
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["chatkit".into()]),
        count_dynamodb: true,
        ..StackOptions::default()
    })
    .await;
    let proxy = api.stack.dynamodb_proxy.clone().unwrap();
    let stub = api.stack.openai.as_ref().unwrap();
    let words: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    stub.set_chunk_delay(Duration::from_millis(50));
    stub.push_turn(taskpilot_testkit::openai_stub::Turn::Text(words.join(" ")));
    let mut resp = start_chat(&api).await;
    let mut seen = String::new();
    // The answer streams; then DynamoDB freezes: what it is sent now, it
    // applies 8 s later.
    while !seen.contains("text_delta") {
        seen.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    proxy.set_fault(ProxyFault::Delay(Duration::from_secs(8)));
    // The client is told the answer failed; then DynamoDB is back.
    while !seen.contains(r#""type":"error""#) {
        seen.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    proxy.set_fault(ProxyFault::None);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events: Vec<Value> = seen
        .trim_end()
        .split("\n\n")
        .map(|f| serde_json::from_str(f.trim_start_matches("data: ")).unwrap())
        .collect();
    assert_eq!(events.last().unwrap()["type"], "error", "{events:?}");
    assert_eq!(events.last().unwrap()["allow_retry"], true);
    let thread = events[0]["thread"]["id"].as_str().unwrap().to_owned();
    // Every write the freeze held has reached DynamoDB by now.
    let started = Instant::now();
    while proxy.held() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "held writes never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stored is what the client was told: the message, no answer.
    let (status, _, page, _) = chatkit(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}}),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let kinds: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user_message"], "{page}");
}

/// Issue 16, case 5: DynamoDB freezes while the model asks for 40 tool calls
/// in one round. The function itself ends the stream with a retryable error
/// before its timeout (no call starts without time to finish and answer), and
/// the process lives on: Lambda never has to cut it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_ends_itself_before_the_function_timeout_when_tools_hang() {
    use taskpilot_testkit::openai_stub::{Gate, Turn};
    let timeout = Duration::from_secs(15);
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["chatkit".into()]),
        count_dynamodb: true,
        function_timeout: Some(timeout),
        ..StackOptions::default()
    })
    .await;
    let proxy = api.stack.dynamodb_proxy.clone().unwrap();
    let stub = api.stack.openai.as_ref().unwrap();
    let function = api.stack.function("chatkit").unwrap();
    // The model's answer waits at a gate: the thread and the message are
    // stored by then, and DynamoDB freezes before any tool runs.
    let gate = Gate::new();
    stub.push_fault(Fault::Gated(gate.clone()));
    stub.push_turn(Turn::Calls(
        (0..40)
            .map(|_| ("list_tasks".to_owned(), json!({})))
            .collect(),
    ));
    let started = Instant::now();
    let resp = start_chat(&api).await;
    assert_eq!(resp.status(), 200);
    tokio::time::timeout(Duration::from_secs(60), gate.arrived())
        .await
        .expect("the model was never asked");
    proxy.set_fault(ProxyFault::Hang);
    gate.open();
    // A body Lambda cut ends without its last chunk: keep what came.
    let mut resp = resp;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    let took = started.elapsed();
    proxy.set_fault(ProxyFault::None);
    assert!(
        !function
            .logs()
            .iter()
            .any(|l| l.contains("streamed invocation timed out")),
        "Lambda cut the stream after {took:?}:\n{text}\n{}",
        function.logs().join("\n")
    );
    if let Err(e) =
        chatkit_contract::check_response("threads.create", 200, Some("text/event-stream"), &text)
    {
        panic!("ChatKit contract: {e}");
    }
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["allow_retry"].as_bool()),
        (Some("error"), Some(true)),
        "the function did not end the stream itself: {events:?}\n{}",
        function.logs().join("\n")
    );
    assert!(took < timeout, "answered after {took:?}");
    let gave_up = function
        .wait_for_log(
            |l| l.contains("the turn ran out of time"),
            Duration::from_secs(60),
        )
        .await;
    assert!(gave_up.is_some(), "{}", function.logs().join("\n"));
    // Lambda never cut it: the same process serves the next request, and
    // the thread holds the message.
    let thread = events[0]["thread"]["id"].as_str().unwrap().to_owned();
    let kinds: Vec<String> = items(&api, "alice", &thread)
        .await
        .iter()
        .map(|i| i["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["user_message"]);
    assert_eq!(function.pids().len(), 1, "the process was restarted");
    assert_eq!(stub.requests_to("/v1/responses").len(), 1);
}

//! The history panel (`threads.list`) by recent activity: in-process on the
//! fakes (the engine and the in-memory store), and end to end through the
//! real `chatkit` binary and DynamoDB Local while other turns move threads.
//! Every request and answer is checked against the official ChatKit types.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use taskpilot_assistant::TaskAgent;
use taskpilot_assistant::testing::scripted_agent;
use taskpilot_chatkit::context::Caller;
use taskpilot_chatkit::engine::{Answer, Engine, OpenGate};
use taskpilot_chatkit::request::Request;
use taskpilot_chatkit::testing::{InMemoryChat, Round, ScriptedModel, VecSink, drive};
use taskpilot_domain::UserId;
use taskpilot_domain::memory::InMemoryTasks;
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::stack::StackOptions;

use crate::common::{Api, chatkit};

fn input(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {}})
}

fn create(text: &str) -> Value {
    json!({"type": "threads.create", "params": {"input": input(text)}})
}

fn say(thread_id: &str, text: &str) -> Value {
    json!({"type": "threads.add_user_message",
           "params": {"thread_id": thread_id, "input": input(text)}})
}

fn list(limit: usize, order: &str, after: Option<&Value>) -> Value {
    let mut params = json!({"limit": limit, "order": order});
    if let Some(after) = after {
        params["after"] = after.clone();
    }
    json!({"type": "threads.list", "params": params})
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn strings(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

// In-process, on the fakes.

/// The engine and the task assistant on the in-memory store and a
/// scripted model.
struct Chat {
    engine: Engine<InMemoryChat, TaskAgent<InMemoryTasks, ScriptedModel>>,
    model: ScriptedModel,
}

impl Chat {
    fn new() -> Self {
        let model = ScriptedModel::default();
        Self {
            engine: Engine::new(InMemoryChat::default(), scripted_agent(model.clone(), 4)),
            model,
        }
    }

    /// A streamed request of Alice answered with "Done."; its events, each
    /// checked against the contract.
    async fn stream(&self, body: Value) -> Vec<Value> {
        chatkit_contract::check_request(&body).unwrap();
        self.model.push(Round::text("Done."));
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let caller = Caller::new(UserId::new("alice").unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sink = VecSink::default();
        drive::streaming(&self.engine, caller, request, &OpenGate, deadline)
            .await
            .unwrap()
            .run(&mut sink)
            .await;
        let events = sink.json();
        for event in &events {
            chatkit_contract::check_event(event).unwrap_or_else(|e| panic!("{event}\n{e}"));
        }
        events
    }

    /// A JSON request of Alice; the answer checked against the contract.
    async fn json(&self, body: Value) -> Value {
        chatkit_contract::check_request(&body).unwrap();
        let kind = body["type"].as_str().unwrap().to_owned();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let answer: Answer = drive::json(&self.engine, &UserId::new("alice").unwrap(), request)
            .await
            .unwrap();
        let value = serde_json::to_value(answer).unwrap();
        chatkit_contract::check_answer(&kind, &value).unwrap_or_else(|e| panic!("{value}\n{e}"));
        value
    }

    /// `n` new threads, oldest first.
    async fn threads(&self, n: usize) -> Vec<String> {
        let mut made = Vec::new();
        for i in 0..n {
            let events = self.stream(create(&format!("thread {i}"))).await;
            made.push(events[0]["thread"]["id"].as_str().unwrap().to_owned());
        }
        made
    }

    /// One whole listing in pages of `limit`.
    async fn listing(&self, limit: usize, order: &str) -> Vec<String> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.json(list(limit, order, after.as_ref())).await;
            all.extend(ids(&page));
            if page["has_more"] != true {
                return all;
            }
            after = Some(page["after"].clone());
        }
    }
}

#[tokio::test]
async fn a_new_message_moves_its_thread_to_the_top_and_to_the_bottom_oldest_first() {
    let chat = Chat::new();
    let made = chat.threads(3).await;
    assert_eq!(
        chat.listing(10, "desc").await,
        strings(&[&made[2], &made[1], &made[0]])
    );
    chat.stream(say(&made[0], "one more thing")).await;
    assert_eq!(
        chat.listing(10, "desc").await,
        strings(&[&made[0], &made[2], &made[1]])
    );
    assert_eq!(
        chat.listing(2, "asc").await,
        strings(&[&made[1], &made[2], &made[0]])
    );
    // A rename keeps the thread's place.
    let renamed = chat
        .json(json!({"type": "threads.update", "params": {"thread_id": made[1], "title": "Groceries"}}))
        .await;
    assert_eq!(renamed["title"], "Groceries");
    assert_eq!(
        chat.listing(10, "desc").await,
        strings(&[&made[0], &made[2], &made[1]])
    );
}

#[tokio::test]
async fn paging_shows_each_thread_once_while_threads_move() {
    let chat = Chat::new();
    let made = chat.threads(5).await;
    let one = chat.json(list(2, "desc", None)).await;
    assert_eq!(ids(&one), strings(&[&made[4], &made[3]]));
    // The bottom thread and a shown one move; a new thread comes.
    chat.stream(say(&made[0], "up")).await;
    chat.stream(say(&made[3], "up")).await;
    let newer = chat.threads(1).await;
    let two = chat.json(list(2, "desc", Some(&one["after"]))).await;
    assert_eq!(ids(&two), strings(&[&made[2], &made[1]]));
    let three = chat.json(list(2, "desc", Some(&two["after"]))).await;
    assert_eq!(ids(&three), strings(&[&made[0]]));
    assert_eq!(three["has_more"], false);
    // A new listing sees them all where they are now.
    assert_eq!(
        chat.listing(2, "desc").await,
        strings(&[&newer[0], &made[3], &made[0], &made[4], &made[2], &made[1]])
    );
}

// Whole stack: the real `chatkit` binary on DynamoDB Local.

/// The DynamoDB requests of one ChatKit request of Alice's, by operation.
async fn requests_of(api: &Api, envelope: Value) -> (Value, Vec<Value>, BTreeMap<String, usize>) {
    let proxy = api.stack.dynamodb_proxy.as_ref().unwrap();
    let before = proxy.counts();
    let (status, events, body, _) = chatkit(api, "alice", envelope).await;
    assert_eq!(status, 200, "{body}");
    let mut made = proxy.counts();
    for (op, n) in before {
        *made.entry(op).or_default() -= n;
    }
    made.retain(|_, n| *n > 0);
    let short = made
        .into_iter()
        .map(|(op, n)| (op.trim_start_matches("DynamoDB_20120810.").to_owned(), n))
        .collect();
    (body, events, short)
}

/// Messages the writers have had answered so far.
fn total(said: &[AtomicUsize; 2]) -> usize {
    said.iter().map(|n| n.load(Ordering::SeqCst)).sum()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, n)| ((*op).to_owned(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_the_history_while_two_writers_move_threads_shows_each_thread_once() {
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["chatkit".into()]),
        count_dynamodb: true,
        ..StackOptions::default()
    })
    .await;
    let mut made = Vec::new();
    for i in 0..6 {
        let (status, events, _, _) = chatkit(&api, "alice", create(&format!("thread {i}"))).await;
        assert_eq!(status, 200);
        made.push(events[0]["thread"]["id"].as_str().unwrap().to_owned());
    }

    // What a page and a message cost, alone. The user's first listing ever
    // indexes the threads stored before the index, once (a Query of the
    // threads and one of the pointers, the `indexed` mark). Then the first
    // page of a listing raises the floor (UpdateItem); every page reads the
    // index (Query) and the shown threads (BatchGetItem).
    let (_, _, first_ever) = requests_of(&api, list(2, "desc", None)).await;
    let (first, _, first_cost) = requests_of(&api, list(2, "desc", None)).await;
    assert_eq!(ids(&first), strings(&[&made[5], &made[4]]));
    let (_, _, next_cost) = requests_of(&api, list(2, "desc", Some(&first["after"]))).await;
    let (_, events, said_cost) = requests_of(&api, say(&made[0], "measured")).await;
    assert!(events.iter().any(|e| e["type"] == "thread.item.done"));
    eprintln!(
        "DynamoDB requests: first listing ever {first_ever:?}; first page {first_cost:?}; \
         next page {next_cost:?}; add_user_message {said_cost:?}"
    );
    assert_eq!(
        first_ever,
        counts(&[("BatchGetItem", 1), ("Query", 3), ("UpdateItem", 2)])
    );
    assert_eq!(
        first_cost,
        counts(&[("BatchGetItem", 1), ("Query", 1), ("UpdateItem", 1)])
    );
    assert_eq!(next_cost, counts(&[("BatchGetItem", 1), ("Query", 1)]));

    // Two writers add messages to the threads (each moves its thread to the
    // top) while a reader pages through the history, two threads a page,
    // pausing between pages so that turns land in the middle of listings.
    let api = Arc::new(api);
    let stop = Arc::new(AtomicBool::new(false));
    let said: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (api, stop, said, made) = (api.clone(), stop.clone(), said.clone(), made.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::SeqCst) {
                    let thread = &made[(i * 5 + w) % made.len()];
                    let (status, events, _, _) = chatkit(&api, "alice", say(thread, "more")).await;
                    assert_eq!(status, 200);
                    assert!(!events.iter().any(|e| e["type"] == "error"), "{events:?}");
                    said[w].fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            })
        })
        .collect();
    let mut expected = made.clone();
    expected.sort();
    let mut moved_during = 0;
    for listing in 0..6 {
        let order = if listing % 2 == 0 { "desc" } else { "asc" };
        let at_start = [0, 1].map(|w| said[w].load(Ordering::SeqCst));
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (status, _, page, _) = chatkit(&api, "alice", list(2, order, after.as_ref())).await;
            assert_eq!(status, 200, "{page}");
            assert!(page["data"].as_array().unwrap().len() <= 2);
            seen.extend(ids(&page));
            if page["has_more"] != true {
                break;
            }
            after = Some(page["after"].clone());
            // The next page only once a writer has moved a thread since this
            // one (waiting on that event, not on a clock).
            let done = total(&said);
            let waited = Instant::now();
            while total(&said) == done {
                assert!(
                    waited.elapsed() < Duration::from_secs(120),
                    "no writer answered"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "listing {listing} ({order}): {seen:?}");
        // Messages answered between its pages: threads moved inside it.
        if total(&said) >= at_start.iter().sum::<usize>() + 2 {
            moved_during += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(moved_during, 6, "threads moved during every listing");
    // Afterwards, the most recently continued thread is on top.
    let (_, _, page, _) = chatkit(&api, "alice", say(&made[2], "last")).await;
    assert_eq!(page, Value::Null);
    let (_, _, top, _) = chatkit(&api, "alice", list(1, "desc", None)).await;
    assert_eq!(ids(&top), [made[2].clone()]);
    eprintln!(
        "messages per writer: {:?}",
        [0, 1].map(|w| said[w].load(Ordering::SeqCst))
    );
}

//! The chat budget in-process: turns charged to the user's day, on the fakes.
//!
//! The engine and the task assistant run on an in-memory thread store (which
//! also keeps the daily usage), a scripted model and a sink that can
//! disconnect: one behaviour per test, in milliseconds. Every request and
//! event is also checked against the official ChatKit SDK's types.
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use taskpilot_assistant::{FILE_TOKEN_ESTIMATE, RoundMeter, TaskAgent, tools};
use taskpilot_chatkit::context::Caller;
use taskpilot_chatkit::engine::{Engine, OpenGate};
use taskpilot_chatkit::model::{
    FunctionCall, ModelEvent, ModelFile, ModelInput, ModelRequest, TokenUsage,
};
use taskpilot_chatkit::request::Request;
use taskpilot_chatkit::testing::{
    InMemoryChat, Journal, Round, ScriptedModel, SeenRequest, VecSink,
    drive::{self, MeteredGate},
};
use taskpilot_chatkit::turn::{Meter, Spent};
use taskpilot_domain::UserId;
use taskpilot_domain::budget::{ChatBudget, DayUsage, UsageDay, UsageStore};
use taskpilot_domain::memory::InMemoryTasks;
use taskpilot_testkit::chatkit_contract;

use taskpilot_assistant::testing::scripted_agent;

type Server = Engine<InMemoryChat, TaskAgent<InMemoryTasks, ScriptedModel>>;

/// When every caller sends its request (UTC).
const NOW: &str = "2025-06-15T10:00:00Z";

struct Chat {
    engine: Server,
    model: ScriptedModel,
    journal: Journal,
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn at(instant: &str) -> DateTime<Utc> {
    instant.parse().unwrap()
}

/// The UTC day the callers are in.
fn today() -> UsageDay {
    UsageDay::of(at(NOW))
}

fn usage(input: u64, cached_input: u64, output: u64) -> TokenUsage {
    TokenUsage {
        input,
        cached_input,
        output,
    }
}

/// A budget of `tokens_per_day`, warning from 80 %.
fn budget(tokens_per_day: u64) -> ChatBudget {
    ChatBudget {
        turns_per_minute: 10,
        tokens_per_day,
        warn_percent: 80,
    }
}

/// A turn on `day`, with `used` tokens already spent, under `budget`.
fn meter(day: UsageDay, used: u64, budget: ChatBudget) -> Meter {
    Meter { day, used, budget }
}

/// The default budget, today, nothing used yet.
fn fresh() -> Meter {
    meter(today(), 0, ChatBudget::default())
}

fn message(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {}})
}

fn create(text: &str) -> Value {
    json!({"type": "threads.create", "params": {"input": message(text)}})
}

/// One streamed run: what it cost and what the client received.
struct Ran {
    spent: Spent,
    events: Vec<Value>,
}

impl Ran {
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

impl Chat {
    fn new() -> Self {
        let journal = Journal::default();
        let model = ScriptedModel::with_journal(journal.clone());
        let agent = scripted_agent(model.clone(), 8);
        Self {
            engine: Engine::new(InMemoryChat::with_journal(journal.clone()), agent),
            model,
            journal,
        }
    }

    fn store(&self) -> &InMemoryChat {
        self.engine.store()
    }

    fn push(&self, rounds: Vec<Round>) {
        for round in rounds {
            self.model.push(round);
        }
    }

    /// Streams `body` as `who` into `sink`, charged to `meter` when given;
    /// the request and every event pass the contract.
    async fn run_into(&self, who: &str, body: Value, meter: Option<Meter>, sink: VecSink) -> Ran {
        chatkit_contract::check_request(&body).unwrap();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let caller = Caller::new(user(who)).at(at(NOW));
        let deadline = Instant::now() + Duration::from_secs(60);
        let streaming = match meter {
            Some(meter) => {
                drive::streaming(&self.engine, caller, request, &MeteredGate(meter), deadline).await
            }
            None => drive::streaming(&self.engine, caller, request, &OpenGate, deadline).await,
        }
        .unwrap();
        assert!(streaming.reaches_model(), "{body}");
        let mut sink = sink;
        let spent = streaming.run(&mut sink).await;
        let events = sink.json();
        for event in &events {
            chatkit_contract::check_event(event).unwrap_or_else(|e| panic!("{event}\n{e}"));
        }
        Ran { spent, events }
    }

    /// A metered `threads.create` saying "hello", the model playing `rounds`.
    async fn turn(&self, who: &str, meter: Meter, rounds: Vec<Round>) -> Ran {
        self.push(rounds);
        self.run_into(who, create("hello"), Some(meter), VecSink::default())
            .await
    }

    /// A metered turn of `who` within `limit` tokens a day, starting from
    /// what the store already holds for today.
    async fn turn_within(&self, who: &str, limit: u64, rounds: Vec<Round>) -> Ran {
        let used = self.day(who, today()).await.tokens.total();
        self.turn(who, meter(today(), used, budget(limit)), rounds)
            .await
    }

    /// What the store holds for `who` on `day`.
    async fn day(&self, who: &str, day: UsageDay) -> DayUsage {
        self.store().day_usage(&user(who), day).await.unwrap()
    }

    /// Earlier use of `tokens` on `day`, as one turn of one round.
    async fn used_earlier(&self, who: &str, day: UsageDay, tokens: TokenUsage) {
        self.store()
            .add_usage(&user(who), day, tokens, true)
            .await
            .unwrap();
    }

    fn charges(&self) -> usize {
        self.journal
            .calls()
            .iter()
            .filter(|c| *c == "store.add_usage")
            .count()
    }
}

/// The input the agent estimates for `seen` when the model reports no
/// usage: every byte sent (instructions, conversation, tool specs) at 4 a
/// token, rounded up, plus a flat estimate per file shown.
fn estimated_input(seen: &SeenRequest) -> u64 {
    let offered: Vec<&str> = tools::specs().iter().map(|t| t.name).collect();
    assert_eq!(seen.tools, offered, "the model was offered the task tools");
    let tool_bytes: usize = tools::specs()
        .iter()
        .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
        .sum();
    // The per-turn context is one message after the conversation.
    let context = seen.context.as_ref().map_or(0, String::len);
    let mut bytes = seen.instructions.len() + tool_bytes + context;
    let mut files = 0u64;
    for item in &seen.input {
        match item {
            ModelInput::Files(shown) => files += shown.len() as u64,
            ModelInput::Message { text, .. } => bytes += text.len(),
            ModelInput::FunctionCall(call) => bytes += call.name.len() + call.arguments.len(),
            ModelInput::FunctionOutput { output, .. } => bytes += output.len(),
        }
    }
    (bytes as u64).div_ceil(4) + files * FILE_TOKEN_ESTIMATE
}

// What a turn is charged.

#[tokio::test]
async fn a_text_round_is_charged_its_reported_usage_as_one_round_of_one_turn() {
    let chat = Chat::new();
    let tokens = usage(120, 20, 30);
    let ran = chat
        .turn(
            "alice",
            fresh(),
            vec![Round::text("Hi there.").with_usage(tokens)],
        )
        .await;
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens,
            rounds: 1,
            turns: 1
        }
    );
    assert_eq!(ran.spent, Spent { tokens, rounds: 1 });
}

#[tokio::test]
async fn a_tool_turn_is_charged_every_round_and_counted_as_one_turn() {
    let chat = Chat::new();
    let ran = chat
        .turn(
            "alice",
            fresh(),
            vec![
                Round::calls(&[("list_tasks", "{}")]).with_usage(usage(300, 100, 15)),
                Round::text("Nothing left.").with_usage(usage(400, 250, 7)),
            ],
        )
        .await;
    let sum = usage(700, 350, 22);
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens: sum,
            rounds: 2,
            turns: 1
        }
    );
    assert_eq!(
        ran.spent,
        Spent {
            tokens: sum,
            rounds: 2
        }
    );
    assert_eq!(chat.charges(), 2, "one charge per round");
}

#[tokio::test]
async fn a_second_turn_adds_to_the_day_and_counts_one_more_turn() {
    let chat = Chat::new();
    chat.turn(
        "alice",
        fresh(),
        vec![Round::text("One.").with_usage(usage(100, 0, 10))],
    )
    .await;
    let day = chat.day("alice", today()).await;
    chat.turn(
        "alice",
        meter(today(), day.tokens.total(), ChatBudget::default()),
        vec![Round::text("Two.").with_usage(usage(200, 50, 20))],
    )
    .await;
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens: usage(300, 50, 30),
            rounds: 2,
            turns: 2
        }
    );
}

#[tokio::test]
async fn a_failed_round_is_charged_its_reported_usage() {
    let chat = Chat::new();
    let tokens = usage(90, 0, 4);
    let ran = chat
        .turn(
            "alice",
            fresh(),
            vec![Round::failed("one two three four", 2).with_usage(tokens)],
        )
        .await;
    assert_eq!(ran.of_type("error").len(), 1, "{:?}", ran.types());
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens,
            rounds: 1,
            turns: 1
        }
    );
    assert_eq!(ran.spent, Spent { tokens, rounds: 1 });
}

#[tokio::test]
async fn a_round_cut_off_without_usage_is_charged_an_estimate() {
    let chat = Chat::new();
    // "alpha " and "beta " streamed: 11 bytes, 3 tokens (rounded up).
    let ran = chat
        .turn("alice", fresh(), vec![Round::broken("alpha beta gamma", 2)])
        .await;
    assert_eq!(ran.of_type("error").len(), 1, "{:?}", ran.types());
    let seen = chat.model.requests();
    assert_eq!(seen.len(), 1);
    let input = estimated_input(&seen[0]);
    // At the very least the instructions and the user's words were sent.
    assert!(
        input * 4 >= (seen[0].instructions.len() + "hello".len()) as u64,
        "{input}"
    );
    let tokens = usage(input, 0, 3);
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens,
            rounds: 1,
            turns: 1
        }
    );
    assert_eq!(ran.spent, Spent { tokens, rounds: 1 });
}

#[tokio::test]
async fn a_client_that_leaves_mid_answer_is_still_charged_for_the_round() {
    let chat = Chat::new();
    // The model would report its usage at the end, which is never read.
    chat.push(vec![
        Round::text("alpha beta gamma delta epsilon").with_usage(usage(5000, 0, 5000)),
    ]);
    // thread.created, the user's message, the options, the added answer, its
    // first part and its first delta; the second delta finds the client gone.
    let ran = chat
        .run_into(
            "alice",
            create("hello"),
            Some(fresh()),
            VecSink::disconnecting_after(6),
        )
        .await;
    assert_eq!(ran.events.len(), 6, "{:?}", ran.types());
    assert!(chat.model.stopped_early(), "the model call was stopped");
    // "alpha " and "beta " were streamed by the model: 11 bytes, 3 tokens.
    let seen = chat.model.requests();
    let tokens = usage(estimated_input(&seen[0]), 0, 3);
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens,
            rounds: 1,
            turns: 1
        }
    );
    assert_eq!(ran.spent, Spent { tokens, rounds: 1 });
}

#[tokio::test]
async fn an_unmetered_run_writes_no_usage_but_says_what_it_cost() {
    let chat = Chat::new();
    let tokens = usage(120, 20, 30);
    chat.push(vec![Round::text("Hi there.").with_usage(tokens)]);
    let ran = chat
        .run_into("alice", create("hello"), None, VecSink::default())
        .await;
    assert_eq!(ran.spent, Spent { tokens, rounds: 1 });
    assert_eq!(chat.charges(), 0, "{:?}", chat.journal.calls());
    assert!(ran.of_type("notice").is_empty(), "{:?}", ran.types());
    assert_eq!(chat.day("alice", today()).await, DayUsage::default());
}

#[tokio::test]
async fn each_user_is_charged_to_their_own_day() {
    let chat = Chat::new();
    let alices = usage(100, 10, 11);
    let bobs = usage(200, 20, 22);
    chat.turn("alice", fresh(), vec![Round::text("A.").with_usage(alices)])
        .await;
    chat.turn("bob", fresh(), vec![Round::text("B.").with_usage(bobs)])
        .await;
    let one = |tokens| DayUsage {
        tokens,
        rounds: 1,
        turns: 1,
    };
    assert_eq!(chat.day("alice", today()).await, one(alices));
    assert_eq!(chat.day("bob", today()).await, one(bobs));
    assert_eq!(chat.day("carol", today()).await, DayUsage::default());
}

#[tokio::test]
async fn the_charge_goes_to_the_day_of_the_meter() {
    let chat = Chat::new();
    // Admitted just before midnight: charged to that day, although the run
    // (and the caller's clock) is already on the next one.
    let admitted = UsageDay::of(at("2025-06-14T23:59:59Z"));
    let tokens = usage(100, 0, 10);
    chat.turn(
        "alice",
        meter(admitted, 0, ChatBudget::default()),
        vec![Round::text("Late.").with_usage(tokens)],
    )
    .await;
    assert_eq!(
        chat.day("alice", admitted).await,
        DayUsage {
            tokens,
            rounds: 1,
            turns: 1
        }
    );
    assert_eq!(chat.day("alice", today()).await, DayUsage::default());
    assert_eq!(
        chat.day("alice", UsageDay::of(Utc::now())).await,
        DayUsage::default()
    );
}

// The daily limit during a turn.

#[tokio::test]
async fn a_budget_used_up_in_round_one_runs_its_tools_then_ends_the_turn_with_an_error() {
    let chat = Chat::new();
    chat.used_earlier("alice", today(), usage(600, 0, 100))
        .await;
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![
                Round::calls(&[("create_task", r#"{"title":"Bread"}"#)])
                    .with_usage(usage(280, 0, 20)),
                Round::text("Added bread.").with_usage(usage(1, 0, 1)),
            ],
        )
        .await;
    // The tool call of round 1 ran.
    let tasks = chat
        .engine
        .responder()
        .tasks()
        .list(&user("alice"), Default::default(), 100, None)
        .await
        .unwrap()
        .tasks;
    assert_eq!(
        tasks
            .iter()
            .map(|t| t.title.to_string())
            .collect::<Vec<_>>(),
        ["Bread"]
    );
    assert_eq!(chat.model.requests().len(), 1, "the model was asked once");
    assert_eq!(
        ran.of_type("error"),
        [
            &json!({"type": "error", "code": "custom", "allow_retry": false,
                 "message": "You have reached today's assistant budget (1000 tokens). It resets at 00:00 UTC."})
        ]
    );
    assert!(ran.of_type("notice").is_empty(), "{:?}", ran.types());
    // After the error only what the tools did (tasks changed) and the new
    // thread's title: nothing more from the model.
    let types = ran.types();
    let error_at = types.iter().position(|t| *t == "error").unwrap();
    assert_eq!(
        &types[error_at..],
        ["error", "client_effect", "thread.updated"],
        "{types:?}"
    );
    // Just before it, the task-list widget shows what the tools did.
    let widget = &ran.events[error_at - 1];
    assert_eq!(
        (&widget["type"], &widget["item"]["type"]),
        (&json!("thread.item.done"), &json!("widget")),
        "{types:?}"
    );
    assert!(widget.to_string().contains("Bread"), "{widget}");
    assert_eq!(
        chat.day("alice", today()).await,
        DayUsage {
            tokens: usage(880, 0, 120),
            rounds: 2,
            turns: 2
        }
    );
    assert_eq!(
        ran.spent,
        Spent {
            tokens: usage(280, 0, 20),
            rounds: 1
        }
    );
}

#[tokio::test]
async fn a_budget_not_used_up_in_round_one_lets_the_turn_go_on() {
    let chat = Chat::new();
    chat.used_earlier("alice", today(), usage(600, 0, 100))
        .await;
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![
                Round::calls(&[("create_task", r#"{"title":"Bread"}"#)])
                    .with_usage(usage(280, 0, 19)),
                Round::text("Added bread.").with_usage(usage(1, 0, 1)),
            ],
        )
        .await;
    assert_eq!(chat.model.requests().len(), 2);
    assert!(ran.of_type("error").is_empty(), "{:?}", ran.types());
}

#[tokio::test]
async fn an_admitted_turn_asks_the_model_even_if_the_day_filled_up_meanwhile() {
    let chat = Chat::new();
    // Admitted, then other turns of the day used it all before this one ran.
    let full = meter(today(), 1000, budget(1000));
    let ran = chat
        .turn(
            "alice",
            full,
            vec![Round::text("Hello.").with_usage(usage(5, 0, 5))],
        )
        .await;
    assert_eq!(chat.model.requests().len(), 1, "{:?}", ran.types());
    assert!(ran.of_type("error").is_empty(), "{:?}", ran.types());
}

/// The one notice of `ran`, which must be its last event.
fn last_notice(ran: &Ran) -> &Value {
    let notices = ran.of_type("notice");
    assert_eq!(notices.len(), 1, "{:?}", ran.types());
    assert_eq!(ran.events.last(), Some(notices[0]), "{:?}", ran.types());
    notices[0]
}

#[tokio::test]
async fn a_turn_reaching_the_warning_share_ends_with_a_warning() {
    let chat = Chat::new();
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![Round::text("Hi.").with_usage(usage(750, 0, 50))],
        )
        .await;
    assert_eq!(
        last_notice(&ran),
        &json!({"type": "notice", "level": "warning", "title": "Assistant budget",
                "message": "You have used 80% of today's assistant budget. It resets at 00:00 UTC."})
    );
}

#[tokio::test]
async fn the_warning_counts_what_the_day_held_before_the_turn() {
    let chat = Chat::new();
    chat.used_earlier("alice", today(), usage(800, 0, 0)).await;
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![Round::text("Hi.").with_usage(usage(50, 0, 9))],
        )
        .await;
    // 859 of 1000: the share is rounded down.
    assert_eq!(last_notice(&ran)["level"], "warning");
    assert_eq!(
        last_notice(&ran)["message"],
        "You have used 85% of today's assistant budget. It resets at 00:00 UTC."
    );
}

#[tokio::test]
async fn a_turn_below_the_warning_share_ends_without_a_notice() {
    let chat = Chat::new();
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![Round::text("Hi.").with_usage(usage(750, 0, 49))],
        )
        .await;
    assert!(ran.of_type("notice").is_empty(), "{:?}", ran.types());
    assert_eq!(ran.types().last(), Some(&"thread.updated"));
}

#[tokio::test]
async fn a_turn_using_up_the_budget_in_its_last_round_ends_with_a_danger_notice() {
    let chat = Chat::new();
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![Round::text("Hi.").with_usage(usage(900, 0, 100))],
        )
        .await;
    assert!(ran.of_type("error").is_empty(), "{:?}", ran.types());
    assert_eq!(
        last_notice(&ran),
        &json!({"type": "notice", "level": "danger", "title": "Assistant budget",
                "message": "You have used all of today's assistant budget. It resets at 00:00 UTC."})
    );
}

#[tokio::test]
async fn a_failed_turn_past_the_warning_share_gets_its_error_and_no_notice() {
    let chat = Chat::new();
    let ran = chat
        .turn_within(
            "alice",
            1000,
            vec![Round::failed("one two", 1).with_usage(usage(900, 0, 100))],
        )
        .await;
    assert_eq!(ran.of_type("error").len(), 1, "{:?}", ran.types());
    assert!(ran.of_type("notice").is_empty(), "{:?}", ran.types());
}

// The estimate of a round the model did not report.

fn file(n: u32) -> ModelFile {
    ModelFile {
        url: format!("https://files.test/read/att_{n}?sig=0123456789"),
        image: true,
    }
}

/// A request of 5 + 8 = 13 bytes of text (4 tokens) and two files.
fn request_parts() -> Vec<ModelInput> {
    vec![
        ModelInput::user("12345678"),
        ModelInput::Files(vec![file(1), file(2)]),
    ]
}

fn request(input: &[ModelInput]) -> ModelRequest<'_> {
    ModelRequest {
        model: "gpt-test",
        instructions: "abcde",
        temperature: 0.2,
        input,
        tools: &[],
        tool_choice: None,
        cache_key: None,
    }
}

#[test]
fn the_estimate_counts_text_at_four_bytes_a_token_and_each_file_flat() {
    let input = request_parts();
    let meter = RoundMeter::default();
    // File URLs are not counted as text.
    assert_eq!(
        meter.usage(&request(&input)),
        usage(4 + 2 * FILE_TOKEN_ESTIMATE, 0, 0)
    );
}

#[test]
fn the_estimate_counts_streamed_text_and_function_calls_once() {
    let input = request_parts();
    let mut meter = RoundMeter::default();
    let item = || "m1".to_owned();
    for event in [
        ModelEvent::MessageStarted { item: item() },
        ModelEvent::TextStarted {
            item: item(),
            part: 0,
        },
        ModelEvent::TextDelta {
            item: item(),
            part: 0,
            delta: "hello ".into(),
        },
        ModelEvent::TextDone {
            item: item(),
            part: 0,
            text: "hello ".into(),
        },
        ModelEvent::MessageDone { item: item() },
        ModelEvent::FunctionCall(FunctionCall {
            call_id: "call_0".into(),
            name: "list_tasks".into(),
            arguments: "{}".into(),
        }),
        ModelEvent::Completed,
    ] {
        meter.saw(&event);
    }
    // 6 + 10 + 2 = 18 bytes: 5 tokens (rounded up).
    assert_eq!(meter.usage(&request(&input)).output, 5);
}

#[test]
fn reported_usage_wins_over_the_estimate() {
    let input = request_parts();
    let mut meter = RoundMeter::default();
    meter.saw(&ModelEvent::TextDelta {
        item: "m1".into(),
        part: 0,
        delta: "a long answer".into(),
    });
    let reported = usage(7, 3, 2);
    meter.reported = Some(reported);
    assert_eq!(meter.usage(&request(&input)), reported);
}

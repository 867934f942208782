//! The ChatKit engine and the task assistant in-process, on the ports' fakes
//! (an in-memory thread store and task repository, a scripted model, a sink
//! that can disconnect): one behaviour per test, in milliseconds. Every event
//! and JSON answer is also checked against the official SDK's types.
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use chrono::{DateTime, Utc};
use taskpilot_chatkit::zone::Zone;

use taskpilot_assistant::{AgentSettings, TaskAgent};
use taskpilot_assistant::{WINDOW_MIN, window_start};
use taskpilot_chatkit::context::Caller;
use taskpilot_chatkit::engine::{Answer, ChatError, Engine, HISTORY, OpenGate};
use taskpilot_chatkit::model::ModelInput;
use taskpilot_chatkit::request::Request;
use taskpilot_chatkit::store::{ChatStore, MessageThread};
use taskpilot_chatkit::testing::{
    InMemoryChat, Journal, RecordedMetrics, Round, ScriptedModel, VecSink, drive,
};
use taskpilot_chatkit::turn::CANCELLED_NOTE;
use taskpilot_chatkit::types::{ItemKind, ThreadItem};
use taskpilot_domain::memory::InMemoryTasks;
use taskpilot_domain::{CursorCodec, Task, TaskService, UserId};
use taskpilot_testkit::chatkit_contract;

/// A deadline no test reaches.
fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

type Server = Engine<InMemoryChat, TaskAgent<InMemoryTasks, ScriptedModel>>;

struct Chat {
    engine: Server,
    model: ScriptedModel,
    journal: Journal,
    metrics: RecordedMetrics,
    /// Where and when the callers are (UTC, now, no locale by default).
    place: Option<(Zone, DateTime<Utc>, Option<String>)>,
    /// How long a streamed request may take (a minute by default).
    time: Duration,
}

fn settings(max_tool_steps: usize) -> AgentSettings {
    AgentSettings {
        model: "gpt-test".into(),
        models: vec![],
        temperature: 0.2,
        instructions: "Be brief.".into(),
        max_tool_steps,
        max_tool_calls: 20,
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn message(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {}})
}

impl Chat {
    fn new() -> Self {
        Self::with_steps(8)
    }

    fn with_steps(max_tool_steps: usize) -> Self {
        Self::with_settings(settings(max_tool_steps))
    }

    /// A chat whose model picker also offers `models`.
    fn with_models(models: &[&str]) -> Self {
        Self::with_settings(AgentSettings {
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            ..settings(8)
        })
    }

    fn with_settings(settings: AgentSettings) -> Self {
        let journal = Journal::default();
        let model = ScriptedModel::with_journal(journal.clone());
        let tasks = TaskService::new(
            InMemoryTasks::default(),
            CursorCodec::new(&[7u8; 32], chrono::Duration::hours(1)).unwrap(),
        );
        let metrics = RecordedMetrics::default();
        let agent = TaskAgent::new(tasks, model.clone(), settings).with_metrics(metrics.clone());
        Self {
            metrics,
            engine: Engine::new(InMemoryChat::with_journal(journal.clone()), agent),
            model,
            journal,
            place: None,
            time: Duration::from_secs(60),
        }
    }

    /// The same chat whose streams must end within `time`.
    fn with_time(self, time: Duration) -> Self {
        Self { time, ..self }
    }

    /// The same chat with callers in `zone` at the UTC instant `at`.
    fn at(self, zone: Zone, at: &str, locale: Option<&str>) -> Self {
        let place = Some((zone, at.parse().unwrap(), locale.map(str::to_owned)));
        Self { place, ..self }
    }

    fn caller(&self, who: &str) -> Caller {
        match &self.place {
            None => Caller::new(user(who)),
            Some((zone, at, locale)) => Caller::new(user(who))
                .in_zone(zone.clone())
                .at(*at)
                .with_locale(locale.clone()),
        }
    }

    fn store(&self) -> &InMemoryChat {
        self.engine.store()
    }

    fn tasks(&self) -> &TaskService<InMemoryTasks> {
        self.engine.responder().tasks()
    }

    /// A streamed request; the request and every event pass the contract.
    async fn stream(&self, who: &str, body: Value) -> VecSink {
        self.stream_into(who, body, VecSink::default()).await
    }

    async fn stream_into(&self, who: &str, body: Value, mut sink: VecSink) -> VecSink {
        chatkit_contract::check_request(&body).unwrap();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        assert!(request.is_streaming(), "{body}");
        let deadline = Instant::now() + self.time;
        drive::streaming(&self.engine, self.caller(who), request, &OpenGate, deadline)
            .await
            .unwrap()
            .run(&mut sink)
            .await;
        for event in sink.json() {
            chatkit_contract::check_event(&event).unwrap_or_else(|e| panic!("{event}\n{e}"));
        }
        sink
    }

    /// Whether a streamed request, checked and ready to run (not run),
    /// would ask the model.
    async fn reaches_model(&self, who: &str, body: Value) -> bool {
        chatkit_contract::check_request(&body).unwrap();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        drive::streaming(&self.engine, self.caller(who), request, &OpenGate, far())
            .await
            .unwrap()
            .reaches_model()
    }

    /// What a streamed request is refused with before its first event.
    async fn refused(&self, who: &str, body: Value) -> ChatError {
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        match drive::streaming(&self.engine, self.caller(who), request, &OpenGate, far()).await {
            Ok(_) => panic!("not refused before streaming"),
            Err(e) => e,
        }
    }

    /// A JSON request; the answer passes the contract.
    async fn json(&self, who: &str, body: Value) -> Result<Value, ChatError> {
        chatkit_contract::check_request(&body).unwrap();
        let kind = body["type"].as_str().unwrap().to_owned();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let answer: Answer = drive::json(&self.engine, &user(who), request).await?;
        let value = serde_json::to_value(answer).unwrap();
        chatkit_contract::check_answer(&kind, &value).unwrap_or_else(|e| panic!("{value}\n{e}"));
        Ok(value)
    }

    /// `threads.create` with `text`, the model playing `rounds`: the thread
    /// id and the events.
    async fn create(&self, who: &str, text: &str, rounds: Vec<Round>) -> (String, Vec<Value>) {
        for round in rounds {
            self.model.push(round);
        }
        let sink = self
            .stream(
                who,
                json!({"type": "threads.create", "params": {"input": message(text)}}),
            )
            .await;
        let events = sink.json();
        (
            events[0]["thread"]["id"].as_str().unwrap().to_owned(),
            events,
        )
    }

    /// A thread in which the model listed `who`'s tasks: its id and the
    /// task-list widget item.
    async fn listed(&self, who: &str) -> (String, Value) {
        let rounds = vec![
            Round::calls(&[("list_tasks", "{}")]),
            Round::text("Listed."),
        ];
        let (thread, events) = self.create(who, "what's left?", rounds).await;
        (thread, widget_of(&events))
    }

    /// A thread whose first exchange was "hello" / `answer`.
    async fn thread(&self, who: &str, answer: &str) -> String {
        self.create(who, "hello", vec![Round::text(answer)]).await.0
    }

    async fn say(&self, who: &str, thread_id: &str, text: &str) -> VecSink {
        self.stream(
            who,
            json!({"type": "threads.add_user_message",
                   "params": {"thread_id": thread_id, "input": message(text)}}),
        )
        .await
    }

    async fn task(&self, who: &str, title: &str) -> Task {
        let input: taskpilot_domain::NewTaskInput =
            serde_json::from_value(json!({"title": title})).unwrap();
        self.tasks()
            .create(&user(who), input.validate().unwrap(), None)
            .await
            .unwrap()
            .task
    }

    /// `who`'s tasks, newest first.
    async fn task_list(&self, who: &str) -> Vec<Task> {
        self.tasks()
            .list(&user(who), Default::default(), 100, None)
            .await
            .unwrap()
            .tasks
    }

    fn items(&self, who: &str, thread_id: &str) -> Vec<ThreadItem> {
        self.store().stored_items(&user(who), thread_id)
    }
}

fn kinds(items: &[ThreadItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            serde_json::to_value(i).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn text_of(item: &Value) -> String {
    item["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// Event order.

#[tokio::test]
async fn create_streams_the_thread_the_message_options_the_answer_then_the_title() {
    let chat = Chat::new();
    chat.model.push(Round::text("Hello there."));
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.create", "params": {"input": message("plan my week")}}),
        )
        .await;
    assert_eq!(
        sink.types(),
        [
            "thread.created",
            "thread.item.done",
            "stream_options",
            "thread.item.added",
            "thread.item.updated",
            "thread.item.updated",
            "thread.item.updated",
            "thread.item.updated",
            "thread.item.done",
            "thread.updated",
        ]
    );
    let events = sink.json();
    assert_eq!(events[1]["item"]["type"], "user_message");
    assert_eq!(events[8]["item"]["content"][0]["text"], "Hello there.");
    assert_eq!(events[9]["thread"]["title"], "plan my week");
    assert_eq!(events[9]["thread"]["metadata"], json!({}));
}

#[tokio::test]
async fn a_new_message_comes_first_then_the_options_and_no_title_change() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    chat.model.push(Round::text("Sure."));
    let sink = chat.say("alice", &thread, "and now?").await;
    let types = sink.types();
    assert_eq!(&types[..2], ["thread.item.done", "stream_options"]);
    assert_eq!(types.last().unwrap(), "thread.item.done");
    assert!(!types.contains(&"thread.updated".to_owned()), "{types:?}");
}

#[tokio::test]
async fn a_new_thread_is_written_together_with_its_first_message() {
    let chat = Chat::new();
    chat.thread("alice", "Hi.").await;
    assert_eq!(chat.store().messages_told(), [MessageThread::New]);
}

#[tokio::test]
async fn a_new_message_hands_back_the_mark_its_threads_read_found() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let read = chat
        .store()
        .load_recent(&user("alice"), &thread, 1, true)
        .await;
    let mark = read.unwrap().unwrap().mark;
    assert!(mark.is_some());
    chat.model.push(Round::text("Sure."));
    chat.say("alice", &thread, "and now?").await;
    assert_eq!(
        chat.store().messages_told()[1..],
        [MessageThread::Stored { mark }]
    );
}

#[tokio::test]
async fn an_action_streams_the_options_then_the_replaced_widget() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    let (thread, widget) = chat.listed("alice").await;
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.custom_action", "params": {"thread_id": thread,
                "item_id": widget["id"], "action": {"type": "task.complete", "payload": {"task_id": task.id}}}}),
        )
        .await;
    assert_eq!(
        sink.types(),
        ["stream_options", "thread.item.replaced", "client_effect"]
    );
    let events = sink.json();
    assert_eq!(events[1]["item"]["id"], widget["id"]);
    assert_eq!(
        events[2],
        json!({"type": "client_effect", "name": "tasks.changed",
               "data": {"created": [], "updated": [task.id], "deleted": []}})
    );
}

/// The widget item a stream finished.
fn widget_of(events: &[Value]) -> Value {
    of_type(events, "thread.item.done")
        .into_iter()
        .map(|e| e["item"].clone())
        .find(|i| i["type"] == "widget")
        .expect("a widget was shown")
}

#[tokio::test]
async fn retry_deletes_the_newer_items_and_answers_the_retried_message_again() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "First answer.").await;
    chat.model.push(Round::text("Second answer."));
    chat.say("alice", &thread, "second question").await;
    let first = chat.items("alice", &thread)[0].id.clone();
    chat.model.push(Round::text("Again."));
    let mark = chat.journal.calls().len();
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.retry_after_item",
                   "params": {"thread_id": thread, "item_id": first}}),
        )
        .await;
    assert_eq!(sink.types()[0], "stream_options");
    let deletes: Vec<String> = chat.journal.calls()[mark..]
        .iter()
        .filter(|c| c.starts_with("store.delete"))
        .cloned()
        .collect();
    assert_eq!(
        deletes,
        ["store.delete_items"],
        "the three later items in one call"
    );
    let kept = chat.items("alice", &thread);
    assert_eq!(kinds(&kept), ["user_message", "assistant_message"]);
    assert_eq!(kept[0].id, first);
    assert_eq!(text_of(&serde_json::to_value(&kept[1]).unwrap()), "Again.");
    // The model saw the conversation up to the retried message only.
    let requests = chat.model.requests();
    assert_eq!(
        requests.last().unwrap().input,
        [ModelInput::user("hello")],
        "{requests:#?}"
    );
}

#[tokio::test]
async fn retry_after_an_unknown_item_is_an_empty_stream() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let before = chat.items("alice", &thread);
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.retry_after_item",
                   "params": {"thread_id": thread, "item_id": "msg_01kbnotthere0000000000000"}}),
        )
        .await;
    assert!(sink.events.is_empty(), "{:?}", sink.types());
    assert_eq!(chat.items("alice", &thread), before);
    assert_eq!(chat.model.requests().len(), 1, "no model call");
}

#[tokio::test]
async fn retry_after_an_assistant_message_is_refused() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let answer = chat.items("alice", &thread)[1].id.clone();
    let refused = chat
        .refused(
            "alice",
            json!({"type": "threads.retry_after_item",
                   "params": {"thread_id": thread, "item_id": answer}}),
        )
        .await;
    assert!(
        matches!(refused, ChatError::NotAUserMessage(_)),
        "{refused:?}"
    );
}

// What is persisted.

mod rules {
    //! The persistence rules, through a responder that emits exactly what a
    //! test scripts.
    use super::*;
    use std::collections::HashMap;
    use taskpilot_chatkit::ids;
    use taskpilot_chatkit::request::Action;
    use taskpilot_chatkit::responder::{ActionRefused, Responder};
    use taskpilot_chatkit::sink::EventSink;
    use taskpilot_chatkit::store::ChatStore;
    use taskpilot_chatkit::turn::{Interrupted, Turn};
    use taskpilot_chatkit::types::{AssistantContent, ItemUpdate, StreamEvent, ThreadMetadata};
    use taskpilot_chatkit::widget::{Card, Text, WidgetRoot};

    /// One scripted step; items are named by a label.
    #[derive(Clone, Copy)]
    pub enum Step {
        Add(&'static str),
        Delta(&'static str, &'static str),
        Finish(&'static str),
        Widget(&'static str, &'static str),
        Replace(&'static str, &'static str),
        Hidden(&'static str),
        Remove(&'static str),
        /// Names the thread.
        Title(&'static str),
        /// Notes what the next model round would see and what still streams.
        Look,
    }

    /// What the turn held at a [`Step::Look`]: its history as
    /// `label=text` (`user` for the user's message), and the labels of the
    /// items still streaming.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Seen {
        pub history: Vec<String>,
        pub pending: Vec<&'static str>,
    }

    pub struct Replay {
        steps: Vec<Step>,
        seen: std::sync::Mutex<Vec<Seen>>,
    }

    fn widget(text: &str) -> WidgetRoot {
        Card::new(vec![Text::new(text).into()]).into()
    }

    impl Responder for Replay {
        async fn respond<S: ChatStore, K: EventSink>(
            &self,
            turn: &mut Turn<'_, S, K>,
            _input: Option<&ThreadItem>,
        ) -> Result<(), Interrupted> {
            let mut ids: HashMap<&'static str, String> = HashMap::new();
            fn id(
                ids: &mut HashMap<&'static str, String>,
                label: &'static str,
                prefix: &str,
            ) -> String {
                ids.entry(label).or_insert_with(|| ids::new(prefix)).clone()
            }
            for step in &self.steps {
                let event = match *step {
                    Step::Title(title) => {
                        turn.thread_mut().title = Some(title.into());
                        continue;
                    }
                    Step::Look => {
                        let label = |id: &str| {
                            ids.iter()
                                .find(|(_, i)| i.as_str() == id)
                                .map_or("user", |(l, _)| *l)
                        };
                        let history = turn
                            .history()
                            .iter()
                            .map(|h| format!("{}={}", label(&h.id), text(h)))
                            .collect();
                        let pending = ids
                            .iter()
                            .filter(|(_, id)| turn.pending(id).is_some())
                            .map(|(l, _)| *l)
                            .collect();
                        self.seen.lock().unwrap().push(Seen { history, pending });
                        continue;
                    }
                    Step::Add(label) => StreamEvent::ItemAdded {
                        item: turn.item(
                            id(&mut ids, label, "msg"),
                            ItemKind::AssistantMessage { content: vec![] },
                        ),
                    },
                    Step::Delta(label, delta) => StreamEvent::ItemUpdated {
                        item_id: id(&mut ids, label, "msg"),
                        update: ItemUpdate::TextDelta {
                            content_index: 0,
                            delta: delta.into(),
                        },
                    },
                    Step::Finish(label) => {
                        turn.finish(&id(&mut ids, label, "msg")).await?;
                        continue;
                    }
                    Step::Widget(label, text) | Step::Replace(label, text) => {
                        let item = turn.item(
                            id(&mut ids, label, "wdg"),
                            ItemKind::Widget {
                                widget: widget(text),
                                copy_text: Some(text.into()),
                            },
                        );
                        if matches!(step, Step::Widget(..)) {
                            StreamEvent::ItemDone { item }
                        } else {
                            StreamEvent::ItemReplaced { item }
                        }
                    }
                    Step::Hidden(label) => StreamEvent::ItemDone {
                        item: turn.item(
                            id(&mut ids, label, "hcx"),
                            ItemKind::HiddenContextItem {
                                content: json!({"note": label}),
                            },
                        ),
                    },
                    Step::Remove(label) => StreamEvent::ItemRemoved {
                        item_id: id(&mut ids, label, "msg"),
                    },
                };
                turn.emit(event).await?;
            }
            Ok(())
        }

        async fn action<S: ChatStore, K: EventSink>(
            &self,
            _turn: &mut Turn<'_, S, K>,
            _action: &Action,
            _sender: Option<&ThreadItem>,
        ) -> Result<(), Interrupted> {
            Ok(())
        }

        async fn sync_action(
            &self,
            _user: &UserId,
            _thread: &ThreadMetadata,
            _action: &Action,
            _sender: Option<&ThreadItem>,
        ) -> Result<Option<ThreadItem>, ActionRefused> {
            Ok(None)
        }
    }

    /// Runs `threads.create` through `steps` to a client that stays.
    pub async fn replay(steps: Vec<Step>) -> Replayed {
        replay_into(steps, VecSink::default()).await
    }

    /// What a replay left behind.
    pub struct Replayed {
        /// The stored items after the user's message.
        pub items: Vec<ThreadItem>,
        pub events: Vec<Value>,
        /// What each [`Step::Look`] saw.
        pub seen: Vec<Seen>,
        /// The stored thread.
        pub thread: ThreadMetadata,
    }

    /// Runs `threads.create` through `steps` into `sink`.
    pub async fn replay_into(steps: Vec<Step>, mut sink: VecSink) -> Replayed {
        let replay = Replay {
            steps,
            seen: Default::default(),
        };
        let engine = Engine::new(InMemoryChat::default(), replay);
        let body = json!({"type": "threads.create", "params": {"input": message("go")}});
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        drive::streaming(
            &engine,
            Caller::new(user("alice")),
            request,
            &OpenGate,
            far(),
        )
        .await
        .unwrap()
        .run(&mut sink)
        .await;
        let events = sink.json();
        for event in &events {
            chatkit_contract::check_event(event).unwrap_or_else(|e| panic!("{event}\n{e}"));
        }
        let thread = events[0]["thread"]["id"].as_str().unwrap();
        let mut items = engine.store().stored_items(&user("alice"), thread);
        items.remove(0);
        Replayed {
            items,
            seen: engine.responder().seen.lock().unwrap().clone(),
            thread: engine
                .store()
                .stored_thread(&user("alice"), thread)
                .unwrap(),
            events,
        }
    }

    pub fn text(item: &ThreadItem) -> String {
        match &item.kind {
            ItemKind::AssistantMessage { content } => content
                .iter()
                .map(|AssistantContent::OutputText { text, .. }| text.as_str())
                .collect(),
            ItemKind::Widget { copy_text, .. } => copy_text.clone().unwrap_or_default(),
            _ => String::new(),
        }
    }
}

use rules::Step;

#[tokio::test]
async fn finished_items_are_saved_with_their_streamed_text() {
    let rules::Replayed { items, events, .. } = rules::replay(vec![
        Step::Add("a"),
        Step::Delta("a", "Hel"),
        Step::Delta("a", "lo"),
        Step::Finish("a"),
    ])
    .await;
    assert_eq!(kinds(&items), ["assistant_message"]);
    assert_eq!(rules::text(&items[0]), "Hello");
    let done = of_type(&events, "thread.item.done");
    assert_eq!(done.last().unwrap()["item"]["content"][0]["text"], "Hello");
}

#[tokio::test]
async fn an_item_that_is_only_added_is_not_saved() {
    let rules::Replayed { items, .. } =
        rules::replay(vec![Step::Add("a"), Step::Delta("a", "Hel")]).await;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test]
async fn replaced_items_are_saved_in_place() {
    let rules::Replayed { items, events, .. } = rules::replay(vec![
        Step::Widget("w", "before"),
        Step::Replace("w", "after"),
    ])
    .await;
    assert_eq!(items.len(), 1);
    assert_eq!(rules::text(&items[0]), "after");
    assert_eq!(of_type(&events, "thread.item.replaced").len(), 1);
}

#[tokio::test]
async fn removed_items_are_deleted() {
    let rules::Replayed { items, events, .. } = rules::replay(vec![
        Step::Add("a"),
        Step::Delta("a", "x"),
        Step::Finish("a"),
        Step::Remove("a"),
    ])
    .await;
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(of_type(&events, "thread.item.removed").len(), 1);
}

#[tokio::test]
async fn a_replaced_item_is_what_the_next_round_sees() {
    let run = rules::replay(vec![
        Step::Widget("w", "before"),
        Step::Replace("w", "after"),
        Step::Look,
    ])
    .await;
    assert_eq!(run.seen[0].history, ["user=", "w=after"]);
}

#[tokio::test]
async fn replacing_a_streamed_item_ends_its_streaming() {
    let run = rules::replay(vec![
        Step::Add("a"),
        Step::Delta("a", "draft"),
        Step::Add("b"),
        Step::Delta("b", "still going"),
        Step::Replace("a", "final"),
        Step::Look,
    ])
    .await;
    assert_eq!(run.seen[0].pending, ["b"]);
    assert_eq!(rules::text(&run.items[0]), "final");
}

#[tokio::test]
async fn a_removed_item_leaves_the_next_rounds_history() {
    let run = rules::replay(vec![
        Step::Add("a"),
        Step::Delta("a", "x"),
        Step::Finish("a"),
        Step::Add("b"),
        Step::Delta("b", "y"),
        Step::Finish("b"),
        Step::Remove("a"),
        Step::Look,
    ])
    .await;
    assert_eq!(run.seen[0].history, ["user=", "b=y"]);
}

#[tokio::test]
async fn removing_a_streamed_item_ends_its_streaming() {
    let run = rules::replay(vec![
        Step::Add("a"),
        Step::Delta("a", "x"),
        Step::Add("b"),
        Step::Delta("b", "y"),
        Step::Remove("a"),
        Step::Look,
    ])
    .await;
    assert_eq!(run.seen[0].pending, ["b"]);
}

#[tokio::test]
async fn a_disconnect_right_after_a_rename_still_saves_the_title() {
    // Every event the engine sends before the responder's first.
    let before = rules::replay(vec![]).await.events.len();
    let run = rules::replay_into(
        vec![
            Step::Title("Groceries"),
            Step::Add("a"),
            Step::Delta("a", "x"),
        ],
        VecSink::disconnecting_after(before),
    )
    .await;
    assert_eq!(run.thread.title.as_deref(), Some("Groceries"));
}

#[tokio::test]
async fn hidden_items_are_saved_but_never_sent() {
    let rules::Replayed { items, events, .. } = rules::replay(vec![Step::Hidden("h")]).await;
    assert_eq!(kinds(&items), ["hidden_context_item"]);
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains("hidden_context")),
        "{events:?}"
    );
}

#[tokio::test]
async fn hidden_items_are_left_out_of_threads_and_pages() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let note = ThreadItem {
        id: taskpilot_chatkit::ids::hidden(),
        thread_id: thread.clone(),
        created_at: taskpilot_domain::timestamp::now(),
        kind: ItemKind::SdkHiddenContext {
            content: "server note".into(),
        },
    };
    use taskpilot_chatkit::store::ChatStore;
    chat.store().save_item(&user("alice"), &note).await.unwrap();
    let got = chat
        .json(
            "alice",
            json!({"type": "threads.get_by_id", "params": {"thread_id": thread}}),
        )
        .await
        .unwrap();
    assert_eq!(got["items"]["data"].as_array().unwrap().len(), 2);
    let page = chat
        .json(
            "alice",
            json!({"type": "items.list", "params": {"thread_id": thread}}),
        )
        .await
        .unwrap();
    assert!(!page.to_string().contains("server note"));
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
}

// Disconnects.

#[tokio::test]
async fn a_disconnect_keeps_the_partial_answer_notes_it_and_stops_the_model() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    chat.model
        .push(Round::text("one two three four five six seven eight"));
    // The user's message, the options, the added item, its first part and two deltas.
    let body = json!({"type": "threads.add_user_message",
                      "params": {"thread_id": thread, "input": message("a long story")}});
    chat.stream_into("alice", body, VecSink::disconnecting_after(6))
        .await;
    assert!(chat.model.stopped_early(), "the model call was stopped");
    let items = chat.items("alice", &thread);
    assert_eq!(
        kinds(&items),
        [
            "user_message",
            "assistant_message",
            "user_message",
            "assistant_message",
            "sdk_hidden_context"
        ]
    );
    // As ck-py: the delta being sent when the client left is kept too.
    assert_eq!(rules::text(&items[3]), "one two three ");
    assert!(
        matches!(&items[4].kind, ItemKind::SdkHiddenContext { content } if content == CANCELLED_NOTE)
    );
    // The next turn tells the model.
    chat.model.push(Round::text("Sorry."));
    chat.say("alice", &thread, "go on").await;
    let input = chat.model.requests().pop().unwrap().input;
    assert!(
        input.contains(&ModelInput::user(CANCELLED_NOTE)),
        "{input:?}"
    );
}

// Paging.

/// A thread with `n` exchanges after the first (2 + 2n items).
async fn long_thread(chat: &Chat, n: usize) -> String {
    let thread = chat.thread("alice", "a0").await;
    for i in 1..=n {
        chat.model.push(Round::text(&format!("a{i}")));
        chat.say("alice", &thread, &format!("q{i}")).await;
    }
    thread
}

async fn all_pages(chat: &Chat, thread: &str, order: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = chat
            .json(
                "alice",
                json!({"type": "items.list", "params": {"thread_id": thread, "limit": limit,
                       "order": order, "after": after}}),
            )
            .await
            .unwrap();
        pages.push(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect(),
        );
        if page["has_more"] != true {
            assert!(page.get("after").is_none(), "{page}");
            return pages;
        }
        after = page["after"].clone();
    }
}

#[tokio::test]
async fn items_page_in_both_orders_each_item_once() {
    let chat = Chat::new();
    let thread = long_thread(&chat, 2).await;
    let ids: Vec<String> = chat
        .items("alice", &thread)
        .into_iter()
        .map(|i| i.id)
        .collect();
    let asc: Vec<String> = all_pages(&chat, &thread, "asc", 4).await.concat();
    assert_eq!(asc, ids);
    let pages = all_pages(&chat, &thread, "desc", 4).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
    let mut desc = pages.concat();
    desc.reverse();
    assert_eq!(desc, ids);
}

#[tokio::test]
async fn hidden_items_are_dropped_after_paging_so_a_page_may_be_short() {
    let chat = Chat::new();
    let thread = long_thread(&chat, 1).await;
    let note = ThreadItem {
        id: taskpilot_chatkit::ids::hidden(),
        thread_id: thread.clone(),
        created_at: taskpilot_domain::timestamp::now(),
        kind: ItemKind::SdkHiddenContext {
            content: "note".into(),
        },
    };
    use taskpilot_chatkit::store::ChatStore;
    chat.store().save_item(&user("alice"), &note).await.unwrap();
    let pages = all_pages(&chat, &thread, "desc", 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 1]);
}

#[tokio::test]
async fn threads_page_newest_first_and_a_zero_limit_is_the_default_page() {
    let chat = Chat::new();
    let mut made = Vec::new();
    for i in 0..3 {
        made.push(chat.thread("alice", &format!("a{i}")).await);
    }
    let first = chat
        .json(
            "alice",
            json!({"type": "threads.list", "params": {"limit": 2}}),
        )
        .await
        .unwrap();
    assert_eq!(first["data"][0]["id"], made[2].as_str());
    assert_eq!(first["has_more"], true);
    assert_eq!(first["data"][1]["id"], made[1].as_str());
    let rest = chat
        .json(
            "alice",
            json!({"type": "threads.list", "params": {"limit": 2, "after": first["after"]}}),
        )
        .await
        .unwrap();
    assert_eq!(rest["data"][0]["id"], made[0].as_str());
    let all = chat
        .json(
            "alice",
            json!({"type": "threads.list", "params": {"limit": 0}}),
        )
        .await
        .unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
}

// The tool loop.

#[tokio::test]
async fn the_tool_loop_stops_after_the_configured_rounds() {
    let chat = Chat::with_steps(3);
    for _ in 0..5 {
        chat.model.push(Round::calls(&[("list_tasks", "{}")]));
    }
    let (_, events) = chat.create("alice", "loop forever", vec![]).await;
    assert_eq!(chat.model.requests().len(), 3);
    assert_eq!(
        of_type(&events, "thread.item.done").len(),
        2,
        "the message and one widget"
    );
    widget_of(&events);
}

#[tokio::test]
async fn parallel_tool_calls_all_run_and_all_outputs_reach_the_model() {
    let chat = Chat::new();
    let (_, events) = chat
        .create(
            "alice",
            "add a and b",
            vec![
                Round::calls(&[
                    ("create_task", r#"{"title":"a"}"#),
                    ("create_task", r#"{"title":"b"}"#),
                ]),
                Round::text("Added both."),
            ],
        )
        .await;
    let listing = chat
        .tasks()
        .list(&user("alice"), Default::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(listing.tasks.len(), 2);
    let input = &chat.model.requests()[1].input;
    let outputs = input
        .iter()
        .filter(|i| matches!(i, ModelInput::FunctionOutput { .. }))
        .count();
    let calls = input
        .iter()
        .filter(|i| matches!(i, ModelInput::FunctionCall(_)))
        .count();
    assert_eq!((calls, outputs), (2, 2));
    let copy = widget_of(&events)["copy_text"].as_str().unwrap().to_owned();
    assert!(copy.contains("[ ] a") && copy.contains("[ ] b"), "{copy}");
}

#[tokio::test]
async fn the_model_gets_the_history_the_tools_and_the_settings() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    chat.model.push(Round::text("Fine."));
    chat.say("alice", &thread, "how are you").await;
    let seen = chat.model.requests().pop().unwrap();
    assert_eq!(seen.model, "gpt-test");
    assert_eq!(
        seen.input,
        [
            ModelInput::user("hello"),
            ModelInput::assistant("Hi."),
            ModelInput::user("how are you")
        ]
    );
    assert_eq!(
        seen.tools,
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
}

// Model failures.

#[tokio::test]
async fn a_model_that_cannot_start_is_a_retryable_error_and_nothing_is_said() {
    let chat = Chat::new();
    let (thread, events) = chat.create("alice", "hello", vec![Round::StartFails]).await;
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["allow_retry"], true);
    assert_eq!(errors[0]["code"], "stream.error");
    assert_eq!(kinds(&chat.items("alice", &thread)), ["user_message"]);
}

#[tokio::test]
async fn a_model_failing_after_the_first_token_keeps_what_was_said() {
    let chat = Chat::new();
    let (thread, events) = chat
        .create(
            "alice",
            "hello",
            vec![Round::failed("one two three four", 2)],
        )
        .await;
    let kept = of_type(&events, "thread.item.done")
        .into_iter()
        .find(|e| e["item"]["type"] == "assistant_message")
        .unwrap();
    assert_eq!(kept["item"]["content"][0]["text"], "one two ");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let done_at = types
        .iter()
        .rposition(|t| *t == "thread.item.done")
        .unwrap();
    let error_at = types.iter().position(|t| *t == "error").unwrap();
    assert!(done_at < error_at, "{types:?}");
    assert_eq!(of_type(&events, "error")[0]["allow_retry"], true);
    let items = chat.items("alice", &thread);
    assert_eq!(rules::text(&items[1]), "one two ");
}

#[tokio::test]
async fn a_stream_cut_before_any_text_removes_the_empty_message() {
    let chat = Chat::new();
    let (thread, events) = chat
        .create("alice", "hello", vec![Round::broken("never said", 0)])
        .await;
    assert_eq!(of_type(&events, "thread.item.removed").len(), 1);
    assert_eq!(of_type(&events, "error").len(), 1);
    assert_eq!(kinds(&chat.items("alice", &thread)), ["user_message"]);
}

#[tokio::test]
async fn only_a_turn_that_reaches_the_model_keeps_its_admission() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let gate = drive::CountingGate::default();
    let streaming = |body: Value| {
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        drive::streaming(&chat.engine, chat.caller("alice"), request, &gate, far())
    };
    // A retry of an item the thread does not hold is an empty stream.
    let retry = streaming(json!({"type": "threads.retry_after_item",
        "params": {"thread_id": thread, "item_id": "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV"}}))
    .await
    .unwrap();
    assert!(!retry.reaches_model());
    assert_eq!(gate.counts(), (1, 1, 0), "admitted, then given back");
    // A message to a thread that is not there is refused, its turn given back.
    let gone = streaming(json!({"type": "threads.add_user_message",
        "params": {"thread_id": "thr_01ARZ3NDEKTSV4RRFFQ69G5FAV", "input": message("hi")}}))
    .await;
    assert!(matches!(gone, Err(ChatError::NotFound("thread"))));
    assert_eq!(gate.counts(), (2, 2, 0));
    // A new message keeps its turn.
    chat.model.push(Round::text("ok"));
    let said = streaming(json!({"type": "threads.add_user_message",
        "params": {"thread_id": thread, "input": message("more")}}))
    .await
    .unwrap();
    assert!(said.reaches_model());
    said.run(&mut VecSink::default()).await;
    assert_eq!(gate.counts(), (3, 2, 0));
}

#[tokio::test]
async fn a_storage_failure_mid_stream_is_a_retryable_error() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let body = json!({"type": "threads.add_user_message",
                      "params": {"thread_id": thread, "input": message("more")}});
    let request = Request::parse(body.to_string().as_bytes()).unwrap();
    chat.model.push(Round::text("Sure."));
    // The user's message is saved before the stream starts; storage fails
    // after, at the answer's write.
    let streaming = drive::streaming(
        &chat.engine,
        Caller::new(user("alice")),
        request,
        &OpenGate,
        far(),
    )
    .await
    .unwrap();
    chat.store().set_failing(true);
    // Storage is back once the client has been told: the failed write is fenced.
    let mut sink = Meddling::new(chat.store(), "error", recover);
    streaming.run(&mut sink).await;
    let error = sink.events.last().unwrap();
    assert_eq!(
        (error["type"].as_str(), &error["allow_retry"]),
        (Some("error"), &json!(true))
    );
    assert!(
        chat.journal
            .calls()
            .contains(&"store.fence_item".to_owned())
    );
    assert_eq!(
        kinds(&chat.items("alice", &thread)),
        ["user_message", "assistant_message", "user_message"],
        "the answer is not half-written"
    );
}

#[tokio::test]
async fn a_message_whose_write_fails_before_the_stream_is_refused_and_fenced() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    // The write times out although it lands.
    chat.store().set_landing_late(true);
    let err = chat
        .refused(
            "alice",
            json!({"type": "threads.add_user_message",
                   "params": {"thread_id": thread, "input": message("more")}}),
        )
        .await;
    chat.store().set_landing_late(false);
    assert!(matches!(err, ChatError::Store(_)), "{err:?}");
    assert_eq!(
        kinds(&chat.items("alice", &thread)),
        ["user_message", "assistant_message"]
    );
}

// Widgets.

#[tokio::test]
async fn done_then_undo_replace_the_widget_in_place() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    let (thread, widget) = chat.listed("alice").await;
    let action = |kind: &str| {
        json!({"thread_id": thread, "item_id": widget["id"],
               "action": {"type": kind, "payload": {"task_id": task.id}}})
    };
    let done = chat
        .stream(
            "alice",
            json!({"type": "threads.custom_action", "params": action("task.complete")}),
        )
        .await;
    let replaced = &done.json()[1]["item"];
    assert!(replaced["widget"].to_string().contains("task.reopen"));
    assert!(
        chat.tasks()
            .get(&user("alice"), &task.id)
            .await
            .unwrap()
            .completed
    );
    let undo = chat
        .json(
            "alice",
            json!({"type": "threads.sync_custom_action", "params": action("task.reopen")}),
        )
        .await
        .unwrap();
    assert_eq!(undo["updated_item"]["id"], widget["id"]);
    assert!(
        undo["updated_item"]["widget"]
            .to_string()
            .contains("task.complete")
    );
    assert!(
        !chat
            .tasks()
            .get(&user("alice"), &task.id)
            .await
            .unwrap()
            .completed
    );
    let stored: Vec<ThreadItem> = chat
        .items("alice", &thread)
        .into_iter()
        .filter(|i| matches!(i.kind, ItemKind::Widget { .. }))
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        serde_json::to_value(&stored[0]).unwrap(),
        undo["updated_item"]
    );
}

/// The actions of a task-list widget as `who`: the streamed events.
async fn act(
    chat: &Chat,
    who: &str,
    thread: &str,
    widget: &Value,
    kind: &str,
    payload: Value,
) -> Vec<Value> {
    chat.stream(
        who,
        json!({"type": "threads.custom_action", "params": {"thread_id": thread,
               "item_id": widget["id"], "action": {"type": kind, "payload": payload}}}),
    )
    .await
    .json()
}

/// The widget of a `thread.item.replaced` among `events`.
fn redrawn(events: &[Value]) -> Value {
    events
        .iter()
        .find(|e| e["type"] == "thread.item.replaced")
        .unwrap_or_else(|| panic!("{events:?}"))["item"]["widget"]
        .clone()
}

#[tokio::test]
async fn edit_shows_a_form_and_save_renames_and_sets_the_due_day() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    let (thread, widget) = chat.listed("alice").await;
    let id = json!({"task_id": task.id});
    let events = act(&chat, "alice", &thread, &widget, "task.edit", id.clone()).await;
    let form = &redrawn(&events)["children"][2]["children"][0];
    assert_eq!(form["type"], "Form");
    assert_eq!(form["onSubmitAction"]["type"], "task.save");
    assert_eq!(form["onSubmitAction"]["payload"], id);
    assert_eq!(form["children"][0]["defaultValue"], "Buy milk");
    assert_eq!(form["children"][1]["type"], "DatePicker");
    assert!(
        of_type(&events, "client_effect").is_empty(),
        "nothing changed"
    );
    // The form's fields come merged into the payload.
    let saved = json!({"task_id": task.id, "title": "Buy oat milk", "due_date": "2026-12-09T00:00:00.000Z"});
    let events = act(&chat, "alice", &thread, &widget, "task.save", saved).await;
    let now = chat.tasks().get(&user("alice"), &task.id).await.unwrap();
    assert_eq!(now.title, "Buy oat milk");
    assert_eq!(now.due_date.unwrap().canonical(), "2026-12-09");
    let row = &redrawn(&events)["children"][2]["children"][0];
    assert_eq!(row["type"], "Row");
    assert!(row.to_string().contains("Buy oat milk") && row.to_string().contains("Due 2026-12-09"));
    assert_eq!(
        of_type(&events, "client_effect")[0]["data"]["updated"],
        json!([task.id.as_str()])
    );
    // The stored widget is the redrawn one.
    let stored = chat
        .items("alice", &thread)
        .into_iter()
        .find(|i| i.id == widget["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::to_value(stored).unwrap()["widget"],
        redrawn(&events)
    );
}

#[tokio::test]
async fn a_cleared_due_date_is_cleared_and_a_bad_title_changes_nothing() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    chat.tasks()
        .update(
            &user("alice"),
            &task.id,
            taskpilot_domain::TaskChange {
                due_date: Some(Some("2026-12-24".parse().unwrap())),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let (thread, widget) = chat.listed("alice").await;
    let bad = json!({"task_id": task.id, "title": "  ", "due_date": ""});
    let events = act(&chat, "alice", &thread, &widget, "task.save", bad).await;
    let error = of_type(&events, "error");
    assert!(
        error[0]["message"].as_str().unwrap().starts_with("title"),
        "{events:?}"
    );
    assert_eq!(error[0]["allow_retry"], false);
    let unchanged = chat.tasks().get(&user("alice"), &task.id).await.unwrap();
    assert_eq!(unchanged.version, 2);
    let cleared = json!({"task_id": task.id, "title": "Buy milk", "due_date": ""});
    act(&chat, "alice", &thread, &widget, "task.save", cleared).await;
    let now = chat.tasks().get(&user("alice"), &task.id).await.unwrap();
    assert_eq!((now.due_date, now.title.as_str()), (None, "Buy milk"));
}

#[tokio::test]
async fn delete_asks_first_then_deletes_and_cancel_puts_the_row_back() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    chat.task("alice", "Pay rent").await;
    let (thread, widget) = chat.listed("alice").await;
    let id = json!({"task_id": task.id});
    let events = act(
        &chat,
        "alice",
        &thread,
        &widget,
        "task.delete.ask",
        id.clone(),
    )
    .await;
    let asked = redrawn(&events).to_string();
    assert!(asked.contains("Delete “Buy milk”?") && asked.contains("\"task.delete\""));
    assert!(
        chat.tasks().get(&user("alice"), &task.id).await.is_ok(),
        "not yet"
    );
    let events = act(&chat, "alice", &thread, &widget, "task.cancel", id.clone()).await;
    assert!(!redrawn(&events).to_string().contains("Delete “Buy milk”?"));
    let events = act(&chat, "alice", &thread, &widget, "task.delete", id).await;
    assert!(chat.tasks().get(&user("alice"), &task.id).await.is_err());
    let left = redrawn(&events).to_string();
    assert!(!left.contains("Buy milk") && left.contains("Pay rent"));
    assert_eq!(
        of_type(&events, "client_effect")[0]["data"]["deleted"],
        json!([task.id.as_str()])
    );
}

#[tokio::test]
async fn another_users_task_id_in_a_widget_action_changes_nothing() {
    let chat = Chat::new();
    chat.task("alice", "Mine").await;
    let bobs = chat.task("bob", "Bob's").await;
    let (thread, widget) = chat.listed("alice").await;
    for (kind, payload) in [
        ("task.save", json!({"task_id": bobs.id, "title": "pwned"})),
        ("task.delete", json!({"task_id": bobs.id})),
        ("task.edit", json!({"task_id": bobs.id})),
    ] {
        let events = act(&chat, "alice", &thread, &widget, kind, payload).await;
        assert_eq!(of_type(&events, "error").len(), 1, "{kind}");
        assert!(
            of_type(&events, "thread.item.replaced").is_empty(),
            "{kind}"
        );
    }
    let still = chat.tasks().get(&user("bob"), &bobs.id).await.unwrap();
    assert_eq!((still.title.as_str(), still.version), ("Bob's", 1));
}

#[tokio::test]
async fn a_synchronous_edit_answers_the_form() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    let (thread, widget) = chat.listed("alice").await;
    let answer = chat
        .json(
            "alice",
            json!({"type": "threads.sync_custom_action", "params": {"thread_id": thread,
                   "item_id": widget["id"], "action": {"type": "task.edit", "payload": {"task_id": task.id}}}}),
        )
        .await
        .unwrap();
    assert_eq!(
        answer["updated_item"]["widget"]["children"][2]["children"][0]["type"],
        "Form"
    );
}

#[tokio::test]
async fn an_action_on_an_item_that_is_not_a_widget_is_one_error_event() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let answer = chat.items("alice", &thread)[1].id.clone();
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.custom_action", "params": {"thread_id": thread,
                   "item_id": answer, "action": {"type": "task.complete", "payload": {}}}}),
        )
        .await;
    assert_eq!(
        sink.json(),
        [json!({"type": "error", "code": "stream.error", "allow_retry": false})]
    );
}

// Other users.

#[tokio::test]
async fn a_renamed_thread_answers_and_keeps_its_new_title() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let answer = chat
        .json(
            "alice",
            json!({"type": "threads.update", "params": {"thread_id": thread, "title": "Groceries"}}),
        )
        .await
        .unwrap();
    assert_eq!(answer["title"], "Groceries");
    let stored = chat.store().stored_thread(&user("alice"), &thread).unwrap();
    assert_eq!(stored.title.as_deref(), Some("Groceries"));
}

#[tokio::test]
async fn another_users_thread_is_not_found_for_every_operation() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let item = chat.items("alice", &thread)[0].id.clone();
    for body in [
        json!({"type": "threads.get_by_id", "params": {"thread_id": thread}}),
        json!({"type": "items.list", "params": {"thread_id": thread}}),
        json!({"type": "threads.update", "params": {"thread_id": thread, "title": "mine"}}),
        json!({"type": "threads.delete", "params": {"thread_id": thread}}),
        json!({"type": "items.feedback", "params": {"thread_id": thread, "item_ids": [item], "kind": "positive"}}),
        json!({"type": "threads.sync_custom_action", "params": {"thread_id": thread, "item_id": item, "action": {"type": "task.complete"}}}),
    ] {
        let err = chat.json("bob", body.clone()).await.err().unwrap();
        assert!(
            matches!(err, ChatError::NotFound("thread")),
            "{body}: {err:?}"
        );
    }
    for body in [
        json!({"type": "threads.add_user_message", "params": {"thread_id": thread, "input": message("mine")}}),
        json!({"type": "threads.retry_after_item", "params": {"thread_id": thread, "item_id": item}}),
        json!({"type": "threads.custom_action", "params": {"thread_id": thread, "item_id": item, "action": {"type": "task.complete"}}}),
        json!({"type": "threads.add_client_tool_output", "params": {"thread_id": thread, "result": {}}}),
    ] {
        let err = chat.refused("bob", body.clone()).await;
        assert!(
            matches!(err, ChatError::NotFound("thread")),
            "{body}: {err:?}"
        );
    }
    let listed = chat
        .json("bob", json!({"type": "threads.list", "params": {}}))
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));
    assert_eq!(chat.items("alice", &thread).len(), 2);
}

#[tokio::test]
async fn another_users_item_and_task_are_not_found() {
    let chat = Chat::new();
    let alices = chat.thread("alice", "Hi.").await;
    let alices_item = chat.items("alice", &alices)[0].id.clone();
    let bobs_task = chat.task("bob", "Bob's task").await;
    let (thread, widget) = chat.listed("alice").await;
    // An item of another thread is not found in this one.
    let err = chat
        .refused(
            "alice",
            json!({"type": "threads.custom_action", "params": {"thread_id": thread,
                   "item_id": alices_item, "action": {"type": "task.complete"}}}),
        )
        .await;
    assert!(matches!(err, ChatError::NotFound("item")), "{err:?}");
    // Bob's task through Alice's widget: refused, unchanged.
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.custom_action", "params": {"thread_id": thread,
                   "item_id": widget["id"], "action": {"type": "task.complete", "payload": {"task_id": bobs_task.id}}}}),
        )
        .await;
    let error = &sink.json()[1];
    assert_eq!(
        (error["type"].clone(), error["message"].clone()),
        (json!("error"), json!("that task is not in this list"))
    );
    // Without a widget, the task service finds no such task of Alice's.
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.custom_action", "params": {"thread_id": thread,
                   "action": {"type": "task.complete", "payload": {"task_id": bobs_task.id}}}}),
        )
        .await;
    assert_eq!(sink.json()[1]["message"], "that task no longer exists");
    assert!(
        !chat
            .tasks()
            .get(&user("bob"), &bobs_task.id)
            .await
            .unwrap()
            .completed
    );
    // And through the model's tools.
    chat.model
        .push(Round::calls(&[(
            "complete_task",
            &format!(r#"{{"task_id":"{}"}}"#, bobs_task.id),
        )]))
        .push(Round::text("Could not."));
    chat.say("alice", &thread, "complete bob's").await;
    let outputs: Vec<ModelInput> = chat.model.requests().pop().unwrap().input;
    assert!(
        outputs.iter().any(|i| matches!(i, ModelInput::FunctionOutput { output, .. } if output.contains("not_found"))),
        "{outputs:?}"
    );
    assert!(
        !chat
            .tasks()
            .get(&user("bob"), &bobs_task.id)
            .await
            .unwrap()
            .completed
    );
}

// Client tools.

#[tokio::test]
async fn a_client_tool_output_completes_the_pending_call_and_the_assistant_goes_on() {
    use taskpilot_chatkit::store::ChatStore;
    use taskpilot_chatkit::types::ToolCallStatus;
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let call = pending_call(&thread, "call_1");
    chat.store().save_item(&user("alice"), &call).await.unwrap();
    chat.model.push(Round::text("Got it."));
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.add_client_tool_output",
                   "params": {"thread_id": thread, "result": {"selected": 2}}}),
        )
        .await;
    assert_eq!(sink.types()[0], "stream_options");
    let stored = chat.items("alice", &thread);
    assert!(matches!(
        &stored[2].kind,
        ItemKind::ClientToolCall { status: ToolCallStatus::Completed, output: Some(o), .. } if o == &json!({"selected": 2})
    ));
    assert_eq!(rules::text(&stored[3]), "Got it.");
}

/// A client tool call of `thread`, still waiting for its output.
fn pending_call(thread: &str, call_id: &str) -> ThreadItem {
    use taskpilot_chatkit::types::ToolCallStatus;
    ThreadItem {
        id: taskpilot_chatkit::ids::new("tc"),
        thread_id: thread.to_owned(),
        created_at: taskpilot_domain::timestamp::now(),
        kind: ItemKind::ClientToolCall {
            status: ToolCallStatus::Pending,
            call_id: call_id.into(),
            name: "get_selection".into(),
            arguments: json!({}),
            output: None,
        },
    }
}

#[tokio::test]
async fn a_client_tool_output_drops_older_calls_left_pending() {
    use taskpilot_chatkit::store::ChatStore;
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let older = pending_call(&thread, "call_1");
    let newest = pending_call(&thread, "call_2");
    chat.store()
        .save_item(&user("alice"), &older)
        .await
        .unwrap();
    chat.store()
        .save_item(&user("alice"), &newest)
        .await
        .unwrap();
    chat.model.push(Round::text("Got it."));
    chat.stream(
        "alice",
        json!({"type": "threads.add_client_tool_output",
               "params": {"thread_id": thread, "result": {"selected": 1}}}),
    )
    .await;
    let ids: Vec<String> = chat
        .items("alice", &thread)
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert!(
        !ids.contains(&older.id),
        "the stale call was deleted: {ids:?}"
    );
    assert!(ids.contains(&newest.id), "the answered call stays: {ids:?}");
}

#[tokio::test]
async fn a_client_tool_output_with_nothing_stale_deletes_nothing() {
    use taskpilot_chatkit::store::ChatStore;
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let call = pending_call(&thread, "call_1");
    chat.store().save_item(&user("alice"), &call).await.unwrap();
    chat.model.push(Round::text("Got it."));
    let mark = chat.journal.calls().len();
    chat.stream(
        "alice",
        json!({"type": "threads.add_client_tool_output",
               "params": {"thread_id": thread, "result": {}}}),
    )
    .await;
    let calls = chat.journal.calls()[mark..].to_vec();
    assert!(
        !calls.iter().any(|c| c.starts_with("store.delete")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_client_tool_output_without_a_pending_call_is_refused() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let err = chat
        .refused(
            "alice",
            json!({"type": "threads.add_client_tool_output", "params": {"thread_id": thread, "result": {}}}),
        )
        .await;
    assert!(matches!(err, ChatError::NoPendingToolCall), "{err:?}");
}

// The critical path.

#[tokio::test]
async fn a_message_reaches_the_model_after_one_read_and_one_write() {
    let chat = Chat::new();
    let thread = long_thread(&chat, 1).await;
    let mark = chat.journal.calls().len();
    chat.model.push(Round::text("ok"));
    chat.say("alice", &thread, "next").await;
    let turn: Vec<String> = chat.journal.calls()[mark..].to_vec();
    let before: Vec<&str> = turn
        .iter()
        .take_while(|c| *c != "model.start")
        .map(String::as_str)
        .collect();
    assert_eq!(before, ["store.load_recent", "store.save_item"]);
    assert_eq!(
        chat.model.requests().pop().unwrap().input.len(),
        5,
        "the whole history came with that one read"
    );
}

#[tokio::test]
async fn a_turn_loads_at_most_the_history_window() {
    let chat = Chat::new();
    let thread = long_thread(&chat, HISTORY / 2 + 2).await;
    chat.model.push(Round::text("ok"));
    chat.say("alice", &thread, "next").await;
    let input = chat.model.requests().pop().unwrap().input;
    // The read's latest HISTORY items and the new message, from the window's
    // start (an anchor leaving at least WINDOW_MIN items).
    let mut items = chat.items("alice", &thread);
    items.truncate(items.len() - 1); // the answer
    let history = &items[items.len() - HISTORY - 1..];
    let start = window_start(history, HISTORY);
    assert!(start <= HISTORY - WINDOW_MIN);
    assert_eq!(
        input.len(),
        HISTORY + 1 - start,
        "the window and the new message"
    );
    assert_eq!(input.last().unwrap(), &ModelInput::user("next"));
}

#[tokio::test]
async fn retry_reaches_back_past_the_history_window() {
    let chat = Chat::new();
    let thread = long_thread(&chat, HISTORY / 2 + 2).await;
    let first = chat.items("alice", &thread)[0].id.clone();
    chat.model.push(Round::text("Again."));
    chat.stream(
        "alice",
        json!({"type": "threads.retry_after_item",
               "params": {"thread_id": thread, "item_id": first}}),
    )
    .await;
    assert_eq!(
        kinds(&chat.items("alice", &thread)),
        ["user_message", "assistant_message"]
    );
    assert_eq!(
        chat.model.requests().pop().unwrap().input,
        [ModelInput::user("hello")]
    );
}

#[tokio::test]
async fn retry_past_the_window_sends_the_model_a_whole_window_ending_at_the_retried_message() {
    let chat = Chat::new();
    // Question `n` (item 2n) lies before the last HISTORY items, with more
    // than HISTORY items before it.
    let n = HISTORY / 2;
    let thread = long_thread(&chat, 2 * HISTORY).await;
    let question = chat.items("alice", &thread)[2 * n].id.clone();
    chat.model.push(Round::text("Again."));
    chat.stream(
        "alice",
        json!({"type": "threads.retry_after_item",
               "params": {"thread_id": thread, "item_id": question}}),
    )
    .await;
    let input = chat.model.requests().pop().unwrap().input;
    let read = &chat.items("alice", &thread)[..=2 * n];
    let read = &read[read.len() - HISTORY..];
    let start = window_start(read, HISTORY);
    assert!(start <= HISTORY - WINDOW_MIN);
    assert_eq!(
        input.len(),
        HISTORY - start,
        "the window, the retried message last"
    );
    assert_eq!(input.last().unwrap(), &ModelInput::user(format!("q{n}")));
}

#[tokio::test]
async fn only_requests_that_ask_the_model_are_counted_as_turns() {
    let chat = Chat::new();
    let task = chat.task("alice", "Buy milk").await;
    let (thread, widget) = chat.listed("alice").await;
    let first = chat.items("alice", &thread)[0].id.clone();
    let turns = [
        json!({"type": "threads.create", "params": {"input": message("hi")}}),
        json!({"type": "threads.add_user_message",
               "params": {"thread_id": thread, "input": message("more")}}),
        json!({"type": "threads.retry_after_item",
               "params": {"thread_id": thread, "item_id": first}}),
    ];
    for body in turns {
        assert!(chat.reaches_model("alice", body.clone()).await, "{body}");
    }
    let no_turns = [
        json!({"type": "threads.retry_after_item",
               "params": {"thread_id": thread, "item_id": "msg_01kbnotthere0000000000000"}}),
        json!({"type": "threads.custom_action", "params": {"thread_id": thread,
               "item_id": widget["id"],
               "action": {"type": "task.complete", "payload": {"task_id": task.id}}}}),
    ];
    for body in no_turns {
        assert!(!chat.reaches_model("alice", body.clone()).await, "{body}");
    }
}

// Synchronous actions and misuse.

#[tokio::test]
async fn a_sync_action_the_assistant_does_not_know_is_refused() {
    let chat = Chat::new();
    let (thread, widget) = chat.listed("alice").await;
    let err = chat
        .json(
            "alice",
            json!({"type": "threads.sync_custom_action", "params": {"thread_id": thread,
                   "item_id": widget["id"], "action": {"type": "task.explode", "payload": {}}}}),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ChatError::Refused(r) if r.0.contains("task.explode")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_sync_action_on_an_item_that_is_not_a_widget_is_refused() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let answer = chat.items("alice", &thread)[1].id.clone();
    let err = chat
        .json(
            "alice",
            json!({"type": "threads.sync_custom_action", "params": {"thread_id": thread,
                   "item_id": answer, "action": {"type": "task.complete", "payload": {}}}}),
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, ChatError::NotAWidget(id) if id == answer));
}

#[tokio::test]
async fn every_model_request_carries_the_users_day_zone_and_language() {
    // 22:00 on Wednesday 2 December in Honolulu: Thursday in UTC.
    let chat = Chat::new().at(
        taskpilot_chatkit::zone::Zone::named("Pacific/Honolulu").unwrap(),
        "2026-12-03T08:00:00Z",
        Some("fr-FR"),
    );
    chat.create(
        "alice",
        "what is due tomorrow?",
        vec![
            Round::calls(&[("list_tasks", r#"{"due_before":"2026-12-04"}"#)]),
            Round::text("Nothing."),
        ],
    )
    .await;
    let requests = chat.model.requests();
    assert_eq!(requests.len(), 2);
    for seen in &requests {
        // The instructions stay the same for everyone: a cacheable prefix.
        assert_eq!(seen.instructions, "Be brief.");
        let context = context_of(seen);
        for expected in [
            "Now: Wednesday 2026-12-02 22:00, time zone Pacific/Honolulu (UTC-10:00)",
            "Today: 2026-12-02. Tomorrow: 2026-12-03.",
            "language: fr-FR",
        ] {
            assert!(context.contains(expected), "{context}");
        }
    }
    // The context follows the conversation: the first round ends with it,
    // the second goes on after it with the tool's call and output.
    assert_eq!(requests[0].context_at, Some(requests[0].input.len()));
    assert_eq!(requests[1].context_at, requests[0].context_at);
    assert_eq!(
        requests[1].input[..requests[0].input.len()],
        requests[0].input[..]
    );
}

/// The per-turn context a request carries (its developer message).
fn context_of(seen: &taskpilot_chatkit::testing::SeenRequest) -> String {
    seen.context.clone().unwrap_or_default()
}

#[tokio::test]
async fn the_request_prefix_stays_the_same_from_turn_to_turn() {
    let chat = Chat::new();
    let (thread, _) = chat
        .create("alice", "hello", vec![Round::text("Hi.")])
        .await;
    chat.model.push(Round::text("Fine."));
    chat.say("alice", &thread, "how are you").await;
    let requests = chat.model.requests();
    let (one, two) = (&requests[0], &requests[1]);
    assert_eq!(one.instructions, two.instructions);
    assert_eq!(one.tools, two.tools);
    // Turn 2 starts with everything turn 1 sent but its context, which
    // comes last in both.
    assert_eq!(two.input[..one.input.len()], one.input[..]);
    assert_eq!(
        two.input[one.input.len()..],
        [
            ModelInput::assistant("Hi."),
            ModelInput::user("how are you")
        ]
    );
    assert_eq!(one.context_at, Some(one.input.len()));
    assert_eq!(two.context_at, Some(two.input.len()));
}

#[tokio::test]
async fn tomorrow_from_the_model_is_the_users_tomorrow() {
    // 00:30 on Thursday 3 December on Kiritimati (UTC+14): Wednesday in UTC.
    let chat = Chat::new().at(
        taskpilot_chatkit::zone::Zone::named("Pacific/Kiritimati").unwrap(),
        "2026-12-02T10:30:00Z",
        None,
    );
    chat.create(
        "alice",
        "remind me to buy milk tomorrow at 9",
        vec![
            Round::calls(&[(
                "create_task",
                r#"{"title":"Buy milk","due_date":"tomorrow"}"#,
            )]),
            Round::calls(&[(
                "create_task",
                r#"{"title":"Call mum","due_date":"2026-12-04T09:00"}"#,
            )]),
            Round::text("Added."),
        ],
    )
    .await;
    let mut tasks = chat.task_list("alice").await;
    tasks.sort_by(|a, b| a.title.cmp(&b.title));
    let due: Vec<String> = tasks
        .iter()
        .map(|t| t.due_date.unwrap().canonical())
        .collect();
    assert_eq!(due, ["2026-12-04", "2026-12-03T19:00:00Z"]);
}

// The page stays in sync.

#[tokio::test]
async fn a_turn_that_changes_tasks_ends_with_one_tasks_changed_effect() {
    let chat = Chat::new();
    let milk = chat.task("alice", "Buy milk").await;
    let old = chat.task("alice", "Old plan").await;
    let (_, events) = chat
        .create(
            "alice",
            "add bread, finish milk, drop the old plan",
            vec![
                Round::calls(&[
                    ("create_task", r#"{"title":"Bread"}"#),
                    ("complete_task", &format!(r#"{{"task_id":"{}"}}"#, milk.id)),
                ]),
                Round::calls(&[("delete_task", &format!(r#"{{"task_id":"{}"}}"#, old.id))]),
                Round::text("Done."),
            ],
        )
        .await;
    let bread = chat
        .task_list("alice")
        .await
        .into_iter()
        .find(|t| t.title == "Bread")
        .unwrap();
    let effects = of_type(&events, "client_effect");
    assert_eq!(effects.len(), 1, "{events:?}");
    assert_eq!(
        effects[0],
        &json!({"type": "client_effect", "name": "tasks.changed",
                "data": {"created": [bread.id], "updated": [milk.id], "deleted": [old.id]}})
    );
    // After the answer and the widget, before the title.
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let at = types.iter().position(|t| *t == "client_effect").unwrap();
    assert_eq!(types[at - 1], "thread.item.done");
    assert_eq!(events[at - 1]["item"]["type"], "widget");
    assert_eq!(types[at + 1..], ["thread.updated"]);
}

#[tokio::test]
async fn a_task_deleted_after_it_was_listed_leaves_the_turns_widget() {
    let chat = Chat::new();
    chat.task("alice", "Buy milk").await;
    let old = chat.task("alice", "Old plan").await;
    let (_, events) = chat
        .create(
            "alice",
            "what's left? drop the old plan",
            vec![
                Round::calls(&[("list_tasks", "{}")]),
                Round::calls(&[("delete_task", &format!(r#"{{"task_id":"{}"}}"#, old.id))]),
                Round::text("Done."),
            ],
        )
        .await;
    let widget = widget_of(&events).to_string();
    assert!(widget.contains("Buy milk"), "{widget}");
    assert!(!widget.contains("Old plan"), "{widget}");
}

#[tokio::test]
async fn tool_calls_within_the_cap_count_no_refusal() {
    let chat = Chat::new();
    chat.create(
        "alice",
        "add bread",
        vec![
            Round::calls(&[("create_task", r#"{"title":"Bread"}"#)]),
            Round::text("Added."),
        ],
    )
    .await;
    assert_eq!(chat.task_list("alice").await.len(), 1);
    assert!(
        !chat
            .metrics
            .counted(taskpilot_assistant::REFUSED_TOOL_CALLS)
    );
}

#[tokio::test]
async fn listing_or_failing_tools_change_nothing_and_send_no_effect() {
    let chat = Chat::new();
    chat.task("alice", "Buy milk").await;
    let (_, events) = chat
        .create(
            "alice",
            "what is left? and complete the ghost",
            vec![
                Round::calls(&[
                    ("list_tasks", "{}"),
                    (
                        "complete_task",
                        r#"{"task_id":"01KB0000000000000000000000"}"#,
                    ),
                    ("create_task", r#"{"title":"   "}"#),
                ]),
                Round::text("One is left."),
            ],
        )
        .await;
    assert!(of_type(&events, "client_effect").is_empty(), "{events:?}");
}

#[tokio::test]
async fn tasks_changed_before_the_model_failed_are_still_announced() {
    let chat = Chat::new();
    let (_, events) = chat
        .create(
            "alice",
            "add bread",
            vec![
                Round::calls(&[("create_task", r#"{"title":"Bread"}"#)]),
                Round::failed("I added", 1),
            ],
        )
        .await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let effect = of_type(&events, "client_effect");
    assert_eq!(effect.len(), 1, "{types:?}");
    assert_eq!(effect[0]["data"]["created"].as_array().unwrap().len(), 1);
    assert!(types.contains(&"error"), "{types:?}");
}

#[tokio::test]
async fn each_tool_call_shows_progress_before_it_runs() {
    let chat = Chat::new();
    let milk = chat.task("alice", "Buy milk").await;
    let (_, events) = chat
        .create(
            "alice",
            "list, then complete milk, then add bread",
            vec![
                Round::calls(&[("list_tasks", "{}")]),
                Round::calls(&[
                    ("complete_task", &format!(r#"{{"task_id":"{}"}}"#, milk.id)),
                    ("create_task", r#"{"title":"Bread"}"#),
                ]),
                Round::text("Done."),
            ],
        )
        .await;
    let progress: Vec<(String, String)> = of_type(&events, "progress_update")
        .iter()
        .map(|e| {
            (
                e["icon"].as_str().unwrap().to_owned(),
                e["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [
            ("search".to_owned(), "Looking at your tasks…".to_owned()),
            (
                "check-circle".to_owned(),
                "Completing “Buy milk”…".to_owned()
            ),
            ("plus".to_owned(), "Creating “Bread”…".to_owned()),
        ]
    );
    // Progress is transient: nothing of it is stored.
    let thread = events[0]["thread"]["id"].as_str().unwrap();
    let stored = serde_json::to_string(&chat.items("alice", thread)).unwrap();
    assert!(!stored.contains("Looking at your tasks"), "{stored}");
}

// The composer's model picker and tool menu.

fn chosen(text: &str, options: Value) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": options})
}

#[tokio::test]
async fn a_picked_model_answers_its_turn_and_the_retry_of_it() {
    let chat = Chat::with_models(&["o4-mini"]);
    chat.model.push(Round::text("Hi."));
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.create",
                   "params": {"input": chosen("hello", json!({"model": "o4-mini"}))}}),
        )
        .await;
    let events = sink.json();
    let thread = events[0]["thread"]["id"].as_str().unwrap().to_owned();
    let said = events[1]["item"].clone();
    assert_eq!(said["inference_options"]["model"], "o4-mini");
    chat.model.push(Round::text("Hi again."));
    chat.stream(
        "alice",
        json!({"type": "threads.retry_after_item",
               "params": {"thread_id": thread, "item_id": said["id"]}}),
    )
    .await;
    // A message that picks nothing gets the default model.
    chat.model.push(Round::text("Sure."));
    chat.say("alice", &thread, "and then?").await;
    let models: Vec<String> = chat.model.requests().into_iter().map(|r| r.model).collect();
    assert_eq!(models, ["o4-mini", "o4-mini", "gpt-test"]);
}

#[tokio::test]
async fn a_model_off_the_list_is_refused_naming_the_allowed_ones_and_nothing_is_stored() {
    let chat = Chat::with_models(&["o4-mini"]);
    let refused = chat
        .refused(
            "alice",
            json!({"type": "threads.create",
                   "params": {"input": chosen("hello", json!({"model": "gpt-4o"}))}}),
        )
        .await;
    let ChatError::Options(invalid) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(
        invalid.0,
        "model `gpt-4o` is not offered; choose one of: gpt-test, o4-mini"
    );
    let threads = chat
        .json("alice", json!({"type": "threads.list", "params": {}}))
        .await
        .unwrap();
    assert_eq!(threads["data"], json!([]));
    assert!(chat.model.requests().is_empty());
}

#[tokio::test]
async fn a_tool_menu_choice_forces_its_tool_in_the_first_round_only() {
    let chat = Chat::new();
    chat.model
        .push(Round::calls(&[("create_task", r#"{"title":"buy milk"}"#)]))
        .push(Round::text("Added."));
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.create",
                   "params": {"input": chosen("buy milk", json!({"tool_choice": {"id": "add_task"}}))}}),
        )
        .await;
    let thread = sink.json()[0]["thread"]["id"].as_str().unwrap().to_owned();
    // The next message chose nothing: the model chooses.
    chat.model.push(Round::text("Fine."));
    chat.say("alice", &thread, "thanks").await;
    let forced: Vec<Option<String>> = chat
        .model
        .requests()
        .into_iter()
        .map(|r| r.tool_choice)
        .collect();
    assert_eq!(forced, [Some("create_task".to_owned()), None, None]);
    assert_eq!(chat.task_list("alice").await[0].title, "buy milk");
    // Every tool stays offered.
    assert_eq!(chat.model.requests()[0].tools.len(), 7);
}

#[tokio::test]
async fn plan_my_day_lists_the_tasks_first_and_says_what_to_do_with_them() {
    let chat = Chat::new();
    chat.model
        .push(Round::calls(&[("list_tasks", "{}")]))
        .push(Round::text("First this, then that."));
    chat.stream(
        "alice",
        json!({"type": "threads.create",
               "params": {"input": chosen("today", json!({"tool_choice": {"id": "plan_day"}}))}}),
    )
    .await;
    let requests = chat.model.requests();
    assert_eq!(requests[0].tool_choice.as_deref(), Some("list_tasks"));
    assert!(
        context_of(&requests[0]).contains("\"Plan my day\""),
        "{:?}",
        requests[0].input
    );
    // The note lasts the turn: every round of it carries it.
    assert!(context_of(&requests[1]).contains("\"Plan my day\""));
}

#[tokio::test]
async fn a_retried_message_is_forced_again_but_a_tool_output_turn_is_not() {
    let chat = Chat::new();
    chat.model
        .push(Round::calls(&[("complete_task", r#"{"task":"milk"}"#)]));
    chat.model.push(Round::text("Nothing matched."));
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.create",
                   "params": {"input": chosen("milk", json!({"tool_choice": {"id": "complete_task"}}))}}),
        )
        .await;
    let events = sink.json();
    let thread = events[0]["thread"]["id"].as_str().unwrap().to_owned();
    chat.model.push(Round::text("Still nothing."));
    chat.stream(
        "alice",
        json!({"type": "threads.retry_after_item",
               "params": {"thread_id": thread, "item_id": events[1]["item"]["id"]}}),
    )
    .await;
    use taskpilot_chatkit::store::ChatStore;
    chat.store()
        .save_item(&user("alice"), &pending_call(&thread, "call_9"))
        .await
        .unwrap();
    chat.model.push(Round::text("Got it."));
    chat.stream(
        "alice",
        json!({"type": "threads.add_client_tool_output",
               "params": {"thread_id": thread, "result": {"shown": true}}}),
    )
    .await;
    let forced: Vec<Option<String>> = chat
        .model
        .requests()
        .into_iter()
        .map(|r| r.tool_choice)
        .collect();
    let complete = Some("complete_task".to_owned());
    assert_eq!(forced, [complete.clone(), None, complete, None]);
}

#[tokio::test]
async fn an_unknown_tool_id_is_refused_naming_the_menu() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let refused = chat
        .refused(
            "alice",
            json!({"type": "threads.add_user_message",
                   "params": {"thread_id": thread,
                              "input": chosen("x", json!({"tool_choice": {"id": "search"}}))}}),
        )
        .await;
    let ChatError::Options(invalid) = refused else {
        panic!("{refused:?}");
    };
    assert!(
        invalid
            .0
            .ends_with("the tool menu offers: add_task, complete_task, plan_day"),
        "{}",
        invalid.0
    );
    assert_eq!(chat.items("alice", &thread).len(), 2, "nothing was added");
}

// Tasks in answers are entities.

#[tokio::test]
async fn an_answer_naming_the_tasks_it_listed_annotates_them_where_they_are_named() {
    let chat = Chat::new();
    let milk = chat.task("alice", "buy milk").await;
    let rent = chat.task("alice", "pay rent").await;
    chat.task("alice", "walk the dog").await;
    let rounds = vec![
        Round::calls(&[("list_tasks", "{}")]),
        Round::text("Start with pay rent, then buy milk."),
    ];
    let (thread, events) = chat.create("alice", "what first?", rounds).await;
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["update"]["type"] == "assistant_message.content_part.annotation_added")
        .collect();
    assert_eq!(added.len(), 2, "only the tasks the answer names");
    assert_eq!(added[0]["update"]["annotation_index"], 0);
    assert_eq!(added[1]["update"]["annotation_index"], 1);
    let done = events
        .iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message")
        .unwrap();
    let annotations = done["item"]["content"][0]["annotations"].clone();
    assert_eq!(
        annotations,
        json!([
            {"type": "annotation", "index": "Start with pay rent".len(),
             "source": {"type": "entity", "id": rent.id.as_str(), "title": "pay rent",
                        "icon": "empty-circle", "interactive": true,
                        "data": {"task_id": rent.id.as_str()}}},
            {"type": "annotation", "index": "Start with pay rent, then buy milk".len(),
             "source": {"type": "entity", "id": milk.id.as_str(), "title": "buy milk",
                        "icon": "empty-circle", "interactive": true,
                        "data": {"task_id": milk.id.as_str()}}}
        ])
    );
    assert_eq!(added[0]["update"]["annotation"], annotations[0]);
    // Stored with the message: a reload shows them too.
    let stored = chat.items("alice", &thread);
    let answer = serde_json::to_value(stored.last().unwrap()).unwrap();
    let answer = if answer["type"] == "widget" {
        serde_json::to_value(&stored[stored.len() - 2]).unwrap()
    } else {
        answer
    };
    assert_eq!(answer["content"][0]["annotations"], annotations);
}

#[tokio::test]
async fn a_created_task_the_answer_does_not_name_is_annotated_at_the_end() {
    let chat = Chat::new();
    let rounds = vec![
        Round::calls(&[("create_task", r#"{"title":"buy oat milk"}"#)]),
        Round::text("Done, added it."),
    ];
    let (_, events) = chat.create("alice", "add oat milk", rounds).await;
    let done = events
        .iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "assistant_message")
        .unwrap();
    let annotation = &done["item"]["content"][0]["annotations"][0];
    assert_eq!(annotation["index"], "Done, added it.".len());
    assert_eq!(annotation["source"]["title"], "buy oat milk");
    let created = chat.task_list("alice").await;
    assert_eq!(
        annotation["source"]["data"]["task_id"],
        created[0].id.as_str()
    );
}

#[tokio::test]
async fn a_disconnect_after_an_annotation_keeps_it_with_the_partial_answer() {
    let annotated = |sink: &VecSink| {
        sink.json()
            .iter()
            .position(|e| e["update"]["type"] == "assistant_message.content_part.annotation_added")
    };
    let rounds = || {
        vec![
            Round::calls(&[("list_tasks", "{}")]),
            Round::text("Do buy milk, then pay rent."),
        ]
    };
    let body = json!({"type": "threads.create", "params": {"input": message("what now?")}});
    // Where the annotation comes in a whole stream...
    let whole = Chat::new();
    whole.task("alice", "buy milk").await;
    whole.task("alice", "pay rent").await;
    rounds().into_iter().for_each(|r| {
        whole.model.push(r);
    });
    let at = annotated(&whole.stream("alice", body.clone()).await).unwrap();
    // ...then a client that leaves right after the first (before the part is done).
    let chat = Chat::new();
    chat.task("alice", "buy milk").await;
    chat.task("alice", "pay rent").await;
    rounds().into_iter().for_each(|r| {
        chat.model.push(r);
    });
    let sink = chat
        .stream_into("alice", body, VecSink::disconnecting_after(at + 1))
        .await;
    let thread = sink.json()[0]["thread"]["id"].as_str().unwrap().to_owned();
    let kept = chat
        .items("alice", &thread)
        .into_iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .find(|i| i["type"] == "assistant_message")
        .unwrap();
    assert_eq!(
        kept["content"][0]["annotations"][0]["source"]["title"],
        "buy milk"
    );
}

#[tokio::test]
async fn an_answer_without_tools_has_no_annotations() {
    let chat = Chat::new();
    chat.task("alice", "buy milk").await;
    let (_, events) = chat
        .create("alice", "hi", vec![Round::text("Say buy milk.")])
        .await;
    assert!(
        events
            .iter()
            .all(|e| e["update"]["type"] != "assistant_message.content_part.annotation_added")
    );
}

// The client tool.

#[tokio::test]
async fn show_task_asks_the_page_and_its_answer_lets_the_assistant_go_on() {
    let chat = Chat::new();
    let milk = chat.task("alice", "buy milk").await;
    let args = json!({"task_id": milk.id.as_str()}).to_string();
    chat.model.push(Round::calls(&[("show_task", &args)]));
    let (thread, events) = chat.create("alice", "where is milk?", vec![]).await;
    let last = events.last().unwrap();
    let call = events
        .iter()
        .find(|e| e["item"]["type"] == "client_tool_call")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(call["type"], "thread.item.done");
    assert!(call["item"]["id"].as_str().unwrap().starts_with("ctc_"));
    assert_eq!(call["item"]["status"], "pending");
    assert_eq!(call["item"]["name"], "show_task");
    assert_eq!(
        call["item"]["arguments"],
        json!({"task_id": milk.id.as_str()})
    );
    assert_eq!(
        last["type"], "thread.updated",
        "the turn ends there (its title)"
    );
    assert_eq!(chat.model.requests().len(), 1, "no round after the call");

    chat.model.push(Round::text("There it is."));
    let sink = chat
        .stream(
            "alice",
            json!({"type": "threads.add_client_tool_output",
                   "params": {"thread_id": thread, "result": {"shown": true}}}),
        )
        .await;
    assert!(
        sink.json()
            .iter()
            .any(|e| e["item"]["type"] == "assistant_message")
    );
    let input = &chat.model.requests()[1].input;
    let n = input.len();
    assert!(
        matches!(&input[n - 2], ModelInput::FunctionCall(c) if c.name == "show_task" && c.arguments == args),
        "{input:?}"
    );
    assert!(
        matches!(&input[n - 1], ModelInput::FunctionOutput { output, .. } if output == r#"{"shown":true}"#),
        "{input:?}"
    );
}

#[tokio::test]
async fn show_task_for_a_task_the_user_does_not_have_never_reaches_the_page() {
    let chat = Chat::new();
    let theirs = chat.task("bob", "bob's task").await;
    let args = json!({"task_id": theirs.id.as_str()}).to_string();
    chat.model
        .push(Round::calls(&[("show_task", &args)]))
        .push(Round::text("I cannot find it."));
    let (_, events) = chat.create("alice", "show it", vec![]).await;
    assert!(
        events
            .iter()
            .all(|e| e["item"]["type"] != "client_tool_call")
    );
    let input = &chat.model.requests()[1].input;
    assert!(
        matches!(input.last(), Some(ModelInput::FunctionOutput { output, .. }) if output.contains("not_found")),
        "{input:?}"
    );
}

#[tokio::test]
async fn only_the_first_show_task_of_a_round_reaches_the_page() {
    let chat = Chat::new();
    let (a, b) = (chat.task("alice", "a").await, chat.task("alice", "b").await);
    let first = json!({"task_id": a.id.as_str()}).to_string();
    let second = json!({"task_id": b.id.as_str()}).to_string();
    chat.model.push(Round::calls(&[
        ("show_task", &first),
        ("show_task", &second),
    ]));
    let (_, events) = chat.create("alice", "show both", vec![]).await;
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["item"]["type"] == "client_tool_call")
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["item"]["arguments"]["task_id"], a.id.as_str());
}

// Feedback.

#[tokio::test]
async fn feedback_is_kept_one_rating_per_item_and_goes_with_the_thread() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let items = chat.items("alice", &thread);
    let (first, second) = (items[0].id.clone(), items[1].id.clone());
    let rate = |ids: Vec<&str>, kind: &str| {
        json!({"type": "items.feedback",
               "params": {"thread_id": thread, "item_ids": ids, "kind": kind}})
    };
    assert_eq!(
        chat.json("alice", rate(vec![&first, &second, &first], "positive"))
            .await
            .unwrap(),
        json!({})
    );
    // A later rating of the same item replaces the earlier one.
    chat.json("alice", rate(vec![&second], "negative"))
        .await
        .unwrap();
    let stored: Vec<(String, String, &str)> = chat
        .store()
        .stored_feedback(&user("alice"))
        .into_iter()
        .map(|f| (f.thread_id, f.item_id, f.kind.as_str()))
        .collect();
    assert_eq!(
        stored,
        [
            (thread.clone(), first.clone(), "positive"),
            (thread.clone(), second.clone(), "negative")
        ]
    );
    chat.json(
        "alice",
        json!({"type": "threads.delete", "params": {"thread_id": thread}}),
    )
    .await
    .unwrap();
    assert!(chat.store().stored_feedback(&user("alice")).is_empty());
}

#[tokio::test]
async fn feedback_naming_an_unknown_item_stores_nothing() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    let item = chat.items("alice", &thread)[0].id.clone();
    let err = chat
        .json(
            "alice",
            json!({"type": "items.feedback", "params": {"thread_id": thread,
                   "item_ids": [item, "msg_01KB0000000000000000000000"], "kind": "positive"}}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::NotFound("item")), "{err:?}");
    assert!(chat.store().stored_feedback(&user("alice")).is_empty());
    // An empty list is a no-op, as in the reference SDK.
    chat.json(
        "alice",
        json!({"type": "items.feedback", "params": {"thread_id": thread, "item_ids": [], "kind": "negative"}}),
    )
    .await
    .unwrap();
    assert!(chat.store().stored_feedback(&user("alice")).is_empty());
}

#[test]
fn feedback_on_too_many_items_is_refused_before_any_read() {
    let ids: Vec<String> = (0..51).map(|i| format!("msg_{i}")).collect();
    let body = json!({"type": "items.feedback", "params": {"thread_id": "thr_1", "item_ids": ids, "kind": "positive"}});
    let err = Request::parse(body.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("params.item_ids"), "{err}");
}

// Asking instead of guessing.

/// Alice has two milk tasks and one bread task; "complete milk" asks which.
async fn asked(chat: &Chat) -> (String, Value, Vec<Value>, [Task; 2]) {
    let older = chat.task("alice", "Buy milk").await;
    let newer = chat.task("alice", "Buy oat milk").await;
    chat.task("alice", "Buy bread").await;
    let (thread, events) = chat
        .create(
            "alice",
            "complete milk",
            vec![Round::calls(&[("complete_task", r#"{"task":"milk"}"#)])],
        )
        .await;
    let question = of_type(&events, "thread.item.done")
        .into_iter()
        .map(|e| e["item"].clone())
        .find(|i| i["type"] == "structured_input")
        .expect("a question");
    (thread, question, events, [older, newer])
}

fn answer(thread: &str, question: &Value, input: Value) -> Value {
    json!({"type": "threads.add_structured_input",
           "params": {"thread_id": thread, "item_id": question["id"], "input": input}})
}

#[tokio::test]
async fn a_change_that_matches_several_tasks_asks_which_one() {
    let chat = Chat::new();
    let (thread, question, events, [older, newer]) = asked(&chat).await;
    assert_eq!(question["status"], "pending");
    assert_eq!(
        question["inputs"],
        json!([{"type": "multiple_choice", "id": "task",
                "question": "Several tasks match. Which one should I mark done?",
                "options": [{"value": "Buy oat milk"}, {"value": "Buy milk"}],
                "multiple": false}])
    );
    // Nothing changed, nothing else was asked of the model, no widget.
    assert_eq!(chat.model.requests().len(), 1);
    assert!(of_type(&events, "client_effect").is_empty());
    assert!(!events.iter().any(|e| e["item"]["type"] == "widget"));
    for task in [&older, &newer] {
        assert!(
            !chat
                .tasks()
                .get(&user("alice"), &task.id)
                .await
                .unwrap()
                .completed
        );
    }
    // The change waits in a hidden item that the client never sees.
    let stored = chat.items("alice", &thread);
    let kinds: Vec<&str> = stored
        .iter()
        .map(|i| match &i.kind {
            ItemKind::HiddenContextItem { .. } => "hidden",
            ItemKind::StructuredInput { .. } => "question",
            ItemKind::UserMessage { .. } => "user",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["user", "hidden", "question"]);
    let visible = chat
        .json(
            "alice",
            json!({"type": "items.list", "params": {"thread_id": thread}}),
        )
        .await
        .unwrap();
    assert!(!visible.to_string().contains("pending_change"), "{visible}");
}

#[tokio::test]
async fn an_answer_makes_the_change_to_the_chosen_task_and_the_agent_goes_on() {
    let chat = Chat::new();
    let (thread, question, _, [older, newer]) = asked(&chat).await;
    chat.model.push(Round::text("Done: Buy milk is complete."));
    let sink = chat
        .stream(
            "alice",
            answer(
                &thread,
                &question,
                json!({"answers": {"task": {"values": ["Buy milk"]}}}),
            ),
        )
        .await;
    let events = sink.json();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[..3],
        ["stream_options", "thread.item.replaced", "progress_update"]
    );
    assert_eq!(
        events[1]["item"]["inputs"][0]["answer"],
        json!({"values": ["Buy milk"], "skipped": false})
    );
    assert_eq!(events[1]["item"]["status"], "answered");
    assert_eq!(events[2]["text"], "Completing “Buy milk”…");
    assert!(
        chat.tasks()
            .get(&user("alice"), &older.id)
            .await
            .unwrap()
            .completed
    );
    assert!(
        !chat
            .tasks()
            .get(&user("alice"), &newer.id)
            .await
            .unwrap()
            .completed
    );
    assert_eq!(
        of_type(&events, "client_effect")[0]["data"],
        json!({"created": [], "updated": [older.id], "deleted": []})
    );
    // The model saw the question, the answer and the change, and answered.
    let input = chat.model.requests().pop().unwrap().input;
    let text = format!("{input:?}");
    assert!(
        text.contains("I asked the user: Several tasks match"),
        "{text}"
    );
    assert!(text.contains("My answer: Buy milk"), "{text}");
    assert!(
        matches!(input.last(), Some(ModelInput::FunctionOutput { .. })),
        "{text}"
    );
    let stored = chat.store().stored_items(&user("alice"), &thread);
    let question_now = stored.iter().find(|i| i.id == question["id"]).unwrap();
    assert!(matches!(
        question_now.kind,
        ItemKind::StructuredInput {
            status: taskpilot_chatkit::structured::InputStatus::Answered,
            ..
        }
    ));
    let widget = widget_of(&events);
    assert!(
        widget["widget"].to_string().contains("Buy milk"),
        "{widget}"
    );
}

#[tokio::test]
async fn a_skipped_question_changes_nothing() {
    let chat = Chat::new();
    let (thread, question, _, tasks) = asked(&chat).await;
    chat.model
        .push(Round::text("All right, I left them as they are."));
    let sink = chat
        .stream(
            "alice",
            answer(&thread, &question, json!({"status": "skipped"})),
        )
        .await;
    let events = sink.json();
    assert_eq!(events[1]["item"]["status"], "skipped");
    assert_eq!(
        events[1]["item"]["inputs"][0]["answer"],
        json!({"values": [], "skipped": true})
    );
    assert!(of_type(&events, "client_effect").is_empty());
    assert!(of_type(&events, "progress_update").is_empty());
    for task in &tasks {
        assert!(
            !chat
                .tasks()
                .get(&user("alice"), &task.id)
                .await
                .unwrap()
                .completed
        );
    }
    let text = format!("{:?}", chat.model.requests().pop().unwrap().input);
    assert!(text.contains("I skipped that question."), "{text}");
}

#[tokio::test]
async fn a_question_is_answered_once_and_only_by_its_owner() {
    let chat = Chat::new();
    let (thread, question, _, _) = asked(&chat).await;
    let pick = answer(
        &thread,
        &question,
        json!({"answers": {"task": {"values": ["Buy milk"]}}}),
    );
    let err = chat.refused("bob", pick.clone()).await;
    assert!(matches!(err, ChatError::NotFound("thread")), "{err:?}");
    chat.model.push(Round::text("Done."));
    chat.stream("alice", pick.clone()).await;
    let err = chat.refused("alice", pick).await;
    assert!(matches!(err, ChatError::NotPending(_)), "{err:?}");
    // Only the first answer changed a task.
    let done: Vec<String> = chat
        .task_list("alice")
        .await
        .into_iter()
        .filter(|t| t.completed)
        .map(|t| t.title)
        .collect();
    assert_eq!(done, ["Buy milk"]);
    // Naming an item that is not a question is refused too.
    let user_message = chat.items("alice", &thread)[0].id.clone();
    let err = chat
        .refused(
            "alice",
            json!({"type": "threads.add_structured_input", "params": {"thread_id": thread,
                   "item_id": user_message, "input": {"answers": {}}}}),
        )
        .await;
    assert!(matches!(err, ChatError::NotAQuestion(_)), "{err:?}");
}

#[tokio::test]
async fn a_title_that_matches_one_task_changes_it_without_asking() {
    let chat = Chat::new();
    let milk = chat.task("alice", "Buy milk").await;
    chat.task("alice", "Buy bread").await;
    let (_, events) = chat
        .create(
            "alice",
            "done with milk",
            vec![
                Round::calls(&[("complete_task", r#"{"task":"MILK"}"#)]),
                Round::text("Done."),
            ],
        )
        .await;
    assert!(
        !events
            .iter()
            .any(|e| e["item"]["type"] == "structured_input")
    );
    assert!(
        chat.tasks()
            .get(&user("alice"), &milk.id)
            .await
            .unwrap()
            .completed
    );
}

/// One turn of alice's in which the model runs `tool` on the task titled
/// `title`; it must not end with a question.
async fn by_title(chat: &Chat, tool: &str, title: &str) {
    let arguments = json!({"task": title}).to_string();
    let (_, events) = chat
        .create(
            "alice",
            "do it",
            vec![Round::calls(&[(tool, &arguments)]), Round::text("Done.")],
        )
        .await;
    assert!(
        !events
            .iter()
            .any(|e| e["item"]["type"] == "structured_input"),
        "no question: {events:?}"
    );
}

async fn completed(chat: &Chat, task: &Task) -> bool {
    chat.tasks()
        .get(&user("alice"), &task.id)
        .await
        .unwrap()
        .completed
}

#[tokio::test]
async fn an_exact_title_wins_over_longer_ones_that_contain_it() {
    let chat = Chat::new();
    let milk = chat.task("alice", "Buy milk").await;
    let more = chat.task("alice", "Buy milk and eggs").await;
    by_title(&chat, "complete_task", "buy milk").await;
    assert!(completed(&chat, &milk).await);
    assert!(!completed(&chat, &more).await);
}

#[tokio::test]
async fn a_title_that_matches_no_task_is_not_found_and_asks_nothing() {
    let chat = Chat::new();
    chat.task("alice", "Buy milk").await;
    by_title(&chat, "complete_task", "ghost").await;
    let input = chat.model.requests().pop().unwrap().input;
    assert!(
        matches!(input.last(), Some(ModelInput::FunctionOutput { output, .. }) if output.contains("not_found")),
        "{input:?}"
    );
}

/// Two tasks titled "Water plants", the first one done.
async fn twins(chat: &Chat) -> (Task, Task) {
    let done = chat.task("alice", "Water plants").await;
    let open = chat.task("alice", "Water plants").await;
    chat.tasks()
        .set_completed(&user("alice"), &done.id, true)
        .await
        .unwrap();
    (done, open)
}

#[tokio::test]
async fn completing_by_title_takes_the_open_one_of_two() {
    let chat = Chat::new();
    let (done, open) = twins(&chat).await;
    by_title(&chat, "complete_task", "water plants").await;
    assert!(completed(&chat, &open).await);
    assert!(completed(&chat, &done).await);
}

#[tokio::test]
async fn completing_by_title_when_both_twins_are_done_asks_which() {
    let chat = Chat::new();
    let (_, open) = twins(&chat).await;
    chat.tasks()
        .set_completed(&user("alice"), &open.id, true)
        .await
        .unwrap();
    let (_, events) = chat
        .create(
            "alice",
            "do it",
            vec![Round::calls(&[(
                "complete_task",
                r#"{"task":"water plants"}"#,
            )])],
        )
        .await;
    assert!(
        events
            .iter()
            .any(|e| e["item"]["type"] == "structured_input"),
        "{events:?}"
    );
}

#[tokio::test]
async fn reopening_by_title_takes_the_done_one_of_two() {
    let chat = Chat::new();
    let (done, open) = twins(&chat).await;
    by_title(&chat, "reopen_task", "water plants").await;
    assert!(!completed(&chat, &done).await);
    assert!(!completed(&chat, &open).await);
}

// Mentions.

fn tagged(text: &str, tags: &[Value]) -> Value {
    let mut content = vec![json!({"type": "input_text", "text": text})];
    content.extend(tags.iter().cloned());
    json!({"content": content, "attachments": [], "inference_options": {}})
}

#[tokio::test]
async fn a_mentioned_task_reaches_the_model_with_its_current_fields() {
    let chat = Chat::new();
    let milk = chat.task("alice", "Buy milk").await;
    chat.tasks()
        .set_completed(&user("alice"), &milk.id, true)
        .await
        .unwrap();
    let gone = chat.task("alice", "Old plan").await;
    chat.tasks()
        .delete(&user("alice"), &gone.id, None)
        .await
        .unwrap();
    let bobs = chat.task("bob", "Bob's secret").await;
    chat.model.push(Round::text("Noted."));
    chat.stream(
        "alice",
        json!({"type": "threads.create", "params": {"input": tagged("what about", &[
            json!({"type": "input_tag", "id": milk.id, "text": "@Buy milk", "data": {"type": "task"}, "interactive": true}),
            json!({"type": "input_tag", "id": "t1", "text": "@Old plan", "data": {"task_id": gone.id}}),
            json!({"type": "input_tag", "id": bobs.id, "text": "@guess", "data": {}}),
            json!({"type": "input_tag", "id": "not-a-task", "text": "@Someone", "data": {}}),
        ])}}),
    )
    .await;
    let input = chat.model.requests().pop().unwrap().input;
    let Some(ModelInput::Message { text, .. }) = input.last() else {
        panic!("{input:?}")
    };
    let described: Value = serde_json::from_str(
        text.strip_prefix("The tasks I mentioned with @, as they are now: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(described.as_array().unwrap().len(), 3, "{described}");
    assert_eq!(described[0]["task"]["title"], "Buy milk");
    assert_eq!(described[0]["task"]["completed"], true, "current fields");
    for (i, id) in [(1, &gone.id), (2, &bobs.id)] {
        assert_eq!(described[i]["task_id"], json!(id));
        assert!(described[i]["unavailable"].is_string(), "{described}");
        assert!(described[i].get("task").is_none());
    }
    assert!(
        !text.contains("Bob's secret"),
        "another user's task is never read"
    );
    // The message itself still reads as text, tags included.
    assert!(format!("{input:?}").contains("what about @Buy milk @Old plan @guess @Someone"));
}

// What the user does to a thread while it streams.

/// What a meddling client does to the thread.
type Act<'a> = fn(
    &'a InMemoryChat,
    String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// A client that, at the first event of type `at`, does `act` to the thread
/// (as another request of the same user would), then keeps reading.
struct Meddling<'a> {
    store: &'a InMemoryChat,
    at: &'static str,
    act: Act<'a>,
    thread: Option<String>,
    done: bool,
    events: Vec<Value>,
}

impl<'a> Meddling<'a> {
    fn new(store: &'a InMemoryChat, at: &'static str, act: Act<'a>) -> Self {
        Self {
            store,
            at,
            act,
            thread: None,
            done: false,
            events: Vec::new(),
        }
    }
}

impl taskpilot_chatkit::sink::EventSink for Meddling<'_> {
    async fn send(
        &mut self,
        event: taskpilot_chatkit::types::StreamEvent,
    ) -> Result<(), taskpilot_chatkit::sink::Disconnected> {
        let json = serde_json::to_value(&event).unwrap();
        chatkit_contract::check_event(&json).unwrap();
        if let Some(id) = json["thread"]["id"]
            .as_str()
            .or(json["item"]["thread_id"].as_str())
        {
            self.thread.get_or_insert(id.to_owned());
        }
        if json["type"] == self.at && !self.done {
            self.done = true;
            (self.act)(self.store, self.thread.clone().unwrap_or_default()).await;
        }
        self.events.push(json);
        Ok(())
    }
}

fn delete_it(
    store: &InMemoryChat,
    thread: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    use taskpilot_chatkit::store::{ChatStore, Write};
    Box::pin(async move {
        assert_eq!(
            store.delete_thread(&user("alice"), &thread).await.unwrap(),
            Write::Done
        );
    })
}

fn rename_it(
    store: &InMemoryChat,
    thread: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    use taskpilot_chatkit::store::{ChatStore, Write};
    Box::pin(async move {
        let mut t = store.stored_thread(&user("alice"), &thread).unwrap();
        t.title = Some("Mine".into());
        assert_eq!(
            store
                .update_thread(&user("alice"), &t, false)
                .await
                .unwrap(),
            Write::Done
        );
    })
}

impl Chat {
    /// A streamed request read by `sink`.
    async fn stream_to<K: taskpilot_chatkit::sink::EventSink>(&self, body: Value, sink: &mut K) {
        // Checked before the clock starts: the first check also starts the
        // contract's validator, which on a busy machine takes a while.
        chatkit_contract::check_request(&body).unwrap();
        let request = Request::parse(body.to_string().as_bytes()).unwrap();
        let deadline = Instant::now() + self.time;
        drive::streaming(
            &self.engine,
            self.caller("alice"),
            request,
            &OpenGate,
            deadline,
        )
        .await
        .unwrap()
        .run(sink)
        .await;
    }
}

fn types_of(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_thread_deleted_during_its_first_answer_stays_deleted() {
    let chat = Chat::new();
    chat.model
        .push(Round::calls(&[("create_task", r#"{"title":"Bread"}"#)]));
    chat.model.push(Round::text("Added bread for you."));
    let mut sink = Meddling::new(chat.store(), "thread.item.updated", delete_it);
    chat.stream_to(
        json!({"type": "threads.create", "params": {"input": message("add bread")}}),
        &mut sink,
    )
    .await;
    let thread = sink.thread.clone().unwrap();
    assert_eq!(chat.store().stored_thread(&user("alice"), &thread), None);
    assert!(
        chat.items("alice", &thread).is_empty(),
        "{:?}",
        chat.items("alice", &thread)
    );
    let listed = chat
        .json("alice", json!({"type": "threads.list", "params": {}}))
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));
    // The stream just ended: no error, no title for a thread that is gone.
    let types = types_of(&sink.events);
    assert!(!types.contains(&"error"), "{types:?}");
    assert!(!types.contains(&"thread.updated"), "{types:?}");
}

#[tokio::test]
async fn a_thread_deleted_during_a_later_turn_leaves_nothing_behind() {
    let chat = Chat::new();
    let thread = chat.thread("alice", "Hi.").await;
    chat.model
        .push(Round::text("A long answer, word after word."));
    let mut sink = Meddling::new(chat.store(), "thread.item.updated", delete_it);
    chat.stream_to(
        json!({"type": "threads.add_user_message", "params": {"thread_id": thread, "input": message("more")}}),
        &mut sink,
    )
    .await;
    assert_eq!(chat.store().stored_thread(&user("alice"), &thread), None);
    assert!(
        chat.items("alice", &thread).is_empty(),
        "{:?}",
        chat.items("alice", &thread)
    );
}

#[tokio::test]
async fn a_rename_during_the_first_answer_stands() {
    let chat = Chat::new();
    chat.model.push(Round::text("Hello there, how can I help?"));
    let mut sink = Meddling::new(chat.store(), "thread.item.updated", rename_it);
    chat.stream_to(
        json!({"type": "threads.create", "params": {"input": message("plan my week")}}),
        &mut sink,
    )
    .await;
    let thread = sink.thread.clone().unwrap();
    let stored = chat.store().stored_thread(&user("alice"), &thread).unwrap();
    assert_eq!(stored.title.as_deref(), Some("Mine"));
    assert!(!types_of(&sink.events).contains(&"thread.updated"));
    // The answer itself was kept.
    assert_eq!(chat.items("alice", &thread).len(), 2);
}

#[tokio::test]
async fn tool_calls_over_the_per_turn_cap_are_refused_to_the_model_and_counted() {
    let chat = Chat::new();
    let calls: Vec<(String, String)> = (0..25)
        .map(|i| {
            (
                "create_task".to_owned(),
                format!(r#"{{"title":"Task {i}"}}"#),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = calls
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    chat.create(
        "alice",
        "make 25 tasks",
        vec![Round::calls(&refs), Round::text("I made 20 of them.")],
    )
    .await;
    assert_eq!(chat.task_list("alice").await.len(), 20);
    assert_eq!(chat.metrics.get(taskpilot_assistant::REFUSED_TOOL_CALLS), 5);
    let input = chat.model.requests().pop().unwrap().input;
    let refused = input
        .iter()
        .filter(|i| matches!(i, ModelInput::FunctionOutput { output, .. } if output.contains("too_many_calls")))
        .count();
    assert_eq!(refused, 5);
}

// Time.

#[tokio::test]
async fn no_tool_call_starts_without_the_time_it_may_need() {
    // 5 s left: less than a tool call may take when storage is slow.
    let chat = Chat::new().with_time(Duration::from_secs(5));
    let calls = vec![("list_tasks", "{}"); 40];
    let (thread, events) = chat
        .create("alice", "list it all", vec![Round::calls(&calls)])
        .await;
    assert!(
        of_type(&events, "progress_update").is_empty(),
        "no tool ran"
    );
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_eq!(errors[0]["allow_retry"], true);
    assert_eq!(
        errors[0]["message"],
        "This is taking too long. Please retry."
    );
    // What the client was told is what is stored: the message, no answer.
    assert_eq!(chat.items("alice", &thread).len(), 1);
}

#[tokio::test]
async fn no_model_call_starts_when_the_turn_is_out_of_time() {
    let chat = Chat::new().with_time(Duration::from_millis(500));
    let (_, events) = chat.create("alice", "hello", vec![]).await;
    assert!(chat.model.requests().is_empty());
    assert_eq!(of_type(&events, "error")[0]["allow_retry"], true);
}

fn recover(
    store: &InMemoryChat,
    _thread: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move { store.set_failing(false) })
}

fn land_late(
    store: &InMemoryChat,
    _thread: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move { store.set_landing_late(true) })
}

#[tokio::test]
async fn an_answer_whose_write_timed_out_but_landed_is_not_kept() {
    let chat = Chat::new();
    chat.model
        .push(Round::text("An answer that storage will choke on."));
    // From the first delta on, writes fail as timeouts do, although they land.
    let mut sink = Meddling::new(chat.store(), "thread.item.updated", land_late);
    chat.stream_to(
        json!({"type": "threads.create", "params": {"input": message("hello")}}),
        &mut sink,
    )
    .await;
    chat.store().set_landing_late(false);
    let thread = sink.thread.clone().unwrap();
    // The client was told the answer failed: it is not stored.
    let types = types_of(&sink.events);
    assert_eq!(types.last(), Some(&"error"), "{types:?}");
    let stored = chat.items("alice", &thread);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(matches!(stored[0].kind, ItemKind::UserMessage { .. }));
    // And a copy of that write arriving even later is refused.
    let answer = sink
        .events
        .iter()
        .find(|e| e["type"] == "thread.item.added")
        .unwrap()["item"]
        .clone();
    let late: ThreadItem = serde_json::from_value(answer).unwrap();
    use taskpilot_chatkit::store::{ChatStore, Write};
    assert_eq!(
        chat.store().save_item(&user("alice"), &late).await.unwrap(),
        Write::Refused
    );
    assert_eq!(chat.items("alice", &thread).len(), 1);
}

fn fail_once(
    store: &InMemoryChat,
    _thread: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move { store.fail_next_calls(1) })
}

#[tokio::test]
async fn a_fence_that_fails_once_is_tried_again_until_the_failed_write_is_gone() {
    let chat = Chat::new();
    chat.model.push(Round::text("Hello."));
    let body = json!({"type": "threads.create", "params": {"input": message("hello")}});
    let request = Request::parse(body.to_string().as_bytes()).unwrap();
    let streaming = drive::streaming(
        &chat.engine,
        chat.caller("alice"),
        request,
        &OpenGate,
        far(),
    )
    .await
    .unwrap();
    // The answer's write times out although it lands; then, as the client
    // is told so, storage fails once more.
    chat.store().set_landing_late(true);
    let mut sink = Meddling::new(chat.store(), "error", fail_once);
    streaming.run(&mut sink).await;
    chat.store().set_landing_late(false);
    let fences = chat
        .journal
        .calls()
        .iter()
        .filter(|c| *c == "store.fence_item")
        .count();
    assert_eq!(fences, 2, "the fence was tried again");
    let thread = sink.thread.clone().unwrap();
    assert_eq!(kinds(&chat.items("alice", &thread)), ["user_message"]);
    assert_eq!(types_of(&sink.events).last(), Some(&"error"));
}

fn freeze(
    store: &InMemoryChat,
    _thread: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move { store.set_hanging(true) })
}

/// Streams `body` as alice into a sink that freezes storage at the first
/// event of type `at`; the run must end by itself (a frozen write is given
/// up at the deadline), well within a generous bound.
async fn frozen_at(chat: &Chat, at: &'static str, body: Value) -> Vec<Value> {
    let mut sink = Meddling::new(chat.store(), at, freeze);
    tokio::time::timeout(Duration::from_secs(60), chat.stream_to(body, &mut sink))
        .await
        .expect("the run outlived its deadline");
    chat.store().set_hanging(false);
    sink.events
}

#[tokio::test]
async fn a_frozen_write_is_given_up_at_the_deadline_with_one_error() {
    let chat = Chat::new().with_time(Duration::from_millis(1500));
    chat.model
        .push(Round::text("An answer storage will never take."));
    let events = frozen_at(
        &chat,
        "thread.item.updated",
        json!({"type": "threads.create", "params": {"input": message("hello")}}),
    )
    .await;
    let types = types_of(&events);
    assert_eq!(types.last(), Some(&"error"), "{types:?}");
    assert_eq!(of_type(&events, "error").len(), 1, "{types:?}");
    assert_eq!(of_type(&events, "error")[0]["allow_retry"], true);
}

#[tokio::test]
async fn a_run_out_of_time_sends_one_error_even_if_its_title_cannot_be_saved() {
    // Too little time left for a tool: the run ends with its own error, then
    // storage freezes as the title is saved.
    let chat = Chat::new().with_time(Duration::from_millis(1500));
    chat.model.push(Round::calls(&[("list_tasks", "{}")]));
    let events = frozen_at(
        &chat,
        "error",
        json!({"type": "threads.create", "params": {"input": message("list it")}}),
    )
    .await;
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_eq!(
        errors[0]["message"],
        "This is taking too long. Please retry."
    );
}

#[tokio::test]
async fn every_word_of_a_title_must_match_in_any_order() {
    let chat = Chat::new();
    chat.task("alice", "Buy milk").await;
    let oat = chat.task("alice", "Buy oat milk").await;
    chat.create(
        "alice",
        "done with the oat milk",
        vec![
            Round::calls(&[("complete_task", r#"{"task":"milk OAT"}"#)]),
            Round::text("Done."),
        ],
    )
    .await;
    let done: Vec<String> = chat
        .task_list("alice")
        .await
        .into_iter()
        .filter(|t| t.completed)
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(done, [oat.id.to_string()]);
}

//! The task assistant, the application behind the ChatKit engine (a
//! [`Responder`], as chatkit-python keeps the application outside the SDK):
//! model rounds with the task tools until
//! the model answers (at most `CHATKIT_MAX_TOOL_STEPS` rounds), the answer
//! streamed as it comes, a task-list widget when tasks were listed or
//! changed, the Done/Undo buttons of that widget, and the thread's title.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod actions;
mod ask;
pub mod choices;
mod dates;
mod effects;
mod entities;
mod history;
mod mentions;
pub mod tools;
mod widgets;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use history::{WINDOW_MIN, window_start};

use std::collections::HashMap;

use serde_json::{Value, json};
use std::time::{Duration, Instant};

use taskpilot_domain::{DomainError, Task, TaskId, TaskRepository, TaskService, UserId};

use ask::Chosen;
use choices::{Choice, Models};
use effects::{Change, TaskChanges};
use taskpilot_chatkit::ids;
use taskpilot_chatkit::metrics::{Metrics, NoMetrics};
use taskpilot_chatkit::model::{
    FunctionCall, ModelClient, ModelEvent, ModelInput, ModelRequest, ModelStream, Role, TokenUsage,
};
use taskpilot_chatkit::request::Action;
use taskpilot_chatkit::request::FeedbackKind;
use taskpilot_chatkit::responder::{ActionRefused, InvalidOptions, Responder};
use taskpilot_chatkit::sink::EventSink;
use taskpilot_chatkit::store::ChatStore;
use taskpilot_chatkit::turn::{Interrupted, Turn};
use taskpilot_chatkit::types::{
    AssistantContent, InferenceOptions, ItemKind, ItemUpdate, StreamError, StreamEvent, ThreadItem,
    ThreadMetadata, ToolCallStatus,
};

/// The default instructions.
pub const DEFAULT_INSTRUCTIONS: &str = "You are TaskPilot, a concise and friendly assistant that manages the user's to-do list. \
Always use the tools to read or change tasks; never invent tasks, ids or their state. \
After changing tasks, say briefly what you did. Dates are ISO 8601, on the user's calendar given below.";

/// Agent settings (`CHATKIT_MODEL`, `CHATKIT_MODELS`, `CHATKIT_TEMPERATURE`,
/// `CHATKIT_INSTRUCTIONS`, `CHATKIT_MAX_TOOL_STEPS`, `CHATKIT_MAX_TOOL_CALLS`).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The model of turns that picked none.
    pub model: String,
    /// The other models the composer's model picker may choose.
    pub models: Vec<String>,
    /// Sampling temperature.
    pub temperature: f64,
    /// System instructions.
    pub instructions: String,
    /// Most model rounds per turn.
    pub max_tool_steps: usize,
    /// Most tool calls run per turn (`CHATKIT_MAX_TOOL_CALLS`); the model is
    /// told the others were not run.
    pub max_tool_calls: usize,
}

/// The count of tool calls refused over the per-turn cap.
pub const REFUSED_TOOL_CALLS: &str = "RefusedToolCalls";

/// What the user sees when the model cannot start.
const UNAVAILABLE: &str = "The assistant is unavailable right now. Please retry.";
/// What the user sees when an answer breaks off.
const INTERRUPTED: &str = "The answer was interrupted. Please retry.";
/// What the user sees when the turn runs out of time.
const OUT_OF_TIME: &str = "This is taking too long. Please retry.";
/// Time a tool call may take when storage is slow (the AWS clients' own
/// operation timeout, plus the saves that end the turn): none starts with less.
const TOOL_RESERVE: Duration = Duration::from_secs(6);
/// Time kept after the model's stream to end the turn (save, error event).
const END_RESERVE: Duration = Duration::from_secs(1);

/// The task assistant.
pub struct TaskAgent<R, M> {
    tasks: TaskService<R>,
    model: M,
    models: Models,
    settings: AgentSettings,
    metrics: Box<dyn Metrics>,
}

/// Tasks a turn listed or changed, for the widget.
#[derive(Default)]
struct Shown {
    tasks: Vec<Task>,
    touched: bool,
}

impl<R: TaskRepository, M: ModelClient> TaskAgent<R, M> {
    /// Wires the task service, the model and the settings.
    pub fn new(tasks: TaskService<R>, model: M, settings: AgentSettings) -> Self {
        Self {
            tasks,
            model,
            models: Models::new(settings.model.clone(), settings.models.clone()),
            settings,
            metrics: Box::new(NoMetrics),
        }
    }

    /// The same agent, counting into `metrics`.
    pub fn with_metrics(self, metrics: impl Metrics + 'static) -> Self {
        Self {
            metrics: Box::new(metrics),
            ..self
        }
    }

    /// The task service the tools use.
    pub fn tasks(&self) -> &TaskService<R> {
        &self.tasks
    }

    /// The tool loop, then the `tasks.changed` effect for whatever it
    /// changed (also when the model failed after changing tasks). The tasks
    /// a user `message` mentions are described first; after an `answered`
    /// question, the change it was about is made first.
    async fn answer<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        message: Option<&ThreadItem>,
        answered: Option<&ThreadItem>,
    ) -> Result<(), Interrupted> {
        let choice = self.models.for_turn(turn.history(), message);
        let mut changes = TaskChanges::default();
        let mut shown = Shown::default();
        let mut done = Vec::new();
        if let Some(message) = message
            && let Some(mentioned) = mentions::context(&self.tasks, turn.user(), message).await
        {
            done.push(mentioned);
        }
        if let Some(answered) = answered
            && let Some(pending) = ask::pending_for(turn.history(), answered)
            && let Chosen::Task(task_id) = ask::choice(&pending, answered)
        {
            let mut arguments = pending.arguments.clone();
            let label = pending
                .options
                .iter()
                .find(|(_, id)| *id == task_id)
                .map(|(label, _)| label.clone());
            if let Some(args) = arguments.as_object_mut() {
                args.insert("task_id".into(), task_id.to_string().into());
                if let Some(label) = label {
                    args.insert("task".into(), label.into());
                }
            }
            let call = FunctionCall {
                call_id: format!("call_{}", answered.id),
                name: pending.tool.clone(),
                arguments: arguments.to_string(),
            };
            let result = self.run_tool(turn, &call, &mut shown, &mut changes).await?;
            done.push(ModelInput::FunctionCall(call.clone()));
            done.push(ModelInput::FunctionOutput {
                call_id: call.call_id,
                output: result.output,
            });
        }
        self.tool_loop(turn, choice, &mut changes, done, shown)
            .await?;
        announce(turn, &changes).await
    }

    /// Runs one tool call: a progress line first, then the call; what it
    /// listed or changed is recorded.
    async fn run_tool<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        call: &FunctionCall,
        shown: &mut Shown,
        changes: &mut TaskChanges,
    ) -> Result<tools::ToolResult, Interrupted> {
        turn.emit(effects::progress(&call.name, &call.arguments, &shown.tasks))
            .await?;
        let mut result = tools::run(&self.tasks, turn.caller(), &call.name, &call.arguments).await;
        shown.touched = true;
        for task in std::mem::take(&mut result.shown) {
            shown.tasks.retain(|t| t.id != task.id);
            shown.tasks.push(task);
        }
        if let Some((id, change)) = &result.change {
            changes.record(id, *change);
            if *change == Change::Deleted {
                shown.tasks.retain(|t| t.id != *id);
            }
        }
        Ok(result)
    }

    /// Rounds until the model answers without calling tools (`done`: calls
    /// already made this turn) with the `choice`'s model, its mode's tool
    /// forced in the first round; the task-list widget when tasks were listed
    /// or changed. A change that matched several tasks ends the turn with a
    /// question instead.
    async fn tool_loop<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        choice: Choice<'_>,
        changes: &mut TaskChanges,
        done: Vec<ModelInput>,
        mut shown: Shown,
    ) -> Result<(), Interrupted> {
        // The instructions and the tools are the same for every turn of
        // every user, then the thread's history: a prefix the provider can
        // cache. What changes per turn (the user's date, zone and language,
        // a mode's note) comes after it.
        let mut input = history::to_model_input(turn.history(), turn.files());
        input.extend(done);
        let mut context = dates::context_note(turn.caller());
        if let Some(note) = choice.mode.and_then(|m| m.note()) {
            context = format!("{context}\n\n{note}");
        }
        input.push(ModelInput::Message {
            role: Role::Developer,
            text: context,
        });
        let instructions = &self.settings.instructions;
        let thread_id = turn.thread().id.clone();
        let mut calls_run = 0usize;
        for round in 0..self.settings.max_tool_steps.max(1) {
            if round > 0 && turn.over_budget() {
                // What the tools did stays on screen; then why it stops.
                show_tasks(turn, &shown).await?;
                return turn.budget_spent().await;
            }
            let request = ModelRequest {
                model: choice.model,
                instructions,
                temperature: self.settings.temperature,
                input: &input,
                tools: tools::specs(),
                tool_choice: choice
                    .mode
                    .filter(|_| round == 0)
                    .map(|m| m.forced().name()),
                cache_key: Some(&thread_id),
            };
            let model_deadline = turn
                .deadline()
                .checked_sub(END_RESERVE)
                .unwrap_or_else(Instant::now);
            if Instant::now() >= model_deadline {
                return self.out_of_time(turn).await;
            }
            let mut stream = match self.model.start(&request, model_deadline).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "the model could not start");
                    return turn.error(StreamError::retryable(UNAVAILABLE)).await;
                }
            };
            let mut meter = RoundMeter::default();
            let outcome = self
                .round(turn, &mut stream, &mut meter, &shown, changes)
                .await;
            turn.charge(meter.usage(&request)).await;
            let Some(calls) = outcome? else {
                return Ok(());
            };
            if calls.is_empty() {
                break;
            }
            let mut question = None;
            let mut refused = 0u64;
            let mut for_the_page = None;
            for call in calls {
                if call.name == tools::SHOW_TASK {
                    // The page's to run: asked once the server's calls ran;
                    // a task the user cannot see is the model's to hear of.
                    match self.showable(turn.user(), &call).await {
                        Ok(arguments) if for_the_page.is_none() => {
                            for_the_page = Some((call, arguments));
                        }
                        Ok(_) => {
                            let call_id = call.call_id.clone();
                            input.push(ModelInput::FunctionCall(call));
                            input.push(ModelInput::FunctionOutput {
                                call_id,
                                output: json!({"error": {"code": "one_at_a_time",
                                    "message": "the page shows one task at a time"}})
                                .to_string(),
                            });
                        }
                        Err(output) => {
                            let call_id = call.call_id.clone();
                            input.push(ModelInput::FunctionCall(call));
                            input.push(ModelInput::FunctionOutput { call_id, output });
                        }
                    }
                    continue;
                }
                if calls_run >= self.settings.max_tool_calls {
                    refused += 1;
                    let call_id = call.call_id.clone();
                    input.push(ModelInput::FunctionCall(call));
                    input.push(ModelInput::FunctionOutput {
                        call_id,
                        output: over_the_cap(self.settings.max_tool_calls),
                    });
                    continue;
                }
                // Once a call is over the cap so are the rest of the round,
                // so a refusal never precedes this.
                if turn.deadline().saturating_duration_since(Instant::now()) < TOOL_RESERVE {
                    return self.out_of_time(turn).await;
                }
                calls_run += 1;
                let result = self.run_tool(turn, &call, &mut shown, changes).await?;
                if question.is_none() {
                    question = result.ask;
                }
                let call_id = call.call_id.clone();
                input.push(ModelInput::FunctionCall(call));
                input.push(ModelInput::FunctionOutput {
                    call_id,
                    output: result.output,
                });
            }
            if refused > 0 {
                tracing::warn!(
                    refused,
                    cap = self.settings.max_tool_calls,
                    "tool calls over the per-turn cap were not run"
                );
                self.metrics.count(REFUSED_TOOL_CALLS, refused);
            }
            if let Some(ambiguous) = question {
                return self.ask(turn, &ambiguous).await;
            }
            if let Some((call, arguments)) = for_the_page {
                show_tasks(turn, &shown).await?;
                return ask_the_page(turn, call, arguments).await;
            }
        }
        show_tasks(turn, &shown).await
    }

    /// The arguments of a `show_task` call whose task the user has, else the
    /// tool output telling the model why not.
    async fn showable(&self, user: &UserId, call: &FunctionCall) -> Result<Value, String> {
        let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
        let found = match arguments["task_id"].as_str().and_then(TaskId::parse) {
            Some(id) => self.tasks.get(user, &id).await.map(drop),
            None => Err(DomainError::NotFound("task")),
        };
        match found {
            Ok(()) => Ok(arguments),
            Err(DomainError::NotFound(_)) => Err(json!({"error": {"code": "not_found",
                "message": "no such task; list_tasks gives the ids"}})
            .to_string()),
            Err(e) => {
                Err(json!({"error": {"code": "unavailable", "message": e.to_string()}}).to_string())
            }
        }
    }

    /// Asks which task was meant: the change is kept in a hidden item, then
    /// the question is shown.
    async fn ask<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        ambiguous: &tools::Ambiguous,
    ) -> Result<(), Interrupted> {
        // Ids sort by creation: the hidden change comes just before its question.
        let hidden_id = ids::hidden();
        let question_id = ids::question();
        let (asked, hidden) = ask::question(ambiguous, &question_id);
        let hidden = turn.item(hidden_id, hidden);
        turn.emit(StreamEvent::ItemDone { item: hidden }).await?;
        let asked = turn.item(question_id, asked);
        turn.emit(StreamEvent::ItemDone { item: asked }).await
    }

    /// Streams one model round; a finished text names the tasks of `shown`
    /// as entities. `Some(calls)` when it completed (calls may be empty),
    /// `None` when it failed (an error event was sent).
    async fn round<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        stream: &mut M::Stream,
        meter: &mut RoundMeter,
        shown: &Shown,
        changes: &TaskChanges,
    ) -> Result<Option<Vec<FunctionCall>>, Interrupted> {
        // The model's message ids → ours.
        let mut ours: HashMap<String, String> = HashMap::new();
        let mut calls = Vec::new();
        loop {
            let event = match stream.next_event().await {
                None | Some(Ok(ModelEvent::Completed)) => {
                    turn.settle_pending().await?;
                    return Ok(Some(calls));
                }
                Some(Ok(ModelEvent::Failed { reason })) => {
                    tracing::warn!(%reason, "the model failed");
                    return self.interrupted(turn).await.map(|()| None);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the model stream failed");
                    return self.interrupted(turn).await.map(|()| None);
                }
                Some(Ok(ModelEvent::Usage(usage))) => {
                    meter.reported = Some(usage);
                    continue;
                }
                Some(Ok(event)) => event,
            };
            meter.saw(&event);
            let text = |text: String| AssistantContent::OutputText {
                text,
                annotations: Vec::new(),
            };
            let (item, update) = match event {
                ModelEvent::MessageStarted { item } => {
                    let id = ids::message();
                    ours.insert(item, id.clone());
                    let message = turn.item(id, ItemKind::AssistantMessage { content: vec![] });
                    turn.emit(StreamEvent::ItemAdded { item: message }).await?;
                    continue;
                }
                ModelEvent::MessageDone { item } => {
                    if let Some(id) = ours.get(&item) {
                        turn.finish(id).await?;
                    }
                    continue;
                }
                ModelEvent::FunctionCall(call) => {
                    calls.push(call);
                    continue;
                }
                ModelEvent::TextStarted { item, part } => (
                    item,
                    ItemUpdate::ContentPartAdded {
                        content_index: part,
                        content: text(String::new()),
                    },
                ),
                ModelEvent::TextDelta { item, part, delta } => (
                    item,
                    ItemUpdate::TextDelta {
                        content_index: part,
                        delta,
                    },
                ),
                ModelEvent::TextDone {
                    item,
                    part,
                    text: whole,
                } => {
                    let annotations =
                        entities::annotate(&whole, &shown.tasks, |t| changes.changed(&t.id));
                    if let Some(id) = ours.get(&item) {
                        for (at, annotation) in annotations.iter().enumerate() {
                            let update = ItemUpdate::AnnotationAdded {
                                content_index: part,
                                annotation_index: at,
                                annotation: annotation.clone(),
                            };
                            turn.emit(StreamEvent::ItemUpdated {
                                item_id: id.clone(),
                                update,
                            })
                            .await?;
                        }
                    }
                    let content = AssistantContent::OutputText {
                        text: whole,
                        annotations,
                    };
                    (
                        item,
                        ItemUpdate::ContentPartDone {
                            content_index: part,
                            content,
                        },
                    )
                }
                ModelEvent::Completed | ModelEvent::Failed { .. } | ModelEvent::Usage(_) => {
                    continue;
                }
            };
            if let Some(id) = ours.get(&item) {
                let event = StreamEvent::ItemUpdated {
                    item_id: id.clone(),
                    update,
                };
                turn.emit(event).await?;
            }
        }
    }

    /// The turn ran out of time: keep what was said, then a retryable error,
    /// while there is still time to send it.
    async fn out_of_time<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
    ) -> Result<(), Interrupted> {
        tracing::warn!("the turn ran out of time");
        turn.settle_pending().await?;
        turn.error(StreamError::retryable(OUT_OF_TIME)).await
    }

    /// A round broke off: keep what was said, then a retryable error.
    async fn interrupted<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
    ) -> Result<(), Interrupted> {
        turn.settle_pending().await?;
        turn.error(StreamError::retryable(INTERRUPTED)).await
    }
}

/// Tokens counted for a file the model was shown when the model did not
/// report the round's usage (a high-detail image is ~765 to ~1,100).
pub const FILE_TOKEN_ESTIMATE: u64 = 1_100;
/// Bytes per token when estimating (English text and JSON run at ~4).
const BYTES_PER_TOKEN: u64 = 4;

/// What one model round cost: the model's own `usage` when it reported it,
/// else an estimate from what was sent and what streamed back, so a round
/// cut off (by the network, or by a client that hangs up) is charged too.
/// The request is only measured when the estimate is needed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundMeter {
    /// The usage the model reported.
    pub reported: Option<TokenUsage>,
    received_bytes: u64,
}

impl RoundMeter {
    /// Counts what an event streamed back.
    pub fn saw(&mut self, event: &ModelEvent) {
        let bytes = match event {
            ModelEvent::TextDelta { delta, .. } => delta.len(),
            ModelEvent::FunctionCall(call) => call.name.len() + call.arguments.len(),
            _ => 0,
        };
        self.received_bytes += bytes as u64;
    }

    /// The tokens of the round that sent `request`: as reported, else
    /// estimated.
    pub fn usage(&self, request: &ModelRequest<'_>) -> TokenUsage {
        if let Some(reported) = self.reported {
            return reported;
        }
        let mut sent = request.instructions.len();
        let mut files = 0u64;
        for item in request.input {
            match item {
                ModelInput::Files(shown) => files += shown.len() as u64,
                other => sent += other.bytes(),
            }
        }
        for tool in request.tools {
            sent += tool.name.len() + tool.description.len() + tool.parameters.to_string().len();
        }
        TokenUsage {
            input: (sent as u64).div_ceil(BYTES_PER_TOKEN) + files * FILE_TOKEN_ESTIMATE,
            cached_input: 0,
            output: self.received_bytes.div_ceil(BYTES_PER_TOKEN),
        }
    }
}

/// What the model is told about a call over the per-turn cap.
fn over_the_cap(cap: usize) -> String {
    serde_json::json!({"error": {"code": "too_many_calls",
        "message": format!("not run: at most {cap} tool calls per turn; tell the user what was done and what was not")}})
    .to_string()
}

/// The task-list widget, when the turn listed or changed tasks.
async fn show_tasks<S: ChatStore, K: EventSink>(
    turn: &mut Turn<'_, S, K>,
    shown: &Shown,
) -> Result<(), Interrupted> {
    if !shown.touched {
        return Ok(());
    }
    let (widget, copy_text) = widgets::task_list(&shown.tasks);
    let item = turn.item(
        ids::widget(),
        ItemKind::Widget {
            widget,
            copy_text: Some(copy_text),
        },
    );
    turn.emit(StreamEvent::ItemDone { item }).await
}

/// Ends the turn with a pending `client_tool_call` for the page to run.
async fn ask_the_page<S: ChatStore, K: EventSink>(
    turn: &mut Turn<'_, S, K>,
    call: FunctionCall,
    arguments: Value,
) -> Result<(), Interrupted> {
    let item = turn.item(
        ids::tool_call(),
        ItemKind::ClientToolCall {
            status: ToolCallStatus::Pending,
            call_id: call.call_id,
            name: call.name,
            arguments,
            output: None,
        },
    );
    turn.emit(StreamEvent::ItemDone { item }).await
}

/// Sends the `tasks.changed` effect when tasks changed.
async fn announce<S: ChatStore, K: EventSink>(
    turn: &mut Turn<'_, S, K>,
    changes: &TaskChanges,
) -> Result<(), Interrupted> {
    match changes.effect() {
        Some(effect) => turn.emit(effect).await,
        None => Ok(()),
    }
}

impl<R: TaskRepository, M: ModelClient> Responder for TaskAgent<R, M> {
    fn check_options(&self, options: &InferenceOptions) -> Result<(), InvalidOptions> {
        self.models.check(options)
    }

    async fn respond<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        input: Option<&ThreadItem>,
    ) -> Result<(), Interrupted> {
        let answered = input.filter(|i| matches!(i.kind, ItemKind::StructuredInput { .. }));
        let message = input.filter(|i| matches!(i.kind, ItemKind::UserMessage { .. }));
        self.answer(turn, message, answered).await?;
        if turn.thread().title.is_none()
            && let Some(ThreadItem {
                kind:
                    ItemKind::UserMessage {
                        content,
                        quoted_text,
                        attachments,
                        ..
                    },
                ..
            }) = input
        {
            let mut text = history::user_text(content, quoted_text.as_deref());
            if text.trim().is_empty() {
                // Only files: they name the thread.
                text = attachments
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            turn.thread_mut().title = Some(history::title_from(&text));
        }
        Ok(())
    }

    async fn action<S: ChatStore, K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        action: &Action,
        sender: Option<&ThreadItem>,
    ) -> Result<(), Interrupted> {
        let applied = match actions::apply(&self.tasks, turn.user(), sender, action).await {
            Ok(applied) => applied,
            Err(ActionRefused(message)) => {
                return turn
                    .error(StreamError::Custom {
                        message,
                        allow_retry: false,
                    })
                    .await;
            }
        };
        if let Some(item) = applied.item {
            turn.emit(StreamEvent::ItemReplaced { item }).await?;
        }
        let mut changes = TaskChanges::default();
        if let Some((task_id, change)) = &applied.change {
            changes.record(task_id, *change);
        }
        announce(turn, &changes).await
    }

    async fn sync_action(
        &self,
        user: &UserId,
        _thread: &ThreadMetadata,
        action: &Action,
        sender: Option<&ThreadItem>,
    ) -> Result<Option<ThreadItem>, ActionRefused> {
        // No stream to carry an effect: the page refreshes after its own
        // non-streaming action.
        Ok(actions::apply(&self.tasks, user, sender, action)
            .await?
            .item)
    }

    async fn add_feedback(
        &self,
        _user: &UserId,
        _thread_id: &str,
        _item_ids: &[String],
        kind: FeedbackKind,
    ) {
        self.metrics.feedback(kind);
    }
}

//! The ChatKit server: JSON operations, and streamed turns in which an agent
//! answers with the task tools. Items are persisted when they are `done`,
//! `replaced` or `removed`; a client that disconnects mid-stream stops the
//! model call, and the partial answer is kept with a hidden note.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Map, Value, json};

use taskpilot_domain::{
    DomainError, StoreError, Task, TaskId, TaskRepository, TaskService, UserId,
};

use crate::ids;
use crate::model::{ModelClient, ModelStream};
use crate::request::{Action, Order, Paging, Request, UserMessageInput};
use crate::sink::{Disconnected, EventSink};
use crate::store::ChatStore;
use crate::tools;
use crate::types::{
    AssistantContent, ItemKind, ItemUpdate, Page, StreamEvent, StreamOptions, Thread, ThreadItem,
    ThreadMetadata, ThreadStatus, UserContent,
};
use crate::widgets;

/// How many earlier items the model sees.
const HISTORY: usize = 40;
/// Longest generated title.
const TITLE_CHARS: usize = 48;
/// Note stored when the user stops a stream.
const CANCELLED_NOTE: &str = "The user cancelled the stream. Stop responding to the prior request.";

/// Agent settings (`CHATKIT_MODEL`, `CHATKIT_TEMPERATURE`, `CHATKIT_INSTRUCTIONS`, `CHATKIT_MAX_TOOL_STEPS`).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Model name.
    pub model: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// System instructions.
    pub instructions: String,
    /// Most model rounds per turn.
    pub max_tool_steps: usize,
}

/// The default instructions.
pub const DEFAULT_INSTRUCTIONS: &str = "You are TaskPilot, a concise and friendly assistant that manages the user's to-do list. \
Always use the tools to read or change tasks; never invent tasks, ids or their state. \
After changing tasks, say briefly what you did. Dates are ISO 8601; today is given by the user's context when needed.";

/// Errors answered as HTTP errors (before any event is streamed).
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No such thread or item for this user.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request cannot apply (e.g. retrying after an item that is not a user message).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The server's dependencies, built once per process.
pub struct ChatKitServer<S, R, M> {
    store: S,
    tasks: TaskService<R>,
    model: M,
    settings: AgentSettings,
}

/// A streamed request, checked and ready to run.
pub struct Prepared {
    kind: Kind,
    thread: ThreadMetadata,
}

enum Kind {
    Create(UserMessageInput),
    AddMessage(UserMessageInput),
    Retry(ThreadItem),
    Action {
        widget: Option<ThreadItem>,
        action: Action,
    },
}

fn item(thread_id: &str, id: String, kind: ItemKind) -> ThreadItem {
    ThreadItem {
        id,
        thread_id: thread_id.to_owned(),
        created_at: taskpilot_domain::timestamp::now(),
        kind,
    }
}

fn text_of(input: &UserMessageInput) -> String {
    let mut text: String = input
        .content
        .iter()
        .map(|c| match c {
            UserContent::InputText { text } | UserContent::InputTag { text, .. } => text.as_str(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(q) = &input.quoted_text {
        text = format!("> {q}\n{text}");
    }
    text
}

/// A short title from the first message: the first words, at most 48 characters.
pub fn title_from(text: &str) -> String {
    let clean: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= TITLE_CHARS {
        return clean;
    }
    let mut title = String::new();
    for word in clean.split(' ') {
        if title.chars().count() + word.chars().count() + 1 > TITLE_CHARS - 1 {
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    if title.is_empty() {
        title = clean.chars().take(TITLE_CHARS - 1).collect();
    }
    format!("{title}…")
}

impl<S: ChatStore, R: TaskRepository, M: ModelClient> ChatKitServer<S, R, M> {
    /// Wires the store, the task service, the model and the settings.
    pub fn new(store: S, tasks: TaskService<R>, model: M, settings: AgentSettings) -> Self {
        Self {
            store,
            tasks,
            model,
            settings,
        }
    }

    async fn thread(&self, user: &UserId, id: &str) -> Result<ThreadMetadata, ChatError> {
        if !ids::plausible(id) {
            return Err(ChatError::NotFound("thread"));
        }
        self.store
            .load_thread(user, id)
            .await?
            .ok_or(ChatError::NotFound("thread"))
    }

    async fn visible_page(
        &self,
        user: &UserId,
        thread_id: &str,
        paging: &Paging,
    ) -> Result<Page<ThreadItem>, ChatError> {
        let mut page = self.store.list_items(user, thread_id, paging).await?;
        page.data.retain(|i| !i.is_hidden());
        Ok(page)
    }

    /// Answers a JSON (non-streamed) request.
    pub async fn json(&self, user: &UserId, request: Request) -> Result<Value, ChatError> {
        let view = |t: &ThreadMetadata| Thread::view(t, Page::empty());
        let value = match request {
            Request::GetThread { thread_id } => {
                let thread = self.thread(user, &thread_id).await?;
                let paging = Paging {
                    limit: crate::request::DEFAULT_LIMIT,
                    order: Order::Asc,
                    after: None,
                };
                let items = self.visible_page(user, &thread.id, &paging).await?;
                serde_json::to_value(Thread::view(&thread, items))
            }
            Request::ListThreads { paging } => {
                let page = self.store.list_threads(user, &paging).await?;
                serde_json::to_value(Page {
                    data: page.data.iter().map(view).collect(),
                    has_more: page.has_more,
                    after: page.after,
                })
            }
            Request::UpdateThread { thread_id, title } => {
                let mut thread = self.thread(user, &thread_id).await?;
                thread.title = Some(title);
                self.store.save_thread(user, &thread).await?;
                serde_json::to_value(view(&thread))
            }
            Request::DeleteThread { thread_id } => {
                if !ids::plausible(&thread_id)
                    || !self.store.delete_thread(user, &thread_id).await?
                {
                    return Err(ChatError::NotFound("thread"));
                }
                Ok(json!({}))
            }
            Request::ListItems { thread_id, paging } => {
                let thread = self.thread(user, &thread_id).await?;
                serde_json::to_value(self.visible_page(user, &thread.id, &paging).await?)
            }
            Request::Feedback {
                thread_id,
                item_ids,
                kind,
            } => {
                self.thread(user, &thread_id).await?;
                tracing::info!(%thread_id, items = ?item_ids, ?kind, "feedback");
                Ok(json!({}))
            }
            Request::CustomAction {
                thread_id,
                item_id,
                action,
                streaming: false,
            } => {
                let thread = self.thread(user, &thread_id).await?;
                let widget = self.widget(user, &thread.id, item_id.as_deref()).await?;
                let updated = self
                    .apply_action(user, widget.as_ref(), &action)
                    .await
                    .map_err(ChatError::Invalid)?;
                match updated {
                    Some(item) => {
                        self.store.save_item(user, &item).await?;
                        Ok(json!({"updated_item": item}))
                    }
                    None => Ok(json!({})),
                }
            }
            _ => return Err(ChatError::Invalid("this request is streamed".into())),
        };
        value.map_err(|e| ChatError::Invalid(format!("encoding: {e}")))
    }

    async fn widget(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: Option<&str>,
    ) -> Result<Option<ThreadItem>, ChatError> {
        let Some(id) = item_id else {
            return Ok(None);
        };
        let found = if ids::plausible(id) {
            self.store.load_item(user, thread_id, id).await?
        } else {
            None
        };
        match found {
            Some(i) if matches!(i.kind, ItemKind::Widget { .. }) => Ok(Some(i)),
            Some(_) => Err(ChatError::Invalid(format!("item {id} is not a widget"))),
            None => Err(ChatError::NotFound("item")),
        }
    }

    /// Checks a streamed request (404/400 here are HTTP errors) before any event.
    pub async fn prepare(&self, user: &UserId, request: Request) -> Result<Prepared, ChatError> {
        Ok(match request {
            Request::CreateThread { input } => Prepared {
                thread: ThreadMetadata {
                    id: ids::thread(),
                    title: None,
                    created_at: taskpilot_domain::timestamp::now(),
                    status: ThreadStatus::Active,
                    metadata: Map::new(),
                },
                kind: Kind::Create(input),
            },
            Request::AddUserMessage { thread_id, input } => Prepared {
                thread: self.thread(user, &thread_id).await?,
                kind: Kind::AddMessage(input),
            },
            Request::RetryAfterItem { thread_id, item_id } => {
                let thread = self.thread(user, &thread_id).await?;
                let found = if ids::plausible(&item_id) {
                    self.store.load_item(user, &thread.id, &item_id).await?
                } else {
                    None
                };
                let target = found.ok_or(ChatError::NotFound("item"))?;
                if !matches!(target.kind, ItemKind::UserMessage { .. }) {
                    return Err(ChatError::Invalid(
                        "retry_after_item needs a user message".into(),
                    ));
                }
                Prepared {
                    thread,
                    kind: Kind::Retry(target),
                }
            }
            Request::AddClientToolOutput { thread_id, .. } => {
                self.thread(user, &thread_id).await?;
                return Err(ChatError::Invalid(
                    "this thread has no pending client tool call".into(),
                ));
            }
            Request::CustomAction {
                thread_id,
                item_id,
                action,
                streaming: true,
            } => {
                let thread = self.thread(user, &thread_id).await?;
                let widget = self.widget(user, &thread.id, item_id.as_deref()).await?;
                Prepared {
                    thread,
                    kind: Kind::Action { widget, action },
                }
            }
            _ => return Err(ChatError::Invalid("this request is not streamed".into())),
        })
    }

    /// Runs a prepared request, streaming its events. Failures after this point
    /// are `error` events; the stream always ends cleanly.
    pub async fn run<K: EventSink>(
        &self,
        user: &UserId,
        prepared: Prepared,
        sink: &mut K,
        deadline: Instant,
    ) {
        let mut out = Emitter {
            sink,
            store: &self.store,
            user,
            partial: HashMap::new(),
        };
        let result = self.drive(&mut out, prepared, deadline).await;
        match result {
            Ok(()) => {}
            Err(Stop::Disconnected) => out.cancelled().await,
            Err(Stop::Store(e)) => {
                tracing::error!(error = %e, "storage failed mid-stream");
                let _ = out.error("stream.error", None, true).await;
            }
        }
    }

    async fn drive<K: EventSink>(
        &self,
        out: &mut Emitter<'_, K, S>,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<(), Stop> {
        let Prepared { kind, mut thread } = prepared;
        let creating = matches!(kind, Kind::Create(_));
        let options = StreamEvent::StreamOptions {
            stream_options: StreamOptions { allow_cancel: true },
        };
        match kind {
            Kind::Create(input) | Kind::AddMessage(input) => {
                if creating {
                    self.store.save_thread(out.user, &thread).await?;
                    out.send(StreamEvent::ThreadCreated {
                        thread: Thread::view(&thread, Page::empty()),
                    })
                    .await?;
                }
                let text = text_of(&input);
                let user_item = item(
                    &thread.id,
                    ids::message(),
                    ItemKind::UserMessage {
                        content: input.content,
                        attachments: Vec::new(),
                        quoted_text: input.quoted_text,
                        inference_options: input.inference_options.unwrap_or_default(),
                    },
                );
                out.emit(StreamEvent::ItemDone { item: user_item }).await?;
                out.send(options).await?;
                self.respond(out, &thread, deadline).await?;
                if thread.title.is_none() {
                    thread.title = Some(title_from(&text));
                    self.store.save_thread(out.user, &thread).await?;
                    out.send(StreamEvent::ThreadUpdated {
                        thread: Thread::view(&thread, Page::empty()),
                    })
                    .await?;
                }
            }
            Kind::Retry(target) => {
                // Everything after the retried message goes; the client removed it already.
                let mut after = Some(target.id.clone());
                loop {
                    let paging = Paging {
                        limit: 50,
                        order: Order::Asc,
                        after: after.clone(),
                    };
                    let page = self.store.list_items(out.user, &thread.id, &paging).await?;
                    for i in &page.data {
                        self.store.delete_item(out.user, &thread.id, &i.id).await?;
                    }
                    if !page.has_more {
                        break;
                    }
                    after = page.after;
                }
                out.send(options).await?;
                self.respond(out, &thread, deadline).await?;
            }
            Kind::Action { widget, action } => {
                out.send(options).await?;
                match self.apply_action(out.user, widget.as_ref(), &action).await {
                    Ok(Some(updated)) => {
                        out.emit(StreamEvent::ItemReplaced { item: updated })
                            .await?
                    }
                    Ok(None) => {}
                    Err(message) => out.error("custom", Some(message), false).await?,
                }
            }
        }
        Ok(())
    }

    /// `task.complete` / `task.reopen` on a task-list widget: the task changes
    /// and the widget is re-rendered from the current tasks.
    async fn apply_action(
        &self,
        user: &UserId,
        widget: Option<&ThreadItem>,
        action: &Action,
    ) -> Result<Option<ThreadItem>, String> {
        let completed = match action.kind.as_str() {
            widgets::COMPLETE => true,
            widgets::REOPEN => false,
            other => return Err(format!("unknown action `{other}`")),
        };
        let task_id = action.payload["task_id"]
            .as_str()
            .and_then(TaskId::parse)
            .ok_or_else(|| "the action needs payload.task_id".to_owned())?;
        self.tasks
            .set_completed(user, &task_id, completed)
            .await
            .map_err(|e| match e {
                DomainError::NotFound(_) => "that task no longer exists".to_owned(),
                other => other.to_string(),
            })?;
        let Some(widget) = widget else {
            return Ok(None);
        };
        let ItemKind::Widget { widget: tree, .. } = &widget.kind else {
            return Ok(None);
        };
        let mut tasks: Vec<Task> = Vec::new();
        for id in widgets::task_ids(tree) {
            if let Some(id) = TaskId::parse(&id)
                && let Ok(task) = self.tasks.get(user, &id).await
            {
                tasks.push(task);
            }
        }
        let (tree, copy_text) = widgets::task_list(&tasks);
        Ok(Some(ThreadItem {
            kind: ItemKind::Widget {
                widget: tree,
                copy_text: Some(copy_text),
            },
            ..widget.clone()
        }))
    }

    /// The model input for a thread: its recent visible history.
    async fn history(&self, user: &UserId, thread_id: &str) -> Result<Vec<Value>, StoreError> {
        let paging = Paging {
            limit: HISTORY,
            order: Order::Desc,
            after: None,
        };
        let mut items = self.store.list_items(user, thread_id, &paging).await?.data;
        items.reverse();
        Ok(items.iter().filter_map(to_input).collect())
    }

    /// The agent loop: model rounds with tool calls until the model answers.
    async fn respond<K: EventSink>(
        &self,
        out: &mut Emitter<'_, K, S>,
        thread: &ThreadMetadata,
        deadline: Instant,
    ) -> Result<(), Stop> {
        let mut input = self.history(out.user, &thread.id).await?;
        let mut shown: Vec<Task> = Vec::new();
        let mut touched = false;
        for _round in 0..self.settings.max_tool_steps.max(1) {
            let body = json!({
                "model": self.settings.model,
                "instructions": self.settings.instructions,
                "temperature": self.settings.temperature,
                "input": input,
                "tools": tools::definitions(),
                "parallel_tool_calls": true,
                "store": false,
                "stream": true,
            });
            let mut stream = match self.model.start(&body, deadline).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "the model could not start");
                    return out
                        .error(
                            "stream.error",
                            Some("The assistant is unavailable right now. Please retry.".into()),
                            true,
                        )
                        .await;
                }
            };
            let calls = match self.consume(out, thread, &mut stream).await? {
                Some(calls) => calls,
                None => return Ok(()),
            };
            if calls.is_empty() {
                break;
            }
            for call in calls {
                let result = tools::run(&self.tasks, out.user, &call.name, &call.arguments).await;
                touched = true;
                for task in result.shown {
                    shown.retain(|t| t.id != task.id);
                    shown.push(task);
                }
                if let Some(removed) = result.removed {
                    shown.retain(|t| t.id != removed);
                }
                input.push(json!({"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}));
                input.push(json!({"type": "function_call_output", "call_id": call.call_id, "output": result.output}));
            }
        }
        if touched {
            let (widget, copy_text) = widgets::task_list(&shown);
            let item = item(
                &thread.id,
                ids::widget(),
                ItemKind::Widget {
                    widget,
                    copy_text: Some(copy_text),
                },
            );
            out.emit(StreamEvent::ItemDone { item }).await?;
        }
        Ok(())
    }

    /// Streams one model round to the client. `Some(calls)` when the round
    /// completed (calls may be empty), `None` when it failed (an error event was sent).
    async fn consume<K: EventSink>(
        &self,
        out: &mut Emitter<'_, K, S>,
        thread: &ThreadMetadata,
        stream: &mut M::Stream,
    ) -> Result<Option<Vec<Call>>, Stop> {
        let mut ours: HashMap<String, String> = HashMap::new();
        let mut calls = Vec::new();
        loop {
            let event = match stream.next_event().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the model stream failed");
                    out.interrupted().await?;
                    return Ok(None);
                }
                None => {
                    out.keep_partials().await?;
                    return Ok(Some(calls));
                }
            };
            let kind = event["type"].as_str().unwrap_or_default();
            let upstream = event["item_id"]
                .as_str()
                .or_else(|| event["item"]["id"].as_str())
                .unwrap_or_default()
                .to_owned();
            let content_index = event["content_index"].as_u64().unwrap_or(0) as usize;
            match kind {
                "response.output_item.added" if event["item"]["type"] == "message" => {
                    let id = ids::message();
                    ours.insert(upstream, id.clone());
                    let item = item(
                        &thread.id,
                        id,
                        ItemKind::AssistantMessage {
                            content: Vec::new(),
                        },
                    );
                    out.added(item).await?;
                }
                "response.content_part.added"
                | "response.output_text.delta"
                | "response.content_part.done" => {
                    let text = |field: &Value| field.as_str().unwrap_or_default().to_owned();
                    let update = match kind {
                        "response.content_part.added" => ItemUpdate::ContentPartAdded {
                            content_index,
                            content: AssistantContent::OutputText {
                                text: String::new(),
                                annotations: Vec::new(),
                            },
                        },
                        "response.output_text.delta" => ItemUpdate::TextDelta {
                            content_index,
                            delta: text(&event["delta"]),
                        },
                        _ => ItemUpdate::ContentPartDone {
                            content_index,
                            content: AssistantContent::OutputText {
                                text: text(&event["part"]["text"]),
                                annotations: Vec::new(),
                            },
                        },
                    };
                    if let Some(id) = ours.get(&upstream) {
                        out.update(id, update).await?;
                    }
                }
                "response.output_item.done" if event["item"]["type"] == "message" => {
                    if let Some(id) = ours.get(&upstream) {
                        out.finish(id).await?;
                    }
                }
                "response.output_item.done" if event["item"]["type"] == "function_call" => {
                    let it = &event["item"];
                    calls.push(Call {
                        call_id: it["call_id"].as_str().unwrap_or_default().to_owned(),
                        name: it["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: it["arguments"].as_str().unwrap_or("{}").to_owned(),
                    });
                }
                "response.completed" => {
                    out.keep_partials().await?;
                    return Ok(Some(calls));
                }
                "response.failed" | "response.incomplete" | "error" => {
                    tracing::warn!(event = %event, "the model failed");
                    out.interrupted().await?;
                    return Ok(None);
                }
                _ => {}
            }
        }
    }
}

/// A function call the model made.
struct Call {
    call_id: String,
    name: String,
    arguments: String,
}

/// Why a run stopped early.
enum Stop {
    Disconnected,
    Store(StoreError),
}

impl From<Disconnected> for Stop {
    fn from(_: Disconnected) -> Self {
        Stop::Disconnected
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// Sends events and persists what must be persisted, tracking streamed
/// (added but not yet done) assistant messages so they survive a disconnect.
struct Emitter<'a, K, S> {
    sink: &'a mut K,
    store: &'a S,
    user: &'a UserId,
    partial: HashMap<String, ThreadItem>,
}

impl<K: EventSink, S: ChatStore> Emitter<'_, K, S> {
    async fn send(&mut self, event: StreamEvent) -> Result<(), Stop> {
        self.sink.send(event).await.map_err(Stop::from)
    }

    /// Persists done/replaced/removed items, then sends the event.
    async fn emit(&mut self, event: StreamEvent) -> Result<(), Stop> {
        match &event {
            StreamEvent::ItemDone { item } | StreamEvent::ItemReplaced { item } => {
                self.partial.remove(&item.id);
                self.store.save_item(self.user, item).await?;
            }
            StreamEvent::ItemRemoved { item_id } => {
                if let Some(i) = self.partial.remove(item_id) {
                    self.store
                        .delete_item(self.user, &i.thread_id, item_id)
                        .await?;
                }
            }
            _ => {}
        }
        self.send(event).await
    }

    async fn added(&mut self, item: ThreadItem) -> Result<(), Stop> {
        self.partial.insert(item.id.clone(), item.clone());
        self.send(StreamEvent::ItemAdded { item }).await
    }

    async fn update(&mut self, id: &str, update: ItemUpdate) -> Result<(), Stop> {
        if let Some(ThreadItem {
            kind: ItemKind::AssistantMessage { content },
            ..
        }) = self.partial.get_mut(id)
        {
            match &update {
                ItemUpdate::ContentPartAdded {
                    content_index,
                    content: part,
                }
                | ItemUpdate::ContentPartDone {
                    content_index,
                    content: part,
                } => {
                    if *content_index >= content.len() {
                        content.resize(*content_index + 1, part.clone());
                    }
                    content[*content_index] = part.clone();
                }
                ItemUpdate::TextDelta {
                    content_index,
                    delta,
                } => {
                    if let Some(AssistantContent::OutputText { text, .. }) =
                        content.get_mut(*content_index)
                    {
                        text.push_str(delta);
                    }
                }
                ItemUpdate::WidgetRootUpdated { .. } => {}
            }
        }
        self.send(StreamEvent::ItemUpdated {
            item_id: id.to_owned(),
            update,
        })
        .await
    }

    async fn finish(&mut self, id: &str) -> Result<(), Stop> {
        match self.partial.get(id).cloned() {
            Some(item) => self.emit(StreamEvent::ItemDone { item }).await,
            None => Ok(()),
        }
    }

    /// Closes streamed messages that have text (a failed round keeps them).
    async fn keep_partials(&mut self) -> Result<(), Stop> {
        let ids: Vec<String> = self.partial.keys().cloned().collect();
        for id in ids {
            if has_text(&self.partial[&id]) {
                self.finish(&id).await?;
            } else {
                self.partial.remove(&id);
            }
        }
        Ok(())
    }

    /// A model round failed mid-stream: keep what was said, then a
    /// retryable error event.
    async fn interrupted(&mut self) -> Result<(), Stop> {
        self.keep_partials().await?;
        self.error(
            "stream.error",
            Some("The answer was interrupted. Please retry.".into()),
            true,
        )
        .await
    }

    async fn error(
        &mut self,
        code: &str,
        message: Option<String>,
        allow_retry: bool,
    ) -> Result<(), Stop> {
        self.send(StreamEvent::Error {
            code: code.to_owned(),
            message,
            allow_retry,
        })
        .await
    }

    /// After a disconnect: keep the partial answer and note the cancellation.
    async fn cancelled(&mut self) {
        let mut thread_id = None;
        for (_, item) in self.partial.drain() {
            thread_id = Some(item.thread_id.clone());
            if has_text(&item)
                && let Err(e) = self.store.save_item(self.user, &item).await
            {
                tracing::error!(error = %e, "could not keep the partial answer");
            }
        }
        if let Some(thread_id) = thread_id {
            let note = item(
                &thread_id,
                ids::hidden(),
                ItemKind::SdkHiddenContext {
                    content: CANCELLED_NOTE.into(),
                },
            );
            if let Err(e) = self.store.save_item(self.user, &note).await {
                tracing::error!(error = %e, "could not note the cancellation");
            }
        }
        tracing::info!("the client disconnected; the stream was stopped");
    }
}

/// Whether an assistant message has any text yet.
fn has_text(item: &ThreadItem) -> bool {
    matches!(&item.kind, ItemKind::AssistantMessage { content }
        if content.iter().any(|AssistantContent::OutputText { text, .. }| !text.is_empty()))
}

/// A thread item as model input (`None` for items the model does not need).
fn to_input(item: &ThreadItem) -> Option<Value> {
    match &item.kind {
        ItemKind::UserMessage {
            content,
            quoted_text,
            ..
        } => {
            let input = UserMessageInput {
                content: content.clone(),
                attachments: Vec::new(),
                quoted_text: quoted_text.clone(),
                inference_options: None,
            };
            Some(json!({"role": "user", "content": text_of(&input)}))
        }
        ItemKind::AssistantMessage { content } => {
            let text: String = content
                .iter()
                .map(|AssistantContent::OutputText { text, .. }| text.as_str())
                .collect();
            (!text.is_empty()).then(|| json!({"role": "assistant", "content": text}))
        }
        ItemKind::Widget { copy_text, .. } => Some(json!({"role": "user", "content": format!(
            "The following graphical UI widget (id: {}) was displayed to the user:\n{}",
            item.id,
            copy_text.as_deref().unwrap_or("")
        )})),
        ItemKind::HiddenContextItem { content } => {
            Some(json!({"role": "user", "content": content.to_string()}))
        }
        ItemKind::SdkHiddenContext { content } => Some(json!({"role": "user", "content": content})),
        ItemKind::ClientToolCall { .. } | ItemKind::EndOfTurn => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_short() {
        assert_eq!(
            title_from("add buy milk due tomorrow"),
            "add buy milk due tomorrow"
        );
        let long = title_from(
            "please add a task to renew the passport before the trip to Lisbon next spring",
        );
        assert!(long.chars().count() <= 48 && long.ends_with('…'), "{long}");
        assert_eq!(title_from("  spaced\n\tout  "), "spaced out");
    }
}

//! In-memory fakes of the engine's ports, for fast in-process tests (the
//! `testing` feature): a thread store with the DynamoDB adapter's ordering, a
//! scripted model, an event sink that can disconnect, and a journal in which
//! the store and the model record their calls in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use taskpilot_domain::budget::{DayUsage, TokenUsage, UsageDay, UsageStore};
use taskpilot_domain::{StoreError, UserId};

use crate::attachments::{AttachmentRecord, AttachmentStore, StoredObject};
use crate::model::{
    FunctionCall, ModelClient, ModelError, ModelEvent, ModelInput, ModelRequest, ModelStream, Role,
};
use crate::request::{Order, Paging};
use crate::sink::{Disconnected, EventSink};
use crate::store::{ChatStore, Feedback, MessageThread, RecentThread, Write};
use crate::types::{ItemKind, Page, StreamEvent, ThreadItem, ThreadMetadata, UploadDescriptor};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls to the fakes, in order (`store.load_recent`, `model.start`, …).
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn record(&self, call: &str) {
        lock(&self.0).push(call.to_owned());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.0).clone()
    }

    /// The calls before the first one named `call`.
    pub fn before(&self, call: &str) -> Vec<String> {
        self.calls().into_iter().take_while(|c| c != call).collect()
    }
}

/// Item order: ids are `<prefix>_<ulid>`; the ulid sorts by creation.
fn order_key(id: &str) -> (String, String) {
    match id.split_once('_') {
        Some((prefix, rest)) => (rest.to_owned(), prefix.to_owned()),
        None => (id.to_owned(), String::new()),
    }
}

type ThreadKey = (String, String);
type ItemKey = (String, String, (String, String));

/// The activity index as the DynamoDB adapter keeps it, on a logical clock:
/// a thread's creation and each new user message give it a new entry and
/// supersede its previous one; a listing shows the entries of its snapshot.
#[derive(Default)]
struct Activity {
    /// The latest time given out.
    clock: u64,
    /// (user, time, thread) → when the entry was superseded.
    entries: BTreeMap<(String, u64, String), Option<u64>>,
    /// (user, thread) → the time of its current entry.
    latest: BTreeMap<(String, String), u64>,
}

impl Activity {
    /// Moves `thread` of `user` to a new time.
    fn touch(&mut self, user: &str, thread: &str) {
        self.clock += 1;
        let at = self.clock;
        if let Some(previous) = self.latest.insert((user.to_owned(), thread.to_owned()), at) {
            self.entries
                .insert((user.to_owned(), previous, thread.to_owned()), Some(at));
        }
        self.entries
            .insert((user.to_owned(), at, thread.to_owned()), None);
    }

    /// Drops every entry of `thread`.
    fn forget(&mut self, user: &str, thread: &str) {
        self.entries
            .retain(|(u, _, t), _| !(u == user && t == thread));
        self.latest.remove(&(user.to_owned(), thread.to_owned()));
    }

    /// The entries a listing at `snapshot` shows, oldest first.
    fn visible(&self, user: &str, snapshot: u64) -> Vec<(u64, String)> {
        self.entries
            .iter()
            .filter(|((u, at, _), superseded)| {
                u == user && *at <= snapshot && superseded.is_none_or(|s| s > snapshot)
            })
            .map(|((_, at, thread), _)| (*at, thread.clone()))
            .collect()
    }
}

/// A listing's cursor in the fake: `<snapshot>-<time>-<thread id>`.
fn activity_cursor(after: &str) -> Option<(u64, u64, String)> {
    let mut parts = after.splitn(3, '-');
    let snapshot = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((snapshot, at, parts.next()?.to_owned()))
}

/// A [`ChatStore`] in maps, ordered as the DynamoDB adapter orders.
#[derive(Default)]
pub struct InMemoryChat {
    threads: Mutex<BTreeMap<ThreadKey, ThreadMetadata>>,
    items: Mutex<BTreeMap<ItemKey, ThreadItem>>,
    feedback: Mutex<BTreeMap<(String, String, String), Feedback>>,
    fenced: Mutex<std::collections::BTreeSet<(String, String, String)>>,
    attachments: Mutex<BTreeMap<(String, String), AttachmentRecord>>,
    activity: Mutex<Activity>,
    usage: taskpilot_domain::memory::InMemorySessions,
    failing: AtomicBool,
    failing_calls: std::sync::atomic::AtomicUsize,
    hanging: AtomicBool,
    landing_late: AtomicBool,
    told: Mutex<Vec<MessageThread>>,
    journal: Journal,
}

impl InMemoryChat {
    /// A store recording its calls in `journal`.
    pub fn with_journal(journal: Journal) -> Self {
        Self {
            journal,
            ..Self::default()
        }
    }

    /// What each [`ChatStore::save_message`] was told of its thread, in order.
    pub fn messages_told(&self) -> Vec<MessageThread> {
        lock(&self.told).clone()
    }

    /// From now on every call fails (`true`) or works again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The next `n` calls fail, then calls work again.
    pub fn fail_next_calls(&self, n: usize) {
        self.failing_calls.store(n, Ordering::SeqCst);
    }

    /// From now on every call never answers (`true`), as a frozen service;
    /// calls made after `false` answer again.
    pub fn set_hanging(&self, hanging: bool) {
        self.hanging.store(hanging, Ordering::SeqCst);
    }

    /// Every stored item of `thread_id`, hidden ones included, in order.
    pub fn stored_items(&self, user: &UserId, thread_id: &str) -> Vec<ThreadItem> {
        lock(&self.items)
            .iter()
            .filter(|((u, t, _), _)| u == user.as_str() && t == thread_id)
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// From now on item writes fail as a timeout does although they land
    /// (`true`), or work again (`false`).
    pub fn set_landing_late(&self, late: bool) {
        self.landing_late.store(late, Ordering::SeqCst);
    }

    /// Every stored rating of `user`, by thread and item.
    pub fn stored_feedback(&self, user: &UserId) -> Vec<Feedback> {
        lock(&self.feedback)
            .iter()
            .filter(|((u, _, _), _)| u == user.as_str())
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// A stored thread.
    pub fn stored_thread(&self, user: &UserId, thread_id: &str) -> Option<ThreadMetadata> {
        lock(&self.threads)
            .get(&(user.as_str().to_owned(), thread_id.to_owned()))
            .cloned()
    }

    async fn call(&self, name: &str) -> Result<(), StoreError> {
        self.journal.record(&format!("store.{name}"));
        if self.hanging.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let one_of_the_next = self
            .failing_calls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if one_of_the_next || self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the fake store is failing".into()));
        }
        Ok(())
    }
}

/// One page of `all` (in ascending order) as the adapter pages.
fn page_of<T: Clone>(all: Vec<T>, paging: &Paging, id: impl Fn(&T) -> &str) -> Page<T> {
    let mut all = all;
    if paging.order == Order::Desc {
        all.reverse();
    }
    let start = match &paging.after {
        Some(after) => all
            .iter()
            .position(|x| id(x) == after)
            .map_or(all.len(), |p| p + 1),
        None => 0,
    };
    let rest: Vec<T> = all.into_iter().skip(start).collect();
    Page::first(rest, paging.limit, |x| id(x).to_owned())
}

impl UsageStore for InMemoryChat {
    async fn day_usage(&self, user: &UserId, day: UsageDay) -> Result<DayUsage, StoreError> {
        self.call("day_usage").await?;
        self.usage.day_usage(user, day).await
    }

    async fn add_usage(
        &self,
        user: &UserId,
        day: UsageDay,
        tokens: TokenUsage,
        first_round: bool,
    ) -> Result<DayUsage, StoreError> {
        self.call("add_usage").await?;
        self.usage.add_usage(user, day, tokens, first_round).await
    }
}

impl ChatStore for InMemoryChat {
    async fn save_thread(&self, user: &UserId, thread: &ThreadMetadata) -> Result<(), StoreError> {
        self.call("save_thread").await?;
        lock(&self.threads).insert(
            (user.as_str().to_owned(), thread.id.clone()),
            thread.clone(),
        );
        lock(&self.activity).touch(user.as_str(), &thread.id);
        Ok(())
    }

    async fn load_thread(
        &self,
        user: &UserId,
        thread_id: &str,
    ) -> Result<Option<ThreadMetadata>, StoreError> {
        self.call("load_thread").await?;
        Ok(self.stored_thread(user, thread_id))
    }

    async fn load_recent(
        &self,
        user: &UserId,
        thread_id: &str,
        limit: usize,
        with_mark: bool,
    ) -> Result<Option<RecentThread>, StoreError> {
        self.call("load_recent").await?;
        let Some(thread) = self.stored_thread(user, thread_id) else {
            return Ok(None);
        };
        let mut items = self.stored_items(user, thread_id);
        let skip = items.len().saturating_sub(limit);
        items.drain(..skip);
        // The mark: the time of the thread's current activity entry.
        let mark = lock(&self.activity)
            .latest
            .get(&(user.as_str().to_owned(), thread_id.to_owned()))
            .copied()
            .filter(|_| with_mark);
        Ok(Some(RecentThread {
            thread,
            items,
            mark,
        }))
    }

    async fn list_threads(
        &self,
        user: &UserId,
        paging: &Paging,
    ) -> Result<Page<ThreadMetadata>, StoreError> {
        self.call("list_threads").await?;
        // As the adapter: a snapshot at the first page, carried in the
        // cursor; anything else as `after` starts the listing over.
        let cursor = paging.after.as_deref().and_then(activity_cursor);
        let (snapshot, mut visible) = {
            let activity = lock(&self.activity);
            let snapshot = cursor.as_ref().map_or(activity.clock, |c| c.0);
            (snapshot, activity.visible(user.as_str(), snapshot))
        };
        if paging.order == Order::Desc {
            visible.reverse();
        }
        if let Some((_, at, thread)) = cursor {
            let place = (at, thread);
            visible.retain(|entry| match paging.order {
                Order::Asc => *entry > place,
                Order::Desc => *entry < place,
            });
        }
        let mut found: Vec<(u64, ThreadMetadata)> = visible
            .into_iter()
            .filter_map(|(at, id)| self.stored_thread(user, &id).map(|t| (at, t)))
            .take(paging.limit + 1)
            .collect();
        let has_more = found.len() > paging.limit;
        found.truncate(paging.limit);
        let after = match found.last() {
            Some((at, t)) if has_more => Some(format!("{snapshot}-{at}-{}", t.id)),
            _ => None,
        };
        Ok(Page {
            data: found.into_iter().map(|(_, t)| t).collect(),
            has_more,
            after,
        })
    }

    async fn delete_thread(&self, user: &UserId, thread_id: &str) -> Result<Write, StoreError> {
        self.call("delete_thread").await?;
        lock(&self.items).retain(|(u, t, _), _| !(u == user.as_str() && t == thread_id));
        lock(&self.feedback).retain(|(u, t, _), _| !(u == user.as_str() && t == thread_id));
        lock(&self.activity).forget(user.as_str(), thread_id);
        let removed = lock(&self.threads)
            .remove(&(user.as_str().to_owned(), thread_id.to_owned()))
            .is_some();
        Ok(if removed { Write::Done } else { Write::Refused })
    }

    async fn update_thread(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        untitled_only: bool,
    ) -> Result<Write, StoreError> {
        self.call("update_thread").await?;
        let mut threads = lock(&self.threads);
        let key = (user.as_str().to_owned(), thread.id.clone());
        match threads.get(&key) {
            None => Ok(Write::Refused),
            Some(stored) if untitled_only && stored.title.is_some() => Ok(Write::Refused),
            Some(_) => {
                threads.insert(key, thread.clone());
                Ok(Write::Done)
            }
        }
    }

    async fn save_message(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        message: &ThreadItem,
        known: MessageThread,
    ) -> Result<Write, StoreError> {
        // Noted, then written as a store without a single write does.
        lock(&self.told).push(known);
        if known == MessageThread::New {
            self.save_thread(user, thread).await?;
        }
        self.save_item(user, message).await
    }

    async fn save_item(&self, user: &UserId, item: &ThreadItem) -> Result<Write, StoreError> {
        self.call("save_item").await?;
        let key = (
            user.as_str().to_owned(),
            item.thread_id.clone(),
            item.id.clone(),
        );
        if self.stored_thread(user, &item.thread_id).is_none() || lock(&self.fenced).contains(&key)
        {
            return Ok(Write::Refused);
        }
        // The attachments are claimed with the item, or nothing is written.
        let mut records = lock(&self.attachments);
        let mut claimed = Vec::new();
        for id in item.attachment_ids() {
            let record_key = (user.as_str().to_owned(), id.to_owned());
            let Some(record) = records
                .get(&record_key)
                .and_then(|r| r.attached_to(&item.thread_id, &item.id))
            else {
                return Ok(Write::AttachmentTaken);
            };
            claimed.push((record_key, record));
        }
        records.extend(claimed);
        drop(records);
        let replaced = lock(&self.items).insert(
            (
                user.as_str().to_owned(),
                item.thread_id.clone(),
                order_key(&item.id),
            ),
            item.clone(),
        );
        // A new user message moves its thread (a rewritten one does not).
        if replaced.is_none() && matches!(item.kind, ItemKind::UserMessage { .. }) {
            lock(&self.activity).touch(user.as_str(), &item.thread_id);
        }
        if self.landing_late.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "timed out (but the write landed)".into(),
            ));
        }
        Ok(Write::Done)
    }

    async fn fence_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> Result<(), StoreError> {
        self.call("fence_item").await?;
        if self.stored_thread(user, thread_id).is_none() {
            return Ok(());
        }
        lock(&self.items).retain(|(u, t, (rest, prefix)), _| {
            let id = if prefix.is_empty() {
                rest.clone()
            } else {
                format!("{prefix}_{rest}")
            };
            !(u == user.as_str() && t == thread_id && id == item_id)
        });
        lock(&self.fenced).insert((
            user.as_str().to_owned(),
            thread_id.to_owned(),
            item_id.to_owned(),
        ));
        Ok(())
    }

    async fn load_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> Result<Option<ThreadItem>, StoreError> {
        self.call("load_item").await?;
        Ok(lock(&self.items)
            .get(&(
                user.as_str().to_owned(),
                thread_id.to_owned(),
                order_key(item_id),
            ))
            .cloned())
    }

    async fn list_items(
        &self,
        user: &UserId,
        thread_id: &str,
        paging: &Paging,
    ) -> Result<Page<ThreadItem>, StoreError> {
        self.call("list_items").await?;
        Ok(page_of(self.stored_items(user, thread_id), paging, |i| {
            &i.id
        }))
    }

    async fn delete_items(
        &self,
        user: &UserId,
        thread_id: &str,
        item_ids: &[String],
    ) -> Result<(), StoreError> {
        self.call("delete_items").await?;
        let mut items = lock(&self.items);
        for id in item_ids {
            items.remove(&(
                user.as_str().to_owned(),
                thread_id.to_owned(),
                order_key(id),
            ));
        }
        Ok(())
    }

    async fn delete_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> Result<(), StoreError> {
        self.call("delete_item").await?;
        lock(&self.items).remove(&(
            user.as_str().to_owned(),
            thread_id.to_owned(),
            order_key(item_id),
        ));
        Ok(())
    }

    async fn save_feedback(&self, user: &UserId, ratings: &[Feedback]) -> Result<(), StoreError> {
        self.call("save_feedback").await?;
        let mut stored = lock(&self.feedback);
        for rating in ratings {
            let key = (
                user.as_str().to_owned(),
                rating.thread_id.clone(),
                rating.item_id.clone(),
            );
            stored.insert(key, rating.clone());
        }
        Ok(())
    }

    async fn save_attachment(
        &self,
        user: &UserId,
        record: &AttachmentRecord,
    ) -> Result<(), StoreError> {
        self.call("save_attachment").await?;
        lock(&self.attachments).insert(
            (user.as_str().to_owned(), record.id.clone()),
            record.clone(),
        );
        Ok(())
    }

    async fn load_attachment(
        &self,
        user: &UserId,
        attachment_id: &str,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        self.call("load_attachment").await?;
        Ok(lock(&self.attachments)
            .get(&(user.as_str().to_owned(), attachment_id.to_owned()))
            .cloned())
    }

    async fn list_attachments(&self, user: &UserId) -> Result<Vec<AttachmentRecord>, StoreError> {
        self.call("list_attachments").await?;
        Ok(lock(&self.attachments)
            .iter()
            .filter(|((u, _), _)| u == user.as_str())
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn delete_attachments(
        &self,
        user: &UserId,
        attachment_ids: &[String],
    ) -> Result<(), StoreError> {
        self.call("delete_attachments").await?;
        let mut records = lock(&self.attachments);
        for id in attachment_ids {
            records.remove(&(user.as_str().to_owned(), id.clone()));
        }
        Ok(())
    }
}

/// One scripted model round.
#[derive(Debug, Clone)]
pub enum Round {
    /// These events, then the end of the stream.
    Events(Vec<Result<ModelEvent, ModelError>>),
    /// The round cannot start.
    StartFails,
}

impl Round {
    /// A streamed answer, word by word, then `Completed`.
    pub fn text(text: &str) -> Self {
        let mut events = message("m1", text, usize::MAX);
        events.push(Ok(ModelEvent::Completed));
        Self::Events(events)
    }

    /// Function calls `(name, JSON arguments)`, then `Completed`.
    pub fn calls(calls: &[(&str, &str)]) -> Self {
        let mut events: Vec<_> = calls
            .iter()
            .enumerate()
            .map(|(i, (name, arguments))| {
                Ok(ModelEvent::FunctionCall(FunctionCall {
                    call_id: format!("call_{i}"),
                    name: (*name).to_owned(),
                    arguments: (*arguments).to_owned(),
                }))
            })
            .collect();
        events.push(Ok(ModelEvent::Completed));
        Self::Events(events)
    }

    /// The first `words` words of `text`, then the stream fails.
    pub fn broken(text: &str, words: usize) -> Self {
        let mut events = message("m1", text, words);
        events.push(Err(ModelError("connection reset".into())));
        Self::Events(events)
    }

    /// The same round, reporting `usage` just before its last event (as
    /// the Responses API reports it with `response.completed` or
    /// `.failed`).
    pub fn with_usage(self, usage: TokenUsage) -> Self {
        match self {
            Self::Events(mut events) => {
                let at = events.len().saturating_sub(1);
                events.insert(at, Ok(ModelEvent::Usage(usage)));
                Self::Events(events)
            }
            Self::StartFails => Self::StartFails,
        }
    }

    /// The first `words` words of `text`, then the model reports a failure.
    pub fn failed(text: &str, words: usize) -> Self {
        let mut events = message("m1", text, words);
        events.push(Ok(ModelEvent::Failed {
            reason: "server_error".into(),
        }));
        Self::Events(events)
    }
}

/// The events of a streamed message; cut after `upto` words (then no done
/// events).
fn message(item: &str, text: &str, upto: usize) -> Vec<Result<ModelEvent, ModelError>> {
    let item = item.to_owned();
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    let mut events = vec![
        Ok(ModelEvent::MessageStarted { item: item.clone() }),
        Ok(ModelEvent::TextStarted {
            item: item.clone(),
            part: 0,
        }),
    ];
    for w in words.iter().take(upto) {
        events.push(Ok(ModelEvent::TextDelta {
            item: item.clone(),
            part: 0,
            delta: (*w).to_owned(),
        }));
    }
    if upto >= words.len() {
        events.push(Ok(ModelEvent::TextDone {
            item: item.clone(),
            part: 0,
            text: text.to_owned(),
        }));
        events.push(Ok(ModelEvent::MessageDone { item }));
    }
    events
}

fn is_context(item: &ModelInput) -> bool {
    matches!(
        item,
        ModelInput::Message {
            role: Role::Developer,
            ..
        }
    )
}

/// A request the scripted model received.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRequest {
    /// Model name.
    pub model: String,
    /// The instructions, with the caller's context.
    pub instructions: String,
    /// The conversation, without the application's context notes.
    pub input: Vec<ModelInput>,
    /// The application's context (developer messages), joined.
    pub context: Option<String>,
    /// Where the first context note stood in the whole input.
    pub context_at: Option<usize>,
    /// The tool names.
    pub tools: Vec<String>,
    /// The tool the round had to call.
    pub tool_choice: Option<String>,
}

#[derive(Default)]
struct ModelState {
    rounds: VecDeque<Round>,
    seen: Vec<SeenRequest>,
}

/// A [`ModelClient`] that plays scripted rounds and records what it was sent.
#[derive(Clone, Default)]
pub struct ScriptedModel {
    state: Arc<Mutex<ModelState>>,
    stopped_early: Arc<AtomicBool>,
    journal: Journal,
}

impl ScriptedModel {
    /// A model recording its calls in `journal`.
    pub fn with_journal(journal: Journal) -> Self {
        Self {
            journal,
            ..Self::default()
        }
    }

    /// Queues rounds (an unscripted round fails to start).
    pub fn push(&self, round: Round) -> &Self {
        lock(&self.state).rounds.push_back(round);
        self
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.state).seen.clone()
    }

    /// Whether a stream was dropped before its last event (the call stopped).
    pub fn stopped_early(&self) -> bool {
        self.stopped_early.load(Ordering::SeqCst)
    }
}

/// The stream of a scripted round.
pub struct ScriptedStream {
    events: VecDeque<Result<ModelEvent, ModelError>>,
    stopped_early: Arc<AtomicBool>,
}

impl ModelStream for ScriptedStream {
    async fn next_event(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        self.events.pop_front()
    }
}

impl Drop for ScriptedStream {
    fn drop(&mut self) {
        if !self.events.is_empty() {
            self.stopped_early.store(true, Ordering::SeqCst);
        }
    }
}

impl ModelClient for ScriptedModel {
    type Stream = ScriptedStream;

    async fn start(
        &self,
        request: &ModelRequest<'_>,
        _deadline: Instant,
    ) -> Result<ScriptedStream, ModelError> {
        self.journal.record("model.start");
        let round = {
            let mut state = lock(&self.state);
            state.seen.push(SeenRequest {
                model: request.model.to_owned(),
                instructions: request.instructions.to_owned(),
                input: request
                    .input
                    .iter()
                    .filter(|i| !is_context(i))
                    .cloned()
                    .collect(),
                context: {
                    let notes: Vec<&str> = request
                        .input
                        .iter()
                        .filter_map(|i| match i {
                            ModelInput::Message {
                                role: Role::Developer,
                                text,
                            } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    (!notes.is_empty()).then(|| notes.join("\n"))
                },
                context_at: request.input.iter().position(is_context),
                tools: request.tools.iter().map(|t| t.name.to_owned()).collect(),
                tool_choice: request.tool_choice.map(str::to_owned),
            });
            state.rounds.pop_front()
        };
        match round {
            Some(Round::Events(events)) => Ok(ScriptedStream {
                events: events.into(),
                stopped_early: self.stopped_early.clone(),
            }),
            Some(Round::StartFails) => Err(ModelError("HTTP 500".into())),
            None => Err(ModelError("no scripted round".into())),
        }
    }
}

/// An [`EventSink`] that keeps the events; it can play a client that leaves.
#[derive(Default)]
pub struct VecSink {
    /// What was sent, in order.
    pub events: Vec<StreamEvent>,
    disconnect_after: Option<usize>,
}

impl VecSink {
    /// A client that takes `n` events, then disconnects.
    pub fn disconnecting_after(n: usize) -> Self {
        Self {
            events: Vec::new(),
            disconnect_after: Some(n),
        }
    }

    /// The events as JSON.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or_default())
            .collect()
    }

    /// The `type` of every event.
    pub fn types(&self) -> Vec<String> {
        self.json()
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl EventSink for VecSink {
    async fn send(&mut self, event: StreamEvent) -> Result<(), Disconnected> {
        if self
            .disconnect_after
            .is_some_and(|n| self.events.len() >= n)
        {
            return Err(Disconnected);
        }
        self.events.push(event);
        Ok(())
    }
}

/// Counts, as recorded ([`crate::metrics::Metrics`]).
#[derive(Clone, Default)]
pub struct RecordedMetrics(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl RecordedMetrics {
    /// The count `name` so far.
    pub fn get(&self, name: &str) -> u64 {
        lock(&self.0).get(name).copied().unwrap_or(0)
    }

    /// Whether `name` was counted at all (a count of 0 included).
    pub fn counted(&self, name: &str) -> bool {
        lock(&self.0).contains_key(name)
    }
}

impl crate::metrics::Metrics for RecordedMetrics {
    fn count(&self, name: &'static str, value: u64) {
        *lock(&self.0).entry(name).or_default() += value;
    }
}

/// An object as [`InMemoryFiles`] holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeObject {
    /// Its size in bytes.
    pub size: u64,
    /// The content type it was uploaded with.
    pub content_type: String,
    /// The disposition it is stored with.
    pub disposition: String,
    /// Whether a message uses it (the S3 tag; `false` is `pending`).
    pub used: bool,
    /// Its bytes, when the server stored them (a direct upload).
    pub bytes: Option<Vec<u8>>,
}

/// Runs when [`InMemoryFiles`] stores a direct upload.
type PutHook = Arc<dyn Fn() + Send + Sync>;

/// An [`AttachmentStore`] in a map: the test plays the browser's upload
/// with [`InMemoryFiles::put`]. URLs are fake but distinct per call, so a
/// refreshed preview shows.
#[derive(Clone, Default)]
pub struct InMemoryFiles {
    objects: Arc<Mutex<BTreeMap<String, FakeObject>>>,
    signed: Arc<std::sync::atomic::AtomicU64>,
    journal: Journal,
    failing_puts: Arc<AtomicBool>,
    after_put: Arc<Mutex<Option<PutHook>>>,
}

impl InMemoryFiles {
    /// A store recording its calls in `journal`.
    pub fn with_journal(journal: Journal) -> Self {
        Self {
            journal,
            ..Self::default()
        }
    }

    /// Stores bytes under an attachment, as an upload to its URL would.
    pub fn put(&self, attachment_id: &str, size: u64, content_type: &str) {
        lock(&self.objects).insert(
            attachment_id.to_owned(),
            FakeObject {
                size,
                content_type: content_type.to_owned(),
                disposition: crate::attachments::disposition(content_type).to_owned(),
                used: false,
                bytes: None,
            },
        );
    }

    /// What is stored under an attachment.
    pub fn object(&self, attachment_id: &str) -> Option<FakeObject> {
        lock(&self.objects).get(attachment_id).cloned()
    }

    /// Every stored object's attachment id.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    /// From now on storing a direct upload fails (`true`), as an S3 outage
    /// would, or works again (`false`).
    pub fn set_failing_puts(&self, failing: bool) {
        self.failing_puts.store(failing, Ordering::SeqCst);
    }

    /// Runs `hook` each time a direct upload has been stored (to make what
    /// follows fail, say).
    pub fn after_put(&self, hook: impl Fn() + Send + Sync + 'static) {
        *lock(&self.after_put) = Some(Arc::new(hook));
    }

    fn url(&self, what: &str, id: &str) -> String {
        let n = self.signed.fetch_add(1, Ordering::SeqCst);
        format!("https://files.test/{what}/{id}?sig={n}")
    }
}

impl AttachmentStore for InMemoryFiles {
    async fn upload(&self, record: &AttachmentRecord) -> Result<UploadDescriptor, StoreError> {
        self.journal.record("files.upload");
        Ok(UploadDescriptor {
            url: self.url("upload", &record.id),
            method: "PUT".into(),
            headers: [("content-type".to_owned(), record.mime_type.clone())].into(),
        })
    }

    async fn put(&self, record: &AttachmentRecord, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.journal.record("files.put");
        if self.failing_puts.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the fake object store is failing".into(),
            ));
        }
        lock(&self.objects).insert(
            record.id.clone(),
            FakeObject {
                size: bytes.len() as u64,
                content_type: record.mime_type.clone(),
                disposition: crate::attachments::disposition(&record.mime_type).to_owned(),
                used: false,
                bytes: Some(bytes),
            },
        );
        let hook = lock(&self.after_put).clone();
        if let Some(hook) = hook {
            hook();
        }
        Ok(())
    }

    async fn read_url(&self, attachment_id: &str, _mime_type: &str) -> Result<String, StoreError> {
        self.journal.record("files.read_url");
        Ok(self.url("read", attachment_id))
    }

    async fn stored(&self, attachment_id: &str) -> Result<Option<StoredObject>, StoreError> {
        self.journal.record("files.stored");
        Ok(self.object(attachment_id).map(|o| StoredObject {
            size: o.size,
            content_type: Some(o.content_type),
        }))
    }

    async fn keep(&self, attachment_id: &str) -> Result<(), StoreError> {
        self.journal.record("files.keep");
        match lock(&self.objects).get_mut(attachment_id) {
            Some(object) => {
                object.used = true;
                Ok(())
            }
            None => Err(StoreError::Internal("no such object".into())),
        }
    }

    async fn delete(&self, attachment_ids: &[String]) -> Result<(), StoreError> {
        self.journal.record("files.delete");
        let mut objects = lock(&self.objects);
        for id in attachment_ids {
            objects.remove(id);
        }
        Ok(())
    }
}

/// Driving the engine's one entry point as the tests do: its own refusals
/// as [`ChatError`]s (a gate's or a transcriber's fail the test).
pub mod drive {
    use std::fmt::Debug;
    use std::time::{Duration, Instant};

    use taskpilot_domain::UserId;

    use crate::attachments::AttachmentStore;
    use crate::context::Caller;
    use crate::dictation::Transcriber;
    use crate::engine::{
        Answer, ChatError, Engine, Gate, Need, OpenGate, Outcome, ProcessError, Streaming,
    };
    use crate::model::TokenUsage;
    use crate::request::Request;
    use crate::responder::Responder;
    use crate::store::ChatStore;
    use crate::turn::Meter;

    /// `engine.process(caller, request, gate, deadline)`.
    pub async fn process<'e, S, R, A, D, G>(
        engine: &'e Engine<S, R, A, D>,
        caller: Caller,
        request: Request,
        gate: &G,
        deadline: Instant,
    ) -> Result<Outcome<'e, S, R, A, D>, ChatError>
    where
        S: ChatStore,
        R: Responder,
        A: AttachmentStore,
        D: Transcriber,
        D::Error: Debug,
        G: Gate,
        G::Error: Debug,
    {
        match engine.process(caller, request, gate, deadline).await {
            Ok(outcome) => Ok(outcome),
            Err(ProcessError::Chat(e)) => Err(e),
            Err(other) => panic!("not the engine's refusal: {other:?}"),
        }
    }

    /// The JSON answer to `request` of `user`, through an [`OpenGate`].
    pub async fn json<S, R, A, D>(
        engine: &Engine<S, R, A, D>,
        user: &UserId,
        request: Request,
    ) -> Result<Answer, ChatError>
    where
        S: ChatStore,
        R: Responder,
        A: AttachmentStore,
        D: Transcriber,
        D::Error: Debug,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        match process(
            engine,
            Caller::new(user.clone()),
            request,
            &OpenGate,
            deadline,
        )
        .await?
        {
            Outcome::Json(answer) => Ok(answer),
            Outcome::Stream(_) => panic!("a JSON request was answered with a stream"),
        }
    }

    /// The stream `request` of `caller` would run, through `gate`.
    pub async fn streaming<'e, S, R, A, D, G>(
        engine: &'e Engine<S, R, A, D>,
        caller: Caller,
        request: Request,
        gate: &G,
        deadline: Instant,
    ) -> Result<Streaming<'e, S, R, A, D>, ChatError>
    where
        S: ChatStore,
        R: Responder,
        A: AttachmentStore,
        D: Transcriber,
        D::Error: Debug,
        G: Gate,
        G::Error: Debug,
    {
        match process(engine, caller, request, gate, deadline).await? {
            Outcome::Stream(streaming) => Ok(*streaming),
            Outcome::Json(_) => panic!("a streamed request was answered whole"),
        }
    }

    /// A gate that admits every turn and counts what happens to the tickets.
    #[derive(Debug, Default)]
    pub struct CountingGate {
        /// Turns admitted.
        pub admitted: std::sync::atomic::AtomicU32,
        /// Turns given back.
        pub given_back: std::sync::atomic::AtomicU32,
        /// Dictations charged.
        pub charged: std::sync::atomic::AtomicU32,
    }

    impl CountingGate {
        /// (admitted, given back, charged) so far.
        pub fn counts(&self) -> (u32, u32, u32) {
            use std::sync::atomic::Ordering::SeqCst;
            (
                self.admitted.load(SeqCst),
                self.given_back.load(SeqCst),
                self.charged.load(SeqCst),
            )
        }
    }

    impl Gate for CountingGate {
        type Ticket = ();
        type Error = std::convert::Infallible;

        async fn admit(&self, need: Need) -> Result<Option<()>, Self::Error> {
            if need.turn {
                self.admitted
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(need.turn.then_some(()))
        }

        fn meter(&self, _ticket: &()) -> Meter {
            Meter {
                day: taskpilot_domain::budget::UsageDay::of(chrono::Utc::now()),
                used: 0,
                budget: taskpilot_domain::budget::ChatBudget::default(),
            }
        }

        async fn give_back(&self, _ticket: ()) {
            self.given_back
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }

        async fn charge(&self, _ticket: (), _tokens: TokenUsage) {
            self.charged
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A gate that admits every turn on one meter, and counts nothing.
    #[derive(Debug, Clone, Copy)]
    pub struct MeteredGate(pub Meter);

    impl Gate for MeteredGate {
        type Ticket = Meter;
        type Error = std::convert::Infallible;

        async fn admit(&self, need: Need) -> Result<Option<Meter>, Self::Error> {
            Ok(need.turn.then_some(self.0))
        }

        fn meter(&self, ticket: &Meter) -> Meter {
            *ticket
        }

        async fn give_back(&self, _ticket: Meter) {}

        async fn charge(&self, _ticket: Meter, _tokens: TokenUsage) {}
    }
}

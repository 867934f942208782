//! One streamed run in progress, and the persistence rules every event goes
//! through (ck-py's `_process_events`): `done` items are saved, `replaced`
//! items upserted, `removed` items deleted; hidden items are saved but never
//! sent; items that were `added` but not finished are tracked with their
//! streamed text so a disconnect keeps the partial answer; a change to the
//! thread is saved and announced with `thread.updated`.

use std::time::Instant;

use taskpilot_domain::budget::{ChatBudget, TokenUsage, UsageDay};
use taskpilot_domain::{StoreError, UserId};

use crate::context::Caller;

use crate::ids;
use crate::sink::{Disconnected, EventSink};
use crate::store::{ChatStore, Write};
use crate::types::{
    AssistantContent, ItemKind, ItemUpdate, Page, StreamError, StreamEvent, Thread, ThreadItem,
    ThreadMetadata,
};

/// Note stored when the user stops a stream.
pub const CANCELLED_NOTE: &str =
    "The user cancelled the stream. Stop responding to the prior request.";

/// The daily token budget an admitted turn runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    /// The day the turn is charged to.
    pub day: UsageDay,
    /// The user's tokens that day, as last known.
    pub used: u64,
    /// The limits.
    pub budget: ChatBudget,
}

/// What a run cost: the model's tokens and rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Tokens over every round.
    pub tokens: TokenUsage,
    /// Model rounds that started.
    pub rounds: u32,
}

/// Attachment id → the URL the model reads it by.
pub type FileUrls = std::collections::BTreeMap<String, String>;

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    /// The client went away.
    #[error("the client disconnected")]
    Disconnected,
    /// Storage failed mid-stream.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The thread was deleted while the run was going on: nothing more of
    /// it is written.
    #[error("the thread was deleted")]
    ThreadGone,
}

impl From<Disconnected> for Interrupted {
    fn from(_: Disconnected) -> Self {
        Self::Disconnected
    }
}

/// The run's state: who, which thread, its recent history, where events go.
pub struct Turn<'a, S, K> {
    store: &'a S,
    sink: &'a mut K,
    caller: &'a Caller,
    thread: ThreadMetadata,
    saved_thread: ThreadMetadata,
    history: Vec<ThreadItem>,
    pending: Vec<ThreadItem>,
    /// Items whose write failed: it may still land late.
    unsure: Vec<String>,
    /// An `error` event was sent: the run has failed in the client's eyes.
    failed: bool,
    files: FileUrls,
    deadline: Instant,
    meter: Option<Meter>,
    spent: Spent,
    /// The day counts this turn already (its first charge landed).
    turn_counted: bool,
}

impl<'a, S: ChatStore, K: EventSink> Turn<'a, S, K> {
    /// A run on `thread` whose saved state is `thread` itself.
    pub fn new(
        store: &'a S,
        sink: &'a mut K,
        caller: &'a Caller,
        thread: ThreadMetadata,
        history: Vec<ThreadItem>,
        deadline: Instant,
    ) -> Self {
        Self {
            store,
            sink,
            caller,
            saved_thread: thread.clone(),
            thread,
            history,
            pending: Vec::new(),
            unsure: Vec::new(),
            failed: false,
            files: FileUrls::new(),
            deadline,
            meter: None,
            spent: Spent::default(),
            turn_counted: false,
        }
    }

    /// The same run, charged to the user's daily budget.
    pub fn with_meter(self, meter: Option<Meter>) -> Self {
        Self { meter, ..self }
    }

    /// What the run has cost so far.
    pub fn spent(&self) -> Spent {
        self.spent
    }

    /// Charges one model round's tokens to the run and, when metered, to the
    /// user's day. A failed charge is logged and counted locally: the user's
    /// answer does not depend on the bookkeeping.
    pub async fn charge(&mut self, tokens: TokenUsage) {
        let first_round = !self.turn_counted;
        self.spent.tokens = self.spent.tokens.plus(tokens);
        self.spent.rounds += 1;
        let Some(day) = self.meter.map(|m| m.day) else {
            return;
        };
        let charged = self
            .in_time(
                self.store
                    .add_usage(&self.caller.user, day, tokens, first_round),
            )
            .await;
        if let Some(meter) = &mut self.meter {
            match charged {
                Ok(usage) => {
                    meter.used = usage.tokens.total();
                    self.turn_counted = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, tokens = tokens.total(), "could not charge a model round");
                    meter.used = meter.used.saturating_add(tokens.total());
                }
            }
        }
    }

    /// Whether the user's daily tokens are used up: no further model round
    /// may start.
    pub fn over_budget(&self) -> bool {
        self.meter
            .is_some_and(|m| m.used >= m.budget.tokens_per_day)
    }

    /// Ends a run whose daily budget ran out between rounds: what was said
    /// stays, and the error says why (not retryable before the day ends).
    pub async fn budget_spent(&mut self) -> Result<(), Interrupted> {
        let limit = self.meter.map_or(0, |m| m.budget.tokens_per_day);
        tracing::info!(limit, "the daily token budget ran out during the turn");
        self.settle_pending().await?;
        self.error(StreamError::Custom {
            message: format!(
                "You have reached today's assistant budget ({limit} tokens). It resets at 00:00 UTC."
            ),
            allow_retry: false,
        })
        .await
    }

    /// At the end of a run that did not fail: a notice when the user's
    /// daily tokens are past the warning share (or used up).
    pub(crate) async fn budget_notice(&mut self) -> Result<(), Interrupted> {
        let Some(meter) = self.meter else {
            return Ok(());
        };
        if self.failed || self.spent.rounds == 0 || meter.used < meter.budget.warn_at() {
            return Ok(());
        }
        let limit = meter.budget.tokens_per_day.max(1);
        let (level, message) = if meter.used >= limit {
            (
                "danger",
                "You have used all of today's assistant budget. It resets at 00:00 UTC.".to_owned(),
            )
        } else {
            let percent = meter.used.saturating_mul(100) / limit;
            (
                "warning",
                format!(
                    "You have used {percent}% of today's assistant budget. It resets at 00:00 UTC."
                ),
            )
        };
        self.send(StreamEvent::Notice {
            level: level.into(),
            message,
            title: Some("Assistant budget".into()),
        })
        .await
    }

    /// The same run, its files readable by the model at `files`.
    pub fn with_files(self, files: FileUrls) -> Self {
        Self { files, ..self }
    }

    /// Where the model reads the history's (and the new message's) files.
    pub fn files(&self) -> &FileUrls {
        &self.files
    }

    /// The caller's user.
    pub fn user(&self) -> &UserId {
        &self.caller.user
    }

    /// The caller: user, time zone, locale, and when the request arrived.
    pub fn caller(&self) -> &Caller {
        self.caller
    }

    /// The thread (changes are saved and announced after the next event).
    pub fn thread(&self) -> &ThreadMetadata {
        &self.thread
    }

    /// The thread, to change its title or status.
    pub fn thread_mut(&mut self) -> &mut ThreadMetadata {
        &mut self.thread
    }

    /// The thread's latest items, hidden ones included, oldest first; items
    /// finished during this run are appended.
    pub fn history(&self) -> &[ThreadItem] {
        &self.history
    }

    /// When the run must end.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether an `error` event was sent.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Storage work of this run, given up at its deadline, so the run can
    /// still end its stream before Lambda cuts it (a write given up on may
    /// still land: [`Turn::save`] treats it as unsure).
    pub(crate) fn in_time<T, F>(&self, work: F) -> impl Future<Output = F::Output> + use<S, K, T, F>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let deadline = self.deadline;
        async move {
            tokio::time::timeout_at(deadline.into(), work)
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("the run's time ran out".into())))
        }
    }

    /// A new item of this thread, created now.
    pub fn item(&self, id: String, kind: ItemKind) -> ThreadItem {
        ThreadItem::new(id, self.thread.id.clone(), kind)
    }

    /// Shows an item the engine has already saved (the user's new message):
    /// it joins the history and is sent as done.
    pub(crate) async fn show_saved(&mut self, item: ThreadItem) -> Result<(), Interrupted> {
        self.history.push(item.clone());
        self.send(StreamEvent::ItemDone { item }).await
    }

    /// Sends an event without the persistence rules (stream options, the
    /// initial `thread.created`).
    pub(crate) async fn send(&mut self, event: StreamEvent) -> Result<(), Interrupted> {
        Ok(self.sink.send(event).await?)
    }

    /// Applies the persistence rules to `event`, sends it unless it finishes
    /// a hidden item, then saves and announces a changed thread.
    pub async fn emit(&mut self, event: StreamEvent) -> Result<(), Interrupted> {
        match &event {
            StreamEvent::ItemAdded { item } => self.pending.push(item.clone()),
            StreamEvent::ItemUpdated { item_id, update } => self.apply(item_id, update),
            StreamEvent::ItemDone { item } => {
                self.save(item).await?;
                self.pending.retain(|p| p.id != item.id);
                self.history.push(item.clone());
            }
            StreamEvent::ItemReplaced { item } => {
                self.save(item).await?;
                self.pending.retain(|p| p.id != item.id);
                if let Some(old) = self.history.iter_mut().find(|h| h.id == item.id) {
                    *old = item.clone();
                }
            }
            StreamEvent::ItemRemoved { item_id } => {
                self.in_time(
                    self.store
                        .delete_item(&self.caller.user, &self.thread.id, item_id),
                )
                .await?;
                self.pending.retain(|p| &p.id != item_id);
                self.history.retain(|h| &h.id != item_id);
            }
            _ => {}
        }
        let hidden = matches!(&event, StreamEvent::ItemDone { item } if item.is_hidden());
        if !hidden {
            self.send(event).await?;
        }
        self.save_thread_if_changed().await
    }

    /// Saves an item while the thread exists.
    async fn save(&mut self, item: &ThreadItem) -> Result<(), Interrupted> {
        match self
            .in_time(self.store.save_item(&self.caller.user, item))
            .await
        {
            Ok(Write::Done) => Ok(()),
            Ok(Write::Refused) => Err(Interrupted::ThreadGone),
            // Only a user message claims attachments, and the engine saves
            // it before the stream starts.
            Ok(Write::AttachmentTaken) => Err(Interrupted::Store(StoreError::Internal(
                "an attachment was taken meanwhile".into(),
            ))),
            Err(e) => {
                self.unsure.push(item.id.clone());
                Err(e.into())
            }
        }
    }

    /// After the client was told the run failed: items whose write failed
    /// (and may land late, once storage is back) are fenced off, retrying for
    /// up to 15 s (never past the deadline), so what is stored agrees with
    /// what was said. The stream stays open meanwhile.
    pub(crate) async fn fence_unsure(&mut self) {
        const PAUSE: std::time::Duration = std::time::Duration::from_millis(500);
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);
        let give_up = self.deadline.min(Instant::now() + PATIENCE);
        for item_id in std::mem::take(&mut self.unsure) {
            loop {
                let fenced = self
                    .in_time(
                        self.store
                            .fence_item(&self.caller.user, &self.thread.id, &item_id),
                    )
                    .await;
                match fenced {
                    Ok(()) => break,
                    // Another try only while a pause still leaves time for it.
                    Err(e) if give_up.saturating_duration_since(Instant::now()) > PAUSE => {
                        tracing::warn!(error = %e, %item_id, "could not fence a failed write yet; retrying");
                        tokio::time::sleep(PAUSE).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, %item_id, "a failed write could not be fenced in time");
                        break;
                    }
                }
            }
        }
    }

    /// Saves and announces the thread when it changed since it was last
    /// saved. A title is only given to a thread that still has none: when the
    /// user renamed it meanwhile (or deleted it), the rename stands and
    /// nothing is announced.
    pub(crate) async fn save_thread_if_changed(&mut self) -> Result<(), Interrupted> {
        if self.thread == self.saved_thread {
            return Ok(());
        }
        let untitled_only = self.saved_thread.title.is_none();
        let saved = self
            .in_time(
                self.store
                    .update_thread(&self.caller.user, &self.thread, untitled_only),
            )
            .await?;
        if saved != Write::Done {
            tracing::info!("the thread was renamed or deleted meanwhile; its title stands");
            self.thread = self.saved_thread.clone();
            return Ok(());
        }
        self.saved_thread = self.thread.clone();
        self.send(StreamEvent::ThreadUpdated {
            thread: Thread::view(&self.thread, Page::empty()),
        })
        .await
    }

    /// The streamed (added, not yet finished) item `id`, as streamed so far.
    pub fn pending(&self, id: &str) -> Option<&ThreadItem> {
        self.pending.iter().find(|p| p.id == id)
    }

    /// Finishes the streamed item `id` with what was streamed.
    pub async fn finish(&mut self, id: &str) -> Result<(), Interrupted> {
        match self.pending(id).cloned() {
            Some(item) => self.emit(StreamEvent::ItemDone { item }).await,
            None => Ok(()),
        }
    }

    /// Ends every streamed item: those with content are finished, empty ones
    /// removed (a failed model round keeps what was said).
    pub async fn settle_pending(&mut self) -> Result<(), Interrupted> {
        for item in std::mem::take(&mut self.pending) {
            if has_content(&item) {
                self.emit(StreamEvent::ItemDone { item }).await?;
            } else {
                // Never saved, so only the client needs to hear of it.
                self.send(StreamEvent::ItemRemoved { item_id: item.id })
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends a user-visible error.
    pub async fn error(&mut self, error: StreamError) -> Result<(), Interrupted> {
        self.failed = true;
        self.send(error.into()).await
    }

    /// After a disconnect (ck-py's `handle_stream_cancelled`): keep the
    /// partial answers and note the cancellation for the model.
    pub(crate) async fn cancelled(&mut self) {
        for item in std::mem::take(&mut self.pending) {
            if has_content(&item)
                && let Err(e) = self
                    .in_time(self.store.save_item(&self.caller.user, &item))
                    .await
            {
                tracing::error!(error = %e, "could not keep the partial answer");
            }
        }
        let note = self.item(
            ids::hidden(),
            ItemKind::SdkHiddenContext {
                content: CANCELLED_NOTE.into(),
            },
        );
        if let Err(e) = self
            .in_time(self.store.save_item(&self.caller.user, &note))
            .await
        {
            tracing::error!(error = %e, "could not note the cancellation");
        }
        if self.thread != self.saved_thread
            && let Err(e) = self
                .in_time(self.store.update_thread(
                    &self.caller.user,
                    &self.thread,
                    self.saved_thread.title.is_none(),
                ))
                .await
        {
            tracing::error!(error = %e, "could not save the thread");
        }
        tracing::info!("the client disconnected; the stream was stopped");
    }

    fn apply(&mut self, id: &str, update: &ItemUpdate) {
        let Some(ThreadItem {
            kind: ItemKind::AssistantMessage { content },
            ..
        }) = self.pending.iter_mut().find(|p| p.id == id)
        else {
            return;
        };
        let index = match update {
            ItemUpdate::ContentPartAdded { content_index, .. }
            | ItemUpdate::TextDelta { content_index, .. }
            | ItemUpdate::AnnotationAdded { content_index, .. }
            | ItemUpdate::ContentPartDone { content_index, .. } => *content_index,
            ItemUpdate::WidgetRootUpdated { .. } => return,
        };
        // Pad so the index exists (updates may arrive for a part not yet added).
        while content.len() <= index {
            content.push(AssistantContent::OutputText {
                text: String::new(),
                annotations: Vec::new(),
            });
        }
        match update {
            ItemUpdate::ContentPartAdded { content: part, .. }
            | ItemUpdate::ContentPartDone { content: part, .. } => content[index] = part.clone(),
            ItemUpdate::TextDelta { delta, .. } => {
                let AssistantContent::OutputText { text, .. } = &mut content[index];
                text.push_str(delta);
            }
            ItemUpdate::AnnotationAdded { annotation, .. } => {
                let AssistantContent::OutputText { annotations, .. } = &mut content[index];
                annotations.push(annotation.clone());
            }
            ItemUpdate::WidgetRootUpdated { .. } => {}
        }
    }
}

/// Whether a streamed item has anything worth keeping.
fn has_content(item: &ThreadItem) -> bool {
    match &item.kind {
        ItemKind::AssistantMessage { content } => content
            .iter()
            .any(|AssistantContent::OutputText { text, .. }| !text.is_empty()),
        _ => true,
    }
}

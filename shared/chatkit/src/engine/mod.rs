//! The ChatKit engine (ck-py's `ChatKitServer.process`): the JSON operations,
//! the checks a streamed request passes before its first event, and the order
//! of a stream's events around what the [`Responder`] produces. Persistence
//! rules live in [`crate::turn`]; the application lives behind the responder.

use std::time::Instant;

use taskpilot_domain::{StoreError, UserId};

use crate::attachments::{AttachmentError, AttachmentPolicy, AttachmentStore, NoAttachments};
use crate::context::Caller;
use crate::dictation::{NoDictation, Transcriber};
use crate::ids;
use crate::request::{
    Action, ActionParams, DEFAULT_LIMIT, Order, Paging, Request, UserMessageInput,
};
use crate::responder::{ActionRefused, InvalidOptions, Responder};
use crate::sink::EventSink;
use crate::store::{ChatStore, MessageThread, RecentThread, Write};
use crate::structured::{self, InputStatus, Submission};
use crate::turn::{FileUrls, Interrupted, Meter, Spent, Turn};
use crate::types::{
    Attachment, ItemKind, Page, StreamError, StreamEvent, StreamOptions, Thread, ThreadItem,
    ThreadMetadata, ThreadStatus, ToolCallStatus,
};

mod answers;
mod files;
mod process;

pub use answers::Answer;
pub use process::{Gate, Need, OpenGate, Outcome, ProcessError, Streaming};

/// How many of a thread's latest items a turn loads: the most the model is
/// shown (a responder may show fewer, to keep its prompt prefix stable).
pub const HISTORY: usize = 60;

/// Errors answered as HTTP errors, before any event is streamed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// No such thread or item for this user.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// `threads.retry_after_item` named an item that is not a user message.
    #[error("item {0} is not a user message")]
    NotAUserMessage(String),
    /// `threads.add_client_tool_output` without a pending client tool call.
    #[error("this thread has no pending client tool call")]
    NoPendingToolCall,
    /// `threads.add_structured_input` named an item that is not a question.
    #[error("item {0} is not a structured input item")]
    NotAQuestion(String),
    /// `threads.add_structured_input` named a question already answered.
    #[error("structured input item {0} is not pending (it was already answered or skipped)")]
    NotPending(String),
    /// `threads.sync_custom_action` named an item that is not a widget.
    #[error("item {0} is not a widget")]
    NotAWidget(String),
    /// A JSON request given to `prepare` or a streamed one to `json` (a bug
    /// in the caller).
    #[error("a {0} request was sent down the other path")]
    Misrouted(&'static str),
    /// The responder refused a synchronous action.
    #[error(transparent)]
    Refused(#[from] ActionRefused),
    /// The responder does not offer a model or tool the message chose.
    #[error(transparent)]
    Options(#[from] InvalidOptions),
    /// An attachment was refused.
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    /// Attachments are not offered by this deployment.
    #[error("attachments are not enabled on this server")]
    AttachmentsDisabled,
    /// Dictation is not offered by this deployment.
    #[error("dictation is not enabled on this server")]
    DictationDisabled,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A streamed request, checked and ready to run.
#[derive(Debug)]
pub struct Prepared {
    thread: ThreadMetadata,
    history: Vec<ThreadItem>,
    kind: Kind,
    files: FileUrls,
    meter: Option<Meter>,
}

impl Prepared {
    /// Whether running it asks the model (a turn the budget counts).
    pub fn reaches_model(&self) -> bool {
        matches!(
            self.kind,
            Kind::Say { .. } | Kind::Retry { .. } | Kind::ToolOutput { .. } | Kind::Answered(_)
        )
    }

    /// The same request, its model rounds charged to `meter`'s day.
    pub fn metered(self, meter: Meter) -> Self {
        Self {
            meter: Some(meter),
            ..self
        }
    }
}

#[derive(Debug)]
enum Kind {
    /// A new user message, saved by [`Engine::commit`] before the stream
    /// starts (with its thread when that is new).
    Say {
        thread: MessageThread,
        message: ThreadItem,
    },
    Retry {
        target: ThreadItem,
        later: Vec<String>,
    },
    ToolOutput {
        call: ThreadItem,
        stale: Vec<String>,
    },
    Action {
        action: Action,
        sender: Option<ThreadItem>,
    },
    /// A structured-input item, as answered.
    Answered(ThreadItem),
    /// A stream of this one error (ck-py answers some misuse so).
    Refuse(StreamError),
    /// An empty stream.
    Nothing,
}

/// The engine: a thread store, a responder, an attachment store and a
/// transcriber, built once per process.
pub struct Engine<S, R, A = NoAttachments, D = NoDictation> {
    store: S,
    responder: R,
    files: A,
    policy: AttachmentPolicy,
    dictation: D,
}

impl<S: ChatStore, R: Responder> Engine<S, R> {
    /// Wires the store and the responder (no attachments, no dictation).
    pub fn new(store: S, responder: R) -> Self {
        Self {
            store,
            responder,
            files: NoAttachments,
            policy: AttachmentPolicy::default(),
            dictation: NoDictation,
        }
    }
}

impl<S: ChatStore, R: Responder, A: AttachmentStore, D> Engine<S, R, A, D> {
    /// The same engine, offering attachments kept in `files` under `policy`.
    pub fn with_attachments<B: AttachmentStore>(
        self,
        files: B,
        policy: AttachmentPolicy,
    ) -> Engine<S, R, B, D> {
        Engine {
            store: self.store,
            responder: self.responder,
            files,
            policy,
            dictation: self.dictation,
        }
    }

    /// The same engine, offering dictation through `dictation`.
    pub fn with_dictation<T: Transcriber>(self, dictation: T) -> Engine<S, R, A, T> {
        Engine {
            store: self.store,
            responder: self.responder,
            files: self.files,
            policy: self.policy,
            dictation,
        }
    }

    /// The attachment store.
    pub fn files(&self) -> &A {
        &self.files
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The responder.
    pub fn responder(&self) -> &R {
        &self.responder
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

    async fn item(
        &self,
        user: &UserId,
        thread_id: &str,
        id: &str,
    ) -> Result<ThreadItem, ChatError> {
        let found = if ids::plausible(id) {
            self.store.load_item(user, thread_id, id).await?
        } else {
            None
        };
        found.ok_or(ChatError::NotFound("item"))
    }

    /// The thread of an action and the item that sent it, if named.
    async fn action_target(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: Option<String>,
    ) -> Result<(ThreadMetadata, Option<ThreadItem>), ChatError> {
        let thread = self.thread(user, thread_id).await?;
        let sender = match item_id {
            Some(id) => Some(self.item(user, &thread.id, &id).await?),
            None => None,
        };
        Ok((thread, sender))
    }

    /// The thread and its history; `with_mark` when a new message follows.
    async fn recent(
        &self,
        user: &UserId,
        thread_id: &str,
        with_mark: bool,
    ) -> Result<RecentThread, ChatError> {
        if !ids::plausible(thread_id) {
            return Err(ChatError::NotFound("thread"));
        }
        self.store
            .load_recent(user, thread_id, HISTORY, with_mark)
            .await?
            .ok_or(ChatError::NotFound("thread"))
    }

    async fn visible_page(
        &self,
        user: &UserId,
        thread_id: &str,
        paging: &Paging,
    ) -> Result<Page<ThreadItem>, ChatError> {
        // Hidden items are dropped after paging, as ck-py does: a page may be short.
        let mut page = self.store.list_items(user, thread_id, paging).await?;
        page.data.retain(|i| !i.is_hidden());
        Ok(page)
    }

    /// Checks a streamed request before any event: 404 and 400 here are HTTP
    /// errors.
    pub(crate) async fn prepare(
        &self,
        user: &UserId,
        request: Request,
    ) -> Result<Prepared, ChatError> {
        let mut prepared = self.checked(user, request).await?;
        self.present(&mut prepared.history).await?;
        let new = match &prepared.kind {
            Kind::Say { message, .. } => Some(message),
            _ => None,
        };
        let shown = files::shown_files(prepared.history.iter().chain(new));
        let files = self.model_files(shown).await?;
        prepared.files = files;
        Ok(prepared)
    }

    async fn checked(&self, user: &UserId, request: Request) -> Result<Prepared, ChatError> {
        if let Request::CreateThread { input } | Request::AddUserMessage { input, .. } = &request
            && let Some(options) = &input.inference_options
        {
            self.responder.check_options(options)?;
        }
        let (thread, history, kind) = match request {
            Request::CreateThread { input } => {
                let thread = ThreadMetadata {
                    id: ids::thread(),
                    title: None,
                    created_at: taskpilot_domain::timestamp::now(),
                    status: ThreadStatus::Active,
                    metadata: Default::default(),
                };
                let files = self.attachments_for(user, &thread.id, &input).await?;
                let message = user_message(&thread, input, files);
                (
                    thread,
                    Vec::new(),
                    Kind::Say {
                        thread: MessageThread::New,
                        message,
                    },
                )
            }
            Request::AddUserMessage { thread_id, input } => {
                let RecentThread {
                    thread,
                    items: history,
                    mark,
                } = self.recent(user, &thread_id, true).await?;
                let files = self.attachments_for(user, &thread.id, &input).await?;
                let message = user_message(&thread, input, files);
                (
                    thread,
                    history,
                    Kind::Say {
                        thread: MessageThread::Stored { mark },
                        message,
                    },
                )
            }
            Request::RetryAfterItem { thread_id, item_id } => {
                let RecentThread {
                    thread,
                    items: history,
                    ..
                } = self.recent(user, &thread_id, false).await?;
                return self.prepare_retry(user, thread, history, &item_id).await;
            }
            Request::AddClientToolOutput { thread_id, result } => {
                let RecentThread {
                    thread,
                    items: history,
                    ..
                } = self.recent(user, &thread_id, false).await?;
                // ck-py: the last item must be a pending client tool call.
                let mut call = match history.last() {
                    Some(item) if is_pending_call(item) => item.clone(),
                    _ => return Err(ChatError::NoPendingToolCall),
                };
                if let ItemKind::ClientToolCall { status, output, .. } = &mut call.kind {
                    *status = ToolCallStatus::Completed;
                    *output = Some(result);
                }
                let stale: Vec<String> = history
                    .iter()
                    .filter(|i| i.id != call.id)
                    .filter(|i| is_pending_call(i))
                    .map(|i| i.id.clone())
                    .collect();
                // The responder sees the call answered and the stale ones gone.
                let mut history = history;
                history.retain(|i| !stale.contains(&i.id));
                if let Some(last) = history.last_mut() {
                    *last = call.clone();
                }
                (thread, history, Kind::ToolOutput { call, stale })
            }
            Request::AddStructuredInput {
                thread_id,
                item_id,
                input,
            } => {
                let RecentThread {
                    thread,
                    items: history,
                    ..
                } = self.recent(user, &thread_id, false).await?;
                return self
                    .prepare_answer(user, thread, history, &item_id, &input)
                    .await;
            }
            Request::CustomAction(ActionParams {
                thread_id,
                item_id,
                action,
            }) => {
                let (thread, sender) = self.action_target(user, &thread_id, item_id).await?;
                let kind = match sender {
                    // ck-py: one error event, not retryable.
                    Some(item) if !matches!(item.kind, ItemKind::Widget { .. }) => {
                        Kind::Refuse(StreamError::Stream {
                            message: None,
                            allow_retry: false,
                        })
                    }
                    sender => Kind::Action { action, sender },
                };
                (thread, Vec::new(), kind)
            }
            other => {
                tracing::error!(request = ?other, "a JSON request reached prepare()");
                return Err(ChatError::Misrouted("JSON"));
            }
        };
        Ok(Prepared {
            thread,
            history,
            kind,
            files: FileUrls::new(),
            meter: None,
        })
    }

    /// `threads.add_structured_input` (ck-py 1.6.4): the item must be a
    /// pending structured input; the answers are applied as the SDK applies
    /// them, and the history holds the item as answered (with the item just
    /// before it, where the agent keeps its pending change, when the
    /// question is older than the loaded window).
    async fn prepare_answer(
        &self,
        user: &UserId,
        thread: ThreadMetadata,
        mut history: Vec<ThreadItem>,
        item_id: &str,
        submission: &Submission,
    ) -> Result<Prepared, ChatError> {
        let loaded = history.iter().position(|i| i.id == item_id);
        let mut item = match loaded {
            Some(at) => history[at].clone(),
            None => self.item(user, &thread.id, item_id).await?,
        };
        let ItemKind::StructuredInput { status, inputs } = &mut item.kind else {
            return Err(ChatError::NotAQuestion(item.id));
        };
        if *status != InputStatus::Pending {
            return Err(ChatError::NotPending(item.id));
        }
        *status = structured::apply(inputs, submission);
        match loaded {
            Some(at) => history[at] = item.clone(),
            None => {
                let before = Paging {
                    limit: 1,
                    order: Order::Desc,
                    after: Some(item.id.clone()),
                };
                let page = self.store.list_items(user, &thread.id, &before).await?;
                history.extend(page.data.into_iter().filter(ThreadItem::is_hidden));
                history.push(item.clone());
            }
        }
        Ok(Prepared {
            thread,
            history,
            kind: Kind::Answered(item),
            files: FileUrls::new(),
            meter: None,
        })
    }

    /// `threads.retry_after_item`: the items after the user message go, the
    /// history ends with it. An unknown item is an empty stream (as ck-py).
    async fn prepare_retry(
        &self,
        user: &UserId,
        thread: ThreadMetadata,
        mut history: Vec<ThreadItem>,
        item_id: &str,
    ) -> Result<Prepared, ChatError> {
        let found = history.iter().position(|i| i.id == item_id);
        let (target, later) = match found {
            Some(at) => {
                let later = history
                    .split_off(at + 1)
                    .into_iter()
                    .map(|i| i.id)
                    .collect();
                (history.last().cloned(), later)
            }
            // Older than the loaded window (or absent): walk back from the end.
            None => {
                let mut later: Vec<String> = history.drain(..).map(|i| i.id).collect();
                let mut after = later.first().cloned();
                let mut target = None;
                'pages: loop {
                    let paging = Paging {
                        limit: DEFAULT_LIMIT,
                        order: Order::Desc,
                        after: after.clone(),
                    };
                    let page = self.store.list_items(user, &thread.id, &paging).await?;
                    for item in page.data {
                        if item.id == item_id {
                            target = Some(item);
                            break 'pages;
                        }
                        later.push(item.id);
                    }
                    if !page.has_more {
                        break;
                    }
                    after = page.after;
                }
                if let Some(t) = &target {
                    let paging = Paging {
                        limit: HISTORY - 1,
                        order: Order::Desc,
                        after: Some(t.id.clone()),
                    };
                    history = self.store.list_items(user, &thread.id, &paging).await?.data;
                    history.reverse();
                    history.push(t.clone());
                }
                (target, later)
            }
        };
        let kind = match target {
            None => Kind::Nothing,
            Some(t) if !matches!(t.kind, ItemKind::UserMessage { .. }) => {
                return Err(ChatError::NotAUserMessage(t.id));
            }
            Some(target) => Kind::Retry { target, later },
        };
        Ok(Prepared {
            thread,
            history,
            kind,
            files: FileUrls::new(),
            meter: None,
        })
    }

    /// Runs a prepared request, streaming its events, and says what the
    /// model cost. Failures from here on are `error` events; a disconnect
    /// keeps what was said. A metered run ends with a notice once the user's
    /// daily tokens pass the warning share.
    pub(crate) async fn run<K: EventSink>(
        &self,
        caller: &Caller,
        prepared: Prepared,
        sink: &mut K,
        deadline: Instant,
    ) -> Spent {
        let Prepared {
            thread,
            history,
            kind,
            files,
            meter,
        } = prepared;
        let mut turn = Turn::new(&self.store, sink, caller, thread, history, deadline)
            .with_files(files)
            .with_meter(meter);
        let driven = match self.drive(&mut turn, kind).await {
            Ok(()) => turn.budget_notice().await,
            Err(e) => Err(e),
        };
        match driven {
            Ok(()) => {}
            Err(Interrupted::Disconnected) => turn.cancelled().await,
            Err(Interrupted::Store(e)) => {
                tracing::error!(error = %e, "storage failed mid-stream");
                // One error per stream: a run that already failed (out of
                // time, say) has told the client so.
                if !turn.failed() {
                    let _ = turn
                        .error(StreamError::Stream {
                            message: None,
                            allow_retry: true,
                        })
                        .await;
                }
                turn.fence_unsure().await;
            }
            // The user deleted the thread: the stream just ends.
            Err(Interrupted::ThreadGone) => {
                tracing::info!("the thread was deleted during the stream; it ends here");
            }
        }
        turn.spent()
    }

    async fn drive<K: EventSink>(
        &self,
        turn: &mut Turn<'_, S, K>,
        kind: Kind,
    ) -> Result<(), Interrupted> {
        let options = StreamEvent::StreamOptions {
            stream_options: StreamOptions { allow_cancel: true },
        };
        match kind {
            Kind::Say { thread, message } => {
                if thread == MessageThread::New {
                    turn.send(StreamEvent::ThreadCreated {
                        thread: Thread::view(turn.thread(), Page::empty()),
                    })
                    .await?;
                }
                turn.show_saved(message.clone()).await?;
                turn.send(options).await?;
                self.responder.respond(turn, Some(&message)).await?;
            }
            Kind::Retry { target, later } => {
                if !later.is_empty() {
                    turn.in_time(
                        self.store
                            .delete_items(turn.user(), &turn.thread().id, &later),
                    )
                    .await?;
                }
                turn.send(options).await?;
                self.responder.respond(turn, Some(&target)).await?;
            }
            Kind::ToolOutput { call, stale } => {
                if turn
                    .in_time(self.store.save_item(turn.user(), &call))
                    .await?
                    != Write::Done
                {
                    return Err(Interrupted::ThreadGone);
                }
                if !stale.is_empty() {
                    tracing::warn!(items = ?stale, "client tool calls were not completed; dropped");
                    turn.in_time(
                        self.store
                            .delete_items(turn.user(), &turn.thread().id, &stale),
                    )
                    .await?;
                }
                turn.send(options).await?;
                self.responder.respond(turn, None).await?;
            }
            Kind::Action { action, sender } => {
                turn.send(options).await?;
                self.responder
                    .action(turn, &action, sender.as_ref())
                    .await?;
            }
            Kind::Answered(item) => {
                turn.send(options).await?;
                turn.emit(StreamEvent::ItemReplaced { item: item.clone() })
                    .await?;
                self.responder.respond(turn, Some(&item)).await?;
            }
            Kind::Refuse(error) => turn.send(error.into()).await?,
            Kind::Nothing => {}
        }
        turn.save_thread_if_changed().await
    }

    /// Writes what a streamed request adds before its stream starts: a new
    /// user message (with its new thread), its files kept. A thread deleted
    /// meanwhile is a 404 and an attachment taken meanwhile a 409, with
    /// nothing left half-written.
    pub(crate) async fn commit(&self, user: &UserId, prepared: &Prepared) -> Result<(), ChatError> {
        let Kind::Say { thread, message } = &prepared.kind else {
            return Ok(());
        };
        // Used files are kept by the clean-up of unused uploads; first, so a
        // failure here leaves no thread behind.
        for id in message.attachment_ids() {
            self.files.keep(id).await?;
        }
        let saved = self
            .store
            .save_message(user, &prepared.thread, message, *thread)
            .await;
        let refused = match saved {
            Ok(Write::Done) => return Ok(()),
            Ok(Write::Refused) => ChatError::NotFound("thread"),
            Ok(Write::AttachmentTaken) => AttachmentError::Taken.into(),
            Err(e) => {
                // The write may still land: the message is fenced off so the
                // client, told it failed, never finds it.
                if let Err(fence) = self
                    .store
                    .fence_item(user, &message.thread_id, &message.id)
                    .await
                {
                    tracing::error!(error = %fence, "could not fence a failed message");
                }
                e.into()
            }
        };
        if *thread == MessageThread::New
            && let Err(e) = self.store.delete_thread(user, &prepared.thread.id).await
        {
            tracing::error!(error = %e, "could not remove a thread whose first message was refused");
        }
        Err(refused)
    }
}

/// A user's new message in `thread`, showing `files`.
fn user_message(
    thread: &ThreadMetadata,
    input: UserMessageInput,
    files: Vec<Attachment>,
) -> ThreadItem {
    ThreadItem::new(
        ids::message(),
        thread.id.clone(),
        ItemKind::UserMessage {
            content: input.content,
            attachments: files,
            quoted_text: input.quoted_text,
            inference_options: input.inference_options.unwrap_or_default(),
        },
    )
}

fn is_pending_call(item: &ThreadItem) -> bool {
    matches!(
        item.kind,
        ItemKind::ClientToolCall {
            status: ToolCallStatus::Pending,
            ..
        }
    )
}

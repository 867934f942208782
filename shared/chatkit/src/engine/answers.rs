//! The JSON operations (ck-py's `_process_non_streaming`): reading, listing,
//! renaming and deleting threads, paging items, feedback and synchronous
//! widget actions.

use serde::Serialize;

use taskpilot_domain::UserId;

use super::{ChatError, Engine};
use crate::attachments::AttachmentStore;
use crate::ids;
use crate::request::{ActionParams, DEFAULT_LIMIT, ItemsQuery, Order, Paging, Request};
use crate::responder::Responder;
use crate::store::{ChatStore, Feedback, Write};
use crate::types::{Attachment, ItemKind, Page, Thread, ThreadItem, ThreadMetadata};

/// The answer of a JSON operation, serialized as ck-py does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `threads.get_by_id`, `threads.update`.
    Thread(Thread),
    /// `threads.list`.
    Threads(Page<Thread>),
    /// `items.list`.
    Items(Page<ThreadItem>),
    /// `threads.sync_custom_action`: `{"updated_item"?}`.
    Updated {
        /// The replaced widget, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        updated_item: Option<ThreadItem>,
    },
    /// `attachments.create`.
    Attachment(Attachment),
    /// `input.transcribe`: `{"text"}`.
    Transcript {
        /// What was said.
        text: String,
    },
    /// `threads.delete`, `items.feedback`, `attachments.delete`: `{}`.
    Empty {},
}

impl<S: ChatStore, R: Responder, A: AttachmentStore, D> Engine<S, R, A, D> {
    /// Answers a JSON (non-streamed) request.
    pub(crate) async fn json(&self, user: &UserId, request: Request) -> Result<Answer, ChatError> {
        let view = |t: &ThreadMetadata| Thread::view(t, Page::empty());
        Ok(match request {
            Request::GetThread { thread_id } => {
                let thread = self.thread(user, &thread_id).await?;
                let paging = Paging {
                    limit: DEFAULT_LIMIT,
                    order: Order::Asc,
                    after: None,
                };
                let mut items = self.visible_page(user, &thread.id, &paging).await?;
                self.present(&mut items.data).await?;
                Answer::Thread(Thread::view(&thread, items))
            }
            Request::ListThreads(paging) => {
                let page = self.store.list_threads(user, &paging).await?;
                Answer::Threads(Page {
                    data: page.data.iter().map(view).collect(),
                    has_more: page.has_more,
                    after: page.after,
                })
            }
            Request::UpdateThread { thread_id, title } => {
                let mut thread = self.thread(user, &thread_id).await?;
                thread.title = Some(title);
                // Deleted meanwhile: it stays deleted.
                if self.store.update_thread(user, &thread, false).await? != Write::Done {
                    return Err(ChatError::NotFound("thread"));
                }
                Answer::Thread(view(&thread))
            }
            Request::DeleteThread { thread_id } => {
                if !ids::plausible(&thread_id)
                    || !self.delete_thread_and_files(user, &thread_id).await?
                {
                    return Err(ChatError::NotFound("thread"));
                }
                Answer::Empty {}
            }
            Request::ListItems(ItemsQuery { thread_id, paging }) => {
                let thread = self.thread(user, &thread_id).await?;
                let mut items = self.visible_page(user, &thread.id, &paging).await?;
                self.present(&mut items.data).await?;
                Answer::Items(items)
            }
            Request::Feedback {
                thread_id,
                item_ids,
                kind,
            } => {
                let thread = self.thread(user, &thread_id).await?;
                // Every item must be one of the thread's: nothing is stored otherwise.
                let at = taskpilot_domain::timestamp::now();
                let mut ratings: Vec<Feedback> = Vec::with_capacity(item_ids.len());
                for item_id in item_ids {
                    if ratings.iter().any(|r| r.item_id == item_id) {
                        continue;
                    }
                    let item = self.item(user, &thread.id, &item_id).await?;
                    ratings.push(Feedback {
                        thread_id: thread.id.clone(),
                        item_id: item.id,
                        kind,
                        at,
                    });
                }
                if !ratings.is_empty() {
                    self.store.save_feedback(user, &ratings).await?;
                }
                tracing::info!(%thread_id, items = ratings.len(), kind = kind.as_str(), "feedback stored");
                let rated: Vec<String> = ratings.into_iter().map(|r| r.item_id).collect();
                self.responder
                    .add_feedback(user, &thread.id, &rated, kind)
                    .await;
                Answer::Empty {}
            }
            Request::SyncCustomAction(ActionParams {
                thread_id,
                item_id,
                action,
            }) => {
                let (thread, sender) = self.action_target(user, &thread_id, item_id).await?;
                if let Some(item) = &sender
                    && !matches!(item.kind, ItemKind::Widget { .. })
                {
                    return Err(ChatError::NotAWidget(item.id.clone()));
                }
                let updated = self
                    .responder
                    .sync_action(user, &thread, &action, sender.as_ref())
                    .await?;
                if let Some(item) = &updated
                    && self.store.save_item(user, item).await? != Write::Done
                {
                    return Err(ChatError::NotFound("thread"));
                }
                Answer::Updated {
                    updated_item: updated,
                }
            }
            Request::CreateAttachment {
                name,
                size,
                mime_type,
            } => Answer::Attachment(
                self.create_attachment(user, &name, size, &mime_type)
                    .await?,
            ),
            Request::DeleteAttachment { attachment_id } => {
                self.delete_attachment(user, &attachment_id).await?;
                Answer::Empty {}
            }
            streamed => {
                tracing::error!(request = ?streamed, "a streamed request reached json()");
                return Err(ChatError::Misrouted("streamed"));
            }
        })
    }
}

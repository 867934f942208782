//! The port a thread store implements: threads and items per user. The
//! DynamoDB adapter lives in `taskpilot-store`.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use taskpilot_domain::budget::UsageStore;
use taskpilot_domain::{StoreError, UserId};

use crate::attachments::AttachmentRecord;
use crate::request::{FeedbackKind, Paging};
use crate::types::{Page, ThreadItem, ThreadMetadata};

/// A thread with its most recent items, as one read returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentThread {
    /// The thread's metadata.
    pub thread: ThreadMetadata,
    /// Its latest items, hidden ones included, oldest first.
    pub items: Vec<ThreadItem>,
    /// The store's mark of the thread's latest activity as this read found
    /// it (opaque to the engine; `None` when the store keeps none): handed
    /// back with the thread's next message ([`ChatStore::save_message`]) so
    /// the store need not read it again before that write.
    pub mark: Option<u64>,
}

/// What the engine knows of a new user message's thread when it writes the
/// message ([`ChatStore::save_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageThread {
    /// A thread created with this message: both are written together.
    New,
    /// A stored thread, with the mark [`ChatStore::load_recent`] found.
    Stored {
        /// [`RecentThread::mark`].
        mark: Option<u64>,
    },
}

/// One rating of one item (`items.feedback`): a later rating of the same
/// item replaces it; it goes with its thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The thread.
    pub thread_id: String,
    /// The rated item.
    pub item_id: String,
    /// Up or down.
    pub kind: FeedbackKind,
    /// When it was given.
    #[serde(with = "taskpilot_domain::timestamp")]
    pub at: DateTime<Utc>,
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Written.
    Done,
    /// Not written: the thread is gone (or, for a rename, its rule refused
    /// it; for an item, the item is fenced).
    Refused,
    /// Not written: an attachment the item uses was deleted or used by
    /// another message meanwhile.
    AttachmentTaken,
}

/// Threads and their items, always scoped to one user: another user's thread
/// is simply absent. A chat store also keeps what the model cost
/// ([`UsageStore`]), charged by each turn.
pub trait ChatStore: UsageStore + Send + Sync {
    /// Inserts or updates a thread's metadata; either is activity that moves
    /// it to the top of [`ChatStore::list_threads`].
    fn save_thread(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads a thread's metadata.
    fn load_thread(
        &self,
        user: &UserId,
        thread_id: &str,
    ) -> impl Future<Output = Result<Option<ThreadMetadata>, StoreError>> + Send;

    /// The thread and its latest `limit` items in one read (the chat turn's
    /// critical path); `None` when there is no such thread. `with_mark`
    /// (a new message follows): its [`RecentThread::mark`] too, read
    /// alongside; otherwise the mark is `None` and not read.
    fn load_recent(
        &self,
        user: &UserId,
        thread_id: &str,
        limit: usize,
        with_mark: bool,
    ) -> impl Future<Output = Result<Option<RecentThread>, StoreError>> + Send;

    /// A page of threads by latest activity: their creation, then each new
    /// user message ([`ChatStore::save_item`]); `desc`, most recent first.
    /// A page's `after` is an opaque cursor of its listing, which shows the
    /// threads as they were at its first page: across the pages of one
    /// listing no thread is skipped or repeated while others move (one
    /// deleted meanwhile is left out). An `after` the store did not make
    /// starts a new listing.
    fn list_threads(
        &self,
        user: &UserId,
        paging: &Paging,
    ) -> impl Future<Output = Result<Page<ThreadMetadata>, StoreError>> + Send;

    /// Changes a thread's metadata, only while the thread exists and, with
    /// `untitled_only`, only while it has no title (an automatic title never
    /// overwrites a rename). [`Write::Refused`] when the rule refused it.
    fn update_thread(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        untitled_only: bool,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Deletes a thread and all its items; [`Write::Refused`] when there was
    /// no such thread. From its first step on, the thread reads as absent and no item
    /// can be written to it, so nothing of it can come back or remain.
    fn delete_thread(
        &self,
        user: &UserId,
        thread_id: &str,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Inserts or replaces an item, only while its thread exists
    /// ([`Write::Refused`], nothing written, when it is gone or the item is
    /// fenced). A new user message moves its thread to the top of
    /// [`ChatStore::list_threads`] in the same write. A user message's attachments are marked as used by it in the
    /// same write; when one of them is gone or used by another message,
    /// nothing is written ([`Write::AttachmentTaken`]).
    fn save_item(
        &self,
        user: &UserId,
        item: &ThreadItem,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Writes a new user message as [`ChatStore::save_item`] does and, for a
    /// [`MessageThread::New`] thread, `thread` with it (as
    /// [`ChatStore::save_thread`] does); a store writes both in one request
    /// when it can, and uses a stored thread's mark instead of reading it
    /// again. A store that cannot writes the thread, then the message.
    fn save_message(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        message: &ThreadItem,
        known: MessageThread,
    ) -> impl Future<Output = Result<Write, StoreError>> + Send;

    /// Makes sure an item whose write failed never exists, even if that
    /// write lands late: it is removed and no later write of it is accepted.
    /// Nothing to do when the thread is gone.
    fn fence_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads one item.
    fn load_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> impl Future<Output = Result<Option<ThreadItem>, StoreError>> + Send;

    /// A page of a thread's items, hidden ones included (ordered by id).
    fn list_items(
        &self,
        user: &UserId,
        thread_id: &str,
        paging: &Paging,
    ) -> impl Future<Output = Result<Page<ThreadItem>, StoreError>> + Send;

    /// Deletes items of a thread (absent ones are ignored), in as few
    /// requests as the store allows.
    fn delete_items(
        &self,
        user: &UserId,
        thread_id: &str,
        item_ids: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes one item.
    fn delete_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores ratings, each replacing an earlier rating of its item.
    fn save_feedback(
        &self,
        user: &UserId,
        ratings: &[Feedback],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores an attachment's record in its owner's partition.
    fn save_attachment(
        &self,
        user: &UserId,
        record: &AttachmentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads one of the user's attachment records.
    fn load_attachment(
        &self,
        user: &UserId,
        attachment_id: &str,
    ) -> impl Future<Output = Result<Option<AttachmentRecord>, StoreError>> + Send;

    /// Every attachment record of the user, expired ones included (the
    /// quota and a thread's clean-up read them).
    fn list_attachments(
        &self,
        user: &UserId,
    ) -> impl Future<Output = Result<Vec<AttachmentRecord>, StoreError>> + Send;

    /// Deletes attachment records (absent ones are ignored).
    fn delete_attachments(
        &self,
        user: &UserId,
        attachment_ids: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

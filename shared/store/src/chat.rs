//! [`ChatStore`] on DynamoDB. A thread is `THREAD#<id>` in its user's
//! partition, its items `ITEM#<thread id>#<ulid>#<prefix>` (ordered by
//! creation), and a copy of its metadata, the head, at `ITEM#<thread id>#~`
//! after its items: one descending Query reads the thread and its latest
//! items, the chat turn's only read. Threads are listed by latest activity
//! through the activity index ([`crate::activity`]): a thread's creation and
//! each new user message move it, in the same transaction. Records hold the
//! exact wire JSON.

use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, DeleteRequest, Put, PutRequest,
    TransactWriteItem, WriteRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use taskpilot_chatkit::attachments::AttachmentRecord;
use taskpilot_chatkit::request::{Order, Paging};
use taskpilot_chatkit::store::{ChatStore, Feedback, MessageThread, RecentThread, Write};
use taskpilot_chatkit::types::{ItemKind, Page, ThreadItem, ThreadMetadata};
use taskpilot_domain::{StoreError, UserId};

use crate::activity::back_off;
use crate::error::classify;
use crate::item::Item;
use crate::keys::{self, PK, SK};
use crate::table::{DynamoStore, s};

/// Most deletes in one BatchWriteItem.
const BATCH: usize = 25;
/// Times a transaction cancelled by a concurrent one is sent again.
const CONFLICT_RETRIES: u32 = 6;
/// Set on a thread's listed record while it is being deleted.
pub(crate) const DELETING: &str = "deleting";
/// Set on an item's key when a write of it failed: the item never exists,
/// and a late write of it is refused.
const FENCED: &str = "fenced";
/// A thread's title, beside its JSON.
const TITLE: &str = "title";
/// The condition of every write into a thread: it exists and is not being deleted.
pub(crate) const LIVE_THREAD: &str = "attribute_exists(#pk) AND attribute_not_exists(#deleting)";

fn record<T: Serialize>(pk: String, sk: String, value: &T) -> Result<Item, StoreError> {
    let json = serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("chat record encoding: {e}")))?;
    let mut item = keys::key(pk, sk);
    item.insert("data".into(), AttributeValue::S(json));
    Ok(item)
}

/// A thread's record: its JSON, and its title as an attribute of its own so
/// a write can be conditioned on it.
fn thread_record(pk: String, sk: String, thread: &ThreadMetadata) -> Result<Item, StoreError> {
    let mut row = record(pk, sk, thread)?;
    if let Some(title) = &thread.title {
        row.insert(TITLE.into(), AttributeValue::S(title.clone()));
    }
    Ok(row)
}

/// Whether a row is a fenced item's key (no item).
fn is_fence(row: &Item) -> bool {
    row.contains_key(FENCED)
}

/// Whether a row reads as absent: a fenced item, or a thread being deleted
/// (already gone for everyone).
pub(crate) fn is_absent(row: &Item) -> bool {
    is_fence(row) || row.contains_key(DELETING)
}

/// Whether a write was refused by its condition.
pub(crate) fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

pub(crate) fn from_record<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let data = item
        .get("data")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Internal("chat record without data".into()))?;
    serde_json::from_str(data)
        .map_err(|e| StoreError::Internal(format!("unreadable chat record: {e}")))
}

/// Why a transaction was cancelled.
#[derive(Debug, PartialEq, Eq)]
enum Cancelled {
    /// Conditions refused it: the positions of their writes.
    Refused(Vec<usize>),
    /// A concurrent transaction held one of its items (worth sending again).
    Conflict,
    /// Anything else.
    Other,
}

/// Reads a cancelled transaction's reasons (one per write, in order).
fn cancelled(reasons: &[CancellationReason]) -> Cancelled {
    let refused: Vec<usize> = reasons
        .iter()
        .enumerate()
        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
        .map(|(at, _)| at)
        .collect();
    if !refused.is_empty() {
        Cancelled::Refused(refused)
    } else if reasons
        .iter()
        .any(|r| r.code() == Some("TransactionConflict"))
    {
        Cancelled::Conflict
    } else {
        Cancelled::Other
    }
}

/// What an item's transaction ([`DynamoStore::in_live_thread`]) did: a
/// refusal of the thread's check or of the item's own condition is
/// [`Write::Refused`], of a claim [`Write::AttachmentTaken`].
fn written(outcome: Result<(), Vec<usize>>) -> Write {
    match outcome {
        Ok(()) => Write::Done,
        Err(refused) if refused.iter().any(|at| *at < 2) => Write::Refused,
        Err(_) => Write::AttachmentTaken,
    }
}

impl DynamoStore {
    /// A Query for a thread's items (its head excluded).
    fn items_query(&self, pk: String, thread_id: &str) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :last")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":first", s(keys::items_prefix(thread_id)))
            .expression_attribute_values(":last", s(keys::items_end(thread_id)))
    }

    /// One ordered page of `query` (on `pk`): `limit + 1` rows tell whether
    /// more follow; `sk_of` turns the `after` id into its sort key. DynamoDB
    /// stops a Query at 1 MB (and a filter can drop rows), so the page keeps
    /// reading from `LastEvaluatedKey` until it has its rows or the end.
    async fn page<T: DeserializeOwned>(
        &self,
        pk: String,
        query: QueryFluentBuilder,
        paging: &Paging,
        id_of: impl Fn(&T) -> String,
        sk_of: impl Fn(&str) -> String,
    ) -> Result<Page<T>, StoreError> {
        let mut start = paging
            .after
            .as_ref()
            .map(|after| keys::key(pk.clone(), sk_of(after)));
        let mut data: Vec<T> = Vec::new();
        loop {
            let wanted = paging.limit + 1 - data.len();
            let out = query
                .clone()
                .scan_index_forward(paging.order == Order::Asc)
                .consistent_read(true)
                .limit(i32::try_from(wanted).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for row in out.items.unwrap_or_default() {
                if !is_fence(&row) {
                    data.push(from_record(&row)?);
                }
            }
            match out.last_evaluated_key {
                Some(key) if data.len() <= paging.limit => start = Some(key),
                _ => break,
            }
        }
        Ok(Page::first(data, paging.limit, id_of))
    }

    async fn get_record<T: DeserializeOwned>(
        &self,
        user: &UserId,
        sk: String,
    ) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(keys::user_pk(user), sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.item
            .as_ref()
            .filter(|row| !is_absent(row))
            .map(from_record)
            .transpose()
    }

    /// `put` in one transaction with a check that its thread is live (exists,
    /// not being deleted): [`Write::Refused`] when a condition refused it.
    async fn put_in_live_thread(
        &self,
        pk: String,
        thread_id: &str,
        put: aws_sdk_dynamodb::types::builders::PutBuilder,
    ) -> Result<Write, StoreError> {
        self.put_in_live_thread_with(pk, thread_id, put, Vec::new())
            .await
    }

    /// [`Self::put_in_live_thread`] with more writes in the same transaction
    /// (attachment claims): when one of those is refused, nothing is written
    /// ([`Write::AttachmentTaken`]).
    pub(crate) async fn put_in_live_thread_with(
        &self,
        pk: String,
        thread_id: &str,
        put: aws_sdk_dynamodb::types::builders::PutBuilder,
        claims: Vec<TransactWriteItem>,
    ) -> Result<Write, StoreError> {
        let writes = self.in_live_thread(&pk, thread_id, put, claims)?;
        Ok(written(self.transact(writes).await?))
    }

    /// The check that `thread_id` is live, `put`, then `claims`: the writes
    /// of an item, in the order [`written`] reads refusals in.
    fn in_live_thread(
        &self,
        pk: &str,
        thread_id: &str,
        put: aws_sdk_dynamodb::types::builders::PutBuilder,
        claims: Vec<TransactWriteItem>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(keys::key(pk.to_owned(), keys::thread_sk(thread_id))))
            .condition_expression(LIVE_THREAD)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#deleting", DELETING)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let put = put
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut writes = vec![
            TransactWriteItem::builder().condition_check(check).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        writes.extend(claims);
        Ok(writes)
    }

    /// Writes an item's `row` unless its key is fenced, in its live thread,
    /// with `claims` in the same transaction.
    async fn put_unfenced(
        &self,
        pk: String,
        thread_id: &str,
        row: Item,
        claims: Vec<TransactWriteItem>,
    ) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(row))
            .condition_expression("attribute_not_exists(#fenced)")
            .expression_attribute_names("#fenced", FENCED);
        self.put_in_live_thread_with(pk, thread_id, put, claims)
            .await
    }

    /// A new user message: written with the move of its thread to the top
    /// of the activity index, in one transaction (`mark`: the thread's
    /// pointer when the caller read it, else it is read first). A message
    /// that exists already (rewritten when one of its attachments is
    /// deleted) keeps its thread's place.
    async fn save_user_message(
        &self,
        pk: String,
        item: &ThreadItem,
        (row, claims): (Item, Vec<TransactWriteItem>),
        mark: Option<Option<u64>>,
    ) -> Result<Write, StoreError> {
        let new = Put::builder()
            .table_name(&self.table)
            .set_item(Some(row.clone()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        let writes = self.in_live_thread(&pk, &item.thread_id, new, claims.clone())?;
        match self
            .transact_moving(&pk, &item.thread_id, mark, writes)
            .await?
        {
            // Stored already (or fenced): written as any other item.
            Err(refused) if !refused.contains(&0) && refused.contains(&1) => {
                self.put_unfenced(pk, &item.thread_id, row, claims).await
            }
            outcome => Ok(written(outcome)),
        }
    }

    /// A thread's listed record and its head, as unconditional puts.
    fn thread_puts(
        &self,
        pk: &str,
        thread: &ThreadMetadata,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        [
            keys::thread_sk(&thread.id),
            keys::thread_head_sk(&thread.id),
        ]
        .into_iter()
        .map(|sk| {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(thread_record(pk.to_owned(), sk, thread)?))
                .build()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            Ok(TransactWriteItem::builder().put(put).build())
        })
        .collect()
    }

    /// An item's row and the claims of the attachments it uses.
    fn item_writes(
        &self,
        pk: &str,
        item: &ThreadItem,
    ) -> Result<(Item, Vec<TransactWriteItem>), StoreError> {
        let row = record(
            pk.to_owned(),
            keys::item_sk(&item.thread_id, &item.id),
            item,
        )?;
        let claims = item
            .attachment_ids()
            .into_iter()
            .map(|id| self.claim(pk, id, &item.thread_id, &item.id))
            .collect::<Result<_, _>>()?;
        Ok((row, claims))
    }

    /// A new thread and its first message in one transaction, which places
    /// the thread in the activity index once: only a claim can refuse it
    /// ([`Write::AttachmentTaken`]).
    async fn save_new_thread(
        &self,
        pk: String,
        thread: &ThreadMetadata,
        message: &ThreadItem,
    ) -> Result<Write, StoreError> {
        let (row, claims) = self.item_writes(&pk, message)?;
        let mut writes = self.thread_puts(&pk, thread)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(row))
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        writes.push(TransactWriteItem::builder().put(put).build());
        writes.extend(claims);
        Ok(
            match self
                .transact_moving(&pk, &thread.id, Some(None), writes)
                .await?
            {
                Ok(()) => Write::Done,
                Err(_) => Write::AttachmentTaken,
            },
        )
    }

    /// A transaction whose conditions may refuse it: [`Write::Refused`] when
    /// one did.
    async fn transact_if(&self, writes: Vec<TransactWriteItem>) -> Result<Write, StoreError> {
        Ok(match self.transact(writes).await? {
            Ok(()) => Write::Done,
            Err(_) => Write::Refused,
        })
    }

    /// A transaction: `Ok(Err(positions))` when conditions refused it, with
    /// the positions of the writes whose condition failed. One cancelled by
    /// a concurrent transaction on one of its items (nothing written) is
    /// sent again a few times.
    pub(crate) async fn transact(
        &self,
        writes: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<usize>>, StoreError> {
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes.clone()))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                err.as_service_error()
            {
                match cancelled(c.cancellation_reasons()) {
                    Cancelled::Refused(refused) => return Ok(Err(refused)),
                    Cancelled::Conflict if attempt < CONFLICT_RETRIES => {
                        attempt += 1;
                        back_off(attempt).await;
                        continue;
                    }
                    Cancelled::Conflict | Cancelled::Other => {}
                }
            }
            return Err(classify(err));
        }
    }

    /// Deletes keys in batches, retrying what DynamoDB leaves unprocessed.
    pub(crate) async fn delete_keys(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        let requests = keys
            .into_iter()
            .map(|key| {
                DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(|e| StoreError::Internal(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        self.write_batch(requests).await
    }

    /// Puts whole records in as few BatchWriteItem requests as allowed.
    async fn put_batch(&self, rows: Vec<Item>) -> Result<(), StoreError> {
        let requests = rows
            .into_iter()
            .map(|row| {
                PutRequest::builder()
                    .set_item(Some(row))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(|e| StoreError::Internal(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        self.write_batch(requests).await
    }

    /// BatchWriteItem in chunks of 25, retrying what DynamoDB left unprocessed.
    async fn write_batch(&self, mut all: Vec<WriteRequest>) -> Result<(), StoreError> {
        while !all.is_empty() {
            let mut requests: Vec<WriteRequest> = all.drain(..all.len().min(BATCH)).collect();
            for attempt in 0..5u32 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(classify)?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
            }
            if !requests.is_empty() {
                return Err(StoreError::Unavailable("writes left unprocessed".into()));
            }
        }
        Ok(())
    }
}

impl ChatStore for DynamoStore {
    #[instrument(skip_all, fields(thread_id = %thread.id))]
    async fn save_thread(&self, user: &UserId, thread: &ThreadMetadata) -> Result<(), StoreError> {
        // The listed record, the head and the thread's first place in the
        // activity index, in one atomic request.
        let pk = keys::user_pk(user);
        let puts = self.thread_puts(&pk, thread)?;
        // A new thread has no place yet (an existing one, saved again, moves).
        match self
            .transact_moving(&pk, &thread.id, Some(None), puts)
            .await?
        {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::Internal(
                "a thread's unconditional save was refused".into(),
            )),
        }
    }

    #[instrument(skip_all, fields(thread_id = %thread.id, untitled_only))]
    async fn update_thread(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        untitled_only: bool,
    ) -> Result<Write, StoreError> {
        // The listed record carries the rule; the head follows it atomically
        // (threads saved before heads existed have none to check).
        let pk = keys::user_pk(user);
        let mut condition = LIVE_THREAD.to_owned();
        if untitled_only {
            condition.push_str(" AND attribute_not_exists(#title)");
        }
        let mut listed = Put::builder()
            .table_name(&self.table)
            .set_item(Some(thread_record(
                pk.clone(),
                keys::thread_sk(&thread.id),
                thread,
            )?))
            .condition_expression(condition)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#deleting", DELETING);
        if untitled_only {
            listed = listed.expression_attribute_names("#title", TITLE);
        }
        let head = Put::builder()
            .table_name(&self.table)
            .set_item(Some(thread_record(
                pk,
                keys::thread_head_sk(&thread.id),
                thread,
            )?));
        let writes = [listed, head]
            .into_iter()
            .map(|put| {
                put.build()
                    .map(|p| TransactWriteItem::builder().put(p).build())
                    .map_err(|e| StoreError::Internal(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.transact_if(writes).await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id))]
    async fn load_thread(
        &self,
        user: &UserId,
        thread_id: &str,
    ) -> Result<Option<ThreadMetadata>, StoreError> {
        self.get_record(user, keys::thread_sk(thread_id)).await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id))]
    async fn load_recent(
        &self,
        user: &UserId,
        thread_id: &str,
        limit: usize,
        with_mark: bool,
    ) -> Result<Option<RecentThread>, StoreError> {
        let head = keys::thread_head_sk(thread_id);
        let pk = keys::user_pk(user);
        // The thread's activity pointer is read alongside, not after: the
        // message that follows hands it back instead of reading it again.
        let query = self
            .prefix_query(pk.clone(), keys::items_prefix(thread_id))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .send();
        let mark = async {
            match with_mark {
                true => self.last_active(&pk, thread_id).await,
                false => Ok(None),
            }
        };
        let (out, mark) = tokio::join!(query, mark);
        let (out, mark) = (out.map_err(classify)?, mark?);
        let mut rows = out.items.unwrap_or_default();
        rows.retain(|row| !is_fence(row));
        let has_head = rows
            .first()
            .and_then(|r| r.get(SK))
            .and_then(|v| v.as_s().ok())
            .is_some_and(|sk| *sk == head);
        let thread = if has_head {
            from_record(&rows.remove(0))?
        } else {
            // A thread saved before heads existed: its listed record.
            match self.load_thread(user, thread_id).await? {
                Some(thread) => thread,
                None => return Ok(None),
            }
        };
        rows.truncate(limit);
        let mut items = rows
            .iter()
            .map(from_record)
            .collect::<Result<Vec<ThreadItem>, _>>()?;
        items.reverse();
        Ok(Some(RecentThread {
            thread,
            items,
            mark,
        }))
    }

    #[instrument(skip_all)]
    async fn list_threads(
        &self,
        user: &UserId,
        paging: &Paging,
    ) -> Result<Page<ThreadMetadata>, StoreError> {
        self.threads_by_activity(&keys::user_pk(user), paging).await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id))]
    async fn delete_thread(&self, user: &UserId, thread_id: &str) -> Result<Write, StoreError> {
        // First the mark: from here on the thread reads as absent and no item
        // can be written to it (item writes check the listed record in the
        // same transaction). Then its ratings, items and activity entries,
        // the listed record last, so a retry after a failure finishes the job.
        let pk = keys::user_pk(user);
        let marked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(pk.clone(), keys::thread_sk(thread_id))))
            .update_expression("SET #deleting = :yes")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#deleting", DELETING)
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await;
        match marked {
            Ok(_) => {}
            Err(e) if is_condition_failure(&e) => return Ok(Write::Refused),
            Err(e) => return Err(classify(e)),
        }
        for prefix in [
            keys::feedback_prefix(thread_id),
            keys::items_prefix(thread_id),
        ] {
            let mut start = None;
            loop {
                let out = self
                    .prefix_query(pk.clone(), prefix.clone())
                    .projection_expression("#pk, #sk")
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(classify)?;
                self.delete_keys(out.items.unwrap_or_default()).await?;
                match out.last_evaluated_key {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        self.delete_activity(&pk, thread_id).await?;
        self.delete_keys(vec![keys::key(pk, keys::thread_sk(thread_id))])
            .await?;
        Ok(Write::Done)
    }

    #[instrument(skip_all, fields(item_id = %item.id))]
    async fn save_item(&self, user: &UserId, item: &ThreadItem) -> Result<Write, StoreError> {
        let pk = keys::user_pk(user);
        let writes = self.item_writes(&pk, item)?;
        if matches!(item.kind, ItemKind::UserMessage { .. }) {
            return self.save_user_message(pk, item, writes, None).await;
        }
        let (row, claims) = writes;
        self.put_unfenced(pk, &item.thread_id, row, claims).await
    }

    #[instrument(skip_all, fields(item_id = %message.id))]
    async fn save_message(
        &self,
        user: &UserId,
        thread: &ThreadMetadata,
        message: &ThreadItem,
        known: MessageThread,
    ) -> Result<Write, StoreError> {
        let pk = keys::user_pk(user);
        match known {
            MessageThread::New => self.save_new_thread(pk, thread, message).await,
            MessageThread::Stored { mark } => {
                let writes = self.item_writes(&pk, message)?;
                self.save_user_message(pk, message, writes, Some(mark))
                    .await
            }
        }
    }

    #[instrument(skip_all, fields(item_id = %item_id))]
    async fn fence_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> Result<(), StoreError> {
        // The item's key keeps only the fence: what a late write had put is
        // gone, and a write that lands later is refused by its condition.
        // Refused only when the thread is gone: then nothing can land either.
        let pk = keys::user_pk(user);
        let mut fence = keys::key(pk.clone(), keys::item_sk(thread_id, item_id));
        fence.insert(FENCED.into(), AttributeValue::Bool(true));
        let put = Put::builder().table_name(&self.table).set_item(Some(fence));
        self.put_in_live_thread(pk, thread_id, put)
            .await
            .map(|_| ())
    }

    #[instrument(skip_all, fields(item_id = %item_id))]
    async fn load_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> Result<Option<ThreadItem>, StoreError> {
        self.get_record(user, keys::item_sk(thread_id, item_id))
            .await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id))]
    async fn list_items(
        &self,
        user: &UserId,
        thread_id: &str,
        paging: &Paging,
    ) -> Result<Page<ThreadItem>, StoreError> {
        let pk = keys::user_pk(user);
        self.page(
            pk.clone(),
            self.items_query(pk, thread_id),
            paging,
            |i: &ThreadItem| i.id.clone(),
            |id| keys::item_sk(thread_id, id),
        )
        .await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id, items = item_ids.len()))]
    async fn delete_items(
        &self,
        user: &UserId,
        thread_id: &str,
        item_ids: &[String],
    ) -> Result<(), StoreError> {
        let pk = keys::user_pk(user);
        let keys = item_ids
            .iter()
            .map(|id| keys::key(pk.clone(), keys::item_sk(thread_id, id)))
            .collect();
        self.delete_keys(keys).await
    }

    #[instrument(skip_all, fields(item_id = %item_id))]
    async fn delete_item(
        &self,
        user: &UserId,
        thread_id: &str,
        item_id: &str,
    ) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(
                keys::user_pk(user),
                keys::item_sk(thread_id, item_id),
            )))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    #[instrument(skip_all, fields(ratings = ratings.len()))]
    async fn save_feedback(&self, user: &UserId, ratings: &[Feedback]) -> Result<(), StoreError> {
        let pk = keys::user_pk(user);
        let rows = ratings
            .iter()
            .map(|f| record(pk.clone(), keys::feedback_sk(&f.thread_id, &f.item_id), f))
            .collect::<Result<Vec<_>, _>>()?;
        self.put_batch(rows).await
    }

    async fn save_attachment(
        &self,
        user: &UserId,
        record: &AttachmentRecord,
    ) -> Result<(), StoreError> {
        self.put_attachment(user, record).await
    }

    async fn load_attachment(
        &self,
        user: &UserId,
        attachment_id: &str,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        self.get_attachment(user, attachment_id).await
    }

    async fn list_attachments(&self, user: &UserId) -> Result<Vec<AttachmentRecord>, StoreError> {
        self.all_attachments(user).await
    }

    async fn delete_attachments(
        &self,
        user: &UserId,
        attachment_ids: &[String],
    ) -> Result<(), StoreError> {
        let pk = keys::user_pk(user);
        self.delete_keys(
            attachment_ids
                .iter()
                .map(|id| keys::key(pk.clone(), keys::attachment_sk(id)))
                .collect(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use taskpilot_chatkit::types::ThreadStatus;

    fn thread(title: Option<&str>) -> ThreadMetadata {
        ThreadMetadata {
            id: "thr_1".into(),
            title: title.map(str::to_owned),
            created_at: "2026-03-07T10:00:00Z".parse().unwrap(),
            status: ThreadStatus::Active,
            metadata: serde_json::Map::new(),
        }
    }

    fn row(extra: &str) -> Item {
        let mut row = keys::key("USER#u".into(), "ITEM#thr_1#01AB#msg".into());
        row.insert(extra.into(), AttributeValue::Bool(true));
        row
    }

    fn failure(code: &str) -> SdkError<UpdateItemError, ()> {
        let meta = ErrorMetadata::builder().code(code).build();
        SdkError::service_error(UpdateItemError::generic(meta), ())
    }

    #[test]
    fn a_record_holds_its_key_and_the_exact_json() {
        let item = record("USER#u".into(), "FEEDBACK#t#i".into(), &vec![1, 2]).unwrap();
        assert_eq!(
            item,
            Item::from([
                ("pk".to_owned(), AttributeValue::S("USER#u".into())),
                ("sk".to_owned(), AttributeValue::S("FEEDBACK#t#i".into())),
                ("data".to_owned(), AttributeValue::S("[1,2]".into())),
            ])
        );
    }

    #[test]
    fn a_titled_threads_record_carries_its_title_apart() {
        let item = thread_record(
            "USER#u".into(),
            "THREAD#thr_1".into(),
            &thread(Some("Plans")),
        )
        .unwrap();
        assert_eq!(item[TITLE], AttributeValue::S("Plans".into()));
    }

    #[test]
    fn an_untitled_threads_record_has_no_title_attribute() {
        let item = thread_record("USER#u".into(), "THREAD#thr_1".into(), &thread(None)).unwrap();
        assert!(!item.contains_key(TITLE));
    }

    #[test]
    fn a_threads_record_reads_back_as_the_thread() {
        let item = thread_record(
            "USER#u".into(),
            "THREAD#thr_1".into(),
            &thread(Some("Plans")),
        )
        .unwrap();
        assert_eq!(
            from_record::<ThreadMetadata>(&item).unwrap(),
            thread(Some("Plans"))
        );
    }

    #[test]
    fn a_record_without_data_is_an_internal_error() {
        let item = keys::key("USER#u".into(), "THREAD#thr_1".into());
        assert!(matches!(
            from_record::<ThreadMetadata>(&item),
            Err(StoreError::Internal(_))
        ));
    }

    #[test]
    fn a_record_with_unreadable_json_is_an_internal_error() {
        let mut item = keys::key("USER#u".into(), "THREAD#thr_1".into());
        item.insert("data".into(), AttributeValue::S("{\"id\":".into()));
        assert!(matches!(
            from_record::<ThreadMetadata>(&item),
            Err(StoreError::Internal(_))
        ));
    }

    #[test]
    fn a_fenced_key_is_a_fence() {
        assert!(is_fence(&row(FENCED)));
    }

    #[test]
    fn a_stored_record_is_no_fence() {
        assert!(!is_fence(&row("data")));
    }

    #[test]
    fn a_fenced_key_reads_as_absent() {
        assert!(is_absent(&row(FENCED)));
    }

    #[test]
    fn a_thread_being_deleted_reads_as_absent() {
        assert!(is_absent(&row(DELETING)));
    }

    #[test]
    fn a_stored_record_is_present() {
        assert!(!is_absent(&row("data")));
    }

    #[test]
    fn a_failed_condition_is_a_condition_failure() {
        assert!(is_condition_failure(&failure(
            "ConditionalCheckFailedException"
        )));
    }

    #[test]
    fn another_service_error_is_no_condition_failure() {
        assert!(!is_condition_failure(&failure("ValidationException")));
    }

    fn reasons(codes: &[&str]) -> Vec<CancellationReason> {
        codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect()
    }

    #[test]
    fn a_transaction_refused_by_conditions_names_their_writes() {
        assert_eq!(
            cancelled(&reasons(&[
                "None",
                "ConditionalCheckFailed",
                "TransactionConflict",
                "ConditionalCheckFailed"
            ])),
            Cancelled::Refused(vec![1, 3])
        );
    }

    #[test]
    fn a_transaction_cancelled_by_another_is_a_conflict() {
        assert_eq!(
            cancelled(&reasons(&["None", "TransactionConflict"])),
            Cancelled::Conflict
        );
    }

    #[test]
    fn a_transaction_cancelled_otherwise_is_neither() {
        assert_eq!(
            cancelled(&reasons(&["None", "ValidationError"])),
            Cancelled::Other
        );
        assert_eq!(cancelled(&[]), Cancelled::Other);
    }

    #[test]
    fn what_an_items_transaction_did() {
        assert_eq!(written(Ok(())), Write::Done);
        assert_eq!(written(Err(vec![0])), Write::Refused);
        assert_eq!(written(Err(vec![1, 2])), Write::Refused);
        assert_eq!(written(Err(vec![2])), Write::AttachmentTaken);
    }

    #[test]
    fn a_timeout_is_no_condition_failure() {
        let err: SdkError<UpdateItemError, ()> = SdkError::timeout_error("slow");
        assert!(!is_condition_failure(&err));
    }
}

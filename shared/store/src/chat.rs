//! [`ChatStore`] on DynamoDB. A thread is `THREAD#<id>` in its user's
//! partition, its items `ITEM#<thread id>#<item id>`; ids sort by creation, so
//! ordered Queries page through them. Records hold the exact wire JSON.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use taskpilot_chatkit::request::{Order, Paging};
use taskpilot_chatkit::store::ChatStore;
use taskpilot_chatkit::types::{Page, ThreadItem, ThreadMetadata};
use taskpilot_domain::{StoreError, UserId};

use crate::error::classify;
use crate::keys;
use crate::tasks::DynamoStore;

type Item = HashMap<String, AttributeValue>;

/// Most deletes in one BatchWriteItem.
const BATCH: usize = 25;

fn record<T: Serialize>(pk: String, sk: String, value: &T) -> Result<Item, StoreError> {
    let json = serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("chat record encoding: {e}")))?;
    let mut item = keys::key(pk, sk);
    item.insert("data".into(), AttributeValue::S(json));
    Ok(item)
}

fn from_record<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    let data = item
        .get("data")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Internal("chat record without data".into()))?;
    serde_json::from_str(data)
        .map_err(|e| StoreError::Internal(format!("unreadable chat record: {e}")))
}

impl DynamoStore {
    /// One ordered page under `prefix`: `limit + 1` rows tell whether more
    /// follow; `sk_of` turns the `after` id into its sort key.
    async fn page<T: DeserializeOwned>(
        &self,
        user: &UserId,
        prefix: &str,
        paging: &Paging,
        id_of: impl Fn(&T) -> String,
        sk_of: impl Fn(&str) -> String,
    ) -> Result<Page<T>, StoreError> {
        let pk = keys::user_pk(user);
        let start = paging
            .after
            .as_ref()
            .map(|after| keys::key(pk.clone(), sk_of(after)));
        let out = self
            .prefix_query(pk, prefix.to_owned())
            .scan_index_forward(paging.order == Order::Asc)
            .consistent_read(true)
            .limit(paging.limit as i32 + 1)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(classify)?;
        let mut data = out
            .items
            .unwrap_or_default()
            .iter()
            .map(from_record)
            .collect::<Result<Vec<T>, _>>()?;
        let has_more = data.len() > paging.limit;
        data.truncate(paging.limit);
        let after = if has_more {
            data.last().map(&id_of)
        } else {
            None
        };
        Ok(Page {
            data,
            has_more,
            after,
        })
    }

    async fn put_record(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
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
        out.item.as_ref().map(from_record).transpose()
    }

    /// Deletes keys in batches, retrying what DynamoDB leaves unprocessed.
    async fn delete_keys(&self, mut keys: Vec<Item>) -> Result<(), StoreError> {
        while !keys.is_empty() {
            let chunk: Vec<Item> = keys.drain(..keys.len().min(BATCH)).collect();
            let mut requests: Vec<WriteRequest> = chunk
                .into_iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .set_key(Some(key))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(|e| StoreError::Internal(e.to_string()))
                })
                .collect::<Result<_, _>>()?;
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
                return Err(StoreError::Unavailable("deletes left unprocessed".into()));
            }
        }
        Ok(())
    }
}

impl ChatStore for DynamoStore {
    #[instrument(skip_all, fields(thread_id = %thread.id))]
    async fn save_thread(&self, user: &UserId, thread: &ThreadMetadata) -> Result<(), StoreError> {
        let item = record(keys::user_pk(user), keys::thread_sk(&thread.id), thread)?;
        self.put_record(item).await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id))]
    async fn load_thread(
        &self,
        user: &UserId,
        thread_id: &str,
    ) -> Result<Option<ThreadMetadata>, StoreError> {
        self.get_record(user, keys::thread_sk(thread_id)).await
    }

    #[instrument(skip_all)]
    async fn list_threads(
        &self,
        user: &UserId,
        paging: &Paging,
    ) -> Result<Page<ThreadMetadata>, StoreError> {
        self.page(
            user,
            keys::THREAD_PREFIX,
            paging,
            |t: &ThreadMetadata| t.id.clone(),
            keys::thread_sk,
        )
        .await
    }

    #[instrument(skip_all, fields(thread_id = %thread_id))]
    async fn delete_thread(&self, user: &UserId, thread_id: &str) -> Result<bool, StoreError> {
        if self.load_thread(user, thread_id).await?.is_none() {
            return Ok(false);
        }
        // Items first, the thread last: a retry after a failure finishes the job.
        let pk = keys::user_pk(user);
        let prefix = keys::items_prefix(thread_id);
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
        self.delete_keys(vec![keys::key(pk, keys::thread_sk(thread_id))])
            .await?;
        Ok(true)
    }

    #[instrument(skip_all, fields(item_id = %item.id))]
    async fn save_item(&self, user: &UserId, item: &ThreadItem) -> Result<(), StoreError> {
        let row = record(
            keys::user_pk(user),
            keys::item_sk(&item.thread_id, &item.id),
            item,
        )?;
        self.put_record(row).await
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
        self.page(
            user,
            &keys::items_prefix(thread_id),
            paging,
            |i: &ThreadItem| i.id.clone(),
            |id| keys::item_sk(thread_id, id),
        )
        .await
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
}

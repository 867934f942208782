//! Threads stored before the activity index (no pointer): the user's first
//! listing gives each an entry at its creation time, once, before it reads
//! the index, and marks the user `indexed`.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem};

use taskpilot_chatkit::types::ThreadMetadata;
use taskpilot_domain::StoreError;

use super::{ATTEMPTS, INDEXED, back_off, built, is_conflict, move_writes};
use crate::chat::{DELETING, LIVE_THREAD, from_record, is_absent};
use crate::error::classify;
use crate::item::Item;
use crate::keys::{self, PK, SK};
use crate::table::DynamoStore;

/// Legacy threads indexed per transaction (three writes each, of 100).
const LEGACY_BATCH: usize = 25;

/// The writes that index a thread stored before the index at `at`: only
/// while it is live and still has no pointer.
fn legacy_writes(
    table: &str,
    pk: &str,
    thread_id: &str,
    at: u64,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let live = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(keys::key(pk.to_owned(), keys::thread_sk(thread_id))))
        .condition_expression(LIVE_THREAD)
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#deleting", DELETING)
        .build()
        .map_err(built)?;
    let mut writes = vec![TransactWriteItem::builder().condition_check(live).build()];
    let mut moved = move_writes(table, pk, thread_id, at, None)?;
    // No floor check: a time from the past, written before any listing
    // reads the index.
    moved.pop();
    writes.extend(moved);
    Ok(writes)
}

impl DynamoStore {
    /// Notes that the threads older than the index are indexed.
    pub(super) async fn set_indexed(&self, pk: &str) -> Result<(), StoreError> {
        for attempt in 0..ATTEMPTS {
            let set = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::key(pk.to_owned(), keys::LISTING_SK.to_owned())))
                .update_expression("SET #indexed = :yes")
                .expression_attribute_names("#indexed", INDEXED)
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .send()
                .await;
            match set {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => back_off(attempt + 1).await,
                Err(e) => return Err(classify(e)),
            }
        }
        Err(StoreError::Unavailable("the listing floor is busy".into()))
    }

    /// Every row of `pk` under `prefix`, following `LastEvaluatedKey`.
    async fn rows_under(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .prefix_query(pk.to_owned(), prefix.to_owned())
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            rows.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(rows),
            }
        }
    }

    /// Gives every live thread of `pk` without a pointer (stored before the
    /// index) an entry at its creation time.
    pub(super) async fn index_legacy(&self, pk: &str) -> Result<(), StoreError> {
        let indexed: HashSet<String> = self
            .rows_under(pk, keys::LAST_ACTIVE_PREFIX)
            .await?
            .iter()
            .filter_map(|r| {
                r.get(SK)?
                    .as_s()
                    .ok()?
                    .strip_prefix(keys::LAST_ACTIVE_PREFIX)
            })
            .map(str::to_owned)
            .collect();
        let mut legacy = Vec::new();
        for row in self.rows_under(pk, keys::THREAD_PREFIX).await? {
            if is_absent(&row) {
                continue;
            }
            let thread: ThreadMetadata = from_record(&row)?;
            if !indexed.contains(&thread.id) {
                let at = u64::try_from(thread.created_at.timestamp_millis()).unwrap_or(0);
                legacy.push((thread.id, at));
            }
        }
        if !legacy.is_empty() {
            tracing::info!(
                threads = legacy.len(),
                "indexing threads stored before the activity index"
            );
        }
        for chunk in legacy.chunks(LEGACY_BATCH) {
            let mut writes = Vec::new();
            for (id, at) in chunk {
                writes.extend(legacy_writes(&self.table, pk, id, *at)?);
            }
            if self.transact(writes).await?.is_err() {
                // One was indexed by its own activity, or deleted, meanwhile:
                // one by one, each refusal meaning just that.
                for (id, at) in chunk {
                    let _ = self
                        .transact(legacy_writes(&self.table, pk, id, *at)?)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::s;

    #[test]
    fn a_legacy_thread_is_indexed_only_while_live_and_without_the_floor() {
        let writes = legacy_writes("t", "USER#u", "thr_1", 5).unwrap();
        assert_eq!(writes.len(), 3);
        assert_eq!(
            writes[0].condition_check().unwrap().key()["sk"],
            s("THREAD#thr_1")
        );
        assert_eq!(
            writes[2].put().unwrap().item()["sk"],
            s("ACTIVITY#0000000000005#thr_1")
        );
    }
}

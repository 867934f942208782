//! The activity index: a user's threads in order of their latest activity
//! (their creation, then each new user message), paged exactly while
//! threads move, with Queries on the user's partition only.
//!
//! Each activity of a thread is an entry `ACTIVITY#<ms>#<thread id>`; the
//! thread's pointer `LASTACTIVE#<thread id>` holds the time of its current
//! entry. A move is part of the transaction of the write that causes it: it
//! puts the new entry, marks the previous one `superseded` at the new time
//! (with a `ttl` a day later) and swaps the pointer, on the condition that
//! the pointer still holds the previous time. So two concurrent moves cannot
//! both win, and a thread's entries live one after another: entry `i` from
//! its time to the time of entry `i + 1`.
//!
//! A listing is a snapshot at the time `T` of its first page, carried in its
//! cursor: the entries at `T` or before not superseded by `T`, exactly one
//! per thread, each where it was at `T`. So that no write can still add an
//! entry at `T` or before once a listing has taken `T` (a slow or late
//! transaction, a clock behind), the first page raises the user's floor
//! (`LISTING#THREADS`) to `T`, and every move checks in its transaction that
//! its time is above the floor; a move refused by it is retried above it.
//! A listing stays exact for [`cursor::MAX_LISTING_AGE_MS`]; an older cursor
//! goes on from its place with a new snapshot.
//!
//! Threads stored before the index (no pointer) are indexed at their
//! creation time, once, by the user's first listing ([`legacy`]).

mod cursor;
mod legacy;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update,
};

use taskpilot_chatkit::request::{Order, Paging};
use taskpilot_chatkit::types::{Page, ThreadMetadata};
use taskpilot_domain::StoreError;

use crate::chat::{from_record, is_absent, is_condition_failure};
use crate::error::classify;
use crate::item::Item;
use crate::keys::{self, PK, SK, TTL};
use crate::table::{DynamoStore, n, s};
use cursor::Cursor;

/// How long a superseded entry is kept (its `ttl`): a day.
pub const RETENTION_SECS: u64 = 86_400;
/// Attempts of a move (or of raising the floor) before giving up.
const ATTEMPTS: u32 = 8;
/// Most keys in one BatchGetItem.
const BATCH_GET: usize = 100;

/// A pointer's time: its thread's current entry.
const AT: &str = "at";
/// An entry's thread.
const THREAD: &str = "thread";
/// When an entry stopped being its thread's current one.
const SUPERSEDED: &str = "superseded";
/// The latest snapshot a listing took.
const FLOOR: &str = "floor";
/// Set once the threads stored before the index have entries.
const INDEXED: &str = "indexed";

fn built(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The time of a new activity: now, but after the thread's current one and
/// above the floor, when known.
pub(crate) fn next_at(now: u64, previous: Option<u64>, floor: Option<u64>) -> u64 {
    [previous, floor]
        .into_iter()
        .flatten()
        .map(|t| t.saturating_add(1))
        .fold(now, u64::max)
}

/// A number attribute of a row.
fn number(row: &Item, name: &str) -> Option<u64> {
    row.get(name)?.as_n().ok()?.parse().ok()
}

/// The writes that move `thread_id` to `at` from its entry at `previous`
/// (`None`: it has none), in this order: the pointer (on the condition that
/// it still holds `previous`), the new entry, the previous entry's
/// supersession (when there is one), the floor's check (last).
pub(crate) fn move_writes(
    table: &str,
    pk: &str,
    thread_id: &str,
    at: u64,
    previous: Option<u64>,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut pointer = keys::key(pk.to_owned(), keys::last_active_sk(thread_id));
    pointer.insert(AT.into(), n(at));
    let pointer = Put::builder().table_name(table).set_item(Some(pointer));
    let pointer = match previous {
        Some(p) => pointer
            .condition_expression("#at = :previous")
            .expression_attribute_names("#at", AT)
            .expression_attribute_values(":previous", n(p)),
        None => pointer
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK),
    };
    let mut entry = keys::key(pk.to_owned(), keys::activity_sk(at, thread_id));
    entry.insert(THREAD.into(), s(thread_id));
    let entry = Put::builder().table_name(table).set_item(Some(entry));
    let mut writes = vec![
        TransactWriteItem::builder()
            .put(pointer.build().map_err(built)?)
            .build(),
        TransactWriteItem::builder()
            .put(entry.build().map_err(built)?)
            .build(),
    ];
    if let Some(p) = previous {
        let superseded = Update::builder()
            .table_name(table)
            .set_key(Some(keys::key(
                pk.to_owned(),
                keys::activity_sk(p, thread_id),
            )))
            .update_expression("SET #superseded = :at, #ttl = :expiry")
            .expression_attribute_names("#superseded", SUPERSEDED)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":expiry", n(at / 1_000 + RETENTION_SECS))
            .build()
            .map_err(built)?;
        writes.push(TransactWriteItem::builder().update(superseded).build());
    }
    let floor = ConditionCheck::builder()
        .table_name(table)
        .set_key(Some(keys::key(pk.to_owned(), keys::LISTING_SK.to_owned())))
        .condition_expression("attribute_not_exists(#floor) OR #floor < :at")
        .expression_attribute_names("#floor", FLOOR)
        .expression_attribute_values(":at", n(at))
        .build()
        .map_err(built)?;
    writes.push(TransactWriteItem::builder().condition_check(floor).build());
    Ok(writes)
}

/// An entry's time and thread, from its key.
fn entry_of(row: &Item) -> Option<(u64, String)> {
    let sk = row.get(SK)?.as_s().ok()?;
    let (at, thread) = sk.strip_prefix(keys::ACTIVITY_PREFIX)?.split_once('#')?;
    Some((at.parse().ok()?, thread.to_owned()))
}

/// The page of the first `limit` of `found`, its cursor naming the last.
fn page_of(
    mut found: Vec<(u64, ThreadMetadata)>,
    limit: usize,
    snapshot: u64,
) -> Page<ThreadMetadata> {
    let has_more = found.len() > limit;
    found.truncate(limit);
    let after = match found.last() {
        Some((at, thread)) if has_more => Some(
            Cursor {
                snapshot,
                at: *at,
                thread: thread.id.clone(),
            }
            .encode(),
        ),
        _ => None,
    };
    Page {
        data: found.into_iter().map(|(_, t)| t).collect(),
        has_more,
        after,
    }
}

/// Whether a request met an ongoing transaction on one of its items.
fn is_conflict<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "TransactionConflictException")
}

/// Waits before attempt `attempt` (from 1) of a request that met a
/// conflict: growing, with jitter, so concurrent writers part.
pub(crate) async fn back_off(attempt: u32) {
    tokio::time::sleep(delay(attempt, chrono::Utc::now().timestamp_subsec_nanos())).await;
}

/// The wait before attempt `attempt`: 8 ms doubled per attempt (at most
/// 256 ms), plus up to 15/16 of that again, picked by `noise` (any number:
/// the clock's nanoseconds).
fn delay(attempt: u32, noise: u32) -> Duration {
    let jitter = u64::from(noise % 16);
    let base = 8u64 << attempt.min(5);
    Duration::from_millis(base + jitter * base / 16)
}

impl DynamoStore {
    /// The time of `thread_id`'s current entry (`None`: not indexed).
    pub(crate) async fn last_active(
        &self,
        pk: &str,
        thread_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let row = self.get_row(pk, keys::last_active_sk(thread_id)).await?;
        Ok(row.as_ref().and_then(|r| number(r, AT)))
    }

    /// The user's listing row (floor and `indexed`).
    async fn listing_row(&self, pk: &str) -> Result<Option<Item>, StoreError> {
        self.get_row(pk, keys::LISTING_SK.to_owned()).await
    }

    async fn get_row(&self, pk: &str, sk: String) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key(pk.to_owned(), sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?
            .item)
    }

    /// `writes` and the move of `thread_id` to a new activity, in one
    /// transaction. `Ok(Err(positions))`: a condition of `writes` refused
    /// it (nothing written). A move refused by a concurrent move or by the
    /// floor is tried again with a new time. `guess` is the thread's current
    /// entry when the caller knows it (`Some(None)` for a new thread), else
    /// it is read.
    pub(crate) async fn transact_moving(
        &self,
        pk: &str,
        thread_id: &str,
        mut guess: Option<Option<u64>>,
        writes: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<usize>>, StoreError> {
        let own = writes.len();
        let mut floor = None;
        for _ in 0..ATTEMPTS {
            let previous = match guess.take() {
                Some(known) => known,
                None => self.last_active(pk, thread_id).await?,
            };
            let at = next_at(now_ms(), previous, floor);
            let mut all = writes.clone();
            all.extend(move_writes(&self.table, pk, thread_id, at, previous)?);
            let floor_at = all.len() - 1;
            match self.transact(all).await? {
                Ok(()) => return Ok(Ok(())),
                Err(refused) if refused.iter().any(|p| *p < own) => {
                    return Ok(Err(refused.into_iter().filter(|p| *p < own).collect()));
                }
                Err(refused) => {
                    if refused.contains(&floor_at) {
                        floor = self.listing_row(pk).await?.and_then(|r| number(&r, FLOOR));
                    }
                }
            }
        }
        Err(StoreError::Unavailable(
            "the thread's activity kept changing".into(),
        ))
    }

    /// A page of the threads of `pk` by latest activity (see the module).
    pub(crate) async fn threads_by_activity(
        &self,
        pk: &str,
        paging: &Paging,
    ) -> Result<Page<ThreadMetadata>, StoreError> {
        let now = now_ms();
        let cursor = paging.after.as_deref().and_then(Cursor::decode);
        // A cursor too old goes on from its place with a new snapshot; one
        // that no listing made starts over.
        let (snapshot, place) = match cursor {
            Some(c) if c.is_current(now) => (c.snapshot, Some(c)),
            Some(c) if c.at <= now => (self.snapshot(pk, now).await?, Some(c)),
            _ => (self.snapshot(pk, now).await?, None),
        };
        let mut start = place.map(|c| keys::key(pk.to_owned(), keys::activity_sk(c.at, &c.thread)));
        let mut found: Vec<(u64, ThreadMetadata)> = Vec::new();
        let mut pending: VecDeque<(u64, String)> = VecDeque::new();
        let mut more = true;
        while found.len() <= paging.limit {
            let wanted = paging.limit + 1 - found.len();
            if pending.is_empty() {
                if !more {
                    break;
                }
                // Superseded entries are filtered out after the read: read
                // more than wanted, and go on while a page is short.
                let out = self
                    .entries_query(pk, snapshot)
                    .scan_index_forward(paging.order == Order::Asc)
                    .consistent_read(true)
                    .limit(i32::try_from(wanted.saturating_mul(4).max(50)).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(classify)?;
                pending.extend(out.items.unwrap_or_default().iter().filter_map(entry_of));
                match out.last_evaluated_key {
                    Some(key) => start = Some(key),
                    None => more = false,
                }
                continue;
            }
            let batch: Vec<(u64, String)> = pending.drain(..wanted.min(pending.len())).collect();
            let live = self
                .live_threads(pk, batch.iter().map(|(_, id)| id.as_str()))
                .await?;
            for (at, id) in batch {
                if let Some(thread) = live.get(&id) {
                    found.push((at, thread.clone()));
                }
            }
        }
        Ok(page_of(found, paging.limit, snapshot))
    }

    /// The entries of `pk` a listing at `snapshot` shows, in key order.
    fn entries_query(&self, pk: &str, snapshot: u64) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :last")
            .filter_expression("attribute_not_exists(#superseded) OR #superseded > :snapshot")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_names("#superseded", SUPERSEDED)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":first", s(keys::ACTIVITY_PREFIX))
            .expression_attribute_values(":last", s(keys::activity_end(snapshot)))
            .expression_attribute_values(":snapshot", n(snapshot))
    }

    /// The live threads among `ids` (absent and deleting ones left out),
    /// read with BatchGetItem.
    async fn live_threads<'a>(
        &self,
        pk: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, ThreadMetadata>, StoreError> {
        let unique: HashSet<&str> = ids.collect();
        let keys: Vec<Item> = unique
            .into_iter()
            .map(|id| keys::key(pk.to_owned(), keys::thread_sk(id)))
            .collect();
        let mut threads = HashMap::new();
        for chunk in keys.chunks(BATCH_GET) {
            for row in self.get_batch(chunk.to_vec()).await? {
                if !is_absent(&row) {
                    let thread: ThreadMetadata = from_record(&row)?;
                    threads.insert(thread.id.clone(), thread);
                }
            }
        }
        Ok(threads)
    }

    /// The rows at `keys` (at most 100), strongly consistent, retrying what
    /// DynamoDB leaves unprocessed.
    async fn get_batch(&self, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut rows = Vec::new();
        let mut keys = keys;
        for attempt in 0..5u32 {
            if keys.is_empty() {
                return Ok(rows);
            }
            if attempt > 0 {
                back_off(attempt).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(built)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(classify)?;
            rows.extend(
                out.responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default(),
            );
            keys = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
        }
        match keys.is_empty() {
            true => Ok(rows),
            false => Err(StoreError::Unavailable("reads left unprocessed".into())),
        }
    }

    /// A new listing's time `now`: the floor raised to it (so no move can
    /// still land at or before it), the threads older than the index
    /// indexed first if they are not yet.
    async fn snapshot(&self, pk: &str, now: u64) -> Result<u64, StoreError> {
        if !self.raise_floor(pk, now).await? {
            self.index_legacy(pk).await?;
            self.set_indexed(pk).await?;
        }
        Ok(now)
    }

    /// Raises the floor to `t` (a floor already at `t` or above stays):
    /// whether the threads older than the index are indexed.
    async fn raise_floor(&self, pk: &str, t: u64) -> Result<bool, StoreError> {
        let indexed = |row: Option<&Item>| {
            row.and_then(|r| r.get(INDEXED))
                .is_some_and(|v| *v == AttributeValue::Bool(true))
        };
        for attempt in 0..ATTEMPTS {
            let raised = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::key(pk.to_owned(), keys::LISTING_SK.to_owned())))
                .update_expression("SET #floor = :t")
                .condition_expression("attribute_not_exists(#floor) OR #floor < :t")
                .expression_attribute_names("#floor", FLOOR)
                .expression_attribute_values(":t", n(t))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match raised {
                Ok(out) => return Ok(indexed(out.attributes.as_ref())),
                // Already at `t` or above: writes at `t` or before are
                // refused as well.
                Err(e) if is_condition_failure(&e) => {
                    return Ok(indexed(self.listing_row(pk).await?.as_ref()));
                }
                Err(e) if is_conflict(&e) => back_off(attempt + 1).await,
                Err(e) => return Err(classify(e)),
            }
        }
        Err(StoreError::Unavailable("the listing floor is busy".into()))
    }

    /// Deletes every entry of `thread_id` (superseded ones included) and its
    /// pointer.
    pub(crate) async fn delete_activity(
        &self,
        pk: &str,
        thread_id: &str,
    ) -> Result<(), StoreError> {
        let mut keys = vec![keys::key(pk.to_owned(), keys::last_active_sk(thread_id))];
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :first AND :last")
                .filter_expression("#thread = :thread")
                .projection_expression("#pk, #sk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_names("#thread", THREAD)
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":first", s(keys::ACTIVITY_PREFIX))
                .expression_attribute_values(":last", s(format!("{}~", keys::ACTIVITY_PREFIX)))
                .expression_attribute_values(":thread", s(thread_id))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            keys.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => break,
            }
        }
        self.delete_keys(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_activity_comes_after_the_threads_and_above_the_floor() {
        assert_eq!(next_at(100, None, None), 100);
        assert_eq!(next_at(100, Some(100), None), 101);
        assert_eq!(next_at(100, Some(50), Some(200)), 201);
        assert_eq!(next_at(100, Some(300), Some(200)), 301);
        assert_eq!(next_at(100, Some(10), Some(20)), 100);
    }

    #[test]
    fn a_move_swaps_the_pointer_on_its_old_value_and_checks_the_floor_last() {
        let writes = move_writes("t", "USER#u", "thr_1", 2_000, Some(1_000)).unwrap();
        assert_eq!(writes.len(), 4);
        let pointer = writes[0].put().unwrap();
        assert_eq!(pointer.item()["sk"], s("LASTACTIVE#thr_1"));
        assert_eq!(pointer.item()[AT], n(2_000));
        assert_eq!(pointer.condition_expression(), Some("#at = :previous"));
        assert_eq!(
            pointer.expression_attribute_values().unwrap()[":previous"],
            n(1_000)
        );
        let entry = writes[1].put().unwrap();
        assert_eq!(entry.item()["sk"], s("ACTIVITY#0000000002000#thr_1"));
        assert_eq!(entry.item()[THREAD], s("thr_1"));
        let old = writes[2].update().unwrap();
        assert_eq!(old.key()["sk"], s("ACTIVITY#0000000001000#thr_1"));
        let values = old.expression_attribute_values().unwrap();
        assert_eq!(values[":at"], n(2_000));
        assert_eq!(values[":expiry"], n(2 + RETENTION_SECS));
        let floor = writes[3].condition_check().unwrap();
        assert_eq!(floor.key()["sk"], s("LISTING#THREADS"));
        assert_eq!(
            floor.expression_attribute_values().unwrap()[":at"],
            n(2_000)
        );
    }

    #[test]
    fn a_first_move_needs_no_pointer_and_supersedes_nothing() {
        let writes = move_writes("t", "USER#u", "thr_1", 2_000, None).unwrap();
        assert_eq!(writes.len(), 3);
        assert_eq!(
            writes[0].put().unwrap().condition_expression(),
            Some("attribute_not_exists(#pk)")
        );
        assert!(writes[2].condition_check().is_some());
    }

    #[test]
    fn only_an_ongoing_transaction_is_a_conflict() {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        let failure = |code: &str| -> SdkError<UpdateItemError, ()> {
            let meta = ErrorMetadata::builder().code(code).build();
            SdkError::service_error(UpdateItemError::generic(meta), ())
        };
        assert!(is_conflict(&failure("TransactionConflictException")));
        assert!(!is_conflict(&failure("ConditionalCheckFailedException")));
        assert!(!is_conflict(
            &SdkError::<UpdateItemError, ()>::timeout_error("slow")
        ));
    }

    #[test]
    fn an_entry_reads_its_time_and_thread_from_its_key() {
        let row = keys::key("USER#u".into(), keys::activity_sk(42, "thr_a#b"));
        assert_eq!(entry_of(&row), Some((42, "thr_a#b".into())));
        let other = keys::key("USER#u".into(), "THREAD#thr_1".into());
        assert_eq!(entry_of(&other), None);
    }

    fn meta(id: &str) -> ThreadMetadata {
        ThreadMetadata {
            id: id.into(),
            title: None,
            created_at: "2026-03-07T10:00:00Z".parse().unwrap(),
            status: taskpilot_chatkit::types::ThreadStatus::Active,
            metadata: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_page_with_more_names_its_last_thread_in_its_cursor() {
        let found = vec![(3, meta("a")), (2, meta("b")), (1, meta("c"))];
        let page = page_of(found, 2, 9);
        assert_eq!(
            page.data.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(page.has_more);
        let cursor = Cursor {
            snapshot: 9,
            at: 2,
            thread: "b".into(),
        };
        assert_eq!(page.after, Some(cursor.encode()));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let page = page_of(vec![(3, meta("a"))], 2, 9);
        assert_eq!((page.has_more, page.after), (false, None));
        // Exactly a page's worth left: the last page too.
        let page = page_of(vec![(3, meta("a")), (2, meta("b"))], 2, 9);
        assert_eq!(
            (page.has_more, page.after, page.data.len()),
            (false, None, 2)
        );
    }

    #[test]
    fn a_number_attribute_is_read_only_when_it_is_one() {
        let mut row = Item::new();
        row.insert(AT.into(), n(42));
        row.insert(THREAD.into(), s("thr_1"));
        row.insert("bad".into(), AttributeValue::N("x".into()));
        assert_eq!(number(&row, AT), Some(42));
        assert_eq!(number(&row, THREAD), None);
        assert_eq!(number(&row, "bad"), None);
        assert_eq!(number(&row, "missing"), None);
    }

    #[test]
    fn waits_double_up_to_a_cap_with_up_to_fifteen_sixteenths_of_jitter() {
        let ms = |attempt, noise| delay(attempt, noise).as_millis();
        assert_eq!(ms(1, 0), 16);
        assert_eq!(ms(2, 0), 32);
        assert_eq!(ms(5, 0), 256);
        assert_eq!(ms(9, 0), 256);
        assert_eq!(ms(1, 15), 16 + 15);
        assert_eq!(ms(1, 16), 16);
        assert_eq!(ms(2, 8), 32 + 16);
        assert_eq!(ms(0, 31), 8 + 7);
    }
}

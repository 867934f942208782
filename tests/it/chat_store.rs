//! The ChatKit thread store on DynamoDB Local.
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Map;
use taskpilot_chatkit::attachments::{AttachmentRecord, AttachmentStatus};
use taskpilot_chatkit::ids;
use taskpilot_chatkit::request::{Order, Paging};
use taskpilot_chatkit::store::{ChatStore, MessageThread, Write};
use taskpilot_chatkit::types::{
    AssistantContent, InferenceOptions, ItemKind, Page, ThreadItem, ThreadMetadata, ThreadStatus,
    UserContent,
};
use taskpilot_domain::UserId;
use taskpilot_store::DynamoStore;
use taskpilot_testkit::stack::fresh_table;

async fn store() -> DynamoStore {
    store_and_table().await.0
}

/// Every row of Alice's partition.
async fn alices_rows(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("USER#alice".into()),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

/// Every row of Alice's partition but her listing row (`LISTING#THREADS`,
/// the user's, not a thread's).
async fn alices_thread_rows(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut rows = alices_rows(client, table).await;
    rows.retain(|r| r["sk"].as_s().unwrap() != "LISTING#THREADS");
    rows
}

/// A store on a fresh table, and a raw client and the table's name to look
/// at its rows.
async fn store_and_table() -> (DynamoStore, aws_sdk_dynamodb::Client, String) {
    let (client, table, _) = fresh_table("chat").await.unwrap();
    (
        DynamoStore::new(client.clone(), table.clone()),
        client,
        table,
    )
}

fn thread() -> ThreadMetadata {
    ThreadMetadata {
        id: ids::thread(),
        title: None,
        created_at: taskpilot_domain::timestamp::now(),
        status: ThreadStatus::Active,
        metadata: Map::new(),
    }
}

fn message(thread_id: &str, text: &str) -> ThreadItem {
    ThreadItem {
        id: ids::message(),
        thread_id: thread_id.into(),
        created_at: taskpilot_domain::timestamp::now(),
        kind: ItemKind::AssistantMessage {
            content: vec![AssistantContent::OutputText {
                text: text.into(),
                annotations: vec![],
            }],
        },
    }
}

fn paging(limit: usize, order: Order, after: Option<String>) -> Paging {
    Paging {
        limit,
        order,
        after,
    }
}

#[tokio::test]
async fn threads_and_items_page_in_both_orders_exactly_once() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    let items: Vec<ThreadItem> = (0..23).map(|i| message(&t.id, &format!("m{i}"))).collect();
    for item in &items {
        store.save_item(&alice, item).await.unwrap();
    }
    for order in [Order::Asc, Order::Desc] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_items(&alice, &t.id, &paging(5, order, after.clone()))
                .await
                .unwrap();
            assert!(page.data.len() <= 5);
            seen.extend(page.data.iter().map(|i| i.id.clone()));
            assert_eq!(page.has_more, page.after.is_some());
            if !page.has_more {
                break;
            }
            after = page.after;
        }
        let mut expected: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        if order == Order::Desc {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order:?}");
    }
    // Another user sees nothing of it.
    let bob = UserId::new("bob").unwrap();
    assert!(store.load_thread(&bob, &t.id).await.unwrap().is_none());
    assert!(
        store
            .list_items(&bob, &t.id, &paging(50, Order::Asc, None))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert_eq!(
        store.delete_thread(&bob, &t.id).await.unwrap(),
        Write::Refused
    );
    assert_eq!(
        store.load_item(&alice, &t.id, &items[3].id).await.unwrap(),
        Some(items[3].clone())
    );

    // Threads list newest first by default; metadata round-trips.
    let mut second = thread();
    second.title = Some("Groceries".into());
    second
        .metadata
        .insert("previous_response_id".into(), "resp_1".into());
    store.save_thread(&alice, &second).await.unwrap();
    let listed = store
        .list_threads(&alice, &paging(10, Order::Desc, None))
        .await
        .unwrap();
    assert_eq!(listed.data, vec![second.clone(), t.clone()]);
    let first_page = store
        .list_threads(&alice, &paging(1, Order::Asc, None))
        .await
        .unwrap();
    assert_eq!(
        (first_page.data[0].id.as_str(), first_page.has_more),
        (t.id.as_str(), true)
    );

    // Deleting a thread deletes every item (more than one batch of 25).
    for i in 0..40 {
        store
            .save_item(&alice, &message(&t.id, &format!("extra{i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        store.delete_thread(&alice, &t.id).await.unwrap(),
        Write::Done
    );
    assert!(store.load_thread(&alice, &t.id).await.unwrap().is_none());
    assert!(
        store
            .list_items(&alice, &t.id, &paging(100, Order::Asc, None))
            .await
            .unwrap()
            .data
            .is_empty()
    );
    assert_eq!(
        store
            .list_threads(&alice, &paging(10, Order::Desc, None))
            .await
            .unwrap()
            .data,
        vec![second]
    );
}

#[tokio::test]
async fn one_read_returns_the_thread_and_its_latest_items() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let mut t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    let items: Vec<ThreadItem> = (0..7).map(|i| message(&t.id, &format!("m{i}"))).collect();
    for item in &items {
        store.save_item(&alice, item).await.unwrap();
    }
    let recent = store
        .load_recent(&alice, &t.id, 5, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent.thread, t);
    assert_eq!(
        recent.items,
        items[2..].to_vec(),
        "the latest 5, oldest first"
    );
    // A title change reaches the copy the turn reads.
    t.title = Some("Renamed".into());
    store.save_thread(&alice, &t).await.unwrap();
    let recent = store
        .load_recent(&alice, &t.id, 40, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent.thread.title.as_deref(), Some("Renamed"));
    assert_eq!(recent.items, items);
    // Other users and unknown threads: nothing.
    let bob = UserId::new("bob").unwrap();
    assert!(
        store
            .load_recent(&bob, &t.id, 5, false)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .load_recent(&alice, "thr_nope", 5, false)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn threads_saved_before_heads_existed_still_load() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    // As the previous release stored it: only `THREAD#<id>`, no head.
    client
        .put_item()
        .table_name(&table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("USER#alice".into()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("THREAD#{}", t.id)),
        )
        .item(
            "data",
            aws_sdk_dynamodb::types::AttributeValue::S(serde_json::to_string(&t).unwrap()),
        )
        .send()
        .await
        .unwrap();
    let items: Vec<ThreadItem> = (0..3).map(|i| message(&t.id, &format!("m{i}"))).collect();
    for item in &items {
        store.save_item(&alice, item).await.unwrap();
    }
    let recent = store
        .load_recent(&alice, &t.id, 2, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent.thread, t);
    assert_eq!(recent.items, items[1..].to_vec());
}

#[tokio::test]
async fn items_are_deleted_in_one_batch_and_absent_ones_are_ignored() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    let items: Vec<ThreadItem> = (0..30).map(|i| message(&t.id, &format!("m{i}"))).collect();
    for item in &items {
        store.save_item(&alice, item).await.unwrap();
    }
    let mut doomed: Vec<String> = items[1..].iter().map(|i| i.id.clone()).collect();
    doomed.push(ids::message());
    store.delete_items(&alice, &t.id, &doomed).await.unwrap();
    let recent = store
        .load_recent(&alice, &t.id, 40, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent.items, items[..1].to_vec());
    assert_eq!(recent.thread, t, "the head stays");
}

#[tokio::test]
async fn ratings_replace_each_other_stay_out_of_item_reads_and_go_with_the_thread() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use taskpilot_chatkit::request::FeedbackKind;
    use taskpilot_chatkit::store::Feedback;

    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    let items: Vec<ThreadItem> = (0..30).map(|i| message(&t.id, &format!("m{i}"))).collect();
    for item in &items {
        store.save_item(&alice, item).await.unwrap();
    }
    let rate = |item: &ThreadItem, kind| Feedback {
        thread_id: t.id.clone(),
        item_id: item.id.clone(),
        kind,
        at: taskpilot_domain::timestamp::now(),
    };
    // More than one BatchWriteItem's worth, then one item rated again.
    let all: Vec<Feedback> = items
        .iter()
        .map(|i| rate(i, FeedbackKind::Positive))
        .collect();
    store.save_feedback(&alice, &all).await.unwrap();
    store
        .save_feedback(&alice, &[rate(&items[3], FeedbackKind::Negative)])
        .await
        .unwrap();
    let rows = |prefix: &'static str| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":pk", AttributeValue::S("USER#alice".into()))
                .expression_attribute_values(":p", AttributeValue::S(prefix.into()))
                .send()
                .await
                .unwrap()
                .items
                .unwrap_or_default()
        }
    };
    let ratings = rows("FEEDBACK#").await;
    assert_eq!(ratings.len(), 30);
    let negative: Vec<&str> = ratings
        .iter()
        .filter(|r| r["data"].as_s().unwrap().contains("\"negative\""))
        .map(|r| r["sk"].as_s().unwrap().as_str())
        .collect();
    assert_eq!(negative, [format!("FEEDBACK#{}#{}", t.id, items[3].id)]);
    // Item reads never see them.
    let recent = store
        .load_recent(&alice, &t.id, 40, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent.thread, t);
    assert_eq!(recent.items.len(), 30);
    let page = store
        .list_items(&alice, &t.id, &paging(100, Order::Desc, None))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 30);
    // Deleting the thread deletes its ratings.
    assert_eq!(
        store.delete_thread(&alice, &t.id).await.unwrap(),
        Write::Done
    );
    assert!(rows("FEEDBACK#").await.is_empty());
    assert!(rows("ITEM#").await.is_empty());
}

#[tokio::test]
async fn pages_read_past_dynamodbs_one_megabyte_stop() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    // 40 items of 60 KB: a Query stops after about 16 of them.
    let items: Vec<ThreadItem> = (0..40)
        .map(|i| message(&t.id, &format!("{i:02}{}", "x".repeat(60_000))))
        .collect();
    for item in &items {
        assert_eq!(store.save_item(&alice, item).await.unwrap(), Write::Done);
    }
    let all = store
        .list_items(&alice, &t.id, &paging(100, Order::Asc, None))
        .await
        .unwrap();
    assert_eq!(all.data.len(), 40);
    assert!(!all.has_more);
    let first = store
        .list_items(&alice, &t.id, &paging(30, Order::Desc, None))
        .await
        .unwrap();
    assert_eq!((first.data.len(), first.has_more), (30, true));
    let rest = store
        .list_items(&alice, &t.id, &paging(30, Order::Desc, first.after.clone()))
        .await
        .unwrap();
    assert_eq!((rest.data.len(), rest.has_more), (10, false));
    let ids: Vec<&str> = first
        .data
        .iter()
        .chain(&rest.data)
        .map(|i| i.id.as_str())
        .collect();
    let mut expected: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    expected.reverse();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn nothing_is_written_into_a_thread_that_is_gone_or_going() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    assert_eq!(
        store
            .save_item(&alice, &message(&t.id, "one"))
            .await
            .unwrap(),
        Write::Done
    );
    // An automatic title only lands on an untitled thread; a rename always.
    let mut titled = t.clone();
    titled.title = Some("Auto".into());
    assert_eq!(
        store.update_thread(&alice, &titled, true).await.unwrap(),
        Write::Done
    );
    titled.title = Some("Again".into());
    assert_eq!(
        store.update_thread(&alice, &titled, true).await.unwrap(),
        Write::Refused
    );
    titled.title = Some("Mine".into());
    assert_eq!(
        store.update_thread(&alice, &titled, false).await.unwrap(),
        Write::Done
    );
    let recent = store
        .load_recent(&alice, &t.id, 40, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        recent.thread.title.as_deref(),
        Some("Mine"),
        "the head follows"
    );

    // A deletion that stopped after its first step (the mark): the thread is
    // already gone for reads and writes, and a second delete finishes it.
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("USER#alice".into()))
        .key("sk", AttributeValue::S(format!("THREAD#{}", t.id)))
        .update_expression("SET deleting = :y")
        .expression_attribute_values(":y", AttributeValue::Bool(true))
        .send()
        .await
        .unwrap();
    assert!(store.load_thread(&alice, &t.id).await.unwrap().is_none());
    let listed = store
        .list_threads(&alice, &Paging::default())
        .await
        .unwrap();
    assert!(listed.data.is_empty());
    assert_eq!(
        store
            .save_item(&alice, &message(&t.id, "late"))
            .await
            .unwrap(),
        Write::Refused
    );
    assert_eq!(
        store.update_thread(&alice, &titled, false).await.unwrap(),
        Write::Refused
    );
    assert_eq!(
        store.delete_thread(&alice, &t.id).await.unwrap(),
        Write::Done
    );
    let left = alices_thread_rows(&client, &table).await;
    assert!(left.is_empty(), "{left:?}");
    // Gone for good: nothing can be written into it, nothing deleted twice.
    assert_eq!(
        store
            .save_item(&alice, &message(&t.id, "later"))
            .await
            .unwrap(),
        Write::Refused
    );
    assert_eq!(
        store.delete_thread(&alice, &t.id).await.unwrap(),
        Write::Refused
    );
}

#[tokio::test]
async fn a_fenced_item_is_gone_and_stays_gone() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    store.save_thread(&alice, &t).await.unwrap();
    let kept = message(&t.id, "kept");
    let failed = message(&t.id, "its write timed out but landed");
    assert_eq!(store.save_item(&alice, &kept).await.unwrap(), Write::Done);
    assert_eq!(store.save_item(&alice, &failed).await.unwrap(), Write::Done);
    store.fence_item(&alice, &t.id, &failed.id).await.unwrap();
    assert_eq!(
        store.load_item(&alice, &t.id, &failed.id).await.unwrap(),
        None
    );
    let recent = store
        .load_recent(&alice, &t.id, 40, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recent.items, vec![kept.clone()]);
    let page = store
        .list_items(&alice, &t.id, &paging(10, Order::Asc, None))
        .await
        .unwrap();
    assert_eq!(page.data, vec![kept.clone()]);
    // The write arriving later still is refused.
    assert_eq!(
        store.save_item(&alice, &failed).await.unwrap(),
        Write::Refused
    );
    assert_eq!(
        store.load_item(&alice, &t.id, &failed.id).await.unwrap(),
        None
    );
    // Fencing in a thread that is gone writes nothing.
    assert_eq!(
        store.delete_thread(&alice, &t.id).await.unwrap(),
        Write::Done
    );
    store.fence_item(&alice, &t.id, &kept.id).await.unwrap();
    let left = alices_rows(&client, &table).await;
    assert!(left.is_empty(), "{left:?}");
}

// The activity index: threads listed by latest activity.

/// A new message of the user in `thread_id`.
fn said(thread_id: &str, text: &str) -> ThreadItem {
    ThreadItem::new(
        ids::message(),
        thread_id,
        ItemKind::UserMessage {
            content: vec![UserContent::InputText { text: text.into() }],
            attachments: vec![],
            quoted_text: None,
            inference_options: InferenceOptions::default(),
        },
    )
}

/// The ids of a page's threads.
fn ids_of(page: &Page<ThreadMetadata>) -> Vec<String> {
    page.data.iter().map(|t| t.id.clone()).collect()
}

/// The ids of `user`'s threads, in one listing of pages of `limit`.
async fn listing(store: &DynamoStore, user: &UserId, order: Order, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_threads(user, &paging(limit, order, after))
            .await
            .unwrap();
        assert!(page.data.len() <= limit);
        all.extend(ids_of(&page));
        match (page.has_more, page.after) {
            (true, Some(next)) => after = Some(next),
            (false, None) => return all,
            other => panic!("has_more and after disagree: {other:?}"),
        }
    }
}

/// `n` threads of `user`, each with a first message, oldest first.
async fn threads(store: &DynamoStore, user: &UserId, n: usize) -> Vec<String> {
    let mut made = Vec::new();
    for i in 0..n {
        let t = thread();
        store.save_thread(user, &t).await.unwrap();
        let first = said(&t.id, &format!("first {i}"));
        assert_eq!(store.save_item(user, &first).await.unwrap(), Write::Done);
        made.push(t.id);
    }
    made
}

fn reversed(ids: &[String]) -> Vec<String> {
    ids.iter().rev().cloned().collect()
}

/// Alice's rows whose sort key starts with `prefix`.
async fn rows_under(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let mut rows = alices_rows(client, table).await;
    rows.retain(|r| r["sk"].as_s().unwrap().starts_with(prefix));
    rows
}

#[tokio::test]
async fn threads_list_by_latest_activity_both_ways() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 3).await;
    assert_eq!(
        listing(&store, &alice, Order::Desc, 10).await,
        reversed(&made)
    );
    assert_eq!(listing(&store, &alice, Order::Asc, 10).await, made);

    // A new message moves the oldest thread to the top (desc) / bottom (asc).
    store
        .save_item(&alice, &said(&made[0], "again"))
        .await
        .unwrap();
    let moved = vec![made[0].clone(), made[2].clone(), made[1].clone()];
    assert_eq!(listing(&store, &alice, Order::Desc, 10).await, moved);
    assert_eq!(
        listing(&store, &alice, Order::Asc, 2).await,
        reversed(&moved)
    );

    // The assistant's answers, a rename and a rewritten message (an
    // attachment deleted) keep the threads' places.
    store
        .save_item(&alice, &message(&made[1], "an answer"))
        .await
        .unwrap();
    let mut renamed = store.load_thread(&alice, &made[1]).await.unwrap().unwrap();
    renamed.title = Some("Renamed".into());
    assert_eq!(
        store.update_thread(&alice, &renamed, false).await.unwrap(),
        Write::Done
    );
    let first = store
        .list_items(&alice, &made[2], &paging(1, Order::Asc, None))
        .await
        .unwrap();
    assert_eq!(
        store.save_item(&alice, &first.data[0]).await.unwrap(),
        Write::Done
    );
    let page = store
        .list_threads(&alice, &paging(10, Order::Desc, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&page), moved);
    assert_eq!(page.data[2].title.as_deref(), Some("Renamed"));

    // One live entry per thread; each move left a superseded one that expires.
    let entries = rows_under(&client, &table, "ACTIVITY#").await;
    let live: Vec<_> = entries
        .iter()
        .filter(|r| !r.contains_key("superseded"))
        .collect();
    assert_eq!(live.len(), 3, "{entries:?}");
    // Each thread: its creation and first message, made[0] one more.
    assert_eq!(entries.len(), 3 + 3 + 1, "{entries:?}");
    for old in entries.iter().filter(|r| r.contains_key("superseded")) {
        let at: u64 = old["superseded"].as_n().unwrap().parse().unwrap();
        let ttl: u64 = old["ttl"].as_n().unwrap().parse().unwrap();
        assert_eq!(ttl, at / 1_000 + 86_400, "{old:?}");
    }
}

#[tokio::test]
async fn a_thread_moved_between_pages_is_neither_skipped_nor_repeated() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 5).await;
    let next = |after: Option<String>, order| {
        let store = &store;
        let alice = &alice;
        async move {
            store
                .list_threads(alice, &paging(2, order, after))
                .await
                .unwrap()
        }
    };

    // Newest first: the bottom thread moves to the top after page 1 and a
    // shown one moves again; a new thread comes: this listing is as of its
    // first page.
    let one = next(None, Order::Desc).await;
    assert_eq!(ids_of(&one), [made[4].clone(), made[3].clone()]);
    store
        .save_item(&alice, &said(&made[0], "up"))
        .await
        .unwrap();
    store
        .save_item(&alice, &said(&made[3], "up"))
        .await
        .unwrap();
    let newer = threads(&store, &alice, 1).await;
    let two = next(one.after.clone(), Order::Desc).await;
    assert_eq!(ids_of(&two), [made[2].clone(), made[1].clone()]);
    store
        .save_item(&alice, &said(&made[1], "up"))
        .await
        .unwrap();
    let three = next(two.after.clone(), Order::Desc).await;
    assert_eq!(ids_of(&three), [made[0].clone()]);
    assert!(!three.has_more);
    // A new listing sees the moves.
    assert_eq!(
        listing(&store, &alice, Order::Desc, 2).await,
        [&made[1], &newer[0], &made[3], &made[0], &made[4], &made[2]]
            .map(String::clone)
            .to_vec()
    );

    // Oldest first: a shown thread moves to where the listing is going, an
    // unseen one to where it has been.
    let one = next(None, Order::Asc).await;
    assert_eq!(ids_of(&one), [made[2].clone(), made[4].clone()]);
    store
        .save_item(&alice, &said(&made[2], "up"))
        .await
        .unwrap();
    store
        .save_item(&alice, &said(&made[0], "up"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let mut after = one.after;
    while let Some(cursor) = after {
        let page = next(Some(cursor), Order::Asc).await;
        rest.extend(ids_of(&page));
        after = page.after;
    }
    assert_eq!(
        rest,
        [&made[0], &made[3], &newer[0], &made[1]]
            .map(String::clone)
            .to_vec()
    );

    // A thread deleted meanwhile is just not shown; the listing goes on
    // from the place of its last thread, deleted too.
    let one = next(None, Order::Desc).await;
    assert_eq!(ids_of(&one), [made[0].clone(), made[2].clone()]);
    for gone in [&made[1], &made[2]] {
        assert_eq!(
            store.delete_thread(&alice, gone).await.unwrap(),
            Write::Done
        );
    }
    let two = next(one.after, Order::Desc).await;
    assert_eq!(ids_of(&two), [newer[0].clone(), made[3].clone()]);
}

#[tokio::test]
async fn a_page_is_full_behind_many_superseded_entries() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 3).await;
    // 120 superseded entries of made[1] above the other two.
    for i in 0..120 {
        store
            .save_item(&alice, &said(&made[1], &format!("more {i}")))
            .await
            .unwrap();
    }
    let page = store
        .list_threads(&alice, &paging(2, Order::Desc, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&page), [made[1].clone(), made[2].clone()]);
    assert!(page.has_more);
    assert_eq!(
        listing(&store, &alice, Order::Desc, 1).await,
        [&made[1], &made[2], &made[0]].map(String::clone).to_vec()
    );
    assert_eq!(
        listing(&store, &alice, Order::Asc, 1).await,
        [&made[0], &made[2], &made[1]].map(String::clone).to_vec()
    );
}

#[tokio::test]
async fn concurrent_messages_move_each_thread_once() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 4).await;
    // Two messages into each thread at once (the same thread's race for its
    // pointer, the other threads' for the floor), with listings between.
    let writes = made.iter().flat_map(|id| [said(id, "a"), said(id, "b")]);
    let saves = writes.map(|item| {
        let store = store.clone();
        let alice = alice.clone();
        tokio::spawn(async move { store.save_item(&alice, &item).await.unwrap() })
    });
    let lists = (0..4).map(|_| {
        let store = store.clone();
        let alice = alice.clone();
        tokio::spawn(async move { listing(&store, &alice, Order::Desc, 3).await })
    });
    let saves: Vec<_> = saves.collect();
    let lists: Vec<_> = lists.collect();
    for save in saves {
        assert_eq!(save.await.unwrap(), Write::Done);
    }
    let mut expected = made.clone();
    expected.sort();
    for list in lists {
        let mut listed = list.await.unwrap();
        listed.sort();
        assert_eq!(listed, expected);
    }
    let entries = rows_under(&client, &table, "ACTIVITY#").await;
    let live = entries
        .iter()
        .filter(|r| !r.contains_key("superseded"))
        .count();
    assert_eq!((live, entries.len()), (4, 4 * 4), "{entries:?}");
}

#[tokio::test]
async fn a_move_lands_above_the_listing_floor() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 2).await;
    store
        .list_threads(&alice, &Paging::default())
        .await
        .unwrap();
    // A listing whose clock is 5 s ahead took its snapshot: a move at the
    // writer's own time would land inside it.
    let floor = taskpilot_domain::timestamp::now().timestamp_millis() + 5_000;
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("USER#alice".into()))
        .key("sk", AttributeValue::S("LISTING#THREADS".into()))
        .update_expression("SET #floor = :f")
        .expression_attribute_names("#floor", "floor")
        .expression_attribute_values(":f", AttributeValue::N(floor.to_string()))
        .send()
        .await
        .unwrap();
    store
        .save_item(&alice, &said(&made[0], "now"))
        .await
        .unwrap();
    let pointer = rows_under(&client, &table, &format!("LASTACTIVE#{}", made[0])).await;
    let at: i64 = pointer[0]["at"].as_n().unwrap().parse().unwrap();
    assert_eq!(at, floor + 1);
    let created = thread();
    store.save_thread(&alice, &created).await.unwrap();
    let pointer = rows_under(&client, &table, &format!("LASTACTIVE#{}", created.id)).await;
    let at: i64 = pointer[0]["at"].as_n().unwrap().parse().unwrap();
    assert!(at > floor, "{at} > {floor}");
}

#[tokio::test]
async fn deleting_a_thread_removes_its_index_entries() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 2).await;
    for i in 0..3 {
        store
            .save_item(&alice, &said(&made[0], &format!("more {i}")))
            .await
            .unwrap();
    }
    let of = |id: &str| {
        let id = id.to_owned();
        move |r: &std::collections::HashMap<String, AttributeValue>| {
            r["sk"].as_s().unwrap().ends_with(&id)
        }
    };
    let before = rows_under(&client, &table, "ACTIVITY#").await;
    assert_eq!(before.iter().filter(|r| of(&made[0])(r)).count(), 5);
    assert_eq!(
        store.delete_thread(&alice, &made[0]).await.unwrap(),
        Write::Done
    );
    let entries = rows_under(&client, &table, "ACTIVITY#").await;
    assert!(!entries.iter().any(of(&made[0])), "{entries:?}");
    assert_eq!(entries.len(), 2, "the other thread's stay: {entries:?}");
    let pointers = rows_under(&client, &table, "LASTACTIVE#").await;
    assert_eq!(pointers.len(), 1);
    assert!(of(&made[1])(&pointers[0]));
    assert_eq!(
        listing(&store, &alice, Order::Desc, 10).await,
        [made[1].clone()]
    );
}

/// Writes a thread as the store wrote it before the activity index: its
/// record and its head, no entry.
async fn legacy_thread(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    created_at: &str,
) -> ThreadMetadata {
    let mut t = thread();
    t.created_at = created_at.parse().unwrap();
    let json = serde_json::to_string(&t).unwrap();
    for sk in [format!("THREAD#{}", t.id), format!("ITEM#{}#~", t.id)] {
        client
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S("USER#alice".into()))
            .item("sk", AttributeValue::S(sk))
            .item("data", AttributeValue::S(json.clone()))
            .send()
            .await
            .unwrap();
    }
    t
}

#[tokio::test]
async fn threads_stored_before_the_index_are_listed_once_and_move_on_their_next_message() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let old = legacy_thread(&client, &table, "2026-01-02T10:00:00Z").await;
    let older = legacy_thread(&client, &table, "2026-01-01T10:00:00Z").await;
    let going = legacy_thread(&client, &table, "2026-01-03T10:00:00Z").await;
    client
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("USER#alice".into()))
        .key("sk", AttributeValue::S(format!("THREAD#{}", going.id)))
        .update_expression("SET deleting = :y")
        .expression_attribute_values(":y", AttributeValue::Bool(true))
        .send()
        .await
        .unwrap();
    // One continued before any listing: indexed by its message.
    let continued = legacy_thread(&client, &table, "2025-12-31T10:00:00Z").await;
    store
        .save_item(&alice, &said(&continued.id, "back"))
        .await
        .unwrap();
    let new = threads(&store, &alice, 1).await;

    // By creation time, below what moved since; each once, in both orders
    // and across pages; the thread being deleted not at all.
    let expected = [&new[0], &continued.id, &old.id, &older.id]
        .map(String::clone)
        .to_vec();
    assert_eq!(listing(&store, &alice, Order::Desc, 1).await, expected);
    assert_eq!(
        listing(&store, &alice, Order::Asc, 3).await,
        reversed(&expected)
    );
    assert_eq!(listing(&store, &alice, Order::Desc, 10).await, expected);
    let pointers = rows_under(&client, &table, "LASTACTIVE#").await;
    assert_eq!(pointers.len(), 4, "{pointers:?}");
    let entry = rows_under(&client, &table, "ACTIVITY#").await;
    let at = old.created_at.timestamp_millis();
    assert!(
        entry
            .iter()
            .any(|r| r["sk"].as_s().unwrap() == &format!("ACTIVITY#{at:013}#{}", old.id)),
        "{entry:?}"
    );

    // Its next message moves it to the top.
    store
        .save_item(&alice, &said(&older.id, "hello again"))
        .await
        .unwrap();
    assert_eq!(
        listing(&store, &alice, Order::Desc, 2).await,
        [&older.id, &new[0], &continued.id, &old.id]
            .map(String::clone)
            .to_vec()
    );
    assert_eq!(
        store.delete_thread(&alice, &older.id).await.unwrap(),
        Write::Done
    );
    assert!(
        !rows_under(&client, &table, "ACTIVITY#")
            .await
            .iter()
            .any(|r| r["sk"].as_s().unwrap().ends_with(&older.id))
    );
}

#[tokio::test]
async fn an_after_that_is_no_cursor_of_ours_starts_the_listing_over() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 3).await;
    // A thread id: the cursor of a page served before the activity index.
    let page = store
        .list_threads(&alice, &paging(2, Order::Desc, Some(made[1].clone())))
        .await
        .unwrap();
    assert_eq!(ids_of(&page), [made[2].clone(), made[1].clone()]);
    let cursor = page.after.unwrap();
    assert!(taskpilot_chatkit::ids::plausible(&cursor), "{cursor}");
    assert_ne!(
        cursor, made[1],
        "the cursor is the listing's, not a thread id"
    );
}

fn base36(mut v: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((v % 36) as u32, 36).unwrap());
        v /= 36;
        if v == 0 {
            return digits.iter().rev().collect();
        }
    }
}

#[tokio::test]
async fn a_listing_older_than_a_day_goes_on_from_its_place_with_a_new_snapshot() {
    let store = store().await;
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 3).await;
    let one = store
        .list_threads(&alice, &paging(1, Order::Desc, None))
        .await
        .unwrap();
    assert_eq!(ids_of(&one), [made[2].clone()]);
    store
        .save_item(&alice, &said(&made[0], "up"))
        .await
        .unwrap();
    // The listing as of its first page: made[0] where it was.
    let cursor = one.after.unwrap();
    let current = store
        .list_threads(&alice, &paging(5, Order::Desc, Some(cursor.clone())))
        .await
        .unwrap();
    assert_eq!(ids_of(&current), [made[1].clone(), made[0].clone()]);
    // The same cursor a day later (its superseded entries may be gone): on
    // from the same place, as things are now.
    let (snapshot, place) = cursor.split_once('-').unwrap();
    let day_before = u64::from_str_radix(snapshot, 36).unwrap() - 86_400_000;
    let stale = format!("{}-{place}", base36(day_before));
    let later = store
        .list_threads(&alice, &paging(5, Order::Desc, Some(stale)))
        .await
        .unwrap();
    assert_eq!(ids_of(&later), [made[1].clone()]);
}

// A new message's write: a new thread with it in one transaction, a stored
// thread's pointer handed back from the read before it.

/// Alice's activity entries: (all, live).
async fn entries(client: &aws_sdk_dynamodb::Client, table: &str) -> (usize, usize) {
    let rows = rows_under(client, table, "ACTIVITY#").await;
    let live = rows
        .iter()
        .filter(|r| !r.contains_key("superseded"))
        .count();
    (rows.len(), live)
}

/// The time in `thread_id`'s activity pointer.
async fn pointer_at(client: &aws_sdk_dynamodb::Client, table: &str, thread_id: &str) -> u64 {
    let rows = rows_under(client, table, &format!("LASTACTIVE#{thread_id}")).await;
    rows[0]["at"].as_n().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_new_thread_is_written_with_its_first_message_and_placed_once() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let t = thread();
    let first = said(&t.id, "first");
    let written = store
        .save_message(&alice, &t, &first, MessageThread::New)
        .await
        .unwrap();
    assert_eq!(written, Write::Done);
    let recent = store
        .load_recent(&alice, &t.id, 10, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((recent.thread, recent.items), (t.clone(), vec![first]));
    assert_eq!(recent.mark, Some(pointer_at(&client, &table, &t.id).await));
    assert_eq!(entries(&client, &table).await, (1, 1));
    assert_eq!(listing(&store, &alice, Order::Desc, 10).await, [t.id]);
}

#[tokio::test]
async fn a_message_moves_its_thread_with_the_mark_read_before_it_or_a_stale_one() {
    let (client, table, endpoint) = fresh_table("chat").await.unwrap();
    // The store under test talks through a proxy that counts its requests.
    let proxy = emulators::proxy::CountingProxy::start(&endpoint)
        .await
        .unwrap();
    let counted = emulators::aws::dynamodb_client(&proxy.endpoint).await;
    let store = DynamoStore::new(counted, table.clone());
    let alice = UserId::new("alice").unwrap();
    let made = threads(&store, &alice, 2).await;
    // A read for a turn that adds no message leaves the pointer alone.
    let before = proxy.counts();
    let read = store.load_recent(&alice, &made[0], 1, false).await;
    assert_eq!(read.unwrap().unwrap().mark, None);
    assert_eq!(sent_since(&proxy, &before), ["Query"]);
    let before = proxy.counts();
    let mark = store
        .load_recent(&alice, &made[0], 1, true)
        .await
        .unwrap()
        .unwrap()
        .mark;
    assert!(mark.is_some());
    assert_eq!(sent_since(&proxy, &before), ["GetItem", "Query"]);
    let t = store.load_thread(&alice, &made[0]).await.unwrap().unwrap();
    let known = MessageThread::Stored { mark };
    let before = proxy.counts();
    let written = store
        .save_message(&alice, &t, &said(&t.id, "a"), known)
        .await;
    assert_eq!(written.unwrap(), Write::Done);
    // The pointer is not read again: one transaction is the whole write.
    assert_eq!(sent_since(&proxy, &before), ["TransactWriteItems"]);
    assert_eq!(
        listing(&store, &alice, Order::Desc, 10).await,
        [made[0].clone(), made[1].clone()]
    );
    // The same mark again is stale now: the write reads the pointer and moves.
    let moved = pointer_at(&client, &table, &t.id).await;
    let before = proxy.counts();
    let written = store
        .save_message(&alice, &t, &said(&t.id, "b"), known)
        .await;
    assert_eq!(written.unwrap(), Write::Done);
    assert_eq!(
        sent_since(&proxy, &before),
        ["GetItem", "TransactWriteItems", "TransactWriteItems"]
    );
    assert!(pointer_at(&client, &table, &t.id).await > moved);
    // Two per thread made (its creation, its first message), one per move.
    assert_eq!(entries(&client, &table).await, (6, 2));
}

/// The operations `proxy` forwarded since it counted `before`, each once per
/// request, sorted.
fn sent_since(
    proxy: &emulators::proxy::CountingProxy,
    before: &std::collections::BTreeMap<String, usize>,
) -> Vec<String> {
    let mut sent = Vec::new();
    for (op, n) in proxy.counts() {
        let short = op.rsplit('.').next().unwrap_or(&op).to_owned();
        let new = n - before.get(&op).copied().unwrap_or(0);
        sent.extend(std::iter::repeat_n(short, new));
    }
    sent
}

#[tokio::test]
async fn a_new_thread_whose_attachment_is_taken_leaves_nothing() {
    let (store, client, table) = store_and_table().await;
    let alice = UserId::new("alice").unwrap();
    let taken = AttachmentRecord {
        id: "atc_taken".into(),
        name: "a.png".into(),
        mime_type: "image/png".into(),
        size: 10,
        image: true,
        status: AttachmentStatus::Attached,
        created_at: taskpilot_domain::timestamp::now(),
        thread_id: Some("thr_other".into()),
        item_id: Some("msg_other".into()),
    };
    store.save_attachment(&alice, &taken).await.unwrap();
    let t = thread();
    let mut first = said(&t.id, "look");
    if let ItemKind::UserMessage { attachments, .. } = &mut first.kind {
        attachments.push(taken.to_wire(None));
    }
    let written = store
        .save_message(&alice, &t, &first, MessageThread::New)
        .await
        .unwrap();
    assert_eq!(written, Write::AttachmentTaken);
    let rows = alices_thread_rows(&client, &table).await;
    let keys: Vec<&str> = rows
        .iter()
        .map(|r| r["sk"].as_s().unwrap().as_str())
        .collect();
    assert_eq!(keys, ["ATTACHMENT#atc_taken"], "{rows:?}");
}

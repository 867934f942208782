//! The ChatKit thread store on DynamoDB Local.
use serde_json::Map;
use taskpilot_chatkit::ids;
use taskpilot_chatkit::request::{Order, Paging};
use taskpilot_chatkit::store::{ChatStore, Write};
use taskpilot_chatkit::types::{
    AssistantContent, ItemKind, ThreadItem, ThreadMetadata, ThreadStatus,
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
    let recent = store.load_recent(&alice, &t.id, 5).await.unwrap().unwrap();
    assert_eq!(recent.thread, t);
    assert_eq!(
        recent.items,
        items[2..].to_vec(),
        "the latest 5, oldest first"
    );
    // A title change reaches the copy the turn reads.
    t.title = Some("Renamed".into());
    store.save_thread(&alice, &t).await.unwrap();
    let recent = store.load_recent(&alice, &t.id, 40).await.unwrap().unwrap();
    assert_eq!(recent.thread.title.as_deref(), Some("Renamed"));
    assert_eq!(recent.items, items);
    // Other users and unknown threads: nothing.
    let bob = UserId::new("bob").unwrap();
    assert!(store.load_recent(&bob, &t.id, 5).await.unwrap().is_none());
    assert!(
        store
            .load_recent(&alice, "thr_nope", 5)
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
    let recent = store.load_recent(&alice, &t.id, 2).await.unwrap().unwrap();
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
    let recent = store.load_recent(&alice, &t.id, 40).await.unwrap().unwrap();
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
    let recent = store.load_recent(&alice, &t.id, 40).await.unwrap().unwrap();
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
    use aws_sdk_dynamodb::types::AttributeValue;
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
    let recent = store.load_recent(&alice, &t.id, 40).await.unwrap().unwrap();
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
    let left = alices_rows(&client, &table).await;
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
    let recent = store.load_recent(&alice, &t.id, 40).await.unwrap().unwrap();
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

//! The DynamoDB adapter on its own, against DynamoDB Local.
use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use emulators::aws::dynamodb_client;
use emulators::proxy::{CountingProxy, ProxyFault};
use taskpilot_domain::{
    CursorCodec, DomainError, IdempotencyClaim, IdempotencyKey, InsertOutcome, NewTask, Priority,
    SearchText, Task, TaskChange, TaskFilter, TaskId, TaskRepository, TaskService, UserId,
};
use taskpilot_store::DynamoStore;
use taskpilot_testkit::stack::fresh_table;

const QUERY: &str = "DynamoDB_20120810.Query";
const GET_ITEM: &str = "DynamoDB_20120810.GetItem";

async fn store() -> DynamoStore {
    let (client, table, _) = fresh_table("store").await.unwrap();
    DynamoStore::new(client, table)
}

fn task(title: &str) -> Task {
    let now = taskpilot_domain::timestamp::now();
    Task {
        id: TaskId::generate(),
        title: title.into(),
        description: None,
        completed: false,
        priority: Priority::Medium,
        due_date: None,
        tags: vec![],
        created_at: now,
        updated_at: now,
        completed_at: None,
        version: 1,
    }
}

#[tokio::test]
async fn an_expired_idempotency_record_no_longer_counts() {
    let store = store().await;
    let user = UserId::new("alice").unwrap();
    let key = IdempotencyKey::parse("key-1").unwrap();
    let expired = IdempotencyClaim {
        key: key.clone(),
        fingerprint: "f1".into(),
        expires_at: chrono::Utc::now() - chrono::Duration::seconds(5),
    };
    let first = task("first");
    assert!(matches!(
        store.insert(&user, &first, Some(&expired)).await.unwrap(),
        InsertOutcome::Created
    ));
    // TTL has not swept the record yet, but it is past its expiry: a new create goes through.
    let live = IdempotencyClaim {
        expires_at: chrono::Utc::now() + chrono::Duration::hours(24),
        ..expired
    };
    let second = task("second");
    assert!(matches!(
        store.insert(&user, &second, Some(&live)).await.unwrap(),
        InsertOutcome::Created
    ));
    // And now the live record replays the second task.
    match store
        .insert(&user, &task("third"), Some(&live))
        .await
        .unwrap()
    {
        InsertOutcome::Replay { fingerprint, task } => {
            assert_eq!(fingerprint, "f1");
            assert_eq!(*task, second);
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(store.get(&user, &first.id).await.unwrap(), Some(first));
    assert!(
        store
            .get(&UserId::new("bob").unwrap(), &second.id)
            .await
            .unwrap()
            .is_none()
    );
}

/// A task service on a fresh table whose DynamoDB requests go through a
/// counting proxy, and a direct client to the same table.
struct Searchable {
    service: TaskService<DynamoStore>,
    proxy: CountingProxy,
    direct: aws_sdk_dynamodb::Client,
    table: String,
}

impl Searchable {
    async fn start() -> Self {
        let (direct, table, endpoint) = fresh_table("search").await.unwrap();
        let proxy = CountingProxy::start(&endpoint).await.unwrap();
        let store = DynamoStore::new(dynamodb_client(&proxy.endpoint).await, table.clone());
        let codec = CursorCodec::new(&[9u8; 32], chrono::Duration::hours(1)).unwrap();
        Self {
            service: TaskService::new(store, codec),
            proxy,
            direct,
            table,
        }
    }

    async fn create(&self, user: &UserId, title: &str, tags: &[&str]) -> Task {
        let new = NewTask {
            title: title.into(),
            description: Some("milk in the description is not searched".into()),
            completed: false,
            priority: Priority::Medium,
            due_date: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        };
        self.service.create(user, new, None).await.unwrap().task
    }

    /// Every page of a search, asserting one Query per page; the ids and the
    /// size of each page.
    async fn search_all(
        &self,
        user: &UserId,
        filter: TaskFilter,
        q: &str,
        limit: usize,
    ) -> (Vec<TaskId>, Vec<usize>) {
        let mut ids = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let before = self.proxy.count(QUERY);
            let page = self
                .service
                .list_matching(user, filter.clone(), search(q), limit, cursor.as_deref())
                .await
                .unwrap();
            assert_eq!(self.proxy.count(QUERY) - before, 1, "one Query per page");
            assert!(page.tasks.len() <= limit);
            sizes.push(page.tasks.len());
            for t in page.tasks {
                assert!(!ids.contains(&t.id), "{} twice", t.id);
                ids.push(t.id);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return (ids, sizes),
            }
        }
    }

    /// The ids a search finds.
    async fn find(&self, user: &UserId, q: &str) -> Vec<TaskId> {
        self.search_all(user, TaskFilter::default(), q, 100).await.0
    }

    /// The task's row as it is stored.
    async fn row(&self, user: &UserId, id: &TaskId) -> HashMap<String, AttributeValue> {
        self.direct
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("USER#{}", user.as_str())))
            .key("sk", AttributeValue::S(format!("TASK#{id}")))
            .send()
            .await
            .unwrap()
            .item
            .unwrap()
    }
}

fn search(q: &str) -> Option<SearchText> {
    Some(SearchText::parse(q).unwrap())
}

#[tokio::test]
async fn text_search_ignores_case_covers_tags_and_pages_one_query_at_a_time() {
    let db = Searchable::start().await;
    let alice = UserId::new("alice").unwrap();
    let bob = UserId::new("bob").unwrap();
    let bob_milk = db.create(&bob, "Bob's MILK", &["milk"]).await;
    // 240 tasks: every 20th has "milk" in its title (in three cases), every
    // 20th (offset 7) a tag containing "MILK"; the rest never match. More
    // rows than one filtered read covers (200), so some pages come back short.
    let mut expected = Vec::new();
    for i in 0..240 {
        let t = match (i % 20, i % 60) {
            (0, 0) => db.create(&alice, &format!("Buy MILK {i}"), &[]).await,
            (0, 20) => db.create(&alice, &format!("oat milk {i}"), &["home"]).await,
            (0, _) => db.create(&alice, &format!("Milkshake {i}"), &[]).await,
            (7, _) => {
                db.create(&alice, &format!("call {i}"), &["Buttermilk"])
                    .await
            }
            _ => db.create(&alice, &format!("task {i}"), &["filler"]).await,
        };
        if matches!(i % 20, 0 | 7) {
            expected.push(t);
        }
    }
    expected.reverse();
    let ids = |tasks: &[Task]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();

    for q in ["milk", "MILK", "  Milk  "] {
        let (found, sizes) = db.search_all(&alice, TaskFilter::default(), q, 5).await;
        assert_eq!(found, ids(&expected), "{q}: every match once, newest first");
        assert_eq!(sizes, [5, 5, 5, 5, 4], "{q}");
    }
    // Sparse matches: a page is one read of at most 200 rows, so the first
    // page holds the 3 matches among the newest 200 rows, and a cursor.
    let oat: Vec<TaskId> = expected
        .iter()
        .filter(|t| t.title.starts_with("oat milk"))
        .map(|t| t.id.clone())
        .collect();
    let (found, sizes) = db
        .search_all(&alice, TaskFilter::default(), "OAT MILK", 5)
        .await;
    assert_eq!((found, sizes), (oat, vec![3, 1]));
    assert!(!db.find(&alice, "milk").await.contains(&bob_milk.id));
    assert_eq!(db.find(&bob, "MiLk").await, vec![bob_milk.id.clone()]);
    assert_eq!(db.find(&alice, "BUTTERMILK").await.len(), 12, "tags");
    assert_eq!(db.find(&alice, "oat milk 80").await.len(), 1);
    assert!(db.find(&alice, "description").await.is_empty());
    // Text that looks like an expression is only text.
    for q in [
        ") OR contains(#pk, :pk",
        ":q",
        "#search_title",
        "' OR 1=1 --",
    ] {
        assert!(db.find(&alice, q).await.is_empty(), "{q}");
    }

    // Combined with the completed filter.
    for t in expected.iter().step_by(3) {
        db.service.set_completed(&alice, &t.id, true).await.unwrap();
    }
    let done = TaskFilter {
        completed: Some(true),
        ..TaskFilter::default()
    };
    let (found, _) = db.search_all(&alice, done, "milk", 3).await;
    assert_eq!(
        found,
        ids(&expected).into_iter().step_by(3).collect::<Vec<_>>()
    );

    // A cursor replayed with another query is refused.
    let first = db
        .service
        .list_matching(&alice, TaskFilter::default(), search("milk"), 5, None)
        .await
        .unwrap();
    let cursor = first.next_cursor.unwrap();
    for other in [search("milkshake"), None] {
        let replay = db
            .service
            .list_matching(&alice, TaskFilter::default(), other, 5, Some(&cursor))
            .await;
        assert!(matches!(replay, Err(DomainError::InvalidCursor)));
    }

    // Updates keep the folded text in step.
    let renamed = expected
        .iter()
        .find(|t| t.title.starts_with("Milkshake"))
        .unwrap();
    let patch = |title: Option<&str>, tags: Option<Vec<String>>| TaskChange {
        title: title.map(str::to_owned),
        tags,
        ..TaskChange::default()
    };
    db.service
        .update(
            &alice,
            &renamed.id,
            patch(Some("Water THE Plants"), None),
            None,
        )
        .await
        .unwrap();
    assert!(!db.find(&alice, "milk").await.contains(&renamed.id));
    assert_eq!(db.find(&alice, "the pl").await, vec![renamed.id.clone()]);
    let retagged = db.create(&alice, "plain", &[]).await;
    db.service
        .update(
            &alice,
            &retagged.id,
            patch(None, Some(vec!["Dairy".into()])),
            None,
        )
        .await
        .unwrap();
    assert_eq!(db.find(&alice, "DAIRY").await, vec![retagged.id.clone()]);
    db.service
        .update(&alice, &retagged.id, patch(None, Some(vec![])), None)
        .await
        .unwrap();
    assert!(db.find(&alice, "dairy").await.is_empty());
    assert!(
        !db.row(&alice, &retagged.id)
            .await
            .contains_key("search_tags")
    );
}

#[tokio::test]
async fn rows_written_before_search_match_when_the_case_agrees() {
    let db = Searchable::start().await;
    let alice = UserId::new("alice").unwrap();
    let legacy = db.create(&alice, "Legacy Milk", &["Farm"]).await;
    // What a row written before search existed looks like.
    db.direct
        .update_item()
        .table_name(&db.table)
        .key("pk", AttributeValue::S("USER#alice".into()))
        .key("sk", AttributeValue::S(format!("TASK#{}", legacy.id)))
        .update_expression("REMOVE search_title, search_tags")
        .send()
        .await
        .unwrap();
    let row = db.row(&alice, &legacy.id).await;
    assert!(!row.contains_key("search_title") && !row.contains_key("search_tags"));
    let id = vec![legacy.id.clone()];
    // The raw title contains the query as typed or lowercased; a tag equals it.
    for hit in ["Milk", "Legacy", "gacy Mi", "egacy", "Farm"] {
        assert_eq!(db.find(&alice, hit).await, id, "{hit}");
    }
    for miss in ["MILK", "legacy milk", "farm", "Far"] {
        assert!(db.find(&alice, miss).await.is_empty(), "{miss}");
    }
    // Its next title change writes the folded title; its tags stay as they were.
    db.service
        .update(
            &alice,
            &legacy.id,
            TaskChange {
                title: Some("Legacy Milk v2".into()),
                ..TaskChange::default()
            },
            None,
        )
        .await
        .unwrap();
    for hit in ["MILK", "legacy milk", "Farm"] {
        assert_eq!(db.find(&alice, hit).await, id, "{hit}");
    }
    assert!(db.find(&alice, "farm").await.is_empty());
}

/// The start-up warm-up makes one attempt and never holds init up: a failing
/// DynamoDB gets no retries, and one that never answers is given up on (the
/// test would hang otherwise). The budgets here are generous so that a busy
/// machine cannot fail the test; how long init waits is the bench's to measure.
#[tokio::test]
async fn the_warm_up_tries_once_and_gives_up_on_a_hanging_dynamodb() {
    let (_, table, endpoint) = fresh_table("warmup").await.unwrap();
    let proxy = CountingProxy::start(&endpoint).await.unwrap();
    // The client's own configuration retries (3 attempts, the SDK default).
    let store = DynamoStore::new(dynamodb_client(&proxy.endpoint).await, table);
    let generous = std::time::Duration::from_secs(20);

    store.warm_up_within(generous).await;
    assert_eq!(proxy.count(GET_ITEM), 1, "a healthy warm-up is one GetItem");

    proxy.set_fault(ProxyFault::Status(500));
    store.warm_up_within(generous).await;
    assert_eq!(proxy.count(GET_ITEM), 2, "a failed warm-up is not retried");

    proxy.set_fault(ProxyFault::Hang);
    store
        .warm_up_within(std::time::Duration::from_secs(2))
        .await;
    assert_eq!(proxy.count(GET_ITEM), 3, "one attempt, then given up");
}

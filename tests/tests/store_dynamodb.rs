//! The DynamoDB adapter on its own, against DynamoDB Local.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use taskpilot_domain::{
    IdempotencyClaim, IdempotencyKey, InsertOutcome, Priority, Task, TaskId, TaskRepository, UserId,
};
use taskpilot_store::DynamoStore;
use taskpilot_testkit::stack::fresh_table;

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

//! `local-stack data --user ID`: what the local stack keeps for one user, its
//! tasks and its chat threads, as JSON, read through the functions' own
//! DynamoDB adapter from the table kept under `.local/data/`.

use aws_sdk_dynamodb::Client;
use serde_json::{Value, json};
use taskpilot_chatkit::params::{Order, Paging};
use taskpilot_chatkit::store::ChatStore;
use taskpilot_domain::{ListQuery, TaskFilter, TaskRepository, UserId};
use taskpilot_store::DynamoStore;

/// Every task and thread of `user` in `table`, newest first:
/// `{"user", "tasks": [...], "threads": [...]}` (tasks as the REST API shows
/// them, threads as ChatKit's `threads.list` does).
pub async fn dump(client: Client, table: &str, user: &str) -> Result<Value, String> {
    let user = UserId::new(user).map_err(|e| format!("user {user:?}: {e}"))?;
    let store = DynamoStore::new(client, table);
    let unreadable = |e: taskpilot_domain::StoreError| format!("cannot read table {table}: {e}");
    let mut tasks = Vec::new();
    let mut query = ListQuery {
        filter: TaskFilter::default(),
        search: None,
        limit: 100,
        after: None,
    };
    loop {
        let page = store.list(&user, &query).await.map_err(unreadable)?;
        tasks.extend(page.tasks);
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    let mut threads = Vec::new();
    let mut paging = Paging {
        limit: 100,
        order: Order::Desc,
        after: None,
    };
    loop {
        let page = store
            .list_threads(&user, &paging)
            .await
            .map_err(unreadable)?;
        threads.extend(page.data);
        match (page.has_more, page.after) {
            (true, Some(after)) => paging.after = Some(after),
            _ => break,
        }
    }
    Ok(json!({ "user": user.as_str(), "tasks": tasks, "threads": threads }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use emulators::dynamodb_local::DynamoDbLocal;
    use emulators::template::Template;
    use taskpilot_chatkit::types::ThreadMetadata;
    use taskpilot_domain::Task;

    fn task(id: &str, title: &str) -> Task {
        serde_json::from_value(json!({
            "id": id, "title": title, "description": null, "completed": false,
            "priority": "medium", "due_date": null, "tags": [],
            "created_at": "2026-12-07T10:00:00Z", "updated_at": "2026-12-07T10:00:00Z",
            "completed_at": null, "version": 1
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_users_tasks_and_threads_are_dumped_and_no_one_elses() {
        let ddb = tokio::task::spawn_blocking(DynamoDbLocal::shared)
            .await
            .unwrap()
            .unwrap();
        let client = emulators::aws::dynamodb_client(&ddb.endpoint).await;
        let table = format!("dump-{}", ulid::Ulid::new().to_string().to_lowercase());
        Template::load()
            .unwrap()
            .create_table(&client, &table)
            .await
            .unwrap();
        let store = DynamoStore::new(client.clone(), &table);
        let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
        // More than one page of tasks.
        for n in 0..105 {
            let id = format!("01JD{:022}", n);
            store
                .insert(&alice, &task(&id, &format!("task {n}")), None)
                .await
                .unwrap();
        }
        store
            .insert(&bob, &task("01JE0000000000000000000000", "bob's"), None)
            .await
            .unwrap();
        // More than one page of threads too.
        for n in 0..101 {
            let thread: ThreadMetadata = serde_json::from_value(json!({
                "id": format!("thr_{n}"), "title": format!("Thread {n}"),
                "created_at": "2026-12-07T10:00:00Z", "status": {"type": "active"}
            }))
            .unwrap();
            store.save_thread(&alice, &thread).await.unwrap();
        }

        let alices = dump(client.clone(), &table, "alice").await.unwrap();
        assert_eq!(alices["user"], "alice");
        let titles: Vec<&str> = alices["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles.len(), 105);
        assert_eq!(titles[0], "task 104", "newest first");
        assert!(!titles.contains(&"bob's"));
        let threads: Vec<&str> = alices["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap())
            .collect();
        assert_eq!(threads.len(), 101);
        assert_eq!(threads[0], "Thread 100", "latest activity first");

        let bobs = dump(client, &table, "bob").await.unwrap();
        assert_eq!(bobs["tasks"].as_array().unwrap().len(), 1);
        assert_eq!(bobs["threads"], json!([]));
    }
}

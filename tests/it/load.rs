//! Load through the local stack (issue #7 §4): concurrent idempotent creates
//! lose and duplicate nothing; concurrent conditional updates keep every
//! task's version equal to its number of successful updates.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use crate::common::Api;

const CLIENTS: usize = 32;
/// `LOAD_CREATES` overrides it for a longer run.
const CREATES: usize = 10_000;
const PATCHED_TASKS: usize = 50;
const PATCHES: usize = 1_000;

fn creates() -> usize {
    std::env::var("LOAD_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CREATES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_idempotent_creates_from_32_clients_then_a_full_listing() {
    let api = Arc::new(Api::start(&["tasks"]).await);
    let total = creates();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let api = api.clone();
        clients.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in (c..total).step_by(CLIENTS) {
                let key = format!("load-{i}");
                let body = json!({"title": format!("task {i}"), "tags": ["load"]});
                // A client retries what may not have landed, with the same key;
                // every 50th request is also sent twice on purpose.
                let sends = if i % 50 == 0 { 2 } else { 1 };
                let mut id = None;
                for _ in 0..sends {
                    loop {
                        let r = api
                            .send(
                                Method::POST,
                                "/api/v1/tasks",
                                Some("loader"),
                                Some(body.clone()),
                                &[("idempotency-key", &key)],
                            )
                            .await;
                        match r.status.as_u16() {
                            201 => {
                                let got = r.body["id"].as_str().unwrap().to_owned();
                                if let Some(first) = &id {
                                    assert_eq!(first, &got, "a replay answers the same task");
                                    assert_eq!(r.headers["idempotent-replayed"], "true");
                                }
                                id = Some(got);
                                break;
                            }
                            409 => assert_eq!(r.code(), "idempotency_in_flight"),
                            other => panic!("create {i}: {other} {:?}", r.body),
                        }
                    }
                }
                made.push(id.unwrap());
            }
            made
        }));
    }
    let mut created = BTreeSet::new();
    for c in clients {
        for id in c.await.unwrap() {
            assert!(created.insert(id), "two keys got the same task");
        }
    }
    assert_eq!(created.len(), total);

    let mut listed = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/tasks?limit=100".to_owned(),
            Some(c) => format!("/api/v1/tasks?limit=100&cursor={c}"),
        };
        let r = api.get(&path, "loader").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for t in r.body["tasks"].as_array().unwrap() {
            assert!(
                listed.insert(t["id"].as_str().unwrap().to_owned()),
                "listed twice"
            );
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, created, "exactly the created tasks, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conditional_patches_keep_versions_exact() {
    let api = Arc::new(Api::start(&["tasks"]).await);
    let mut ids = Vec::new();
    for i in 0..PATCHED_TASKS {
        ids.push(
            api.create("patcher", json!({"title": format!("task {i}")}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let ids = Arc::new(ids);
    // 1,000 read-modify-write updates from 32 clients, 20 per task, each with
    // the If-Match of the version it read: a stale one must answer 409.
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (api, ids) = (api.clone(), ids.clone());
        clients.push(tokio::spawn(async move {
            let mut ok: BTreeMap<String, u64> = BTreeMap::new();
            for n in (c..PATCHES).step_by(CLIENTS) {
                let id = &ids[n % PATCHED_TASKS];
                let path = format!("/api/v1/tasks/{id}");
                let read = api.get(&path, "patcher").await;
                assert_eq!(read.status, 200);
                let etag = read.headers["etag"].to_str().unwrap().to_owned();
                let r = api
                    .send(
                        Method::PATCH,
                        &path,
                        Some("patcher"),
                        Some(json!({"title": format!("update {n}")})),
                        &[("if-match", &etag)],
                    )
                    .await;
                match r.status.as_u16() {
                    200 => *ok.entry(id.clone()).or_default() += 1,
                    409 => assert_eq!(r.code(), "version_conflict"),
                    other => panic!("patch {n}: {other} {:?}", r.body),
                }
            }
            ok
        }));
    }
    let mut successes: BTreeMap<String, u64> = BTreeMap::new();
    for c in clients {
        for (id, n) in c.await.unwrap() {
            *successes.entry(id).or_default() += n;
        }
    }
    assert!(successes.values().sum::<u64>() > 0);
    for id in ids.iter() {
        let r = api.get(&format!("/api/v1/tasks/{id}"), "patcher").await;
        let updates = successes.get(id).copied().unwrap_or(0);
        assert_eq!(
            r.body["version"].as_u64().unwrap(),
            1 + updates,
            "task {id}: version = 1 + its successful updates"
        );
    }
}

//! The tasks API end to end: HTTP → API Gateway v2 event → the real `tasks`
//! binary → DynamoDB Local (all started by the test).
use std::collections::HashSet;

use crate::common::{Api, query_value};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

const TASKS: &str = "/api/v1/tasks";

fn item(id: &Value) -> String {
    format!("{TASKS}/{}", id.as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_works() {
    let api = Api::start(&["tasks"]).await;
    let created = api
        .post(
            TASKS,
            "alice",
            json!({"title":"  Buy milk ","description":"2 liters","priority":"high",
                   "due_date":"2026-11-23","tags":["home","errands"]}),
        )
        .await;
    assert_eq!(created.status, 201);
    let task = created.body.clone();
    let id = &task["id"];
    assert_eq!(created.headers["location"], item(id));
    assert_eq!(created.headers["etag"], "\"1\"");
    assert_eq!(task["title"], "Buy milk");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["completed"], false);
    assert_eq!(task["completed_at"], Value::Null);
    assert_eq!(task["version"], 1);
    assert!(task["created_at"].as_str().unwrap().ends_with('Z'));
    for hidden in ["pk", "sk", "user_id", "owner"] {
        assert!(task.get(hidden).is_none(), "{hidden} leaked");
    }

    let got = api.get(&item(id), "alice").await;
    assert_eq!((got.status.as_u16(), &got.body), (200, &task));

    let listed = api.get(TASKS, "alice").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["tasks"], json!([task]));
    assert_eq!(listed.body["next_cursor"], Value::Null);

    let patched = api
        .send(
            Method::PATCH,
            &item(id),
            Some("alice"),
            Some(json!({"title":"Buy oat milk","due_date":null,"tags":["home"]})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["title"], "Buy oat milk");
    assert_eq!(patched.body["due_date"], Value::Null);
    assert_eq!(patched.body["tags"], json!(["home"]));
    assert_eq!(patched.body["description"], "2 liters");
    assert_eq!(patched.body["version"], 2);

    let done = api
        .post(&format!("{}/complete", item(id)), "alice", json!(null))
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(
        (done.body["completed"].clone(), done.body["version"].clone()),
        (json!(true), json!(3))
    );
    assert!(done.body["completed_at"].is_string());
    let again = api
        .post(&format!("{}/complete", item(id)), "alice", json!(null))
        .await;
    assert_eq!(again.body, done.body, "completing twice changes nothing");

    let reopened = api
        .post(&format!("{}/reopen", item(id)), "alice", json!(null))
        .await;
    assert_eq!(reopened.body["completed"], false);
    assert_eq!(reopened.body["completed_at"], Value::Null);
    assert_eq!(reopened.body["version"], 4);
    let again = api
        .post(&format!("{}/reopen", item(id)), "alice", json!(null))
        .await;
    assert_eq!(again.body["version"], 4);

    let deleted = api.delete(&item(id), "alice").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(api.get(&item(id), "alice").await.status, 404);
    assert_eq!(api.delete(&item(id), "alice").await.code(), "not_found");
    assert!(api.rows("TASK#").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validation_rules_answer_with_the_field() {
    let api = Api::start(&["tasks"]).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "title"),
        (json!({"title":"   "}), "title"),
        (json!({"title":"x".repeat(201)}), "title"),
        (json!({"title":"bad\u{0007}bell"}), "title"),
        (
            json!({"title":"t","description":"d".repeat(4001)}),
            "description",
        ),
        (json!({"title":"t","priority":"urgent"}), "priority"),
        (json!({"title":"t","due_date":"next friday"}), "due_date"),
        (
            json!({"title":"t","tags":["a","b","c","d","e","f","g","h","i","j","k"]}),
            "tags",
        ),
        (json!({"title":"t","tags":["x".repeat(33)]}), "tags[0]"),
        (json!({"title":"t","completed":"yes"}), "completed"),
        (json!({"title":5}), "title"),
    ];
    for (body, field) in cases {
        let r = api.post(TASKS, "alice", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "validation_failed");
        assert_eq!(r.body["error"]["details"]["field"], field, "{body}");
    }
    // Server-owned fields and unknown fields are refused, not ignored.
    for field in [
        "id",
        "created_at",
        "updated_at",
        "completed_at",
        "version",
        "user_id",
        "colour",
    ] {
        let r = api
            .post(TASKS, "alice", json!({"title":"t", field: "x"}))
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "unknown_field"),
            "{field}"
        );
        assert!(r.body["error"]["message"].as_str().unwrap().contains(field));
    }
    let raw = |body: &'static [u8], ct: &'static str| {
        let http = api.http.clone();
        let url = format!("{}{TASKS}", api.stack.url);
        let token = api.token("alice");
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    assert_eq!(
        raw(b"{\"title\":", "application/json").await,
        (400, "malformed_json".into())
    );
    assert_eq!(
        raw(b"{\"title\":\"a\",\"title\":\"b\"}", "application/json")
            .await
            .0,
        400
    );
    assert_eq!(raw(b"\xff\xfe\x00", "application/json").await.0, 400);
    assert_eq!(
        raw(b"title=x", "application/x-www-form-urlencoded").await,
        (415, "unsupported_media_type".into())
    );
    let big = format!(
        "{{\"title\":\"t\",\"description\":\"{}\"}}",
        "x".repeat(17 * 1024)
    );
    let r = api
        .http
        .post(format!("{}{TASKS}", api.stack.url))
        .bearer_auth(api.token("alice"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Query parameters.
    for (query, status) in [
        ("limit=0", 422),
        ("limit=101", 422),
        ("limit=ten", 422),
        ("completed=yes", 422),
        ("due_before=2026-13-01", 422),
        ("sort=title", 400),
        ("cursor=not-a-cursor", 400),
    ] {
        let r = api.get(&format!("{TASKS}?{query}"), "alice").await;
        assert_eq!(r.status, status, "{query}: {:?}", r.body);
        r.code();
    }
    // PATCH rules.
    let t = api.create("alice", json!({"title":"t"})).await;
    let r = api.patch(&item(&t["id"]), "alice", json!({})).await;
    assert_eq!(r.status, 422);
    let r = api
        .patch(&item(&t["id"]), "alice", json!({"title":null}))
        .await;
    assert_eq!(r.status, 422);
    let r = api
        .send(
            Method::PATCH,
            &item(&t["id"]),
            Some("alice"),
            Some(json!({"title":"x"})),
            &[("if-match", "abc")],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_parameter"));
    // Nothing was half-written by any of the above.
    assert_eq!(api.rows("TASK#").await.len(), 1);
    let after = api.get(&item(&t["id"]), "alice").await;
    assert_eq!(after.body, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_is_required_and_other_users_get_404() {
    let api = Api::start(&["tasks"]).await;
    let r = api.send(Method::GET, TASKS, None, None, &[]).await;
    assert_eq!((r.status.as_u16(), r.code()), (401, "unauthorized"));
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = api
        .send(
            Method::GET,
            TASKS,
            None,
            None,
            &[("authorization", "Bearer not.a.jwt")],
        )
        .await;
    assert_eq!(r.status, 401);

    let t = api.create("alice", json!({"title":"private"})).await;
    let path = item(&t["id"]);
    assert_eq!(api.get(&path, "bob").await.code(), "not_found");
    assert_eq!(
        api.patch(&path, "bob", json!({"title":"mine"}))
            .await
            .status,
        404
    );
    assert_eq!(
        api.post(&format!("{path}/complete"), "bob", json!(null))
            .await
            .status,
        404
    );
    assert_eq!(
        api.post(&format!("{path}/reopen"), "bob", json!(null))
            .await
            .status,
        404
    );
    assert_eq!(api.delete(&path, "bob").await.status, 404);
    assert!(
        api.get(TASKS, "bob").await.body["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.get(&path, "alice").await.body,
        t,
        "alice's task is unchanged"
    );

    // Ids that cannot exist are plain 404s, never errors.
    for bad in ["..%2F..%2Fetc", "not-a-ulid", "%00"] {
        assert_eq!(
            api.get(&format!("{TASKS}/{bad}"), "alice").await.status,
            404
        );
    }
    // CORS: only listed origins.
    let ok = api
        .send(
            Method::OPTIONS,
            TASKS,
            None,
            None,
            &[("origin", "http://localhost:3000")],
        )
        .await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let denied = api
        .send(
            Method::OPTIONS,
            TASKS,
            None,
            None,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(denied.status, 403);
    let r = api
        .send(
            Method::GET,
            TASKS,
            Some("alice"),
            None,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_with_one_version_have_one_winner() {
    let api = Api::start(&["tasks"]).await;
    let t = api.create("alice", json!({"title":"race"})).await;
    let path = item(&t["id"]);
    let (a, b) = tokio::join!(
        api.patch(&path, "alice", json!({"title":"from A","version":1})),
        api.patch(&path, "alice", json!({"title":"from B","version":1})),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (winner, loser) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!(loser.code(), "version_conflict");
    assert_eq!(loser.body["error"]["details"]["current"], winner.body);
    let stored = api.get(&path, "alice").await.body;
    assert_eq!(stored, winner.body);
    assert_eq!(stored["version"], 2);
    // A stale If-Match on delete is refused too, and the task stays.
    let r = api
        .send(
            Method::DELETE,
            &path,
            Some("alice"),
            None,
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(api.get(&path, "alice").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_create_exactly_once() {
    let api = Api::start(&["tasks"]).await;
    let body = json!({"title":"pay rent","tags":["money"]});
    let key = "9b2e6f0a-4f4c-4a8e-9d61-0c2a1a5e7f10";
    let key_header = [("idempotency-key", key)];
    let sends = (0..16).map(|_| {
        api.send(
            Method::POST,
            TASKS,
            Some("alice"),
            Some(body.clone()),
            &key_header,
        )
    });
    let replies = futures_util::future::join_all(sends).await;
    let mut ids = HashSet::new();
    for r in &replies {
        match r.status.as_u16() {
            201 => {
                ids.insert(r.body["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(r.code(), "idempotency_in_flight"),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    // A retry after the dust settles replays the first response.
    let replay = api
        .send(
            Method::POST,
            TASKS,
            Some("alice"),
            Some(body.clone()),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    ids.insert(replay.body["id"].as_str().unwrap().to_owned());
    assert_eq!(ids.len(), 1, "every success names the same task");
    assert_eq!(api.rows("TASK#").await.len(), 1, "exactly one task stored");
    let first = replies
        .iter()
        .find(|r| r.status == 201)
        .map(|r| &r.body)
        .unwrap_or(&replay.body);
    assert_eq!(&replay.body, first, "byte-identical replay");

    // Same key, different body: 422 and nothing new.
    let r = api
        .send(
            Method::POST,
            TASKS,
            Some("alice"),
            Some(json!({"title":"other"})),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (422, "idempotency_key_reused")
    );
    // Keys are per user.
    let bob = api
        .send(
            Method::POST,
            TASKS,
            Some("bob"),
            Some(body.clone()),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(bob.status, 201);
    assert_ne!(bob.body["id"], replay.body["id"]);
    assert!(bob.headers.get("idempotent-replayed").is_none());
    // Malformed keys are refused.
    let r = api
        .send(
            Method::POST,
            TASKS,
            Some("alice"),
            Some(body),
            &[("idempotency-key", &"k".repeat(300))],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_parameter"));
    assert_eq!(api.rows("TASK#").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paging_returns_every_task_exactly_once() {
    let api = Api::start(&["tasks"]).await;
    let creates = (0..250).map(|i| {
        api.post(
            TASKS,
            "alice",
            json!({"title": format!("task {i}"), "completed": i % 3 == 0,
                   "tags": if i % 5 == 0 { json!(["five"]) } else { json!([]) },
                   "due_date": format!("2026-12-{:02}", 1 + i % 28)}),
        )
    });
    let replies: Vec<_> = futures_util::stream::iter(creates)
        .buffer_unordered(16)
        .collect()
        .await;
    let created: Vec<Value> = replies
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{:?}", r.body);
            r.body
        })
        .collect();
    let (seen, pages) = pages_of(&api, "limit=7").await;
    assert_eq!(pages, 36);
    let ids: Vec<&str> = seen.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!((ids.len(), unique.len()), (250, 250));
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");

    // Filtered paging also returns each match once (a filtered page may hold
    // fewer than `limit` tasks: each page is one bounded DynamoDB read).
    let open = all_pages(&api, "completed=false&limit=9").await;
    assert!(open.iter().all(|t| t["completed"] == false));
    let expected_open = created.iter().filter(|t| t["completed"] == false).count();
    assert_eq!(open.len(), expected_open);
    let tagged = all_pages(&api, "tag=five&limit=100").await;
    assert_eq!(tagged.len(), 50);
    let due = all_pages(&api, "due_before=2026-12-03&limit=100").await;
    let due_count = created
        .iter()
        .filter(|t| t["due_date"].as_str().unwrap() < "2026-12-03")
        .count();
    assert_eq!(due.len(), due_count);
    let both = all_pages(&api, "completed=true&tag=five").await;
    let both_count = created
        .iter()
        .filter(|t| t["completed"] == true && t["tags"] == json!(["five"]))
        .count();
    assert_eq!(both.len(), both_count);

    // Cursor tampering, reuse by another user, reuse with another filter.
    let first = api.get(&format!("{TASKS}?limit=7"), "alice").await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (user, query) in [
        ("alice", format!("limit=7&cursor={tampered}")),
        ("bob", format!("limit=7&cursor={cursor}")),
        ("alice", format!("limit=7&completed=true&cursor={cursor}")),
        (
            "alice",
            "limit=7&cursor=eyJwayI6IlVTRVIjdmljdGltIn0".to_owned(),
        ),
    ] {
        let r = api.get(&format!("{TASKS}?{query}"), user).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_cursor"),
            "{user} {query}"
        );
    }
    // A different page size with the same filter is fine.
    assert_eq!(
        api.get(&format!("{TASKS}?limit=3&cursor={cursor}"), "alice")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_titles_and_tags_ignoring_case() {
    let api = Api::start_with(taskpilot_testkit::stack::StackOptions {
        functions: Some(vec!["tasks".into()]),
        count_dynamodb: true,
        ..Default::default()
    })
    .await;
    let create = |title: &str, tags: Value| {
        api.create(
            "alice",
            json!({"title": title, "tags": tags, "description": "milk"}),
        )
    };
    let buy = create("Buy MILK", json!(["Errands"])).await;
    let oat = create("oat milk", json!(["home"])).await;
    create("Bread", json!(["dairy-free"])).await;
    let call = create("Call Mom", json!(["Milkman"])).await;
    let eggs = create("eggs, milk & more", json!([])).await;
    let cafe = create("Café au lait", json!([])).await;
    let odd = create("a) OR :q (b", json!(["#search"])).await;
    for i in 0..5 {
        create(&format!("filler {i}"), json!(["filler"])).await;
    }
    api.post(
        &format!("{}/complete", item(&oat["id"])),
        "alice",
        json!(null),
    )
    .await;
    let bob = api
        .create("bob", json!({"title":"Bob's milk","tags":["milk"]}))
        .await;
    let ids = |tasks: &[&Value]| tasks.iter().map(|t| t["id"].clone()).collect::<Vec<_>>();
    let found = |query: String| {
        let api = &api;
        async move {
            let all = all_pages(api, &query).await;
            all.iter().map(|t| t["id"].clone()).collect::<Vec<_>>()
        }
    };
    let milk = ids(&[&eggs, &call, &oat, &buy]);
    for q in ["milk", "MILK", "  Milk ", "mIlK"] {
        assert_eq!(found(format!("q={}", query_value(q))).await, milk, "{q}");
    }
    assert_eq!(found("q=+milk+".into()).await, milk, "`+` is a space");
    assert!(!found("q=milk".into()).await.contains(&bob["id"]));
    let bobs = api.get(&format!("{TASKS}?q=BOB"), "bob").await;
    assert_eq!(bobs.body["tasks"], json!([bob]));
    // Combined with the other filters.
    assert_eq!(
        found("q=milk&completed=false".into()).await,
        ids(&[&eggs, &call, &buy])
    );
    assert_eq!(found("q=MILK&completed=true".into()).await, ids(&[&oat]));
    assert_eq!(found("q=milk&tag=home".into()).await, ids(&[&oat]));
    // Tags, commas, accents and expression-like text.
    assert_eq!(found("q=errand".into()).await, ids(&[&buy]));
    for (q, want) in [
        ("eggs, milk", ids(&[&eggs])),
        ("CAFÉ", ids(&[&cafe])),
        (") OR :q (", ids(&[&odd])),
        ("#SEARCH", ids(&[&odd])),
        ("cafe", vec![]),
        ("description", vec![]),
    ] {
        assert_eq!(found(format!("q={}", query_value(q))).await, want, "{q}");
    }

    // Paged like the list: one DynamoDB Query per page.
    let proxy = api.stack.dynamodb_proxy.as_ref().unwrap();
    let before = proxy.count("DynamoDB_20120810.Query");
    let (paged, pages) = pages_of(&api, "q=milk&limit=1").await;
    assert_eq!(pages, 4);
    assert_eq!(proxy.count("DynamoDB_20120810.Query") - before, pages);
    assert_eq!(ids(&paged.iter().collect::<Vec<_>>()), milk);

    // The cursor is bound to the search text (after trimming and folding).
    let first = api.get(&format!("{TASKS}?q=milk&limit=1"), "alice").await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let same = api
        .get(
            &format!("{TASKS}?q=%20MILK&limit=1&cursor={cursor}"),
            "alice",
        )
        .await;
    assert_eq!(same.body["tasks"][0]["id"], call["id"]);
    for (user, query) in [
        ("alice", format!("q=milkman&limit=1&cursor={cursor}")),
        ("alice", format!("limit=1&cursor={cursor}")),
        ("alice", format!("q=milk&tag=home&limit=1&cursor={cursor}")),
        ("bob", format!("q=milk&limit=1&cursor={cursor}")),
    ] {
        let r = api.get(&format!("{TASKS}?{query}"), user).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_cursor"),
            "{query}"
        );
    }
    let plain = api.get(&format!("{TASKS}?limit=1"), "alice").await;
    let plain_cursor = plain.body["next_cursor"].as_str().unwrap();
    let r = api
        .get(&format!("{TASKS}?q=milk&cursor={plain_cursor}"), "alice")
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_cursor"));

    // A rename moves the task in and out of results.
    api.patch(&item(&buy["id"]), "alice", json!({"title":"Buy cream"}))
        .await;
    assert_eq!(found("q=milk".into()).await, ids(&[&eggs, &call, &oat]));
    assert_eq!(found("q=CREAM".into()).await, ids(&[&buy]));

    // Validation: a 422 naming `q` (a repeated `q` is a 400); nothing is read.
    let before = proxy.count("DynamoDB_20120810.Query");
    let long = "x".repeat(101);
    for query in [
        "q=".to_owned(),
        "q".to_owned(),
        "q=%20%20".to_owned(),
        format!("q={}", query_value("\u{3000}\u{a0}")),
        format!("q={long}"),
        "q=a%00b".to_owned(),
        "q=milk%09".to_owned(),
        "q=%0Amilk".to_owned(),
        "q=a%7Fb".to_owned(),
    ] {
        let r = api.get(&format!("{TASKS}?{query}"), "alice").await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "validation_failed"),
            "{query}"
        );
        assert_eq!(r.body["error"]["details"]["field"], "q", "{query}");
    }
    let r = api.get(&format!("{TASKS}?q=a&q=b"), "alice").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_parameter"));
    assert_eq!(r.body["error"]["details"]["parameter"], "q");
    assert_eq!(proxy.count("DynamoDB_20120810.Query"), before);
    let padded = format!("q=%20%20{}%20%20", "x".repeat(100));
    assert_eq!(
        api.get(&format!("{TASKS}?{padded}"), "alice").await.status,
        200
    );
}

/// Follows `next_cursor` to the end; asserts no task repeats.
async fn all_pages(api: &Api, query: &str) -> Vec<Value> {
    pages_of(api, query).await.0
}

/// Every task of a listing, and the number of pages it took.
async fn pages_of(api: &Api, query: &str) -> (Vec<Value>, usize) {
    let mut out: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        let path = match &cursor {
            Some(c) => format!("{TASKS}?{query}&cursor={c}"),
            None => format!("{TASKS}?{query}"),
        };
        let r = api.get(&path, "alice").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for t in r.body["tasks"].as_array().unwrap() {
            assert!(
                !out.iter().any(|seen| seen["id"] == t["id"]),
                "repeated {}",
                t["id"]
            );
            out.push(t.clone());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (out, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storage_outage_is_a_503_and_the_process_keeps_serving() {
    // A DynamoDB endpoint where nothing listens.
    let dead = format!(
        "http://127.0.0.1:{}",
        taskpilot_testkit::free_port().unwrap()
    );
    let api = Api::start_with(taskpilot_testkit::stack::StackOptions {
        functions: Some(vec!["tasks".into()]),
        env: vec![("AWS_ENDPOINT_URL_DYNAMODB".into(), dead)],
        ..Default::default()
    })
    .await;
    for _ in 0..2 {
        let r = api.post(TASKS, "alice", json!({"title":"t"})).await;
        assert_eq!((r.status.as_u16(), r.code()), (503, "service_unavailable"));
        assert_eq!(r.headers["retry-after"], "1");
        assert!(
            !r.body.to_string().contains("127.0.0.1"),
            "no internals in errors"
        );
    }
    assert_eq!(api.stack.function("tasks").unwrap().cold_starts(), 1);
}

/// The cursor key comes from the stack's `AppKeys` secret (its ARN in the
/// environment, never its value): one `GetSecretValue` per cold start, and
/// pages signed with it work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cursor_key_is_read_from_secrets_manager_once() {
    use emulators::aws::secrets_client;
    use emulators::moto::Moto;
    use emulators::proxy::CountingProxy;
    let moto = tokio::task::spawn_blocking(Moto::shared)
        .await
        .unwrap()
        .unwrap();
    let arn = secrets_client(&moto.endpoint)
        .await
        .create_secret()
        .name(format!("taskpilot/app-keys-{}", ulid::Ulid::new()))
        .secret_string(r#"{"CURSOR_SIGNING_KEY":"a-key-from-secrets-manager-0123456789abcdef"}"#)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let proxy = CountingProxy::start(&moto.endpoint).await.unwrap();
    let api = Api::start_env(
        &["tasks"],
        &[
            ("CURSOR_SIGNING_KEY", ""),
            ("APP_KEYS_SECRET_ARN", &arn),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &proxy.endpoint),
        ],
    )
    .await;
    for i in 0..3 {
        api.create("alice", json!({ "title": format!("task {i}") }))
            .await;
    }
    let first = api.get("/api/v1/tasks?limit=2", "alice").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let next = api
        .get(&format!("/api/v1/tasks?limit=2&cursor={cursor}"), "alice")
        .await;
    assert_eq!(next.status, 200, "{:?}", next.body);
    assert_eq!(next.body["tasks"].as_array().unwrap().len(), 1);
    let function = api.stack.function("tasks").unwrap();
    assert_eq!(
        proxy.count("secretsmanager.GetSecretValue"),
        function.cold_starts() as usize,
        "{}",
        function.logs().join("\n")
    );
    assert!(
        !function
            .logs()
            .iter()
            .any(|l| l.contains("a-key-from-secrets-manager")),
        "the key reached the logs"
    );
}

#[tokio::test]
async fn an_origin_the_local_stack_is_told_to_allow_gets_cors_from_the_functions_and_the_bucket() {
    let extra = "http://localhost:5173";
    let api = Api::start_with(taskpilot_testkit::stack::StackOptions {
        functions: Some(vec!["tasks".into(), "chatkit".into()]),
        allow_origins: vec![extra.into()],
        ..Default::default()
    })
    .await;
    let allowed = |origin: &'static str| {
        let api = &api;
        async move {
            let answer = api
                .http
                .get(format!("{}/api/v1/tasks", api.stack.url))
                .bearer_auth(api.token("alice"))
                .header("origin", origin)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(allowed(extra).await.as_deref(), Some(extra));
    assert_eq!(
        allowed("http://localhost:3000").await.as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(allowed("http://localhost:5174").await, None);
    // The attachments bucket lets the page upload from there too.
    let files = api.stack.files.as_ref().unwrap();
    let cors = files
        .s3
        .get_bucket_cors()
        .bucket(&files.bucket)
        .send()
        .await
        .unwrap();
    let origins: Vec<&str> = cors
        .cors_rules()
        .iter()
        .flat_map(|r| r.allowed_origins())
        .map(String::as_str)
        .collect();
    assert!(origins.contains(&extra), "{origins:?}");
}

#[tokio::test]
async fn the_gateway_logs_each_request_with_its_status_latency_and_function() {
    let api = Api::start(&["tasks"]).await;
    assert_eq!(api.get("/api/v1/tasks", "alice").await.status, 200);
    assert_eq!(api.get("/nowhere", "alice").await.status, 404);
    let lines = api.stack.responses.lines();
    let listed = lines
        .iter()
        .find(|l| l.path == "/api/v1/tasks")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(
        (
            listed.method.as_str(),
            listed.status,
            listed.function.as_deref()
        ),
        ("GET", 200, Some("tasks"))
    );
    assert!(listed.to_string().starts_with("GET /api/v1/tasks 200 "));
    let missing = lines.iter().find(|l| l.path == "/nowhere").unwrap();
    assert_eq!(missing.status, 404);
}

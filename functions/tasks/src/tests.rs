//! The routes in process, on the in-memory repository: every status each
//! route documents, each answer checked against the OpenAPI spec.

use serde_json::{Value, json};

use taskpilot_domain::memory::InMemoryTasks;
use taskpilot_domain::{
    CursorCodec, IdempotencyClaim, InsertOutcome, ListPage, ListQuery, StoreError, Task,
    TaskChange, TaskId, TaskRepository, TaskService, UpdateOutcome, UserId, WriteGuard,
};
use taskpilot_testkit::handler::{Answer, Call, call, dev_authenticator, dispatch};

use crate::routes::TasksApi;

const ALICE: &str = "alice";

fn api<R: TaskRepository>(repo: R) -> TasksApi<R> {
    let cursors = CursorCodec::new(&[7; 32], taskpilot_runtime::CURSOR_LIFETIME).unwrap();
    TasksApi::new(TaskService::new(repo, cursors), dev_authenticator())
}

async fn send<R: TaskRepository>(api: &TasksApi<R>, method: &str, path: &str, c: Call) -> Answer {
    dispatch(method, path, c, |req| api.handle(req)).await
}

async fn post<R: TaskRepository>(api: &TasksApi<R>, path: &str, body: Value) -> Answer {
    send(
        api,
        "POST",
        path,
        call("POST", path).user(ALICE).json(&body),
    )
    .await
}

async fn get<R: TaskRepository>(api: &TasksApi<R>, path: &str) -> Answer {
    send(api, "GET", path, call("GET", path).user(ALICE)).await
}

async fn created<R: TaskRepository>(api: &TasksApi<R>, title: &str) -> String {
    let a = post(api, "/api/v1/tasks", json!({ "title": title })).await;
    assert_eq!(a.status, 201, "{a:?}");
    a.body["id"].as_str().unwrap().to_owned()
}

/// A repository whose every call fails with one error.
struct Broken(fn() -> StoreError);

impl TaskRepository for Broken {
    async fn get(&self, _: &UserId, _: &TaskId) -> Result<Option<Task>, StoreError> {
        Err((self.0)())
    }
    async fn insert(
        &self,
        _: &UserId,
        _: &Task,
        _: Option<&IdempotencyClaim>,
    ) -> Result<InsertOutcome, StoreError> {
        Err((self.0)())
    }
    async fn update(
        &self,
        _: &UserId,
        _: &TaskId,
        _: &TaskChange,
        _: WriteGuard,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<UpdateOutcome, StoreError> {
        Err((self.0)())
    }
    async fn delete(
        &self,
        _: &UserId,
        _: &TaskId,
        _: WriteGuard,
    ) -> Result<UpdateOutcome, StoreError> {
        Err((self.0)())
    }
    async fn list(&self, _: &UserId, _: &ListQuery) -> Result<ListPage, StoreError> {
        Err((self.0)())
    }
}

#[tokio::test]
async fn a_created_task_is_201_with_its_location_and_version() {
    let api = api(InMemoryTasks::default());
    let a = post(
        &api,
        "/api/v1/tasks",
        json!({ "title": "Buy milk", "tags": ["home"] }),
    )
    .await;
    assert_eq!(a.status, 201);
    let id = a.body["id"].as_str().unwrap();
    assert_eq!(
        a.header("location"),
        Some(format!("/api/v1/tasks/{id}").as_str())
    );
    assert_eq!(a.header("etag"), Some("\"1\""));
    assert_eq!(a.body["title"], "Buy milk");
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_answer() {
    let api = api(InMemoryTasks::default());
    let path = "/api/v1/tasks";
    let create = || {
        call("POST", path)
            .user(ALICE)
            .header("idempotency-key", "key-1")
            .json(&json!({ "title": "Once" }))
    };
    let first = send(&api, "POST", path, create()).await;
    let again = send(&api, "POST", path, create()).await;
    assert_eq!((first.status, again.status), (201, 201));
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    let other = call("POST", path)
        .user(ALICE)
        .header("idempotency-key", "key-1")
        .json(&json!({ "title": "Another" }));
    let conflict = send(&api, "POST", path, other).await;
    assert_eq!(
        (conflict.status, conflict.code()),
        (422, "idempotency_key_reused")
    );
}

#[tokio::test]
async fn a_bad_create_is_400_413_415_or_422() {
    let api = api(InMemoryTasks::default());
    let path = "/api/v1/tasks";
    let malformed = call("POST", path)
        .user(ALICE)
        .raw_body("application/json", b"{\"title\":".to_vec());
    assert_eq!(send(&api, "POST", path, malformed).await.status, 400);
    let bad_key = call("POST", path)
        .user(ALICE)
        .header("idempotency-key", &"k".repeat(300))
        .json(&json!({ "title": "x" }));
    let a = send(&api, "POST", path, bad_key).await;
    assert_eq!((a.status, a.code()), (400, "invalid_parameter"));
    let huge = json!({ "title": "x", "description": "d".repeat(100 * 1024) });
    assert_eq!(post(&api, path, huge).await.status, 413);
    let text = call("POST", path)
        .user(ALICE)
        .raw_body("text/plain", b"Buy milk".to_vec());
    assert_eq!(send(&api, "POST", path, text).await.status, 415);
    let empty = post(&api, path, json!({ "title": "  " })).await;
    assert_eq!((empty.status, empty.code()), (422, "validation_failed"));
}

#[tokio::test]
async fn without_a_valid_token_every_route_is_401() {
    let api = api(InMemoryTasks::default());
    for (method, path) in [
        ("GET", "/api/v1/tasks"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("DELETE", "/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("POST", "/api/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/complete"),
    ] {
        let anonymous = send(&api, method, path, call(method, path)).await;
        assert_eq!(anonymous.status, 401, "{method} {path}");
        let forged = call(method, path).header("authorization", "Bearer not.a.token");
        assert_eq!(send(&api, method, path, forged).await.status, 401);
    }
}

#[tokio::test]
async fn api_gateway_claims_name_the_user_without_a_token() {
    let api = api(InMemoryTasks::default());
    let id = created(&api, "Mine").await;
    let path = format!("/api/v1/tasks/{id}");
    let a = send(
        &api,
        "GET",
        &path,
        call("GET", &path).authorizer_claims(ALICE),
    )
    .await;
    assert_eq!((a.status, a.body["title"].as_str()), (200, Some("Mine")));
}

#[tokio::test]
async fn a_task_is_read_by_its_owner_only() {
    let api = api(InMemoryTasks::default());
    let id = created(&api, "Private").await;
    let path = format!("/api/v1/tasks/{id}");
    let own = get(&api, &path).await;
    assert_eq!((own.status, own.header("etag")), (200, Some("\"1\"")));
    let other = send(&api, "GET", &path, call("GET", &path).user("mallory")).await;
    assert_eq!((other.status, other.code()), (404, "not_found"));
    assert_eq!(get(&api, "/api/v1/tasks/not-a-ulid").await.status, 404);
}

#[tokio::test]
async fn a_listing_filters_pages_and_refuses_bad_values_422_and_unknown_parameters_400() {
    let api = api(InMemoryTasks::default());
    for title in ["one", "two", "three"] {
        created(&api, title).await;
    }
    let page = get(&api, "/api/v1/tasks?limit=2").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["tasks"].as_array().unwrap().len(), 2);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = get(&api, &format!("/api/v1/tasks?limit=2&cursor={cursor}")).await;
    assert_eq!(rest.body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let found = get(&api, "/api/v1/tasks?q=two").await;
    assert_eq!(found.body["tasks"][0]["title"], "two");
    for bad in ["limit=0", "completed=maybe", "due_before=tomorrow"] {
        let a = get(&api, &format!("/api/v1/tasks?{bad}")).await;
        assert_eq!(
            (a.status, a.code()),
            (422, "validation_failed"),
            "{bad}: {a:?}"
        );
    }
    let forged = get(&api, "/api/v1/tasks?cursor=forged").await;
    assert_eq!(
        (forged.status, forged.code()),
        (400, "invalid_cursor"),
        "{forged:?}"
    );
    let unknown = get(&api, "/api/v1/tasks?colour=red").await;
    assert_eq!(unknown.status, 400);
    let long_query = get(&api, &format!("/api/v1/tasks?q={}", "x".repeat(300))).await;
    assert_eq!(long_query.status, 422);
}

#[tokio::test]
async fn an_update_checks_the_version_it_is_given() {
    let api = api(InMemoryTasks::default());
    let id = created(&api, "Draft").await;
    let path = format!("/api/v1/tasks/{id}");
    let patch = |if_match: &str, body: Value| {
        call("PATCH", &path)
            .user(ALICE)
            .header("if-match", if_match)
            .json(&body)
    };
    let a = send(
        &api,
        "PATCH",
        &path,
        patch("\"1\"", json!({ "title": "Final" })),
    )
    .await;
    assert_eq!((a.status, a.header("etag")), (200, Some("\"2\"")));
    let stale = send(
        &api,
        "PATCH",
        &path,
        patch("\"1\"", json!({ "title": "Late" })),
    )
    .await;
    assert_eq!((stale.status, stale.code()), (409, "version_conflict"));
    let garbled = send(&api, "PATCH", &path, patch("one", json!({ "title": "x" }))).await;
    assert_eq!(garbled.status, 400);
    let disagree = send(
        &api,
        "PATCH",
        &path,
        patch("\"2\"", json!({ "title": "x", "version": 3 })),
    )
    .await;
    assert_eq!(disagree.status, 422);
    let unknown_field = send(
        &api,
        "PATCH",
        &path,
        patch("\"2\"", json!({ "colour": "red" })),
    )
    .await;
    assert_eq!(unknown_field.status, 400);
    let missing = format!("/api/v1/tasks/{}", TaskId::generate());
    let gone = call("PATCH", &missing)
        .user(ALICE)
        .json(&json!({ "title": "x" }));
    assert_eq!(send(&api, "PATCH", &missing, gone).await.status, 404);
    let text = call("PATCH", &path)
        .user(ALICE)
        .raw_body("text/plain", b"x".to_vec());
    assert_eq!(send(&api, "PATCH", &path, text).await.status, 415);
    let huge = call("PATCH", &path)
        .user(ALICE)
        .json(&json!({ "description": "d".repeat(100 * 1024) }));
    assert_eq!(send(&api, "PATCH", &path, huge).await.status, 413);
}

#[tokio::test]
async fn complete_and_reopen_flip_the_task() {
    let api = api(InMemoryTasks::default());
    let id = created(&api, "Chore").await;
    let done = post(&api, &format!("/api/v1/tasks/{id}/complete"), Value::Null).await;
    assert_eq!(
        (done.status, done.body["completed"].as_bool()),
        (200, Some(true))
    );
    let open = post(&api, &format!("/api/v1/tasks/{id}/reopen"), Value::Null).await;
    assert_eq!(
        (open.status, open.body["completed"].as_bool()),
        (200, Some(false))
    );
    let missing = format!("/api/v1/tasks/{}/complete", TaskId::generate());
    assert_eq!(post(&api, &missing, Value::Null).await.status, 404);
}

#[tokio::test]
async fn a_delete_is_204_then_404_and_a_stale_version_is_409() {
    let api = api(InMemoryTasks::default());
    let id = created(&api, "Old").await;
    let path = format!("/api/v1/tasks/{id}");
    let delete = |version: Option<&str>| {
        let c = call("DELETE", &path).user(ALICE);
        match version {
            Some(v) => c.header("if-match", v),
            None => c,
        }
    };
    let stale = send(&api, "DELETE", &path, delete(Some("\"7\""))).await;
    assert_eq!(stale.status, 409);
    let gone = send(&api, "DELETE", &path, delete(Some("\"1\""))).await;
    assert_eq!((gone.status, &gone.body), (204, &Value::Null));
    assert_eq!(send(&api, "DELETE", &path, delete(None)).await.status, 404);
}

#[tokio::test]
async fn storage_trouble_is_503_with_retry_after_and_a_failure_is_500() {
    let unavailable = api(Broken(|| StoreError::Unavailable("throttled".into())));
    let a = get(&unavailable, "/api/v1/tasks").await;
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_some(), "{a:?}");
    let broken = api(Broken(|| StoreError::Internal("unreadable row".into())));
    let a = post(&broken, "/api/v1/tasks", json!({ "title": "x" })).await;
    assert_eq!(a.status, 500);
    assert!(
        !a.body.to_string().contains("unreadable row"),
        "details stay in the logs"
    );
}

#[tokio::test]
async fn an_unknown_path_is_404_and_a_wrong_method_405_with_allow() {
    let api = api(InMemoryTasks::default());
    let a = get(&api, "/api/v1/tasks/a/b/c").await;
    assert_eq!((a.status, a.code()), (404, "route_not_found"));
    let path = "/api/v1/tasks";
    let a = send(&api, "PUT", path, call("PUT", path).user(ALICE)).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET, POST, OPTIONS"));
}

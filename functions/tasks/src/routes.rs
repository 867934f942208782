//! The REST routes of `/api/v1/tasks`, each a thin translation between HTTP
//! and the task service.

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use taskpilot_domain::{
    DomainError, IdempotencyKey, NewTaskInput, SearchText, Task, TaskFilter, TaskId,
    TaskPatchInput, TaskRepository, TaskService, UserId,
};
use taskpilot_http::json::{parse_body, respond};
use taskpilot_http::request::{Query, header, if_match_version};
use taskpilot_http::routes;
use taskpilot_http::{ApiError, Authenticator};

/// The collection path.
pub const BASE: &str = "/api/v1/tasks";

/// The handlers over a task repository (DynamoDB in `main`, the in-memory
/// fake in the tests), built once.
pub struct TasksApi<R> {
    service: TaskService<R>,
    auth: Authenticator,
}

/// What a path names.
enum Route {
    Collection,
    Item(String),
    Complete(String),
    Reopen(String),
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix(BASE)?;
        if rest.is_empty() {
            return Some(Route::Collection);
        }
        let segments: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
        match segments.as_slice() {
            [id] if !id.is_empty() => Some(Route::Item((*id).to_owned())),
            [id, "complete"] => Some(Route::Complete((*id).to_owned())),
            [id, "reopen"] => Some(Route::Reopen((*id).to_owned())),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Listing {
    tasks: Vec<Task>,
    next_cursor: Option<String>,
}

impl<R: TaskRepository> TasksApi<R> {
    /// Wires the service and the authenticator.
    pub fn new(service: TaskService<R>, auth: Authenticator) -> Self {
        Self { service, auth }
    }

    /// Routes, authenticates and answers one request.
    pub async fn handle(&self, req: Request) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let route = Route::parse(&path).ok_or_else(|| ApiError::RouteNotFound {
            method: method.to_string(),
            path: path.clone(),
        })?;
        let user = self.auth.authenticate(&req).await?;
        match (&route, &method) {
            (Route::Collection, &Method::GET) => self.list(&user, &req).await,
            (Route::Collection, &Method::POST) => self.create(&user, &req).await,
            (Route::Item(id), &Method::GET) => {
                let task = self.service.get(&user, &task_id(id)?).await?;
                Ok(task_response(StatusCode::OK, &task))
            }
            (Route::Item(id), &Method::PATCH) => self.update(&user, id, &req).await,
            (Route::Item(id), &Method::DELETE) => {
                let version = if_match_version(&req)?;
                self.service.delete(&user, &task_id(id)?, version).await?;
                Ok(Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Body::Empty)
                    .unwrap_or_default())
            }
            (Route::Complete(id), &Method::POST) => self.set_completed(&user, id, true).await,
            (Route::Reopen(id), &Method::POST) => self.set_completed(&user, id, false).await,
            _ => Err(routes::refused(&method, &path)),
        }
    }

    async fn list(&self, user: &UserId, req: &Request) -> Result<Response<Body>, ApiError> {
        let q = Query::new(
            req,
            &["completed", "tag", "due_before", "q", "limit", "cursor"],
        )?;
        let filter = TaskFilter {
            completed: q.parse(
                "completed",
                |v| match v {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                },
                "`true` or `false`",
            )?,
            tag: q.parse(
                "tag",
                |v| {
                    let v = v.trim();
                    (1..=32).contains(&v.chars().count()).then(|| v.to_owned())
                },
                "a tag of 1-32 characters",
            )?,
            due_before: q.parse(
                "due_before",
                |v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok(),
                "a date (YYYY-MM-DD)",
            )?,
        };
        let limit = q
            .parse(
                "limit",
                |v| v.parse::<usize>().ok().filter(|n| (1..=100).contains(n)),
                "an integer from 1 to 100",
            )?
            .unwrap_or(taskpilot_domain::service::DEFAULT_LIMIT);
        // Like the other filters: a value outside the rules is a 422.
        let search = q.get("q").map(SearchText::parse).transpose()?;
        let page = self
            .service
            .list_matching(user, filter, search, limit, q.get("cursor"))
            .await?;
        Ok(respond(
            StatusCode::OK,
            &Listing {
                tasks: page.tasks,
                next_cursor: page.next_cursor,
            },
        ))
    }

    async fn create(&self, user: &UserId, req: &Request) -> Result<Response<Body>, ApiError> {
        let key = header(req, "idempotency-key")?
            .map(IdempotencyKey::parse)
            .transpose()
            .map_err(|e| bad_parameter("Idempotency-Key", e))?;
        let input: NewTaskInput = parse_body(req)?;
        let created = self.service.create(user, input.validate()?, key).await?;
        let mut resp = task_response(StatusCode::CREATED, &created.task);
        let headers = resp.headers_mut();
        if let Ok(location) = format!("{BASE}/{}", created.task.id).parse() {
            headers.insert(http::header::LOCATION, location);
        }
        if created.replayed {
            headers.insert(
                "idempotent-replayed",
                http::HeaderValue::from_static("true"),
            );
        }
        Ok(resp)
    }

    async fn update(
        &self,
        user: &UserId,
        id: &str,
        req: &Request,
    ) -> Result<Response<Body>, ApiError> {
        let header_version = if_match_version(req)?;
        let input: TaskPatchInput = parse_body(req)?;
        let (patch, body_version) = input.validate()?;
        let version = match (header_version, body_version) {
            (Some(h), Some(b)) if h != b => {
                return Err(DomainError::validation(
                    "version",
                    format!("If-Match says {h} but the body says {b}; send one"),
                )
                .into());
            }
            (h, b) => h.or(b),
        };
        let task = self
            .service
            .update(user, &task_id(id)?, patch, version)
            .await?;
        Ok(task_response(StatusCode::OK, &task))
    }

    async fn set_completed(
        &self,
        user: &UserId,
        id: &str,
        completed: bool,
    ) -> Result<Response<Body>, ApiError> {
        let task = self
            .service
            .set_completed(user, &task_id(id)?, completed)
            .await?;
        Ok(task_response(StatusCode::OK, &task))
    }
}

/// A header or query parameter the domain refused: a 400 `invalid_parameter`
/// naming it.
fn bad_parameter(name: &str, e: DomainError) -> ApiError {
    ApiError::BadParameter {
        name: name.to_owned(),
        message: match e {
            DomainError::Validation { message, .. } => format!("{name} {message}"),
            other => other.to_string(),
        },
    }
}

/// A malformed id cannot name a task: answer as for a missing one.
fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).ok_or(ApiError::Domain(DomainError::NotFound("task")))
}

/// A task with its version as the ETag.
fn task_response(status: StatusCode, task: &Task) -> Response<Body> {
    let mut resp = respond(status, task);
    if let Ok(etag) = format!("\"{}\"", task.version).parse() {
        resp.headers_mut().insert(http::header::ETAG, etag);
    }
    resp
}

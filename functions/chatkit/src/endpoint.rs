//! `POST /api/v1/chatkit`: one endpoint, JSON or server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use lambda_http::{Body, Request, Response};
use tokio::sync::mpsc;

use taskpilot_chatkit::agent::TaskAgent;
use taskpilot_chatkit::context::{Caller, envelope_zone};
use taskpilot_chatkit::engine::{ChatError, Engine};
use taskpilot_chatkit::metrics::Metrics;
use taskpilot_chatkit::request::{FeedbackKind, Request as ChatRequest, RequestError};
use taskpilot_chatkit::sink::{Disconnected, EventSink};
use taskpilot_chatkit::types::{StreamEvent, sse_frame};
use taskpilot_domain::DomainError;
use taskpilot_http::json::{MAX_BODY_BYTES, respond};
use taskpilot_http::metrics::Emf;
use taskpilot_http::request::deadline;
use taskpilot_http::{ApiError, Cors};
use taskpilot_openai::OpenAi;
use taskpilot_store::DynamoStore;

use crate::identity::Identity;

/// Paths the endpoint answers (a Function URL may also be called at its root).
const PATHS: [&str; 2] = ["/api/v1/chatkit", "/"];
/// Streams stop this long before the Lambda deadline.
const FALLBACK_DEADLINE: Duration = Duration::from_secs(60);

/// The streamed or whole response body.
pub type OutBody = BoxBody<Bytes, std::io::Error>;

/// The engine with the task assistant, on DynamoDB and OpenAI.
pub type Server = Engine<DynamoStore, TaskAgent<DynamoStore, OpenAi>>;

/// The endpoint and its dependencies.
pub struct Endpoint {
    server: Server,
    identity: Identity,
    cors: Cors,
}

/// Sends events into the response body; a closed body means the client left.
struct ChannelSink(mpsc::Sender<Result<http_body::Frame<Bytes>, std::io::Error>>);

impl EventSink for ChannelSink {
    async fn send(&mut self, event: StreamEvent) -> Result<(), Disconnected> {
        let frame = http_body::Frame::data(Bytes::from(sse_frame(&event)));
        self.0.send(Ok(frame)).await.map_err(|_| Disconnected)
    }
}

fn whole(resp: Response<Body>) -> Response<OutBody> {
    let (parts, body) = resp.into_parts();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    Response::from_parts(
        parts,
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed(),
    )
}

fn chat_error(e: ChatError) -> ApiError {
    let bad = |name: &str, message: String| ApiError::BadParameter {
        name: name.into(),
        message,
    };
    match e {
        ChatError::NotFound(what) => ApiError::Domain(DomainError::NotFound(what)),
        e @ ChatError::NotAUserMessage(_) => bad("params.item_id", e.to_string()),
        e @ ChatError::NoPendingToolCall => bad("params.thread_id", e.to_string()),
        e @ ChatError::NotAWidget(_) => bad("params.item_id", e.to_string()),
        e @ (ChatError::NotAQuestion(_) | ChatError::NotPending(_)) => {
            bad("params.item_id", e.to_string())
        }
        ChatError::Refused(refused) => bad("params.action", refused.to_string()),
        e @ ChatError::Misrouted(_) => ApiError::Internal(e.to_string()),
        ChatError::Store(e) => e.into(),
    }
}

fn request_error(e: RequestError) -> ApiError {
    match e {
        RequestError::Malformed(m) => ApiError::MalformedJson(m),
        RequestError::InvalidParams { field, message } => ApiError::BadParameter {
            name: format!("params.{field}"),
            message: format!("params.{field}: {message}"),
        },
        RequestError::UnknownType(t) => ApiError::BadParameter {
            name: "type".into(),
            message: format!("unknown request type `{t}`"),
        },
        RequestError::NotSupported(what) => {
            ApiError::NotSupported(format!("`{what}` is not supported by this server"))
        }
    }
}

/// The assistant's counts as EMF lines: `TaskPilot` › `<name>` by `Function`.
pub struct EmfMetrics;

impl Metrics for EmfMetrics {
    fn count(&self, name: &'static str, value: u64) {
        Emf::new("TaskPilot")
            .dimension("Function", "chatkit")
            .metric(name, "Count", value)
            .print();
    }
}

/// `TaskPilot` › `Feedback` by `Kind`: one count per stored rating request.
fn feedback_metric(kind: FeedbackKind) {
    Emf::new("TaskPilot")
        .dimension("Kind", kind.as_str())
        .metric("Feedback", "Count", 1)
        .print();
}

impl Endpoint {
    /// Wires the server, identity and CORS.
    pub fn new(server: Server, identity: Identity, cors: Cors) -> Self {
        Self {
            server,
            identity,
            cors,
        }
    }

    /// Answers one request; never fails (errors are JSON responses).
    pub async fn handle(&'static self, req: Request) -> Result<Response<OutBody>, Infallible> {
        let origin = req.headers().get(http::header::ORIGIN).cloned();
        let mut resp = if Cors::is_preflight(&req) {
            whole(self.cors.preflight(&req))
        } else {
            match self.answer(req).await {
                Ok(resp) => resp,
                Err(e) => whole(e.into_response()),
            }
        };
        let mut probe = Request::default();
        if let Some(origin) = origin {
            probe.headers_mut().insert(http::header::ORIGIN, origin);
        }
        let mut decorated = Response::new(Body::Empty);
        *decorated.headers_mut() = std::mem::take(resp.headers_mut());
        self.cors.decorate(&probe, &mut decorated);
        *resp.headers_mut() = std::mem::take(decorated.headers_mut());
        Ok(resp)
    }

    async fn answer(&'static self, req: Request) -> Result<Response<OutBody>, ApiError> {
        let path = req.uri().path();
        if !PATHS.contains(&path) {
            return Err(ApiError::RouteNotFound {
                method: req.method().to_string(),
                path: path.to_owned(),
            });
        }
        if req.method() != http::Method::POST {
            return Err(ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allowed: "POST, OPTIONS".into(),
            });
        }
        let user = self.identity.user(&req).await?;
        let body: &[u8] = req.body().as_ref();
        if body.len() > MAX_BODY_BYTES * 4 {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES * 4,
            });
        }
        let request = ChatRequest::parse(body).map_err(request_error)?;
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let envelope_zone = envelope_zone(body);
        let caller = Caller::from_client(
            user,
            envelope_zone.as_deref(),
            header("x-timezone"),
            header("accept-language"),
        )
        .map_err(|e| ApiError::BadParameter {
            name: e.source_name.into(),
            message: e.to_string(),
        })?;
        let deadline = deadline(&req, FALLBACK_DEADLINE);
        if !request.is_streaming() {
            let rated = match &request {
                ChatRequest::Feedback { kind, .. } => Some(*kind),
                _ => None,
            };
            let value = self
                .server
                .json(&caller.user, request)
                .await
                .map_err(chat_error)?;
            if let Some(kind) = rated {
                feedback_metric(kind);
            }
            return Ok(whole(respond(StatusCode::OK, &value)));
        }
        self.identity.require_openai_key().await?;
        let prepared = self
            .server
            .prepare(&caller.user, request)
            .await
            .map_err(chat_error)?;
        let (tx, rx) = mpsc::channel(64);
        let server = &self.server;
        tokio::spawn(async move {
            let mut sink = ChannelSink(tx);
            server.run(&caller, prepared, &mut sink, deadline).await;
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let body = BodyExt::boxed(StreamBody::new(stream));
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .header(http::header::CACHE_CONTROL, "no-cache, no-transform")
            .header("x-accel-buffering", "no")
            .body(body)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}

//! `POST /api/v1/chatkit`: the HTTP side of the ChatKit endpoint. It routes,
//! verifies the token, applies the size limits before reading the body,
//! parses the request once, and hands it to the engine's one entry point
//! ([`Engine::process`]); a JSON answer is sent whole, a stream as
//! server-sent events. `POST /api/v1/chatkit/attachments` takes a direct
//! upload ([`crate::upload`], [`Engine::upload`]) with the same identity and
//! session checks. The shared runner (`serve::run_streaming`) adds CORS
//! (preflights included), the panic guard and the request log line.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody as FrameStream};
use lambda_http::{Request, Response};
use tokio::sync::mpsc;

use taskpilot_chatkit::attachments::{AttachmentError, AttachmentStore};
use taskpilot_chatkit::context::Caller;
use taskpilot_chatkit::dictation::{DictationError, Transcriber};
use taskpilot_chatkit::engine::{ChatError, Engine, Outcome, ProcessError, Streaming};
use taskpilot_chatkit::metrics::{FEEDBACK, Metrics};
use taskpilot_chatkit::request::{Envelope, FeedbackKind, Request as ChatRequest, RequestError};
use taskpilot_chatkit::responder::Responder;
use taskpilot_chatkit::sink::{Disconnected, EventSink};
use taskpilot_chatkit::store::ChatStore;
use taskpilot_chatkit::types::{StreamEvent, sse_frame};
use taskpilot_domain::DomainError;
use taskpilot_domain::budget::{BudgetGate, UsageStore};
use taskpilot_domain::session::{RateLimiter, SessionStore};
use taskpilot_http::ApiError;
use taskpilot_http::json::{MAX_BODY_BYTES, respond};
use taskpilot_http::metrics::Emf;
use taskpilot_http::request::deadline;
use taskpilot_http::serve::{ResponseBody, StreamBody};
use taskpilot_openai::TranscribeError;

use crate::gate::{CallerGate, refusal_metric, usage_metric};
use crate::identity::{Identity, Verified};
use crate::stream_report::StreamReport;
use crate::upload;

/// Paths the endpoint answers (a Function URL may also be called at its root).
const PATHS: [&str; 2] = ["/api/v1/chatkit", "/"];
/// Streams stop this long before the Lambda deadline.
const FALLBACK_DEADLINE: Duration = Duration::from_secs(60);

/// Largest request body: a dictation's audio (base64) within Lambda's 6 MB
/// request limit; every other request stays within [`MAX_CHAT_BODY`].
pub const MAX_TRANSCRIBE_BODY: usize = 6 * 1024 * 1024;
/// Largest body of a request other than `input.transcribe`.
const MAX_CHAT_BODY: usize = MAX_BODY_BYTES * 4;

/// The endpoint over its ports: the engine (a chat store `S`, a responder
/// `R`, attachments `A`, dictation `D`) and the store `P` of sessions and
/// the budget. Built once in `main`.
pub struct Endpoint<S, R, A, D, P> {
    server: Engine<S, R, A, D>,
    identity: Identity<P>,
    budget: BudgetGate<P>,
}

impl<S, R, A, D, P> Endpoint<S, R, A, D, P>
where
    S: ChatStore + 'static,
    R: Responder + 'static,
    A: AttachmentStore + 'static,
    D: Transcriber<Error = TranscribeError> + 'static,
    P: SessionStore + RateLimiter + UsageStore + 'static,
{
    /// Wires the engine, the identity and the budget.
    pub fn new(server: Engine<S, R, A, D>, identity: Identity<P>, budget: BudgetGate<P>) -> Self {
        Self {
            server,
            identity,
            budget,
        }
    }

    /// Answers one request.
    pub async fn answer(&'static self, req: Request) -> Result<Response<StreamBody>, ApiError> {
        let started = Instant::now();
        let path = req.uri().path();
        if upload::PATHS.contains(&path) {
            return self.upload(req).await;
        }
        if !PATHS.contains(&path) {
            return Err(ApiError::RouteNotFound {
                method: req.method().to_string(),
                path: path.to_owned(),
            });
        }
        let verified = self.caller_of(&req).await?;
        // The size limits come before parsing: only a dictation may carry
        // more than a chat request's limit.
        let body: &[u8] = req.body().as_ref();
        if body.len() > MAX_TRANSCRIBE_BODY {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_TRANSCRIBE_BODY,
            });
        }
        if body.len() > MAX_CHAT_BODY && !ChatRequest::is_dictation(body) {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_CHAT_BODY,
            });
        }
        let Envelope { request, zone } = Envelope::parse(body).map_err(request_error)?;
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let caller = Caller::from_client(
            verified.user().clone(),
            zone.as_deref(),
            header("x-timezone"),
            header("accept-language"),
        )
        .map_err(|e| ApiError::BadParameter {
            name: e.source_name.into(),
            message: e.to_string(),
        })?;
        let gate = CallerGate {
            identity: &self.identity,
            budget: &self.budget,
            verified: &verified,
            now: chrono::Utc::now(),
        };
        let outcome = self
            .server
            .process(caller, request, &gate, deadline(&req, FALLBACK_DEADLINE))
            .await
            .map_err(process_error)?;
        match outcome {
            Outcome::Json(answer) => {
                Ok(respond(StatusCode::OK, &answer).map(StreamBody::from_body))
            }
            Outcome::Stream(streaming) => event_stream(*streaming, started),
        }
    }

    /// Who sends a POST (405 for another method, 401 for an unknown caller).
    async fn caller_of(&self, req: &Request) -> Result<Verified, ApiError> {
        if req.method() != http::Method::POST {
            return Err(ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allowed: "POST, OPTIONS".into(),
            });
        }
        self.identity.verify(req).await.inspect_err(|_| {
            refusal_metric("unauthenticated");
        })
    }

    /// `POST /api/v1/chatkit/attachments`, a direct upload: the caller is
    /// verified as for the endpoint (a JWT, or a client secret whose session
    /// is checked), the body is held to Lambda's limit before it is read,
    /// the form is read, and the engine checks, stores and records the file
    /// (no turn is counted); the answer is the `Attachment`.
    async fn upload(&self, req: Request) -> Result<Response<StreamBody>, ApiError> {
        let verified = self.caller_of(&req).await?;
        let body: &[u8] = req.body().as_ref();
        if body.len() > upload::MAX_UPLOAD_BODY {
            return Err(ApiError::PayloadTooLarge {
                limit: upload::MAX_UPLOAD_BODY,
            });
        }
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let file = match upload::read(&content_type, req.into_body()).await {
            Ok(file) => file,
            Err(refused) => return Err(refused.into()),
        };
        let gate = CallerGate {
            identity: &self.identity,
            budget: &self.budget,
            verified: &verified,
            now: chrono::Utc::now(),
        };
        let attachment = self
            .server
            .upload(verified.user(), file, &gate)
            .await
            .map_err(upload_error)?;
        Ok(respond(StatusCode::OK, &attachment).map(StreamBody::from_body))
    }
}

/// Runs `streaming` on its own task, its events framed as server-sent events
/// into the response body as they come (a closed body means the client
/// left); its report and usage are logged when it ends.
fn event_stream<S, R, A, D>(
    streaming: Streaming<'static, S, R, A, D>,
    started: Instant,
) -> Result<Response<StreamBody>, ApiError>
where
    S: ChatStore + 'static,
    R: Responder + 'static,
    A: AttachmentStore + 'static,
    D: Transcriber + 'static,
{
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let user = streaming.caller().user.clone();
        let mut sink = ChannelSink {
            tx,
            report: StreamReport::new(started),
        };
        let spent = streaming.run(&mut sink).await;
        sink.report.line().print();
        usage_metric(&user, spent);
    });
    let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(http::header::CACHE_CONTROL, "no-cache, no-transform")
        .header("x-accel-buffering", "no")
        .body(BodyExt::boxed(FrameStream::new(frames)))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Sends events into the response body, noting each in the stream's report.
struct ChannelSink {
    tx: mpsc::Sender<Result<http_body::Frame<Bytes>, std::io::Error>>,
    report: StreamReport,
}

impl EventSink for ChannelSink {
    async fn send(&mut self, event: StreamEvent) -> Result<(), Disconnected> {
        self.report.observe(&event);
        let frame = http_body::Frame::data(Bytes::from(sse_frame(&event)));
        self.tx.send(Ok(frame)).await.map_err(|_| Disconnected)
    }
}

/// The one mapping of what `process` refused to the HTTP error.
fn process_error(e: ProcessError<ApiError, TranscribeError>) -> ApiError {
    match e {
        ProcessError::Refused(e) => e,
        ProcessError::Chat(e) => chat_error(e),
        ProcessError::Dictation(e) => dictation_error(e),
    }
}

/// What a direct upload was refused for: as `attachments.create` for the
/// same fault, but an empty or nameless file names the form's `file` field.
fn upload_error(e: ProcessError<ApiError, TranscribeError>) -> ApiError {
    match e {
        ProcessError::Chat(ChatError::Attachment(
            e @ (AttachmentError::Empty | AttachmentError::Unnamed),
        )) => ApiError::BadParameter {
            name: "file".into(),
            message: e.to_string(),
        },
        e => process_error(e),
    }
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
        ChatError::Options(invalid) => bad("params.input.inference_options", invalid.to_string()),
        ChatError::Attachment(e) => attachment_error(e),
        e @ (ChatError::AttachmentsDisabled | ChatError::DictationDisabled) => {
            ApiError::NotSupported(e.to_string())
        }
        e @ ChatError::Misrouted(_) => ApiError::Internal(e.to_string()),
        ChatError::Store(e) => e.into(),
    }
}

fn dictation_error(e: DictationError<TranscribeError>) -> ApiError {
    let message = e.to_string();
    let audio = |message| ApiError::BadParameter {
        name: "params.audio_base64".into(),
        message,
    };
    match e {
        DictationError::NotBase64(_) => audio(message),
        DictationError::TooLarge => ApiError::FileTooLarge(message),
        DictationError::Transcriber(e) => match e {
            TranscribeError::UnsupportedType(_) => ApiError::FileTypeNotAllowed(message),
            TranscribeError::EmptyAudio => audio(format!("params.audio_base64: {message}")),
            TranscribeError::NoSpeech => ApiError::Unprocessable {
                code: "no_speech",
                message,
            },
            TranscribeError::Upstream(e) => ApiError::Upstream(e),
        },
    }
}

fn attachment_error(e: AttachmentError) -> ApiError {
    let message = e.to_string();
    match e {
        AttachmentError::TypeNotAllowed(..) => ApiError::FileTypeNotAllowed(message),
        AttachmentError::TooLarge { .. } => ApiError::FileTooLarge(message),
        AttachmentError::Quota { .. } => ApiError::QuotaExceeded(message),
        AttachmentError::Empty => ApiError::BadParameter {
            name: "params.size".into(),
            message,
        },
        AttachmentError::Unnamed => ApiError::BadParameter {
            name: "params.name".into(),
            message,
        },
        AttachmentError::TooMany => ApiError::BadParameter {
            name: "params.input.attachments".into(),
            message,
        },
        AttachmentError::NotUploaded(_) => ApiError::Conflict {
            code: "attachment_not_uploaded",
            message,
        },
        AttachmentError::InUse(_) | AttachmentError::Taken => ApiError::Conflict {
            code: "attachment_in_use",
            message,
        },
        AttachmentError::Mismatch(_) => ApiError::Unprocessable {
            code: "attachment_mismatch",
            message,
        },
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

/// The assistant's counts as EMF lines: `TaskPilot` › `<name>` by `Function`,
/// and ratings as `TaskPilot` › `Feedback` by `Kind`.
pub struct EmfMetrics;

impl Metrics for EmfMetrics {
    fn count(&self, name: &'static str, value: u64) {
        Emf::new("TaskPilot")
            .dimension("Function", "chatkit")
            .metric(name, "Count", value)
            .print();
    }

    fn feedback(&self, kind: FeedbackKind) {
        Emf::new("TaskPilot")
            .dimension("Kind", kind.as_str())
            .metric(FEEDBACK, "Count", 1)
            .print();
    }
}

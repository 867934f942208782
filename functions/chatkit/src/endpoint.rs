//! `POST /api/v1/chatkit`: one endpoint, JSON or server-sent events.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use lambda_http::{Body, Request, Response};
use tokio::sync::mpsc;

use taskpilot_chatkit::agent::TaskAgent;
use taskpilot_chatkit::attachments::AttachmentError;
use taskpilot_chatkit::context::{Caller, envelope_zone};
use taskpilot_chatkit::engine::{ChatError, Engine};
use taskpilot_chatkit::metrics::Metrics;
use taskpilot_chatkit::request::{FeedbackKind, Request as ChatRequest, RequestError};
use taskpilot_chatkit::sink::{Disconnected, EventSink};
use taskpilot_chatkit::turn::{Meter, Spent};
use taskpilot_chatkit::types::{StreamEvent, sse_frame};
use taskpilot_domain::budget::{Admission, BudgetGate, Refusal};
use taskpilot_domain::{DomainError, UserId};
use taskpilot_files::S3Files;
use taskpilot_http::json::{MAX_BODY_BYTES, respond};
use taskpilot_http::metrics::Emf;
use taskpilot_http::request::deadline;
use taskpilot_http::{ApiError, Cors};
use taskpilot_openai::{OpenAi, TranscribeError, audio_extension};
use taskpilot_store::DynamoStore;

use crate::identity::Identity;
use crate::stream_report::StreamReport;

/// Paths the endpoint answers (a Function URL may also be called at its root).
const PATHS: [&str; 2] = ["/api/v1/chatkit", "/"];
/// Streams stop this long before the Lambda deadline.
const FALLBACK_DEADLINE: Duration = Duration::from_secs(60);

/// The streamed or whole response body.
pub type OutBody = BoxBody<Bytes, std::io::Error>;

/// The engine with the task assistant, on DynamoDB, OpenAI and S3.
pub type Server = Engine<DynamoStore, TaskAgent<DynamoStore, OpenAi>, S3Files>;

/// Largest request body: a dictation's audio (base64) within Lambda's 6 MB
/// request limit; every other request stays within [`MAX_CHAT_BODY`].
pub const MAX_TRANSCRIBE_BODY: usize = 6 * 1024 * 1024;
/// Largest body of a request other than `input.transcribe`.
const MAX_CHAT_BODY: usize = MAX_BODY_BYTES * 4;
/// Most audio one dictation may carry, decoded.
pub const MAX_AUDIO_BYTES: usize = 4 * 1024 * 1024;

/// Dictation: the OpenAI client and the transcription model.
pub struct Dictation {
    /// The client (sharing the assistant's key cache).
    pub openai: OpenAi,
    /// `CHATKIT_TRANSCRIBE_MODEL`.
    pub model: String,
}

/// The endpoint and its dependencies.
pub struct Endpoint {
    server: Server,
    identity: Identity,
    gate: BudgetGate<DynamoStore>,
    cors: Cors,
    dictation: Dictation,
}

/// Sends events into the response body (a closed body means the client
/// left), noting each in the stream's report.
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
        ChatError::Attachment(e) => attachment_error(e),
        e @ ChatError::AttachmentsDisabled => ApiError::NotSupported(e.to_string()),
        e @ ChatError::Misrouted(_) => ApiError::Internal(e.to_string()),
        ChatError::Store(e) => e.into(),
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
        AttachmentError::InUse(_) => ApiError::Conflict {
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

/// A dictation's audio, decoded and bounded: 415 for a type OpenAI does not
/// take, 400 for bad base64, 413 past [`MAX_AUDIO_BYTES`].
fn decoded_audio(audio_base64: &str, mime_type: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    if audio_extension(mime_type).is_none() {
        return Err(ApiError::FileTypeNotAllowed(
            TranscribeError::UnsupportedType(mime_type.chars().take(100).collect()).to_string(),
        ));
    }
    let audio = base64::engine::general_purpose::STANDARD
        .decode(audio_base64.trim())
        .map_err(|e| ApiError::BadParameter {
            name: "params.audio_base64".into(),
            message: format!("params.audio_base64: not base64 ({e})"),
        })?;
    if audio.len() > MAX_AUDIO_BYTES {
        return Err(ApiError::FileTooLarge(format!(
            "a dictation is at most {} MB of audio",
            MAX_AUDIO_BYTES / (1024 * 1024)
        )));
    }
    Ok(audio)
}

/// A budget refusal as the answer (and its metric).
fn over_budget(refusal: Refusal) -> ApiError {
    refusal_metric(refusal.reason());
    ApiError::OverBudget(refusal)
}

/// `TaskPilot` › `ChatRefusals` by `Function` and `Reason`
/// (`unauthenticated`, `session_requests_per_minute`, `turns_per_minute`,
/// `tokens_per_day`): one count per refused request.
fn refusal_metric(reason: &'static str) {
    Emf::new("TaskPilot")
        .dimension("Function", "chatkit")
        .dimension("Reason", reason)
        .metric("ChatRefusals", "Count", 1)
        .print();
}

/// After a turn that asked the model: `TaskPilot` › `InputTokens`,
/// `CachedInputTokens`, `OutputTokens` and `ModelRounds` by `Function`, and a
/// `turn usage` log line naming the user, for finding who spends.
fn usage_metric(user: &UserId, spent: Spent) {
    if spent.rounds == 0 {
        return;
    }
    let tokens = spent.tokens;
    tracing::info!(
        user = user.as_str(),
        input_tokens = tokens.input,
        cached_input_tokens = tokens.cached_input,
        output_tokens = tokens.output,
        rounds = spent.rounds,
        "turn usage"
    );
    Emf::new("TaskPilot")
        .dimension("Function", "chatkit")
        .metric("InputTokens", "Count", tokens.input)
        .metric("CachedInputTokens", "Count", tokens.cached_input)
        .metric("OutputTokens", "Count", tokens.output)
        .metric("ModelRounds", "Count", u64::from(spent.rounds))
        .print();
}

/// `TaskPilot` › `Feedback` by `Kind`: one count per stored rating request.
fn feedback_metric(kind: FeedbackKind) {
    Emf::new("TaskPilot")
        .dimension("Kind", kind.as_str())
        .metric("Feedback", "Count", 1)
        .print();
}

impl Endpoint {
    /// Wires the server, identity, budget, CORS and dictation.
    pub fn new(
        server: Server,
        identity: Identity,
        gate: BudgetGate<DynamoStore>,
        cors: Cors,
        dictation: Dictation,
    ) -> Self {
        Self {
            server,
            identity,
            gate,
            cors,
            dictation,
        }
    }

    /// Counts a turn against the user's budget; over it, the 429.
    async fn admit(
        &self,
        user: &UserId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Admission, ApiError> {
        self.gate.admit(user, now).await?.map_err(over_budget)
    }

    /// The session's verdict first (401 or the session's 429), then the
    /// budget's; an admitted turn refused by the session is given back.
    async fn settle(
        &self,
        user: &UserId,
        session: Result<(), ApiError>,
        admitted: Result<Option<Admission>, ApiError>,
    ) -> Result<Option<Admission>, ApiError> {
        if let Err(e) = session {
            if let Ok(Some(admission)) = &admitted {
                self.give_back(user, admission).await;
            }
            match e {
                ApiError::RateLimited { .. } => refusal_metric("session_requests_per_minute"),
                ApiError::Unauthorized(_) => refusal_metric("unauthenticated"),
                _ => {}
            }
            return Err(e);
        }
        admitted
    }

    /// Gives back an admitted turn that will not reach the model.
    async fn give_back(&self, user: &UserId, admission: &Admission) {
        if let Err(e) = self.gate.give_back(user, admission).await {
            tracing::warn!(error = %e, "could not give back an unused turn");
        }
    }

    /// `input.transcribe`: OpenAI's transcription of `audio`, `{"text": …}`;
    /// the tokens it cost are charged to the admitted turn's day.
    async fn transcribe(
        &self,
        user: &UserId,
        admitted: Option<Admission>,
        audio: &[u8],
        mime_type: &str,
        deadline: Instant,
    ) -> Result<Response<OutBody>, ApiError> {
        let transcript = self
            .dictation
            .openai
            .transcribe(audio, mime_type, &self.dictation.model, deadline)
            .await
            .map_err(|e| match e {
                TranscribeError::UnsupportedType(_) => ApiError::FileTypeNotAllowed(e.to_string()),
                TranscribeError::EmptyAudio => ApiError::BadParameter {
                    name: "params.audio_base64".into(),
                    message: format!("params.audio_base64: {e}"),
                },
                TranscribeError::NoSpeech => ApiError::Unprocessable {
                    code: "no_speech",
                    message: e.to_string(),
                },
                TranscribeError::Upstream(e) => ApiError::Upstream(e),
            })?;
        if let (Some(admission), Some(tokens)) = (admitted, transcript.usage) {
            if let Err(e) = self.gate.charge(user, &admission, tokens).await {
                tracing::error!(error = %e, "could not charge a dictation");
            }
            usage_metric(user, Spent { tokens, rounds: 1 });
        }
        tracing::info!(
            audio_bytes = audio.len(),
            chars = transcript.text.chars().count(),
            "dictation transcribed"
        );
        Ok(whole(respond(
            StatusCode::OK,
            &serde_json::json!({ "text": transcript.text }),
        )))
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
        let started = Instant::now();
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
        let verified = self.identity.verify(&req).await.inspect_err(|_| {
            refusal_metric("unauthenticated");
        })?;
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
        let request = ChatRequest::parse(body).map_err(request_error)?;
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let envelope_zone = envelope_zone(body);
        let caller = Caller::from_client(
            verified.user().clone(),
            envelope_zone.as_deref(),
            header("x-timezone"),
            header("accept-language"),
        )
        .map_err(|e| ApiError::BadParameter {
            name: e.source_name.into(),
            message: e.to_string(),
        })?;
        let deadline = deadline(&req, FALLBACK_DEADLINE);
        let now = chrono::Utc::now();
        let asks_model = request.asks_model();
        // A refusal this process already knows costs no request at all.
        if asks_model && let Some(refusal) = self.gate.known_refusal(&caller.user, now) {
            return Err(over_budget(refusal));
        }
        if let ChatRequest::Transcribe {
            audio_base64,
            mime_type,
        } = &request
        {
            // Bad audio is refused before it counts against the budget.
            let audio = decoded_audio(audio_base64, mime_type)?;
            let (session, admitted) =
                futures_util::join!(self.identity.check_session(&verified, now), async {
                    self.admit(&caller.user, now).await.map(Some)
                });
            let admitted = self.settle(&caller.user, session, admitted).await?;
            if let Err(e) = self.identity.require_openai_key().await {
                if let Some(admission) = &admitted {
                    self.give_back(&caller.user, admission).await;
                }
                return Err(e);
            }
            return self
                .transcribe(&caller.user, admitted, &audio, mime_type, deadline)
                .await;
        }
        if !request.is_streaming() {
            self.identity.check_session(&verified, now).await?;
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
        // The session, the budget and the thread are read concurrently: the
        // turn's critical path gains no round trip. Whatever refuses the
        // request, an admitted turn is given back, and nothing was written.
        let (session, admitted, prepared) = futures_util::join!(
            self.identity.check_session(&verified, now),
            async {
                match asks_model {
                    true => self.admit(&caller.user, now).await.map(Some),
                    false => Ok(None),
                }
            },
            self.server.prepare(&caller.user, request)
        );
        let admitted = self.settle(&caller.user, session, admitted).await?;
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                if let Some(admission) = &admitted {
                    self.give_back(&caller.user, admission).await;
                }
                return Err(chat_error(e));
            }
        };
        let prepared = match admitted {
            Some(admission) if prepared.reaches_model() => prepared.metered(Meter {
                day: admission.day,
                used: admission.used.tokens.total(),
                budget: self.gate.budget(),
            }),
            Some(admission) => {
                self.give_back(&caller.user, &admission).await;
                prepared
            }
            None => prepared,
        };
        let (tx, rx) = mpsc::channel(64);
        let server = &self.server;
        tokio::spawn(async move {
            let mut sink = ChannelSink {
                tx,
                report: StreamReport::new(started),
            };
            let spent = server.run(&caller, prepared, &mut sink, deadline).await;
            sink.report.line().print();
            usage_metric(&caller.user, spent);
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

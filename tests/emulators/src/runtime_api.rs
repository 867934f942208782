//! A Lambda Runtime API on 127.0.0.1 that runs a function's real binary.
//!
//! Like Lambda, each process handles one invocation at a time; the pool
//! starts another process when every running one is busy (up to a cap), kills
//! a process whose invocation outlives the timeout, and reports init failures
//! and crashes as invocation errors.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

use crate::Result;
use crate::http_server::{Body, full};

/// How an invocation ended, other than with a response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The handler reported an error (`/invocation/{id}/error`).
    #[error("function error: {0}")]
    Function(String),
    /// The invocation outlived the function's timeout; the process was killed.
    #[error("task timed out after {0:?}")]
    Timeout(Duration),
    /// The process exited during the invocation or failed to initialise.
    #[error("runtime exited: {0}")]
    Crashed(String),
}

/// What the function answered (a streamed answer collected whole).
pub type InvokeResult = std::result::Result<Bytes, InvokeError>;

/// A function's answer: whole, or streamed as it is produced (response
/// streaming: a JSON prelude, eight NUL bytes, then the body).
pub enum Answer {
    /// `POST …/response` with a complete body.
    Whole(Bytes),
    /// `POST …/response` in streaming mode; chunks arrive as the function writes them.
    Streamed(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

/// Splits a streamed answer into its prelude and body.
pub fn split_prelude(raw: &[u8]) -> Option<(serde_json::Value, Bytes)> {
    let at = raw.windows(8).position(|w| w == [0u8; 8])?;
    let prelude = serde_json::from_slice(&raw[..at]).ok()?;
    Some((prelude, Bytes::copy_from_slice(&raw[at + 8..])))
}

/// Settings of one function.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// Function (and binary) name.
    pub name: String,
    /// Path of the bootstrap binary.
    pub binary: PathBuf,
    /// Environment of the process (nothing else is inherited but `PATH`).
    pub env: Vec<(String, String)>,
    /// Invocation timeout.
    pub timeout: Duration,
    /// Most processes running at once.
    pub max_instances: usize,
    /// Print the function's output to the terminal, prefixed with its name.
    pub echo_logs: bool,
}

struct Job {
    event: Bytes,
    reply: oneshot::Sender<std::result::Result<Answer, InvokeError>>,
}

struct Shared {
    config: FunctionConfig,
    queue: Mutex<VecDeque<Job>>,
    job_ready: Notify,
    busy: AtomicUsize,
    instances: AtomicUsize,
    started: AtomicU64,
    logs: Mutex<Vec<String>>,
    pids: Mutex<Vec<u32>>,
    /// When each invocation was handed to a process, while recorded.
    handoffs: Mutex<Option<Vec<Instant>>>,
}

/// A running function: a pool of processes behind Runtime API endpoints.
#[derive(Clone)]
pub struct LambdaFunction {
    shared: Arc<Shared>,
}

impl LambdaFunction {
    /// Starts the pool (no process runs until the first invocation, unless
    /// [`LambdaFunction::prewarm`] is called).
    pub fn new(config: FunctionConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                queue: Mutex::new(VecDeque::new()),
                job_ready: Notify::new(),
                busy: AtomicUsize::new(0),
                instances: AtomicUsize::new(0),
                started: AtomicU64::new(0),
                logs: Mutex::new(Vec::new()),
                pids: Mutex::new(Vec::new()),
                handoffs: Mutex::new(None),
            }),
        }
    }

    /// The function's settings (to start an identical, separate pool).
    pub fn config(&self) -> FunctionConfig {
        self.shared.config.clone()
    }

    /// The function's name (its binary's).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Starts one process now (a cold start before the first request).
    pub async fn prewarm(&self) -> Result<()> {
        if self.shared.instances.load(Ordering::SeqCst) == 0 {
            self.shared.instances.fetch_add(1, Ordering::SeqCst);
            spawn_instance(self.shared.clone()).await?;
        }
        Ok(())
    }

    /// Invokes the function with a raw event and waits for its whole answer.
    pub async fn invoke(&self, event: impl Into<Bytes>) -> InvokeResult {
        match self.invoke_answer(event).await? {
            Answer::Whole(bytes) => Ok(bytes),
            Answer::Streamed(mut rx) => {
                let mut all = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    all.extend_from_slice(&chunk.map_err(|e| InvokeError::Crashed(e.to_string()))?);
                }
                Ok(Bytes::from(all))
            }
        }
    }

    /// Invokes the function and returns its answer as soon as it starts.
    pub async fn invoke_answer(
        &self,
        event: impl Into<Bytes>,
    ) -> std::result::Result<Answer, InvokeError> {
        let (reply, answer) = oneshot::channel();
        lock(&self.shared.queue).push_back(Job {
            event: event.into(),
            reply,
        });
        self.shared.job_ready.notify_one();
        self.scale().await;
        answer
            .await
            .unwrap_or_else(|_| Err(InvokeError::Crashed("invocation was dropped".into())))
    }

    async fn scale(&self) {
        scale(&self.shared).await;
    }

    /// Every line the function's processes printed so far.
    pub fn logs(&self) -> Vec<String> {
        lock(&self.shared.logs).clone()
    }

    /// The first line the function printed that `wanted` accepts, waiting
    /// for it (its output is read from a pipe, so it can arrive after the
    /// response) up to `bound`.
    pub async fn wait_for_log(
        &self,
        wanted: impl Fn(&str) -> bool,
        bound: std::time::Duration,
    ) -> Option<String> {
        let started = std::time::Instant::now();
        loop {
            if let Some(line) = lock(&self.shared.logs).iter().find(|l| wanted(l)) {
                return Some(line.clone());
            }
            if started.elapsed() > bound {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Process ids of the processes started so far (for CPU and memory readings).
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.shared.pids).clone()
    }

    /// How many processes were started (cold starts).
    pub fn cold_starts(&self) -> u64 {
        self.shared.started.load(Ordering::SeqCst)
    }

    /// Starts recording the moment each invocation is handed to a process
    /// (dropping an earlier record), to be read with
    /// [`LambdaFunction::take_handoffs`].
    pub fn record_handoffs(&self) {
        *lock(&self.shared.handoffs) = Some(Vec::new());
    }

    /// Stops recording and returns, in order, the moments since
    /// [`LambdaFunction::record_handoffs`] at which an invocation was handed to
    /// a process: the answer to its waiting `GET …/runtime/invocation/next`,
    /// taken just before that answer (the event) is written to the socket.
    pub fn take_handoffs(&self) -> Vec<Instant> {
        let mut moments = lock(&self.shared.handoffs).take().unwrap_or_default();
        moments.sort_unstable();
        moments
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail_one(s: &Shared, error: InvokeError) {
    if let Some(job) = lock(&s.queue).pop_front() {
        let _ = job.reply.send(Err(error));
    }
}

impl Instance {
    /// Takes the current invocation (if it is `id`, or any when `None`)
    /// without marking the process free.
    fn take(&self, id: Option<&str>) -> Option<Current> {
        let mut slot = lock(&self.current);
        let matches = match (slot.as_ref(), id) {
            (Some(c), Some(id)) => c.request_id == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if matches { slot.take() } else { None }
    }

    /// Ends the current invocation and marks the process free.
    fn finish(&self, id: Option<&str>) -> Option<Current> {
        let taken = self.take(id);
        if taken.is_some() {
            self.shared.busy.fetch_sub(1, Ordering::SeqCst);
        }
        taken
    }
}

/// The invocation a process is working on.
struct Current {
    request_id: String,
    reply: oneshot::Sender<std::result::Result<Answer, InvokeError>>,
    /// When the invocation times out.
    deadline: tokio::time::Instant,
}

struct Instance {
    shared: Arc<Shared>,
    current: Mutex<Option<Current>>,
    served: AtomicU64,
    kill: Notify,
}

/// Starts a process when queued work has none free to take it (up to
/// `max_instances`).
fn scale(s: &Arc<Shared>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move {
        let queued = lock(&s.queue).len();
        // Processes that are not working on an invocation (including ones still
        // starting) will take queued work; start another only when they cannot.
        let free = s
            .instances
            .load(Ordering::SeqCst)
            .saturating_sub(s.busy.load(Ordering::SeqCst));
        if queued <= free {
            return;
        }
        let grew = s
            .instances
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < s.config.max_instances).then_some(n + 1)
            })
            .is_ok();
        if grew {
            lock(&s.logs).push(format!(
                "[runtime] starting a process: {queued} queued, {free} free"
            ));
        }
        if grew && let Err(e) = spawn_instance(s.clone()).await {
            s.instances.fetch_sub(1, Ordering::SeqCst);
            fail_one(
                s,
                InvokeError::Crashed(format!("cannot start process: {e}")),
            );
        }
    })
}

/// The command that starts `cfg`'s bootstrap as Lambda does: nothing
/// inherited but `PATH`, Lambda's reserved variables (the Runtime API at
/// `runtime_api`), then the function's own; no stdin; killed when dropped.
/// The caller decides where its output goes.
pub fn bootstrap_command(
    cfg: &FunctionConfig,
    runtime_api: std::net::SocketAddr,
    log_stream: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&cfg.binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &cfg.name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", cfg.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream)
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn spawn_instance(shared: Arc<Shared>) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let number = shared.started.fetch_add(1, Ordering::SeqCst) + 1;
    let cfg = &shared.config;
    let mut cmd = bootstrap_command(cfg, addr, &format!("local/{number}"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cfg.binary.display()))?;
    if let Some(pid) = child.id() {
        lock(&shared.pids).push(pid);
    }
    let instance = Arc::new(Instance {
        shared: shared.clone(),
        current: Mutex::new(None),
        served: AtomicU64::new(0),
        kill: Notify::new(),
    });
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let shared = shared.clone();
        let prefix = format!("[{}#{number}]", cfg.name);
        readers.push(tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if shared.config.echo_logs {
                    eprintln!("{prefix} {line}");
                }
                lock(&shared.logs).push(line);
            }
        }));
    }
    // Serve the Runtime API for this process.
    let server = {
        let instance = instance.clone();
        crate::http_server::serve(listener, move |req, _| instance.clone().route(req))
    };
    // Reap the process; fail whatever it was doing.
    tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            _ = instance.kill.notified() => {
                let _ = child.kill().await;
                "killed after timeout".to_owned()
            }
        };
        server.abort();
        // Its last lines (an init error's message) are logged before its exit
        // is reported: the readers end at the pipes' EOF.
        for reader in readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        lock(&instance.shared.logs).push(format!("[runtime] process exited: {status}"));
        instance.shared.instances.fetch_sub(1, Ordering::SeqCst);
        let current = instance.finish(None);
        if let Some(current) = current {
            let _ = current
                .reply
                .send(Err(InvokeError::Crashed(status.clone())));
        } else if instance.served.load(Ordering::SeqCst) == 0 {
            // Died before asking for work: an init failure fails a waiting job.
            let tail: Vec<String> = lock(&instance.shared.logs)
                .iter()
                .rev()
                .take(5)
                .cloned()
                .collect();
            fail_one(
                &instance.shared,
                InvokeError::Crashed(format!("init failed ({status}): {}", tail.join(" | "))),
            );
        }
        // Work queued while this process was dying gets another one.
        scale(&instance.shared).await;
    });
    Ok(())
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body.into()));
    *resp.status_mut() = status;
    resp
}

impl Instance {
    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
            return reply(StatusCode::NOT_FOUND, "unknown path");
        };
        match (req.method(), rest) {
            (&Method::GET, "invocation/next") => self.next().await,
            (&Method::POST, "init/error") => {
                let body = read_body(req).await;
                let message = String::from_utf8_lossy(&body).into_owned();
                lock(&self.shared.logs).push(format!("init error: {message}"));
                reply(StatusCode::ACCEPTED, "{}")
            }
            (&Method::POST, rest) if rest.starts_with("invocation/") => {
                let mut parts = rest["invocation/".len()..].splitn(2, '/');
                let (id, action) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let streaming = req
                    .headers()
                    .get("lambda-runtime-function-response-mode")
                    .is_some_and(|v| v == "streaming");
                if action == "response" && streaming {
                    return self.forward_stream(id, req).await;
                }
                let body = read_body(req).await;
                let result = match action {
                    "response" => Ok(Answer::Whole(body)),
                    "error" => Err(InvokeError::Function(
                        String::from_utf8_lossy(&body).into_owned(),
                    )),
                    _ => return reply(StatusCode::NOT_FOUND, "unknown action"),
                };
                match self.finish(Some(id)) {
                    Some(c) => {
                        let _ = c.reply.send(result);
                        reply(StatusCode::ACCEPTED, "{}")
                    }
                    None => reply(StatusCode::BAD_REQUEST, "unknown request id"),
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "unknown path"),
        }
    }

    /// Passes a streamed response on as it arrives. When the receiver is gone
    /// (the client left) reading stops and the connection closes, which is how
    /// the function learns of the disconnect.
    async fn forward_stream(&self, id: &str, req: Request<Incoming>) -> Response<Body> {
        let Some(current) = self.take(Some(id)) else {
            return reply(StatusCode::BAD_REQUEST, "unknown request id");
        };
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let _ = current.reply.send(Ok(Answer::Streamed(rx)));
        let mut body = req.into_body();
        // A streamed answer is bound by the timeout too, whether the function
        // is slow to write or the client slow to read: at the deadline the
        // stream is cut and the process stopped, as Lambda does.
        loop {
            let step = tokio::time::timeout_at(current.deadline, async {
                let Some(frame) = body.frame().await else {
                    return false;
                };
                match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => tx.send(Ok(data)).await.is_ok(),
                        Err(_) => true, // trailers (mid-stream error reports)
                    },
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        false
                    }
                }
            })
            .await;
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    let timeout = self.shared.config.timeout;
                    lock(&self.shared.logs).push(format!(
                        "[runtime] the streamed invocation timed out after {timeout:?}; process killed"
                    ));
                    let _ = tx.try_send(Err(std::io::Error::other(format!(
                        "Task timed out after {timeout:?}"
                    ))));
                    self.kill.notify_one();
                    break;
                }
            }
        }
        drop(tx);
        self.shared.busy.fetch_sub(1, Ordering::SeqCst);
        reply(StatusCode::ACCEPTED, "{}")
    }

    async fn next(self: &Arc<Self>) -> Response<Body> {
        let s = &self.shared;
        let job = loop {
            let notified = s.job_ready.notified();
            if let Some(job) = lock(&s.queue).pop_front() {
                break job;
            }
            notified.await;
        };
        s.busy.fetch_add(1, Ordering::SeqCst);
        // Another job may be waiting for an idle process.
        if !lock(&s.queue).is_empty() {
            s.job_ready.notify_one();
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        let request_id = ulid::Ulid::new().to_string().to_lowercase();
        let timeout = s.config.timeout;
        let deadline = SystemTime::now() + timeout;
        let deadline_ms = deadline
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        *lock(&self.current) = Some(Current {
            request_id: request_id.clone(),
            reply: job.reply,
            deadline: tokio::time::Instant::now() + timeout,
        });
        // Enforce the timeout: kill the process if this invocation is still running.
        let watchdog = self.clone();
        let watched = request_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(c) = watchdog.finish(Some(&watched)) {
                let _ = c.reply.send(Err(InvokeError::Timeout(timeout)));
                watchdog.kill.notify_one();
            }
        });
        let arn = format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            s.config.name
        );
        let mut resp = reply(StatusCode::OK, job.event);
        let headers = resp.headers_mut();
        let pairs = [
            ("lambda-runtime-aws-request-id", request_id),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", arn),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
            ),
            ("content-type", "application/json".to_owned()),
        ];
        for (name, value) in pairs {
            if let Ok(v) = value.parse() {
                headers.insert(name, v);
            }
        }
        if let Some(moments) = lock(&s.handoffs).as_mut() {
            moments.push(Instant::now());
        }
        resp
    }
}

async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

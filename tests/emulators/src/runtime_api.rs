//! A Lambda Runtime API on 127.0.0.1 that runs a function's real binary.
//!
//! Like Lambda, each process handles one invocation at a time; the pool
//! starts another process when every running one is busy (up to a cap), kills
//! a process whose invocation outlives the timeout, and reports init failures
//! and crashes as invocation errors.
//!
//! The binary can be replaced while the function runs
//! ([`LambdaFunction::replace_binary`]): invocations from then on go to
//! processes of the new binary, and the old processes stop once they are not
//! working on an invocation (a streamed answer is never cut).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot, watch};

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
    /// Path of the bootstrap binary (the one the function started with; see
    /// [`LambdaFunction::replace_binary`]).
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

/// The invocations waiting for a process, and the generation of processes
/// that may take them: one lock, so that no invocation queued after a swap
/// goes to a process of the old binary.
struct Queue {
    jobs: VecDeque<Job>,
    pool: Arc<Pool>,
}

/// One generation of processes: those started from one binary.
struct Pool {
    binary: PathBuf,
    /// 0 for the first binary, one more for each replacement.
    generation: u64,
    /// Processes of this generation running or starting.
    instances: AtomicUsize,
    /// Of those, the ones working on an invocation.
    busy: AtomicUsize,
}

impl Pool {
    fn new(binary: PathBuf, generation: u64) -> Arc<Self> {
        Arc::new(Self {
            binary,
            generation,
            instances: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        })
    }
}

struct Shared {
    /// The settings; `config.binary` is the first binary (the current one is
    /// the queue's pool's).
    config: FunctionConfig,
    queue: Mutex<Queue>,
    job_ready: Notify,
    started: AtomicU64,
    logs: Mutex<LogLines>,
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
        let pool = Pool::new(config.binary.clone(), 0);
        Self {
            shared: Arc::new(Shared {
                config,
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    pool,
                }),
                job_ready: Notify::new(),
                started: AtomicU64::new(0),
                logs: Mutex::new(LogLines::default()),
                pids: Mutex::new(Vec::new()),
                handoffs: Mutex::new(None),
            }),
        }
    }

    /// The function's settings (to start an identical, separate pool), with
    /// the binary it runs now.
    pub fn config(&self) -> FunctionConfig {
        let mut config = self.shared.config.clone();
        config.binary = self.binary();
        config
    }

    /// The binary new processes start from.
    pub fn binary(&self) -> PathBuf {
        lock(&self.shared.queue).pool.binary.clone()
    }

    /// How many times the binary was replaced ([`LambdaFunction::replace_binary`]).
    pub fn generation(&self) -> u64 {
        lock(&self.shared.queue).pool.generation
    }

    /// Runs `binary` from now on: every invocation not yet handed to a
    /// process goes to a process of `binary` (started as needed, like a cold
    /// start); the processes of the previous binary stop, the idle ones now,
    /// the busy ones once their invocation ends (a streamed answer is passed
    /// on whole). `binary` must stay in place, unchanged, while the function
    /// runs: give each build its own path.
    pub async fn replace_binary(&self, binary: PathBuf) {
        let (old, generation) = {
            let mut queue = lock(&self.shared.queue);
            let generation = queue.pool.generation + 1;
            let old = std::mem::replace(&mut queue.pool, Pool::new(binary.clone(), generation));
            (old, generation)
        };
        lock(&self.shared.logs).push(format!(
            "[runtime] binary replaced by {} (generation {generation}); {} of the previous \
             binary's processes busy, stopped when done",
            binary.display(),
            old.busy.load(Ordering::SeqCst),
        ));
        // Idle processes of the previous binary wake, see they are stale and stop.
        self.shared.job_ready.notify_waiters();
        // Invocations already queued need a process of the new binary.
        scale(&self.shared).await;
    }

    /// The function's name (its binary's).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Starts one process now (a cold start before the first request).
    pub async fn prewarm(&self) -> Result<()> {
        let pool = lock(&self.shared.queue).pool.clone();
        if pool
            .instances
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && let Err(e) = spawn_instance(self.shared.clone(), pool.clone()).await
        {
            pool.instances.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
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
        lock(&self.shared.queue).jobs.push_back(Job {
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

    /// The lines the function's processes printed so far (the latest
    /// [`LogLines::KEPT`] at least, when there were more).
    pub fn logs(&self) -> Vec<String> {
        lock(&self.shared.logs).0.clone()
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

/// A function's output lines, the oldest dropped once there are many (a
/// local stack may run for days): between [`LogLines::KEPT`] and twice that
/// are kept.
#[derive(Default)]
struct LogLines(Vec<String>);

impl LogLines {
    /// How many of the latest lines are always kept.
    const KEPT: usize = 10_000;

    fn push(&mut self, line: String) {
        if self.0.len() >= 2 * Self::KEPT {
            self.0.drain(..Self::KEPT);
        }
        self.0.push(line);
    }
}

impl std::ops::Deref for LogLines {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail_one(s: &Shared, error: InvokeError) {
    let job = lock(&s.queue).jobs.pop_front();
    if let Some(job) = job {
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
            self.pool.busy.fetch_sub(1, Ordering::SeqCst);
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
    /// The generation (binary) this process runs.
    pool: Arc<Pool>,
    current: Mutex<Option<Current>>,
    served: AtomicU64,
    kill: Notify,
    /// Stopped because its binary was replaced (not a crash or a timeout).
    retired: AtomicBool,
    /// Set once the process has exited.
    exited: watch::Sender<bool>,
}

/// Starts a process when queued work has none free to take it (up to
/// `max_instances`).
fn scale(s: &Arc<Shared>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move {
        let (queued, pool) = {
            let queue = lock(&s.queue);
            (queue.jobs.len(), queue.pool.clone())
        };
        // Processes of the current binary that are not working on an
        // invocation (including ones still starting) will take queued work;
        // start another only when they cannot.
        let free = pool
            .instances
            .load(Ordering::SeqCst)
            .saturating_sub(pool.busy.load(Ordering::SeqCst));
        if queued <= free {
            return;
        }
        let grew = pool
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
        if grew && let Err(e) = spawn_instance(s.clone(), pool.clone()).await {
            pool.instances.fetch_sub(1, Ordering::SeqCst);
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
    command_for(cfg, &cfg.binary, runtime_api, log_stream)
}

/// [`bootstrap_command`] with another binary than `cfg`'s.
fn command_for(
    cfg: &FunctionConfig,
    binary: &Path,
    runtime_api: std::net::SocketAddr,
    log_stream: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
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

/// Starts a process of `pool`'s binary (counted in `pool.instances` by the caller).
async fn spawn_instance(shared: Arc<Shared>, pool: Arc<Pool>) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let number = shared.started.fetch_add(1, Ordering::SeqCst) + 1;
    let cfg = &shared.config;
    let mut cmd = command_for(cfg, &pool.binary, addr, &format!("local/{number}"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut attempt = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            // A binary copied in just now can still be open for writing in a
            // process forked meanwhile (until it execs): that passes.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            Err(e) => return Err(format!("cannot run {}: {e}", pool.binary.display()).into()),
        }
    };
    if let Some(pid) = child.id() {
        lock(&shared.pids).push(pid);
    }
    let instance = Arc::new(Instance {
        shared: shared.clone(),
        pool,
        current: Mutex::new(None),
        served: AtomicU64::new(0),
        kill: Notify::new(),
        retired: AtomicBool::new(false),
        exited: watch::Sender::new(false),
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
                if instance.retired.load(Ordering::SeqCst) {
                    format!("stopped, its binary was replaced (generation {})", instance.pool.generation)
                } else {
                    "killed after timeout".to_owned()
                }
            }
        };
        server.abort();
        instance.exited.send_replace(true);
        // Its last lines (an init error's message) are logged before its exit
        // is reported: the readers end at the pipes' EOF.
        for reader in readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        lock(&instance.shared.logs).push(format!("[runtime] process exited: {status}"));
        instance.pool.instances.fetch_sub(1, Ordering::SeqCst);
        let current = instance.finish(None);
        if let Some(current) = current {
            let _ = current
                .reply
                .send(Err(InvokeError::Crashed(status.clone())));
        } else if instance.served.load(Ordering::SeqCst) == 0
            && !instance.retired.load(Ordering::SeqCst)
        {
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
        self.pool.busy.fetch_sub(1, Ordering::SeqCst);
        reply(StatusCode::ACCEPTED, "{}")
    }

    async fn next(self: &Arc<Self>) -> Response<Body> {
        let s = &self.shared;
        let job = loop {
            // Created before the queue is looked at, so that neither a job
            // queued nor a binary replaced in between goes unnoticed.
            let notified = s.job_ready.notified();
            let (stale, job) = {
                let mut queue = lock(&s.queue);
                if Arc::ptr_eq(&queue.pool, &self.pool) {
                    (false, queue.jobs.pop_front())
                } else {
                    (true, None)
                }
            };
            if stale {
                return self.retire().await;
            }
            if let Some(job) = job {
                break job;
            }
            notified.await;
        };
        self.pool.busy.fetch_add(1, Ordering::SeqCst);
        // Another job may be waiting for an idle process.
        if !lock(&s.queue).jobs.is_empty() {
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

impl Instance {
    /// Stops this process, whose binary was replaced, instead of handing it
    /// work; answers once it is gone (the answer reaches nobody).
    async fn retire(&self) -> Response<Body> {
        self.retired.store(true, Ordering::SeqCst);
        // If it was woken for a job, another process must take that job.
        if !lock(&self.shared.queue).jobs.is_empty() {
            self.shared.job_ready.notify_one();
        }
        let mut exited = self.exited.subscribe();
        self.kill.notify_one();
        let _ = exited.wait_for(|gone| *gone).await;
        reply(StatusCode::GONE, "the function's binary was replaced")
    }
}

async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{self, Profile};

    /// Generous: the machine may be busy building.
    const BOUND: Duration = Duration::from_secs(120);

    #[test]
    fn a_long_running_functions_oldest_lines_are_dropped_and_the_latest_kept() {
        let mut lines = LogLines::default();
        for n in 0..2 * LogLines::KEPT {
            lines.push(n.to_string());
        }
        assert_eq!(
            lines.len(),
            2 * LogLines::KEPT,
            "nothing dropped up to twice KEPT"
        );
        lines.push("newest".into());
        assert_eq!(lines.len(), LogLines::KEPT + 1);
        assert_eq!(lines[0], LogLines::KEPT.to_string());
        assert_eq!(lines.last().map(String::as_str), Some("newest"));
    }

    fn config(name: &str, binary: PathBuf) -> FunctionConfig {
        let mut env: Vec<(String, String)> = [
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // Nothing listens there: the warm-up fails fast and is only logged.
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9"),
            ("TABLE_NAME", "replace-binary"),
            (
                "CURSOR_SIGNING_KEY",
                "replace-binary-test-cursor-key-0123456789",
            ),
            ("OPENAI_API_KEY", "sk-test"),
            ("ALLOWED_ORIGINS", "http://localhost:3000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(crate::tokens::DevAuth::default().env());
        FunctionConfig {
            name: name.into(),
            binary,
            env,
            timeout: BOUND,
            max_instances: 2,
            echo_logs: false,
        }
    }

    fn status(answer: &Bytes) -> (i64, String) {
        let v: serde_json::Value = serde_json::from_slice(answer).unwrap();
        (
            v["statusCode"].as_i64().unwrap_or_default(),
            v["body"].as_str().unwrap_or_default().to_owned(),
        )
    }

    async fn exit_logged(f: &LambdaFunction, what: &str) -> String {
        f.wait_for_log(
            |l| l.starts_with("[runtime] process exited") && l.contains(what),
            BOUND,
        )
        .await
        .unwrap_or_else(|| panic!("no exit {what:?} in {:?}", f.logs()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_replacement_the_new_binary_answers_and_the_old_process_stops() {
        let paths =
            tokio::task::spawn_blocking(|| build::binaries(&["health", "tasks"], Profile::Dev))
                .await
                .unwrap()
                .unwrap();
        let event = std::fs::read(crate::workspace_root().join("events/health.json")).unwrap();
        let f = LambdaFunction::new(config("health", paths[0].clone()));

        let (code, body) = status(&f.invoke(event.clone()).await.unwrap());
        assert_eq!(code, 200, "{body} {:?}", f.logs());
        assert_eq!((f.cold_starts(), f.generation()), (1, 0));
        let old = f.pids()[0];

        f.replace_binary(paths[1].clone()).await;
        assert_eq!(f.binary(), paths[1]);
        assert_eq!(f.config().binary, paths[1]);
        // The same event, now answered by `tasks`, which has no /health route.
        let (code, _) = status(&f.invoke(event.clone()).await.unwrap());
        assert_eq!(code, 404, "{:?}", f.logs());
        assert_eq!((f.cold_starts(), f.generation()), (2, 1));
        assert_ne!(f.pids()[1], old);
        exit_logged(&f, "its binary was replaced (generation 0)").await;
        #[cfg(target_os = "linux")]
        assert!(
            !Path::new(&format!("/proc/{old}")).exists(),
            "{old} still runs"
        );

        // The new process stays and takes the next invocation warm.
        let (code, _) = status(&f.invoke(event).await.unwrap());
        assert_eq!((code, f.cold_starts()), (404, 2));
        assert!(
            !f.logs().iter().any(|l| l.contains("init failed")),
            "{:?}",
            f.logs()
        );
    }

    /// A fake Lambda runtime, run by the tests below as a function's binary
    /// (through a script naming this test): it answers `FAKE_VERSION`, or,
    /// for an event `{"gate": PATH}`, streams `<version>:begin;` and, once
    /// `PATH` exists, `end`.
    #[test]
    #[ignore = "a function's binary for the tests, not a test"]
    fn fake_runtime() {
        use std::io::{Read, Write};
        let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
            return;
        };
        let version = std::env::var("FAKE_VERSION").unwrap_or_default();
        let send = |head: String, chunks: &mut dyn FnMut(&mut std::net::TcpStream)| {
            let mut conn = std::net::TcpStream::connect(&api).unwrap();
            conn.write_all(head.as_bytes()).unwrap();
            chunks(&mut conn);
            let mut answer = Vec::new();
            conn.read_to_end(&mut answer).unwrap();
            let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&answer[..at]).to_lowercase();
            (head, answer[at + 4..].to_vec())
        };
        loop {
            let (head, event) = send(
                format!(
                    "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\n\r\n"
                ),
                &mut |_| {},
            );
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("lambda-runtime-aws-request-id: "))
                .unwrap()
                .trim()
                .to_owned();
            let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
            let path = format!("/2018-06-01/runtime/invocation/{id}/response");
            if let Some(gate) = event["gate"].as_str() {
                let head = format!(
                    "POST {path} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\n\
                     lambda-runtime-function-response-mode: streaming\r\n\
                     transfer-encoding: chunked\r\n\r\n"
                );
                send(head, &mut |conn| {
                    let chunk = |conn: &mut std::net::TcpStream, data: &str| {
                        write!(conn, "{:x}\r\n{data}\r\n", data.len()).unwrap();
                        conn.flush().unwrap();
                    };
                    chunk(conn, &format!("{version}:begin;"));
                    let started = Instant::now();
                    while !Path::new(gate).exists() && started.elapsed() < BOUND {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    chunk(conn, "end");
                    conn.write_all(b"0\r\n\r\n").unwrap();
                });
            } else {
                let head = format!(
                    "POST {path} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{version}",
                    version.len()
                );
                send(head, &mut |_| {});
            }
        }
    }

    /// Scripts that run [`fake_runtime`] answering `old` and `new`, and a gate
    /// path, in a folder removed when the first element is dropped.
    #[cfg(unix)]
    fn fake_binaries() -> (crate::scratch::ScratchDir, PathBuf, PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let scratch = crate::scratch::ScratchDir::new("emulators-replace-binary").unwrap();
        let dir = scratch.path().to_path_buf();
        let exe = std::env::current_exe().unwrap();
        let script = |version: &str| {
            let path = dir.join(version);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nFAKE_VERSION={version} exec '{}' runtime_api::tests::fake_runtime \
                     --exact --ignored --nocapture --test-threads=1 -q\n",
                    exe.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let (old, new) = (script("old"), script("new"));
        (scratch, old, new, dir.join("gate"))
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streaming_process_of_the_old_binary_finishes_its_answer_then_stops() {
        let (_dir, old, new, gate) = fake_binaries();
        let mut cfg = config("fake", old);
        cfg.env.clear();
        let f = LambdaFunction::new(cfg);
        assert_eq!(&f.invoke("{}").await.unwrap()[..], b"old", "{:?}", f.logs());

        let streaming = serde_json::json!({"gate": gate}).to_string();
        let Ok(Answer::Streamed(mut rx)) = f.invoke_answer(streaming).await else {
            panic!("not streamed: {:?}", f.logs());
        };
        let first = tokio::time::timeout(BOUND, rx.recv()).await.unwrap();
        assert_eq!(&first.unwrap().unwrap()[..], b"old:begin;");

        // Swapped mid-stream: the next invocation goes to the new binary
        // while the old process is still streaming.
        f.replace_binary(new).await;
        assert_eq!(&f.invoke("{}").await.unwrap()[..], b"new", "{:?}", f.logs());
        assert!(
            !f.logs().iter().any(|l| l.contains("process exited")),
            "{:?}",
            f.logs()
        );

        std::fs::write(&gate, "").unwrap();
        let mut rest = Vec::new();
        while let Some(chunk) = tokio::time::timeout(BOUND, rx.recv()).await.unwrap() {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(rest, b"end");
        exit_logged(&f, "its binary was replaced (generation 0)").await;
        // One process of each binary.
        assert_eq!(f.cold_starts(), 2, "{:?}", f.logs());
        assert_eq!(&f.invoke("{}").await.unwrap()[..], b"new");
        assert_eq!(f.cold_starts(), 2);
        let _ = std::fs::remove_dir_all(gate.parent().unwrap());
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_processes_of_the_old_binary_stop_and_invocations_racing_the_swap_are_answered() {
        let (_dir, old, new, _) = fake_binaries();
        let mut cfg = config("fake", old.clone());
        cfg.env.clear();
        cfg.max_instances = 3;
        let f = LambdaFunction::new(cfg);
        // Two processes of the old binary, both idle after their invocation.
        let (a, b) = tokio::join!(f.invoke("{}"), f.invoke("{}"));
        assert_eq!(
            (&a.unwrap()[..], &b.unwrap()[..]),
            (&b"old"[..], &b"old"[..])
        );
        let before = f.cold_starts();

        f.replace_binary(new.clone()).await;
        let exits = || {
            f.logs()
                .iter()
                .filter(|l| l.contains("its binary was replaced (generation 0)"))
                .count() as u64
        };
        let started = Instant::now();
        while exits() < before && started.elapsed() < BOUND {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(exits(), before, "{:?}", f.logs());
        let answers = futures_util::future::join_all((0..4).map(|_| f.invoke("{}"))).await;
        for answer in answers {
            assert_eq!(&answer.unwrap()[..], b"new", "{:?}", f.logs());
        }

        // Invocations racing a swap (back to the first binary) are all
        // answered, by either binary; those after it by the first.
        let racing = futures_util::future::join_all((0..4).map(|_| f.invoke("{}")));
        let (answers, ()) = tokio::join!(racing, f.replace_binary(old.clone()));
        for answer in answers {
            let answer = answer.unwrap();
            assert!(answer == "old" || answer == "new", "{answer:?}");
        }
        assert_eq!(&f.invoke("{}").await.unwrap()[..], b"old");
        assert_eq!(f.generation(), 2);
        let _ = std::fs::remove_dir_all(old.parent().unwrap());
        assert!(
            !f.logs().iter().any(|l| l.contains("init failed")),
            "{:?}",
            f.logs()
        );
    }
}

//! Init figures: the time from a bootstrap's start to its first
//! `GET /runtime/invocation/next` (what Lambda reports as Init Duration), for
//! each function and for a hello-world `lambda_http` bootstrap built with the
//! same release profile, in interleaved spawns. DynamoDB and Secrets Manager
//! are a loopback server that answers at once, so a warm-up costs one loopback
//! round trip; a second pass points DynamoDB at a server that accepts and never
//! answers (a DynamoDB hiccup during a scale-out).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use emulators::http_server::{self, Body};
use emulators::runtime_api::{FunctionConfig, bootstrap_command};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use taskpilot_testkit::Result;

/// Bounds one spawn (an init that hangs is reported, not waited for forever).
const SPAWN_BOUND: Duration = Duration::from_secs(30);

/// A secret that serves as both the app keys and the OpenAI secret.
const SECRET: &str = r#"{"CURSOR_SIGNING_KEY":"bench-cursor-key-0123456789abcdef0123456789","OPENAI_API_KEY":"sk-bench"}"#;
/// Its ARN (any ARN names it: the loopback server has one secret).
const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench";

/// The report section: init median and p90 per bootstrap, the ratio to the
/// hello-world's median, and the same with DynamoDB not answering.
pub async fn section(functions: &[FunctionConfig], hello: &Path, spawns: usize) -> Result<String> {
    let quiet = wait_for_quiet_cpu().await?;
    let answering = Loopback::aws_answers().await?;
    let silent = Loopback::silent().await?;
    let with_env = |f: &FunctionConfig, dynamodb: &str| FunctionConfig {
        env: aws_env(&f.env, dynamodb, &answering.endpoint),
        ..f.clone()
    };
    let mut bootstraps = vec![FunctionConfig {
        name: "hello-world".into(),
        binary: hello.to_owned(),
        env: Vec::new(),
        timeout: SPAWN_BOUND,
        max_instances: 1,
        echo_logs: false,
    }];
    bootstraps.extend(functions.iter().map(|f| with_env(f, &answering.endpoint)));
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); bootstraps.len()];
    for _ in 0..spawns {
        for (b, t) in bootstraps.iter().zip(times.iter_mut()) {
            t.push(init_time(b).await.map_err(|e| format!("{}: {e}", b.name))?);
        }
    }
    let mut stalled: Vec<Vec<Duration>> = vec![Vec::new(); functions.len()];
    let stalled_n = spawns.min(5);
    for _ in 0..stalled_n {
        for (f, t) in functions.iter().zip(stalled.iter_mut()) {
            let b = with_env(f, &silent.endpoint);
            t.push(
                init_time(&b)
                    .await
                    .map_err(|e| format!("{}: {e}", b.name))?,
            );
        }
    }
    let hello_median = super::pct(&mut times[0], 50);
    let mut out = String::new();
    writeln!(
        out,
        "## Init (process start → first `GET /runtime/invocation/next`, {spawns} interleaved starts each)\n"
    )?;
    writeln!(
        out,
        "| bootstrap | init median | p90 | × hello-world | DynamoDB not answering: median ({stalled_n} starts) |\n|---|---|---|---|---|"
    )?;
    for (i, (b, t)) in bootstraps.iter().zip(times.iter_mut()).enumerate() {
        let median = super::pct(t, 50);
        let stalled = match i.checked_sub(1).and_then(|j| stalled.get_mut(j)) {
            Some(s) => super::ms(super::pct(s, 50)),
            None => "—".into(),
        };
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {stalled} |",
            b.name,
            super::ms(median),
            super::ms(super::pct(t, 90)),
            median.as_secs_f64() / hello_median.as_secs_f64().max(1e-9),
        )?;
    }
    writeln!(
        out,
        "\n- DynamoDB and Secrets Manager are a loopback server answering at once: a function's init includes \
         its warm-up (`GetItem`, and `GetSecretValue` for the app keys and the OpenAI secret) at the cost of \
         one loopback round trip each. Nothing is logged to a terminal (stdout and stderr are /dev/null).\n\
         - *DynamoDB not answering*: its endpoint accepts connections and never answers; the warm-up gives up \
         after `WARM_UP_BUDGET` (250 ms) and init goes on.\n\
         - Measured once the machine was quiet (DynamoDB Local's JVM and moto start up with the stack): \
         {quiet}."
    )?;
    answering.server.abort();
    silent.server.abort();
    Ok(out)
}

/// Waits (up to a minute) until the machine's CPUs are at most 10 % busy over
/// half a second: the emulators' start-up (the JVM's compiler threads) would
/// otherwise compete with the processes being timed. Returns what it saw.
pub(crate) async fn wait_for_quiet_cpu() -> Result<String> {
    const BOUND: Duration = Duration::from_secs(60);
    let started = Instant::now();
    let mut before = cpu_times()?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = cpu_times()?;
        let (busy, total) = (after.0 - before.0, after.1 - before.1);
        let share = busy as f64 / total.max(1) as f64;
        if share <= 0.10 {
            return Ok(format!(
                "{:.0} % busy after {:.1} s",
                share * 100.0,
                started.elapsed().as_secs_f64()
            ));
        }
        if started.elapsed() > BOUND {
            return Ok(format!(
                "still {:.0} % busy after {BOUND:?}; figures taken anyway",
                share * 100.0
            ));
        }
        before = after;
    }
}

/// `(busy, total)` jiffies of all CPUs, from `/proc/stat`.
fn cpu_times() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// `env` with DynamoDB at `dynamodb`, Secrets Manager at `secrets`, and the
/// keys read from secrets as on AWS (not from local-only variables).
fn aws_env(env: &[(String, String)], dynamodb: &str, secrets: &str) -> Vec<(String, String)> {
    let uses_openai = env
        .iter()
        .any(|(k, _)| k == "OPENAI_API_KEY" || k == "OPENAI_SECRET_ARN");
    let uses_cursors = env.iter().any(|(k, _)| k == "CURSOR_SIGNING_KEY");
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "AWS_ENDPOINT_URL_DYNAMODB"
                    | "AWS_ENDPOINT_URL_SECRETS_MANAGER"
                    | "OPENAI_API_KEY"
                    | "OPENAI_SECRET_ARN"
                    | "CURSOR_SIGNING_KEY"
                    | "APP_KEYS_SECRET_ARN"
            )
        })
        .cloned()
        .collect();
    out.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), dynamodb.into()));
    out.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), secrets.into()));
    if uses_openai {
        out.push(("OPENAI_SECRET_ARN".into(), SECRET_ARN.into()));
    }
    if uses_cursors {
        out.push(("APP_KEYS_SECRET_ARN".into(), SECRET_ARN.into()));
    }
    out
}

/// Starts `b` against a Runtime API of its own and times it to its first
/// `GET …/invocation/next`, which is left unanswered; the process is then killed.
async fn init_time(b: &FunctionConfig) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut cmd = bootstrap_command(b, listener.local_addr()?, "bench/init");
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (asked, mut requests) = mpsc::unbounded_channel();
    let runtime = http_server::serve(listener, move |req: Request<Incoming>, _| {
        let _ = asked.send(format!("{} {}", req.method(), req.uri().path()));
        // Held like Lambda's long poll until the process is killed.
        std::future::pending::<Response<Body>>()
    });
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let waited = tokio::time::timeout(SPAWN_BOUND, async {
        tokio::select! {
            first = requests.recv() => match first {
                Some(r) if r.starts_with("GET ") && r.ends_with("/runtime/invocation/next") => {
                    Ok(started.elapsed())
                }
                other => Err(format!("first request was not for work: {other:?}").into()),
            },
            status = child.wait() => Err(format!("exited during init: {status:?}").into()),
        }
    })
    .await;
    let _ = child.kill().await;
    runtime.abort();
    waited.map_err(|_| format!("no GET /runtime/invocation/next within {SPAWN_BOUND:?}"))?
}

/// A loopback server standing in for DynamoDB and Secrets Manager.
struct Loopback {
    endpoint: String,
    server: JoinHandle<()>,
}

impl Loopback {
    /// Answers DynamoDB `GetItem` (no item) and Secrets Manager
    /// `GetSecretValue` ([`SECRET`]) at once, by `X-Amz-Target`.
    async fn aws_answers() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = http_server::serve(listener, |req: Request<Incoming>, _| async move {
            let secrets = req
                .headers()
                .get("x-amz-target")
                .and_then(|t| t.to_str().ok())
                .is_some_and(|t| t.starts_with("secretsmanager."));
            // Read the request to its end so the connection stays reusable.
            let _ = req.into_body().collect().await;
            let answer = if secrets {
                serde_json::json!({"ARN": SECRET_ARN, "Name": "bench", "SecretString": SECRET})
                    .to_string()
            } else {
                "{}".to_owned()
            };
            let mut resp = Response::new(http_server::full(answer));
            resp.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            resp
        });
        Ok(Self { endpoint, server })
    }

    /// Accepts connections and never answers.
    async fn silent() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = http_server::serve(listener, |_, _| std::future::pending::<Response<Body>>());
        Ok(Self { endpoint, server })
    }
}

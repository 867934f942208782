//! Init figures: the time from a bootstrap's start to its first
//! `GET /runtime/invocation/next` (what Lambda reports as Init Duration), for
//! each function and for a hello-world `lambda_http` bootstrap built with the
//! same release profile, in interleaved spawns. DynamoDB and Secrets Manager
//! are a loopback server that answers at once, so a warm-up costs one loopback
//! round trip; a second pass points DynamoDB at a server that accepts and never
//! answers (a DynamoDB hiccup during a scale-out).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use emulators::runtime_api::FunctionConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use taskpilot_testkit::Result;

/// Bounds one spawn (an init that hangs is reported, not waited for forever).
const SPAWN_BOUND: Duration = Duration::from_secs(30);

/// A secret that serves as both the app keys and the OpenAI secret.
const SECRET: &str = r#"{"CURSOR_SIGNING_KEY":"bench-cursor-key-0123456789abcdef0123456789","OPENAI_API_KEY":"sk-bench"}"#;

/// One bootstrap to start: its name, binary and environment.
struct Bootstrap {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

/// The report section: init median and p90 per bootstrap, the ratio to the
/// hello-world's median, and the same with DynamoDB not answering.
pub async fn section(functions: &[FunctionConfig], hello: &Path, spawns: usize) -> Result<String> {
    let quiet = wait_for_quiet_cpu().await?;
    let answering = AwsAnswers::start().await?;
    let silent = Silent::start().await?;
    let mut bootstraps = vec![Bootstrap {
        name: "hello-world".into(),
        binary: hello.to_owned(),
        env: Vec::new(),
    }];
    for f in functions {
        bootstraps.push(Bootstrap {
            name: f.name.clone(),
            binary: f.binary.clone(),
            env: aws_env(&f.env, &answering.endpoint, &answering.endpoint),
        });
    }
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
            let b = Bootstrap {
                name: f.name.clone(),
                binary: f.binary.clone(),
                env: aws_env(&f.env, &silent.endpoint, &answering.endpoint),
            };
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
    answering.task.abort();
    silent.task.abort();
    Ok(out)
}

/// Waits (up to a minute) until the machine's CPUs are at most 10 % busy over
/// half a second: the emulators' start-up (the JVM's compiler threads) would
/// otherwise compete with the processes being timed. Returns what it saw.
async fn wait_for_quiet_cpu() -> Result<String> {
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
    let arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench";
    if uses_openai {
        out.push(("OPENAI_SECRET_ARN".into(), arn.into()));
    }
    if uses_cursors {
        out.push(("APP_KEYS_SECRET_ARN".into(), arn.into()));
    }
    out
}

/// Starts `b` against a Runtime API of its own and times it to its first
/// `GET …/invocation/next`; the process is then killed.
async fn init_time(b: &Bootstrap) -> Result<Duration> {
    let runtime = TcpListener::bind("127.0.0.1:0").await?;
    let mut cmd = tokio::process::Command::new(&b.binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", runtime.local_addr()?.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &b.name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", b.name),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench/init")
        .envs(b.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let waited = tokio::time::timeout(SPAWN_BOUND, async {
        tokio::select! {
            first = first_next(&runtime) => first.map(|()| started.elapsed()),
            status = child.wait() => Err(format!("exited during init: {status:?}").into()),
        }
    })
    .await;
    let _ = child.kill().await;
    waited.map_err(|_| format!("no GET /runtime/invocation/next within {SPAWN_BOUND:?}"))?
}

/// Waits for the first request on `runtime` and checks it asks for work.
async fn first_next(runtime: &TcpListener) -> Result<()> {
    let (conn, _) = runtime.accept().await?;
    let head = read_head(&mut BufReader::new(conn)).await?;
    if head.starts_with("GET ") && head.contains("/runtime/invocation/next") {
        Ok(())
    } else {
        Err(format!(
            "first request was not for work: {}",
            head.lines().next().unwrap_or("")
        )
        .into())
    }
}

/// Reads a request head (up to the blank line), buffered: a byte-at-a-time
/// read would make this server, not the function, the slow side.
async fn read_head(conn: &mut BufReader<TcpStream>) -> Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err("connection closed before the request head ended".into());
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Ok(head);
        }
    }
}

/// A loopback server answering DynamoDB `GetItem` (no item) and Secrets
/// Manager `GetSecretValue` ([`SECRET`]) at once.
struct AwsAnswers {
    endpoint: String,
    task: JoinHandle<()>,
}

impl AwsAnswers {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer_connection(conn));
            }
        });
        Ok(Self { endpoint, task })
    }
}

/// Answers each request of one keep-alive connection by its `X-Amz-Target`.
async fn answer_connection(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut conn = BufReader::new(conn);
    while let Ok(head) = read_head(&mut conn).await {
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if conn.read_exact(&mut body).await.is_err() {
            return;
        }
        let target = header("x-amz-target").unwrap_or_default();
        let answer = if target.starts_with("secretsmanager.") {
            serde_json::json!({
                "ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench",
                "Name": "bench",
                "SecretString": SECRET,
            })
            .to_string()
        } else {
            "{}".to_owned()
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if conn.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A server that accepts connections and never answers.
struct Silent {
    endpoint: String,
    task: JoinHandle<()>,
}

impl Silent {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        Ok(Self { endpoint, task })
    }
}

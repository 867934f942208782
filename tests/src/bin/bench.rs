//! `bench`: the numbers behind BENCHMARKS.md, measured on 127.0.0.1 against
//! DynamoDB Local, moto and the OpenAI stub with release binaries:
//! cold starts, warm latency and CPU per route, DynamoDB requests per
//! operation (counted by a proxy), ChatKit time-to-first-byte and CPU per
//! delta, peak RSS and (with `--zips`) the arm64 zip sizes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskpilot_testkit::build::Profile;
use taskpilot_testkit::dynamodb_local::DynamoDbLocal;
use taskpilot_testkit::moto::Moto;
use taskpilot_testkit::openai_stub::Turn;
use taskpilot_testkit::runtime_api::{LambdaFunction, split_prelude};
use taskpilot_testkit::stack::{LocalStack, StackOptions};
use taskpilot_testkit::{Result, events, repo_root, stack};

const USAGE: &str = "usage: bench [--quick] [--zips]";

#[tokio::main]
async fn main() -> Result<()> {
    let mut quick = false;
    let mut zips = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--zips" => zips = true,
            _ => return Err(USAGE.into()),
        }
    }
    let (cold_n, warm_n) = if quick { (5, 100) } else { (20, 1000) };
    let dynamodb = tokio::task::spawn_blocking(DynamoDbLocal::start).await??;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let stack = LocalStack::start(StackOptions {
        profile: Profile::Release,
        max_instances: 1,
        count_dynamodb: true,
        dynamodb_endpoint: Some(dynamodb.endpoint.clone()),
        moto_endpoint: Some(moto.endpoint.clone()),
        env: vec![
            ("SESSION_CREATE_PER_MINUTE".into(), "1000000".into()),
            ("CHATKIT_MAX_REQUESTS_PER_MINUTE".into(), "1000000".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let mut report = String::new();

    // Cold starts: a new process per start, timed to its first response.
    writeln!(
        report,
        "## Cold start (process start → first response, {cold_n} starts each)\n"
    )?;
    writeln!(report, "| function | median | p90 |\n|---|---|---|")?;
    for (name, event) in [
        ("tasks", "list-tasks.json"),
        ("sessions", "create-session.json"),
        ("health", "health.json"),
        ("chatkit", "chat-kit-function-url.json"),
    ] {
        let config = stack.function(name)?.config();
        let body = std::fs::read_to_string(events::dir().join(event))?;
        let mut times = Vec::new();
        for _ in 0..cold_n {
            let fresh = LambdaFunction::new(config.clone());
            let started = Instant::now();
            fresh
                .invoke(body.clone())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            times.push(started.elapsed());
        }
        writeln!(
            report,
            "| {name} | {} | {} |",
            ms(pct(&mut times, 50)),
            ms(pct(&mut times, 90))
        )?;
    }

    // Warm routes: one warm process each, latency and CPU per request, DynamoDB requests per call.
    writeln!(
        report,
        "\n## Warm requests ({warm_n} each, one warm process)\n"
    )?;
    writeln!(
        report,
        "| route | p50 | p99 | process CPU / invocation | handler CPU (mean / median) | DynamoDB requests / call |\n|---|---|---|---|---|---|"
    )?;
    let tasks = stack.function("tasks")?;
    let created = invoke_json(tasks, &event_with("create-task.json", None, None)?).await?;
    let task_id = created["id"].as_str().ok_or("no task id")?.to_owned();
    let routes: Vec<(&str, &str, EventMaker)> = vec![
        (
            "tasks",
            "POST /api/v1/tasks",
            Box::new(|_| event_with("create-task.json", None, None)),
        ),
        (
            "tasks",
            "GET /api/v1/tasks",
            Box::new(|_| event_with("list-tasks.json", None, None)),
        ),
        (
            "tasks",
            "GET /api/v1/tasks/{id}",
            Box::new(|_| event_with("get-task.json", Some(&task_id), None)),
        ),
        (
            "tasks",
            "PATCH /api/v1/tasks/{id}",
            Box::new(|_| {
                event_with(
                    "update-task.json",
                    Some(&task_id),
                    Some(json!({"title": "renamed"})),
                )
            }),
        ),
        (
            "tasks",
            "POST …/complete|reopen",
            Box::new(|i| {
                event_with(
                    if i % 2 == 0 {
                        "complete-task.json"
                    } else {
                        "reopen-task.json"
                    },
                    Some(&task_id),
                    None,
                )
            }),
        ),
        (
            "sessions",
            "POST /api/chatkit/sessions",
            Box::new(|_| event_with("create-session.json", None, None)),
        ),
        (
            "health",
            "GET /health",
            Box::new(|_| event_with("health.json", None, None)),
        ),
        (
            "chatkit",
            "POST /api/v1/chatkit (threads.list)",
            Box::new(|_| event_with("chat-kit-function-url.json", None, None)),
        ),
    ];
    let proxy = stack.dynamodb_proxy.as_ref().ok_or("no DynamoDB proxy")?;
    let secrets = stack.secrets.as_ref().ok_or("no Secrets Manager side")?;
    // GetSecretValue calls made by warm processes: the target is zero.
    let mut secret_calls_after_init = 0;
    for (name, label, make) in &routes {
        let f = stack.function(name)?;
        f.invoke(make(0)?).await.map_err(|e| e.to_string())?; // warm
        let before = proxy.counts();
        f.invoke(make(1)?).await.map_err(|e| e.to_string())?;
        let calls = diff(&before, &proxy.counts());
        let pid = *f.pids().last().ok_or("no process")?;
        let cpu_before = cpu_seconds(pid)?;
        // Let the log lines of the untimed calls above arrive first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs_before = f.logs().len();
        let secrets_before = secrets.get_secret_value_calls();
        let mut times = Vec::with_capacity(warm_n);
        for i in 0..warm_n {
            let event = make(i)?;
            let started = Instant::now();
            f.invoke(event).await.map_err(|e| format!("{label}: {e}"))?;
            times.push(started.elapsed());
        }
        let cpu = (cpu_seconds(pid)? - cpu_before) / warm_n as f64;
        secret_calls_after_init += secrets.get_secret_value_calls() - secrets_before;
        // Log lines arrive through a pipe: give the last ones a moment.
        let mut handler: Vec<u64> = Vec::new();
        for _ in 0..100 {
            handler = f.logs()[logs_before..]
                .iter()
                .filter_map(|line| logged_cpu_us(line))
                .collect();
            if handler.len() >= warm_n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let handler = if handler.len() >= warm_n {
            let mut handler = handler.split_off(handler.len() - warm_n);
            handler.sort_unstable();
            format!(
                "{:.0} µs / {} µs",
                handler.iter().sum::<u64>() as f64 / warm_n as f64,
                handler[warm_n / 2]
            )
        } else {
            "—".into()
        };
        writeln!(
            report,
            "| {label} | {} | {} | {:.0} µs | {handler} | {calls} |",
            ms(pct(&mut times, 50)),
            ms(pct(&mut times, 99)),
            cpu * 1e6
        )?;
    }
    // Delete: each call removes another task.
    let mut ids = Vec::new();
    for _ in 0..warm_n.min(200) {
        ids.push(
            invoke_json(tasks, &event_with("create-task.json", None, None)?).await?["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let before = proxy.counts();
    tasks
        .invoke(event_with("delete-task.json", Some(&ids[0]), None)?)
        .await
        .map_err(|e| e.to_string())?;
    let calls = diff(&before, &proxy.counts());
    let mut times = Vec::new();
    for id in &ids[1..] {
        let started = Instant::now();
        tasks
            .invoke(event_with("delete-task.json", Some(id), None)?)
            .await
            .map_err(|e| e.to_string())?;
        times.push(started.elapsed());
    }
    writeln!(
        report,
        "| DELETE /api/v1/tasks/{{id}} ({} calls) | {} | {} | — | — | {calls} |",
        times.len(),
        ms(pct(&mut times, 50)),
        ms(pct(&mut times, 99))
    )?;

    // The floor under every task request: one bare SDK GetItem with the
    // functions' own client configuration, on a current-thread runtime.
    let floor_n = warm_n;
    let endpoint = dynamodb.endpoint.clone();
    let table = stack.table.clone();
    let floor = std::thread::spawn(move || sdk_get_item_cpu(&endpoint, &table, floor_n))
        .join()
        .map_err(|_| "SDK floor thread panicked")??;
    writeln!(
        report,
        "\nFloor: one bare `aws-sdk-dynamodb` GetItem (the functions' client configuration, no handler, \
         no Runtime API) costs **{:.0} µs** of CPU (mean of {floor_n}, thread CPU clock).\n",
        floor * 1e6
    )?;

    // ChatKit streaming: a 500-word answer after two tool calls.
    writeln!(
        report,
        "\n## ChatKit streaming (two tool calls, then a 500-word answer)\n"
    )?;
    let stub = stack.openai.as_ref().ok_or("no stub")?;
    let chatkit = stack.function("chatkit")?;
    let pid = *chatkit.pids().last().ok_or("no chatkit process")?;
    let words: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
    let mut first_byte = Vec::new();
    let mut cpu_per_delta = Vec::new();
    for _ in 0..if quick { 3 } else { 10 } {
        stub.push_turn(Turn::Calls(vec![
            ("create_task".into(), json!({"title": "bench task"})),
            ("list_tasks".into(), json!({})),
        ]));
        stub.push_turn(Turn::Text(words.join(" ")));
        let cpu_before = cpu_seconds(pid)?;
        let secrets_before = secrets.get_secret_value_calls();
        let http = taskpilot_testkit::http_client();
        let mut resp = http
            .post(format!("{}/api/v1/chatkit", stack.url))
            .bearer_auth(stack.token("bench"))
            .header("content-type", "application/json")
            .body(json!({"type": "threads.create", "params": {"input": {"content": [{"type": "input_text", "text": "bench"}], "attachments": []}}}).to_string())
            .send()
            .await?;
        let mut deltas = 0usize;
        let mut got_first = None;
        while let Some(chunk) = resp.chunk().await? {
            let text = String::from_utf8_lossy(&chunk);
            let n = text.matches("content_part.text_delta").count();
            if n > 0 && got_first.is_none() {
                got_first = Some(Instant::now());
            }
            deltas += n;
        }
        if let (Some(received), Some(sent)) = (got_first, stub.take_first_delta_at()) {
            first_byte.push(received.saturating_duration_since(sent));
        }
        let cpu = cpu_seconds(pid)? - cpu_before;
        secret_calls_after_init += secrets.get_secret_value_calls() - secrets_before;
        cpu_per_delta.push(Duration::from_secs_f64(cpu / deltas.max(1) as f64));
    }
    writeln!(report, "| metric | median | p90 |\n|---|---|---|")?;
    writeln!(
        report,
        "| first upstream token → first SSE byte at the client | {} | {} |",
        ms(pct(&mut first_byte, 50)),
        ms(pct(&mut first_byte, 90))
    )?;
    writeln!(
        report,
        "| chatkit CPU per delta event (whole turn ÷ deltas) | {:.1} µs | {:.1} µs |",
        pct(&mut cpu_per_delta, 50).as_secs_f64() * 1e6,
        pct(&mut cpu_per_delta, 90).as_secs_f64() * 1e6
    )?;

    writeln!(
        report,
        "\nSecrets Manager `GetSecretValue` requests from warm processes (all timed runs above): \
         **{secret_calls_after_init}**.\n"
    )?;

    // Memory and package size.
    writeln!(report, "\n## Memory and package size\n")?;
    if zips {
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "taskpilot-testkit",
                    "--bin",
                    "package",
                ])
                .current_dir(repo_root())
                .status()?;
        if !status.success() {
            return Err("package failed".into());
        }
    }
    writeln!(
        report,
        "| function | peak RSS (warm process) | arm64 zip |\n|---|---|---|"
    )?;
    for name in ["tasks", "sessions", "health", "chatkit"] {
        let f = stack.function(name)?;
        let rss = f
            .pids()
            .last()
            .map(|pid| peak_rss_kb(*pid))
            .transpose()?
            .flatten();
        let zip = std::fs::metadata(
            repo_root()
                .join("dist/arm64")
                .join(name)
                .join("bootstrap.zip"),
        )
        .ok()
        .map(|m| m.len());
        writeln!(
            report,
            "| {name} | {} | {} |",
            rss.map_or("—".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
            zip.map_or("— (run with --zips)".into(), |b| format!(
                "{:.2} MB",
                b as f64 / 1_048_576.0
            ))
        )?;
    }
    println!("{report}");
    let machine = machine();
    let doc = format!(
        "# Benchmarks\n\nCommand: `cargo run --release -p taskpilot-testkit --bin bench{}`\n\nMachine: {machine}\n\nDate: {}\n\n\
         Everything runs on 127.0.0.1: release x86_64 binaries under the local Lambda Runtime API, DynamoDB Local, \
         moto and the OpenAI stub. Latencies include the local Runtime API hop. \
         *Process CPU* is the function process's on-CPU time summed over its threads (/proc/<pid>/task/*/schedstat, \
         nanoseconds) per invocation: the Runtime API polling and event decoding included. *Handler CPU* is the \
         `cpu_us` each request logs: the thread CPU time spent inside the handler (auth, validation, the DynamoDB \
         call with its signing and HTTP exchange, the JSON answer).\n\n{report}",
        {
            let args: Vec<String> = std::env::args().skip(1).collect();
            if args.is_empty() {
                String::new()
            } else {
                format!(" -- {}", args.join(" "))
            }
        },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
    );
    std::fs::write(repo_root().join("BENCHMARKS.md"), doc)?;
    drop(stack);
    drop(moto);
    drop(dynamodb);
    Ok(())
}

/// Builds the n-th event of a warm run.
type EventMaker<'a> = Box<dyn Fn(usize) -> Result<String> + 'a>;

/// A sample event with the task id and body replaced.
fn event_with(file: &str, task_id: Option<&str>, body: Option<Value>) -> Result<String> {
    let mut text = std::fs::read_to_string(events::dir().join(file))?;
    if let Some(id) = task_id {
        text = text.replace(events::SAMPLE_TASK_ID, id);
    }
    let mut event: Value = serde_json::from_str(&text)?;
    if let Some(body) = body {
        event["body"] = Value::String(body.to_string());
    }
    Ok(event.to_string())
}

async fn invoke_json(f: &LambdaFunction, event: &str) -> Result<Value> {
    let raw = f
        .invoke(event.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let resp: Value = match split_prelude(&raw) {
        Some((mut prelude, body)) => {
            prelude["body"] = Value::String(String::from_utf8_lossy(&body).into_owned());
            prelude
        }
        None => serde_json::from_slice(&raw)?,
    };
    Ok(serde_json::from_str(
        resp["body"].as_str().unwrap_or("null"),
    )?)
}

fn diff(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(op, n)| {
            let d = n - before.get(op).copied().unwrap_or(0);
            (d > 0).then(|| format!("{d} {}", op.trim_start_matches("DynamoDB_20120810.")))
        })
        .collect();
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(", ")
    }
}

fn pct(values: &mut [Duration], p: usize) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[((values.len() - 1) * p) / 100]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time a process has used so far, in seconds: the sum of its threads'
/// on-CPU time from `/proc/<pid>/task/*/schedstat` (nanoseconds, unlike the
/// 10 ms ticks of `/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        ns += stat
            .split_whitespace()
            .next()
            .ok_or("empty schedstat")?
            .parse::<u64>()?;
    }
    Ok(ns as f64 / 1e9)
}

/// Mean thread CPU seconds of one SDK GetItem against `endpoint`, on a
/// current-thread runtime (as in the functions).
fn sdk_get_item_cpu(endpoint: &str, table: &str, n: usize) -> Result<f64> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use taskpilot_http::cpu::thread_time;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sdk = taskpilot_runtime::aws::with_limits(&stack::emulator_config(endpoint).await);
        let client = taskpilot_store::dynamodb_client(&sdk);
        let get = || {
            client
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S("USER#bench-floor".into()))
                .key("sk", AttributeValue::S("TASK#none".into()))
                .send()
        };
        get().await?; // connect and warm
        let started = thread_time();
        for _ in 0..n {
            get().await?;
        }
        Ok((thread_time() - started).as_secs_f64() / n as f64)
    })
}

/// The `cpu_us` field of a function's `request` log line (text or JSON logs).
fn logged_cpu_us(line: &str) -> Option<u64> {
    let rest = &line[line.find("cpu_us")? + "cpu_us".len()..];
    let digits: String = rest
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// VmHWM (peak resident set) of a process, in kB.
fn peak_rss_kb(pid: u32) -> Result<Option<u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}, {}", std::env::consts::ARCH)
}

//! `bench`: the numbers behind BENCHMARKS.md, measured on 127.0.0.1 against
//! DynamoDB Local, moto and the OpenAI stub with release binaries:
//! init time against a hello-world bootstrap, cold starts, warm latency and CPU per route, DynamoDB requests per
//! operation (counted by a proxy), ChatKit time-to-first-byte and CPU per
//! delta, the critical path of a ChatKit turn (DynamoDB requests before the
//! model request, in all and as sequential round trips once requests that
//! overlap in time are grouped, and the time to the model request), the cost
//! of a ChatKit refusal (a 401 without or with a bad token, a 429 over the
//! per-user turn budget, first and remembered, a cancelled session's secret:
//! process CPU, latency, DynamoDB and Secrets Manager requests per refusal,
//! on a second small stack with a budget of one turn a minute), peak RSS and
//! (with `--zips`) the arm64 zip sizes.
//! Then each function under the CPU quota of each memory size (`cpushare`).

mod capacity;
mod cost;
mod costs;
mod cpushare;
mod init;
mod prefix;
mod refusals;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use emulators::build::Profile;
use emulators::dynamodb_local::DynamoDbLocal;
use emulators::moto::Moto;
use emulators::proxy::Exchange;
use emulators::runtime_api::{LambdaFunction, split_prelude};
use serde_json::{Value, json};
use taskpilot_testkit::openai_stub::Turn;
use taskpilot_testkit::stack::{LocalStack, StackOptions};
use taskpilot_testkit::{Result, events, repo_root};

const USAGE: &str =
    "usage: bench [--quick] [--zips] [--init-only | --cpu-share-only | --prefix-only]";

#[tokio::main]
async fn main() -> Result<()> {
    let mut quick = false;
    let mut zips = false;
    let mut init_only = false;
    let mut cpu_share_only = false;
    let mut prefix_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--zips" => zips = true,
            "--init-only" => init_only = true,
            "--cpu-share-only" => cpu_share_only = true,
            "--prefix-only" => prefix_only = true,
            _ => return Err(USAGE.into()),
        }
    }
    let (cold_n, warm_n) = if quick { (5, 100) } else { (20, 1000) };
    let dynamodb = tokio::task::spawn_blocking(DynamoDbLocal::start).await??;
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let stack = LocalStack::start(stack_options(Profile::Release, &dynamodb, &moto)).await?;
    let mut report = String::new();
    if prefix_only {
        println!("{}", prefix::section(&stack, quick).await?);
        return Ok(());
    }
    if cpu_share_only {
        println!("{}", cpushare::section(&stack, quick).await?.0);
        return Ok(());
    }

    // Init: each function against a hello-world bootstrap.
    let functions = ["tasks", "sessions", "health", "chatkit"]
        .iter()
        .map(|name| stack.function(name).map(|f| f.config()))
        .collect::<Result<Vec<_>>>()?;
    let init_spawns = if quick { 5 } else { 20 };
    report.push_str(&init::section(&functions, &hello_lambda()?, init_spawns).await?);
    if init_only {
        println!("{report}");
        return Ok(());
    }

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
    let created = invoke_ok(tasks, &event_with("create-task.json", None, None)?).await?;
    let task_id = created["id"].as_str().ok_or("no task id")?.to_owned();
    let routes = warm_routes(&task_id);
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
            invoke_ok(tasks, &event_with("create-task.json", None, None)?).await?["id"]
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

    // The critical path of a chat turn: DynamoDB requests before the model request.
    let (section, secret_calls) = turn_critical_path(&stack, quick).await?;
    report.push_str(&section);
    secret_calls_after_init += secret_calls;

    // DynamoDB units and calls per request, and a turn's model tokens.
    let capacity = capacity::measure(&stack, if quick { 5 } else { 50 }).await?;
    report.push_str(&capacity::table(&capacity));

    // The prompt prefix from turn to turn of a long thread.
    report.push_str(&prefix::section(&stack, quick).await?);

    // What a refused ChatKit request costs (on a second stack with a budget
    // of one turn a minute, on the same DynamoDB Local and moto).
    let (section, secret_calls) =
        refusals::section(&dynamodb.endpoint, &moto.endpoint, quick).await?;
    report.push_str(&section);
    secret_calls_after_init += secret_calls;

    writeln!(
        report,
        "\nSecrets Manager `GetSecretValue` requests from warm processes (all timed runs above): \
         **{secret_calls_after_init}**.\n"
    )?;

    // Memory and package size.
    writeln!(report, "\n## Memory and package size\n")?;
    if zips {
        let status = emulators::build::cargo()
            .args(["run", "--quiet", "-p", "taskpilot-dev", "--bin", "package"])
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
    let (section, share) = cpushare::section(&stack, quick).await?;
    report.push_str(&section);
    report.push_str(&costs::section(&capacity, share.as_ref())?);
    println!("{report}");
    let machine = machine();
    let doc = format!(
        "# Benchmarks\n\nCommand: `cargo run --release -p taskpilot-dev --bin bench{}`\n\nMachine: {machine}\n\nDate: {}\n\n\
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

/// Builds the hello-world bootstrap (`examples/hello-lambda.rs`) with the
/// release profile and returns its path.
fn hello_lambda() -> Result<std::path::PathBuf> {
    let status = emulators::build::cargo()
        .args(["build", "--quiet", "--release", "-p", "taskpilot-dev"])
        .args(["--example", "hello-lambda"])
        .current_dir(repo_root())
        .status()?;
    if !status.success() {
        return Err("cargo build --example hello-lambda failed".into());
    }
    Ok(emulators::build::target_dir().join("release/examples/hello-lambda"))
}

/// `POST /api/chatkit/sessions` as the user of `jwt`: the minted session.
async fn mint_session(stack: &LocalStack, http: &reqwest::Client, jwt: &str) -> Result<Value> {
    let minted = http
        .post(format!("{}/api/chatkit/sessions", stack.url))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    let status = minted.status();
    let minted: Value = minted.json().await?;
    if !status.is_success() {
        return Err(format!("POST /api/chatkit/sessions: {status}: {minted}").into());
    }
    Ok(minted)
}

/// The critical path of `threads.add_user_message` on an existing thread,
/// with a user JWT and with a ChatKit client secret: the DynamoDB requests
/// the chatkit function makes before its model request and over the whole
/// turn, and the time from the invocation's hand-off to the model request.
/// Returns the report section and the `GetSecretValue` calls it caused.
async fn turn_critical_path(stack: &LocalStack, quick: bool) -> Result<(String, usize)> {
    let (text_n, tool_n) = if quick { (30, 5) } else { (200, 20) };
    let stub = stack.openai.as_ref().ok_or("no stub")?;
    let proxy = stack.dynamodb_proxy.as_ref().ok_or("no DynamoDB proxy")?;
    let secrets = stack.secrets.as_ref().ok_or("no Secrets Manager side")?;
    let chatkit = stack.function("chatkit")?;
    let http = taskpilot_testkit::http_client();
    let url = format!("{}/api/v1/chatkit", stack.url);
    let jwt = stack.token("bench");
    let minted = mint_session(stack, &http, &jwt).await?;
    let client_secret = minted["client_secret"]
        .as_str()
        .ok_or("no client_secret")?
        .to_owned();
    let callers = [
        ("user JWT", jwt.clone()),
        (
            "ChatKit client secret (from `POST /api/chatkit/sessions`)",
            client_secret,
        ),
    ];
    // Every thread first, so no measured turn follows its thread's creation:
    // one warm-up thread, then one per measured turn, for each caller.
    let mut threads = Vec::new();
    for _ in &callers {
        let mut ids = Vec::new();
        for _ in 0..1 + text_n + tool_n {
            ids.push(new_thread(stub, &http, &url, &jwt).await?);
        }
        threads.push(ids);
    }
    let answer: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let answer = answer.join(" ");
    let add = |thread: &str| {
        json!({"type": "threads.add_user_message",
               "params": {"thread_id": thread, "input": chat_input("what's left?")}})
    };
    let mut section = format!(
        "\n## ChatKit turn: critical path of `threads.add_user_message` on an existing thread \
         ({text_n} text turns and {tool_n} tool turns per caller, one warm process)\n\n"
    );
    writeln!(
        section,
        "| caller | DynamoDB requests before the model request | sequential DynamoDB round trips before the model request \
         | request received → model request received (p50 / p99) \
         | DynamoDB requests, whole turn: text answer | DynamoDB requests, whole turn: one tool call (create_task), then text |\n\
         |---|---|---|---|---|---|"
    )?;
    let secrets_before = secrets.get_secret_value_calls();
    // Each caller's requests and rounds before the model, per turn.
    let mut before_model: Vec<(&str, Vec<usize>, Vec<usize>)> = Vec::new();
    for ((label, bearer), ids) in callers.iter().zip(&threads) {
        // Warm this caller's path once, untimed.
        stub.push_turn(Turn::Text(answer.clone()));
        chatkit_request(&http, &url, bearer, &add(&ids[0])).await?;
        let from = Instant::now();
        proxy.start_timeline();
        chatkit.record_handoffs();
        let mut turns = Vec::new();
        for (i, id) in ids[1..].iter().enumerate() {
            if i >= text_n {
                stub.push_turn(Turn::Calls(vec![(
                    "create_task".into(),
                    json!({"title": "bench task"}),
                )]));
            }
            stub.push_turn(Turn::Text(answer.clone()));
            turns.push(chatkit_request(&http, &url, bearer, &add(id)).await?.0);
        }
        // Anything the function still sends after its last answer shows up here.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let until = Instant::now();
        let dynamodb = proxy.take_exchanges();
        let handoffs = chatkit.take_handoffs();
        let model: Vec<Instant> = stub
            .requests_to("/v1/responses")
            .iter()
            .map(|r| r.received_at)
            .filter(|at| *at >= from)
            .collect();
        let figures = place_turns(&turns, &handoffs, &model, &dynamodb, until)?;
        let (text, tools) = figures.split_at(text_n);
        let mut to_model: Vec<Duration> = text.iter().map(|f| f.to_model).collect();
        let before = summarize(figures.iter().map(|f| by_operation(&f.before_model)));
        let sequential = summarize(figures.iter().map(|f| by_round(&f.rounds_before_model)));
        let whole = |fs: &[TurnFigures]| {
            summarize(fs.iter().map(|f| {
                let mut cell = by_operation(&f.whole);
                if f.late > 0 {
                    write!(cell, " + {} after the body ended", f.late).unwrap_or_default();
                }
                cell
            }))
        };
        let (requests, rounds) = figures
            .iter()
            .map(|f| (f.before_model.len(), f.rounds_before_model.len()))
            .unzip();
        before_model.push((label, requests, rounds));
        writeln!(
            section,
            "| {label} | {before} | {sequential} | {} / {} | {} | {} |",
            ms(pct(&mut to_model, 50)),
            ms(pct(&mut to_model, 99)),
            whole(text),
            whole(tools)
        )?;
    }
    section.push('\n');
    for (label, requests, mut rounds) in before_model {
        rounds.sort_unstable();
        let median = rounds
            .get(rounds.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0);
        let mut per_turn: BTreeMap<usize, usize> = BTreeMap::new();
        for r in &rounds {
            *per_turn.entry(*r).or_default() += 1;
        }
        let per_turn: Vec<String> = per_turn
            .iter()
            .map(|(r, turns)| format!("{r} in {turns}"))
            .collect();
        writeln!(
            section,
            "Target: at most 2 sequential DynamoDB requests before the model request, {label}: **{}** \
             ({median} sequential round trips in the median turn, {} requests in all; round trips per turn: {} of {} turns).\n",
            if median <= 2 { "met" } else { "not met" },
            requests.iter().max().copied().unwrap_or(0),
            per_turn.join(", "),
            rounds.len()
        )?;
    }
    section.push_str(
        "- *Request received*: the moment the local Runtime API answers the chatkit process's waiting \
         `GET /runtime/invocation/next` with the event (taken just before the answer is written; the gateway hop before it is not included).\n\
         - *Model request received*: the moment the OpenAI stub has read the head of the turn's first `POST /v1/responses` \
         (p50 / p99 over the text turns).\n\
         - *DynamoDB requests before the model request*: the requests the counting proxy in front of DynamoDB Local received between \
         those two moments, by `X-Amz-Target`, total first, then by operation; identical in every turn unless the cell lists variants.\n\
         - *Sequential round trips*: the same requests grouped by overlap in time, from the moment the proxy read each request's head \
         to the moment it handed the whole answer back: sorted by arrival, a request arriving at or after the latest answer of the \
         current group opens a new group. The count of groups is the number of DynamoDB round trips the turn waits for one after \
         another; in parentheses each group's operations (`+`: concurrent, `→`: the next group). The target is judged on the \
         median turn: a request that waits for another's answer adds a round trip to every turn, while requests sent together \
         that reach the proxy one after another (their sender or the proxy kept off the CPU a moment, with the function, \
         the emulators and DynamoDB Local sharing this machine's cores) add one to that turn alone.\n\
         - *Whole turn*: the same count from *request received* to the end of the response body at the client \
         (a request arriving later, before the next turn, would be listed as \"after the body ended\").\n\
         - Each turn adds a message to its own thread, created beforehand with one exchange (a user message and a text answer).\n",
    );
    Ok((section, secrets.get_secret_value_calls() - secrets_before))
}

/// The `input` of a ChatKit user message.
fn chat_input(text: &str) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": [],
           "inference_options": {"tool_choice": null, "model": null}})
}

/// One ChatKit request as the client saw it.
struct ClientTurn {
    /// Just before the request was sent.
    sent: Instant,
    /// Just after the response body ended.
    ended: Instant,
}

/// Sends one ChatKit request through the gateway and reads the answer to its
/// end; an error status or an `error` event fails the bench.
async fn chatkit_request(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    request: &Value,
) -> Result<(ClientTurn, String)> {
    let sent = Instant::now();
    let mut resp = http
        .post(url)
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(request.to_string())
        .send()
        .await?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    let ended = Instant::now();
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() || sse_events(&body).any(|e| e["type"] == "error") {
        return Err(format!("{}: {status}: {body}", request["type"]).into());
    }
    Ok((ClientTurn { sent, ended }, body))
}

/// A new thread of the bearer's, one exchange long ("remember this" /
/// "Noted."): its id.
async fn new_thread(
    stub: &taskpilot_testkit::openai_stub::OpenAiStub,
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
) -> Result<String> {
    stub.push_turn(Turn::Text("Noted.".into()));
    let create =
        json!({"type": "threads.create", "params": {"input": chat_input("remember this")}});
    let (_, body) = chatkit_request(http, url, bearer, &create).await?;
    created_thread(&body)
}

/// The id of the thread a `threads.create` answer created.
fn created_thread(body: &str) -> Result<String> {
    Ok(sse_events(body)
        .find(|e| e["type"] == "thread.created")
        .and_then(|e| e["thread"]["id"].as_str().map(str::to_owned))
        .ok_or("threads.create: no thread.created event")?)
}

/// The JSON events of a server-sent-events body.
fn sse_events(body: &str) -> impl Iterator<Item = Value> + '_ {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
}

/// What the timelines say about one turn.
struct TurnFigures {
    /// DynamoDB operations, in order, from the hand-off to the first model request.
    before_model: Vec<String>,
    /// The same requests in rounds of requests that overlap in time.
    rounds_before_model: Vec<Vec<String>>,
    /// DynamoDB operations, in order, from the hand-off to the end of the body.
    whole: Vec<String>,
    /// DynamoDB requests after the body ended, before the next turn was sent.
    late: usize,
    /// Hand-off → first `POST /v1/responses` received by the stub.
    to_model: Duration,
}

/// Places each turn's events: its one invocation hand-off (between sending
/// and the end of the body), its first model request after that, and the
/// DynamoDB requests in between. `until` ends the last turn's late window.
fn place_turns(
    turns: &[ClientTurn],
    handoffs: &[Instant],
    model: &[Instant],
    dynamodb: &[Exchange],
    until: Instant,
) -> Result<Vec<TurnFigures>> {
    let between = |from: Instant, to: Instant| -> Vec<&Exchange> {
        dynamodb
            .iter()
            .filter(|e| e.arrived >= from && e.arrived < to)
            .collect()
    };
    let ops = |from: Instant, to: Instant| -> Vec<String> {
        between(from, to)
            .iter()
            .map(|e| short_operation(&e.operation))
            .collect()
    };
    let mut figures = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let during = |at: &&Instant| (turn.sent..=turn.ended).contains(*at);
        let received: Vec<&Instant> = handoffs.iter().filter(during).collect();
        let &[&received] = received.as_slice() else {
            return Err(format!(
                "turn {i}: {} invocations were handed out while it ran (expected 1)",
                received.len()
            )
            .into());
        };
        let first_model = *model
            .iter()
            .find(|at| (received..=turn.ended).contains(*at))
            .ok_or_else(|| format!("turn {i}: the function sent no POST /v1/responses"))?;
        let next = turns.get(i + 1).map_or(until, |t| t.sent);
        figures.push(TurnFigures {
            before_model: ops(received, first_model),
            rounds_before_model: rounds(&between(received, first_model), until),
            whole: ops(received, turn.ended),
            late: ops(turn.ended, next).len(),
            to_model: first_model.saturating_duration_since(received),
        });
    }
    Ok(figures)
}

/// `GetItem` for `DynamoDB_20120810.GetItem`.
fn short_operation(target: &str) -> String {
    target.trim_start_matches("DynamoDB_20120810.").to_owned()
}

/// The operations of `exchanges` in rounds of requests that overlap in
/// time: sorted by arrival, a request that arrives at or after the latest
/// answer of the current round opens a new round. A request not answered
/// (yet) counts as answered at `until`.
fn rounds(exchanges: &[&Exchange], until: Instant) -> Vec<Vec<String>> {
    let mut sorted = exchanges.to_vec();
    sorted.sort_by_key(|e| e.arrived);
    let mut rounds: Vec<Vec<String>> = Vec::new();
    let mut latest_answer: Option<Instant> = None;
    for e in sorted {
        let answered = e.answered.unwrap_or(until).max(e.arrived);
        match latest_answer {
            Some(latest) if e.arrived < latest => {
                latest_answer = Some(latest.max(answered));
                if let Some(round) = rounds.last_mut() {
                    round.push(short_operation(&e.operation));
                }
            }
            _ => {
                latest_answer = Some(answered);
                rounds.push(vec![short_operation(&e.operation)]);
            }
        }
    }
    rounds
}

/// `2 (GetItem + Query + UpdateItem → TransactWriteItems)`: the number of
/// rounds, then each round's operations (sorted by name, with a count when
/// one appears more than once), rounds in order.
fn by_round(rounds: &[Vec<String>]) -> String {
    if rounds.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = rounds
        .iter()
        .map(|round| {
            let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
            for op in round {
                *counted.entry(op).or_default() += 1;
            }
            counted
                .iter()
                .map(|(op, n)| match n {
                    1 => (*op).to_owned(),
                    n => format!("{n} {op}"),
                })
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect();
    format!("{} ({})", rounds.len(), parts.join(" → "))
}

/// `3 (1 GetItem, 1 PutItem, 1 Query)`: the total, then each operation by
/// name (the order of concurrent requests varies from turn to turn; the
/// rounds show the order that holds).
fn by_operation(ops: &[String]) -> String {
    if ops.is_empty() {
        return "0".into();
    }
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    for op in ops {
        *counted.entry(op).or_default() += 1;
    }
    let parts: Vec<String> = counted
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    format!("{} ({})", ops.len(), parts.join(", "))
}

/// One cell for many turns: the value when all agree, otherwise each value
/// with the number of turns that had it, most frequent first.
fn summarize(cells: impl Iterator<Item = String>) -> String {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for cell in cells {
        match seen.iter_mut().find(|(c, _)| *c == cell) {
            Some((_, n)) => *n += 1,
            None => seen.push((cell, 1)),
        }
    }
    if let [(only, _)] = seen.as_slice() {
        return only.clone();
    }
    seen.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let parts: Vec<String> = seen
        .iter()
        .map(|(cell, n)| format!("{cell} in {n} turns"))
        .collect();
    parts.join("; ")
}

/// The bench's stack: one instance per function, DynamoDB requests counted,
/// on `dynamodb` and `moto`, with limits no run reaches.
fn stack_options(profile: Profile, dynamodb: &DynamoDbLocal, moto: &Moto) -> StackOptions {
    StackOptions {
        profile,
        max_instances: 1,
        count_dynamodb: true,
        dynamodb_endpoint: Some(dynamodb.endpoint.clone()),
        moto_endpoint: Some(moto.endpoint.clone()),
        env: vec![
            ("SESSION_CREATE_PER_MINUTE".into(), "1000000".into()),
            ("CHATKIT_MAX_REQUESTS_PER_MINUTE".into(), "1000000".into()),
        ],
        ..StackOptions::default()
    }
}

/// Builds the n-th event of a warm run.
type EventMaker<'a> = Box<dyn Fn(usize) -> Result<String> + 'a>;

/// The warm table's routes: the function, the route, and each run's n-th
/// event (`task_id`: a task of the bench user's that exists).
fn warm_routes(task_id: &str) -> Vec<(&'static str, &'static str, EventMaker<'_>)> {
    vec![
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
            Box::new(move |_| event_with("get-task.json", Some(task_id), None)),
        ),
        (
            "tasks",
            "PATCH /api/v1/tasks/{id}",
            Box::new(move |_| {
                event_with(
                    "update-task.json",
                    Some(task_id),
                    Some(json!({"title": "renamed"})),
                )
            }),
        ),
        (
            "tasks",
            "POST …/complete, …/reopen",
            Box::new(move |i| {
                event_with(
                    if i % 2 == 0 {
                        "complete-task.json"
                    } else {
                        "reopen-task.json"
                    },
                    Some(task_id),
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
    ]
}

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

/// Invokes `f` with `event`: the answer's JSON body (`Null` when it is not
/// JSON, e.g. a stream's events); a status outside 2xx fails the bench.
async fn invoke_ok(f: &LambdaFunction, event: &str) -> Result<Value> {
    let raw = f
        .invoke(event.to_owned())
        .await
        .map_err(|e| format!("{}: {e}", f.name()))?;
    ok_body(&raw).map_err(|e| format!("{}: {e}", f.name()).into())
}

/// The JSON body of `raw`, a whole or a streamed answer (`Null` when not
/// JSON), unless its status is outside 2xx (a missing status is 200, as API
/// Gateway reads it).
fn ok_body(raw: &[u8]) -> Result<Value> {
    let (status, body) = match split_prelude(raw) {
        Some((prelude, body)) => (
            prelude["statusCode"].as_u64(),
            String::from_utf8_lossy(&body).into_owned(),
        ),
        None => {
            let answer: Value = serde_json::from_slice(raw)?;
            let body = answer["body"].as_str().unwrap_or_default().to_owned();
            (answer["statusCode"].as_u64(), body)
        }
    };
    let status = status.unwrap_or(200);
    if !(200..300).contains(&status) {
        return Err(format!("status {status}: {body}").into());
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
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
        let sdk = taskpilot_runtime::aws::with_limits(&emulators::aws::emulator_config(endpoint));
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

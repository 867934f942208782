//! Lambda's CPU share: Lambda gives a function CPU in proportion to its
//! memory (1,769 MB = one vCPU). Each function runs here under a cgroup v1
//! CFS quota matching a memory size (a wrapper script joins the group, then
//! execs the bootstrap; the emulators are not limited): cold starts, warm
//! latency, process CPU and billed duration per size, and [`choose`], the
//! cheapest size whose latency stays near the one-vCPU figures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use emulators::runtime_api::{Answer, FunctionConfig, LambdaFunction, split_prelude};
use serde_json::{Value, json};
use taskpilot_testkit::Result;
use taskpilot_testkit::openai_stub::{OpenAiStub, Turn};
use taskpilot_testkit::stack::LocalStack;

use super::{chat_input, cpu_seconds, event_with, ms, pct, sse_events};

/// The memory sizes measured, in MB.
pub const SIZES: [u32; 5] = [128, 256, 512, 1024, REFERENCE_MB];
/// The size with one whole vCPU: the reference of the bound.
pub const REFERENCE_MB: u32 = 1769;
/// A figure is within the bound at most at this percentage of the
/// reference figure (1.5×) …
pub const BOUND_PERCENT: u32 = 150;
/// … or at most this much above it, whichever is looser: a size whose quota
/// never bites runs as fast as a whole vCPU, and its p99 on this shared
/// 2-core machine still differs by a few milliseconds from run to run.
pub const BOUND_SLACK: Duration = Duration::from_millis(5);
/// Today's MemorySize of the REST functions (template.yaml).
pub const TODAY_REST_MB: u32 = 512;
/// Today's MemorySize of chatkit (template.yaml).
pub const TODAY_CHATKIT_MB: u32 = 1024;

/// The cgroup v1 cpu controller.
const CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";
/// The CFS period, in µs (the quota is this × MB ÷ 1,769).
const PERIOD_US: u64 = 100_000;
/// Untimed requests per route (turns for chatkit: 1) before the timed ones.
const WARM_UP: usize = 5;
/// Words of the chat answer.
const ANSWER_WORDS: usize = 500;
/// How long a killed group may take to empty.
const EMPTY_BOUND: Duration = Duration::from_secs(5);
/// The SSE event that carries answer text.
const TEXT_DELTA: &[u8] = b"content_part.text_delta";

/// A REST function: its cold-start event and its timed routes (label, event file).
struct RestFunction {
    name: &'static str,
    cold_event: &'static str,
    routes: &'static [(&'static str, &'static str)],
}

const REST: [RestFunction; 3] = [
    RestFunction {
        name: "tasks",
        cold_event: "list-tasks.json",
        // POST first: GET then lists the tasks it created (a page of them).
        routes: &[
            ("POST /api/v1/tasks", "create-task.json"),
            ("GET /api/v1/tasks", "list-tasks.json"),
        ],
    },
    RestFunction {
        name: "sessions",
        cold_event: "create-session.json",
        routes: &[("POST /api/chatkit/sessions", "create-session.json")],
    },
    RestFunction {
        name: "health",
        cold_event: "health.json",
        routes: &[("GET /health", "health.json")],
    },
];

/// The chatkit route as the figures name it.
const CHAT_ROUTE: &str = "POST /api/v1/chatkit (threads.create turn)";

// ---------------------------------------------------------------- choice

/// One memory size of one function, as [`choose`] weighs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Memory size, MB.
    pub memory_mb: u32,
    /// The latency figures held to the bound, each against the same figure
    /// of the reference size (REST: each route's p99; chatkit: first byte
    /// median and p90, turn median).
    pub figures: Vec<Duration>,
    /// Mean billed duration per invocation.
    pub billed: Duration,
}

/// Why [`choose`] passed over a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    /// The figure at this index of [`Candidate::figures`] is beyond its bound.
    Over(usize),
    /// Not as many figures as the reference size has.
    Incomparable,
}

/// What [`choose`] picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The chosen memory size, MB.
    pub memory_mb: u32,
    /// The sizes beyond the bound, in the order given.
    pub excluded: Vec<(u32, Excluded)>,
}

/// The most a figure may be when the reference size's is `reference`:
/// [`BOUND_PERCENT`] of it or [`BOUND_SLACK`] above it, whichever is more.
pub fn bound(reference: Duration) -> Duration {
    (reference.saturating_mul(BOUND_PERCENT) / 100).max(reference.saturating_add(BOUND_SLACK))
}

/// Whether `figures` stay within the bounds of `reference`'s.
fn verdict(figures: &[Duration], reference: &[Duration]) -> Option<Excluded> {
    if figures.len() != reference.len() {
        return Some(Excluded::Incomparable);
    }
    figures
        .iter()
        .zip(reference)
        .position(|(figure, reference)| *figure > bound(*reference))
        .map(Excluded::Over)
}

/// Memory × billed duration, MB·ns: the cost of one invocation.
fn cost(c: &Candidate) -> u128 {
    u128::from(c.memory_mb) * c.billed.as_nanos()
}

/// The cheapest size (lowest memory × mean billed duration, ties to the
/// smaller memory) among those whose figures each stay within the bound of
/// the [`REFERENCE_MB`] row's; `None` without a reference row.
pub fn choose(rows: &[Candidate]) -> Option<Choice> {
    let reference = rows.iter().find(|r| r.memory_mb == REFERENCE_MB)?;
    let judged: Vec<(&Candidate, Option<Excluded>)> = rows
        .iter()
        .map(|r| (r, verdict(&r.figures, &reference.figures)))
        .collect();
    let chosen = judged
        .iter()
        .filter(|(_, excluded)| excluded.is_none())
        .map(|(r, _)| r)
        .min_by_key(|r| (cost(r), r.memory_mb))?;
    Some(Choice {
        memory_mb: chosen.memory_mb,
        excluded: judged
            .iter()
            .filter_map(|(r, excluded)| excluded.map(|e| (r.memory_mb, e)))
            .collect(),
    })
}

// ---------------------------------------------------------------- figures

/// What a cost table needs from this section.
#[derive(Debug, Clone)]
pub struct CpuShareFigures {
    /// tasks, sessions, health, chatkit.
    pub functions: Vec<FunctionFigures>,
}

/// One function's chosen size and billed durations.
#[derive(Debug, Clone)]
pub struct FunctionFigures {
    /// Binary name.
    pub function: String,
    /// The MemorySize [`choose`] picked, MB.
    pub chosen_mb: u32,
    /// Today's MemorySize, MB ([`TODAY_REST_MB`], [`TODAY_CHATKIT_MB`]).
    pub today_mb: u32,
    /// Per route (chatkit: per turn).
    pub routes: Vec<RouteBilled>,
}

/// One route's billed duration at the chosen and at today's size.
#[derive(Debug, Clone)]
pub struct RouteBilled {
    /// `GET /api/v1/tasks` and the like.
    pub route: String,
    /// At [`FunctionFigures::chosen_mb`].
    pub at_chosen: Billed,
    /// At [`FunctionFigures::today_mb`].
    pub at_today: Billed,
}

/// Mean billed duration per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Billed {
    /// Hand-off to the process → response fully delivered (chatkit: the
    /// stream's end), unrounded.
    pub mean: Duration,
    /// The same, each invocation rounded up to a whole millisecond as
    /// Lambda bills it.
    pub mean_rounded_up: Duration,
}

impl Billed {
    fn of(billed: &[Duration]) -> Self {
        let n = billed.len().max(1) as u32;
        let rounded: Duration = billed
            .iter()
            .map(|d| Duration::from_millis(crate::cost::billed_ms(*d)))
            .sum();
        Self {
            mean: billed.iter().sum::<Duration>() / n,
            mean_rounded_up: rounded / n,
        }
    }
}

/// GB-seconds per million invocations of `billed` at `mb`.
fn gb_s_per_million(mb: u32, billed: Duration) -> f64 {
    f64::from(mb) / 1024.0 * billed.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------- section

/// Samples per size.
#[derive(Clone, Copy)]
struct Counts {
    cold: usize,
    warm: usize,
    turns: usize,
}

/// The report section and the figures for a cost table (`None` when the
/// cgroup cpu controller cannot be used here: the section says why).
pub async fn section(stack: &LocalStack, quick: bool) -> Result<(String, Option<CpuShareFigures>)> {
    let started = Instant::now();
    let counts = if quick {
        Counts {
            cold: 3,
            warm: 40,
            turns: 3,
        }
    } else {
        Counts {
            cold: 10,
            warm: 400,
            turns: 40,
        }
    };
    let mut out = String::from(
        "\n## Lambda CPU share: each function under the CPU quota of a memory size\n\n",
    );
    let scripts = Scripts::create()?;
    if let Err(why) = probe(&scripts) {
        writeln!(out, "Skipped: {why}.")?;
        return Ok((out, None));
    }
    let stub = stack.openai.as_ref().ok_or("no OpenAI stub")?;
    // Wrappers first, all of them, before any process is spawned from here.
    let mut configs = Vec::new();
    for name in REST.iter().map(|f| f.name).chain(["chatkit"]) {
        let config = stack.function(name)?.config();
        let mut sized = Vec::new();
        for mb in SIZES {
            let cgroup = Path::new(CGROUP_ROOT).join(cgroup_name(name, mb));
            let wrapper = scripts.wrapper(&format!("{name}-{mb}"), &cgroup, &config.binary)?;
            sized.push((mb, cgroup, limited(&config, &wrapper, mb)));
        }
        configs.push((name, sized));
    }
    warm_up(stack, stub).await?;
    let quiet = crate::init::wait_for_quiet_cpu().await?;
    write_intro(&mut out, counts, &quiet)?;

    let mut figures = Vec::new();
    for (spec, (_, sized)) in REST.iter().zip(&configs) {
        let mut rows = Vec::new();
        for (mb, cgroup, config) in sized {
            let user = stack.token(&format!("cpushare-{}-{mb}", spec.name));
            let row = measure_rest(spec, *mb, cgroup, config, &user, counts)
                .await
                .map_err(|e| format!("{} at {mb} MB: {e}", spec.name))?;
            rows.push(row);
        }
        figures.push(rest_table(&mut out, spec, &rows)?);
    }
    let (_, sized) = configs.last().ok_or("no chatkit configuration")?;
    let mut rows = Vec::new();
    for (mb, cgroup, config) in sized {
        let user = stack.token(&format!("cpushare-chatkit-{mb}"));
        let row = measure_chat(stub, *mb, cgroup, config, &user, counts)
            .await
            .map_err(|e| format!("chatkit at {mb} MB: {e}"))?;
        rows.push(row);
    }
    figures.push(chat_table(&mut out, &rows)?);
    let figures = CpuShareFigures { functions: figures };
    write_summary(&mut out, &figures)?;
    writeln!(
        out,
        "\nThis section took {:.0} s.",
        started.elapsed().as_secs_f64()
    )?;
    Ok((out, Some(figures)))
}

fn write_intro(out: &mut String, counts: Counts, quiet: &str) -> Result<()> {
    let Counts { cold, warm, turns } = counts;
    writeln!(
        out,
        "Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU. Here each function's \
         process runs in a cgroup v1 cpu group whose CFS quota is 100 ms × MB ÷ 1,769 per 100 ms period \
         (a wrapper script moves itself into the group, then execs the release bootstrap; only the function's \
         process is limited, not the emulators; `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` is the size). Per function \
         and size: {cold} cold starts (a fresh process each, process start → first response, the wrapper's \
         `sh` included), then one warm process: {warm} requests per route, back to back (a busy instance; sparse \
         requests would be throttled less), after {WARM_UP} untimed ones \
         (chatkit: {turns} turns after one untimed, each a `threads.create` answered with two tool calls, then \
         a {ANSWER_WORDS}-word answer, the stub streaming as fast as it can). Each function and size has a \
         user of its own, so no size inherits another's data (tasks: the POSTs come first, so the GETs list \
         a page of the tasks they created).\n\n\
         - *Billed duration*: from the invocation's hand-off to the process (the answer to its \
         `GET …/invocation/next`) to the response fully delivered to the Runtime API (chatkit: the stream's \
         end), the mean, unrounded (Lambda rounds each invocation up to 1 ms). *GB-s per 1M invocations*: \
         MB ÷ 1,024 × mean billed duration × 10⁶.\n\
         - *Process CPU*: the process's on-CPU time (schedstat) over the timed requests ÷ their number.\n\
         - *Throttled periods*: of the CFS periods in which the group ran (`cpu.stat`), those in which it \
         used up its quota and waited for the next period; over the warm requests of the row (cold starts: \
         over all of them).\n\
         - *First token → first byte*: from the OpenAI stub sending the first text delta to the first \
         text-delta byte of the streamed answer reaching the invoker (through the local Runtime API; no \
         gateway hop).\n\
         - *Choice*: the cheapest size (MB × mean billed duration, ties to the smaller size) whose figures \
         each stay within {:.2}× the 1,769 MB figure or {} ms above it, whichever is looser: REST, each \
         route's p99 (tasks: the billed duration is the mean of its two routes); chatkit, the first-byte \
         median and p90 and the median turn.\n\
         - Measured once the machine was quiet: {quiet}.\n",
        f64::from(BOUND_PERCENT) / 100.0,
        BOUND_SLACK.as_millis(),
    )?;
    Ok(())
}

/// One route's warm run at one size.
struct RouteRun {
    label: &'static str,
    times: Vec<Duration>,
    billed: Vec<Duration>,
    cpu_seconds: f64,
    throttle: CpuStat,
}

/// A REST function at one size.
struct RestRow {
    mb: u32,
    cold: Vec<Duration>,
    cold_throttle: CpuStat,
    routes: Vec<RouteRun>,
}

async fn measure_rest(
    spec: &RestFunction,
    mb: u32,
    cgroup: &Path,
    config: &FunctionConfig,
    user: &str,
    counts: Counts,
) -> Result<RestRow> {
    let quota = Quota::create(cgroup, mb)?;
    let cold_event = as_user(event_with(spec.cold_event, None, None)?, user)?;
    let before = quota.stat()?;
    let cold = cold_starts(config, &quota, &cold_event, counts.cold).await?;
    let cold_throttle = quota.stat()?.since(before);
    let f = LambdaFunction::new(config.clone());
    let mut routes = Vec::new();
    for (label, file) in spec.routes {
        let event = as_user(event_with(file, None, None)?, user)?;
        for _ in 0..WARM_UP {
            crate::invoke_ok(&f, &event).await?;
        }
        let pid = *f.pids().last().ok_or("no process")?;
        let cpu_before = cpu_seconds(pid)?;
        let before = quota.stat()?;
        let mut times = Vec::with_capacity(counts.warm);
        let mut billed = Vec::with_capacity(counts.warm);
        for _ in 0..counts.warm {
            f.record_handoffs();
            let started = Instant::now();
            let raw = f.invoke(event.clone()).await.map_err(|e| e.to_string());
            let ended = Instant::now();
            // Checked after the clock stops: the check is the bench's work.
            crate::ok_body(&raw?).map_err(|e| format!("{label}: {e}"))?;
            times.push(ended - started);
            billed.push(ended.saturating_duration_since(one_handoff(&f)?));
        }
        let throttle = quota.stat()?.since(before);
        let cpu_seconds = (cpu_seconds(pid)? - cpu_before) / counts.warm.max(1) as f64;
        routes.push(RouteRun {
            label,
            times,
            billed,
            cpu_seconds,
            throttle,
        });
    }
    if f.cold_starts() != 1 {
        return Err(format!("{} processes served the warm requests", f.cold_starts()).into());
    }
    quota.empty().await?;
    Ok(RestRow {
        mb,
        cold,
        cold_throttle,
        routes,
    })
}

/// chatkit at one size.
struct ChatRow {
    mb: u32,
    cold: Vec<Duration>,
    cold_throttle: CpuStat,
    first_byte: Vec<Duration>,
    turns: Vec<Duration>,
    billed: Vec<Duration>,
    cpu_seconds: f64,
    throttle: CpuStat,
}

async fn measure_chat(
    stub: &OpenAiStub,
    mb: u32,
    cgroup: &Path,
    config: &FunctionConfig,
    user: &str,
    counts: Counts,
) -> Result<ChatRow> {
    let quota = Quota::create(cgroup, mb)?;
    let cold_event = as_user(event_with("chat-kit-function-url.json", None, None)?, user)?;
    let before = quota.stat()?;
    let cold = cold_starts(config, &quota, &cold_event, counts.cold).await?;
    let cold_throttle = quota.stat()?.since(before);
    let f = LambdaFunction::new(config.clone());
    let event = as_user(turn_event()?, user)?;
    let answer: Vec<String> = (0..ANSWER_WORDS).map(|i| format!("w{i}")).collect();
    let answer = answer.join(" ");
    let script = |stub: &OpenAiStub| {
        stub.push_turn(Turn::Calls(vec![
            ("create_task".into(), json!({"title": "bench task"})),
            ("list_tasks".into(), json!({})),
        ]));
        stub.push_turn(Turn::Text(answer.clone()));
    };
    script(stub);
    chat_turn(&f, stub, &event).await?; // warm
    let pid = *f.pids().last().ok_or("no chatkit process")?;
    let cpu_before = cpu_seconds(pid)?;
    let before = quota.stat()?;
    let (mut first_byte, mut turns, mut billed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..counts.turns {
        script(stub);
        let t = chat_turn(&f, stub, &event)
            .await
            .map_err(|e| format!("turn {i}: {e}"))?;
        first_byte.push(
            t.first_byte
                .ok_or_else(|| format!("turn {i}: no text delta"))?,
        );
        turns.push(t.turn);
        billed.push(t.billed);
    }
    let throttle = quota.stat()?.since(before);
    let cpu_seconds = (cpu_seconds(pid)? - cpu_before) / counts.turns.max(1) as f64;
    if f.cold_starts() != 1 {
        return Err(format!("{} processes served the turns", f.cold_starts()).into());
    }
    quota.empty().await?;
    Ok(ChatRow {
        mb,
        cold,
        cold_throttle,
        first_byte,
        turns,
        billed,
        cpu_seconds,
        throttle,
    })
}

/// A `threads.create` through the chatkit Function URL as the sample user.
fn turn_event() -> Result<String> {
    event_with(
        "chat-kit-function-url.json",
        None,
        Some(json!({"type": "threads.create", "params": {"input": chat_input("bench")}})),
    )
}

/// `event` with `bearer` as its token (when it has one): each function and
/// size has a user of its own, so no size inherits another's data (the
/// sessions' Query reads the user's recent sessions).
fn as_user(event: String, bearer: &str) -> Result<String> {
    let mut event: Value = serde_json::from_str(&event)?;
    if let Some(auth) = event
        .get_mut("headers")
        .and_then(|h| h.get_mut("authorization"))
    {
        *auth = Value::String(format!("Bearer {bearer}"));
    }
    Ok(event.to_string())
}

/// `config` under the quota: `wrapper` as its bootstrap, `mb` as its memory size, one process.
fn limited(config: &FunctionConfig, wrapper: &Path, mb: u32) -> FunctionConfig {
    let mut env = config.env.clone();
    env.push(("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), mb.to_string()));
    FunctionConfig {
        binary: wrapper.to_owned(),
        env,
        max_instances: 1,
        echo_logs: false,
        ..config.clone()
    }
}

/// `n` cold starts, each a fresh process (killed after its first response).
async fn cold_starts(
    config: &FunctionConfig,
    quota: &Quota,
    event: &str,
    n: usize,
) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let fresh = LambdaFunction::new(config.clone());
        let started = Instant::now();
        let raw = fresh
            .invoke(event.to_owned())
            .await
            .map_err(|e| format!("cold start: {e}"))?;
        times.push(started.elapsed());
        crate::ok_body(&raw)?;
        quota.empty().await?;
    }
    Ok(times)
}

/// The one hand-off recorded since `record_handoffs`.
fn one_handoff(f: &LambdaFunction) -> Result<Instant> {
    match f.take_handoffs().as_slice() {
        [at] => Ok(*at),
        other => Err(format!("{} hand-offs for one invocation", other.len()).into()),
    }
}

/// One chat turn as the invoker saw it.
struct TurnTimes {
    /// Stub's first text delta → its first byte at the invoker.
    first_byte: Option<Duration>,
    /// Invoke → end of the stream.
    turn: Duration,
    /// Hand-off → end of the stream.
    billed: Duration,
}

/// Invokes `f` with a chat turn and reads the streamed answer to its end.
async fn chat_turn(f: &LambdaFunction, stub: &OpenAiStub, event: &str) -> Result<TurnTimes> {
    let _ = stub.take_first_delta_at();
    f.record_handoffs();
    let started = Instant::now();
    let answer = f
        .invoke_answer(event.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let mut received = None;
    match answer {
        Answer::Whole(bytes) => body.extend_from_slice(&bytes),
        Answer::Streamed(mut rx) => {
            while let Some(chunk) = rx.recv().await {
                let from = body.len().saturating_sub(TEXT_DELTA.len() - 1);
                body.extend_from_slice(&chunk?);
                if received.is_none()
                    && body[from..]
                        .windows(TEXT_DELTA.len())
                        .any(|w| w == TEXT_DELTA)
                {
                    received = Some(Instant::now());
                }
            }
        }
    }
    let ended = Instant::now();
    let handed = one_handoff(f)?;
    crate::ok_body(&body)?;
    let text = split_prelude(&body)
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if sse_events(&text).any(|e| e["type"] == "error") {
        return Err(format!("error event: {text}").into());
    }
    Ok(TurnTimes {
        first_byte: received
            .zip(stub.take_first_delta_at())
            .map(|(received, sent)| received.saturating_duration_since(sent)),
        turn: ended - started,
        billed: ended.saturating_duration_since(handed),
    })
}

/// Untimed traffic through the stack's own (unlimited) processes, so that
/// DynamoDB Local's JIT and the stub are warm before the first size.
async fn warm_up(stack: &LocalStack, stub: &OpenAiStub) -> Result<()> {
    for spec in &REST {
        let f = stack.function(spec.name)?;
        for (_, file) in spec.routes {
            let event = event_with(file, None, None)?;
            for _ in 0..100 {
                crate::invoke_ok(f, &event).await?;
            }
        }
    }
    let chatkit = stack.function("chatkit")?;
    let event = turn_event()?;
    for _ in 0..5 {
        stub.push_turn(Turn::Text("Noted.".into()));
        chat_turn(chatkit, stub, &event).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- tables

/// `p` of `values` (unsorted, left as they are).
fn at(values: &[Duration], p: usize) -> Duration {
    pct(&mut values.to_vec(), p)
}

/// `7.2 %`: the quota as a share of one vCPU.
fn quota_cell(mb: u32) -> String {
    format!("{:.1} %", quota_us(mb) as f64 / PERIOD_US as f64 * 100.0)
}

fn rest_table(out: &mut String, spec: &RestFunction, rows: &[RestRow]) -> Result<FunctionFigures> {
    writeln!(out, "\n### {}\n", spec.name)?;
    writeln!(
        out,
        "| memory | CPU quota (of a vCPU) | cold start median / p90 | route | p50 | p99 | process CPU / invocation \
         | mean billed duration | GB-s per 1M invocations | throttled periods |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for row in rows {
        for (i, r) in row.routes.iter().enumerate() {
            let (cold, throttled) = if i == 0 {
                (
                    format!("{} / {}", ms(at(&row.cold, 50)), ms(at(&row.cold, 90))),
                    format!("{}; cold starts: {}", r.throttle, row.cold_throttle),
                )
            } else {
                (String::new(), r.throttle.to_string())
            };
            let billed = Billed::of(&r.billed).mean;
            writeln!(
                out,
                "| {} MB | {} | {cold} | {} | {} | {} | {:.0} µs | {} | {:.1} | {throttled} |",
                row.mb,
                quota_cell(row.mb),
                r.label,
                ms(at(&r.times, 50)),
                ms(at(&r.times, 99)),
                r.cpu_seconds * 1e6,
                ms(billed),
                gb_s_per_million(row.mb, billed),
            )?;
        }
    }
    let candidates: Vec<Candidate> = rows
        .iter()
        .map(|row| {
            let means: Vec<Duration> = row
                .routes
                .iter()
                .map(|r| Billed::of(&r.billed).mean)
                .collect();
            Candidate {
                memory_mb: row.mb,
                figures: row.routes.iter().map(|r| at(&r.times, 99)).collect(),
                billed: means.iter().sum::<Duration>() / means.len().max(1) as u32,
            }
        })
        .collect();
    let labels: Vec<String> = spec
        .routes
        .iter()
        .map(|(l, _)| format!("{l} p99"))
        .collect();
    let chosen = write_choice(out, spec.name, TODAY_REST_MB, &candidates, &labels)?;
    let billed_at = |mb: u32, route: usize| -> Result<Billed> {
        let row = rows.iter().find(|r| r.mb == mb).ok_or("no row")?;
        Ok(Billed::of(&row.routes.get(route).ok_or("no route")?.billed))
    };
    let mut routes = Vec::new();
    for (i, (label, _)) in spec.routes.iter().enumerate() {
        routes.push(RouteBilled {
            route: (*label).to_owned(),
            at_chosen: billed_at(chosen, i)?,
            at_today: billed_at(TODAY_REST_MB, i)?,
        });
    }
    Ok(FunctionFigures {
        function: spec.name.to_owned(),
        chosen_mb: chosen,
        today_mb: TODAY_REST_MB,
        routes,
    })
}

fn chat_table(out: &mut String, rows: &[ChatRow]) -> Result<FunctionFigures> {
    writeln!(out, "\n### chatkit\n")?;
    writeln!(
        out,
        "| memory | CPU quota (of a vCPU) | cold start median / p90 | first token → first byte median / p90 \
         | turn median / p90 | process CPU / turn | mean billed duration | GB-s per 1M turns | throttled periods |\n\
         |---|---|---|---|---|---|---|---|---|"
    )?;
    for row in rows {
        let billed = Billed::of(&row.billed).mean;
        writeln!(
            out,
            "| {} MB | {} | {} / {} | {} / {} | {} / {} | {:.2} ms | {} | {:.1} | {}; cold starts: {} |",
            row.mb,
            quota_cell(row.mb),
            ms(at(&row.cold, 50)),
            ms(at(&row.cold, 90)),
            ms(at(&row.first_byte, 50)),
            ms(at(&row.first_byte, 90)),
            ms(at(&row.turns, 50)),
            ms(at(&row.turns, 90)),
            row.cpu_seconds * 1e3,
            ms(billed),
            gb_s_per_million(row.mb, billed),
            row.throttle,
            row.cold_throttle,
        )?;
    }
    let candidates: Vec<Candidate> = rows
        .iter()
        .map(|row| Candidate {
            memory_mb: row.mb,
            figures: vec![
                at(&row.first_byte, 50),
                at(&row.first_byte, 90),
                at(&row.turns, 50),
            ],
            billed: Billed::of(&row.billed).mean,
        })
        .collect();
    let labels = ["first byte median", "first byte p90", "turn median"].map(String::from);
    let chosen = write_choice(out, "chatkit", TODAY_CHATKIT_MB, &candidates, &labels)?;
    let billed_at = |mb: u32| -> Result<Billed> {
        Ok(Billed::of(
            &rows.iter().find(|r| r.mb == mb).ok_or("no row")?.billed,
        ))
    };
    Ok(FunctionFigures {
        function: "chatkit".into(),
        chosen_mb: chosen,
        today_mb: TODAY_CHATKIT_MB,
        routes: vec![RouteBilled {
            route: CHAT_ROUTE.into(),
            at_chosen: billed_at(chosen)?,
            at_today: billed_at(TODAY_CHATKIT_MB)?,
        }],
    })
}

/// Writes the "chosen MemorySize" line and returns the chosen size.
fn write_choice(
    out: &mut String,
    name: &str,
    today_mb: u32,
    candidates: &[Candidate],
    labels: &[String],
) -> Result<u32> {
    let choice = choose(candidates).ok_or("no 1,769 MB row to choose against")?;
    let find = |mb: u32| candidates.iter().find(|c| c.memory_mb == mb);
    let chosen = find(choice.memory_mb).ok_or("the chosen row is missing")?;
    let reference = find(REFERENCE_MB).ok_or("no 1,769 MB row")?;
    let gb_s = |c: &Candidate| gb_s_per_million(c.memory_mb, c.billed);
    let mut reason = format!(
        "the cheapest size within the bound: {:.1} GB-s per 1M invocations (1,769 MB: {:.1}; today's {today_mb} MB: {})",
        gb_s(chosen),
        gb_s(reference),
        find(today_mb).map_or("—".into(), |c| format!("{:.1}", gb_s(c))),
    );
    let over: Vec<String> = choice
        .excluded
        .iter()
        .map(|(mb, excluded)| match excluded {
            Excluded::Over(i) => {
                let figure = find(*mb)
                    .and_then(|c| c.figures.get(*i))
                    .copied()
                    .unwrap_or_default();
                let limit = reference
                    .figures
                    .get(*i)
                    .map_or(Duration::ZERO, |r| bound(*r));
                format!(
                    "{mb} MB ({} {} > {})",
                    labels.get(*i).map_or("figure", String::as_str),
                    ms(figure),
                    ms(limit)
                )
            }
            Excluded::Incomparable => format!("{mb} MB (figures missing)"),
        })
        .collect();
    if !over.is_empty() {
        write!(reason, "; beyond the bound: {}", over.join(", "))?;
    }
    writeln!(
        out,
        "\n**{name}** — chosen MemorySize: **{} MB** — {reason}.",
        choice.memory_mb
    )?;
    Ok(choice.memory_mb)
}

fn write_summary(out: &mut String, figures: &CpuShareFigures) -> Result<()> {
    writeln!(
        out,
        "\n### Billed duration at today's and at the chosen size\n\n\
         | function | route | MemorySize today → chosen | mean billed duration | rounded up per invocation (as billed) \
         | GB-s per 1M invocations (rounded up) |\n|---|---|---|---|---|---|"
    )?;
    for f in &figures.functions {
        for r in &f.routes {
            writeln!(
                out,
                "| {} | {} | {} MB → {} MB | {} → {} | {} → {} | {:.1} → {:.1} |",
                f.function,
                r.route,
                f.today_mb,
                f.chosen_mb,
                ms(r.at_today.mean),
                ms(r.at_chosen.mean),
                ms(r.at_today.mean_rounded_up),
                ms(r.at_chosen.mean_rounded_up),
                gb_s_per_million(f.today_mb, r.at_today.mean_rounded_up),
                gb_s_per_million(f.chosen_mb, r.at_chosen.mean_rounded_up),
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- cgroups

/// The CFS quota of `mb`, µs per period.
fn quota_us(mb: u32) -> u64 {
    PERIOD_US * u64::from(mb) / u64::from(REFERENCE_MB)
}

/// A group name no other run or size shares.
fn cgroup_name(function: &str, mb: u32) -> String {
    format!("taskpilot-bench-{}-{function}-{mb}", std::process::id())
}

/// Throttling counters of a group (`cpu.stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuStat {
    periods: u64,
    throttled: u64,
    throttled_ns: u64,
}

impl CpuStat {
    fn parse(text: &str) -> Self {
        let mut stat = Self::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = value.parse().unwrap_or(0);
            match key {
                "nr_periods" => stat.periods = value,
                "nr_throttled" => stat.throttled = value,
                "throttled_time" => stat.throttled_ns = value,
                _ => {}
            }
        }
        stat
    }

    fn since(self, before: Self) -> Self {
        Self {
            periods: self.periods.saturating_sub(before.periods),
            throttled: self.throttled.saturating_sub(before.throttled),
            throttled_ns: self.throttled_ns.saturating_sub(before.throttled_ns),
        }
    }
}

impl std::fmt::Display for CpuStat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} ({:.0} ms)",
            self.throttled,
            self.periods,
            self.throttled_ns as f64 / 1e6
        )
    }
}

/// A cgroup v1 cpu group with a CFS quota. Dropped, it kills the processes
/// still in it and removes itself.
struct Quota {
    dir: PathBuf,
}

impl Quota {
    /// Creates the group `dir` with the quota of `mb`.
    fn create(dir: &Path, mb: u32) -> Result<Self> {
        std::fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let quota = Self {
            dir: dir.to_owned(),
        };
        quota.write("cpu.cfs_period_us", PERIOD_US)?;
        quota.write("cpu.cfs_quota_us", quota_us(mb))?;
        Ok(quota)
    }

    fn write(&self, file: &str, value: u64) -> Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value.to_string())
            .map_err(|e| format!("write {}: {e}", path.display()).into())
    }

    fn stat(&self) -> Result<CpuStat> {
        Ok(CpuStat::parse(&std::fs::read_to_string(
            self.dir.join("cpu.stat"),
        )?))
    }

    /// The processes in the group.
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills the group's processes (the bootstraps this module started) and
    /// waits until the group is empty.
    async fn empty(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            if started.elapsed() > EMPTY_BOUND {
                return Err(format!("{} still holds {pids:?}", self.dir.display()).into());
            }
            kill(&pids);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() && std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            kill(&pids);
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: could not remove {}", self.dir.display());
    }
}

/// `kill -KILL` by process id (ones this module started).
fn kill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A temporary folder of wrapper scripts, removed when dropped.
struct Scripts {
    dir: PathBuf,
}

impl Scripts {
    fn create() -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("taskpilot-bench-cpushare-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Writes an executable `name` that moves itself into `cgroup`, then
    /// execs `binary`.
    fn wrapper(&self, name: &str, cgroup: &Path, binary: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let quoted = |p: &Path| -> Result<String> {
            let s = p.to_str().ok_or("a path that is not UTF-8")?;
            if s.contains('\'') {
                return Err(format!("a path with a quote: {s}").into());
            }
            Ok(format!("'{s}'"))
        };
        let script = format!(
            "#!/bin/sh\necho $$ > {} || exit 97\nexec {}\n",
            quoted(&cgroup.join("cgroup.procs"))?,
            quoted(binary)?
        );
        let path = self.dir.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a quota can be applied here: a group created, a process moved
/// into it by a wrapper; the reason why not otherwise.
fn probe(scripts: &Scripts) -> std::result::Result<(), String> {
    if !Path::new(CGROUP_ROOT).join("cpu.cfs_quota_us").exists() {
        return Err(format!("no cgroup v1 cpu controller at {CGROUP_ROOT}"));
    }
    let dir = Path::new(CGROUP_ROOT).join(cgroup_name("probe", REFERENCE_MB));
    let quota = Quota::create(&dir, REFERENCE_MB).map_err(|e| {
        format!("the cgroup v1 cpu controller at {CGROUP_ROOT} is not writable ({e})")
    })?;
    let wrapper = scripts
        .wrapper("probe", &quota.dir, Path::new("/bin/sh"))
        .map_err(|e| e.to_string())?;
    let status = Command::new(&wrapper)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run a wrapper script: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "a process cannot join a group in {CGROUP_ROOT} ({status})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn row(memory_mb: u32, figures: &[Duration], billed: Duration) -> Candidate {
        Candidate {
            memory_mb,
            figures: figures.to_vec(),
            billed,
        }
    }

    const NS: Duration = Duration::from_nanos(1);

    #[test]
    fn the_bound_is_the_ratio_when_that_is_looser() {
        assert_eq!(bound(ms(20)), ms(30));
    }

    #[test]
    fn the_bound_is_the_slack_when_that_is_looser() {
        assert_eq!(bound(ms(4)), ms(9));
    }

    #[test]
    fn ratio_and_slack_meet_at_10_ms() {
        assert_eq!(bound(ms(10)), ms(15));
    }

    #[test]
    fn a_figure_at_the_ratio_bound_is_within_and_one_ns_more_is_not() {
        let reference = [ms(20)];
        assert_eq!(verdict(&[ms(30)], &reference), None);
        assert_eq!(verdict(&[ms(30) + NS], &reference), Some(Excluded::Over(0)));
    }

    #[test]
    fn a_figure_at_the_slack_bound_is_within_and_one_ns_more_is_not() {
        let reference = [ms(4)];
        assert_eq!(verdict(&[ms(9)], &reference), None);
        assert_eq!(verdict(&[ms(9) + NS], &reference), Some(Excluded::Over(0)));
    }

    #[test]
    fn every_figure_must_hold_against_its_own_reference() {
        let reference = [ms(10), ms(100)];
        assert_eq!(verdict(&[ms(15), ms(150)], &reference), None);
        assert_eq!(
            verdict(&[ms(16), ms(100)], &reference),
            Some(Excluded::Over(0))
        );
        assert_eq!(
            verdict(&[ms(10), ms(151)], &reference),
            Some(Excluded::Over(1))
        );
    }

    #[test]
    fn a_different_number_of_figures_cannot_be_compared() {
        assert_eq!(
            verdict(&[ms(1)], &[ms(1), ms(1)]),
            Some(Excluded::Incomparable)
        );
        assert_eq!(
            verdict(&[ms(1), ms(1)], &[ms(1)]),
            Some(Excluded::Incomparable)
        );
    }

    #[test]
    fn no_choice_without_a_reference_row() {
        assert_eq!(choose(&[]), None);
        assert_eq!(choose(&[row(512, &[ms(1)], ms(1))]), None);
    }

    #[test]
    fn the_cheapest_within_the_bound_wins_not_the_smallest() {
        let rows = [
            row(128, &[ms(30)], ms(40)), // beyond the bound
            row(256, &[ms(12)], ms(10)), // 2560
            row(512, &[ms(11)], ms(4)),  // 2048: the cheapest within
            row(1024, &[ms(10)], ms(3)), // 3072
            row(1769, &[ms(10)], ms(2)), // 3538
        ];
        assert_eq!(
            choose(&rows),
            Some(Choice {
                memory_mb: 512,
                excluded: vec![(128, Excluded::Over(0))],
            })
        );
    }

    #[test]
    fn a_cheaper_size_beyond_the_bound_is_passed_over() {
        let rows = [
            row(128, &[ms(15) + NS], ms(1)), // the cheapest, 1 ns beyond
            row(1769, &[ms(10)], ms(1)),
        ];
        assert_eq!(
            choose(&rows),
            Some(Choice {
                memory_mb: 1769,
                excluded: vec![(128, Excluded::Over(0))],
            })
        );
        let rows = [row(128, &[ms(15)], ms(1)), row(1769, &[ms(10)], ms(1))];
        assert_eq!(choose(&rows).map(|c| c.memory_mb), Some(128));
    }

    #[test]
    fn the_reference_wins_when_it_is_the_cheapest() {
        let rows = [
            row(512, &[ms(10)], ms(10)), // 5120
            row(1769, &[ms(10)], ms(2)), // 3538
        ];
        assert_eq!(choose(&rows).map(|c| c.memory_mb), Some(1769));
    }

    #[test]
    fn a_tie_goes_to_the_smaller_memory_in_either_order() {
        let small = row(256, &[ms(10)], ms(8)); // 2048
        let large = row(512, &[ms(10)], ms(4)); // 2048
        let reference = row(1769, &[ms(10)], ms(10));
        for rows in [
            [small.clone(), large.clone(), reference.clone()],
            [large.clone(), small.clone(), reference.clone()],
        ] {
            assert_eq!(choose(&rows).map(|c| c.memory_mb), Some(256));
        }
        // One nanosecond less for the larger size wins it.
        let cheaper = row(512, &[ms(10)], ms(4) - NS);
        for rows in [
            [small.clone(), cheaper.clone(), reference.clone()],
            [cheaper.clone(), small.clone(), reference.clone()],
        ] {
            assert_eq!(choose(&rows).map(|c| c.memory_mb), Some(512));
        }
    }

    #[test]
    fn sizes_with_other_figures_are_excluded_as_incomparable() {
        let rows = [
            row(128, &[ms(1), ms(1)], ms(1)),
            row(1769, &[ms(10)], ms(1)),
        ];
        assert_eq!(
            choose(&rows),
            Some(Choice {
                memory_mb: 1769,
                excluded: vec![(128, Excluded::Incomparable)],
            })
        );
    }

    #[test]
    fn billed_rounds_each_invocation_up_to_a_millisecond() {
        let billed = Billed::of(&[ms(1) + NS, ms(2), Duration::from_micros(300)]);
        assert_eq!(billed.mean, (ms(3) + Duration::from_micros(300) + NS) / 3);
        assert_eq!(billed.mean_rounded_up, ms(5) / 3); // (2 + 2 + 1) ms ÷ 3
    }

    #[test]
    fn quotas_follow_memory() {
        assert_eq!(quota_us(1769), 100_000);
        assert_eq!(quota_us(128), 7_235);
        assert_eq!(quota_us(512), 28_942);
    }

    #[test]
    fn cpu_stat_is_read_and_subtracted() {
        let before =
            CpuStat::parse("nr_periods 10\nnr_throttled 2\nthrottled_time 5000000\nnr_bursts 0\n");
        let after = CpuStat::parse("nr_periods 30\nnr_throttled 7\nthrottled_time 9000000\n");
        assert_eq!(
            after.since(before),
            CpuStat {
                periods: 20,
                throttled: 5,
                throttled_ns: 4_000_000
            }
        );
        assert_eq!(after.since(before).to_string(), "5 of 20 (4 ms)");
    }
}

//! What a refused ChatKit request costs the chatkit process: a 401 without a
//! token or with a bad one, a 429 over the per-user turn budget (the user's
//! first refusal in the process, which asks DynamoDB, and the ones after it,
//! answered from the process's memory), a cancelled session's client secret.
//! Measured on a second small stack whose budget is one turn a minute (the
//! main stack's budget is generous so the other sections can chat freely),
//! on the same DynamoDB Local and moto: release binaries, one warm chatkit
//! process, DynamoDB and Secrets Manager requests counted by their proxies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use emulators::build::Profile;
use emulators::proxy::CountingProxy;
use emulators::tokens::DevAuth;
use serde_json::json;
use taskpilot_testkit::Result;
use taskpilot_testkit::openai_stub::Turn;
use taskpilot_testkit::stack::{LocalStack, SecretsSide, StackOptions};

use super::{chat_input, chatkit_request, cpu_seconds, ms, pct};

/// Pause after a batch before the counters are read, so a request the
/// function sends after its answer is counted with the batch.
const SETTLE: Duration = Duration::from_millis(150);
/// Least time left in the minute before the over-budget measurement starts:
/// the remembered refusals must all fall in the window of the first one.
const MINUTE_MARGIN: Duration = Duration::from_secs(30);

/// What a batch of refused requests cost, summed.
#[derive(Default)]
struct Cost {
    latencies: Vec<Duration>,
    cpu_seconds: f64,
    dynamodb: BTreeMap<String, usize>,
    get_secret_value: usize,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.latencies.extend(other.latencies);
        self.cpu_seconds += other.cpu_seconds;
        for (op, n) in other.dynamodb {
            *self.dynamodb.entry(op).or_default() += n;
        }
        self.get_secret_value += other.get_secret_value;
    }

    /// A table row: `| label | answer | requests | p50 | p99 | CPU |
    /// DynamoDB | GetSecretValue |`, the last three per request.
    fn row(&mut self, label: &str, answer: u16) -> String {
        let n = self.latencies.len();
        format!(
            "| {label} | {answer} | {n} | {} | {} | {:.0} µs | {} | {} |",
            ms(pct(&mut self.latencies, 50)),
            ms(pct(&mut self.latencies, 99)),
            self.cpu_seconds / n.max(1) as f64 * 1e6,
            per_request(&self.dynamodb, n),
            share(self.get_secret_value, n),
        )
    }
}

/// `count ÷ n`: a whole number when it divides evenly, two decimals otherwise.
fn share(count: usize, n: usize) -> String {
    let n = n.max(1);
    if count.is_multiple_of(n) {
        format!("{}", count / n)
    } else {
        format!("{:.2}", count as f64 / n as f64)
    }
}

/// `2 (1 GetItem, 1 UpdateItem)` per request: the total, then each
/// operation (by name).
fn per_request(counts: &BTreeMap<String, usize>, n: usize) -> String {
    let total: usize = counts.values().sum();
    if total == 0 {
        return "0".into();
    }
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(op, count)| format!("{} {op}", share(*count, n)))
        .collect();
    format!("{} ({})", share(total, n), parts.join(", "))
}

/// The refusal stack's chatkit side.
struct Side<'a> {
    http: reqwest::Client,
    url: String,
    pid: u32,
    dynamodb: &'a CountingProxy,
    secrets: &'a SecretsSide,
}

impl Side<'_> {
    /// A `threads.create` (the request that starts a turn), with `bearer`
    /// when given.
    /// The cost of `n` refusals of `bearer`'s turn, after 5 untimed ones.
    async fn warm_cost(&self, n: usize, status: u16, bearer: Option<&str>) -> Result<Cost> {
        self.refused(5, status, |_| self.turn_request(bearer))
            .await?;
        self.refused(n, status, |_| self.turn_request(bearer)).await
    }

    fn turn_request(&self, bearer: Option<&str>) -> reqwest::RequestBuilder {
        let body = json!({"type": "threads.create", "params": {"input": chat_input("refused?")}});
        let req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        match bearer {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `n` requests one after another, each to be answered `status`,
    /// and returns what they cost.
    async fn refused(
        &self,
        n: usize,
        status: u16,
        make: impl Fn(usize) -> reqwest::RequestBuilder,
    ) -> Result<Cost> {
        let dynamodb_before = self.dynamodb.counts();
        let secrets_before = self.secrets.get_secret_value_calls();
        let cpu_before = cpu_seconds(self.pid)?;
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let req = make(i);
            let started = Instant::now();
            let resp = req.send().await?;
            let got = resp.status();
            let body = resp.bytes().await?;
            latencies.push(started.elapsed());
            if got.as_u16() != status {
                return Err(format!(
                    "expected {status}, got {got}: {}",
                    String::from_utf8_lossy(&body)
                )
                .into());
            }
        }
        tokio::time::sleep(SETTLE).await;
        let cpu_seconds = cpu_seconds(self.pid)? - cpu_before;
        let after = self.dynamodb.counts();
        let dynamodb = after
            .iter()
            .filter_map(|(op, count)| {
                let d = count - dynamodb_before.get(op).copied().unwrap_or(0);
                (d > 0).then(|| (super::short_operation(op), d))
            })
            .collect();
        Ok(Cost {
            latencies,
            cpu_seconds,
            dynamodb,
            get_secret_value: self.secrets.get_secret_value_calls() - secrets_before,
        })
    }
}

/// A client secret of `user`'s session, minted and then cancelled.
async fn cancelled_secret(stack: &LocalStack, http: &reqwest::Client, jwt: &str) -> Result<String> {
    let minted = crate::mint_session(stack, http, jwt).await?;
    let (Some(id), Some(secret)) = (
        minted["session_id"].as_str(),
        minted["client_secret"].as_str(),
    ) else {
        return Err(format!("POST /api/chatkit/sessions: {minted}").into());
    };
    let cancelled = http
        .post(format!("{}/api/chatkit/sessions/{id}/cancel", stack.url))
        .bearer_auth(jwt)
        .send()
        .await?;
    if !cancelled.status().is_success() {
        let status = cancelled.status();
        return Err(format!(
            "POST /api/chatkit/sessions/{{id}}/cancel: {status}: {}",
            cancelled.text().await?
        )
        .into());
    }
    Ok(secret.to_owned())
}

/// The minute the budget counts in (UTC, from the epoch).
fn minute() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(60)
}

/// Waits for the next minute when less than [`MINUTE_MARGIN`] is left.
async fn wait_for_minute_room() -> Duration {
    let into = chrono::Utc::now().timestamp_millis().rem_euclid(60_000) as u64;
    let left = Duration::from_millis(60_000 - into);
    if left >= MINUTE_MARGIN {
        return Duration::ZERO;
    }
    let wait = left + Duration::from_millis(250);
    tokio::time::sleep(wait).await;
    wait
}

/// The report section and the `GetSecretValue` calls its timed requests caused.
pub async fn section(dynamodb: &str, moto: &str, quick: bool) -> Result<(String, usize)> {
    let (n, users) = if quick { (50, 5) } else { (200, 10) };
    let stack = LocalStack::start(StackOptions {
        functions: Some(vec!["chatkit".into(), "sessions".into()]),
        profile: Profile::Release,
        max_instances: 1,
        count_dynamodb: true,
        dynamodb_endpoint: Some(dynamodb.to_owned()),
        moto_endpoint: Some(moto.to_owned()),
        env: vec![
            ("CHATKIT_USER_TURNS_PER_MINUTE".into(), "1".into()),
            ("SESSION_CREATE_PER_MINUTE".into(), "1000000".into()),
            ("CHATKIT_MAX_REQUESTS_PER_MINUTE".into(), "1000000".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let stub = stack.openai.as_ref().ok_or("no stub")?;
    let chatkit = stack.function("chatkit")?;
    let http = taskpilot_testkit::http_client();
    let url = format!("{}/api/v1/chatkit", stack.url);
    // Start the chatkit process and warm its paths, untimed.
    let list = json!({"type": "threads.list", "params": {}});
    chatkit_request(&http, &url, &stack.token("bench-warm"), &list).await?;
    let side = Side {
        http: http.clone(),
        url: url.clone(),
        pid: *chatkit.pids().last().ok_or("no chatkit process")?,
        dynamodb: stack.dynamodb_proxy.as_ref().ok_or("no DynamoDB proxy")?,
        secrets: stack.secrets.as_ref().ok_or("no Secrets Manager side")?,
    };
    let forged = DevAuth {
        secret: "not-the-stack-secret-0123456789abcdef".into(),
        ..stack.auth.clone()
    }
    .token("bench-forged");

    let mut rows: Vec<String> = Vec::new();
    let mut secret_calls = 0;

    let mut cost = side.warm_cost(n, 401, None).await?;
    secret_calls += cost.get_secret_value;
    rows.push(cost.row("no `Authorization` header", 401));

    let mut cost = side.warm_cost(n, 401, Some(&forged)).await?;
    secret_calls += cost.get_secret_value;
    rows.push(cost.row("bearer JWT with a bad signature (well-formed, HS256)", 401));

    // Cancelled sessions' secrets (their users within budget): each one's
    // first refusal reads DynamoDB, later ones are remembered. Optional: the
    // rows say why when they could not be set up.
    let first_label = "client secret of a cancelled session: its first refusal in the process";
    let later_label = "client secret of a cancelled session: later refusals (remembered)";
    let mut cancelled = Vec::new();
    for i in 0..=users {
        let jwt = stack.token(&format!("bench-cancelled-{i}"));
        match cancelled_secret(&stack, &http, &jwt).await {
            Ok(secret) => cancelled.push(secret),
            Err(e) => {
                for label in [first_label, later_label] {
                    rows.push(format!(
                        "| {label} | — | not measured: {} | — | — | — | — | — |",
                        e.to_string().replace('|', "\\|")
                    ));
                }
                break;
            }
        }
    }
    if cancelled.len() == users + 1 {
        let mut first = Cost::default();
        for (i, secret) in cancelled.iter().enumerate() {
            let cost = side
                .refused(1, 401, |_| side.turn_request(Some(secret)))
                .await?;
            // The first one warms the path, untimed.
            if i > 0 {
                first.add(cost);
            }
        }
        let mut later = side.warm_cost(n, 401, Some(&cancelled[1])).await?;
        secret_calls += first.get_secret_value + later.get_secret_value;
        rows.push(first.row(first_label, 401));
        rows.push(later.row(later_label, 401));
    }

    // Over the per-minute budget: each user's one turn, then refusals, all
    // within one minute.
    let waited = wait_for_minute_room().await;
    let window = minute();
    let over: Vec<String> = (0..=users)
        .map(|i| stack.token(&format!("bench-over-budget-{i}")))
        .collect();
    let mut first = Cost::default();
    for (i, jwt) in over.iter().enumerate() {
        stub.push_turn(Turn::Text("Noted.".into()));
        let create = json!({"type": "threads.create", "params": {"input": chat_input("one turn")}});
        chatkit_request(&http, &url, jwt, &create).await?;
        // Let the turn's last writes land before the refusal is counted.
        tokio::time::sleep(SETTLE).await;
        let cost = side
            .refused(1, 429, |_| side.turn_request(Some(jwt)))
            .await?;
        // The first user warms the refusal path, untimed.
        if i > 0 {
            first.add(cost);
        }
    }
    let over = &over[1..];
    let mut remembered = side
        .refused(n, 429, |i| side.turn_request(Some(&over[i % over.len()])))
        .await?;
    if minute() != window {
        return Err(
            "the minute ended during the over-budget measurement: run the bench again".into(),
        );
    }
    secret_calls += first.get_secret_value + remembered.get_secret_value;
    rows.push(first.row(
        "over the turn budget: the user's first refusal in the process",
        429,
    ));
    rows.push(remembered.row(
        "over the turn budget: later refusals (remembered by the process)",
        429,
    ));
    if chatkit.pids().len() != 1 {
        return Err(format!(
            "chatkit ran {} processes (expected 1)",
            chatkit.pids().len()
        )
        .into());
    }

    let mut section = format!(
        "\n## ChatKit refusals: cost of a 401 and a 429 (`threads.create`, one warm process, \
         {n} requests per row unless noted)\n\n"
    );
    writeln!(
        section,
        "| refused request | answer | requests | p50 | p99 | chatkit process CPU / refusal \
         | DynamoDB requests / refusal | `GetSecretValue` / refusal |\n|---|---|---|---|---|---|---|---|"
    )?;
    for row in &rows {
        writeln!(section, "{row}")?;
    }
    write!(
        section,
        "\n- A second stack for this section: release binaries, `CHATKIT_USER_TURNS_PER_MINUTE=1`, one chatkit process \
         (warmed by untimed requests of each kind first), the same DynamoDB Local and moto as the rest of the bench.\n\
         - Every request is a `threads.create` (the request that starts a turn) through the gateway, sent one after another.\n\
         - *p50 / p99*: from sending the request to the end of the answer's body, at the client.\n\
         - *Process CPU*: the chatkit process's on-CPU time (all threads, schedstat) over the row's requests ÷ requests: \
         the Runtime API polling and event decoding included, as in the warm table.\n\
         - *DynamoDB requests* and *`GetSecretValue`*: what the counting proxies in front of DynamoDB Local and moto received from \
         the first request of the row to {} ms after its last answer, ÷ requests, by `X-Amz-Target`.\n\
         - *Over the turn budget*: {users} users each send one admitted `threads.create` (a model turn), then another: that \
         user's first refusal ({users} requests, one per user, p99 = the slowest); then {n} more `threads.create` round-robin \
         over the same users, within the same minute, answered from the refusals the process remembers until the minute ends{}.\n",
        SETTLE.as_millis(),
        if waited > Duration::ZERO {
            format!(
                " (the bench waited {:.0} s for a fresh minute)",
                waited.as_secs_f64()
            )
        } else {
            String::new()
        }
    )?;
    drop(side);
    drop(stack);
    Ok((section, secret_calls))
}

//! DynamoDB capacity and calls per request: for each warm REST route and for
//! two kinds of ChatKit turn, the read and write request units DynamoDB
//! Local reports (through the counting proxy's capacity mode, see
//! [`emulators::proxy::CountingProxy::set_capacity_mode`]), the DynamoDB and
//! Secrets Manager requests, and for a turn the model requests and the
//! tokens the OpenAI stub reported, each the mean per call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use emulators::proxy::{CountingProxy, Exchange};
use emulators::runtime_api::LambdaFunction;
use serde_json::{Value, json};
use taskpilot_testkit::Result;
use taskpilot_testkit::openai_stub::{Turn, prompt_tokens};
use taskpilot_testkit::stack::LocalStack;

use crate::cost;
use crate::{chat_input, chatkit_request, event_with};

/// What one call used: means over the calls measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Calls measured.
    pub calls: usize,
    /// DynamoDB requests and units per call, by operation (`GetItem`…).
    pub dynamodb: BTreeMap<String, Operation>,
    /// DynamoDB read request units per call.
    pub read_units: f64,
    /// DynamoDB write request units per call.
    pub write_units: f64,
    /// DynamoDB requests per call whose answer reported no capacity (an
    /// error such as a failed condition, which DynamoDB charges without
    /// reporting), so not in the units.
    pub unreported: f64,
    /// Secrets Manager requests per call, by operation (`GetSecretValue`…).
    pub secrets_manager: BTreeMap<String, f64>,
    /// S3 requests per call; `None`: not counted (the functions reach S3
    /// through the S3 front, which counts only presigned requests).
    pub s3: Option<f64>,
}

/// One DynamoDB operation's share of a call, per call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Operation {
    /// Requests.
    pub requests: f64,
    /// Read request units.
    pub read_units: f64,
    /// Write request units.
    pub write_units: f64,
    /// Requests whose answer reported no capacity.
    pub unreported: f64,
}

impl Usage {
    /// DynamoDB requests per call.
    pub fn dynamodb_requests(&self) -> f64 {
        self.dynamodb.values().map(|op| op.requests).sum()
    }

    /// Secrets Manager requests per call.
    pub fn secrets_requests(&self) -> f64 {
        self.secrets_manager.values().sum()
    }

    /// The cost model's workload for one call: one invocation of a
    /// `memory_mb` function billed `billed_ms`, through `front`, with this
    /// call's units and calls (S3 as none when not counted; `tokens` from
    /// [`TurnTokens::tokens`] for a turn, default for a REST route).
    pub fn workload(
        &self,
        memory_mb: u32,
        billed_ms: f64,
        front: cost::Front,
        tokens: cost::Tokens,
    ) -> cost::Workload {
        cost::Workload {
            memory_mb,
            invocations: 1.0,
            billed_ms,
            front,
            front_requests: 1.0,
            read_units: self.read_units,
            write_units: self.write_units,
            secrets_calls: self.secrets_requests(),
            s3: cost::S3Requests::default(),
            tokens,
        }
    }
}

/// A REST route's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCapacity {
    /// The function (binary) serving it.
    pub function: String,
    /// `GET /api/v1/tasks`…
    pub route: String,
    /// Per call.
    pub usage: Usage,
}

/// The model side of a turn: means per turn over every model request of the
/// turn, as the stub reported them in `response.completed`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnTokens {
    /// `POST /v1/responses` requests the stub received.
    pub model_requests: f64,
    /// `input_tokens`, summed over the turn's model requests (from the
    /// function's `turn usage` log line, which adds up what the stub reported).
    pub input: f64,
    /// Of `input`, `cached_tokens`.
    pub cached_input: f64,
    /// `output_tokens`.
    pub output: f64,
    /// The input tokens the stub counts for the request bodies it received
    /// (`prompt_tokens`): equal to `input` unless a usage went unreported.
    pub input_of_requests: f64,
}

impl TurnTokens {
    /// As the cost model takes them.
    pub fn tokens(&self) -> cost::Tokens {
        cost::Tokens {
            input: self.input,
            cached_input: self.cached_input,
            output: self.output,
        }
    }
}

/// A kind of ChatKit turn's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnCapacity {
    /// `text answer`, or `one tool call (create_task), then text`.
    pub kind: String,
    /// Per turn, DynamoDB and Secrets Manager over the whole turn (what the
    /// function sent after the body ended included).
    pub usage: Usage,
    /// Per turn.
    pub tokens: TurnTokens,
}

/// Everything [`measure`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapacityFigures {
    /// The warm routes, in the order of the bench's warm table, then DELETE.
    pub routes: Vec<RouteCapacity>,
    /// A text turn, then a tool turn.
    pub turns: Vec<TurnCapacity>,
}

/// Measures every warm REST route over `calls` calls each (after one
/// untimed call), and `calls` text turns and `calls` tool turns of
/// `threads.add_user_message` on existing threads, as the user of a JWT. The
/// stack needs `count_dynamodb` and the chatkit function; the proxy's
/// capacity mode is turned on for the measurement and restored after. It
/// records the proxy's timeline, so nothing else may record one meanwhile.
pub async fn measure(stack: &LocalStack, calls: usize) -> Result<CapacityFigures> {
    let proxy = stack
        .dynamodb_proxy
        .as_ref()
        .ok_or("no DynamoDB proxy (start the stack with count_dynamodb)")?;
    let secrets = stack.secrets.as_ref().ok_or("no Secrets Manager side")?;
    let calls = calls.max(1);
    let was_on = proxy.capacity_mode();
    proxy.set_capacity_mode(true);
    let meter = Meter {
        dynamodb: proxy,
        secrets: &secrets.proxy,
    };
    let measured = async {
        Ok(CapacityFigures {
            routes: measure_routes(stack, &meter, calls).await?,
            turns: measure_turns(stack, &meter, calls).await?,
        })
    }
    .await;
    proxy.set_capacity_mode(was_on);
    measured
}

/// The proxies a measurement reads.
struct Meter<'a> {
    dynamodb: &'a CountingProxy,
    secrets: &'a CountingProxy,
}

/// A measurement under way: the DynamoDB timeline recording, the Secrets
/// Manager counts as they were.
struct Window<'a> {
    meter: &'a Meter<'a>,
    secrets_before: BTreeMap<String, usize>,
}

impl Meter<'_> {
    fn open(&self) -> Window<'_> {
        self.dynamodb.start_timeline();
        Window {
            meter: self,
            secrets_before: self.secrets.counts(),
        }
    }
}

impl Window<'_> {
    /// Stops the measurement (after a moment for the requests a function
    /// sends after its answer) and returns the usage per call.
    async fn close(self, calls: usize) -> Usage {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let exchanges = self.meter.dynamodb.take_exchanges();
        let secrets = difference(&self.secrets_before, &self.meter.secrets.counts());
        usage(&exchanges, &secrets, calls)
    }
}

/// The usage per call of `calls` calls that made the DynamoDB requests
/// `exchanges` and the Secrets Manager requests `secrets` (by operation).
fn usage(exchanges: &[Exchange], secrets: &BTreeMap<String, usize>, calls: usize) -> Usage {
    let n = calls.max(1) as f64;
    let mut dynamodb: BTreeMap<String, Operation> = BTreeMap::new();
    for e in exchanges {
        let name = e.operation.trim_start_matches("DynamoDB_20120810.");
        let op = dynamodb.entry(name.to_owned()).or_default();
        op.requests += 1.0;
        op.read_units += e.read_units;
        op.write_units += e.write_units;
        if !e.capacity_reported {
            op.unreported += 1.0;
        }
    }
    for op in dynamodb.values_mut() {
        *op = Operation {
            requests: op.requests / n,
            read_units: op.read_units / n,
            write_units: op.write_units / n,
            unreported: op.unreported / n,
        };
    }
    let total = |field: fn(&Operation) -> f64| dynamodb.values().map(field).sum::<f64>();
    Usage {
        calls,
        read_units: total(|op| op.read_units),
        write_units: total(|op| op.write_units),
        unreported: total(|op| op.unreported),
        dynamodb,
        secrets_manager: secrets
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(op, count)| {
                let op = op.trim_start_matches("secretsmanager.");
                (op.to_owned(), *count as f64 / n)
            })
            .collect(),
        s3: None,
    }
}

/// How much each count grew from `before` to `after`.
fn difference(
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(op, n)| {
            let was = before.get(op).copied().unwrap_or(0);
            (op.clone(), n.saturating_sub(was))
        })
        .filter(|(_, grew)| *grew > 0)
        .collect()
}

/// The bench's warm routes (main.rs's table), then DELETE on tasks created
/// beforehand.
async fn measure_routes(
    stack: &LocalStack,
    meter: &Meter<'_>,
    calls: usize,
) -> Result<Vec<RouteCapacity>> {
    let tasks = stack.function("tasks")?;
    let created = crate::invoke_ok(tasks, &event_with("create-task.json", None, None)?).await?;
    let task_id = created["id"].as_str().ok_or("no task id")?.to_owned();
    let routes = super::warm_routes(&task_id);
    let mut measured = Vec::with_capacity(routes.len() + 1);
    for (function, route, make) in &routes {
        let f = stack.function(function)?;
        crate::invoke_ok(f, &make(0)?).await?; // warm, untimed
        let window = meter.open();
        for i in 1..=calls {
            crate::invoke_ok(f, &make(i)?).await?;
        }
        measured.push(RouteCapacity {
            function: (*function).to_owned(),
            route: (*route).to_owned(),
            usage: window.close(calls).await,
        });
    }
    // DELETE: each call removes another task.
    let route = "DELETE /api/v1/tasks/{id}";
    let mut ids = Vec::with_capacity(calls);
    for _ in 0..calls {
        let created = crate::invoke_ok(tasks, &event_with("create-task.json", None, None)?).await?;
        ids.push(created["id"].as_str().ok_or("no task id")?.to_owned());
    }
    let window = meter.open();
    for id in &ids {
        crate::invoke_ok(tasks, &event_with("delete-task.json", Some(id), None)?).await?;
    }
    measured.push(RouteCapacity {
        function: "tasks".into(),
        route: route.into(),
        usage: window.close(calls).await,
    });
    Ok(measured)
}

/// A text turn and a tool turn of `threads.add_user_message`, each on its
/// own thread created beforehand with one exchange (as the bench's critical
/// path does).
async fn measure_turns(
    stack: &LocalStack,
    meter: &Meter<'_>,
    calls: usize,
) -> Result<Vec<TurnCapacity>> {
    let stub = stack.openai.as_ref().ok_or("no OpenAI stub")?;
    let chatkit = stack.function("chatkit")?;
    let http = taskpilot_testkit::http_client();
    let url = format!("{}/api/v1/chatkit", stack.url);
    let jwt = stack.token("bench-capacity");
    let mut threads = Vec::with_capacity(1 + 2 * calls);
    for _ in 0..1 + 2 * calls {
        threads.push(crate::new_thread(stub, &http, &url, &jwt).await?);
    }
    let answer: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let answer = answer.join(" ");
    let add = |thread: &str| {
        json!({"type": "threads.add_user_message",
               "params": {"thread_id": thread, "input": chat_input("what's left?")}})
    };
    // Warm the path once, untimed.
    stub.push_turn(Turn::Text(answer.clone()));
    chatkit_request(&http, &url, &jwt, &add(&threads[0])).await?;
    let kinds = [
        ("text answer", false, &threads[1..=calls]),
        (
            "one tool call (create_task), then text",
            true,
            &threads[1 + calls..],
        ),
    ];
    let mut measured = Vec::with_capacity(kinds.len());
    for (kind, tool, ids) in kinds {
        // The last turn's usage line may still be on its way: let it in first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs_before = chatkit.logs().len();
        let model_before = stub.requests_to("/v1/responses").len();
        let window = meter.open();
        for id in ids {
            if tool {
                stub.push_turn(Turn::Calls(vec![(
                    "create_task".into(),
                    json!({"title": "bench task"}),
                )]));
            }
            stub.push_turn(Turn::Text(answer.clone()));
            chatkit_request(&http, &url, &jwt, &add(id)).await?;
        }
        let usage = window.close(calls).await;
        let lines = usage_lines(chatkit, logs_before, calls).await?;
        let bodies: Vec<Value> = stub
            .requests_to("/v1/responses")
            .into_iter()
            .skip(model_before)
            .map(|r| r.body)
            .collect();
        measured.push(TurnCapacity {
            kind: kind.into(),
            usage,
            tokens: turn_tokens(&lines, &bodies, calls),
        });
    }
    Ok(measured)
}

/// The chatkit function's `turn usage` lines printed after its first
/// `from` lines, waiting (they arrive through a pipe) until there are
/// `turns` of them.
async fn usage_lines(chatkit: &LambdaFunction, from: usize, turns: usize) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = chatkit
            .logs()
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|line| line.contains("turn usage"))
            .cloned()
            .collect();
        if lines.len() >= turns {
            return Ok(lines);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{} `turn usage` lines for {turns} turns", lines.len()).into())
}

/// The tokens per turn of `turns` turns whose function printed the `turn
/// usage` lines `lines` and whose model requests had the bodies `bodies`.
fn turn_tokens(lines: &[String], bodies: &[Value], turns: usize) -> TurnTokens {
    let n = turns.max(1) as f64;
    let sum = |key: &str| {
        lines
            .iter()
            .filter_map(|line| log_field(line, key))
            .sum::<u64>() as f64
            / n
    };
    TurnTokens {
        model_requests: bodies.len() as f64 / n,
        input: sum("input_tokens"),
        cached_input: sum("cached_input_tokens"),
        output: sum("output_tokens"),
        input_of_requests: bodies.iter().map(prompt_tokens).sum::<u64>() as f64 / n,
    }
}

/// The number a log line gives `key` (`key=12` in text logs, `"key":12` in
/// JSON logs); a longer key ending in `key` (`cached_input_tokens` for
/// `input_tokens`) does not count.
fn log_field(line: &str, key: &str) -> Option<u64> {
    let mut from = 0;
    while let Some(at) = line.get(from..)?.find(key).map(|i| i + from) {
        from = at + key.len();
        let glued = line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if glued {
            continue;
        }
        let rest = &line[from..];
        let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix("\":")) else {
            continue;
        };
        let digits: String = value
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
    }
    None
}

/// The section: "DynamoDB capacity and calls per request", then the model
/// side of the turns.
pub fn table(figures: &CapacityFigures) -> String {
    let calls = figures
        .routes
        .first()
        .map(|r| r.usage.calls)
        .or_else(|| figures.turns.first().map(|t| t.usage.calls))
        .unwrap_or(0);
    let mut out = format!(
        "\n## DynamoDB capacity and calls per request (mean of {calls} calls each, one warm process)\n\n"
    );
    out.push_str(
        "| request | DynamoDB requests | read units (RRU) | write units (WRU) | Secrets Manager requests | S3 requests |\n\
         |---|---|---|---|---|---|\n",
    );
    let rows = figures
        .routes
        .iter()
        .map(|r| (r.route.clone(), &r.usage))
        .chain(
            figures
                .turns
                .iter()
                .map(|t| (format!("ChatKit turn: {}", t.kind), &t.usage)),
        );
    let mut unreported = Vec::new();
    let mut unpriced = false;
    for (label, usage) in rows {
        unpriced |= usage
            .dynamodb
            .values()
            .any(|op| op.unreported < op.requests && op.read_units + op.write_units == 0.0);
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            label.replace('|', "\\|"),
            dynamodb_cell(usage),
            number(usage.read_units),
            number(usage.write_units),
            by_name(usage.secrets_requests(), &usage.secrets_manager),
            usage.s3.map_or("not counted".into(), number),
        )
        .unwrap_or_default();
        if usage.unreported > 0.0 {
            unreported.push(format!("{label}: {}", number(usage.unreported)));
        }
    }
    if !figures.turns.is_empty() {
        out.push_str(
            "\n| ChatKit turn | model requests | input tokens | of which cached | output tokens |\n\
             |---|---|---|---|---|\n",
        );
        for turn in &figures.turns {
            let t = &turn.tokens;
            writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                turn.kind,
                number(t.model_requests),
                number(t.input),
                number(t.cached_input),
                number(t.output)
            )
            .unwrap_or_default();
        }
    }
    out.push_str(
        "\n- *Read / write units*: what DynamoDB Local reports in `ConsumedCapacity` when asked \
         (the counting proxy adds `\"ReturnConsumedCapacity\":\"TOTAL\"` to every request whose operation takes it), \
         summed over the call's requests. On-demand rounding: a read is 1 unit per 4 KB strongly consistent, \
         0.5 eventually consistent, 2 transactional; a write 1 unit per 1 KB, 2 transactional; \
         a write to an item an index projects also writes the index.\n\
         - *S3 requests*: not counted: the functions reach moto through the S3 front, which counts only presigned \
         requests; none of these requests has an S3 code path (only attachments do).\n\
         - *Model tokens*: per turn, all its model requests together, as the OpenAI stub reported them in \
         `response.completed` (~4 bytes a token; cached: the prefix shared with the thread's previous request, \
         from 1,024 tokens in steps of 128, as OpenAI documents its prompt cache).\n",
    );
    if unpriced {
        out.push_str(
            "- *0 units*: DynamoDB Local reported none; it does so for a Query that matches nothing. \
             DynamoDB itself charges a GetItem of a missing item (0.5 or 1 RRU) and is reported to charge \
             such a Query the same minimum (not confirmed here).\n",
        );
    }
    if !unreported.is_empty() {
        writeln!(
            out,
            "- DynamoDB requests per call whose answer reported no capacity (an error, e.g. a failed condition, \
             which DynamoDB charges but does not report; not in the units): {}.",
            unreported.join("; ")
        )
        .unwrap_or_default();
    }
    for turn in &figures.turns {
        let t = &turn.tokens;
        if t.input != t.input_of_requests {
            writeln!(
                out,
                "- {}: the function logged {} input tokens a turn, the stub counts {} for the requests it received.",
                turn.kind,
                number(t.input),
                number(t.input_of_requests)
            )
            .unwrap_or_default();
        }
    }
    out
}

/// `3 (1 GetItem: 1 RRU; 2 UpdateItem: 2 WRU)`: the requests, then each
/// operation's requests and units (`0 units` when it reported none that
/// were not zero, `no capacity reported` when its answers carried none), or `0`.
fn dynamodb_cell(usage: &Usage) -> String {
    if usage.dynamodb.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = usage
        .dynamodb
        .iter()
        .map(|(name, op)| {
            let mut units = Vec::new();
            if op.read_units != 0.0 {
                units.push(format!("{} RRU", number(op.read_units)));
            }
            if op.write_units != 0.0 {
                units.push(format!("{} WRU", number(op.write_units)));
            }
            let units = if op.unreported >= op.requests {
                "no capacity reported".to_owned()
            } else if units.is_empty() {
                "0 units".to_owned()
            } else {
                units.join(" + ")
            };
            format!("{} {name}: {units}", number(op.requests))
        })
        .collect();
    format!(
        "{} ({})",
        number(usage.dynamodb_requests()),
        parts.join("; ")
    )
}

/// `3 (1 GetSecretValue, 2 DescribeSecret)`, or `0`.
fn by_name(total: f64, ops: &BTreeMap<String, f64>) -> String {
    if ops.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = ops
        .iter()
        .map(|(op, n)| format!("{} {op}", number(*n)))
        .collect();
    format!("{} ({})", number(total), parts.join(", "))
}

/// At most two decimals, without trailing zeros: `1`, `0.5`, `2.33`.
fn number(x: f64) -> String {
    let text = format!("{x:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn exchange(op: &str, read: f64, write: f64, reported: bool) -> Exchange {
        Exchange {
            arrived: Instant::now(),
            answered: Some(Instant::now()),
            operation: format!("DynamoDB_20120810.{op}"),
            read_units: read,
            write_units: write,
            capacity_reported: reported,
        }
    }

    #[test]
    fn usage_is_the_mean_per_call() {
        let exchanges = [
            exchange("GetItem", 1.0, 0.0, true),
            exchange("GetItem", 0.5, 0.0, true),
            exchange("TransactWriteItems", 0.0, 4.0, true),
            exchange("UpdateItem", 0.0, 0.0, false),
        ];
        let secrets = BTreeMap::from([
            ("secretsmanager.GetSecretValue".to_owned(), 1),
            ("secretsmanager.DescribeSecret".to_owned(), 0),
        ]);
        let u = usage(&exchanges, &secrets, 2);
        assert_eq!(u.calls, 2);
        let op = |requests, read_units, write_units, unreported| Operation {
            requests,
            read_units,
            write_units,
            unreported,
        };
        assert_eq!(
            u.dynamodb,
            BTreeMap::from([
                ("GetItem".to_owned(), op(1.0, 0.75, 0.0, 0.0)),
                ("TransactWriteItems".to_owned(), op(0.5, 0.0, 2.0, 0.0)),
                ("UpdateItem".to_owned(), op(0.5, 0.0, 0.0, 0.5)),
            ])
        );
        assert_eq!(u.dynamodb_requests(), 2.0);
        assert_eq!((u.read_units, u.write_units), (0.75, 2.0));
        assert_eq!(u.unreported, 0.5);
        assert_eq!(
            u.secrets_manager,
            BTreeMap::from([("GetSecretValue".to_owned(), 0.5)])
        );
        assert_eq!(u.secrets_requests(), 0.5);
        assert_eq!(u.s3, None);
        let none = usage(&[], &BTreeMap::new(), 0);
        assert_eq!(none.dynamodb_requests(), 0.0);
        assert_eq!(none.read_units, 0.0);
    }

    #[test]
    fn a_difference_keeps_what_grew() {
        let before = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 5)]);
        let after = BTreeMap::from([
            ("a".to_owned(), 2),
            ("b".to_owned(), 7),
            ("c".to_owned(), 1),
        ]);
        assert_eq!(
            difference(&before, &after),
            BTreeMap::from([("b".to_owned(), 2), ("c".to_owned(), 1)])
        );
    }

    #[test]
    fn a_log_field_is_read_from_text_and_json_lines() {
        let text = " INFO turn usage user=\"u1\" input_tokens=1234 cached_input_tokens=1152 output_tokens=40 rounds=2";
        assert_eq!(log_field(text, "input_tokens"), Some(1234));
        assert_eq!(log_field(text, "cached_input_tokens"), Some(1152));
        assert_eq!(log_field(text, "output_tokens"), Some(40));
        let json =
            r#"{"level":"INFO","cached_input_tokens":0,"input_tokens": 77,"message":"turn usage"}"#;
        assert_eq!(log_field(json, "input_tokens"), Some(77));
        assert_eq!(log_field(json, "cached_input_tokens"), Some(0));
        assert_eq!(log_field(json, "output_tokens"), None);
        assert_eq!(
            log_field("input_tokens is x input_tokens=5", "input_tokens"),
            Some(5)
        );
        assert_eq!(log_field("input_tokens=abc", "input_tokens"), None);
    }

    #[test]
    fn turn_tokens_are_summed_over_the_turns_then_averaged() {
        let lines = [
            "turn usage input_tokens=100 cached_input_tokens=0 output_tokens=10".to_owned(),
            "turn usage input_tokens=300 cached_input_tokens=128 output_tokens=30".to_owned(),
        ];
        let body = json!({"instructions": "abcd", "input": [], "tools": []});
        // "abcd" quoted, [] and []: 10 bytes, 3 tokens each.
        let t = turn_tokens(&lines, &[body.clone(), body.clone(), body], 2);
        assert_eq!(t.model_requests, 1.5);
        assert_eq!((t.input, t.cached_input, t.output), (200.0, 64.0, 20.0));
        assert_eq!(t.input_of_requests, 4.5);
        assert_eq!(
            t.tokens(),
            cost::Tokens {
                input: 200.0,
                cached_input: 64.0,
                output: 20.0
            }
        );
    }

    #[test]
    fn a_usage_becomes_a_workload() {
        let u = Usage {
            read_units: 1.5,
            write_units: 2.0,
            secrets_manager: BTreeMap::from([("GetSecretValue".to_owned(), 0.25)]),
            ..Usage::default()
        };
        let tokens = cost::Tokens {
            input: 10.0,
            cached_input: 0.0,
            output: 1.0,
        };
        let rest = cost::Workload {
            memory_mb: 512,
            invocations: 1.0,
            billed_ms: 7.0,
            front: cost::Front::HttpApi,
            front_requests: 1.0,
            read_units: 1.5,
            write_units: 2.0,
            secrets_calls: 0.25,
            s3: cost::S3Requests::default(),
            tokens,
        };
        assert_eq!(u.workload(512, 7.0, cost::Front::HttpApi, tokens), rest);
        assert_eq!(
            u.workload(512, 7.0, cost::Front::FunctionUrl, tokens),
            cost::Workload {
                front: cost::Front::FunctionUrl,
                ..rest
            }
        );
    }

    #[test]
    fn numbers_and_operations_are_short() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(2.333), "2.33");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(10.0), "10");
        assert_eq!(number(-0.0001), "0");
        let ops = BTreeMap::from([("GetItem".to_owned(), 1.0), ("Query".to_owned(), 2.0)]);
        assert_eq!(by_name(3.0, &ops), "3 (1 GetItem, 2 Query)");
        assert_eq!(by_name(0.0, &BTreeMap::new()), "0");
        let exchanges = [
            exchange("GetItem", 1.0, 0.0, true),
            exchange("Query", 0.0, 0.0, true),
            exchange("TransactWriteItems", 0.5, 4.0, true),
            exchange("UpdateItem", 0.0, 0.0, false),
        ];
        assert_eq!(
            dynamodb_cell(&usage(&exchanges, &BTreeMap::new(), 1)),
            "4 (1 GetItem: 1 RRU; 1 Query: 0 units; 1 TransactWriteItems: 0.5 RRU + 4 WRU; \
             1 UpdateItem: no capacity reported)"
        );
        assert_eq!(dynamodb_cell(&Usage::default()), "0");
    }

    #[test]
    fn the_table_has_a_row_per_route_and_turn() {
        let get = Usage {
            calls: 4,
            ..usage(&[exchange("GetItem", 1.0, 0.0, true)], &BTreeMap::new(), 1)
        };
        let list = Usage {
            calls: 4,
            ..usage(&[exchange("Query", 0.0, 0.0, true)], &BTreeMap::new(), 1)
        };
        let turn = Usage {
            calls: 4,
            unreported: 0.25,
            ..usage(
                &[
                    exchange("Query", 0.5, 0.0, true),
                    exchange("UpdateItem", 0.0, 3.0, true),
                ],
                &BTreeMap::from([("secretsmanager.GetSecretValue".to_owned(), 1)]),
                2,
            )
        };
        let figures = CapacityFigures {
            routes: vec![
                RouteCapacity {
                    function: "tasks".into(),
                    route: "GET /api/v1/tasks/{id}".into(),
                    usage: get,
                },
                RouteCapacity {
                    function: "tasks".into(),
                    route: "POST …/complete|reopen".into(),
                    usage: list,
                },
            ],
            turns: vec![TurnCapacity {
                kind: "text answer".into(),
                usage: turn,
                tokens: TurnTokens {
                    model_requests: 1.0,
                    input: 2048.0,
                    cached_input: 1024.0,
                    output: 30.0,
                    input_of_requests: 2000.0,
                },
            }],
        };
        let out = table(&figures);
        assert!(out.contains("(mean of 4 calls each"), "{out}");
        assert!(
            out.contains(
                "| GET /api/v1/tasks/{id} | 1 (1 GetItem: 1 RRU) | 1 | 0 | 0 | not counted |\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| ChatKit turn: text answer | 1 (0.5 Query: 0.25 RRU; 0.5 UpdateItem: 1.5 WRU) | 0.25 | 1.5 \
                 | 0.5 (0.5 GetSecretValue) | not counted |\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| POST …/complete\\|reopen | 1 (1 Query: 0 units) | 0 | 0 | 0 | not counted |\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("- *0 units*: DynamoDB Local reported none"),
            "{out}"
        );
        assert!(
            out.contains("| text answer | 1 | 2048 | 1024 | 30 |\n"),
            "{out}"
        );
        assert!(
            out.contains("not in the units): ChatKit turn: text answer: 0.25."),
            "{out}"
        );
        assert!(
            out.contains(
                "text answer: the function logged 2048 input tokens a turn, the stub counts 2000"
            ),
            "{out}"
        );
        // Every unit reported and nonzero, the tokens agreeing: no notes; the
        // call count from the turns when no route was measured.
        let clean = CapacityFigures {
            routes: Vec::new(),
            turns: vec![TurnCapacity {
                kind: "text answer".into(),
                usage: Usage {
                    calls: 3,
                    ..usage(
                        &[exchange("TransactWriteItems", 1.0, 1.0, true)],
                        &BTreeMap::new(),
                        1,
                    )
                },
                tokens: TurnTokens {
                    input: 10.0,
                    input_of_requests: 10.0,
                    ..TurnTokens::default()
                },
            }],
        };
        let out = table(&clean);
        assert!(out.contains("(mean of 3 calls each"), "{out}");
        assert!(!out.contains("*0 units*"), "{out}");
        assert!(!out.contains("reported no capacity (an error"), "{out}");
        assert!(!out.contains("the function logged"), "{out}");
        let empty = table(&CapacityFigures::default());
        assert!(empty.contains("(mean of 0 calls each"), "{empty}");
        assert!(!empty.contains("*0 units*"), "{empty}");
        assert!(!empty.contains("| ChatKit turn |"), "{empty}");
    }

    /// The whole measurement against DynamoDB Local, moto and a debug stack:
    /// `cargo test -p taskpilot-dev --bin bench -- --ignored capacity --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "starts DynamoDB Local, moto and the whole stack"]
    async fn capacity_of_the_routes_and_turns_is_plausible() {
        use emulators::build::Profile;
        use emulators::dynamodb_local::DynamoDbLocal;
        use emulators::moto::Moto;

        let dynamodb = tokio::task::spawn_blocking(DynamoDbLocal::start)
            .await
            .unwrap()
            .unwrap();
        let moto = tokio::task::spawn_blocking(Moto::start)
            .await
            .unwrap()
            .unwrap();
        let stack = LocalStack::start(crate::stack_options(Profile::Dev, &dynamodb, &moto))
            .await
            .unwrap();
        let figures = measure(&stack, 6).await.unwrap();
        println!("{}", table(&figures));
        let proxy = stack.dynamodb_proxy.as_ref().unwrap();
        assert!(!proxy.capacity_mode(), "restored");
        let route = |name: &str| {
            &figures
                .routes
                .iter()
                .find(|r| r.route == name)
                .unwrap()
                .usage
        };
        // A small item: a strongly consistent GetItem is 1 RRU (eventually
        // consistent 0.5), a PutItem 1 WRU.
        let get = route("GET /api/v1/tasks/{id}").dynamodb["GetItem"];
        assert!([0.5, 1.0].contains(&get.read_units), "{get:?}");
        let put = route("POST /api/v1/tasks").dynamodb["PutItem"];
        assert_eq!((put.requests, put.write_units), (1.0, 1.0), "{put:?}");
        let usages = figures
            .routes
            .iter()
            .map(|r| &r.usage)
            .chain(figures.turns.iter().map(|t| &t.usage));
        for usage in usages {
            // Every answer reported its capacity (no errors on these paths).
            assert_eq!(usage.unreported, 0.0, "{usage:?}");
            // A transaction writes 2 WRU per (small) item: an even number,
            // at least 2 a request (every call of a row is the same call).
            if let Some(tx) = usage.dynamodb.get("TransactWriteItems") {
                assert!(
                    tx.write_units % 2.0 == 0.0 && tx.write_units >= 2.0 * tx.requests,
                    "{tx:?}"
                );
            }
        }
        for turn in &figures.turns {
            let t = &turn.tokens;
            assert_eq!(t.input, t.input_of_requests, "{turn:?}");
            assert!(t.cached_input <= t.input && t.output > 0.0, "{turn:?}");
        }
        assert_eq!(figures.turns[0].tokens.model_requests, 1.0);
        assert_eq!(
            figures.turns[1].tokens.model_requests, 2.0,
            "a tool turn asks the model twice"
        );
        drop(stack);
        drop(moto);
        drop(dynamodb);
    }
}

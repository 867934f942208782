//! Spec-driven fuzzing: schemathesis sends generated and mutated requests for
//! every operation of `shared/http/openapi.yaml` to the whole local stack, as
//! two users who must never see each other's objects. Zero 5xx, every answer
//! valid against the spec, every error in the `{"error":{...}}` envelope.
//!
//! `FUZZ_EXAMPLES` (test cases per operation and phase, default 150) and
//! `FUZZ_SEED` set the budget; docs/development.md shows a longer run.
use std::collections::BTreeMap;

use crate::common::Api;
use reqwest::Method;
use taskpilot_domain::{SearchText, Task};
use taskpilot_testkit::contract::Contract;
use taskpilot_testkit::schemathesis::{self, Exchange, FuzzOptions};
use taskpilot_testkit::stack::StackOptions;

/// At least this many requests per run (the issue's floor).
const MIN_REQUESTS: usize = 2_000;
/// At least this many listings with a search text `q`.
const MIN_SEARCHES: usize = 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_spec_driven_fuzzer_finds_nothing() {
    let api = Api::start_with(StackOptions::default()).await;
    let users = ["fuzz-alice", "fuzz-bob"];
    // Each user owns tasks before the run, so reads of real objects (and
    // cross-user replays of them) happen from the first phase on.
    for user in users {
        // "milk" is the spec's example of `q`: the examples phase finds it.
        for title in ["seeded one", "seeded two", "Buy MILK"] {
            api.create(
                user,
                serde_json::json!({ "title": title, "tags": ["seed"] }),
            )
            .await;
        }
    }
    let work_dir = std::env::temp_dir().join(format!(
        "taskpilot-fuzz-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    let opts = FuzzOptions {
        base_url: api.stack.url.clone(),
        users: users
            .iter()
            .map(|u| ((*u).to_owned(), api.token(u)))
            .collect(),
        max_examples: env_number("FUZZ_EXAMPLES", 150) as u32,
        seed: env_number("FUZZ_SEED", 20261122),
        work_dir: work_dir.clone(),
    };
    let before = api.stack.responses.total();
    let report = schemathesis::run(&opts).await.expect("schemathesis runs");
    let sent = api.stack.responses.total() - before;
    println!("{}", report.output);
    println!(
        "schemathesis: {} exchanges recorded, {sent} answered by the gateway, by status {:?}",
        report.exchanges.len(),
        api.stack.responses.by_status()
    );

    // Our own reading of every exchange, independent of schemathesis' checks.
    let contract = Contract::load().unwrap();
    let mut violations = Vec::new();
    let mut by_operation: BTreeMap<String, usize> = BTreeMap::new();
    for x in &report.exchanges {
        *by_operation
            .entry(format!(
                "{} {}",
                x.method,
                x.path.split('/').take(4).collect::<Vec<_>>().join("/")
            ))
            .or_default() += 1;
        if x.status >= 500 {
            violations.push(format!("{} {} answered {}", x.method, x.path, x.status));
        }
        let stream = x
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
        let checked = if stream {
            contract.check_event_stream(&x.method, &x.path, x.status, &x.body)
        } else {
            contract.check_answer(&x.method, &x.path, x.status, &x.body)
        };
        if let Err(e) = checked {
            violations.push(e);
        }
        violations.extend(search_oracle(x));
    }
    let searches: Vec<&Exchange> = report
        .exchanges
        .iter()
        .filter(|x| x.query.iter().any(|(k, _)| k == "q"))
        .collect();
    let found = searches
        .iter()
        .filter(|x| x.status == 200 && !x.body.starts_with(br#"{"tasks":[]"#))
        .count();
    println!(
        "searches (`q`): {}, of which {found} found tasks",
        searches.len()
    );
    println!("exchanges by operation: {by_operation:#?}");
    assert!(
        report.passed,
        "schemathesis reported failures (output above; reports in {})",
        work_dir.display()
    );
    assert!(
        violations.is_empty(),
        "{} answers break the contract:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert_eq!(
        api.stack.responses.server_errors(),
        0,
        "the gateway answered 5xx: {:?}",
        api.stack.responses.by_status()
    );
    assert!(
        searches.len() >= MIN_SEARCHES,
        "only {} listings sent `q`",
        searches.len()
    );
    assert!(
        report.exchanges.len() >= MIN_REQUESTS && sent >= MIN_REQUESTS,
        "only {} requests recorded ({sent} answered); raise FUZZ_EXAMPLES",
        report.exchanges.len()
    );

    // Nothing half-written: each user's whole task list still reads back,
    // page by page, and holds exactly the task rows the table has for them.
    let rows = api.rows("TASK#").await;
    for user in users {
        let stored = rows
            .iter()
            .filter(|r| r["pk"].as_s().is_ok_and(|pk| *pk == format!("USER#{user}")))
            .count();
        let mut cursor: Option<String> = None;
        let mut seen = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/tasks?limit=100&cursor={c}"),
                None => "/api/v1/tasks?limit=100".to_owned(),
            };
            let page = api.send(Method::GET, &path, Some(user), None, &[]).await;
            assert_eq!(page.status, 200, "{user}: {:?}", page.body);
            seen += page.body["tasks"].as_array().unwrap().len();
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(
            seen, stored,
            "{user}: listed {seen} tasks, the table has {stored}"
        );
    }
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// A listing's `q` against the domain's own rule: a text the rule refuses is
/// never answered 200, and every task a 200 returns holds the text in its
/// title or a tag, ignoring case.
fn search_oracle(x: &Exchange) -> Option<String> {
    if x.method != "GET" || x.path != "/api/v1/tasks" {
        return None;
    }
    let (_, q) = x.query.iter().find(|(k, _)| k == "q")?;
    let what = format!("GET /api/v1/tasks?q={q:?} answered {}", x.status);
    match SearchText::parse(q) {
        Err(e) if x.status == 200 => Some(format!("{what} to an invalid text ({e})")),
        Ok(search) if x.status == 200 => {
            let page: serde_json::Value = serde_json::from_slice(&x.body).ok()?;
            let tasks: Vec<Task> = serde_json::from_value(page["tasks"].clone()).ok()?;
            let stray = tasks.iter().find(|t| !search.matches(t))?;
            Some(format!(
                "{what} with {} ({:?}), which does not hold it",
                stray.id, stray.title
            ))
        }
        _ => None,
    }
}

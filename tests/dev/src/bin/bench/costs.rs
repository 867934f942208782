//! The cost table: dollars per million REST requests and per 1,000 chat
//! turns, from what the bench measured (billed duration under each
//! function's CPU share, DynamoDB units and calls, model tokens) and the
//! prices in [`crate::cost`], at the chosen `MemorySize` against today's.

use std::fmt::Write as _;
use std::time::Duration;

use taskpilot_testkit::Result;

use crate::capacity::{CapacityFigures, Usage};
use crate::cost::{self, Front, ModelPrices, Tokens};
use crate::cpushare::{CpuShareFigures, FunctionFigures};

/// The wait on OpenAI Lambda bills per model request of a turn (the
/// function holds its memory while the answer streams): an assumption, not
/// a measurement (the stub answers at once): gpt-4.1's first token after
/// ~0.5 s, then ~100 output tokens at ~50 a second.
pub const MODEL_WAIT_PER_REQUEST: Duration = Duration::from_millis(2_500);

/// Billed milliseconds per invocation of `route` on `function` at its
/// chosen size and at today's (a route the CPU-share run did not time: the
/// mean of the function's timed routes).
fn billed(function: &FunctionFigures, route: &str) -> (f64, f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if let Some(r) = function.routes.iter().find(|r| r.route == route) {
        return (
            ms(r.at_chosen.mean_rounded_up),
            ms(r.at_today.mean_rounded_up),
        );
    }
    let n = function.routes.len().max(1) as f64;
    let sum = |f: fn(&crate::cpushare::RouteBilled) -> Duration| {
        function.routes.iter().map(|r| ms(f(r))).sum::<f64>() / n
    };
    (
        sum(|r| r.at_chosen.mean_rounded_up),
        sum(|r| r.at_today.mean_rounded_up),
    )
}

/// Scales one request's cost: [`cost::per_million_requests`] or
/// [`cost::per_thousand_turns`].
type Scale = fn(&cost::Workload, &ModelPrices) -> cost::Cost;

/// The cost of requests of `usage` on a `memory_mb` function billed
/// `billed_ms` each, as `scale` counts them.
fn cost_of(
    usage: &Usage,
    (memory_mb, billed_ms): (u32, f64),
    front: Front,
    tokens: Tokens,
    model: &ModelPrices,
    scale: Scale,
) -> cost::Cost {
    scale(&usage.workload(memory_mb, billed_ms, front, tokens), model)
}

fn dollars(amount: f64) -> String {
    format!("${amount:.4}")
}

/// The section, or one line saying why there is none.
pub fn section(capacity: &CapacityFigures, share: Option<&CpuShareFigures>) -> Result<String> {
    let mut out = String::from("\n## Cost per request\n\n");
    let Some(share) = share else {
        out.push_str("Not computed: it needs the CPU-share figures (billed duration per memory size), which this machine could not measure.\n");
        return Ok(out);
    };
    let function = |name: &str| {
        share
            .functions
            .iter()
            .find(|f| f.function == name)
            .ok_or(format!("no CPU-share figures for {name}"))
    };
    writeln!(
        out,
        "Prices: us-east-1, first tier, as published on 2026-12-07 (sources in `tests/dev/src/bin/bench/cost.rs`): Lambda arm64 ${}/GB-s and ${:.2} per million requests; HTTP API ${:.2} per million (the ChatKit endpoint is a Function URL: no charge); DynamoDB on demand ${} per million read and ${} per million write request units; Secrets Manager ${} per 10,000 calls; {} ${:.2} / ${:.2} cached / ${:.2} output and {} ${:.2} / ${:.2} / ${:.2} per million tokens.\n",
        cost::LAMBDA_ARM_PER_GB_SECOND,
        cost::LAMBDA_PER_MILLION_REQUESTS,
        cost::HTTP_API_PER_MILLION_REQUESTS,
        cost::DYNAMODB_PER_MILLION_READ_UNITS,
        cost::DYNAMODB_PER_MILLION_WRITE_UNITS,
        cost::SECRETS_MANAGER_PER_10K_CALLS,
        cost::GPT_4_1.model,
        cost::GPT_4_1.input,
        cost::GPT_4_1.cached_input,
        cost::GPT_4_1.output,
        cost::GPT_4_1_MINI.model,
        cost::GPT_4_1_MINI.input,
        cost::GPT_4_1_MINI.cached_input,
        cost::GPT_4_1_MINI.output,
    )?;

    // REST: per million requests.
    writeln!(
        out,
        "### REST: dollars per million requests, at the chosen MemorySize\n"
    )?;
    let mut rows: Vec<(String, cost::Cost)> = Vec::new();
    let mut savings = String::from(
        "| route | MemorySize today → chosen | billed ms per request | Lambda duration per million | total per million |\n|---|---|---|---|---|\n",
    );
    // ChatKit's JSON requests (threads.list) reach their function through a
    // Function URL and were not timed under a quota: left out here.
    for route in capacity.routes.iter().filter(|r| r.function != "chatkit") {
        let f = function(&route.function)?;
        let (chosen_ms, today_ms) = billed(f, &route.route);
        let at = |mb: u32, ms: f64| {
            cost_of(
                &route.usage,
                (mb, ms),
                Front::HttpApi,
                Tokens::default(),
                &cost::GPT_4_1,
                cost::per_million_requests,
            )
        };
        let (chosen, today) = (at(f.chosen_mb, chosen_ms), at(f.today_mb, today_ms));
        let label = route.route.replace('|', "\\|");
        let cells = change_cells(
            (f.today_mb, f.chosen_mb),
            (today_ms, chosen_ms),
            2,
            (today, chosen),
        );
        writeln!(savings, "| {label} | {cells} |")?;
        rows.push((label, chosen));
    }
    let table: Vec<(&str, cost::Cost)> = rows.iter().map(|(l, c)| (l.as_str(), *c)).collect();
    out.push_str(&cost::breakdown(&table));
    out.push_str(
        "\n- Routes the CPU-share run did not time are billed at the mean of their function's timed routes.\n\
         - `POST /api/chatkit/sessions` reads the user's live sessions in its Query: the bench's user, who minted \
         every session of the warm table, is at the cap, so this is the most a session costs; a user with a few \
         live sessions reads 1 unit.\n",
    );
    writeln!(out, "\nWhat the chosen memory changes against today's:\n")?;
    out.push_str(&savings);

    // Chat: per 1,000 turns.
    let chatkit = function("chatkit")?;
    // Its one timed turn (no route of that name: the mean of its routes).
    let (cpu_chosen_ms, cpu_today_ms) = billed(chatkit, "");
    writeln!(
        out,
        "\n### Chat: dollars per 1,000 turns\n\nBilled duration of a turn: the chatkit function's own time under its CPU share (a turn timed in the CPU-share section: {cpu_today_ms:.1} ms at {} MB, {cpu_chosen_ms:.1} ms at {} MB) plus {:.1} s of waiting on OpenAI per model request (assumed, see `MODEL_WAIT_PER_REQUEST`). Tokens: what the OpenAI stub counted for the bench's turns (~4 bytes a token, cached tokens as OpenAI's prompt cache would serve them), on a thread with one earlier exchange.\n",
        chatkit.today_mb,
        chatkit.chosen_mb,
        MODEL_WAIT_PER_REQUEST.as_secs_f64(),
    )?;
    let mut turn_rows: Vec<(String, cost::Cost)> = Vec::new();
    let mut turn_savings = String::from(
        "| turn | model | MemorySize today → chosen | billed ms per turn | Lambda duration per 1,000 | total per 1,000 |\n|---|---|---|---|---|---|\n",
    );
    for turn in &capacity.turns {
        let wait = MODEL_WAIT_PER_REQUEST.as_secs_f64() * 1e3 * turn.tokens.model_requests;
        for model in [&cost::GPT_4_1, &cost::GPT_4_1_MINI] {
            let at = |mb: u32, ms: f64| {
                cost_of(
                    &turn.usage,
                    (mb, ms),
                    Front::FunctionUrl,
                    turn.tokens.tokens(),
                    model,
                    cost::per_thousand_turns,
                )
            };
            let (chosen_ms, today_ms) = (cpu_chosen_ms + wait, cpu_today_ms + wait);
            let chosen = at(chatkit.chosen_mb, chosen_ms);
            let today = at(chatkit.today_mb, today_ms);
            let mb = (chatkit.today_mb, chatkit.chosen_mb);
            let cells = change_cells(mb, (today_ms, chosen_ms), 0, (today, chosen));
            writeln!(
                turn_savings,
                "| {} | {} | {cells} |",
                turn.kind, model.model
            )?;
            turn_rows.push((format!("{} ({})", turn.kind, model.model), chosen));
        }
    }
    let table: Vec<(&str, cost::Cost)> = turn_rows.iter().map(|(l, c)| (l.as_str(), *c)).collect();
    out.push_str(&cost::breakdown(&table));
    writeln!(out, "\nWhat the chosen memory changes against today's:\n")?;
    out.push_str(&turn_savings);
    Ok(out)
}

/// The cells a row of "what the chosen memory changes" ends with, each
/// today → chosen: MemorySize, billed ms (to `decimals`), Lambda duration,
/// total.
fn change_cells(
    mb: (u32, u32),
    ms: (f64, f64),
    decimals: usize,
    (today, chosen): (cost::Cost, cost::Cost),
) -> String {
    format!(
        "{} → {} MB | {:.decimals$} → {:.decimals$} | {} → {} | {} → {}",
        mb.0,
        mb.1,
        ms.0,
        ms.1,
        dollars(today.lambda_duration),
        dollars(chosen.lambda_duration),
        dollars(today.total()),
        dollars(chosen.total()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_row_shows_each_figure_today_then_chosen() {
        let zero = dollars(cost::Cost::default().total());
        assert_eq!(
            change_cells((1024, 512), (40.04, 44.46), 1, Default::default()),
            format!("1024 → 512 MB | 40.0 → 44.5 | {zero} → {zero} | {zero} → {zero}")
        );
        assert!(change_cells((1, 2), (3.0, 4.0), 0, Default::default()).contains("| 3 → 4 |"));
    }
}

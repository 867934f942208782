//! The prompt prefix from one model request of a thread to the next: the
//! share of each request's prompt (tools, instructions, then the input items,
//! as OpenAI's prompt caching reads them) that equals the previous request's,
//! turn after turn of one long thread, within the history window and past it.

use std::fmt::Write as _;

use serde_json::json;
use taskpilot_testkit::Result;
use taskpilot_testkit::openai_stub::{Turn, canonical_prompt};
use taskpilot_testkit::stack::LocalStack;

use super::{chat_input, chatkit_request};

/// How the thread's first message starts (`turn 1:`).
const FIRST: &str = "turn 1:";

/// Every how many turns one is a tool turn (a `create_task` call, then text).
const TOOL_EVERY: usize = 4;

/// The bytes `next` shares with `previous` from their start.
pub(crate) fn shared_prefix(previous: &str, next: &str) -> usize {
    previous
        .bytes()
        .zip(next.bytes())
        .take_while(|(a, b)| a == b)
        .count()
}

/// The share of `next` (0–1) that is `previous`'s prefix.
pub(crate) fn share(previous: &str, next: &str) -> f64 {
    if next.is_empty() {
        return 0.0;
    }
    shared_prefix(previous, next) as f64 / next.len() as f64
}

/// One model request of the thread: its turn (1-based), its prompt, and
/// whether its input still starts with the thread's first message (within
/// the history window) or older items have left it.
struct Request {
    turn: usize,
    prompt: String,
    whole: bool,
}

/// Median, mean, minimum and count of `shares`, as percentages.
fn summary(shares: &mut [f64]) -> String {
    if shares.is_empty() {
        return "— | — | — | 0".into();
    }
    shares.sort_by(f64::total_cmp);
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    format!(
        "{:.1} % | {:.1} % | {:.1} % | {}",
        shares[shares.len() / 2] * 100.0,
        mean * 100.0,
        shares[0] * 100.0,
        shares.len()
    )
}

/// The section: one thread of `turns` turns (a tool turn every
/// [`TOOL_EVERY`]), through the gateway with a user JWT.
pub async fn section(stack: &LocalStack, quick: bool) -> Result<String> {
    let turns = if quick { 30 } else { 60 };
    let stub = stack.openai.as_ref().ok_or("no stub")?;
    let http = taskpilot_testkit::http_client();
    let url = format!("{}/api/v1/chatkit", stack.url);
    let jwt = stack.token("bench-prefix");
    let mut thread = String::new();
    let mut requests: Vec<Request> = Vec::new();
    for turn in 1..=turns {
        let text = format!("turn {turn}: what should I do next about the garden?");
        if turn % TOOL_EVERY == 0 {
            stub.push_turn(Turn::Calls(vec![(
                "create_task".into(),
                json!({"title": format!("Garden step {turn}")}),
            )]));
        }
        stub.push_turn(Turn::Text(format!(
            "Here is a thought for turn {turn}: water the roses early, then weed the beds \
             along the fence, and note what grew since last week."
        )));
        let seen_before = stub.requests_to("/v1/responses").len();
        let request = if turn == 1 {
            json!({"type": "threads.create", "params": {"input": chat_input(&text)}})
        } else {
            json!({"type": "threads.add_user_message",
                   "params": {"thread_id": thread, "input": chat_input(&text)}})
        };
        let (_, body) = chatkit_request(&http, &url, &jwt, &request).await?;
        if turn == 1 {
            thread = super::created_thread(&body)?;
        }
        for seen in &stub.requests_to("/v1/responses")[seen_before..] {
            requests.push(Request {
                turn,
                prompt: canonical_prompt(&seen.body),
                whole: seen.body["input"][0].to_string().contains(FIRST),
            });
        }
    }
    let (mut first_within, mut first_past, mut later_rounds) = (Vec::new(), Vec::new(), Vec::new());
    for pair in requests.windows(2) {
        let s = share(&pair[0].prompt, &pair[1].prompt);
        if pair[1].turn == pair[0].turn {
            later_rounds.push(s);
        } else if pair[1].whole {
            first_within.push(s);
        } else {
            first_past.push(s);
        }
    }
    let mut all: Vec<f64> = first_within.iter().chain(&first_past).copied().collect();
    let mut out = String::new();
    writeln!(
        out,
        "\n## Prompt prefix: the share of each model request that equals the previous request's prefix \
         (one thread of {turns} turns, a tool turn every {TOOL_EVERY})\n"
    )?;
    writeln!(
        out,
        "| requests | median | mean | minimum | count |\n|---|---|---|---|---|"
    )?;
    writeln!(
        out,
        "| a turn's first request, turns 2 onward | {} |",
        summary(&mut all)
    )?;
    writeln!(
        out,
        "| … while the whole thread is in the history window | {} |",
        summary(&mut first_within)
    )?;
    writeln!(
        out,
        "| … once older items have left it (the latest 60 read, from an anchor leaving at least 40) | {} |",
        summary(&mut first_past)
    )?;
    writeln!(
        out,
        "| a tool turn's next round (after the tool's output) | {} |",
        summary(&mut later_rounds)
    )?;
    writeln!(
        out,
        "\n- *Prompt*: the request's `tools`, `instructions`, then each `input` item, as JSON text, \
         as the OpenAI stub's prompt cache reads them (`openai_stub::canonical_prompt`); the share is \
         the bytes equal to the previous request's from the start ÷ the request's bytes. OpenAI's \
         automatic prompt caching serves that prefix from 1,024 tokens on, in steps of 128."
    )?;
    writeln!(out, "- Target for turn 2 onward: at least 90 %.")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_prefix_stops_at_the_first_difference() {
        assert_eq!(shared_prefix("abcd", "abxd"), 2);
        assert_eq!(shared_prefix("ab", "abc"), 2);
        assert_eq!(shared_prefix("", "abc"), 0);
    }

    #[test]
    fn the_share_is_of_the_next_request() {
        assert_eq!(share("abcd", "abxd"), 0.5);
        assert_eq!(share("ab", "abcd"), 0.5);
        assert_eq!(share("abc", ""), 0.0);
    }

    #[test]
    fn a_summary_is_the_median_the_minimum_and_the_count() {
        assert_eq!(
            summary(&mut [0.9, 0.5, 1.0]),
            "90.0 % | 80.0 % | 50.0 % | 3"
        );
        assert_eq!(summary(&mut []), "— | — | — | 0");
    }
}

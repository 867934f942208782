//! The OpenAI client's streamed calls against the stub's Responses API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskpilot_http::UpstreamError;
use taskpilot_openai::{Call, OpenAi};
use taskpilot_secrets::{SecretCache, Secrets};
use taskpilot_testkit::openai_stub::{Fault, OpenAiStub, Turn};
use taskpilot_testkit::stack::STUB_OPENAI_KEY;

async fn client() -> (OpenAiStub, OpenAi) {
    let stub = OpenAiStub::start(STUB_OPENAI_KEY, &[]).await.unwrap();
    let secrets = Arc::new(SecretCache::fixed(Secrets::parse(STUB_OPENAI_KEY).unwrap()));
    let client = OpenAi::new(
        taskpilot_testkit::http_client(),
        &stub.base_url,
        Duration::from_secs(5),
        secrets,
    );
    (stub, client)
}

async fn run(client: &OpenAi) -> Result<Vec<Value>, UpstreamError> {
    let body =
        json!({"model": "gpt-4.1", "stream": true, "input": [{"role": "user", "content": "hi"}]});
    let call = Call {
        method: reqwest::Method::POST,
        path: "/responses",
        body: Some(&body),
        header: None,
        not_found: "the Responses API was not found",
    };
    let mut stream = client
        .stream(&call, Instant::now() + Duration::from_secs(5))
        .await?;
    let mut events = Vec::new();
    while let Some(event) = stream.next_event().await {
        events.push(event?);
    }
    Ok(events)
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn streams_text_and_function_calls() {
    let (stub, client) = client().await;
    stub.push_turn(Turn::Text("Your list has two open tasks.".into()));
    let events = run(&client).await.unwrap();
    assert_eq!(events.first().unwrap()["type"], "response.created");
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    assert_eq!(text_of(&events), "Your list has two open tasks.");
    let seq: Vec<u64> = events
        .iter()
        .map(|e| e["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1));

    stub.push_turn(Turn::Calls(vec![(
        "list_tasks".into(),
        json!({"completed": false}),
    )]));
    let events = run(&client).await.unwrap();
    let done: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["item"]["name"], "list_tasks");
    assert_eq!(
        done[0]["item"]["arguments"],
        json!({"completed": false}).to_string()
    );
    let sent = stub.requests_to("/v1/responses");
    assert_eq!(
        sent[0].headers["authorization"],
        format!("Bearer {STUB_OPENAI_KEY}")
    );
    assert_eq!(sent[0].body["stream"], true);
}

#[tokio::test]
async fn failures_before_the_first_event_are_retried_and_later_ones_reported() {
    let (stub, client) = client().await;
    stub.push_fault(Fault::Status {
        status: 429,
        retry_after: Some(1),
    });
    stub.push_fault(Fault::Status {
        status: 503,
        retry_after: None,
    });
    stub.push_turn(Turn::Text("made it".into()));
    assert_eq!(text_of(&run(&client).await.unwrap()), "made it");
    assert_eq!(stub.requests_to("/v1/responses").len(), 3);

    // Mid-stream: the partial text arrives, then an error (no retry).
    stub.push_turn(Turn::Broken("one two three four five six".into()));
    let body = json!({"model": "gpt-4.1", "stream": true, "input": []});
    let call = Call {
        method: reqwest::Method::POST,
        path: "/responses",
        body: Some(&body),
        header: None,
        not_found: "-",
    };
    let mut stream = client
        .stream(&call, Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    let mut text = String::new();
    let failure = loop {
        match stream.next_event().await {
            Some(Ok(e)) if e["type"] == "response.output_text.delta" => {
                text.push_str(e["delta"].as_str().unwrap())
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert_eq!(text, "one two three ");
    assert!(
        matches!(failure, Some(UpstreamError::Unavailable(_))),
        "{failure:?}"
    );

    // Too many 429s: reported as rate limiting.
    for _ in 0..3 {
        stub.push_fault(Fault::Status {
            status: 429,
            retry_after: Some(1),
        });
    }
    let started = Instant::now();
    assert!(matches!(
        run(&client).await,
        Err(UpstreamError::RateLimited { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A client whose OpenAI timeout is `timeout`.
async fn client_with(timeout: Duration) -> (OpenAiStub, OpenAi) {
    let stub = OpenAiStub::start(STUB_OPENAI_KEY, &[]).await.unwrap();
    let secrets = Arc::new(SecretCache::fixed(Secrets::parse(STUB_OPENAI_KEY).unwrap()));
    let client = OpenAi::new(
        taskpilot_testkit::http_client(),
        &stub.base_url,
        timeout,
        secrets,
    );
    (stub, client)
}

#[tokio::test]
async fn a_long_healthy_answer_outlasts_the_timeout_which_bounds_only_the_gaps() {
    // 30 words 100 ms apart: about 3 s in all, with a 1 s timeout.
    let (stub, client) = client_with(Duration::from_secs(1)).await;
    let words: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
    stub.set_chunk_delay(Duration::from_millis(100));
    stub.push_turn(Turn::Text(words.join(" ")));
    let started = Instant::now();
    let events = run(&client).await.unwrap();
    assert_eq!(text_of(&events), words.join(" "));
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the answer took longer than the timeout"
    );

    // A gap longer than the timeout between two events ends the stream.
    stub.set_chunk_delay(Duration::from_millis(2_500));
    stub.push_turn(Turn::Text("slow words".into()));
    let err = run(&client).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout(1000)), "{err:?}");
}

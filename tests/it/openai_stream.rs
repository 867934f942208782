//! The OpenAI client against the stub: streamed calls of the Responses API,
//! and dictation through the Audio API's transcriptions.
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskpilot_http::UpstreamError;
use taskpilot_openai::{Call, DEFAULT_TRANSCRIBE_MODEL, OpenAi, TranscribeError};
use taskpilot_secrets::{SecretCache, Secrets};
use taskpilot_testkit::openai_stub::{DEFAULT_TRANSCRIPT, Fault, OpenAiStub, Turn};
use taskpilot_testkit::stack::STUB_OPENAI_KEY;

async fn client() -> (OpenAiStub, OpenAi) {
    client_with(Duration::from_secs(5)).await
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

/// An OpenAI-style error answer with `status` (and `Retry-After`).
fn status_fault(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status {
        status,
        retry_after,
    }
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
    stub.push_fault(status_fault(429, Some(1)));
    stub.push_fault(status_fault(503, None));
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
        stub.push_fault(status_fault(429, Some(1)));
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

/// The opening bytes of a WebM (Matroska) file, then filler: binary audio.
const WEBM: &[u8] = b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01 opus frames";

/// `audio` of type `mime` transcribed with the default model.
async fn transcribe(client: &OpenAi, audio: &[u8], mime: &str) -> Result<String, TranscribeError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    client
        .transcribe(audio, mime, DEFAULT_TRANSCRIBE_MODEL, deadline)
        .await
        .map(|t| t.text)
}

const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

#[tokio::test]
async fn dictation_is_uploaded_as_multipart_and_its_text_returned() {
    let (stub, client) = client().await;
    stub.push_transcript("  Buy oat milk tomorrow. ");
    let text = transcribe(&client, WEBM, "audio/webm;codecs=opus").await;
    assert_eq!(text.unwrap(), "Buy oat milk tomorrow.");
    let sent = stub.requests_to(TRANSCRIPTIONS);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(
        sent[0].body,
        json!({"model": "gpt-4o-mini-transcribe", "response_format": "json",
               "file_name": "audio.webm", "file_type": "audio/webm", "file_bytes": WEBM.len()})
    );
    assert_eq!(
        sent[0].headers["authorization"],
        format!("Bearer {STUB_OPENAI_KEY}")
    );
    assert!(
        sent[0].headers["content-type"].starts_with("multipart/form-data; boundary=taskpilot-"),
        "{:?}",
        sent[0].headers["content-type"]
    );

    // Unscripted, real audio says the default; Safari's type uploads an .mp4.
    assert_eq!(
        transcribe(&client, WEBM, "audio/mp4").await.unwrap(),
        DEFAULT_TRANSCRIPT
    );
    // Text-only "audio" is heard as its text; the model is the caller's.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = client
        .transcribe(b"call mom", "Audio/Ogg; codecs=opus", "whisper-1", deadline)
        .await;
    assert_eq!(text.unwrap().text, "call mom");
    let sent = stub.requests_to(TRANSCRIPTIONS);
    assert_eq!(
        (&sent[1].body["file_name"], &sent[1].body["file_type"]),
        (&json!("audio.mp4"), &json!("audio/mp4"))
    );
    assert_eq!(
        (&sent[2].body["model"], &sent[2].body["file_name"]),
        (&json!("whisper-1"), &json!("audio.ogg"))
    );
    assert_eq!(sent[2].body["file_bytes"], 8);
}

#[tokio::test]
async fn a_transcription_reports_the_tokens_it_cost() {
    let (stub, client) = client().await;
    stub.push_transcript("buy oat milk");
    let deadline = Instant::now() + Duration::from_secs(5);
    let transcript = client
        .transcribe(WEBM, "audio/webm", DEFAULT_TRANSCRIBE_MODEL, deadline)
        .await
        .unwrap();
    // The stub bills one input token per 100 bytes (and one), one per word out.
    assert_eq!(
        transcript.usage,
        Some(taskpilot_chatkit::model::TokenUsage {
            input: (WEBM.len() / 100 + 1) as u64,
            cached_input: 0,
            output: 3
        })
    );
}

#[tokio::test]
async fn a_wrong_key_is_refused_after_one_refresh() {
    let (stub, client) = client().await;
    stub.set_key("sk-rotated-elsewhere");
    let err = transcribe(&client, WEBM, "audio/webm").await.unwrap_err();
    assert!(
        matches!(err, TranscribeError::Upstream(UpstreamError::Auth)),
        "{err:?}"
    );
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 2);
}

#[tokio::test]
async fn server_errors_and_cut_off_answers_are_retried() {
    let (stub, client) = client().await;
    for status in [500, 503] {
        stub.push_fault(status_fault(status, None));
    }
    stub.push_transcript("made it");
    assert_eq!(
        transcribe(&client, WEBM, "audio/webm").await.unwrap(),
        "made it"
    );
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 3);

    stub.push_fault(Fault::Truncated);
    stub.push_transcript("made it again");
    let text = transcribe(&client, WEBM, "audio/webm").await;
    assert_eq!(text.unwrap(), "made it again");
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 5);

    // Still failing after two retries: unavailable.
    for _ in 0..3 {
        stub.push_fault(status_fault(502, None));
    }
    let err = transcribe(&client, WEBM, "audio/webm").await.unwrap_err();
    assert!(
        matches!(&err, TranscribeError::Upstream(UpstreamError::Unavailable(why)) if why == "HTTP 502"),
        "{err:?}"
    );
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 8);

    // A 200 that is not JSON is not retried.
    stub.push_fault(Fault::Garbage);
    let err = transcribe(&client, WEBM, "audio/webm").await.unwrap_err();
    assert!(
        matches!(
            err,
            TranscribeError::Upstream(UpstreamError::Unavailable(_))
        ),
        "{err:?}"
    );
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 9);
}

#[tokio::test]
async fn rate_limiting_is_reported_with_its_retry_after() {
    let (stub, client) = client().await;
    stub.push_fault(status_fault(429, Some(7)));
    let err = transcribe(&client, WEBM, "audio/webm").await.unwrap_err();
    assert!(
        matches!(
            err,
            TranscribeError::Upstream(UpstreamError::RateLimited { retry_after: 7 })
        ),
        "{err:?}"
    );
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 1);
}

#[tokio::test]
async fn an_empty_transcript_is_no_speech() {
    let (stub, client) = client().await;
    for silence in ["", " \n "] {
        stub.push_transcript(silence);
        let err = transcribe(&client, WEBM, "audio/webm").await.unwrap_err();
        assert!(matches!(err, TranscribeError::NoSpeech), "{err:?}");
    }
    assert_eq!(stub.requests_to(TRANSCRIPTIONS).len(), 2);
}

#[tokio::test]
async fn unsupported_or_empty_audio_is_refused_before_sending() {
    let (stub, client) = client().await;
    let err = transcribe(&client, WEBM, "video/webm").await.unwrap_err();
    assert!(
        matches!(&err, TranscribeError::UnsupportedType(t) if t == "video/webm"),
        "{err:?}"
    );
    let err = transcribe(&client, b"", "audio/webm").await.unwrap_err();
    assert!(matches!(err, TranscribeError::EmptyAudio), "{err:?}");
    assert!(stub.requests().is_empty());
}

#[tokio::test]
async fn the_stub_refuses_transcriptions_as_openai_does() {
    let (stub, client) = client().await;
    let post = |key: &str, body: &'static str| {
        taskpilot_testkit::http_client()
            .post(format!("{}/audio/transcriptions", stub.base_url))
            .bearer_auth(key)
            .header("content-type", "multipart/form-data; boundary=b0")
            .body(body)
            .send()
    };
    let no_file =
        "--b0\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--b0--\r\n";
    let resp = post(STUB_OPENAI_KEY, no_file).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "Missing required parameter: 'file'."
    );
    assert_eq!(post("sk-wrong", no_file).await.unwrap().status(), 401);

    let text_file = "--b0\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
        --b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
        Content-Type: text/plain\r\n\r\nhello\r\n--b0--\r\n";
    let resp = post(STUB_OPENAI_KEY, text_file).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid file format."),
        "{body}"
    );

    // Such a 400 reaches the client's caller as a rejected request.
    stub.push_fault(status_fault(400, None));
    let err = transcribe(&client, WEBM, "audio/webm").await.unwrap_err();
    assert!(
        matches!(err, TranscribeError::Upstream(UpstreamError::Rejected(400))),
        "{err:?}"
    );
}

//! Attachments and dictation through the whole stack: the real `chatkit`
//! binary, DynamoDB Local, S3 in moto (the bucket made from the template)
//! behind a front that checks presigned URLs as S3 does, and the OpenAI stub.
//! Two-phase uploads go to the URL the server handed out, as a browser's
//! would; direct uploads are posted to `<ChatKit URL>/attachments` as a
//! browser's `FormData`.
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Api, chatkit};
use emulators::s3_front::Signer;
use taskpilot_testkit::chatkit_contract;
use taskpilot_testkit::openai_stub::{Fault, OpenAiStub};
use taskpilot_testkit::stack::{FilesSide, LOCAL_ORIGINS};

async fn start(env: &[(&str, &str)]) -> Api {
    Api::start_env(&["chatkit"], env).await
}

fn files(api: &Api) -> &FilesSide {
    api.stack.files.as_ref().expect("the stack has a bucket")
}

fn stub(api: &Api) -> &OpenAiStub {
    api.stack.openai.as_ref().expect("the stub runs")
}

/// `attachments.create` as `user`: status and answer.
async fn create(api: &Api, user: &str, name: &str, size: usize, mime: &str) -> (u16, Value) {
    let (status, _, body, _) = chatkit(
        api,
        user,
        json!({"type": "attachments.create", "params": {"name": name, "size": size, "mime_type": mime}}),
    )
    .await;
    (status, body)
}

/// Sends `bytes` as the browser would: to the descriptor's URL with its
/// headers (`content_type` instead of the declared one, when given).
async fn upload(api: &Api, attachment: &Value, bytes: &[u8], content_type: Option<&str>) -> u16 {
    let descriptor = &attachment["upload_descriptor"];
    let mut req = api
        .http
        .put(descriptor["url"].as_str().unwrap())
        .body(bytes.to_vec());
    for (name, value) in descriptor["headers"].as_object().unwrap() {
        let value = match (name.as_str(), content_type) {
            ("content-type", Some(other)) => other,
            _ => value.as_str().unwrap(),
        };
        req = req.header(name, value);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A created and uploaded attachment: its answer.
async fn uploaded(api: &Api, user: &str, name: &str, bytes: &[u8], mime: &str) -> Value {
    let (status, attachment) = create(api, user, name, bytes.len(), mime).await;
    assert_eq!(status, 200, "{attachment}");
    assert_eq!(upload(api, &attachment, bytes, None).await, 200);
    attachment
}

/// `attachments.delete` as `user`: status and error code (null when none).
async fn delete(api: &Api, user: &str, attachment_id: &str) -> (u16, Value) {
    let (status, _, body, _) = chatkit(
        api,
        user,
        json!({"type": "attachments.delete", "params": {"attachment_id": attachment_id}}),
    )
    .await;
    if status == 200 {
        assert_eq!(body, json!({}));
    }
    (status, body["error"]["code"].clone())
}

/// The last item of the conversation the last model request carried (the
/// per-turn context, a developer message, follows it).
fn last_input(api: &Api) -> Value {
    let request = stub(api).requests_to("/v1/responses").pop().unwrap();
    request.body["input"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|i| i["role"] != "developer")
        .unwrap()
        .clone()
}

fn with_files(text: &str, ids: &[&str]) -> Value {
    json!({"content": [{"type": "input_text", "text": text}], "attachments": ids,
           "inference_options": {}})
}

/// `threads.create` naming attachments: status, events, error body.
async fn message(api: &Api, user: &str, text: &str, ids: &[&str]) -> (u16, Vec<Value>, Value) {
    let (status, events, body, _) = chatkit(
        api,
        user,
        json!({"type": "threads.create", "params": {"input": with_files(text, ids)}}),
    )
    .await;
    (status, events, body)
}

fn id(attachment: &Value) -> &str {
    attachment["id"].as_str().unwrap()
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n fake image bytes";
/// `PNG.len()`, as a header value.
const PNG_LEN: &str = "25";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_photo_goes_up_by_its_presigned_url_and_the_model_sees_it() {
    let api = start(&[]).await;
    let photo = uploaded(&api, "alice", "list.png", PNG, "image/png").await;
    assert!(files(&api).front.verified() >= 1, "the upload was checked");
    let url = photo["upload_descriptor"]["url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    assert_eq!(files(&api).object(id(&photo)).await.unwrap().0, PNG);
    assert_eq!(
        files(&api).tags(id(&photo)).await,
        [("taskpilot-attachment".to_owned(), "pending".to_owned())]
    );

    let (status, events, body) = message(&api, "alice", "add these", &[id(&photo)]).await;
    assert_eq!(status, 200, "{body}");
    let item = events
        .iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "user_message")
        .unwrap()["item"]
        .clone();
    let listed = &item["attachments"][0];
    assert_eq!(
        (listed["id"].as_str(), listed["type"].as_str()),
        (Some(id(&photo)), Some("image"))
    );
    assert!(listed.get("upload_descriptor").is_none());
    // The preview is served as the image it was declared, inline.
    let preview = api
        .http
        .get(listed["preview_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), StatusCode::OK);
    assert_eq!(preview.headers()["content-type"], "image/png");
    assert_eq!(preview.headers()["content-disposition"], "inline");
    assert_eq!(preview.bytes().await.unwrap(), PNG);
    // Kept by the clean-up of unused uploads.
    assert_eq!(
        files(&api).tags(id(&photo)).await,
        [("taskpilot-attachment".to_owned(), "used".to_owned())]
    );
    // The model was shown the image by URL.
    let last = last_input(&api);
    assert_eq!(last["content"][0]["type"], "input_image", "{last}");
    assert!(
        last["content"][0]["image_url"]
            .as_str()
            .unwrap()
            .contains(id(&photo))
    );
    // A reload lists it with a fresh preview.
    let thread = events[0]["thread"]["id"].as_str().unwrap();
    let (status, _, page, _) = chatkit(
        &api,
        "alice",
        json!({"type": "items.list", "params": {"thread_id": thread, "order": "asc"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"][0]["attachments"][0]["id"], id(&photo));
}

/// The browser's CORS preflight for `attachment`'s upload, from `origin`,
/// naming the descriptor's headers and `extra`: status and answer headers.
async fn preflight(
    api: &Api,
    attachment: &Value,
    origin: &str,
    extra: &[&str],
) -> (u16, reqwest::header::HeaderMap) {
    let descriptor = &attachment["upload_descriptor"];
    let mut names: Vec<&str> = descriptor["headers"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.extend(extra);
    let answer = api
        .http
        .request(
            reqwest::Method::OPTIONS,
            descriptor["url"].as_str().unwrap(),
        )
        .header("origin", origin)
        .header(
            "access-control-request-method",
            descriptor["method"].as_str().unwrap(),
        )
        .header("access-control-request-headers", names.join(","))
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_may_send_the_upload_attachments_create_describes() {
    let api = start(&[]).await;
    let origin = LOCAL_ORIGINS[0];
    for (name, bytes, mime) in [
        ("list.png", PNG, "image/png"),
        ("notes.pdf", &b"%PDF-1.4 fake"[..], "application/pdf"),
    ] {
        let (status, attachment) = create(&api, "alice", name, bytes.len(), mime).await;
        assert_eq!(status, 200, "{attachment}");
        // Only what the signature binds, and nothing the browser sets itself.
        let headers = attachment["upload_descriptor"]["headers"]
            .as_object()
            .unwrap();
        let mut names: Vec<&str> = headers.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["content-disposition", "content-type", "x-amz-tagging"],
            "{mime}"
        );
        // The preflight is allowed by the bucket's CORS rule (from the template).
        let (status, allowed) = preflight(&api, &attachment, origin, &[]).await;
        assert_eq!(status, 200, "{mime}: {allowed:?}");
        assert_eq!(allowed["access-control-allow-origin"], origin);
        // The front judges the headers as S3 does: one more is refused.
        let (status, _) = preflight(&api, &attachment, origin, &["x-amzn-trace-id"]).await;
        assert_eq!(status, 403, "{mime}");
        let (status, _) = preflight(&api, &attachment, "https://evil.example", &[]).await;
        assert_eq!(status, 403, "{mime}");
        // Then the upload itself, with the page's origin.
        let descriptor = &attachment["upload_descriptor"];
        let mut put = api
            .http
            .put(descriptor["url"].as_str().unwrap())
            .header("origin", origin)
            .body(bytes.to_vec());
        for (name, value) in headers {
            put = put.header(name, value.as_str().unwrap());
        }
        let answer = put.send().await.unwrap();
        assert_eq!(answer.status(), 200, "{mime}");
        assert_eq!(answer.headers()["access-control-allow-origin"], origin);
        assert_eq!(files(&api).object(id(&attachment)).await.unwrap().0, bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_that_are_not_what_was_declared_are_refused() {
    let api = start(&[]).await;
    let (_, photo) = create(&api, "alice", "a.png", PNG.len(), "image/png").await;
    // Another length, another type, HTML: the signature does not match.
    assert_eq!(upload(&api, &photo, b"short", None).await, 403);
    assert_eq!(upload(&api, &photo, PNG, Some("text/html")).await, 403);
    assert!(files(&api).object(id(&photo)).await.is_none());
    let refusals = files(&api).front.refusals();
    assert_eq!(
        refusals.get("SignatureDoesNotMatch"),
        Some(&2),
        "{refusals:?}"
    );
    // Nothing arrived: a message naming it is refused, nothing is stored.
    let (status, _, body) = message(&api, "alice", "look", &[id(&photo)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("attachment_not_uploaded"))
    );
    let (_, _, threads, _) =
        chatkit(&api, "alice", json!({"type": "threads.list", "params": {}})).await;
    assert_eq!(threads["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_that_lies_about_its_type_is_never_served_as_html() {
    let api = start(&[]).await;
    let html = b"<html><script>alert(1)</script></html>";
    // Declared and uploaded as an image: it stays an image.
    let fake = uploaded(&api, "alice", "x.png", html, "image/png").await;
    let (_, object_type) = files(&api).object(id(&fake)).await.unwrap();
    assert_eq!(object_type.as_deref(), Some("image/png"));
    let preview = api
        .http
        .get(fake["preview_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(preview.headers()["content-type"], "image/png");
    // HTML is not on the allow-list at all.
    let (status, body) = create(&api, "alice", "x.html", 10, "text/html").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("file_type_not_allowed"))
    );
    // A document is downloaded, never rendered.
    let pdf = uploaded(&api, "alice", "a.pdf", b"%PDF-1.4 fake", "application/pdf").await;
    let (status, events, _) = message(&api, "alice", "read this", &[id(&pdf)]).await;
    assert_eq!(status, 200);
    let last = last_input(&api);
    assert_eq!(last["content"][0]["type"], "input_file", "{last}");
    let read = api
        .http
        .get(last["content"][0]["file_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["content-disposition"], "attachment");
    assert_eq!(read.headers()["content-type"], "application/pdf");
    assert!(!events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_or_redirected_upload_urls_are_refused() {
    let api = start(&[]).await;
    assert_eq!(PNG_LEN, PNG.len().to_string());
    let (_, a) = create(&api, "alice", "a.png", PNG.len(), "image/png").await;
    let (_, b) = create(&api, "alice", "b.png", PNG.len(), "image/png").await;
    let url = a["upload_descriptor"]["url"].as_str().unwrap();
    // The signature of one attachment does not open another's key.
    let mut redirected = a.clone();
    redirected["upload_descriptor"]["url"] = json!(url.replace(id(&a), id(&b)));
    assert_eq!(upload(&api, &redirected, PNG, None).await, 403);
    // A tampered signature, or a longer life, is refused.
    let mut forged = a.clone();
    let tampered = match url.rfind("X-Amz-Signature=") {
        Some(at) => format!("{}X-Amz-Signature={}", &url[..at], "0".repeat(64)),
        None => panic!("{url}"),
    };
    forged["upload_descriptor"]["url"] = json!(tampered);
    assert_eq!(upload(&api, &forged, PNG, None).await, 403);
    let mut longer = a.clone();
    longer["upload_descriptor"]["url"] =
        json!(url.replace("X-Amz-Expires=300", "X-Amz-Expires=604800"));
    assert_eq!(upload(&api, &longer, PNG, None).await, 403);
    assert!(files(&api).object(id(&b)).await.is_none());
    assert!(files(&api).object(id(&a)).await.is_none());
    // Our URLs live 300 s: the same URL signed 301 s ago is refused as
    // expired, and signed now it works (the front checks as S3 does).
    let signer = Signer {
        access_key_id: "test",
        secret_access_key: "test",
        region: "us-east-1",
    };
    let unsigned = &url[..url.find("&X-Amz-Algorithm").unwrap()];
    let headers: Vec<(&str, &str)> = a["upload_descriptor"]["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .chain([("content-length", PNG_LEN)])
        .collect();
    for (age, status) in [(301, 403), (0, 200)] {
        let at = chrono::Utc::now() - chrono::Duration::seconds(age);
        let mut resigned = a.clone();
        resigned["upload_descriptor"]["url"] =
            json!(signer.presign("PUT", unsigned, &headers, at, 300).unwrap());
        assert_eq!(
            upload(&api, &resigned, PNG, None).await,
            status,
            "{age} s old"
        );
    }
    assert_eq!(files(&api).front.refusals().get("AccessDenied"), Some(&1));
    // A path trick in the name changes nothing but the name shown.
    let (status, tricky) = create(&api, "alice", "../../etc/passwd.png", 5, "image/png").await;
    assert_eq!(status, 200);
    assert_eq!(tricky["name"], "passwd.png");
    assert!(
        tricky["upload_descriptor"]["url"]
            .as_str()
            .unwrap()
            .contains(&format!("/attachments/{}?", id(&tricky)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_attachment_is_not_found_and_left_alone() {
    let api = start(&[]).await;
    let photo = uploaded(&api, "bob", "b.png", PNG, "image/png").await;
    let (status, _, body) = message(&api, "alice", "mine", &[id(&photo)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        delete(&api, "alice", id(&photo)).await,
        (404, json!("not_found"))
    );
    assert_eq!(files(&api).object(id(&photo)).await.unwrap().0, PNG);
    // Bob can still use it.
    let (status, _, _) = message(&api, "bob", "mine", &[id(&photo)]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_attachments_and_threads_removes_the_objects() {
    let api = start(&[]).await;
    let pending = uploaded(&api, "alice", "p.png", PNG, "image/png").await;
    assert_eq!(
        delete(&api, "alice", id(&pending)).await,
        (200, json!(null))
    );
    assert!(files(&api).object(id(&pending)).await.is_none());

    let used = uploaded(&api, "alice", "u.png", PNG, "image/png").await;
    let (status, events, _) = message(&api, "alice", "look", &[id(&used)]).await;
    assert_eq!(status, 200);
    let thread = events[0]["thread"]["id"].as_str().unwrap();
    let (status, _, _, _) = chatkit(
        &api,
        "alice",
        json!({"type": "threads.delete", "params": {"thread_id": thread}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(files(&api).object(id(&used)).await.is_none());
    assert_eq!(
        delete(&api, "alice", id(&used)).await,
        (404, json!("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sizes_and_the_quota_are_enforced() {
    let api = start(&[("CHATKIT_ATTACHMENT_QUOTA_MB", "1")]).await;
    let (status, body) = create(&api, "alice", "empty.png", 0, "image/png").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let (status, body) = create(&api, "alice", "big.png", 11 * 1024 * 1024, "image/png").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("file_too_large"))
    );
    let (status, _) = create(&api, "alice", "a.png", 700 * 1024, "image/png").await;
    assert_eq!(status, 200);
    let (status, body) = create(&api, "alice", "b.png", 700 * 1024, "image/png").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("quota_exceeded"))
    );
}

async fn transcribe(api: &Api, audio: &[u8], mime: &str) -> (u16, Value) {
    let audio = base64::engine::general_purpose::STANDARD.encode(audio);
    let (status, _, body, _) = chatkit(
        api,
        "alice",
        json!({"type": "input.transcribe", "params": {"audio_base64": audio, "mime_type": mime}}),
    )
    .await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dictation_is_transcribed_and_each_failure_is_clear() {
    let api = start(&[]).await;
    let voice = b"\x1aE\xdf\xa3 webm opus audio";
    stub(&api).push_transcript("remind me to call the plumber on Monday");
    let (status, body) = transcribe(&api, voice, "audio/webm;codecs=opus").await;
    assert_eq!(
        (status, body.clone()),
        (
            200,
            json!({"text": "remind me to call the plumber on Monday"})
        )
    );
    let sent = stub(&api)
        .requests_to("/v1/audio/transcriptions")
        .pop()
        .unwrap();
    assert_eq!(sent.body["model"], "gpt-4o-mini-transcribe");
    assert_eq!(sent.body["file_bytes"], voice.len());

    let (status, body) = transcribe(&api, voice, "video/mp4").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("file_type_not_allowed"))
    );
    let (status, _, body, _) = chatkit(
        &api,
        "alice",
        json!({"type": "input.transcribe", "params": {"audio_base64": "not base64!", "mime_type": "audio/webm"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let (status, body) = transcribe(&api, b"", "audio/webm").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_parameter"))
    );
    stub(&api).push_transcript("  ");
    let (status, body) = transcribe(&api, voice, "audio/webm").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("no_speech"))
    );
    let (status, body) = transcribe(&api, &vec![7u8; 4 * 1024 * 1024 + 1], "audio/webm").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("file_too_large"))
    );
    stub(&api).push_fault(Fault::Status {
        status: 429,
        retry_after: Some(3),
    });
    let (status, body) = transcribe(&api, voice, "audio/webm").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("upstream_rate_limited"))
    );
    // And the function keeps serving.
    let (status, _) = transcribe(&api, voice, "audio/webm").await;
    assert_eq!(status, 200);
}

const BOUNDARY: &str = "----WebKitFormBoundaryx8ZbQfKJ3dHk2Wq9";

/// The body a browser's `FormData` with one file in `file` sends.
fn form_data(name: &str, mime: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: {mime}\r\n\r\n"
    )
    .into_bytes();
    body.extend(bytes);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
    body
}

/// A direct upload of `bytes` as `user`, from the page's origin, as ChatKit
/// sends it to its `uploadUrl`: status, answer (an `Attachment` or the error
/// envelope, checked) and the answer's CORS origin.
async fn direct(
    api: &Api,
    user: &str,
    name: &str,
    mime: &str,
    bytes: &[u8],
) -> (u16, Value, Option<String>) {
    let answer = api
        .http
        .post(format!("{}/api/v1/chatkit/attachments", api.stack.url))
        .bearer_auth(api.token(user))
        .header("origin", LOCAL_ORIGINS[0])
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form_data(name, mime, bytes))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let allowed = answer
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = answer.text().await.unwrap();
    if let Err(e) = chatkit_contract::check_upload_response(status, content_type.as_deref(), &text)
    {
        panic!("ChatKit contract: {e}");
    }
    (status, serde_json::from_str(&text).unwrap(), allowed)
}

/// The keys of every object in the bucket.
async fn stored_keys(api: &Api) -> Vec<String> {
    let side = files(api);
    let listed = side
        .s3
        .list_objects_v2()
        .bucket(&side.bucket)
        .send()
        .await
        .unwrap();
    listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// An object's content type and disposition, as S3 stored them.
async fn stored_as(api: &Api, attachment_id: &str) -> (Option<String>, Option<String>) {
    let side = files(api);
    let head = side
        .s3
        .head_object()
        .bucket(&side.bucket)
        .key(format!("attachments/{attachment_id}"))
        .send()
        .await
        .unwrap();
    (
        head.content_type().map(str::to_owned),
        head.content_disposition().map(str::to_owned),
    )
}

const PDF: &[u8] = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3 fake document";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_photo_and_a_document_uploaded_directly_are_stored_and_shown_to_the_model() {
    let api = start(&[]).await;
    let url = format!("{}/api/v1/chatkit/attachments", api.stack.url);
    // The browser's preflight for the upload (it sends a bearer token).
    let preflight = api
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", LOCAL_ORIGINS[0])
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        LOCAL_ORIGINS[0]
    );

    let (status, photo, allowed) = direct(&api, "alice", "list.png", "image/png", PNG).await;
    assert_eq!(status, 200, "{photo}");
    assert_eq!(allowed.as_deref(), Some(LOCAL_ORIGINS[0]));
    assert_eq!(
        (&photo["type"], &photo["name"], &photo["mime_type"]),
        (&json!("image"), &json!("list.png"), &json!("image/png"))
    );
    assert!(photo.get("upload_descriptor").is_none());
    // Stored as a two-phase upload ends up: the bytes, the type, inline, pending.
    assert_eq!(
        files(&api).object(id(&photo)).await.unwrap().0,
        PNG,
        "the bytes as sent"
    );
    assert_eq!(
        stored_as(&api, id(&photo)).await,
        (Some("image/png".to_owned()), Some("inline".to_owned()))
    );
    assert_eq!(
        files(&api).tags(id(&photo)).await,
        [("taskpilot-attachment".to_owned(), "pending".to_owned())]
    );
    // Its preview is served inline as the image it is.
    let preview = api
        .http
        .get(photo["preview_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(preview.status(), StatusCode::OK);
    assert_eq!(preview.headers()["content-type"], "image/png");
    assert_eq!(preview.headers()["content-disposition"], "inline");
    assert_eq!(preview.bytes().await.unwrap(), PNG);

    let (status, pdf, _) = direct(&api, "alice", "notes.pdf", "application/pdf", PDF).await;
    assert_eq!(status, 200, "{pdf}");
    assert_eq!(pdf["type"], "file");
    assert!(pdf.get("preview_url").is_none());
    assert_eq!(
        stored_as(&api, id(&pdf)).await,
        (
            Some("application/pdf".to_owned()),
            Some("attachment".to_owned())
        )
    );

    // Then used in a message, exactly as two-phase uploads are.
    let (status, events, body) = message(&api, "alice", "add these", &[id(&photo), id(&pdf)]).await;
    assert_eq!(status, 200, "{body}");
    let item = events
        .iter()
        .find(|e| e["type"] == "thread.item.done" && e["item"]["type"] == "user_message")
        .unwrap()["item"]
        .clone();
    let listed: Vec<(&str, &str)> = item["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["type"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(id(&photo), "image"), (id(&pdf), "file")]);
    for file in [&photo, &pdf] {
        assert_eq!(
            files(&api).tags(id(file)).await,
            [("taskpilot-attachment".to_owned(), "used".to_owned())]
        );
    }
    // The model was shown the image and the document by URL.
    let last = last_input(&api);
    let shown = last["content"].as_array().unwrap();
    let image = shown.iter().find(|c| c["type"] == "input_image").unwrap();
    assert!(
        image["image_url"].as_str().unwrap().contains(id(&photo)),
        "{last}"
    );
    let document = shown.iter().find(|c| c["type"] == "input_file").unwrap();
    let read = api
        .http
        .get(document["file_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["content-type"], "application/pdf");
    assert_eq!(read.headers()["content-disposition"], "attachment");
    assert_eq!(read.bytes().await.unwrap(), PDF);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_direct_upload_over_4_mb_is_413_and_nothing_reaches_s3() {
    let api = start(&[]).await;
    // Binary bytes (not UTF-8): the body reaches the function base64-encoded,
    // as a Function URL sends a multipart body.
    let mut four_mb = PNG.to_vec();
    four_mb.resize(4 * 1024 * 1024, 0xff);
    let mut over = four_mb.clone();
    over.push(0xff);
    let (status, body, _) = direct(&api, "alice", "big.png", "image/png", &over).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("file_too_large")),
        "{body}"
    );
    assert!(stored_keys(&api).await.is_empty(), "nothing was stored");
    let (_, _, threads, _) =
        chatkit(&api, "alice", json!({"type": "threads.list", "params": {}})).await;
    assert_eq!(threads["data"], json!([]));
    // Exactly 4 MB fits through the invocation's limit and is stored whole.
    let (status, big, _) = direct(&api, "alice", "big.png", "image/png", &four_mb).await;
    assert_eq!(status, 200, "{big}");
    assert_eq!(
        stored_keys(&api).await,
        [format!("attachments/{}", id(&big))]
    );
    assert_eq!(files(&api).object(id(&big)).await.unwrap().0, four_mb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_uploads_meet_the_allow_list_and_the_quota() {
    let api = start(&[("CHATKIT_ATTACHMENT_QUOTA_MB", "1")]).await;
    for (name, mime) in [
        ("page.html", "text/html"),
        ("script.svg", "image/svg+xml"),
        ("blob", "application/octet-stream"),
    ] {
        let (status, body, _) = direct(&api, "alice", name, mime, b"<html></html>").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (415, Some("file_type_not_allowed")),
            "{mime}: {body}"
        );
    }
    let mut photo = PNG.to_vec();
    photo.resize(700 * 1024, 0xff);
    let (status, first, _) = direct(&api, "alice", "a.png", "image/png", &photo).await;
    assert_eq!(status, 200, "{first}");
    let (status, body, _) = direct(&api, "alice", "b.png", "image/png", &photo).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("quota_exceeded")),
        "{body}"
    );
    // Two-phase uploads share the quota.
    let (status, body) = create(&api, "alice", "c.png", 700 * 1024, "image/png").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("quota_exceeded"))
    );
    assert_eq!(
        stored_keys(&api).await,
        [format!("attachments/{}", id(&first))],
        "only the accepted file was stored"
    );
    // Another user has their own quota.
    let (status, _, _) = direct(&api, "bob", "b.png", "image/png", &photo).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_message_naming_a_direct_upload_is_not_found() {
    let api = start(&[]).await;
    let (status, photo, _) = direct(&api, "bob", "b.png", "image/png", PNG).await;
    assert_eq!(status, 200);
    let (status, _, body) = message(&api, "alice", "mine", &[id(&photo)]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        files(&api).tags(id(&photo)).await,
        [("taskpilot-attachment".to_owned(), "pending".to_owned())],
        "left as it was"
    );
    let (status, _, _) = message(&api, "bob", "mine", &[id(&photo)]).await;
    assert_eq!(status, 200);
}

/// The local stack as `local-stack` runs it, its data kept in `data`: a new
/// DynamoDB Local on the folder and a new moto each start, as after a restart.
async fn kept_stack(
    data: &std::path::Path,
) -> (
    Api,
    emulators::dynamodb_local::DynamoDbLocal,
    emulators::moto::Moto,
) {
    let dir = data.join("dynamodb");
    let dynamodb = tokio::task::spawn_blocking(move || {
        emulators::dynamodb_local::DynamoDbLocal::start_on_disk(emulators::free_port()?, &dir)
    })
    .await
    .unwrap()
    .unwrap();
    let moto = tokio::task::spawn_blocking(emulators::moto::Moto::start)
        .await
        .unwrap()
        .unwrap();
    let api = Api::start_with(taskpilot_testkit::stack::StackOptions {
        functions: Some(vec!["chatkit".into(), "tasks".into()]),
        dynamodb_endpoint: Some(dynamodb.endpoint.clone()),
        moto_endpoint: Some(moto.endpoint.clone()),
        table: Some("taskpilot-kept".into()),
        files_dir: Some(data.join("s3")),
        ..taskpilot_testkit::stack::StackOptions::default()
    })
    .await;
    (api, dynamodb, moto)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_local_stack_keeps_its_tasks_and_attachments_in_step() {
    use emulators::template::TableState;
    let data = emulators::scratch::ScratchDir::new("kept").unwrap();
    let (api, dynamodb, moto) = kept_stack(data.path()).await;
    assert_eq!(api.stack.table_state, TableState::Created);
    let task = api
        .send(
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some("alice"),
            Some(json!({"title": "Kept across restarts"})),
            &[],
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{:?}", task.body);
    let photo = uploaded(&api, "alice", "list.png", PNG, "image/png").await;
    drop(api);
    tokio::task::spawn_blocking(move || drop((dynamodb, moto)))
        .await
        .unwrap();

    let (api, _dynamodb, _moto) = kept_stack(data.path()).await;
    assert_eq!(api.stack.table_state, TableState::Kept);
    let list = api.get("/api/v1/tasks", "alice").await;
    assert_eq!(
        list.body["tasks"][0]["id"], task.body["id"],
        "{:?}",
        list.body
    );
    // The object is back in the new moto, and its record agrees with it: a
    // message may use the upload made before the restart.
    assert_eq!(files(&api).object(id(&photo)).await.unwrap().0, PNG);
    let (status, _, body) = message(&api, "alice", "add these", &[id(&photo)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_input(&api)["content"][0]["type"], "input_image");
}

//! Hand-written hostile input against the real stack (the `tasks` and `health`
//! binaries behind the local API Gateway, DynamoDB Local): broken bytes,
//! control characters, huge and deeply nested bodies, out-of-range numbers,
//! duplicate keys, wrong media types, odd ids and header injection; the
//! cases a schema-driven fuzzer does not write.
//!
//! Every answer must be a documented status with the `{"error":{...}}`
//! envelope, or the HTTP server's own framing error for bytes that are not
//! HTTP (those never reach a function). After each group: nothing was
//! half-written, Alice's and Bob's tasks are unchanged, the gateway gave no
//! 5xx and no function process crashed or was restarted. Each group is its
//! own test on its own stack, so a failure names the group.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{Api, Reply, query_value};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskpilot_http::json::MAX_BODY_BYTES;
use taskpilot_testkit::contract::Contract;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TASKS: &str = "/api/v1/tasks";
/// `ALLOWED_ORIGINS` of the local stack.
const ALLOWED_ORIGINS: [&str; 2] = ["http://localhost:3000", "http://127.0.0.1:3000"];
const MB: usize = 1024 * 1024;
const FUNCTIONS: [&str; 2] = ["tasks", "health"];

/// Runs one group of cases on a stack of its own, then checks that nothing
/// was half-written, no answer was a 5xx and no process crashed.
async fn check(label: &str, group: impl AsyncFnOnce(&mut Probe)) {
    let mut p = Probe::start().await;
    // Boxed: a group's future is large for the test thread's stack.
    Box::pin(group(&mut p)).await;
    p.settle(label).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_utf8_is_refused_cleanly() {
    check("invalid UTF-8", invalid_utf8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_characters_are_refused_or_kept_cleanly() {
    check("control characters", control_characters).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_bodies_are_refused_cleanly() {
    check("oversized bodies", oversized_bodies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_nesting_is_refused_cleanly() {
    check("deep nesting", deep_nesting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_numbers_are_refused_cleanly() {
    check("huge numbers", huge_numbers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_keys_are_refused_cleanly() {
    check("duplicate keys", duplicate_keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_media_types_are_refused_cleanly() {
    check("media types", media_types).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_ids_are_refused_cleanly() {
    check("odd ids", odd_ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_injection_is_refused_cleanly() {
    check("header injection", header_injection).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_search_text_is_handled_cleanly() {
    check("search text", search_text).await;
}

// ---------------------------------------------------------------------------
// The groups of cases.
// ---------------------------------------------------------------------------

/// Bodies, query strings and header values that are not UTF-8.
async fn invalid_utf8(p: &mut Probe) {
    let alice = p.alice_path();
    let bodies: [&[u8]; 11] = [
        b"{\"title\":\"\xff\xfe\"}",
        b"{\"title\":\"caf\xe9\"}",         // Latin-1
        b"{\"title\":\"\xc0\xaf\"}",        // overlong `/`
        b"{\"title\":\"\xed\xa0\x80\"}",    // an encoded surrogate (CESU-8)
        b"{\"title\":\"ok\xf0\x9f\"}",      // a truncated sequence
        b"{\"ti\xfftle\":\"x\"}",           // in a key
        br#"{"title":"\ud800"}"#,           // a lone surrogate escape
        br#"{"title":"\udc00\ud800"}"#,     // a reversed pair
        b"\xef\xbb\xbf{\"title\":\"bom\"}", // a byte order mark
        b"{\0\"\0t\0\"\0:\0\"\0x\0\"\0}\0", // UTF-16LE
        b"\xff",
    ];
    for body in bodies {
        let what = String::from_utf8_lossy(body);
        let r = p.json_bytes(Method::POST, TASKS, body).await;
        expect(&r, 400, "malformed_json", &what);
        let r = p.json_bytes(Method::PATCH, &alice, body).await;
        expect(&r, 400, "malformed_json", &what);
    }

    // Percent-encoded invalid UTF-8 reaches the function decoded lossily
    // (U+FFFD), so it is an ordinary, well-formed value.
    let r = p.get(&format!("{TASKS}?tag=%FF%FE")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["tasks"], json!([]));
    let r = p.get(&format!("{TASKS}?cursor=%FF%FE")).await;
    expect(&r, 400, "invalid_cursor", "cursor=%FF");
    let r = p.get(&format!("{TASKS}?limit=%FF")).await;
    expect(&r, 422, "validation_failed", "limit=%FF");
    assert_eq!(r.body["error"]["details"]["field"], "limit");
    let r = p.get(&format!("{TASKS}?%FF=1")).await;
    expect(&r, 400, "invalid_parameter", "?%FF=1");

    // Raw non-ASCII bytes in the query are not HTTP: the server refuses
    // them. In the path, UTF-8 passes and names no task; other bytes do not.
    let r = p
        .tcp(&p.raw_request("GET", b"/api/v1/tasks?tag=\xff\xfe", b"", b""))
        .await;
    r.framing_error(400);
    let r = p
        .tcp(&p.raw_request("GET", b"/api/v1/tasks/\xce\xb1", b"", b""))
        .await;
    expect(r.reached(), 404, "not_found", "UTF-8 in the path");
    let r = p
        .tcp(&p.raw_request("GET", b"/api/v1/tasks/\xff\xfe", b"", b""))
        .await;
    r.framing_error(400);

    // Raw non-ASCII bytes in header values do reach the function.
    let create: &[u8] = br#"{"title":"never stored"}"#;
    let json = "Content-Type: application/json\r\n";
    let cases: [HeaderCase; 4] = [
        (
            "POST",
            TASKS.as_bytes(),
            [json.as_bytes(), b"Idempotency-Key: \xff\xfe\r\n"].concat(),
            create,
            400,
            "invalid_parameter",
            "Idempotency-Key \\xff",
        ),
        (
            "PATCH",
            alice.as_bytes(),
            [json.as_bytes(), b"If-Match: \"\xff\"\r\n"].concat(),
            create,
            400,
            "invalid_parameter",
            "If-Match \\xff",
        ),
        (
            "POST",
            TASKS.as_bytes(),
            b"Content-Type: application/json\xff\r\n".to_vec(),
            create,
            415,
            "unsupported_media_type",
            "Content-Type \\xff",
        ),
        (
            "GET",
            TASKS.as_bytes(),
            b"Origin: http://localhost:3000\xff\r\n".to_vec(),
            b"",
            200,
            "",
            "Origin \\xff",
        ),
    ];
    for (method, target, headers, body, status, code, what) in cases {
        let r = p.tcp(&p.raw_request(method, target, &headers, body)).await;
        if status == 200 {
            assert_eq!(r.reached().status, 200, "{what}");
            assert_no_cors(&r.reply);
        } else {
            expect(r.reached(), status, code, what);
        }
    }
    // Without the caller's token: an unreadable Authorization is a 401.
    let r = p
        .tcp(&raw_request(
            "GET",
            TASKS.as_bytes(),
            b"Authorization: Bearer \xff\xfe\r\n",
            b"",
        ))
        .await;
    expect(r.reached(), 401, "unauthorized", "Authorization \\xff");
}

/// NUL and other control characters in JSON strings: titles and tags refuse
/// every control character (Unicode `Cc`); descriptions allow `\n`, `\r` and
/// `\t` only; other characters (U+2028, U+FEFF, …) are stored as sent.
async fn control_characters(p: &mut Probe) {
    let controls = ['\u{0}', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}'];
    for c in controls.iter().chain(&['\n', '\r', '\t']) {
        let what = format!("title with U+{:04X}", *c as u32);
        let r = p.post(json!({"title": format!("a{c}b")})).await;
        expect_field(&r, "title", &what);
        let r = p
            .post(json!({"title":"t","tags":["ok", format!("a{c}b")]}))
            .await;
        expect_field(&r, "tags[1]", &what);
        let r = p.patch(json!({"title": format!("a{c}b")})).await;
        expect_field(&r, "title", &what);
    }
    for c in controls {
        let what = format!("description with U+{:04X}", c as u32);
        let r = p
            .post(json!({"title":"t","description": format!("a{c}b")}))
            .await;
        expect_field(&r, "description", &what);
        let r = p.patch(json!({"description": format!("a{c}b")})).await;
        expect_field(&r, "description", &what);
    }
    // Unescaped TAB or LF inside a JSON string is not JSON (RFC 8259 §7).
    for body in [
        "{\"title\":\"a\tb\"}",
        "{\"title\":\"a\nb\"}",
        "{\"title\":\"t\",\"description\":\"a\tb\"}",
        "{\"title\":\"t\",\"description\":\"a\nb\"}",
        "{\"title\":\"t\",\"tags\":[\"a\tb\"]}",
    ] {
        let r = p.json_bytes(Method::POST, TASKS, body.as_bytes()).await;
        expect(&r, 400, "malformed_json", body);
        let r = p
            .json_bytes(Method::PATCH, &p.alice_path(), body.as_bytes())
            .await;
        expect(&r, 400, "malformed_json", body);
    }
    p.settle("control characters refused").await;

    // What is allowed comes back (and is stored) byte for byte.
    let title = "a\u{2028}b\u{2029}c\u{200b}d\u{feff}e\u{202e}f";
    let description = "line\nnext\ttab\r\nend \u{2028} \u{a0}!";
    let tag = "x\u{2028}y";
    let r = p
        .post(json!({"title": title, "description": description, "tags": [tag]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let task = r.body.clone();
    assert_eq!(task["title"], title);
    assert_eq!(task["description"], description);
    assert_eq!(task["tags"], json!([tag]));
    p.expect_row(&task);
    let got = p.get(&item(&task)).await;
    assert_eq!(got.body, task);
    let row = p.row(&task).await;
    assert_eq!(row["title"].as_s().unwrap(), title);
    assert_eq!(row["description"].as_s().unwrap(), description);
    assert_eq!(row["tags"].as_l().unwrap()[0].as_s().unwrap(), tag);
    // The same through PATCH.
    let r = p
        .send(
            Method::PATCH,
            &item(&task),
            Some(json!({"title": format!("{title}!"), "description": "\t\r\n"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["title"], format!("{title}!"));
    assert_eq!(
        r.body["description"],
        Value::Null,
        "whitespace only is none"
    );
}

/// Bodies over the function's 16 KB limit, over Lambda's 6 MB invoke limit
/// and at API Gateway's 10 MB limit.
async fn oversized_bodies(p: &mut Probe) {
    let alice = p.alice_path();
    // Exactly at the limit is fine; one byte more is the function's 413.
    let at_limit = padded(br#"{"title":"exactly 16 KB"}"#, MAX_BODY_BYTES);
    let r = p.json_bytes(Method::POST, TASKS, &at_limit).await;
    assert_eq!(r.status, 201, "{}", r.body);
    p.expect_row(&r.body);
    let over = padded(br#"{"title":"16 KB and a byte"}"#, MAX_BODY_BYTES + 1);
    for (size, body) in [
        ("16 KB + 1", over),
        ("1 MB", sized_body(MB)),
        ("4 MB", sized_body(4 * MB)),
    ] {
        let r = p.json_bytes(Method::POST, TASKS, &body).await;
        expect(&r, 413, "payload_too_large", size);
        let r = p.json_bytes(Method::PATCH, &alice, &body).await;
        expect(&r, 413, "payload_too_large", size);
    }
    // Events over 6 MB never reach the function: API Gateway's own 413.
    // Bodies that are not UTF-8 travel base64-encoded, so 5 MB is enough.
    let gateway_413 = json!({"message": "Request Entity Too Large"});
    for (size, body) in [
        ("10 MB", sized_body(10 * MB)),
        ("10 MB + 1", sized_body(10 * MB + 1)),
        ("5 MB binary", vec![0xff; 5 * MB]),
    ] {
        for (method, path) in [(Method::POST, TASKS), (Method::PATCH, alice.as_str())] {
            let r = p.json_bytes(method.clone(), path, &body).await;
            assert_eq!(
                (r.status.as_u16(), &r.body),
                (413, &gateway_413),
                "{method} {size}"
            );
        }
    }
}

/// Deeply nested arrays and objects, inside and beyond 16 KB.
async fn deep_nesting(p: &mut Probe) {
    let alice = p.alice_path();
    let open = |unit: &str, n: usize| unit.repeat(n);
    let balanced = |open_unit: &str, n: usize, middle: &str, close_unit: &str| {
        format!("{}{middle}{}", open_unit.repeat(n), close_unit.repeat(n))
    };
    let cases: Vec<(String, u16, &str)> = vec![
        // Unterminated: not JSON.
        (open("[", 10_000), 400, "malformed_json"),
        (open("{\"a\":", 3_000), 400, "malformed_json"),
        // Terminated, valid JSON, but not a task.
        (balanced("{\"a\":", 2_000, "1", "}"), 400, "unknown_field"),
        (
            format!(
                "{{\"title\":\"t\",\"tags\":{}}}",
                balanced("[", 7_000, "", "]")
            ),
            422,
            "validation_failed",
        ),
        (
            format!(
                "{{\"title\":\"t\",\"description\":{}}}",
                balanced("{\"a\":", 2_000, "null", "}")
            ),
            422,
            "validation_failed",
        ),
        // Beyond 16 KB: refused before parsing.
        (open("[", 100_000), 413, "payload_too_large"),
        (open("{\"a\":", 10_000), 413, "payload_too_large"),
        (open("{\"a\":", 100_000), 413, "payload_too_large"),
        (balanced("[", 100_000, "", "]"), 413, "payload_too_large"),
        (open("[", MB), 413, "payload_too_large"),
    ];
    for (body, status, code) in &cases {
        let what = format!("{}… ({} bytes)", &body[..20], body.len());
        let r = p.json_bytes(Method::POST, TASKS, body.as_bytes()).await;
        expect(&r, *status, code, &what);
        let r = p.json_bytes(Method::PATCH, &alice, body.as_bytes()).await;
        expect(&r, *status, code, &what);
        // The process keeps serving.
        assert_eq!(p.get(&alice).await.body, p.alice, "{what}");
    }
    // serde would read a task from an array by position: a body is an object.
    for body in [
        r#"["an array is not a task"]"#.to_owned(),
        balanced("[", 8_000, "", "]"),
    ] {
        let r = p.json_bytes(Method::POST, TASKS, body.as_bytes()).await;
        expect_field(&r, "body", &body[..20]);
        let r = p.json_bytes(Method::PATCH, &alice, body.as_bytes()).await;
        expect_field(&r, "body", &body[..20]);
    }
}

/// Numbers JSON allows but no field can hold, in the body, `If-Match` and
/// the query.
async fn huge_numbers(p: &mut Probe) {
    let alice = p.alice_path();
    const OUT_OF_RANGE: [&str; 2] = ["1e400", "-1e400"];
    // 2^64 and 2^128 overflow u64 and parse as floats; 1.0e-400 is 0.0.
    const UNFIT: [&str; 3] = [
        "18446744073709551616",
        "340282366920938463463374607431768211456",
        "1.0e-400",
    ];
    // f64 cannot hold ±1e400: the parser refuses the body.
    for n in OUT_OF_RANGE {
        for body in [
            format!("{{\"title\":{n}}}"),
            format!("{{\"title\":\"t\",\"completed\":{n}}}"),
            format!("{{\"title\":\"t\",\"priority\":{n}}}"),
            format!("{{\"title\":\"t\",\"due_date\":{n}}}"),
            format!("{{\"title\":\"t\",\"description\":{n}}}"),
            format!("{{\"title\":\"t\",\"tags\":[{n}]}}"),
        ] {
            let r = p.json_bytes(Method::POST, TASKS, body.as_bytes()).await;
            expect(&r, 400, "malformed_json", &body);
        }
        let body = format!("{{\"title\":\"x\",\"version\":{n}}}");
        let r = p.json_bytes(Method::PATCH, &alice, body.as_bytes()).await;
        expect(&r, 400, "malformed_json", &body);
    }
    // Numbers that parse but do not fit the field: a validation error on it.
    for n in UNFIT.iter().chain(&["-1", "1.5"]) {
        for (field, body) in [
            ("title", format!("{{\"title\":{n}}}")),
            (
                "completed",
                format!("{{\"title\":\"t\",\"completed\":{n}}}"),
            ),
            ("priority", format!("{{\"title\":\"t\",\"priority\":{n}}}")),
            ("due_date", format!("{{\"title\":\"t\",\"due_date\":{n}}}")),
            ("tags[0]", format!("{{\"title\":\"t\",\"tags\":[{n}]}}")),
        ] {
            let r = p.json_bytes(Method::POST, TASKS, body.as_bytes()).await;
            expect_field(&r, field, &body);
        }
    }
    for n in UNFIT.iter().chain(&["-1", "1.5", "\"1\"", "true"]) {
        let body = format!("{{\"title\":\"x\",\"version\":{n}}}");
        let r = p.json_bytes(Method::PATCH, &alice, body.as_bytes()).await;
        expect_field(&r, "version", &body);
    }
    // A version that fits u64 but is not the task's: a conflict, not a crash.
    for n in ["18446744073709551615", "0"] {
        let body = format!("{{\"title\":\"x\",\"version\":{n}}}");
        let r = p.json_bytes(Method::PATCH, &alice, body.as_bytes()).await;
        expect(&r, 409, "version_conflict", &body);
        assert_eq!(r.body["error"]["details"]["current"], p.alice);
    }
    // If-Match and the query.
    for n in UNFIT.iter().chain(&OUT_OF_RANGE) {
        let etag = format!("\"{n}\"");
        let r = p
            .send(
                Method::PATCH,
                &alice,
                Some(json!({"title":"x"})),
                &[("if-match", &etag)],
            )
            .await;
        expect(&r, 400, "invalid_parameter", &etag);
        let r = p
            .send(Method::DELETE, &alice, None, &[("if-match", &etag)])
            .await;
        expect(&r, 400, "invalid_parameter", &etag);
    }
    for n in UNFIT
        .iter()
        .chain(&OUT_OF_RANGE)
        .chain(&["99999999999999999999999", "-1", "0x10"])
    {
        let r = p.get(&format!("{TASKS}?limit={n}")).await;
        expect_field(&r, "limit", n);
        let r = p.get(&format!("{TASKS}?due_before={n}")).await;
        expect_field(&r, "due_before", n);
    }
}

/// Duplicate keys in bodies, query strings and headers.
async fn duplicate_keys(p: &mut Probe) {
    let alice = p.alice_path();
    for body in [
        r#"{"title":"a","title":"b"}"#,
        r#"{"title":"a","t\u0069tle":"b"}"#, // the same key, escaped
        r#"{"title":"a","description":null,"description":"x"}"#,
        r#"{"title":"a","tags":["x"],"tags":["y"]}"#,
        r#"{"title":"a","priority":"low","priority":"low"}"#,
    ] {
        let r = p.json_bytes(Method::POST, TASKS, body.as_bytes()).await;
        expect(&r, 400, "malformed_json", body);
        assert!(message(&r).contains("duplicate field"), "{}", r.body);
    }
    for body in [
        r#"{"title":"x","version":1,"version":2}"#,
        r#"{"version":1,"title":"x","version":1}"#,
        r#"{"due_date":null,"due_date":"2026-01-01"}"#,
        r#"{"completed":true,"completed":false}"#,
    ] {
        let r = p.json_bytes(Method::PATCH, &alice, body.as_bytes()).await;
        expect(&r, 400, "malformed_json", body);
        assert!(message(&r).contains("duplicate field"), "{}", r.body);
    }
    for query in ["limit=5&limit=6", "limit=5&limit=5", "tag=a&tag=b"] {
        let r = p.get(&format!("{TASKS}?{query}")).await;
        expect(&r, 400, "invalid_parameter", query);
    }
    let r = p.get(&format!("{TASKS}?limit=5&LIMIT=6")).await;
    expect(&r, 400, "invalid_parameter", "LIMIT");
    // Repeated headers arrive joined with commas, as API Gateway does.
    let r = p
        .tcp(&p.raw_request(
            "PATCH",
            alice.as_bytes(),
            b"Content-Type: application/json\r\nIf-Match: \"1\"\r\nIf-Match: \"2\"\r\n",
            br#"{"title":"x"}"#,
        ))
        .await;
    expect(r.reached(), 400, "invalid_parameter", "two If-Match");
    let r = p
        .tcp(&p.raw_request(
            "POST",
            TASKS.as_bytes(),
            b"Content-Type: application/json\r\nContent-Type: application/json\r\n",
            br#"{"title":"x"}"#,
        ))
        .await;
    expect(
        r.reached(),
        415,
        "unsupported_media_type",
        "two Content-Types",
    );
}

/// Content types: only UTF-8 JSON (`application/json` or a `+json` type, or
/// none at all) is read; anything else is a 415 on every route with a body.
async fn media_types(p: &mut Probe) {
    let alice = p.alice_path();
    let body = br#"{"title":"media"}"#;
    for ct in [
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin1",
        "application/json; charset=ISO-8859-1",
        "application/json; charset=utf-16",
        "application/jsonx",
        "application/x-json",
        "application/json, text/plain",
        "application/json%0d%0aX-Injected: 1",
        "json",
        "",
    ] {
        let r = p
            .typed_bytes(Method::POST, TASKS, Some(ct), body.to_vec())
            .await;
        expect(&r, 415, "unsupported_media_type", ct);
        let r = p
            .typed_bytes(Method::PATCH, &alice, Some(ct), body.to_vec())
            .await;
        expect(&r, 415, "unsupported_media_type", ct);
    }
    // Accepted: JSON by any spelling, a UTF-8 charset, `+json` types and no
    // Content-Type at all (the body is read as JSON).
    for ct in [
        Some("application/json"),
        Some("APPLICATION/JSON"),
        Some("application/json; charset=utf-8"),
        Some("application/json;charset=\"UTF-8\""),
        Some("application/merge-patch+json"),
        Some("application/json-patch+json"),
        None,
    ] {
        let r = p.typed_bytes(Method::POST, TASKS, ct, body.to_vec()).await;
        assert_eq!(r.status, 201, "{ct:?}: {}", r.body);
        p.expect_row(&r.body);
    }
    // `+json` is read as this API's JSON: a JSON Patch document (an array)
    // is not a task patch.
    let r = p
        .typed_bytes(
            Method::PATCH,
            &alice,
            Some("application/json-patch+json"),
            br#"[{"op":"replace","path":"/title","value":"x"}]"#.to_vec(),
        )
        .await;
    expect_field(&r, "body", "JSON Patch");
}

/// Path traversal, odd ids, someone else's id.
async fn odd_ids(p: &mut Probe) {
    let alice_id = p.alice["id"].as_str().unwrap().to_owned();
    let long = "A".repeat(10_000);
    let unicode = "01ΚΑΒ3Y4M6Q8RJ9T2VXW5Z7C0D";
    let ids: Vec<String> = [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%00",
        &format!("{alice_id}%00"),
        &format!("{alice_id}%20"),
        &long,
        unicode,
        "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",  // over 128 bits
        "01KAB3Y4M6Q8RJ9T2VXW5Z7COD",  // O is not Crockford
        "01KAB3Y4M6Q8RJ9T2VXW5Z7CID",  // nor is I
        "01KAB3Y4M6Q8RJ9T2VXW5Z7C0",   // 25 characters
        "01KAB3Y4M6Q8RJ9T2VXW5Z7C0DD", // 27
        "%252e%252e",
        "*",
        "null",
    ]
    .map(str::to_owned)
    .into();
    for id in ids {
        let path = format!("{TASKS}/{id}");
        let what = &path[..path.len().min(60)];
        let r = p.get(&path).await;
        expect(&r, 404, "not_found", what);
        let r = p
            .send(Method::PATCH, &path, Some(json!({"title":"x"})), &[])
            .await;
        expect(&r, 404, "not_found", what);
        let r = p.send(Method::DELETE, &path, None, &[]).await;
        expect(&r, 404, "not_found", what);
        let r = p
            .send(Method::POST, &format!("{path}/complete"), None, &[])
            .await;
        expect(&r, 404, "not_found", what);
    }
    // Dot segments, sent as is (clients normalise them away): the function
    // sees the normalised path, which names no route.
    let targets: Vec<String> = [
        "/api/v1/tasks/..",
        "/api/v1/tasks/%2e%2e",
        "/api/v1/tasks/.%2E",
        "/api/v1/tasks/../../etc/passwd",
        &format!("/api/v1/tasks/{alice_id}/complete/.."),
        &format!("/api/v1/tasks/x/../{alice_id}/complete/../reopen/.."),
        &format!("/api/v1/tasks//{alice_id}"),
    ]
    .map(str::to_owned)
    .into();
    for target in targets {
        for method in ["GET", "POST", "DELETE"] {
            let r = p
                .tcp(&p.raw_request(method, target.as_bytes(), b"", b""))
                .await;
            expect(
                r.reached(),
                404,
                "route_not_found",
                &format!("{method} {target}"),
            );
        }
    }
    // Someone else's real id: 404 on every route, nothing of it in the answer.
    let bob_path = item(&p.bob);
    let bob_lower = format!("{TASKS}/{}", p.bob["id"].as_str().unwrap().to_lowercase());
    for path in [&bob_path, &bob_lower] {
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PATCH, "", Some(json!({"title":"mine now"}))),
            (Method::DELETE, "", None),
            (Method::POST, "/complete", None),
            (Method::POST, "/reopen", None),
        ] {
            let r = p
                .send(method.clone(), &format!("{path}{suffix}"), body, &[])
                .await;
            expect(&r, 404, "not_found", &format!("{method} {path}{suffix}"));
            assert!(!r.body.to_string().contains("Bob's secret"), "{}", r.body);
        }
    }
    // The owner's id in lower case names the same task (ULIDs are
    // case-insensitive; the spec's pattern allows it): the canonical task.
    let lower = format!("{TASKS}/{}", alice_id.to_lowercase());
    let r = p.get(&lower).await;
    assert_eq!((r.status.as_u16(), &r.body), (200, &p.alice));
}

/// CR/LF and other injection attempts in header values; CORS only for the
/// exact allowed origins.
async fn header_injection(p: &mut Probe) {
    let alice = p.alice_path();
    // Percent-encoded CR/LF is plain visible ASCII: a legal Idempotency-Key,
    // kept verbatim and never decoded into a header.
    let key = "abc%0d%0aSet-Cookie:%20evil=1%0d%0aX-Injected:%201";
    let r = p
        .send(
            Method::POST,
            TASKS,
            Some(json!({"title":"keyed"})),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    p.expect_row(&r.body);
    p.keys += 1;
    let replay = p
        .send(
            Method::POST,
            TASKS,
            Some(json!({"title":"keyed"})),
            &[("idempotency-key", key)],
        )
        .await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, r.body);
    p.settle("percent-encoded key").await;
    let stored: Vec<String> = p.sort_keys("IDEMPOTENCY#").await;
    assert_eq!(stored, vec![format!("IDEMPOTENCY#TASK#{key}")]);

    let r = p
        .send(
            Method::PATCH,
            &alice,
            Some(json!({"title":"x"})),
            &[("if-match", "\"1\"%0d%0aX-Injected:%201")],
        )
        .await;
    expect(&r, 400, "invalid_parameter", "If-Match %0d%0a");
    let r = p
        .send(
            Method::POST,
            TASKS,
            Some(json!({"title":"x"})),
            &[("idempotency-key", "a\tb")],
        )
        .await;
    expect(&r, 400, "invalid_parameter", "Idempotency-Key with a tab");

    // Raw CR/LF tricks. A bare LF ends a header line (RFC 9112 §2.2 allows
    // it), so the "injected" line is just another request header, which no
    // answer repeats.
    let r = p
        .tcp(&p.raw_request(
            "GET",
            TASKS.as_bytes(),
            b"X-Note: a\nSet-Cookie: injected=1\nX-Injected: 1\r\n",
            b"",
        ))
        .await;
    assert_eq!(r.reached().status, 200, "{}", r.reply.body);
    // Obsolete line folding, a bare CR, NUL and DEL are not HTTP.
    for extra in [
        &b"X-Note: a\r\n Set-Cookie: injected=1\r\n"[..],
        b"X-Note: a\r\n\tX-Injected: 1\r\n",
        b"Idempotency-Key: k\r\n X-Injected: 1\r\n",
        b"X-Note: a\rSet-Cookie: injected=1\r\n",
        b"X-Note: a\0b\r\n",
        b"X-Note: a\x7fb\r\n",
        b"Set-Cookie\r\n",
        b": empty-name\r\n",
    ] {
        let r = p
            .tcp(&p.raw_request("POST", TASKS.as_bytes(), extra, br#"{"title":"x"}"#))
            .await;
        r.framing_error(400);
    }

    // Origins: only an exact allowed one is echoed, never anything else.
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost:3000.evil.example",
        "http://evil.example/http://localhost:3000",
        "HTTP://LOCALHOST:3000",
        "http://localhost:3000/",
        "http://localhost:30000",
        "http://localhost",
        "http://localhost:3000, http://evil.example",
        "http://localhost:3000%0d%0aSet-Cookie:%20a=1",
        "http://localhost:3000\tx",
    ] {
        let r = p
            .send(Method::GET, TASKS, None, &[("origin", origin)])
            .await;
        assert_eq!(r.status, 200);
        assert_no_cors(&r);
        let r = p
            .api
            .send(Method::OPTIONS, TASKS, None, None, &[("origin", origin)])
            .await;
        check_headers(&r.headers);
        expect(&r, 403, "origin_not_allowed", origin);
        assert_no_cors(&r);
    }
    // Two Origin headers arrive joined: not an exact origin.
    let r = p
        .tcp(&p.raw_request(
            "GET",
            TASKS.as_bytes(),
            b"Origin: https://evil.example\r\nOrigin: http://localhost:3000\r\n",
            b"",
        ))
        .await;
    assert_eq!(r.reached().status, 200);
    assert_no_cors(&r.reply);
    // A CRLF after an allowed origin just starts the next header.
    let r = p
        .tcp(&p.raw_request(
            "GET",
            TASKS.as_bytes(),
            b"Origin: http://localhost:3000\r\nSet-Cookie: injected=1\r\n",
            b"",
        ))
        .await;
    assert_eq!(r.reached().status, 200);
    assert_eq!(
        r.reply.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );

    // Host and X-Forwarded-* are API Gateway's to set, not the client's: a
    // spoofed or broken one changes nothing (lambda_http would panic on an
    // unparsable Host if it ever got through).
    for (name, value) in [
        ("host", "a b"),
        ("host", "127.0.0.1:99999"),
        ("host", "[::1"),
        ("host", "evil.example/api/v1/tasks/x"),
        ("x-forwarded-proto", "a b"),
        ("x-forwarded-proto", ""),
        ("x-forwarded-port", "http"),
    ] {
        let r = p.send(Method::GET, TASKS, None, &[(name, value)]).await;
        assert_eq!(r.status, 200, "{name}: {value}: {}", r.body);
    }

    // 64 KB header values.
    let big = "k".repeat(64 * 1024);
    let r = p
        .send(
            Method::POST,
            TASKS,
            Some(json!({"title":"x"})),
            &[("idempotency-key", &big)],
        )
        .await;
    expect(&r, 400, "invalid_parameter", "64 KB Idempotency-Key");
    let r = p
        .send(
            Method::PATCH,
            &alice,
            Some(json!({"title":"x"})),
            &[("if-match", &format!("\"{}\"", "9".repeat(64 * 1024)))],
        )
        .await;
    expect(&r, 400, "invalid_parameter", "64 KB If-Match");
    let r = p
        .api
        .send(
            Method::GET,
            TASKS,
            None,
            None,
            &[("authorization", &format!("Bearer {big}"))],
        )
        .await;
    check_headers(&r.headers);
    expect(&r, 401, "unauthorized", "64 KB Authorization");
    let origin = format!("http://localhost:3000/{big}");
    let r = p
        .send(Method::GET, TASKS, None, &[("origin", &origin)])
        .await;
    assert_eq!(r.status, 200);
    assert_no_cors(&r);
    let r = p
        .send(Method::GET, TASKS, None, &[("x-filler", &big)])
        .await;
    assert_eq!(r.status, 200);
}

/// The search text `q`: overlong, control characters, text that looks like a
/// DynamoDB expression or an injection, and Unicode. Refusals are 422s naming
/// `q`; everything else is only text, matched in Alice's tasks alone.
async fn search_text(p: &mut Probe) {
    let search = |q: String| format!("{TASKS}?q={q}");
    let refused = |r: &Reply, what: &str| {
        expect(r, 422, "validation_failed", what);
        assert_eq!(r.body["error"]["details"]["field"], "q", "{what}");
    };
    // Overlong, empty and whitespace only.
    for (what, q) in [
        ("101 characters", "x".repeat(101)),
        ("101 emoji", query_value(&"🚀".repeat(101))),
        ("8 KB", "x".repeat(8 * 1024)),
        ("empty", String::new()),
        ("spaces", query_value("   ")),
        (
            "Unicode spaces",
            query_value("\u{2003}\u{3000}\u{a0}\u{2028}"),
        ),
    ] {
        refused(&p.get(&search(q)).await, what);
    }
    let r = p
        .get(&search(query_value(&format!("  {}  ", "é".repeat(100)))))
        .await;
    assert_eq!((r.status.as_u16(), &r.body["tasks"]), (200, &json!([])));
    // Control characters, inside or where trimming would have removed them.
    for c in [
        '\0', '\u{7}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}',
    ] {
        let what = format!("U+{:04X}", c as u32);
        for q in [format!("a{c}b"), format!("{c}ab"), format!("ab{c}")] {
            refused(&p.get(&search(query_value(&q))).await, &what);
        }
    }
    // Twice, or twice in disguise.
    for query in ["q=a&q=b", "q=a&q=a", "q=a&Q=b"] {
        let r = p.get(&format!("{TASKS}?{query}")).await;
        expect(&r, 400, "invalid_parameter", query);
    }

    // Text shaped like expressions, placeholders, keys or injections is text:
    // it finds what contains it, in Alice's tasks only.
    let odd = json!({"title": "weird ) OR :q #pk (", "tags": ["USER#bob", ":q"]});
    let r = p.post(odd).await;
    assert_eq!(r.status, 201, "{}", r.body);
    p.expect_row(&r.body);
    let odd = r.body.clone();
    let unicode = json!({"title": "İstanbul ΟΔΟΣ 🚀 \u{202e}rtl\u{200b}zw", "tags": ["ＦＵＬＬ"]});
    let r = p.post(unicode).await;
    assert_eq!(r.status, 201, "{}", r.body);
    p.expect_row(&r.body);
    let unicode = r.body.clone();
    let cases: [(&str, &[&Value]); 20] = [
        (")", &[&odd]),
        (") OR :q", &[&odd]),
        (":q", &[&odd]),
        ("#PK", &[&odd]),
        ("user#bob", &[&odd]),
        ("Bob's secret", &[]),
        ("secret", &[]),
        ("bob", &[&odd]),
        ("' OR '1'='1", &[]),
        ("\") OR attribute_exists(#pk) OR (\"", &[]),
        ("contains(#search_title, :q)", &[]),
        ("%", &[]),
        ("*", &[]),
        ("\\", &[]),
        ("i\u{307}stanbul οδοσ", &[&unicode]),
        ("ΟΔΟς 🚀", &[&unicode]),
        ("\u{202e}RTL\u{200b}", &[&unicode]),
        ("full", &[]),
        ("ｆｕｌｌ", &[&unicode]),
        ("\u{10ffff}", &[]),
    ];
    for (q, want) in cases {
        let r = p.get(&search(query_value(q))).await;
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        let want: Vec<&Value> = want.iter().map(|t| &t["id"]).collect();
        let got: Vec<&Value> = r.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["id"])
            .collect();
        assert_eq!(got, want, "{q}");
        assert!(!r.body.to_string().contains("Bob's secret"), "{q}");
    }
    // Percent-encoded invalid UTF-8 arrives as U+FFFD: text like any other.
    for q in ["%FF%FE", "%ED%A0%80", "%C0%AF"] {
        let r = p.get(&search(q.to_owned())).await;
        assert_eq!(
            (r.status.as_u16(), &r.body["tasks"]),
            (200, &json!([])),
            "{q}"
        );
    }
    // Bob's own search still finds only Bob's task.
    let r = p.api.get(&search("secret".into()), "bob").await;
    assert_eq!(r.body["tasks"], json!([p.bob]));
}

// ---------------------------------------------------------------------------
// The probe: one stack, the bookkeeping and the ways to send.
// ---------------------------------------------------------------------------

/// The stack, two users' tasks that nothing may change, and what the table
/// must hold.
struct Probe {
    api: Api,
    alice: Value,
    bob: Value,
    /// Sort keys of the task rows the table must hold.
    rows: BTreeSet<String>,
    /// Idempotency records the table must hold.
    keys: usize,
}

impl Probe {
    async fn start() -> Self {
        let api = Api::start(&FUNCTIONS).await;
        // One warm process each: a crash would show as a second cold start.
        for name in FUNCTIONS {
            api.stack.function(name).unwrap().prewarm().await.unwrap();
        }
        let alice = api
            .create(
                "alice",
                json!({"title":"Alice's task","description":"private","tags":["home"]}),
            )
            .await;
        let bob = api
            .create("bob", json!({"title":"Bob's secret","tags":["bob"]}))
            .await;
        let rows = [&alice, &bob].iter().map(|t| sort_key(t)).collect();
        Self {
            api,
            alice,
            bob,
            rows,
            keys: 0,
        }
    }

    fn alice_path(&self) -> String {
        item(&self.alice)
    }

    /// A task that was meant to be created.
    fn expect_row(&mut self, task: &Value) {
        assert!(self.rows.insert(sort_key(task)), "created twice: {task}");
    }

    /// Answers the gateway has given so far.
    fn gateway_answers(&self) -> usize {
        self.api.stack.responses.total()
    }

    /// After a group: only the expected rows exist, Alice's and Bob's tasks
    /// are unchanged, no 5xx, no crashed or restarted process.
    async fn settle(&self, group: &str) {
        let rows: BTreeSet<String> = self.sort_keys("TASK#").await.into_iter().collect();
        assert_eq!(rows, self.rows, "{group}: task rows");
        let keys = self.sort_keys("IDEMPOTENCY#").await.len();
        assert_eq!(keys, self.keys, "{group}: idempotency rows");
        let r = self.api.get(&item(&self.alice), "alice").await;
        assert_eq!(r.body, self.alice, "{group}: Alice's task changed");
        let r = self.api.get(&item(&self.bob), "bob").await;
        assert_eq!(r.body, self.bob, "{group}: Bob's task changed");
        let tally = &self.api.stack.responses;
        assert_eq!(
            tally.server_errors(),
            0,
            "{group}: 5xx answers: {:?}",
            tally.by_status()
        );
        for name in FUNCTIONS {
            let f = self.api.stack.function(name).unwrap();
            let exits: Vec<String> = f
                .logs()
                .into_iter()
                .filter(|l| l.contains("process exited") || l.contains("panicked"))
                .collect();
            assert!(exits.is_empty(), "{group}: {name}: {exits:?}");
            assert_eq!(f.cold_starts(), 1, "{group}: {name} was restarted");
            assert_eq!(f.pids().len(), 1, "{group}: {name} pids");
        }
    }

    /// Sort keys in the table starting with `prefix`.
    async fn sort_keys(&self, prefix: &str) -> Vec<String> {
        self.api
            .rows(prefix)
            .await
            .iter()
            .map(|r| r["sk"].as_s().unwrap().clone())
            .collect()
    }

    /// The stored row of a task.
    async fn row(
        &self,
        task: &Value,
    ) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
        let sk = sort_key(task);
        self.api
            .rows(&sk)
            .await
            .into_iter()
            .next()
            .expect("the task's row")
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    async fn post(&self, body: Value) -> Reply {
        self.send(Method::POST, TASKS, Some(body), &[]).await
    }

    /// PATCHes Alice's task.
    async fn patch(&self, body: Value) -> Reply {
        self.send(Method::PATCH, &self.alice_path(), Some(body), &[])
            .await
    }

    /// A JSON request as Alice (checked against the contract by `Api::send`).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let r = self
            .api
            .send(method, path, Some("alice"), body, headers)
            .await;
        check_headers(&r.headers);
        r
    }

    /// Raw bytes as an `application/json` body, as Alice.
    async fn json_bytes(&self, method: Method, path: &str, body: &[u8]) -> Reply {
        self.typed_bytes(method, path, Some("application/json"), body.to_vec())
            .await
    }

    /// Raw bytes with this Content-Type (`None`: no header), as Alice.
    async fn typed_bytes(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self
            .api
            .http
            .request(method.clone(), format!("{}{path}", self.api.stack.url))
            .bearer_auth(self.api.token("alice"))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let reply = decode(status, headers, &bytes);
        checked(method.as_str(), path, &reply);
        reply
    }

    /// A raw request as Alice: `extra` is inserted verbatim among the headers
    /// (each line with its own terminator).
    fn raw_request(&self, method: &str, target: &[u8], extra: &[u8], body: &[u8]) -> Vec<u8> {
        let auth = format!("Authorization: Bearer {}\r\n", self.api.token("alice"));
        let mut all = auth.into_bytes();
        all.extend_from_slice(extra);
        raw_request(method, target, &all, body)
    }

    /// Writes `request` on a fresh connection and reads the answer to EOF.
    async fn tcp(&self, request: &[u8]) -> TcpReply {
        let before = self.gateway_answers();
        let addr = self.api.stack.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "no answer within 30 s");
        let reached = self.gateway_answers() > before;
        let reply = parse_response(&buf);
        check_headers(&reply.headers);
        if reached {
            let (method, path) = request_line(request);
            checked(&method, &path, &reply);
        }
        TcpReply { reply, reached }
    }
}

/// An answer read off a raw connection.
struct TcpReply {
    reply: Reply,
    /// Whether the gateway answered it (otherwise the HTTP server refused the
    /// bytes before any routing).
    reached: bool,
}

impl TcpReply {
    /// The answer, which must have come from the gateway.
    fn reached(&self) -> &Reply {
        assert!(
            self.reached,
            "refused by the HTTP server: {} {}",
            self.reply.status, self.reply.body
        );
        &self.reply
    }

    /// The HTTP server's own refusal of bytes that are not HTTP.
    fn framing_error(&self, status: u16) {
        assert!(
            !self.reached,
            "reached the gateway: {} {}",
            self.reply.status, self.reply.body
        );
        assert_eq!(self.reply.status.as_u16(), status, "{}", self.reply.body);
        assert_eq!(self.reply.body, Value::Null);
    }
}

// ---------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------

fn item(task: &Value) -> String {
    format!("{TASKS}/{}", task["id"].as_str().unwrap())
}

fn sort_key(task: &Value) -> String {
    format!("TASK#{}", task["id"].as_str().unwrap())
}

fn message(r: &Reply) -> &str {
    r.body["error"]["message"].as_str().unwrap_or("")
}

/// Status and error code, in the envelope.
#[track_caller]
fn expect(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.body);
    assert_eq!(r.code(), code, "{what}: {}", r.body);
}

/// A 422 naming `field`.
#[track_caller]
fn expect_field(r: &Reply, field: &str, what: &str) {
    expect(r, 422, "validation_failed", what);
    assert_eq!(r.body["error"]["details"]["field"], field, "{what}");
}

/// No answer may carry a header made of request text, nor CORS for an
/// origin that is not allowed.
fn check_headers(headers: &HeaderMap) {
    for name in ["set-cookie", "x-injected", "x-note", "x-filler"] {
        assert!(headers.get(name).is_none(), "{name} in {headers:?}");
    }
    for value in headers.get_all("access-control-allow-origin") {
        assert!(
            ALLOWED_ORIGINS.iter().any(|o| value == o),
            "echoed origin {value:?}"
        );
    }
}

#[track_caller]
fn assert_no_cors(r: &Reply) {
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "{:?}",
        r.headers
    );
}

/// Every answer: a documented status and a body valid against the spec;
/// outside the spec, errors still use the envelope.
fn checked(method: &str, path: &str, r: &Reply) {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    let contract = CONTRACT.get_or_init(|| Contract::load().expect("openapi.yaml loads"));
    let status = r.status.as_u16();
    match contract.check(method, path, status, &r.body) {
        Ok(true) => {}
        Ok(false) if status >= 400 => assert!(
            r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
            "{method} {path} {status}: not an error envelope: {}",
            r.body
        ),
        Ok(false) => {}
        Err(e) => panic!("contract: {e}"),
    }
}

fn decode(status: StatusCode, headers: HeaderMap, bytes: &[u8]) -> Reply {
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(bytes)))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// `{"title":"t","description":"xxx…"}` of exactly `len` bytes.
fn sized_body(len: usize) -> Vec<u8> {
    let frame = br#"{"title":"t","description":""}"#;
    let mut body = frame[..frame.len() - 2].to_vec();
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// `json` followed by spaces up to exactly `len` bytes.
fn padded(json: &[u8], len: usize) -> Vec<u8> {
    let mut body = json.to_vec();
    body.resize(len, b' ');
    body
}

/// An HTTP/1.1 request, byte for byte: `extra` holds header lines with their
/// own terminators.
/// A raw request and its expected answer: method, target, extra header
/// lines, body, status, error code (empty for a 200) and a label.
type HeaderCase<'a> = (&'a str, &'a [u8], Vec<u8>, &'a [u8], u16, &'a str, &'a str);

fn raw_request(method: &str, target: &[u8], extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} ").into_bytes();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    req.extend_from_slice(extra);
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    req
}

/// Method and path of a raw request.
fn request_line(request: &[u8]) -> (String, String) {
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    )
}

/// Parses an HTTP/1.1 response (Content-Length or chunked body).
fn parse_response(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.trim().as_bytes()).unwrap(),
        );
    }
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        body = dechunk(&body);
    }
    decode(StatusCode::from_u16(status).unwrap(), headers, &body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}

//! The ChatKit contract: every event, JSON answer and request checked against
//! the official ChatKit server SDK's pydantic types (PyPI `openai-chatkit`,
//! pinned in `tests/tools/chatkit.txt`, in a venv under `.local/`).
//!
//! One validator process (`tests/tools/chatkit_contract.py`) per test
//! process, started on first use; each value is one line to it and one line
//! back. What counts as a failure is described in that script.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

use crate::{Result, repo_root};
use emulators::supervised::{install_once, pip_install};

const REQUIREMENTS: &str = "chatkit.txt";

/// The request types ck-py answers with a stream (`StreamingReq`).
const STREAMING: [&str; 6] = [
    "threads.create",
    "threads.add_user_message",
    "threads.add_client_tool_output",
    "threads.add_structured_input",
    "threads.retry_after_item",
    "threads.custom_action",
];

/// A server-sent event, as the SDK's `ThreadStreamEvent` union.
pub fn check_event(event: &Value) -> std::result::Result<(), String> {
    ask(&json!({ "kind": "event", "value": event }))
}

/// The JSON answer to a request of type `request_type` (`threads.list`, …),
/// as the type ck-py's server answers it with (`{}` for `threads.delete`,
/// `items.feedback` and `attachments.delete`).
pub fn check_answer(request_type: &str, answer: &Value) -> std::result::Result<(), String> {
    ask(&json!({ "kind": "answer", "request": request_type, "value": answer }))
}

/// A bare `Attachment`, as the SDK's type: what a direct upload
/// (`uploadStrategy: {type: "direct"}`) answers, and `attachments.create`
/// too. A direct upload's has no `upload_descriptor`: the file is there.
pub fn check_attachment(attachment: &Value) -> std::result::Result<(), String> {
    if attachment.get("upload_descriptor").is_some() {
        return Err(format!(
            "a direct upload's attachment has no upload_descriptor: {attachment}"
        ));
    }
    check_answer("attachments.create", attachment)
}

/// A whole HTTP answer of the direct upload URL: a 200 is a JSON
/// `Attachment` ([`check_attachment`]), anything else our
/// `{"error":{"code","message"}}` envelope.
pub fn check_upload_response(
    status: u16,
    content_type: Option<&str>,
    body: &str,
) -> std::result::Result<(), String> {
    if status == 200 && content_type != Some("application/json") {
        return Err(format!(
            "a direct upload answers JSON, not {content_type:?}"
        ));
    }
    let json: Value = serde_json::from_str(body)
        .map_err(|_| format!("upload {status}: the body is not JSON: {body}"))?;
    if status == 200 {
        return check_attachment(&json).map_err(|e| format!("upload answered {json}\n  {e}"));
    }
    if is_error_envelope(&json) {
        Ok(())
    } else {
        Err(format!("upload {status}: not an error envelope: {body}"))
    }
}

/// A request body, as the SDK's `ChatKitReq` union (what ck-py's server
/// parses).
pub fn check_request(body: &Value) -> std::result::Result<(), String> {
    ask(&json!({ "kind": "request", "value": body }))
}

/// A whole `text/event-stream` body: `data: <json>\n\n` frames only, each a
/// valid event.
pub fn check_stream(raw_sse_body: &str) -> std::result::Result<(), String> {
    if raw_sse_body.is_empty() {
        return Ok(());
    }
    let frames = raw_sse_body
        .strip_suffix("\n\n")
        .ok_or_else(|| format!("the stream does not end after a whole frame: {raw_sse_body:?}"))?;
    for (i, frame) in frames.split("\n\n").enumerate() {
        let data = frame
            .strip_prefix("data: ")
            .filter(|d| !d.contains('\n'))
            .ok_or_else(|| format!("event #{i} is not one `data: ` line: {frame:?}"))?;
        let event: Value = serde_json::from_str(data)
            .map_err(|e| format!("event #{i} is not JSON ({e}): {data}"))?;
        check_event(&event).map_err(|e| format!("event #{i} {data}\n  {e}"))?;
    }
    Ok(())
}

/// A whole HTTP answer of the ChatKit endpoint to a request of type
/// `request_type`: a 200 `text/event-stream` is a valid stream
/// ([`check_stream`]), any other 200 a valid JSON answer ([`check_answer`]),
/// and anything else our `{"error":{"code","message"}}` envelope.
pub fn check_response(
    request_type: &str,
    status: u16,
    content_type: Option<&str>,
    body: &str,
) -> std::result::Result<(), String> {
    let stream = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
    if status == 200 && stream {
        if !STREAMING.contains(&request_type) {
            return Err(format!(
                "{request_type} answers JSON in ck-py, not a stream"
            ));
        }
        return check_stream(body).map_err(|e| format!("{request_type}: {e}"));
    }
    let json: Value = serde_json::from_str(body)
        .map_err(|_| format!("{request_type} {status}: the body is not JSON: {body}"))?;
    if status == 200 {
        return check_answer(request_type, &json)
            .map_err(|e| format!("{request_type} answered {json}\n  {e}"));
    }
    if is_error_envelope(&json) {
        Ok(())
    } else {
        Err(format!(
            "{request_type} {status}: not an error envelope: {body}"
        ))
    }
}

/// The running validator.
struct Validator {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Set when an exchange failed half-way: the line protocol is out of step.
    broken: Option<String>,
}

fn ask(request: &Value) -> std::result::Result<(), String> {
    static VALIDATOR: OnceLock<std::result::Result<Mutex<Validator>, String>> = OnceLock::new();
    let validator = VALIDATOR
        .get_or_init(|| {
            Validator::start()
                .map(Mutex::new)
                .map_err(|e| format!("the ChatKit contract validator did not start: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let mut validator = validator.lock().unwrap_or_else(|p| p.into_inner());
    validator.exchange(request)
}

impl Validator {
    fn start() -> Result<Self> {
        let python = install()?;
        let script = repo_root().join("tests/tools/chatkit_contract.py");
        let mut child = Command::new(&python)
            .arg("-u")
            .arg(&script)
            .current_dir(repo_root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?);
        let mut validator = Self {
            _child: child,
            stdin,
            stdout,
            broken: None,
        };
        // It says when it is ready (or exits, which ends the line).
        let ready: Value = serde_json::from_str(&validator.read_line()?)?;
        let expected = pinned_version()?;
        if ready["ready"] != true || ready["chatkit"] != expected.as_str() {
            return Err(
                format!("expected openai-chatkit {expected}, the validator said {ready}").into(),
            );
        }
        Ok(validator)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("the validator exited (its stderr is above)".into());
        }
        Ok(line)
    }

    fn exchange(&mut self, request: &Value) -> std::result::Result<(), String> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        let answer = self.round_trip(request).map_err(|e| {
            let broken = format!("the ChatKit contract validator failed: {e}");
            self.broken = Some(broken.clone());
            broken
        })?;
        match answer["ok"].as_bool() {
            Some(true) => Ok(()),
            Some(false) => Err(answer["error"].as_str().unwrap_or("(no reason)").to_owned()),
            None => Err(format!("the validator answered {answer}")),
        }
    }

    fn round_trip(&mut self, request: &Value) -> Result<Value> {
        // Compact JSON holds no raw newline: one request, one line.
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()?;
        Ok(serde_json::from_str(&self.read_line()?)?)
    }
}

/// The venv's `python`, installing `tests/tools/chatkit.txt` into
/// `<repo>/.local/chatkit` when the pinned `openai-chatkit` is not there.
pub fn install() -> Result<PathBuf> {
    let local = repo_root().join(".local");
    let venv = local.join("chatkit");
    let python = venv.join("bin/python");
    let version = pinned_version()?;
    let found = || (python.is_file() && has_dist(&venv, &version)).then(|| python.clone());
    install_once(&local, "chatkit", found, || {
        pip_install(&venv, REQUIREMENTS)
    })
}

/// The `openai-chatkit` version `tests/tools/chatkit.txt` pins.
pub fn pinned_version() -> Result<String> {
    let path = repo_root().join("tests/tools").join(REQUIREMENTS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("openai-chatkit=="))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} pins no openai-chatkit==", path.display()).into())
}

/// Whether `venv` holds `openai-chatkit` `version` (its dist-info directory).
fn has_dist(venv: &Path, version: &str) -> bool {
    let dist = format!("openai_chatkit-{version}.dist-info");
    std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|python| python.path().join("site-packages").join(&dist).is_dir())
}

/// Whether `json` is exactly `{"error":{"code","message"}}` (strings).
fn is_error_envelope(json: &Value) -> bool {
    let error = &json["error"];
    json.as_object().is_some_and(|o| o.len() == 1)
        && error["code"].is_string()
        && error["message"].is_string()
}

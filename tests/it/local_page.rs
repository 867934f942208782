//! The local stack's development page (`GET /`, [`StackOptions::page`]) in a
//! real headless Chromium (Debian's `chromium` package), driven through the
//! DevTools protocol over its WebSocket: the page lists the dev user's
//! tasks, follows the gateway's change feed when the API or the assistant
//! changes them, says that OpenAI's CDN (the ChatKit component) is
//! unreachable from here, and its ChatKit `fetch` gives the bearer token to
//! the ChatKit endpoint and to no other URL. Also: a request whose path
//! holds bytes a browser would have encoded reaches the function and gets
//! its JSON error.
//!
//! Chromium is required: without it these tests fail, saying how to install
//! it (`.ci/run` does).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::Api;
use taskpilot_testkit::stack::StackOptions;

/// How long any one wait on the page may take: generous, the machine may be
/// busy building or running other tests.
const BOUND: Duration = Duration::from_secs(120);
/// Between two looks at the page.
const POLL: Duration = Duration::from_millis(200);

/// The user the page acts as.
const DEV_USER: &str = "dev-user";

// ---------------------------------------------------------------------------
// Chromium through the DevTools protocol.
// ---------------------------------------------------------------------------

/// The Chromium binary: `$CHROMIUM` if set, else `chromium` or
/// `chromium-browser` on the PATH; none is a failure that says what to do.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is needed for the local page's browser tests and is not installed: \
                 `apt-get install -y chromium` (Debian's package; .ci/run installs it), \
                 or set CHROMIUM to a Chromium binary"
            )
        })
}

/// A minimal WebSocket client (RFC 6455): text messages out (masked), text
/// messages in (reassembled), pings answered. Enough for the DevTools
/// protocol on 127.0.0.1.
struct WebSocket {
    stream: BufReader<TcpStream>,
}

impl WebSocket {
    async fn connect(url: &str) -> Self {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_at(rest.find('/').expect("a path"));
        let tcp = TcpStream::connect(host).await.expect("DevTools accepts");
        tcp.set_nodelay(true).unwrap();
        let mut stream = BufReader::new(tcp);
        let key =
            base64::engine::general_purpose::STANDARD.encode(ulid::Ulid::new().0.to_be_bytes());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut status = String::new();
        stream.read_line(&mut status).await.unwrap();
        assert!(status.starts_with("HTTP/1.1 101"), "handshake: {status}");
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Self { stream }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask: [u8; 4] = ulid::Ulid::new().0.to_be_bytes()[12..].try_into().unwrap();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn send(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes()).await;
    }

    /// The next text message.
    async fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.expect("a frame");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            if masked {
                self.stream.read_exact(&mut mask).await.unwrap();
            }
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).await.unwrap();
            if masked {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            match opcode {
                0x9 => self.send_frame(0xA, &payload).await,
                0xA => {}
                0x8 => panic!("DevTools closed the connection"),
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("UTF-8 text");
                    }
                }
            }
        }
    }
}

/// A headless Chromium and one page in it.
struct Browser {
    child: Child,
    devtools: WebSocket,
    next_id: u64,
    /// The page's flattened DevTools session.
    session: String,
    profile: PathBuf,
    /// Chromium's latest stderr lines, for failures.
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Browser {
    /// Starts Chromium and opens `url` in a new page.
    async fn open(url: &str) -> Self {
        let profile =
            std::env::temp_dir().join(format!("taskpilot-chromium-{}", ulid::Ulid::new()));
        let mut child = Command::new(chromium())
            .args([
                "--headless=new",
                // Tests run as root (CI): Chromium's sandbox refuses root.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("Chromium starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let ws = tokio::time::timeout(BOUND, async {
            while let Some(line) = lines.next_line().await.unwrap_or(None) {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    return Some(ws.trim().to_owned());
                }
                keep(&stderr, line);
            }
            None
        })
        .await;
        let Ok(Some(ws)) = ws else {
            panic!(
                "Chromium printed no DevTools address: {:?}",
                stderr.lock().unwrap()
            );
        };
        // Keep draining stderr, or Chromium blocks on a full pipe.
        let kept = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&kept, line);
            }
        });
        let mut browser = Self {
            child,
            devtools: WebSocket::connect(&ws).await,
            next_id: 0,
            session: String::new(),
            profile,
            stderr,
        };
        let target = browser
            .call("Target.createTarget", json!({ "url": url }))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// A DevTools command (on the page's session once attached) and its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.devtools.send(&command.to_string()).await;
        let answer = tokio::time::timeout(BOUND, async {
            loop {
                let message: Value = serde_json::from_str(&self.devtools.recv().await).unwrap();
                // Events (no id) are not needed here.
                if message["id"] == id {
                    return message;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within {BOUND:?}"));
        if let Some(error) = answer.get("error") {
            panic!("{method}: {error}");
        }
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page (awaiting a promise): its value,
    /// or the exception's description.
    async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        match result.get("exceptionDetails") {
            Some(details) => Err(details["exception"]["description"]
                .as_str()
                .map_or_else(|| details.to_string(), str::to_owned)),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` until it gives a value that is not `null`,
    /// `false` or `undefined` (exceptions count as not yet), within
    /// [`BOUND`]; fails with `what` and the page's text.
    async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let started = Instant::now();
        let mut last = Ok(Value::Null);
        while started.elapsed() < BOUND {
            last = self.eval(expression).await;
            if let Ok(value) = &last
                && !matches!(value, Value::Null | Value::Bool(false))
            {
                return value.clone();
            }
            tokio::time::sleep(POLL).await;
        }
        let text = self.eval("document.body.innerText").await;
        panic!(
            "waited {BOUND:?} for {what}: last {last:?}\npage text: {text:?}\nchromium: {:?}",
            self.stderr.lock().unwrap()
        );
    }

    /// Closes Chromium and waits for it to exit.
    async fn close(mut self) {
        self.session.clear();
        self.next_id += 1;
        let command = json!({ "id": self.next_id, "method": "Browser.close" });
        self.devtools.send(&command.to_string()).await;
        if tokio::time::timeout(BOUND, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn keep(lines: &Mutex<VecDeque<String>>, line: String) {
    let mut lines = lines.lock().unwrap();
    if lines.len() == 50 {
        lines.pop_front();
    }
    lines.push_back(line);
}

// ---------------------------------------------------------------------------
// A server that records what reaches it (another origin than the page's).
// ---------------------------------------------------------------------------

/// One request as it arrived: method, path and query, headers (lowercase).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answers everything with 200 and CORS that lets any origin send any
/// header, `Authorization` included (so a wrongly added token would
/// arrive, not be stopped by a preflight), and records each request.
async fn capture_server() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    emulators::http_server::serve(listener, move |req, _peer| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(Seen {
                method: req.method().to_string(),
                target: req.uri().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            });
            let mut resp = hyper::Response::new(emulators::http_server::full("ok"));
            let headers = resp.headers_mut();
            for (name, value) in [
                ("access-control-allow-origin", "*"),
                ("access-control-allow-methods", "GET, POST, PUT"),
                (
                    "access-control-allow-headers",
                    "authorization, content-type, x-timezone",
                ),
            ] {
                headers.insert(name, hyper::header::HeaderValue::from_static(value));
            }
            resp
        }
    });
    (addr, seen)
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// A JavaScript string literal.
fn js(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// The page's task items: `[id, title, completed]` each.
const ITEMS: &str = "[...document.querySelectorAll('#tasks li.task')].map(li => \
     [li.dataset.id, li.querySelector('.title').textContent, li.dataset.completed === 'true'])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_page_shows_the_tasks_follows_changes_and_scopes_the_chatkit_token() {
    let chromium_binary = chromium(); // before anything starts: fail fast when missing
    assert!(chromium_binary.is_file(), "{}", chromium_binary.display());
    let api = Api::start_with(StackOptions {
        functions: Some(vec!["tasks".into(), "chatkit".into()]),
        page: true,
        ..StackOptions::default()
    })
    .await;
    let first = api
        .create(DEV_USER, json!({"title": "Water the plants"}))
        .await;
    // Another user's task is not the page's.
    api.create("someone-else", json!({"title": "Not mine"}))
        .await;

    let mut page = Browser::open(&format!("{}/", api.stack.url)).await;

    // The list, as the dev user.
    let items = page
        .wait_for(
            "the first task listed",
            &format!("(() => {{ const items = {ITEMS}; return items.length ? items : null; }})()"),
        )
        .await;
    assert_eq!(items, json!([[first["id"], "Water the plants", false]]));
    page.wait_for(
        "the change feed to be live",
        "document.getElementById('feed-status').dataset.state === 'live'",
    )
    .await;

    // OpenAI's CDN is unreachable from these machines: the page says so,
    // and the list works regardless.
    let said = page
        .wait_for(
            "the page to say the CDN is unreachable",
            "(() => { const s = document.getElementById('chatkit-status'); \
               return s.dataset.state === 'unreachable' && s.textContent; })()",
        )
        .await;
    let said = said.as_str().unwrap();
    assert!(said.contains("unreachable"), "{said}");
    assert!(said.contains("cdn.platform.openai.com"), "{said}");

    // A task created through the API appears; one completed is marked done.
    let second = api
        .create(
            DEV_USER,
            json!({"title": "Call the plumber", "due_date": "2031-05-06"}),
        )
        .await;
    let second_id = second["id"].as_str().unwrap();
    page.wait_for(
        "the created task listed",
        &format!("{ITEMS}.some(([id]) => id === {})", js(second_id)),
    )
    .await;
    let complete = format!("/api/v1/tasks/{second_id}/complete");
    let r = api
        .send(reqwest::Method::POST, &complete, Some(DEV_USER), None, &[])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    page.wait_for(
        "the completed task marked done",
        &format!(
            "{ITEMS}.some(([id, , done]) => id === {} && done)",
            js(second_id)
        ),
    )
    .await;
    let r = api
        .delete(
            &format!("/api/v1/tasks/{}", first["id"].as_str().unwrap()),
            DEV_USER,
        )
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    let items = page
        .wait_for(
            "the deleted task gone",
            &format!("(() => {{ const items = {ITEMS}; return items.length === 1 && items; }})()"),
        )
        .await;
    assert_eq!(items, json!([[second_id, "Call the plumber", true]]));

    // The ChatKit fetch: the token goes to the ChatKit endpoint only.
    let chatkit_url = page.eval("window.taskpilot.chatkitUrl").await.unwrap();
    assert_eq!(
        chatkit_url,
        json!(format!("{}/api/v1/chatkit", api.stack.url))
    );
    let chatkit_url = chatkit_url.as_str().unwrap().to_owned();
    let tasks_url = format!("{}/api/v1/tasks", api.stack.url);
    let scoped = page
        .eval(&format!(
            "[{ck}, {ck} + '/attachments', {ck} + '?x=1', {ck} + 'x', {ck} + '-usage', {tasks}, \
              'http://127.0.0.2:1/api/v1/chatkit'].map(u => window.taskpilot.isChatKitUrl(u))",
            ck = js(&chatkit_url),
            tasks = js(&tasks_url),
        ))
        .await
        .unwrap();
    assert_eq!(
        scoped,
        json!([true, true, true, false, false, false, false])
    );

    // To the ChatKit endpoint: authorized (a user's JWT is accepted there),
    // and a message whose tool adds a task refreshes the list once its
    // stream ends (the stub model answers unscripted).
    let create = json!({"type": "threads.create", "params": {"input": {
        "content": [{"type": "input_text", "text": "add buy oat milk tomorrow"}],
        "attachments": [], "inference_options": {}}}});
    let answer = page
        .eval(&format!(
            "window.taskpilot.chatkitFetch({url}, {{ method: 'POST', \
               headers: {{ 'Content-Type': 'application/json' }}, body: {body} }})\
             .then(async r => [r.status, await r.text()])",
            url = js(&chatkit_url),
            body = js(&create.to_string()),
        ))
        .await
        .unwrap();
    assert_eq!(answer[0], 200, "{answer}");
    assert!(
        answer[1].as_str().unwrap().contains("client_effect"),
        "{answer}"
    );
    page.wait_for(
        "the assistant's task listed",
        &format!("{ITEMS}.some(([, title]) => title === 'buy oat milk')"),
    )
    .await;

    // To the page's own origin, another path: no token (the tasks API says 401).
    let status = page
        .eval(&format!(
            "window.taskpilot.chatkitFetch({}).then(r => r.status)",
            js(&tasks_url)
        ))
        .await
        .unwrap();
    assert_eq!(status, 401);

    // To another origin (as a presigned S3 upload): nothing added, whether
    // the input is a URL string or a Request.
    let (capture, seen) = capture_server().await;
    let upload = format!("http://{capture}/bucket/attachments/a1?X-Amz-Signature=abc");
    let statuses = page
        .eval(&format!(
            "Promise.all([\
               window.taskpilot.chatkitFetch({u}, {{ method: 'PUT', headers: {{ 'Content-Type': 'image/png' }}, body: 'png' }}),\
               window.taskpilot.chatkitFetch(new Request({u} + '&r=1', {{ method: 'POST', body: 'x' }})),\
             ]).then(rs => rs.map(r => r.status))",
            u = js(&upload)
        ))
        .await
        .unwrap();
    assert_eq!(statuses, json!([200, 200]));
    let seen = seen.lock().unwrap().clone();
    let put = seen
        .iter()
        .find(|s| s.method == "PUT")
        .unwrap_or_else(|| panic!("no PUT arrived: {seen:?}"));
    assert_eq!(put.target, "/bucket/attachments/a1?X-Amz-Signature=abc");
    assert_eq!(put.header("content-type"), Some("image/png"));
    assert!(seen.iter().any(|s| s.method == "POST"), "{seen:?}");
    for request in &seen {
        assert_eq!(request.header("authorization"), None, "{request:?}");
        assert_eq!(request.header("x-timezone"), None, "{request:?}");
        let asked = request
            .header("access-control-request-headers")
            .unwrap_or_default();
        assert!(!asked.contains("authorization"), "{request:?}");
    }

    page.close().await;
}

/// Writes `request` on a fresh connection and reads the answer to EOF:
/// status and JSON body.
async fn raw(addr: &str, request: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {text}"));
    (status, body)
}

#[tokio::test]
async fn a_path_with_bytes_a_browser_encodes_gets_the_functions_json_error() {
    let api = Api::start(&["tasks"]).await;
    let addr = api.stack.url.trim_start_matches("http://").to_owned();
    let token = api.token(DEV_USER);
    for (method, target, auth, status, code) in [
        // As in a README example pasted without its id.
        (
            "POST",
            "/api/v1/tasks/<id>/complete",
            true,
            404,
            "not_found",
        ),
        ("GET", "/api/v1/tasks/<id>", true, 404, "not_found"),
        ("DELETE", "/api/v1/tasks/{id}", true, 404, "not_found"),
        ("GET", "/api/v1/tasks/`id`", false, 401, "unauthorized"),
    ] {
        let auth = if auth {
            format!("Authorization: Bearer {token}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (got, body) = raw(&addr, &request).await;
        assert_eq!(got, status, "{method} {target}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {target}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {target}: {body}"
        );
    }
}

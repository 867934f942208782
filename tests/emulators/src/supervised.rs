//! Emulator processes that cannot outlive the harness, and one-time installs.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// A background service started through `sh`: it stops when dropped, when the
/// harness exits for any reason (the wrapper watches our stdin pipe) and on
/// Ctrl-C (the wrapper traps it; background jobs would ignore it). Either way
/// the service gets SIGTERM and the wrapper waits for it to exit, so a
/// service that saves on shutdown (DynamoDB Local on disk) finishes first.
pub struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Supervised {
    /// Runs `command` (a shell command line, `$1`… from `args`) in `dir`.
    pub fn spawn(command: &str, args: &[&str], dir: &Path) -> Result<Self> {
        let script = format!(
            "{command} >/dev/null 2>&1 & pid=$!; \
             trap 'kill $pid 2>/dev/null; wait $pid; exit 0' INT TERM HUP; \
             cat >/dev/null; kill $pid 2>/dev/null; wait $pid"
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, "sh"])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        Ok(Self {
            child,
            stdin: Some(stdin),
        })
    }

    /// Waits until `port` accepts connections.
    pub fn wait_for_port(&self, port: u16, what: &str) -> Result<()> {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{what} did not start within 30 s").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper stop the service and exit.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs `install` once across concurrent processes unless `installed()` already
/// finds the thing, and returns what `installed()` finds afterwards.
pub fn install_once(
    local: &Path,
    what: &str,
    installed: impl Fn() -> Option<PathBuf>,
    install: impl FnOnce() -> Result<()>,
) -> Result<PathBuf> {
    if let Some(found) = installed() {
        return Ok(found);
    }
    std::fs::create_dir_all(local)?;
    let _lock = InstallLock::acquire(&local.join(format!(".{what}.lock")))?;
    if let Some(found) = installed() {
        return Ok(found);
    }
    eprintln!("installing {what} into {} ...", local.display());
    install()?;
    installed().ok_or_else(|| format!("{what} is still missing after installing it").into())
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
                Err(_) if started.elapsed() < Duration::from_secs(300) => {
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

/// Runs a command and fails with its stderr when it fails.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)).into())
    }
}

/// Creates `venv` and installs the pinned requirements `tests/tools/<file>` into it.
pub fn pip_install(venv: &Path, requirements: &str) -> Result<()> {
    run(
        Command::new("python3").args(["-m", "venv"]).arg(venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(
                crate::workspace_root()
                    .join("tests/tools")
                    .join(requirements),
            ),
        &format!("pip install -r tests/tools/{requirements}"),
    )
}

/// A tool from a pinned venv `.local/<name>` (requirements `tests/tools/<file>`),
/// installed on first use; its path.
pub fn venv_tool(name: &str, requirements: &str, tool: &str) -> Result<std::path::PathBuf> {
    let local = crate::workspace_root().join(".local");
    let venv = local.join(name);
    let bin = venv.join("bin").join(tool);
    install_once(
        &local,
        name,
        || bin.is_file().then(|| bin.clone()),
        || pip_install(&venv, requirements),
    )
}

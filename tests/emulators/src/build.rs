//! Building the function binaries the harness runs.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::{Result, workspace_root};

/// Cargo profile to build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `target/debug`
    Dev,
    /// `target/release`
    Release,
}

/// The target directory cargo uses for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the named binaries once per process and returns their paths.
pub fn binaries(names: &[&str], profile: Profile) -> Result<Vec<PathBuf>> {
    static BUILT: Mutex<Vec<(String, Profile)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !built.iter().any(|(b, p)| b == n && *p == profile))
        .collect();
    if !missing.is_empty() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .arg("build")
            .arg("--quiet");
        if profile == Profile::Release {
            cmd.arg("--release");
        }
        for name in &missing {
            cmd.args(["--bin", name]);
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err(format!("cargo build of {missing:?} failed: {status}").into());
        }
        built.extend(missing.iter().map(|n| ((*n).to_owned(), profile)));
    }
    let dir = target_dir().join(match profile {
        Profile::Dev => "debug",
        Profile::Release => "release",
    });
    Ok(names.iter().map(|n| dir.join(n)).collect())
}

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
        let mut cmd = cargo();
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

/// `cargo` (the one running this process, if any) without the variables cargo
/// sets for the crate it runs (`cargo run`, `cargo test`). A nested build must
/// not inherit them: a build script that reads one (ring's reads
/// `CARGO_MANIFEST_DIR`) would see it change between the tests, the local
/// stack and a plain `cargo build`, and each would rebuild ring and everything
/// above it (rustls, the AWS SDK, the functions) for the other.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    without_crate_env(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment what cargo sets for a running crate (see
/// [`cargo`]); for any tool that runs cargo in turn (cargo-lambda, `sam build`).
pub fn without_crate_env(cmd: &mut Command) -> &mut Command {
    const SET_FOR_CRATES: [&str; 8] = [
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SET_FOR_CRATES.contains(&name)
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

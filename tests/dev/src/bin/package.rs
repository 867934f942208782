//! `package`: builds the arm64 release zips Lambda runs and prints their sizes.
//!
//! Installs its tools into `.local/` first (cargo-lambda and zig from PyPI, the
//! aarch64 Rust target). With `--sam` it then runs `sam build`, the way a
//! deploy does (finding every binary already built), and lists the bootstraps.

use std::path::Path;
use std::process::Command;

use emulators::supervised::{run, venv_tool};
use emulators::template::Template;
use taskpilot_testkit::{Result, repo_root};

const USAGE: &str = "usage: package [--sam]";
const TARGET: &str = "aarch64-unknown-linux-gnu";

fn main() -> Result<()> {
    let sam = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--sam") => true,
        Some(_) => return Err(USAGE.into()),
    };
    let root = repo_root();
    let lambda_bin = venv_tool("cargo-lambda", "cargo-lambda.txt", "cargo-lambda")?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()?;
    if !String::from_utf8_lossy(&installed.stdout).contains(TARGET) {
        run(
            Command::new("rustup").args(["target", "add", TARGET]),
            "rustup target add",
        )?;
    }
    // cargo finds `cargo-lambda` and cargo-lambda finds zig on PATH.
    let path = format!(
        "{}:{}",
        lambda_bin
            .parent()
            .map(Path::display)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let binaries: Vec<String> = Template::load()?
        .functions()
        .into_iter()
        .map(|f| f.binary)
        .collect();

    let out_dir = root.join("dist/arm64");
    // With --sam, SAM CLI is installed while cargo builds.
    let sam_install = sam.then(|| std::thread::spawn(|| venv_tool("sam", "sam.txt", "sam")));
    // One `cargo lambda build` per binary, exactly as `sam build` runs it: a
    // build of several binaries at once compiles the dependencies differently
    // (object code besides LTO bitcode), so SAM would compile them all again.
    for b in &binaries {
        let status = emulators::build::cargo()
            .current_dir(&root)
            .env("PATH", &path)
            .args(["lambda", "build", "--release", "--arm64", "--bin", b])
            .args(["--output-format", "zip", "--lambda-dir"])
            .arg(&out_dir)
            .status()?;
        if !status.success() {
            return Err(format!("cargo lambda build --bin {b} failed: {status}").into());
        }
    }
    println!("\narm64 release packages in {}:", out_dir.display());
    println!("{:<12} {:>12} {:>14}", "function", "zip", "bootstrap");
    let target = root.join("target").join(TARGET).join("release");
    for b in &binaries {
        let zip = out_dir.join(b).join("bootstrap.zip");
        println!(
            "{:<12} {:>12} {:>14}",
            b,
            human(size(&zip)),
            human(size(&target.join(b)))
        );
    }
    if let Some(install) = sam_install {
        let sam_bin = install
            .join()
            .map_err(|_| "installing SAM CLI panicked")??;
        sam_build(&sam_bin, &root, &path)?;
    }
    Ok(())
}

/// `sam build` after the cargo builds above: SAM's per-function
/// `cargo lambda build --release --arm64 --bin <name>` calls then find every
/// binary up to date.
/// samconfig.toml sets `cached = false`: SAM's own cache would hash the whole
/// repository (target/ and .local/ included) and never hit; cargo's is the cache.
fn sam_build(sam_bin: &Path, root: &Path, path: &str) -> Result<()> {
    let status = emulators::build::without_crate_env(&mut Command::new(sam_bin))
        .arg("build")
        .current_dir(root)
        .env("PATH", path)
        .env("SAM_CLI_TELEMETRY", "0")
        .status()?;
    if !status.success() {
        return Err(format!("sam build failed: {status}").into());
    }
    println!("\n{:<20} {:>12}", "function", "bootstrap");
    for dir in std::fs::read_dir(root.join(".aws-sam/build"))?.flatten() {
        let bootstrap = dir.path().join("bootstrap");
        if bootstrap.is_file() {
            println!(
                "{:<20} {:>12}",
                dir.file_name().to_string_lossy(),
                human(size(&bootstrap))
            );
        }
    }
    Ok(())
}

fn size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn human(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("{:.2} MB", b as f64 / 1_048_576.0),
        None => "missing".into(),
    }
}

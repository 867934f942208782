//! Building the function binaries the harness runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
///
/// Prints one line to stderr while cargo runs (`building tasks, health (cargo
/// build) ... built in 12.3 s`): a first build takes minutes. The compiler's
/// warnings follow the line; on failure, its errors.
pub fn binaries(names: &[&str], profile: Profile) -> Result<Vec<PathBuf>> {
    static BUILT: Mutex<Vec<(String, Profile)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !built.iter().any(|(b, p)| b == n && *p == profile))
        .collect();
    if !missing.is_empty() {
        // The line is finished when cargo is done, so it stays one line.
        eprint!("{} ... ", describe(&missing, profile));
        match rebuild(&missing, profile) {
            Ok(done) => {
                eprintln!("built in {:.1} s", done.elapsed.as_secs_f64());
                eprint!("{}", done.diagnostics);
            }
            Err(failed) => {
                eprintln!("failed after {:.1} s", failed.elapsed.as_secs_f64());
                eprint!("{}", failed.diagnostics);
                return Err(format!("cargo build of {missing:?} failed").into());
            }
        }
        built.extend(missing.iter().map(|n| ((*n).to_owned(), profile)));
    }
    Ok(names.iter().map(|n| binary_path(n, profile)).collect())
}

/// `building tasks, health (cargo build --release)`.
fn describe(names: &[&str], profile: Profile) -> String {
    let flag = match profile {
        Profile::Dev => "",
        Profile::Release => " --release",
    };
    format!("building {} (cargo build{flag})", names.join(", "))
}

/// Where cargo puts the binary `name` built with `profile` (it rewrites the
/// file on each build that changes it: run a copy of it where a build may run
/// meanwhile, see [`Snapshots`]).
pub fn binary_path(name: &str, profile: Profile) -> PathBuf {
    target_dir()
        .join(match profile {
            Profile::Dev => "debug",
            Profile::Release => "release",
        })
        .join(name)
}

/// A build that succeeded ([`rebuild`]).
#[derive(Debug, Clone)]
pub struct Built {
    /// The binaries, in the order they were named (see [`binary_path`]).
    pub paths: Vec<PathBuf>,
    /// What the compiler printed (warnings), in colour when stderr is a
    /// terminal; empty for a clean build.
    pub diagnostics: String,
    /// How long cargo ran.
    pub elapsed: Duration,
}

/// A build that failed ([`rebuild`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cargo build failed after {elapsed:?}")]
pub struct BuildFailed {
    /// The compiler's errors as it printed them (in colour when stderr is a
    /// terminal), or why cargo could not run.
    pub diagnostics: String,
    /// How long cargo ran.
    pub elapsed: Duration,
}

/// Builds the named binaries now (cargo runs every time: it decides what is
/// stale), capturing what the compiler prints instead of letting it through.
pub fn rebuild(names: &[&str], profile: Profile) -> std::result::Result<Built, BuildFailed> {
    use std::io::IsTerminal;
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "--color"])
        .arg(if std::io::stderr().is_terminal() {
            "always"
        } else {
            "never"
        });
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    for name in names {
        cmd.args(["--bin", name]);
    }
    let output = cmd.output().map_err(|e| BuildFailed {
        diagnostics: format!("cannot run cargo: {e}\n"),
        elapsed: started.elapsed(),
    })?;
    let mut diagnostics = String::from_utf8_lossy(&output.stderr).into_owned();
    diagnostics.push_str(&String::from_utf8_lossy(&output.stdout));
    let elapsed = started.elapsed();
    if !output.status.success() {
        if diagnostics.trim().is_empty() {
            diagnostics = format!("cargo build exited with {}\n", output.status);
        }
        return Err(BuildFailed {
            diagnostics,
            elapsed,
        });
    }
    Ok(Built {
        paths: names.iter().map(|n| binary_path(n, profile)).collect(),
        diagnostics,
        elapsed,
    })
}

/// What identifies a version of a file without reading it: length,
/// modification time and (on Unix) inode; cargo relinks a changed binary
/// into a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

/// The copy of one binary last taken.
#[derive(Debug)]
struct Snapshot {
    path: PathBuf,
    /// The built file's stamp when copied (or last found identical).
    source: Stamp,
    generation: u64,
}

/// Versioned copies of built binaries, one folder per process: a function
/// runs a copy that nothing rewrites (cargo replaces its output while it
/// builds), and a new copy is taken only when the built binary changed. The
/// folder is removed when this is dropped.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    last: std::collections::BTreeMap<String, Snapshot>,
    /// The copy before the last, kept while a process may still be starting
    /// from it; removed when the next copy is taken.
    previous: std::collections::BTreeMap<String, PathBuf>,
}

impl Snapshots {
    /// Copies go to `<parent>/<this process's id>/<name>-<generation>`;
    /// folders left there by processes that no longer run are removed.
    pub fn new(parent: &Path) -> Result<Self> {
        std::fs::create_dir_all(parent)?;
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                let gone = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|pid| !process_runs(pid));
                if gone {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = parent.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            last: Default::default(),
            previous: Default::default(),
        })
    }

    /// The folder the copies are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh copy of `built` (the binary `name`) when it differs from the
    /// last copy taken of `name` (or none was), else `None`. The copy is
    /// complete before its path is returned.
    pub fn take(&mut self, name: &str, built: &Path) -> Result<Option<PathBuf>> {
        let stamp =
            Stamp::of(built).map_err(|e| format!("cannot read {}: {e}", built.display()))?;
        if let Some(last) = self.last.get_mut(name) {
            if last.source == stamp {
                return Ok(None);
            }
            // Relinked, perhaps into the same bytes (a comment changed).
            if same_contents(built, &last.path)? {
                last.source = stamp;
                return Ok(None);
            }
        }
        let generation = self.last.get(name).map_or(1, |l| l.generation + 1);
        let path = self.dir.join(format!("{name}-{generation}"));
        let partial = self.dir.join(format!(".{name}-{generation}.partial"));
        std::fs::copy(built, &partial)
            .and_then(|_| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), path.display()))?;
        // The built file may have been rewritten during the copy (a build
        // running meanwhile): then the next look copies it again.
        let source = match Stamp::of(built) {
            Ok(after) if after == stamp => stamp,
            _ => Stamp {
                len: u64::MAX,
                modified: None,
                inode: u64::MAX,
            },
        };
        let replaced = self.last.insert(
            name.to_owned(),
            Snapshot {
                path: path.clone(),
                source,
                generation,
            },
        );
        if let Some(replaced) = replaced
            && let Some(older) = self.previous.insert(name.to_owned(), replaced.path)
        {
            // Unlinking a running binary is fine; no process starts from it any more.
            let _ = std::fs::remove_file(older);
        }
        Ok(Some(path))
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process with this id runs (on Linux; elsewhere assumed).
fn process_runs(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Whether two files hold the same bytes (stops at the first difference).
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> crate::scratch::ScratchDir {
        crate::scratch::ScratchDir::new("emulators-build").unwrap()
    }

    /// Writes `bytes` as a new file at `path` (as a linker does: a new inode).
    fn relink(path: &Path, bytes: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_copy_is_taken_only_when_the_binary_changed_and_old_copies_are_cleaned_up() {
        let scratch = scratch();
        let root = scratch.path();
        let built = root.join("health");
        relink(&built, "one");
        let parent = root.join("run");
        // A folder of a process that is gone is removed.
        let stale = parent.join("4294967295");
        std::fs::create_dir_all(&stale).unwrap();
        let mut snapshots = Snapshots::new(&parent).unwrap();
        assert_eq!(snapshots.dir(), parent.join(std::process::id().to_string()));
        #[cfg(target_os = "linux")]
        assert!(!stale.exists());

        let first = snapshots.take("health", &built).unwrap().unwrap();
        assert_eq!(first, snapshots.dir().join("health-1"));
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "one");
        assert_eq!(snapshots.take("health", &built).unwrap(), None);
        // Relinked into the same bytes: nothing to swap.
        relink(&built, "one");
        assert_eq!(snapshots.take("health", &built).unwrap(), None);

        relink(&built, "two");
        let second = snapshots.take("health", &built).unwrap().unwrap();
        assert_eq!(second, snapshots.dir().join("health-2"));
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "two");
        // The one before may still be starting a process: kept, until the next.
        assert!(first.exists());
        relink(&built, "three!");
        let third = snapshots.take("health", &built).unwrap().unwrap();
        assert!(!first.exists() && second.exists());
        assert_eq!(std::fs::read_to_string(&third).unwrap(), "three!");
        // Each binary has its own generations; no partial file is left.
        let other = root.join("tasks");
        relink(&other, "tasks");
        let tasks = snapshots.take("tasks", &other).unwrap().unwrap();
        assert_eq!(tasks, snapshots.dir().join("tasks-1"));
        let mut names: Vec<String> = std::fs::read_dir(snapshots.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["health-2", "health-3", "tasks-1"]);

        assert!(snapshots.take("sessions", &root.join("missing")).is_err());
        let dir = snapshots.dir().to_path_buf();
        drop(snapshots);
        assert!(!dir.exists());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn contents_are_compared_whole() {
        let scratch = scratch();
        let root = scratch.path();
        let (a, b) = (root.join("a"), root.join("b"));
        let big = "x".repeat(3 << 20);
        std::fs::write(&a, format!("{big}1")).unwrap();
        std::fs::write(&b, format!("{big}1")).unwrap();
        assert!(same_contents(&a, &b).unwrap());
        std::fs::write(&b, format!("{big}2")).unwrap();
        assert!(!same_contents(&a, &b).unwrap());
        std::fs::write(&b, &big).unwrap();
        assert!(!same_contents(&a, &b).unwrap());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_failed_build_returns_what_cargo_printed() {
        let failed = rebuild(&["no-such-binary"], Profile::Dev).unwrap_err();
        assert!(
            failed.diagnostics.contains("no-such-binary"),
            "{}",
            failed.diagnostics
        );
    }

    #[test]
    fn a_build_names_its_binaries_and_the_line_names_the_command() {
        let built = rebuild(&["health"], Profile::Dev).unwrap();
        assert_eq!(built.paths, [binary_path("health", Profile::Dev)]);
        assert!(built.paths[0].is_file());
        assert_eq!(
            describe(&["tasks", "health"], Profile::Release),
            "building tasks, health (cargo build --release)"
        );
        assert_eq!(
            describe(&["health"], Profile::Dev),
            "building health (cargo build)"
        );
    }
}

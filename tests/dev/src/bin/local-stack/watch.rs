//! `local-stack --watch`: rebuilds the functions a change affects and swaps
//! them in while the stack runs.
//!
//! It polls the modification times of the functions' sources (`functions/`,
//! `shared/`, the workspace's `Cargo.toml` and `Cargo.lock`; not `target/`,
//! hidden folders or editor temp files), waits for a burst of saves to
//! settle, runs `cargo build` for every function binary (cargo rebuilds only
//! what the change touches) and swaps in, through
//! [`LambdaFunction::replace_binary`], each function whose binary changed.
//! The emulators, the table and the requests in flight are untouched; a
//! failed build prints the compiler's errors and the previous build keeps
//! serving.
//!
//! Each function runs a copy of its binary (in `.local/run/<pid>/`, see
//! [`Snapshots`]): cargo rewrites its own output while it builds, and a
//! process may start at any moment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use emulators::build::{self, Profile, Snapshots};
use emulators::runtime_api::LambdaFunction;

/// How often the sources are looked at while nothing changes.
const POLL: Duration = Duration::from_millis(250);
/// How often they are looked at while a burst of saves settles.
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// A burst of saves is over after this long without another...
const QUIET: Duration = Duration::from_millis(200);
/// ...or this long after it began (a checkout, a formatter over every file).
const LONGEST_BURST: Duration = Duration::from_secs(2);

/// The folders whose files are the functions' sources.
const SOURCE_DIRS: [&str; 2] = ["functions", "shared"];
/// The workspace's files that are sources too.
const SOURCE_FILES: [&str; 2] = ["Cargo.toml", "Cargo.lock"];

/// Every source file (relative to the workspace) with its length and
/// modification time.
type Sources = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

/// The sources as they were before the stack's build: [`Watch::start`]
/// compares with them first, so an edit saved while the stack started is
/// rebuilt at once.
pub struct Before(Sources);

impl Before {
    /// Notes the sources now.
    pub async fn scan() -> emulators::Result<Self> {
        Ok(Self(
            scan_in_background(&emulators::workspace_root()).await?,
        ))
    }
}

/// A watch that is set up: every function runs a copy of its binary.
pub struct Watch {
    root: PathBuf,
    profile: Profile,
    /// The sources as last seen.
    known: Sources,
    /// Taken out while copies are made on a blocking thread.
    snapshots: Option<Snapshots>,
    /// How long [`Watch::start`] took.
    setup: Duration,
}

impl Watch {
    /// Moves every function of `functions` (just built, from the sources
    /// `before`) to a copy of its binary, prewarmed; [`Watch::run`] then
    /// rebuilds on any change since `before`. Fails if that cannot be done
    /// (the copies' folder cannot be made, a copy fails).
    pub async fn start(
        before: Before,
        functions: &BTreeMap<String, LambdaFunction>,
        profile: Profile,
    ) -> emulators::Result<Self> {
        let started = Instant::now();
        let root = emulators::workspace_root();
        let known = before.0;
        let snapshots = Snapshots::new(&root.join(".local").join("run"))?;
        let binaries = functions
            .iter()
            .map(|(name, f)| (name.clone(), f.binary()))
            .collect();
        let (snapshots, copies) = copy_in_background(Some(snapshots), binaries).await?;
        for (name, copy) in copies {
            let copy = copy?.ok_or_else(|| format!("no copy of {name}'s binary was taken"))?;
            swap_in(functions, &name, copy).await;
        }
        Ok(Self {
            root,
            profile,
            known,
            snapshots: Some(snapshots),
            setup: started.elapsed(),
        })
    }

    /// `watching functions/, shared/, Cargo.toml, Cargo.lock (207 files): …`,
    /// for the banner.
    pub fn describe(&self) -> String {
        format!(
            "watching {} ({} files): a change rebuilds the functions it affects and swaps them \
             in ({:.1} s to set up; each function runs a copy of its binary, in {})",
            SOURCE_DIRS
                .iter()
                .map(|d| format!("{d}/"))
                .chain(SOURCE_FILES.iter().map(|f| (*f).to_owned()))
                .collect::<Vec<_>>()
                .join(", "),
            self.known.len(),
            self.setup.as_secs_f64(),
            self.snapshots
                .as_ref()
                .map_or(String::new(), |s| relative(&self.root, s.dir())),
        )
    }

    /// Watches until cancelled: after each burst of saves, rebuilds and
    /// swaps in the functions whose binary changed, printing what it did.
    /// Returns only if it cannot go on (a blocking task failed).
    pub async fn run(
        mut self,
        functions: &BTreeMap<String, LambdaFunction>,
    ) -> emulators::Result<()> {
        loop {
            tokio::time::sleep(POLL).await;
            let now = scan_in_background(&self.root).await?;
            let mut changed = changes(&self.known, &now);
            if changed.is_empty() {
                continue;
            }
            // Wait for the burst of saves to settle.
            let (first, mut last, mut latest) = (Instant::now(), Instant::now(), now);
            while !settled(first, last, Instant::now()) {
                tokio::time::sleep(SETTLE_POLL).await;
                let next = scan_in_background(&self.root).await?;
                let more = changes(&latest, &next);
                if !more.is_empty() {
                    last = Instant::now();
                    changed.extend(more);
                    changed.sort();
                    changed.dedup();
                    latest = next;
                }
            }
            // Saves during the build below are changes against this.
            self.known = latest;
            let trigger = trigger(&changed);
            eprintln!("change in {trigger} → building ...");

            let started = Instant::now();
            let built = match build_in_background(functions, self.profile).await? {
                Ok(built) => built,
                Err(failed) => {
                    eprint!("{}", failed.diagnostics);
                    eprintln!("{}", failed_line(&trigger, failed.elapsed));
                    continue;
                }
            };
            eprint!("{}", built.diagnostics);
            let binaries = functions.keys().cloned().zip(built.paths).collect();
            let (snapshots, copies) = copy_in_background(self.snapshots.take(), binaries).await?;
            self.snapshots = Some(snapshots);
            let mut outcome = Outcome::default();
            for (name, copy) in copies {
                match copy {
                    Ok(Some(copy)) => {
                        swap_in(functions, &name, copy).await;
                        outcome.swapped.push(name);
                    }
                    Ok(None) => outcome.unchanged.push(name),
                    Err(e) => outcome.failed.push((name, e.to_string())),
                }
            }
            eprintln!("{}", outcome.line(&trigger, started.elapsed()));
        }
    }
}

/// Runs `copy` from now on, and starts one process of it (a cold start now
/// rather than at the next request, and an init error shows at once).
async fn swap_in(functions: &BTreeMap<String, LambdaFunction>, name: &str, copy: PathBuf) {
    let Some(function) = functions.get(name) else {
        return;
    };
    function.replace_binary(copy).await;
    if let Err(e) = function.prewarm().await {
        eprintln!("cannot start {name}: {e}");
    }
}

async fn scan_in_background(root: &Path) -> emulators::Result<Sources> {
    let root = root.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || scan(&root)).await?)
}

/// `cargo build` of every function's binary, on a blocking thread.
async fn build_in_background(
    functions: &BTreeMap<String, LambdaFunction>,
    profile: Profile,
) -> emulators::Result<Result<build::Built, build::BuildFailed>> {
    let names: Vec<String> = functions.keys().cloned().collect();
    Ok(tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        build::rebuild(&names, profile)
    })
    .await?)
}

/// A copy of each binary that changed since its last copy (`None`: unchanged).
type Copies = Vec<(String, emulators::Result<Option<PathBuf>>)>;

/// Takes the copies on a blocking thread (binaries are tens of MB).
async fn copy_in_background(
    snapshots: Option<Snapshots>,
    binaries: Vec<(String, PathBuf)>,
) -> emulators::Result<(Snapshots, Copies)> {
    let mut snapshots = snapshots.ok_or("the copies of the binaries were lost")?;
    Ok(tokio::task::spawn_blocking(move || {
        let copies = binaries
            .into_iter()
            .map(|(name, built)| {
                let copy = snapshots.take(&name, &built);
                (name, copy)
            })
            .collect();
        (snapshots, copies)
    })
    .await?)
}

/// The source files under `root` (see [`counts`]); unreadable entries are
/// left out (a file being replaced shows at the next scan).
fn scan(root: &Path) -> Sources {
    let mut found = Sources::new();
    for file in SOURCE_FILES {
        record(root, Path::new(file), &mut found);
    }
    let mut pending: Vec<PathBuf> = SOURCE_DIRS.iter().map(PathBuf::from).collect();
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let rel = dir.join(entry.file_name());
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => {
                    if !skipped_dir(&entry.file_name().to_string_lossy()) {
                        pending.push(rel);
                    }
                }
                Ok(_) => record(root, &rel, &mut found),
                Err(_) => {}
            }
        }
    }
    found
}

fn record(root: &Path, rel: &Path, found: &mut Sources) {
    if !counts(rel) {
        return;
    }
    // Follows a symbolic link to the file it names.
    if let Ok(meta) = std::fs::metadata(root.join(rel))
        && meta.is_file()
    {
        found.insert(rel.to_path_buf(), (meta.len(), meta.modified().ok()));
    }
}

/// Whether a change to `rel` (relative to the workspace) can change a
/// function's binary: the workspace's `Cargo.toml` and `Cargo.lock`, and any
/// file under `functions/` or `shared/` but build output, hidden files and
/// folders, and editors' temporary files.
fn counts(rel: &Path) -> bool {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [file] => SOURCE_FILES.contains(&file.as_str()),
        [top, inner @ .., file] => {
            SOURCE_DIRS.contains(&top.as_str())
                && !inner.iter().any(|d| skipped_dir(d))
                && !editor_temp(file)
        }
        [] => false,
    }
}

/// Folders that hold no sources: build output, tools' caches, hidden ones.
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.') || matches!(name, "target" | "node_modules" | "__pycache__")
}

/// Files editors write beside the one being saved, and hidden files.
fn editor_temp(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913" // vim's check that it may write in the folder
        || [
            ".swp",
            ".swo",
            ".swx",
            ".tmp",
            ".bak",
            ".orig",
            ".rej",
            ".kate-swp",
            "___jb_tmp___",
            "___jb_old___",
        ]
        .iter()
        .any(|end| name.ends_with(end))
}

/// The files added, removed or modified from `before` to `after`, in order.
fn changes(before: &Sources, after: &Sources) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = after
        .iter()
        .filter(|(path, stamp)| before.get(*path) != Some(stamp))
        .map(|(path, _)| path.clone())
        .chain(before.keys().filter(|p| !after.contains_key(*p)).cloned())
        .collect();
    changed.sort();
    changed
}

/// Whether a burst of saves that began at `first`, last seen at `last`, is
/// over at `now`: quiet for [`QUIET`], or going on for [`LONGEST_BURST`].
fn settled(first: Instant, last: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last) >= QUIET
        || now.saturating_duration_since(first) >= LONGEST_BURST
}

/// `functions/health/src/main.rs`, or `functions/health/src/main.rs and 2 more files`.
fn trigger(changed: &[PathBuf]) -> String {
    let Some(first) = changed.first() else {
        return "no file".to_owned();
    };
    let first = first.to_string_lossy().replace('\\', "/");
    match changed.len() {
        1 => first,
        2 => format!("{first} and 1 more file"),
        n => format!("{first} and {} more files", n - 1),
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}

/// The line after a failed build (its errors printed above it).
fn failed_line(trigger: &str, elapsed: Duration) -> String {
    format!(
        "change in {trigger} → build failed in {}; the previous build keeps serving",
        seconds(elapsed)
    )
}

/// What a successful build did to each function.
#[derive(Debug, Default)]
struct Outcome {
    /// Binary changed, copied and swapped in.
    swapped: Vec<String>,
    /// Binary the same as the one running.
    unchanged: Vec<String>,
    /// Binary not copied (and why): the previous one keeps serving.
    failed: Vec<(String, String)>,
}

impl Outcome {
    /// `change in functions/health/src/main.rs → rebuilt health in 6.8 s,
    /// swapped in (chatkit, sessions, tasks unchanged)`.
    fn line(&self, trigger: &str, elapsed: Duration) -> String {
        let mut line = if self.swapped.is_empty() {
            format!(
                "change in {trigger} → built in {}, no function changed",
                seconds(elapsed)
            )
        } else {
            let mut line = format!(
                "change in {trigger} → rebuilt {} in {}, swapped in",
                self.swapped.join(", "),
                seconds(elapsed)
            );
            if !self.unchanged.is_empty() {
                line.push_str(&format!(" ({} unchanged)", self.unchanged.join(", ")));
            }
            line
        };
        for (name, why) in &self.failed {
            line.push_str(&format!(
                "; cannot swap in {name} ({why}): its previous build keeps serving"
            ));
        }
        line
    }
}

/// `path` relative to `root` when under it, with a trailing slash.
fn relative(root: &Path, path: &Path) -> String {
    let shown = path.strip_prefix(root).unwrap_or(path);
    format!("{}/", shown.display())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_the_functions_and_shared_crates_and_the_workspace_manifest() {
        for yes in [
            "functions/health/src/main.rs",
            "functions/health/Cargo.toml",
            "shared/store/src/table.rs",
            "shared/runtime/testdata/ca.pem",
            "shared/vendor/crc-fast/build.rs",
            "Cargo.toml",
            "Cargo.lock",
        ] {
            assert!(counts(Path::new(yes)), "{yes}");
        }
        for no in [
            "README.md",
            "template.yaml",
            "tests/src/stack.rs",
            "tests/dev/Cargo.toml",
            "target/debug/health",
            ".local/run/1/health-1",
            "functions/health/target/debug/health",
            "shared/store/node_modules/x/index.js",
            "shared/.git/HEAD",
            "functions/health/src/.main.rs.swp",
            "functions/health/src/main.rs.swp",
            "functions/health/src/main.rs~",
            "functions/health/src/#main.rs#",
            "functions/health/src/.#main.rs",
            "functions/health/src/4913",
            "functions/health/src/main.rs___jb_tmp___",
            "functions/health/src/main.rs.orig",
            "functions",
            "",
        ] {
            assert!(!counts(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn a_scan_finds_the_sources_and_a_change_is_a_file_added_removed_or_modified() {
        let root = emulators::workspace_root();
        let sources = scan(&root);
        assert!(sources.contains_key(Path::new("functions/health/src/main.rs")));
        assert!(sources.contains_key(Path::new("Cargo.lock")));
        assert!(sources.keys().all(|p| counts(p)));
        assert!(!sources.keys().any(|p| p.starts_with("target")));

        let at = |secs| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        let before: Sources = [
            (PathBuf::from("a.rs"), (1, at(1))),
            (PathBuf::from("b.rs"), (1, at(1))),
            (PathBuf::from("c.rs"), (1, at(1))),
        ]
        .into();
        assert!(changes(&before, &before).is_empty());
        let mut after = before.clone();
        after.remove(Path::new("a.rs"));
        after.insert("b.rs".into(), (1, at(2)));
        after.insert("d.rs".into(), (1, at(1)));
        assert_eq!(
            changes(&before, &after),
            ["a.rs", "b.rs", "d.rs"].map(PathBuf::from)
        );
        // Same time, new length (a save within the clock's resolution).
        let mut resized = before.clone();
        resized.insert("c.rs".into(), (2, at(1)));
        assert_eq!(changes(&before, &resized), [PathBuf::from("c.rs")]);
    }

    #[test]
    fn a_burst_of_saves_settles_when_quiet_or_after_the_longest_burst() {
        let first = Instant::now();
        let after = |ms| first + Duration::from_millis(ms);
        assert!(!settled(first, first, first));
        assert!(!settled(first, first, after(199)));
        assert!(settled(first, first, after(200)));
        // Saves keep coming: each one restarts the quiet period...
        assert!(!settled(first, after(1_500), after(1_600)));
        assert!(settled(first, after(1_500), after(1_700)));
        // ...up to the longest burst.
        assert!(!settled(first, after(1_950), after(1_999)));
        assert!(settled(first, after(1_950), after(2_000)));
        // A clock read before the last change is not quiet.
        assert!(!settled(after(10), after(20), first));
    }

    #[test]
    fn the_lines_name_the_change_what_was_rebuilt_and_what_kept_serving() {
        let one = [PathBuf::from("functions/health/src/main.rs")];
        assert_eq!(trigger(&one), "functions/health/src/main.rs");
        let three = [
            PathBuf::from("shared/http/src/serve.rs"),
            PathBuf::from("shared/http/src/cors.rs"),
            PathBuf::from("Cargo.lock"),
        ];
        assert_eq!(trigger(&three), "shared/http/src/serve.rs and 2 more files");
        assert_eq!(
            trigger(&three[..2]),
            "shared/http/src/serve.rs and 1 more file"
        );

        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let swapped = Outcome {
            swapped: names(&["health"]),
            unchanged: names(&["chatkit", "sessions", "tasks"]),
            failed: vec![],
        };
        assert_eq!(
            swapped.line(&trigger(&one), Duration::from_millis(6_840)),
            "change in functions/health/src/main.rs → rebuilt health in 6.8 s, swapped in \
             (chatkit, sessions, tasks unchanged)"
        );
        let all = Outcome {
            swapped: names(&["chatkit", "health"]),
            ..Outcome::default()
        };
        assert_eq!(
            all.line("Cargo.lock", Duration::from_secs(31)),
            "change in Cargo.lock → rebuilt chatkit, health in 31.0 s, swapped in"
        );
        let none = Outcome {
            unchanged: names(&["chatkit", "health"]),
            ..Outcome::default()
        };
        assert_eq!(
            none.line("functions/health/src/tests.rs", Duration::from_millis(450)),
            "change in functions/health/src/tests.rs → built in 0.5 s, no function changed"
        );
        let partly = Outcome {
            swapped: names(&["health"]),
            unchanged: vec![],
            failed: vec![("tasks".into(), "disk full".into())],
        };
        assert_eq!(
            partly.line("shared/x.rs", Duration::from_secs(2)),
            "change in shared/x.rs → rebuilt health in 2.0 s, swapped in; \
             cannot swap in tasks (disk full): its previous build keeps serving"
        );
        assert_eq!(
            failed_line("functions/health/src/main.rs", Duration::from_millis(2_120)),
            "change in functions/health/src/main.rs → build failed in 2.1 s; \
             the previous build keeps serving"
        );
        assert_eq!(
            relative(Path::new("/w"), Path::new("/w/.local/run/42")),
            ".local/run/42/"
        );
    }
}

//! What ships is what the tests run: the template, the workspace, the sample
//! events and `env.json` must agree.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use emulators::runtime_api::InvokeError;
use emulators::template::{Template, match_path};
use serde_json::Value;
use taskpilot_testkit::settings::NOT_IN_TEMPLATE;
use taskpilot_testkit::stack::{LocalStack, StackOptions};
use taskpilot_testkit::{events, repo_root};

#[test]
fn events_and_env_json_are_current() {
    let update = std::env::var("UPDATE_EVENTS").is_ok();
    let mut stale = Vec::new();
    let expected = events::expected_files().unwrap();
    for (path, contents) in &expected {
        if std::fs::read_to_string(path).ok().as_deref() != Some(contents.as_str()) {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, contents).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    // No leftovers from routes that no longer exist.
    let known: BTreeSet<&PathBuf> = expected.iter().map(|(p, _)| p).collect();
    for entry in std::fs::read_dir(events::dir()).unwrap() {
        let path = entry.unwrap().path();
        if !known.contains(&path) {
            if update {
                std::fs::remove_file(&path).unwrap();
            } else {
                stale.push(format!("{} (no such route)", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}\nregenerate with: UPDATE_EVENTS=1 cargo test -p taskpilot-testkit --test it deployment::"
    );
}

/// `cargo metadata` of the workspace.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Binary name → the package that builds it.
fn binaries(meta: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for package in meta["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            if target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "bin")
            {
                out.insert(
                    target["name"].as_str().unwrap().to_owned(),
                    package["name"].as_str().unwrap().to_owned(),
                );
            }
        }
    }
    out
}

#[test]
fn every_template_function_is_a_workspace_binary_and_back() {
    let meta = metadata();
    let bins = binaries(&meta);
    let template = Template::load().unwrap();
    let deployed: BTreeSet<String> = template.functions().into_iter().map(|f| f.binary).collect();
    for binary in &deployed {
        assert!(
            bins.contains_key(binary),
            "template names `{binary}`, which no workspace crate builds"
        );
    }
    // Every function crate is deployed.
    for (binary, package) in &bins {
        let manifest = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == package.as_str())
            .unwrap()["manifest_path"]
            .as_str()
            .unwrap()
            .to_owned();
        if manifest.contains("/functions/") {
            assert!(
                deployed.contains(binary),
                "functions/ builds `{binary}` but the template does not deploy it"
            );
        }
    }
    for f in template
        .functions()
        .into_iter()
        .filter(|f| f.routes.iter().any(|r| !r.function_url))
    {
        assert!(
            f.timeout_secs < 30,
            "{}: HTTP APIs give up after 30 s",
            f.logical_id
        );
    }
}

#[test]
fn each_function_has_the_memory_the_bench_chose() {
    // BENCHMARKS.md's CPU-share section names each function's choice as
    // "**<binary>** — chosen MemorySize: **<n> MB**".
    let bench = std::fs::read_to_string(repo_root().join("BENCHMARKS.md")).unwrap();
    let chosen = |binary: &str| -> u64 {
        let marker = format!("**{binary}** — chosen MemorySize: **");
        let at = bench
            .find(&marker)
            .unwrap_or_else(|| panic!("BENCHMARKS.md chose no MemorySize for {binary}"));
        let rest = &bench[at + marker.len()..];
        rest[..rest.find(" MB**").unwrap()].parse().unwrap()
    };
    let functions = Template::load().unwrap().functions();
    assert_eq!(functions.len(), 4);
    for f in functions {
        assert_eq!(f.memory_mb, chosen(&f.binary), "{}", f.logical_id);
    }
}

#[test]
fn the_emulators_depend_on_no_product_crate() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let emulators = packages.iter().find(|p| p["name"] == "emulators").unwrap();
    let product: Vec<&str> = emulators["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["path"].is_string())
        .map(|d| d["name"].as_str().unwrap())
        // Third-party feature settings only, no code (see shared/workspace-hack).
        .filter(|name| *name != "taskpilot-workspace-hack")
        .collect();
    assert!(
        product.is_empty(),
        "tests/emulators must stand on its own, but depends on {product:?}"
    );
}

/// Third-party package → the features `cargo tree` resolves for it when
/// `selection` is built.
fn resolved_features(selection: &[&str]) -> BTreeMap<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--quiet", "--offline", "--prefix", "none"])
        .args(["--format", "{p}|{f}"])
        .args(selection)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.trim_end_matches(" (*)").split_once('|'))
        // Workspace members (`name v0.1.0 (/path)`) may differ by their own
        // test-only features; third-party crates may not.
        .filter(|(package, _)| !package.contains(" (/"))
        .map(|(package, features)| (package.to_owned(), features.to_owned()))
        .collect()
}

/// The function binaries (as the harness and SAM build them), the local stack
/// and the tests all compile every third-party crate with the same features,
/// so one build's artifacts serve the others (no rebuild on a restart of the
/// local stack after the tests, or the other way round). The workspace-hack
/// crate (`shared/workspace-hack`, generated by cargo-hakari) makes this so.
#[test]
fn every_build_compiles_shared_crates_alike() {
    let functions = resolved_features(&[
        "--edges",
        "normal",
        "-p",
        "taskpilot-tasks",
        "-p",
        "taskpilot-sessions",
        "-p",
        "taskpilot-health",
        "-p",
        "taskpilot-chatkit-fn",
    ]);
    let builds = [
        (
            "cargo run -p taskpilot-dev",
            resolved_features(&["--edges", "normal", "-p", "taskpilot-dev"]),
        ),
        (
            "cargo test --workspace",
            resolved_features(&["--edges", "normal,build,dev", "--workspace"]),
        ),
    ];
    for (build, features) in builds {
        let differ: Vec<String> = functions
            .iter()
            .filter_map(|(package, wanted)| {
                let got = features.get(package)?;
                (got != wanted).then(|| format!("{package}: functions [{wanted}], {build} [{got}]"))
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{build} compiles these crates with other features than the function builds, \
             so each rebuilds the other's artifacts; regenerate shared/workspace-hack \
             (see its Cargo.toml):\n{}",
            differ.join("\n")
        );
    }
}

#[test]
fn samconfig_leaves_the_artifacts_bucket_to_the_deployer() {
    // SAM refuses resolve_s3 together with an s3_bucket: set in the config, it
    // would break `sam deploy --s3-bucket <yours>`.
    let config = std::fs::read_to_string(repo_root().join("samconfig.toml")).unwrap();
    let set: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("resolve_s3"))
        .collect();
    assert!(set.is_empty(), "{set:?}");
}

#[test]
fn no_function_setting_resolves_a_secret_value() {
    // A `{{resolve:secretsmanager:…}}` reference puts the value in the
    // function's configuration, readable by anyone who can read the function.
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let resolved: Vec<&str> = template
        .lines()
        .filter(|l| l.contains("{{resolve:"))
        .collect();
    assert!(resolved.is_empty(), "{resolved:?}");
}

#[test]
fn the_stage_depends_on_every_route_it_configures() {
    let template = Template::load().unwrap();
    let routes: BTreeMap<String, String> = template
        .resources("AWS::ApiGatewayV2::Route")
        .into_iter()
        .map(|(name, route)| {
            let key = emulators::template::properties(route)["RouteKey"]
                .as_str()
                .unwrap()
                .to_owned();
            (key, name)
        })
        .collect();
    for (stage, props) in template.resources("AWS::ApiGatewayV2::Stage") {
        let depends: Vec<&str> = props["DependsOn"]
            .as_sequence()
            .map(|d| d.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let configured = props["Properties"]["RouteSettings"]
            .as_mapping()
            .map(|m| m.keys().filter_map(|k| k.as_str()).collect::<Vec<_>>())
            .unwrap_or_default();
        for key in configured {
            let route = routes
                .get(key)
                .unwrap_or_else(|| panic!("{stage} configures `{key}`, which no route has"));
            assert!(
                depends.contains(&route.as_str()),
                "{stage} configures `{key}` but does not depend on {route}"
            );
        }
    }
}

#[test]
fn every_function_logs_to_its_own_group_that_expires_with_the_stack() {
    let template = Template::load().unwrap();
    let groups: BTreeMap<String, &serde_norway::Value> = template
        .resources("AWS::Logs::LogGroup")
        .into_iter()
        .collect();
    let functions = template.resources("AWS::Serverless::Function");
    assert_eq!(functions.len(), 4);
    let mut used = BTreeSet::new();
    for (name, function) in functions {
        let group = emulators::template::intrinsic(
            &function["Properties"]["LoggingConfig"]["LogGroup"],
            "Ref",
        )
        .unwrap_or_else(|| panic!("{name} has no LoggingConfig.LogGroup: !Ref <group>"));
        let resource = groups
            .get(&group)
            .unwrap_or_else(|| panic!("{name} logs to {group}, which is not a log group"));
        assert_eq!(
            emulators::template::intrinsic(&resource["Properties"]["RetentionInDays"], "Ref")
                .as_deref(),
            Some("LogRetentionDays"),
            "{group} keeps logs for the LogRetentionDays parameter"
        );
        assert_eq!(
            resource["DeletionPolicy"].as_str(),
            Some("Delete"),
            "{group}"
        );
        assert!(used.insert(group.clone()), "{group} is shared");
    }
}

/// The variables a running function looked up at start-up (from its
/// `configuration variables` log line, at debug level).
fn variables_logged(logs: &[String]) -> BTreeSet<String> {
    let line = logs
        .iter()
        .find(|l| l.contains("configuration variables"))
        .unwrap_or_else(|| panic!("no configuration line in {logs:?}"));
    let list = &line[line.find('[').unwrap() + 1..line.rfind(']').unwrap()];
    list.split(',')
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_variable_a_binary_reads_is_set_in_the_template() {
    // The names read are logged at debug level (`configuration variables`).
    let stack = LocalStack::start(StackOptions {
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let template = Template::load().unwrap();
    let mut missing = Vec::new();
    for f in template.functions() {
        let function = stack.function(&f.binary).unwrap();
        function.prewarm().await.unwrap();
        let mut read = BTreeSet::new();
        for _ in 0..100 {
            if function
                .logs()
                .iter()
                .any(|l| l.contains("configuration variables"))
            {
                read = variables_logged(&function.logs());
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(read.contains("TABLE_NAME"), "{}: {read:?}", f.binary);
        for var in read {
            let excused = NOT_IN_TEMPLATE.iter().any(|(name, _)| *name == var);
            if !excused && !f.env_names.contains(&var) {
                missing.push(format!("{} reads {var}", f.logical_id));
            }
        }
    }
    assert!(missing.is_empty(), "not set in template.yaml: {missing:?}");
}

#[test]
fn release_builds_unwind_on_panic() {
    let manifest: toml_like::Manifest = toml_like::read(&repo_root().join("Cargo.toml"));
    assert_eq!(
        manifest.release_panic.as_deref(),
        Some("unwind"),
        "see Cargo.toml [profile.release]"
    );
}

/// A tiny reader for the one value we check (no TOML crate needed).
mod toml_like {
    pub struct Manifest {
        pub release_panic: Option<String>,
    }

    pub fn read(path: &std::path::Path) -> Manifest {
        let text = std::fs::read_to_string(path).unwrap();
        let mut section = String::new();
        let mut release_panic = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
            } else if section == "[profile.release]"
                && let Some(value) = line.strip_prefix("panic").map(str::trim)
                && let Some(value) = value.strip_prefix('=')
            {
                release_panic = Some(value.trim().trim_matches('"').to_owned());
            }
        }
        Manifest { release_panic }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sample_event_runs_through_its_binary() {
    let stack = LocalStack::start(StackOptions::default()).await.unwrap();
    let template = Template::load().unwrap();
    let mut checked = 0;
    for (path, _) in events::expected_files().unwrap() {
        if path.extension().is_none_or(|e| e != "json") || !path.starts_with(events::dir()) {
            continue;
        }
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "scheduled.json" {
            let health = stack.function("health").unwrap();
            let out = health
                .invoke(event.to_string())
                .await
                .expect("the probe runs");
            let report: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(report["status"], "healthy", "{report}");
            checked += 1;
            continue;
        }
        // The route its key names, and the function the template wires to it.
        let key = event["routeKey"].as_str().unwrap();
        let function = template
            .functions()
            .into_iter()
            .find(|f| {
                f.routes.iter().any(|r| {
                    let raw_path = event["rawPath"].as_str().unwrap();
                    let path_ok = match_path(&r.path, raw_path).is_some();
                    match (r.function_url, r.path.as_str()) {
                        (true, _) => key == "$default" && path_ok,
                        (false, "$default") => {
                            key == "$default"
                                && !path_ok
                                && !raw_path.starts_with("/api/v1/chatkit")
                        }
                        (false, p) => format!("{} {p}", r.method) == key && path_ok,
                    }
                })
            })
            .unwrap_or_else(|| panic!("{name}: no function serves {key}"));
        let answer = stack
            .function(&function.binary)
            .unwrap()
            .invoke(event.to_string())
            .await;
        let answer = match answer {
            Ok(bytes) => bytes,
            Err(InvokeError::Function(e)) | Err(InvokeError::Crashed(e)) => panic!("{name}: {e}"),
            Err(e) => panic!("{name}: {e}"),
        };
        // A streamed answer (Function URL) carries its status in the prelude.
        let resp: Value = match emulators::runtime_api::split_prelude(&answer) {
            Some((mut prelude, body)) => {
                prelude["body"] = Value::String(String::from_utf8_lossy(&body).into_owned());
                prelude
            }
            None => serde_json::from_slice(&answer).unwrap(),
        };
        let status = resp["statusCode"].as_u64().unwrap();
        let body: Value = resp["body"]
            .as_str()
            .filter(|b| !b.is_empty())
            .map(|b| serde_json::from_str(b).unwrap())
            .unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(status < 500, "{name}: {status} {body}");
        assert_ne!(
            status, 401,
            "{name}: the sample identity was refused: {body}"
        );
        if key == "$default" && !function.routes.iter().any(|r| r.function_url) {
            assert_eq!(code, "route_not_found", "{name}");
        } else {
            assert!(
                !matches!(code, "route_not_found" | "method_not_allowed"),
                "{name}: {key} is not served by {}: {body}",
                function.binary
            );
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} events checked");
}

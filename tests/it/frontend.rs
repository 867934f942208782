//! The README's frontend configuration is one file, `tests/web/chatkit.tsx`, shown verbatim in
//! the README and type-checked with `tsc --strict` against the pinned ChatKit client packages
//! (`tests/web/package-lock.json`, installed with `npm ci` into `.local/web`, never into the
//! repository), so it cannot drift from the README nor from the real client types.
use std::path::{Path, PathBuf};
use std::process::Command;

use emulators::supervised::{install_once, run};
use taskpilot_testkit::repo_root;

fn web() -> PathBuf {
    repo_root().join("tests/web")
}

fn config() -> String {
    std::fs::read_to_string(web().join("chatkit.tsx")).unwrap()
}

/// `.local/web/node_modules/.bin/tsc`, after `npm ci` of `tests/web`'s lockfile into
/// `.local/web` when it is missing or the lockfile changed since the last install.
fn tsc() -> PathBuf {
    let local = repo_root().join(".local");
    let dir = local.join("web");
    let tsc = dir.join("node_modules/.bin/tsc");
    let lock = std::fs::read(web().join("package-lock.json")).unwrap();
    // The lockfile of the last successful install.
    let stamp = dir.join("installed.package-lock.json");
    let current =
        || (tsc.is_file() && std::fs::read(&stamp).is_ok_and(|s| s == lock)).then(|| tsc.clone());
    install_once(&local, "web", current, || {
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_file(&stamp);
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(web().join(file), dir.join(file))?;
        }
        run(
            Command::new("npm")
                .args([
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&dir),
            "npm ci (tests/web/package-lock.json)",
        )?;
        std::fs::write(&stamp, &lock)?;
        Ok(())
    })
    .unwrap()
}

/// Runs `tsc -p <tsconfig>` in `cwd`; whether it passed, and what it printed.
fn type_check(tsconfig: &Path, cwd: &Path) -> (bool, String) {
    let out = Command::new(tsc())
        .arg("-p")
        .arg(tsconfig)
        .current_dir(cwd)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// The body of the README section `## <title>`, up to the next `## ` heading.
fn readme_section(title: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let heading = format!("\n## {title}\n");
    let start = readme.find(&heading).expect("the README section") + heading.len();
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + i);
    readme[start..end].to_owned()
}

/// The contents of every fenced block of `lang` in `text`.
fn fenced(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let end = body.find("\n```").expect("an unclosed fence");
        blocks.push(body[..=end].to_owned());
        rest = &body[end + 4..];
    }
    blocks
}

#[test]
fn the_readme_shows_the_checked_configuration_verbatim() {
    let section = readme_section("Frontend integration (ChatKit)");
    let blocks = fenced(&section, "tsx");
    assert_eq!(
        blocks.len(),
        1,
        "one ```tsx block in the README's \"Frontend integration (ChatKit)\""
    );
    assert!(
        blocks[0] == config(),
        "the README's ```tsx block differs from tests/web/chatkit.tsx: copy the file into it"
    );
    assert!(
        fenced(&section, "ts").is_empty(),
        "a second, unchecked ```ts configuration in the section"
    );
    assert!(section.contains("tests/web/chatkit.tsx"));
}

#[test]
fn the_configuration_type_checks_under_strict() {
    let tsconfig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(web().join("tsconfig.json")).unwrap())
            .unwrap();
    let options = &tsconfig["compilerOptions"];
    assert_eq!(options["strict"], true);
    assert_eq!(options["noEmit"], true);
    assert_eq!(tsconfig["files"][0], "chatkit.tsx");
    let (ok, printed) = type_check(&web().join("tsconfig.json"), &repo_root());
    assert!(ok, "tsc --strict on tests/web/chatkit.tsx:\n{printed}");
    // Type-checked against the pinned packages, not whatever else is around.
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(web().join("package-lock.json")).unwrap())
            .unwrap();
    let pinned = &lock["packages"][""]["devDependencies"];
    for package in ["@openai/chatkit-react", "@openai/chatkit"] {
        let installed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                repo_root()
                    .join(".local/web/node_modules")
                    .join(package)
                    .join("package.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(installed["version"], pinned[package], "{package}");
    }
}

/// Misspelled options must fail the check: tsc really reads the client's types, down to a
/// field of a tool in a constant and the type of a preview widget.
#[test]
fn a_misspelled_option_fails_the_type_check() {
    // (file, original text, misspelling (first occurrence only), what tsc must say)
    let mutants = [
        (
            "top_level",
            "threadItemActions",
            "threadItemActionz",
            "'threadItemActionz' does not exist in type 'UseChatKitOptions'",
        ),
        (
            "tool_field",
            "placeholderOverride",
            "placeholderOverrid",
            "'placeholderOverrid' does not exist in type 'ToolOption'",
        ),
        (
            "upload_url",
            "uploadUrl: `",
            "uploadURL: `",
            "'uploadURL' does not exist",
        ),
        (
            "preview_widget",
            "type: \"Basic\"",
            "type: \"Basik\"",
            "Type '\"Basik\"' is not assignable to type '\"Basic\"'",
        ),
    ];
    let dir = repo_root().join(".local/web/mutants");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let original = config();
    let mut files = Vec::new();
    for (name, from, to, _) in mutants {
        assert!(original.contains(from), "{from} is not in chatkit.tsx");
        let file = format!("{name}.tsx");
        std::fs::write(dir.join(&file), original.replacen(from, to, 1)).unwrap();
        files.push(file);
    }
    files.push(web().join("page.d.ts").to_str().unwrap().to_owned());
    let tsconfig = serde_json::json!({
        "extends": web().join("tsconfig.json"),
        "files": files,
    });
    std::fs::write(dir.join("tsconfig.json"), tsconfig.to_string()).unwrap();
    let (ok, printed) = type_check(&dir.join("tsconfig.json"), &dir);
    assert!(!ok, "tsc accepted misspelled options:\n{printed}");
    let errors: Vec<&str> = printed.lines().filter(|l| l.contains("error TS")).collect();
    for (name, _, _, says) in mutants {
        assert!(
            errors
                .iter()
                .any(|l| l.starts_with(&format!("{name}.tsx(")) && l.contains(says)),
            "no `{says}` for {name}.tsx:\n{printed}"
        );
    }
    // Nothing else failed (a missing module would): one error per misspelling.
    assert_eq!(errors.len(), mutants.len(), "{printed}");
}

/// The quoted strings on the lines of `text` that contain `marker`, after it.
fn quoted_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| line.split_once(marker))
        .filter_map(|(_, rest)| rest.strip_prefix('"')?.split('"').next())
        .collect()
}

/// A `const NAME ... = [ ... ];` block of the file.
fn const_block<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text.find(&format!("const {name}")).expect(name);
    let end = start + text[start..].find("\n];").expect(name);
    &text[start..end]
}

#[test]
fn the_configuration_names_what_the_server_serves() {
    let config = config();
    // The tool menu: exactly the ids the server accepts in inference_options.tool_choice.id.
    let tools = const_block(&config, "TOOLS");
    let served: Vec<&str> = taskpilot_assistant::choices::Mode::ALL
        .into_iter()
        .map(|m| m.id())
        .collect();
    assert_eq!(quoted_after(tools, "{ id: "), served);
    assert_eq!(
        quoted_after(tools, "label: "),
        ["Add a task", "Complete a task", "Plan my day"]
    );
    assert_eq!(
        quoted_after(tools, "icon: "),
        ["plus", "check-circle", "calendar"]
    );
    assert!(config.contains("tools: TOOLS,"));
    // The model picker: the default model is the stack's default ChatKitModel.
    let models = const_block(&config, "MODELS");
    let ids = quoted_after(models, "{ id: ");
    assert_eq!(ids, ["gpt-4.1", "o4-mini"]);
    let template: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("template.yaml")).unwrap(),
    )
    .unwrap();
    let default_model = template["Parameters"]["ChatKitModel"]["Default"]
        .as_str()
        .unwrap();
    let default_line = models
        .lines()
        .find(|l| l.contains("default: true"))
        .unwrap();
    assert!(default_line.contains(&format!("id: \"{default_model}\"")));
    assert!(config.contains("models: MODELS,"));
    // The one client tool.
    assert_eq!(
        quoted_after(&config, "name !== "),
        [taskpilot_assistant::tools::SHOW_TASK, "tasks.changed"]
    );
    assert!(config.contains("params.task_id"));
    // Uploads: the direct strategy posts to the ChatKit function's /attachments.
    assert!(config.contains(
        "const CHATKIT_URL = \"https://<id>.lambda-url.<region>.on.aws/api/v1/chatkit\";"
    ));
    assert!(
        config.contains("direct: { type: \"direct\", uploadUrl: `${CHATKIT_URL}/attachments` },")
    );
    assert!(config.contains("two_phase: { type: \"two_phase\" },"));
    // The headers go to the ChatKit endpoint only.
    assert!(config.contains("if (!url.startsWith(CHATKIT_URL)) return fetch(input, init);"));
    assert!(config.contains("fetch: chatkitFetch,"));
}

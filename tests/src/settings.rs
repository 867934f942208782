//! The settings check each function runs in process: what `template.yaml` and
//! `env.json` set for it, against what its `Settings::from_vars` reads.

use std::collections::BTreeSet;

use emulators::template::Template;
use taskpilot_config::{ConfigError, Vars};

use crate::repo_root;

/// Variables a function may read that the template does not set, and why.
pub const NOT_IN_TEMPLATE: &[(&str, &str)] = &[
    (
        "OPENAI_API_KEY",
        "local development override; deployments read OPENAI_SECRET_ARN",
    ),
    (
        "AUTH_JWT_SECRET",
        "HS256 dev secret; deployments use the authorizer or AUTH_JWKS_URL",
    ),
    (
        "CURSOR_SIGNING_KEY",
        "local development override; deployments read the key from APP_KEYS_SECRET_ARN",
    ),
    (
        "CHATKIT_URL",
        "defaults to the request's host; set once the ChatKit function exists",
    ),
    (
        "SSL_CERT_FILE",
        "optional extra trusted roots (a private CA); unset, the compiled-in Mozilla roots",
    ),
];

/// What Lambda itself sets (region, the role's credentials).
const PLATFORM: &[(&str, &str)] = &[
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "example"),
    ("AWS_SESSION_TOKEN", "example"),
];

/// Checks the function `logical_id` of the template, whose settings `build`
/// reads from a [`Vars`]:
/// - it starts with `env.json`'s variables (as `sam local` runs it) and with
///   the template's as deployed (secret ARNs set, local overrides absent):
///   nothing it requires is missing;
/// - every variable the template or `env.json` sets for it is read (nothing
///   set that it ignores);
/// - every variable it reads is set by the template, or is a local override
///   listed in [`NOT_IN_TEMPLATE`];
/// - the table of variables in `docs/configuration.md` names the function on
///   exactly the rows of the variables it reads.
///
/// Panics with the differences.
pub fn check(logical_id: &str, build: impl Fn(&Vars) -> Result<(), ConfigError>) {
    let function = Template::load()
        .unwrap_or_else(|e| panic!("template.yaml: {e}"))
        .functions()
        .into_iter()
        .find(|f| f.logical_id == logical_id)
        .unwrap_or_else(|| panic!("no {logical_id} in template.yaml"));
    let set: BTreeSet<String> = function.env_names.iter().cloned().collect();
    let env_json = env_json(logical_id);

    let local = Vars::from_pairs(
        PLATFORM
            .iter()
            .copied()
            .chain(env_json.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    if let Err(e) = build(&local) {
        panic!("{logical_id} does not start with env.json: {e}");
    }
    let deployed_values: Vec<(String, String)> = set
        .iter()
        .map(|name| (name.clone(), deployed_value(name, &env_json)))
        .collect();
    let deployed = Vars::from_pairs(
        PLATFORM
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(deployed_values),
    );
    if let Err(e) = build(&deployed) {
        panic!("{logical_id} does not start with the template's variables: {e}");
    }

    let read: BTreeSet<String> = local
        .read()
        .into_iter()
        .chain(deployed.read())
        .map(str::to_owned)
        .collect();
    let platform = |name: &str| name.starts_with("AWS_");
    let ignored: BTreeSet<&String> = set
        .iter()
        .chain(env_json.iter().map(|(k, _)| k))
        .filter(|name| !read.contains(*name) && !platform(name))
        .collect();
    assert!(
        ignored.is_empty(),
        "{logical_id} is given variables it never reads: {ignored:?}"
    );
    let unset: Vec<&String> = read
        .iter()
        .filter(|name| !set.contains(*name))
        .filter(|name| !NOT_IN_TEMPLATE.iter().any(|(n, _)| n == name))
        .collect();
    assert!(
        unset.is_empty(),
        "{logical_id} reads variables template.yaml does not set: {unset:?}"
    );
    let binary = function.binary.as_str();
    let rows = configuration_rows();
    let mut wrong = Vec::new();
    for (names, functions) in &rows {
        let listed = functions.iter().any(|f| f == "all" || f == binary);
        for name in names {
            if listed != read.contains(name) {
                wrong.push(format!(
                    "{name}: {}",
                    if listed {
                        "listed, not read"
                    } else {
                        "read, not listed"
                    }
                ));
            }
        }
    }
    let documented: BTreeSet<&String> = rows.iter().flat_map(|(n, _)| n).collect();
    wrong.extend(
        read.iter()
            .filter(|name| !documented.contains(name))
            .map(|name| format!("{name}: not in the table")),
    );
    assert!(
        wrong.is_empty(),
        "docs/configuration.md's table of variables disagrees for {binary}: {wrong:?}"
    );
}

/// The rows of `docs/configuration.md`'s table of variables: the variables each names
/// (backquoted in the first column) and the functions it lists (`all`, or
/// binary names) in the second.
fn configuration_rows() -> Vec<(Vec<String>, Vec<String>)> {
    let path = repo_root().join("docs/configuration.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("docs/configuration.md: {e}"));
    let section = text
        .split("\n## Configuration (environment)\n")
        .nth(1)
        .unwrap_or_else(|| {
            panic!("docs/configuration.md has no Configuration (environment) section")
        });
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let names = cells
                .next()?
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            let functions = cells
                .next()?
                .split(',')
                .map(|f| f.trim().to_owned())
                .collect();
            Some((names, functions))
        })
        .collect()
}

/// `env.json`'s variables for `logical_id`.
fn env_json(logical_id: &str) -> Vec<(String, String)> {
    let path = repo_root().join("env.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("env.json: {e}"));
    let all: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("env.json: {e}"));
    all[logical_id]
        .as_object()
        .unwrap_or_else(|| panic!("env.json has no {logical_id}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A value like the deployed one: a secret's ARN, else `env.json`'s value
/// (its parameter default), blank for an optional setting left unset.
fn deployed_value(name: &str, env_json: &[(String, String)]) -> String {
    if name.ends_with("_SECRET_ARN") {
        return format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}");
    }
    env_json
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

//! The OpenAPI contract (`shared/http/openapi.yaml`) and what the template
//! deploys describe the same routes, and `sam local start-api` finds them all.
use std::collections::BTreeSet;
use std::process::Command;

use emulators::supervised::venv_tool;
use emulators::template::Template;
use serde_json::Value;
use taskpilot_testkit::repo_root;

fn spec() -> Value {
    let text = std::fs::read_to_string(repo_root().join("shared/http/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// `METHOD /path` for every operation of the spec.
fn spec_operations(spec: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops
}

#[test]
fn every_deployed_route_is_in_the_spec_and_back() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str().unwrap(), "3.1.0");
    let mut deployed = BTreeSet::new();
    for function in Template::load().unwrap().functions() {
        for route in function.routes {
            if route.path == "$default" {
                continue; // the JSON 404 for unknown paths
            }
            // A Function URL accepts any method; the ChatKit protocol is POST only.
            let method = if route.function_url {
                "POST".to_owned()
            } else {
                route.method
            };
            deployed.insert(format!("{method} {}", route.path));
        }
    }
    let documented = spec_operations(&spec);
    let table: BTreeSet<String> = taskpilot_http::routes::ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(move |m| format!("{m} {path}")))
        .collect();
    assert_eq!(
        table, deployed,
        "taskpilot_http::routes::ROUTES differs from the template"
    );
    assert_eq!(
        documented.difference(&deployed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not deployed"
    );
    assert_eq!(
        deployed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "deployed but not documented"
    );
}

#[test]
fn every_reference_resolves_and_every_error_uses_the_error_schema() {
    let spec = spec();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r.strip_prefix('#').expect("local references only");
        assert!(spec.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for (name, response) in spec["components"]["responses"].as_object().unwrap() {
        let schema = &response["content"]["application/json"]["schema"]["$ref"];
        if ["BadRequest", "Unauthorized", "NotFound", "Internal"].contains(&name.as_str()) {
            assert_eq!(schema, "#/components/schemas/Error", "{name}");
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// `METHOD /path -> FunctionLogicalId` for every route SAM CLI's own route
/// discovery (what `sam local start-api` serves; no Docker needed) finds in
/// the template with `AuthMode=mode`.
fn sam_local_routes(mode: &str) -> BTreeSet<String> {
    let sam = venv_tool("sam", "sam.txt", "sam").unwrap();
    let python = sam.with_file_name("python");
    let out = Command::new(python)
        .arg(repo_root().join("tests/tools/sam_routes.py"))
        .arg(repo_root().join("template.yaml"))
        .arg(mode)
        .current_dir(repo_root())
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SAM CLI's route discovery failed for AuthMode={mode}: `sam local start-api` \
         could not start:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let route: Value = serde_json::from_str(line).unwrap();
            let method = match route["method"].as_str().unwrap() {
                "X-AMAZON-APIGATEWAY-ANY-METHOD" => "ANY",
                m => m,
            };
            format!(
                "{method} {} -> {}",
                route["path"].as_str().unwrap(),
                route["function"].as_str().unwrap_or("(no function)")
            )
        })
        .collect()
}

#[test]
fn sam_local_serves_every_route_of_the_spec_in_both_auth_modes() {
    // What the template's HTTP API routes to (the ChatKit endpoint is a
    // Function URL, which `sam local start-api` does not serve).
    let expected: BTreeSet<String> = Template::load()
        .unwrap()
        .functions()
        .into_iter()
        .flat_map(|f| {
            f.routes
                .into_iter()
                .filter(|r| !r.function_url)
                .map(move |r| format!("{} {} -> {}", r.method, r.path, f.logical_id))
        })
        .collect();
    let documented: BTreeSet<String> = spec_operations(&spec())
        .into_iter()
        .filter(|op| op != "POST /api/v1/chatkit")
        .collect();
    for mode in ["apigateway", "function"] {
        let found = sam_local_routes(mode);
        assert_eq!(found, expected, "AuthMode={mode}: SAM CLI's routes");
        let operations: BTreeSet<String> = found
            .iter()
            .filter_map(|r| r.split_once(" -> ").map(|(op, _)| op.to_owned()))
            .filter(|op| op != "ANY $default")
            .collect();
        assert_eq!(operations, documented, "AuthMode={mode}: spec vs sam local");
    }
}

//! The OpenAPI contract (`shared/http/openapi.yaml`) and what the template
//! deploys describe the same routes.
use std::collections::BTreeSet;

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

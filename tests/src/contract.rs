//! The OpenAPI contract (`shared/http/openapi.yaml`) as a checker: is this
//! status documented for this route, and does the body validate against the
//! documented schema?

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::template::match_path;
use crate::{Result, repo_root};

/// The parsed spec and the validators built from it so far.
pub struct Contract {
    spec: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl Contract {
    /// Reads `shared/http/openapi.yaml`.
    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string(repo_root().join("shared/http/openapi.yaml"))?;
        Ok(Self {
            spec: serde_norway::from_str(&text)?,
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The spec as JSON.
    pub fn spec(&self) -> &Value {
        &self.spec
    }

    /// Checks one exchange: `path` may carry a query string; `body` is the
    /// decoded JSON (`Null` when empty). `Ok(false)`: the spec has no such
    /// operation (unknown paths and methods, preflights), so nothing to check
    /// beyond the error envelope. Errors say what does not match.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> std::result::Result<bool, String> {
        let path = path.split('?').next().unwrap_or(path);
        let method = method.to_lowercase();
        let paths = self.spec["paths"]
            .as_object()
            .ok_or("the spec has no paths")?;
        let Some((template, item)) = paths.iter().find(|(template, item)| {
            item.get(&method).is_some() && match_path(template, path).is_some()
        }) else {
            return Ok(false);
        };
        let escaped = escape(template);
        let mut pointer = format!("/paths/{escaped}/{method}/responses/{status}");
        let mut response = item[&method]["responses"]
            .get(status.to_string())
            .ok_or_else(|| format!("{method} {template}: status {status} is not documented"))?;
        if let Some(r) = response.get("$ref").and_then(Value::as_str) {
            pointer = r.trim_start_matches('#').to_owned();
            response = self
                .spec
                .pointer(&pointer)
                .ok_or_else(|| format!("dangling reference {r}"))?;
        }
        match response.pointer("/content/application~1json/schema") {
            None if body.is_null() => Ok(true),
            None => Err(format!(
                "{method} {template} {status}: the spec documents no body, got {body}"
            )),
            Some(_) => {
                let at = format!("#{pointer}/content/application~1json/schema");
                let validator = self.validator(&at)?;
                let errors: Vec<String> = validator
                    .iter_errors(body)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                if errors.is_empty() {
                    Ok(true)
                } else {
                    Err(format!(
                        "{method} {template} {status}: {body} does not match {at}: {}",
                        errors.join("; ")
                    ))
                }
            }
        }
    }

    fn validator(&self, at: &str) -> std::result::Result<Arc<jsonschema::Validator>, String> {
        let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(at) {
            return Ok(v.clone());
        }
        // The whole document is the schema resource, entered through a
        // reference, so `#/components/...` references resolve inside it.
        let mut root = self.spec.clone();
        root["$ref"] = Value::String(at.replace('{', "%7B").replace('}', "%7D"));
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("schema at {at}: {e}"))?;
        let validator = Arc::new(validator);
        cache.insert(at.to_owned(), validator.clone());
        Ok(validator)
    }
}

/// A JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

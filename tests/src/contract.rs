//! The OpenAPI contract (`shared/http/openapi.yaml`) as a checker: is this
//! status documented for this route, and does the body validate against the
//! documented schema?

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::{Result, repo_root};
use emulators::template::match_path;

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

    /// The whole policy for one answer, given its raw body: JSON (or empty);
    /// a documented status with a valid body when the spec has the operation;
    /// otherwise, for errors, the `{"error":{"code","message"}}` envelope or
    /// API Gateway's own `{"message":"Not Found"}` for a path no route has.
    pub fn check_answer(
        &self,
        method: &str,
        path: &str,
        status: u16,
        raw: &[u8],
    ) -> std::result::Result<(), String> {
        let body: Value = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(raw).map_err(|_| {
                format!(
                    "{method} {path} {status}: the body is not JSON: {}",
                    String::from_utf8_lossy(raw)
                )
            })?
        };
        if self.check(method, path, status, &body)? || status < 400 {
            return Ok(());
        }
        let gateway_not_found =
            status == 404 && body == serde_json::json!({ "message": "Not Found" });
        let envelope = body["error"]["code"].is_string() && body["error"]["message"].is_string();
        if gateway_not_found || envelope {
            Ok(())
        } else {
            Err(format!(
                "{method} {path} {status}: not an error envelope: {body}"
            ))
        }
    }

    /// Checks a server-sent event stream: the operation documents
    /// `text/event-stream` for `status`, and every event's `data` is a JSON
    /// object with a string `type` (a ChatKit event).
    pub fn check_event_stream(
        &self,
        method: &str,
        path: &str,
        status: u16,
        raw: &[u8],
    ) -> std::result::Result<(), String> {
        let method_lc = method.to_lowercase();
        let path_only = path.split('?').next().unwrap_or(path);
        let documented = self.spec["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(template, _)| match_path(template, path_only).is_some())
            .any(|(_, item)| {
                item[&method_lc]["responses"][status.to_string()]["content"]
                    .get("text/event-stream")
                    .is_some()
            });
        if !documented {
            return Err(format!(
                "{method} {path} {status}: the spec documents no event stream"
            ));
        }
        let text = std::str::from_utf8(raw)
            .map_err(|_| format!("{method} {path}: the stream is not UTF-8"))?;
        for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
            let event: Value = serde_json::from_str(data.trim_start())
                .map_err(|_| format!("{method} {path}: an event is not JSON: {data}"))?;
            if !event["type"].is_string() {
                return Err(format!("{method} {path}: an event has no type: {data}"));
            }
        }
        Ok(())
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

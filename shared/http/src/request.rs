//! Reading headers and query parameters with clear errors.

use lambda_http::{Request, RequestExt};

use crate::error::ApiError;

fn bad(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadParameter {
        name: name.to_owned(),
        message: message.into(),
    }
}

/// A header as text, `None` when absent; 400 when not visible ASCII.
pub fn header<'r>(req: &'r Request, name: &str) -> Result<Option<&'r str>, ApiError> {
    req.headers()
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| bad(name, format!("the {name} header must be visible ASCII")))
        })
        .transpose()
}

/// The version in `If-Match: "<version>"` (also `W/"<version>"` or a bare number).
pub fn if_match_version(req: &Request) -> Result<Option<u64>, ApiError> {
    let Some(raw) = header(req, "if-match")? else {
        return Ok(None);
    };
    let tag = raw.trim().trim_start_matches("W/").trim_matches('"');
    tag.parse::<u64>().map(Some).map_err(|_| {
        bad(
            "If-Match",
            "If-Match must be the task's version as an ETag, e.g. \"3\"",
        )
    })
}

/// Query parameters, checked against the accepted names; each may appear once.
pub struct Query<'r> {
    req: &'r Request,
}

impl<'r> Query<'r> {
    /// Rejects unknown or repeated parameters.
    pub fn new(req: &'r Request, accepted: &[&str]) -> Result<Self, ApiError> {
        if let Some(params) = req.query_string_parameters_ref() {
            for (name, _) in params.iter() {
                if !accepted.contains(&name) {
                    return Err(bad(
                        name,
                        format!(
                            "unknown query parameter `{name}`; accepted: {}",
                            accepted.join(", ")
                        ),
                    ));
                }
                if params.all(name).is_some_and(|v| v.len() > 1) {
                    return Err(bad(name, format!("give `{name}` at most once")));
                }
            }
        }
        Ok(Self { req })
    }

    /// A parameter's raw value.
    pub fn get(&self, name: &str) -> Option<&'r str> {
        self.req
            .query_string_parameters_ref()
            .and_then(|p| p.first(name))
    }

    /// A parameter parsed with `parse`, which explains what is expected.
    pub fn parse<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|raw| {
                parse(raw).ok_or_else(|| {
                    ApiError::Domain(taskpilot_domain::DomainError::validation(
                        name,
                        format!("must be {expected}"),
                    ))
                })
            })
            .transpose()
    }
}

/// When this invocation must have answered: Lambda's deadline less a safety
/// margin (or `fallback` from now outside Lambda).
pub fn deadline(req: &Request, fallback: std::time::Duration) -> std::time::Instant {
    const MARGIN: std::time::Duration = std::time::Duration::from_millis(500);
    let now = std::time::Instant::now();
    req.lambda_context_ref()
        .and_then(|ctx| {
            ctx.deadline()
                .duration_since(std::time::SystemTime::now())
                .ok()
        })
        .map(|left| now + left.saturating_sub(MARGIN))
        .unwrap_or(now + fallback)
}

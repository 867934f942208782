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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use lambda_http::{Body, Context};

    use super::*;

    fn with_header(name: &'static str, value: &[u8]) -> Request {
        let mut req = Request::new(Body::Empty);
        req.headers_mut()
            .insert(name, http::HeaderValue::from_bytes(value).unwrap());
        req
    }

    fn with_query(params: &[(&str, &[&str])]) -> Request {
        let map: HashMap<String, Vec<String>> = params
            .iter()
            .map(|(k, vs)| {
                (
                    (*k).to_owned(),
                    vs.iter().map(|v| (*v).to_owned()).collect(),
                )
            })
            .collect();
        Request::new(Body::Empty).with_query_string_parameters(map)
    }

    fn parameter(err: ApiError) -> String {
        match err {
            ApiError::BadParameter { name, .. } => name,
            other => panic!("expected a bad parameter, got {other:?}"),
        }
    }

    #[test]
    fn a_header_is_read_as_text() {
        let req = with_header("x-timezone", b"Europe/Paris");
        assert_eq!(header(&req, "x-timezone").unwrap(), Some("Europe/Paris"));
    }

    #[test]
    fn an_absent_header_is_none() {
        let req = with_header("x-timezone", b"Europe/Paris");
        assert_eq!(header(&req, "accept-language").unwrap(), None);
    }

    #[test]
    fn a_header_that_is_not_visible_ascii_is_a_bad_parameter() {
        let req = with_header("x-timezone", b"Europe/Z\xfcrich");
        assert_eq!(
            parameter(header(&req, "x-timezone").unwrap_err()),
            "x-timezone"
        );
    }

    #[test]
    fn if_match_takes_a_quoted_version() {
        let req = with_header("if-match", b"\"3\"");
        assert_eq!(if_match_version(&req).unwrap(), Some(3));
    }

    #[test]
    fn if_match_takes_a_weak_etag_or_a_bare_number() {
        assert_eq!(
            if_match_version(&with_header("if-match", b"W/\"12\"")).unwrap(),
            Some(12)
        );
        assert_eq!(
            if_match_version(&with_header("if-match", b" 7 ")).unwrap(),
            Some(7)
        );
    }

    #[test]
    fn without_if_match_there_is_no_version() {
        assert_eq!(if_match_version(&Request::new(Body::Empty)).unwrap(), None);
    }

    #[test]
    fn an_if_match_that_is_not_a_version_is_a_bad_parameter() {
        let err = if_match_version(&with_header("if-match", b"\"abc\"")).unwrap_err();
        assert_eq!(parameter(err), "If-Match");
    }

    #[test]
    fn an_unknown_query_parameter_is_refused() {
        let req = with_query(&[("sort", &["asc"])]);
        let err = Query::new(&req, &["limit", "cursor"]).err().unwrap();
        assert_eq!(parameter(err), "sort");
    }

    #[test]
    fn a_repeated_query_parameter_is_refused() {
        let req = with_query(&[("limit", &["1", "2"])]);
        let err = Query::new(&req, &["limit"]).err().unwrap();
        assert_eq!(parameter(err), "limit");
    }

    #[test]
    fn a_query_parameter_is_read() {
        let req = with_query(&[("limit", &["5"])]);
        let query = Query::new(&req, &["limit", "cursor"]).unwrap();
        assert_eq!(query.get("limit"), Some("5"));
        assert_eq!(query.get("cursor"), None);
    }

    #[test]
    fn a_query_parameter_is_parsed() {
        let req = with_query(&[("limit", &["5"])]);
        let query = Query::new(&req, &["limit", "cursor"]).unwrap();
        let limit = query.parse("limit", |s| s.parse::<u32>().ok(), "a number");
        assert_eq!(limit.unwrap(), Some(5));
        let cursor = query.parse("cursor", |s| s.parse::<u32>().ok(), "a number");
        assert_eq!(cursor.unwrap(), None);
    }

    #[test]
    fn an_unparsable_query_parameter_says_what_is_expected() {
        let req = with_query(&[("limit", &["many"])]);
        let query = Query::new(&req, &["limit"]).unwrap();
        match query.parse("limit", |s| s.parse::<u32>().ok(), "a number") {
            Err(ApiError::Domain(taskpilot_domain::DomainError::Validation { field, message })) => {
                assert_eq!(
                    (field.as_str(), message.as_str()),
                    ("limit", "must be a number")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outside_lambda_the_deadline_is_the_fallback_from_now() {
        let before = Instant::now();
        let deadline = deadline(&Request::new(Body::Empty), Duration::from_secs(10));
        let after = Instant::now();
        assert!(deadline >= before + Duration::from_secs(10));
        assert!(deadline <= after + Duration::from_secs(10));
    }

    #[test]
    fn in_lambda_the_deadline_is_lambdas_less_a_margin() {
        let in_20s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 20_000;
        let mut context = Context::default();
        context.deadline = u64::try_from(in_20s).unwrap();
        let req = Request::new(Body::Empty).with_lambda_context(context);
        let before = Instant::now();
        let deadline = deadline(&req, Duration::from_secs(60));
        let after = Instant::now();
        assert!(
            deadline >= before + Duration::from_millis(19_000),
            "margin too wide"
        );
        assert!(
            deadline <= after + Duration::from_millis(19_500),
            "no margin"
        );
    }
}

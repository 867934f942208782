//! JSON request and response helpers.

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use taskpilot_domain::DomainError;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Parses a JSON body into `T`, with errors that name the offending field.
/// An empty body parses as `{}`; any other body must be a JSON object.
pub fn parse_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if let Some(ct) = req.headers().get(http::header::CONTENT_TYPE) {
        check_media_type(ct.to_str().unwrap_or(""))?;
    }
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    check_syntax(bytes)?;
    // serde's derive would also read a struct from an array, by position.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(DomainError::validation("body", "must be a JSON object").into());
    }
    parse_checked(bytes)
}

/// Accepts `application/json` and `…+json` types, in UTF-8 (the only
/// encoding JSON has, RFC 8259 §8.1): a `charset` parameter must say so.
fn check_media_type(raw: &str) -> Result<(), ApiError> {
    let ct = raw.to_ascii_lowercase();
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim();
    let json = mime == "application/json" || mime.ends_with("+json");
    let utf8 = parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim() == "charset" => {
            matches!(value.trim().trim_matches('"'), "utf-8" | "utf8")
        }
        _ => true,
    });
    if json && utf8 {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(ct.trim().to_owned()))
    }
}

/// Parses JSON bytes into `T` (shared by bodies and tool arguments).
pub fn parse_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_syntax(bytes)?;
    parse_checked(bytes)
}

/// Syntax first, so malformed JSON is always a 400, whatever its shape.
fn check_syntax(bytes: &[u8]) -> Result<(), ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Parses bytes whose syntax is known to be valid.
fn parse_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(classify)?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

fn classify(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let path = err.path().to_string();
    let inner = err.into_inner();
    let message = inner.to_string();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::MalformedJson(message),
        Category::Data if message.starts_with("unknown field") => {
            let field = message.split('`').nth(1).unwrap_or("?");
            let hint = if matches!(
                field,
                "id" | "created_at"
                    | "updated_at"
                    | "completed_at"
                    | "version"
                    | "user_id"
                    | "owner"
            ) {
                " (it is set by the server)"
            } else {
                ""
            };
            ApiError::UnknownField(format!("unknown field `{field}`{hint}"))
        }
        Category::Data if message.starts_with("duplicate field") => {
            ApiError::MalformedJson(message)
        }
        Category::Data => {
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next());
            let field = match (missing, path.as_str()) {
                (Some(name), ".") => name.to_owned(),
                (Some(name), parent) => format!("{parent}.{name}"),
                (None, ".") => "body".to_owned(),
                (None, _) => path,
            };
            let reason = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            ApiError::Domain(DomainError::validation(field, reason))
        }
    }
}

/// A JSON response with `status`.
pub fn respond<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(body) => Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::Text(body))
            .unwrap_or_else(|_| Response::new(Body::Empty)),
        Err(e) => ApiError::Internal(format!("response encoding: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        title: String,
        #[serde(default)]
        n: Option<u8>,
    }

    fn status(bytes: &[u8]) -> u16 {
        parse_slice::<T>(bytes).unwrap_err().status().as_u16()
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(status(b"{"), 400);
        assert_eq!(status(b"[1,2"), 400);
        assert_eq!(status(br#"{"title":"a"} trailing"#), 400);
        assert_eq!(status(br#"{"title":"a","id":"x"}"#), 400);
        assert_eq!(status(br#"{"title":"a","title":"b"}"#), 400);
        assert_eq!(status(br#"{"title":5}"#), 422);
        assert_eq!(status(br#"{"title":"a","n":100000}"#), 422);
        assert_eq!(status(b"[]"), 422);
        assert_eq!(status(b"\xff\xfe"), 400);
        let deep = "[".repeat(10_000);
        assert_eq!(status(deep.as_bytes()), 400);
    }

    fn request(content_type: Option<&str>, body: &[u8]) -> Request {
        let mut req = Request::new(Body::from(body.to_vec()));
        if let Some(ct) = content_type {
            req.headers_mut()
                .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        req
    }

    #[test]
    fn media_types() {
        let body = br#"{"title":"a"}"#;
        for ok in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=UTF-8"),
            Some("application/json;charset=\"utf-8\""),
            Some("application/merge-patch+json"),
        ] {
            assert!(parse_body::<T>(&request(ok, body)).is_ok(), "{ok:?}");
        }
        for refused in [
            "application/json; charset=latin1",
            "application/json; charset=ISO-8859-1",
            "application/json; charset=utf-16",
            "text/plain",
            "application/jsonx",
            "multipart/form-data; boundary=x",
            "",
        ] {
            let err = parse_body::<T>(&request(Some(refused), body)).unwrap_err();
            assert_eq!(err.code(), "unsupported_media_type", "{refused}");
        }
    }

    /// `{"title":"aaa…"}` of exactly `len` bytes.
    fn body_of(len: usize) -> Vec<u8> {
        let frame = br#"{"title":""}"#.len();
        format!(r#"{{"title":"{}"}}"#, "a".repeat(len - frame)).into_bytes()
    }

    #[test]
    fn a_body_at_the_limit_is_read() {
        let body = body_of(16 * 1024);
        assert!(parse_body::<T>(&request(None, &body)).is_ok());
    }

    #[test]
    fn a_body_over_the_limit_is_413() {
        let body = body_of(16 * 1024 + 1);
        let err = parse_body::<T>(&request(None, &body)).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code()),
            (413, "payload_too_large")
        );
    }

    #[test]
    fn media_type_parameters_other_than_charset_are_ignored() {
        let ct = Some("application/json; profile=\"https://example.com\"");
        assert!(parse_body::<T>(&request(ct, br#"{"title":"a"}"#)).is_ok());
    }

    #[test]
    fn respond_sends_json_with_the_status() {
        let resp = respond(StatusCode::CREATED, &serde_json::json!({ "id": 1 }));
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.body().as_ref(), br#"{"id":1}"#);
    }

    #[test]
    fn a_body_is_an_object() {
        // serde's derive would read `T` from an array by position.
        let err = parse_body::<T>(&request(None, br#" ["a", 1]"#)).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code()),
            (422, "validation_failed")
        );
        let err = parse_body::<T>(&request(None, b"[[")).unwrap_err();
        assert_eq!(err.code(), "malformed_json");
        let err = parse_body::<T>(&request(None, b"  ")).unwrap_err();
        assert_eq!(
            err.code(),
            "validation_failed",
            "empty is `{{}}`: title is missing"
        );
    }

    #[test]
    fn names_the_field() {
        match parse_slice::<T>(br#"{"title":"a","n":"x"}"#).unwrap_err() {
            ApiError::Domain(taskpilot_domain::DomainError::Validation { field, .. }) => {
                assert_eq!(field, "n")
            }
            other => panic!("{other:?}"),
        }
    }
}

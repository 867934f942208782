//! The API's route table: which methods each path of the HTTP API serves.
//! The `$default` route uses it to answer 405 with `Allow` for a known path
//! and another method (API Gateway itself would send those to `$default`).

/// `(path template, methods)` for every route of the HTTP API; `{name}` is a
/// path parameter. Kept equal to `template.yaml` by `tests/it/openapi.rs`.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/api/v1/tasks", &["GET", "POST"]),
    ("/api/v1/tasks/{id}", &["GET", "PATCH", "DELETE"]),
    ("/api/v1/tasks/{id}/complete", &["POST"]),
    ("/api/v1/tasks/{id}/reopen", &["POST"]),
    ("/api/chatkit/sessions", &["POST"]),
    ("/api/v1/chatkit/sessions", &["POST"]),
    ("/api/chatkit/sessions/{session_id}/cancel", &["POST"]),
    ("/api/v1/chatkit/sessions/{session_id}/cancel", &["POST"]),
    ("/api/v1/chatkit", &["POST"]),
    ("/api/v1/chatkit/usage", &["GET"]),
    ("/health", &["GET"]),
    ("/api/v1/chatkit/health", &["GET"]),
];

/// The `Allow` value for `path` (its methods and `OPTIONS`), or `None` when no
/// route has that path.
pub fn allowed_methods(path: &str) -> Option<String> {
    let (_, methods) = ROUTES
        .iter()
        .find(|(template, _)| matches(template, path))?;
    let mut allow: Vec<&str> = methods.to_vec();
    allow.push("OPTIONS");
    Some(allow.join(", "))
}

/// The answer to `method` on `path` when the handler has no such route: 405
/// with the path's `Allow` for a known path, 404 otherwise.
pub fn refused(method: &http::Method, path: &str) -> crate::ApiError {
    match allowed_methods(path) {
        Some(allowed) => crate::ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed,
        },
        None => crate::ApiError::RouteNotFound {
            method: method.to_string(),
            path: path.to_owned(),
        },
    }
}

/// Whether `path` fits `template`, a parameter matching one non-empty segment.
fn matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_is_405_on_a_known_path_and_404_elsewhere() {
        let err = refused(&http::Method::PUT, "/api/v1/tasks");
        assert!(
            matches!(&err, crate::ApiError::MethodNotAllowed { allowed, .. } if allowed == "GET, POST, OPTIONS"),
            "{err:?}"
        );
        let err = refused(&http::Method::GET, "/api/v1/nowhere");
        assert!(
            matches!(&err, crate::ApiError::RouteNotFound { path, .. } if path == "/api/v1/nowhere"),
            "{err:?}"
        );
    }

    #[test]
    fn known_paths_name_their_methods() {
        assert_eq!(
            allowed_methods("/api/v1/tasks/01ABC").as_deref(),
            Some("GET, PATCH, DELETE, OPTIONS")
        );
        assert_eq!(
            allowed_methods("/api/chatkit/sessions/s1/cancel").as_deref(),
            Some("POST, OPTIONS")
        );
        assert_eq!(allowed_methods("/health").as_deref(), Some("GET, OPTIONS"));
        assert_eq!(
            allowed_methods("/api/v1/chatkit/usage").as_deref(),
            Some("GET, OPTIONS")
        );
    }

    #[test]
    fn unknown_paths_have_none() {
        for path in [
            "/",
            "/api/v1/tasks/",
            "/api/v1/tasks/a/b",
            "/api/v1/task",
            "/health/x",
        ] {
            assert_eq!(allowed_methods(path), None, "{path}");
        }
    }

    #[test]
    fn a_parameter_is_a_whole_braced_segment() {
        assert!(matches("/files/{name}", "/files/a.txt"));
        assert!(!matches("/files/{name", "/files/a.txt"));
        assert!(!matches("/files/name}", "/files/a.txt"));
    }
}

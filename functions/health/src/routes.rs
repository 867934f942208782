//! `GET /health` and `GET /api/v1/chatkit/health`, and the `$default` route's
//! 404 / 405 for everything else.

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};

use taskpilot_http::ApiError;
use taskpilot_http::json::respond;
use taskpilot_http::request::Query;

use crate::checks::{Checks, Status, TableStatus};

const PATHS: [&str; 2] = ["/health", "/api/v1/chatkit/health"];

/// Answers a health request: 200, or 503 when unhealthy.
pub async fn handle<T: TableStatus>(
    checks: &Checks<T>,
    req: Request,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    if !PATHS.contains(&path) || req.method() != Method::GET {
        // As the `$default` route: another route's path, or this one with
        // another method.
        return Err(taskpilot_http::routes::refused(req.method(), path));
    }
    let q = Query::new(&req, &["deep"])?;
    let deep = q
        .parse(
            "deep",
            |v| match v {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            "`true` or `false`",
        )?
        .unwrap_or(false);
    let report = if deep {
        checks.deep_rate_limited().await
    } else {
        checks.shallow().await
    };
    let status = if report.status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut resp = respond(status, &report);
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

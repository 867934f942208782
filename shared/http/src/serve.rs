//! Running a handler on Lambda: CORS, typed errors to JSON, and panics turned
//! into a 500 so the process keeps serving the next request.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use lambda_http::{Body, Request, Response, service_fn};
use taskpilot_config::{ConfigError, Vars};

use crate::cors::Cors;
use crate::error::ApiError;

/// A response body the runner can also answer preflights and errors with:
/// a whole [`Body`], or a streamed [`StreamBody`].
pub trait ResponseBody: Sized {
    /// `body` as this kind of body.
    fn from_body(body: Body) -> Self;
}

impl ResponseBody for Body {
    fn from_body(body: Body) -> Self {
        body
    }
}

/// A streamed response body (Lambda response streaming).
pub type StreamBody = BoxBody<Bytes, std::io::Error>;

impl ResponseBody for StreamBody {
    fn from_body(body: Body) -> Self {
        Full::new(Bytes::copy_from_slice(body.as_ref()))
            .map_err(|never| match never {})
            .boxed()
    }
}

/// Answers one request: preflight, then the handler, with errors and panics
/// rendered as JSON, CORS headers added and one `request` log line.
pub async fn dispatch<B, F, Fut>(cors: &Cors, req: Request, handler: F) -> Response<B>
where
    B: ResponseBody,
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<B>, ApiError>>,
{
    if Cors::is_preflight(&req) {
        return cors.preflight(&req).map(B::from_body);
    }
    let started = Instant::now();
    let cpu_started = crate::cpu::thread_time();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    let outcome = AssertUnwindSafe(handler(req)).catch_unwind().await;
    let mut resp = match outcome {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => err.into_response().map(B::from_body),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            ApiError::Internal(format!("handler panicked: {what}"))
                .into_response()
                .map(B::from_body)
        }
    };
    cors.decorate(origin.as_ref(), resp.headers_mut());
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        cpu_us = crate::cpu::thread_time()
            .saturating_sub(cpu_started)
            .as_micros() as u64,
        "request"
    );
    resp
}

/// Start-up: installs logging (configured from `vars`), then builds the
/// function's state once with `init`, which reads its settings from the same
/// `vars`; how many variables it read is logged, their names at debug level.
/// A configuration error is logged and ends the process (Lambda reports it as
/// an init error).
pub async fn boot<T>(
    vars: &Vars,
    init: impl Future<Output = Result<T, ConfigError>>,
) -> Result<T, ConfigError> {
    crate::telemetry::init(vars);
    let ready = init
        .await
        .inspect_err(|e| tracing::error!(error = %e, "start-up failed"))?;
    // One short line per start-up (the runbook counts cold starts by it);
    // the names, a long list, only when debugging.
    let read = vars.read();
    tracing::info!(variables = read.len(), "configuration read");
    tracing::debug!(variables = ?read, "configuration variables");
    Ok(ready)
}

/// Runs `handler` on the Lambda runtime until the runtime stops.
pub async fn run<F, Fut>(cors: Cors, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send,
{
    let cors = &cors;
    let handler = &handler;
    lambda_http::run(service_fn(move |req: Request| async move {
        Ok::<_, std::convert::Infallible>(dispatch(cors, req, handler).await)
    }))
    .await
}

/// Runs `handler`, whose responses stream, on the Lambda runtime (response
/// streaming) until the runtime stops.
pub async fn run_streaming<F, Fut>(cors: Cors, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Result<Response<StreamBody>, ApiError>> + Send,
{
    let cors = &cors;
    let handler = &handler;
    lambda_http::run_with_streaming_response(service_fn(move |req: Request| async move {
        Ok::<_, std::convert::Infallible>(dispatch(cors, req, handler).await)
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>) -> Request {
        let mut req = Request::default();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        req
    }

    #[tokio::test]
    async fn a_panic_becomes_a_json_500_and_the_next_request_is_served() {
        let cors = Cors::new(vec!["https://app.example".into()]);
        let resp = dispatch(&cors, request(Some("https://app.example")), |_| async {
            if true {
                panic!("boom");
            }
            Ok(Response::new(Body::Empty))
        })
        .await;
        assert_eq!(resp.status(), 500);
        let body: serde_json::Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
        assert_eq!(body["error"]["code"], "internal");
        assert!(
            !body.to_string().contains("boom"),
            "panic text stays in the logs"
        );
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example"
        );

        let ok = dispatch(&cors, request(None), |_| async {
            Ok(Response::new(Body::Empty))
        })
        .await;
        assert_eq!(ok.status(), 200);
        assert!(ok.headers().get("access-control-allow-origin").is_none());
    }

    #[tokio::test]
    async fn a_preflight_is_answered_without_the_handler() {
        let cors = Cors::new(vec!["https://app.example".into()]);
        let mut req = request(Some("https://app.example"));
        *req.method_mut() = http::Method::OPTIONS;
        let resp: Response<Body> = dispatch(&cors, req, |_| async {
            panic!("the handler is not called for a preflight")
        })
        .await;
        assert_eq!(resp.status(), 204);
    }

    #[tokio::test]
    async fn a_handler_error_is_rendered_with_cors_headers() {
        let cors = Cors::new(vec!["https://app.example".into()]);
        let resp: Response<Body> =
            dispatch(&cors, request(Some("https://app.example")), |_| async {
                Err(ApiError::Unauthorized("no token".into()))
            })
            .await;
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example"
        );
    }

    #[tokio::test]
    async fn a_streamed_answer_gets_the_same_errors_and_cors_headers() {
        let cors = Cors::new(vec!["https://app.example".into()]);
        let resp: Response<StreamBody> =
            dispatch(&cors, request(Some("https://app.example")), |_| async {
                Err(ApiError::PayloadTooLarge { limit: 10 })
            })
            .await;
        assert_eq!(resp.status(), 413);
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "payload_too_large");
    }
}

//! Functions that receive more than HTTP events (the health probe's schedule)
//! run on `lambda_runtime` directly; these helpers convert HTTP payloads.

use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use lambda_http::request::LambdaRequest;
use lambda_http::{Body, Context, Request, RequestExt, Response};
use serde_json::Value;

/// Whether a payload is an HTTP event (API Gateway v2 / Function URL).
pub fn is_http(payload: &Value) -> bool {
    payload.get("requestContext").is_some() && payload.get("rawPath").is_some()
}

/// Whether a payload is an EventBridge scheduled event.
pub fn is_scheduled(payload: &Value) -> bool {
    payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || payload.get("source").and_then(Value::as_str) == Some("aws.events")
}

/// The HTTP request in an HTTP payload.
pub fn to_request(payload: Value, context: Context) -> Result<Request, serde_json::Error> {
    let lambda: LambdaRequest = serde_json::from_value(payload)?;
    Ok(Request::from(lambda).with_lambda_context(context))
}

/// The API Gateway v2 answer for a response.
pub fn to_payload(resp: Response<Body>) -> Value {
    let (parts, body) = resp.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.is_base64_encoded = matches!(body, Body::Binary(_));
    out.body = match body {
        Body::Empty => None,
        other => Some(other),
    };
    out.headers = parts.headers;
    serde_json::to_value(out).unwrap_or(Value::Null)
}

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn http_event() -> Value {
        json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/api/v1/tasks",
            "rawQueryString": "limit=5",
            "headers": { "if-match": "\"3\"" },
            "queryStringParameters": { "limit": "5" },
            "isBase64Encoded": false,
            "body": "{\"title\":\"a\"}",
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "api",
                "stage": "$default",
                "requestId": "id",
                "http": {
                    "method": "POST",
                    "path": "/api/v1/tasks",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "192.0.2.1",
                    "userAgent": "test"
                }
            }
        })
    }

    #[test]
    fn an_api_gateway_event_is_http() {
        assert!(is_http(&http_event()));
    }

    #[test]
    fn a_payload_without_a_raw_path_is_not_http() {
        assert!(!is_http(&json!({ "requestContext": {} })));
    }

    #[test]
    fn a_schedule_is_known_by_its_detail_type() {
        assert!(is_scheduled(&json!({ "detail-type": "Scheduled Event" })));
    }

    #[test]
    fn a_schedule_is_known_by_its_source() {
        assert!(is_scheduled(&json!({ "source": "aws.events" })));
    }

    #[test]
    fn an_http_event_is_not_scheduled() {
        assert!(!is_scheduled(&http_event()));
    }

    #[test]
    fn an_http_event_becomes_its_request() {
        let req = to_request(http_event(), Context::default()).unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/api/v1/tasks");
        assert_eq!(req.headers()["if-match"], "\"3\"");
        assert_eq!(req.body().as_ref(), br#"{"title":"a"}"#);
        assert!(req.lambda_context_ref().is_some());
    }

    #[test]
    fn a_text_response_becomes_an_api_gateway_answer() {
        let resp = Response::builder()
            .status(201)
            .header("etag", "\"1\"")
            .body(Body::Text("{}".into()))
            .unwrap();
        let payload = to_payload(resp);
        assert_eq!(payload["statusCode"], 201);
        assert_eq!(payload["body"], "{}");
        assert_eq!(payload["isBase64Encoded"], false);
        assert_eq!(payload["headers"]["etag"], "\"1\"");
    }

    #[test]
    fn a_binary_response_is_base64_encoded() {
        let payload = to_payload(Response::new(Body::Binary(vec![0xff, 0x00])));
        assert_eq!(payload["isBase64Encoded"], true);
        assert_eq!(payload["body"], "/wA=");
    }
}

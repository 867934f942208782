//! How S3 answers a browser's CORS preflight (moto only checks the origin):
//! the first rule of the bucket's CORS configuration whose allowed origins
//! hold the `Origin`, whose allowed methods hold the
//! `Access-Control-Request-Method` and whose allowed headers hold every name
//! of `Access-Control-Request-Headers` answers; no such rule is a 403
//! `AccessForbidden`, as is a bucket without CORS.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html>
//! ("How does Amazon S3 evaluate the CORS configuration on a bucket?").

use crate::s3_front::Refusal;

/// One `CORSRule` of a bucket's CORS configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsRule {
    /// `AllowedOrigin`s (each may hold one `*`).
    pub origins: Vec<String>,
    /// `AllowedMethod`s.
    pub methods: Vec<String>,
    /// `AllowedHeader`s (each may hold one `*`; compared ignoring case).
    pub headers: Vec<String>,
    /// `ExposeHeader`s.
    pub expose: Vec<String>,
    /// `MaxAgeSeconds`.
    pub max_age: Option<u32>,
}

/// The rules of a `GetBucketCors` answer (`<CORSConfiguration>` XML).
pub fn parse_rules(xml: &str) -> Vec<CorsRule> {
    xml.split("<CORSRule>")
        .skip(1)
        .map(|rule| {
            let rule = rule.split("</CORSRule>").next().unwrap_or(rule);
            CorsRule {
                origins: elements(rule, "AllowedOrigin"),
                methods: elements(rule, "AllowedMethod"),
                headers: elements(rule, "AllowedHeader"),
                expose: elements(rule, "ExposeHeader"),
                max_age: elements(rule, "MaxAgeSeconds")
                    .first()
                    .and_then(|n| n.parse().ok()),
            }
        })
        .collect()
}

/// The text of every `<name>` element in `xml`.
fn elements(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once(close.as_str()).map(|(text, _)| text.trim()))
        .map(|text| text.replace("&amp;", "&"))
        .collect()
}

/// `value` matches `pattern`, which may hold one `*` standing for any text.
fn matches(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
        None => pattern == value,
    }
}

fn refused(message: &str) -> Refusal {
    Refusal::new(403, "AccessForbidden", message)
}

/// The answer headers of an allowed preflight, or S3's refusal.
/// `requested_headers` is the raw `Access-Control-Request-Headers` value.
pub fn preflight(
    rules: &[CorsRule],
    origin: &str,
    method: &str,
    requested_headers: &str,
) -> Result<Vec<(&'static str, String)>, Refusal> {
    if rules.is_empty() {
        return Err(refused(
            "CORSResponse: CORS is not enabled for this bucket.",
        ));
    }
    let requested: Vec<String> = requested_headers
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let rule = rules.iter().find(|rule| {
        rule.origins.iter().any(|o| matches(o, origin))
            && rule.methods.iter().any(|m| m == method)
            && requested.iter().all(|h| {
                rule.headers
                    .iter()
                    .any(|allowed| matches(&allowed.to_ascii_lowercase(), h))
            })
    });
    let Some(rule) = rule else {
        return Err(refused(
            "CORSResponse: This CORS request is not allowed. This is usually because the \
             evalution of Origin, request method / Access-Control-Request-Method or \
             Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        ));
    };
    let mut headers = vec![
        ("access-control-allow-origin", origin.to_owned()),
        ("access-control-allow-methods", rule.methods.join(", ")),
        (
            "vary",
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_owned(),
        ),
    ];
    if !requested.is_empty() {
        headers.push(("access-control-allow-headers", requested.join(", ")));
    }
    if !rule.expose.is_empty() {
        headers.push(("access-control-expose-headers", rule.expose.join(", ")));
    }
    if let Some(age) = rule.max_age {
        headers.push(("access-control-max-age", age.to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<?xml version=\"1.0\"?><CORSConfiguration>\
        <CORSRule><AllowedHeader>content-type</AllowedHeader><AllowedHeader>x-amz-*</AllowedHeader>\
        <AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod>\
        <AllowedOrigin>http://localhost:3000</AllowedOrigin><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule>\
        <CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>https://*.example.com</AllowedOrigin>\
        <ExposeHeader>etag</ExposeHeader></CORSRule></CORSConfiguration>";

    fn rules() -> Vec<CorsRule> {
        parse_rules(XML)
    }

    #[test]
    fn rules_are_read_from_the_bucket_answer() {
        let rules = rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].headers, ["content-type", "x-amz-*"]);
        assert_eq!(rules[0].methods, ["PUT", "GET"]);
        assert_eq!(rules[0].origins, ["http://localhost:3000"]);
        assert_eq!(rules[0].max_age, Some(600));
        assert_eq!(rules[1].expose, ["etag"]);
        assert_eq!(rules[1].max_age, None);
        assert!(parse_rules("<Error/>").is_empty());
    }

    #[test]
    fn a_preflight_naming_only_allowed_headers_is_allowed() {
        let headers = preflight(
            &rules(),
            "http://localhost:3000",
            "PUT",
            "Content-Type, x-amz-tagging",
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("access-control-allow-origin"),
            Some("http://localhost:3000")
        );
        assert_eq!(get("access-control-allow-methods"), Some("PUT, GET"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("content-type, x-amz-tagging")
        );
        assert_eq!(get("access-control-max-age"), Some("600"));
        assert_eq!(get("access-control-expose-headers"), None);
    }

    #[test]
    fn one_header_outside_the_rule_refuses_the_preflight() {
        let refusal = preflight(
            &rules(),
            "http://localhost:3000",
            "PUT",
            "content-type,x-amzn-trace-id",
        )
        .unwrap_err();
        assert_eq!((refusal.status, refusal.code), (403, "AccessForbidden"));
    }

    #[test]
    fn the_origin_and_the_method_must_match_one_rule() {
        let r = rules();
        assert!(preflight(&r, "http://localhost:3001", "PUT", "").is_err());
        assert!(preflight(&r, "http://localhost:3000", "DELETE", "").is_err());
        // The second rule by wildcard, for GET only.
        assert!(preflight(&r, "https://app.example.com", "GET", "").is_ok());
        assert!(preflight(&r, "https://app.example.com", "PUT", "").is_err());
        assert!(preflight(&r, "https://example.com", "GET", "").is_err());
        // Requested headers with no header rule refuse.
        assert!(preflight(&r, "https://app.example.com", "GET", "content-type").is_err());
    }

    #[test]
    fn a_bucket_without_cors_refuses_every_preflight() {
        let refusal = preflight(&[], "http://localhost:3000", "PUT", "").unwrap_err();
        assert!(refusal.message.contains("not enabled"));
    }

    #[test]
    fn a_wildcard_stands_for_any_text_once() {
        assert!(matches("*", "anything"));
        assert!(matches("x-amz-*", "x-amz-tagging"));
        assert!(!matches("x-amz-*", "x-amzn-trace-id"));
        assert!(matches("https://*.example.com", "https://a.example.com"));
        assert!(!matches("https://*.example.com", "https://example.org"));
        assert!(!matches("ab*ba", "aba"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }
}

//! An HTTP front for moto's S3 that checks presigned URLs, which moto_server
//! does not: a request whose query carries SigV4 query-string auth
//! (`X-Amz-Signature`, ...) has its signature and expiry verified, and is refused
//! with an S3-style XML error when forged, tampered with or expired; every
//! other request (the SDK's own calls, signed with an `Authorization` header)
//! is forwarded unchanged. The verification is pure ([`verify_presigned`]);
//! [`Signer`] presigns the same way, to forge URLs in tests.
//!
//! A front started with [`S3Front::start_mirrored`] also keeps one bucket's
//! objects on disk ([`crate::s3_mirror`]): when the upstream accepts a request
//! that changes the bucket's objects, the front brings the mirror up to date
//! before it answers, so whatever it acknowledges is on disk.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

use crate::Result;
use crate::http_server::{Body, full};
use crate::s3_mirror::S3Mirror;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of every S3 presigned URL.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The longest validity S3 accepts: seven days.
const MAX_EXPIRES_SECS: i64 = 604_800;
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// Query parameters that mark a request as presigned (any of them).
const AUTH_PARAMS: [&str; 3] = ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Algorithm"];
/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Why a presigned request is refused: an S3 error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (403, or 400 for malformed auth parameters).
    pub status: u16,
    /// S3 error code, e.g. `SignatureDoesNotMatch`.
    pub code: &'static str,
    /// S3 error message.
    pub message: String,
    /// Extra elements S3 adds for debugging (`CanonicalRequest`, `StringToSign`).
    pub detail: Vec<(&'static str, String)>,
}

impl Refusal {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: Vec::new(),
        }
    }

    fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, "AuthorizationQueryParametersError", message)
    }

    fn expired() -> Self {
        Self::new(403, "AccessDenied", "Request has expired")
    }

    fn mismatch() -> Self {
        Self::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. \
             Check your key and signing method.",
        )
    }

    /// The S3 XML error document.
    pub fn xml(&self) -> String {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message>",
            self.code,
            xml_escape(&self.message)
        );
        for (name, value) in &self.detail {
            xml.push_str(&format!("<{name}>{}</{name}>", xml_escape(value)));
        }
        xml.push_str("</Error>");
        xml
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for Refusal {}

/// Whether `query` carries query-string auth (`X-Amz-Signature`,
/// `X-Amz-Credential` or `X-Amz-Algorithm`, in any letter case).
pub fn is_presigned(query: &str) -> bool {
    query_pairs(query).iter().any(|(name, _)| {
        AUTH_PARAMS
            .iter()
            .any(|auth| name.eq_ignore_ascii_case(auth.as_bytes()))
    })
}

/// Verifies a presigned S3 request per SigV4 query-string auth: `path` and
/// `query` as received (still percent-encoded), `headers` as received (`host`
/// included), `secret_for` giving the secret of an access key id (`None`: no
/// such key), `now` the time to check expiry against.
pub fn verify_presigned(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    secret_for: impl Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
) -> std::result::Result<(), Refusal> {
    let pairs = query_pairs(query);
    let param = |name: &str| -> std::result::Result<String, Refusal> {
        let value = pairs
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                Refusal::malformed(
                    "Query-string authentication version 4 requires the X-Amz-Algorithm, \
                     X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, \
                     and X-Amz-Expires parameters.",
                )
            })?;
        String::from_utf8(value)
            .map_err(|_| Refusal::malformed(format!("{name} is not valid UTF-8.")))
    };
    let algorithm = param("X-Amz-Algorithm")?;
    let credential = param("X-Amz-Credential")?;
    let amz_date = param("X-Amz-Date")?;
    let expires = param("X-Amz-Expires")?;
    let signed_headers = param("X-Amz-SignedHeaders")?;
    let signature = param("X-Amz-Signature")?;

    if algorithm != ALGORITHM {
        return Err(Refusal::malformed(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\""
        )));
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminal] = scope[..] else {
        return Err(Refusal::malformed(format!(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; \
             expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\". ('{credential}')"
        )));
    };
    if service != "s3" || terminal != "aws4_request" {
        return Err(Refusal::malformed(format!(
            "Error parsing the X-Amz-Credential parameter; incorrect service or terminal \
             ('{credential}')"
        )));
    }
    let Some(secret) = secret_for(access_key_id) else {
        return Err(Refusal::new(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        ));
    };

    // Expiry: a malformed date or validity counts as expired.
    let signed_at = NaiveDateTime::parse_from_str(&amz_date, AMZ_DATE_FORMAT)
        .map_err(|_| Refusal::expired())?
        .and_utc();
    let validity = expires
        .parse::<i64>()
        .ok()
        .filter(|secs| (0..=MAX_EXPIRES_SECS).contains(secs))
        .ok_or_else(Refusal::expired)?;
    if now > signed_at + chrono::Duration::seconds(validity) {
        return Err(Refusal::expired());
    }
    if amz_date.get(..8) != Some(date) {
        return Err(Refusal::malformed(format!(
            "Error parsing the X-Amz-Credential parameter; the date '{date}' does not match \
             X-Amz-Date '{amz_date}'"
        )));
    }

    let mut names: Vec<String> = signed_headers
        .split(';')
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    names.sort();
    if !names.iter().any(|name| name == "host") {
        return Err(Refusal::malformed(
            "X-Amz-SignedHeaders must include the host header",
        ));
    }
    let Some(headers_block) = canonical_headers(headers, &names) else {
        return Err(Refusal::mismatch());
    };
    let canonical_request = format!(
        "{method}\n{}\n{}\n{headers_block}\n{}\n{UNSIGNED_PAYLOAD}",
        canonical_uri(path),
        canonical_query(&pairs),
        names.join(";"),
    );
    let string_to_sign = string_to_sign(
        &amz_date,
        &credential_scope(&credential),
        &canonical_request,
    );
    let key = signing_key(&secret, date, region);
    let provided = hex_decode(&signature).unwrap_or_default();
    if ring::hmac::verify(&key, string_to_sign.as_bytes(), &provided).is_err() {
        let mut refusal = Refusal::mismatch();
        refusal.detail = vec![
            ("SignatureProvided", signature),
            ("StringToSign", string_to_sign),
            ("CanonicalRequest", canonical_request),
        ];
        return Err(refusal);
    }
    Ok(())
}

/// The identity a URL is presigned with.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// Access key id, put in `X-Amz-Credential`.
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_access_key: &'a str,
    /// Region of the credential scope.
    pub region: &'a str,
}

impl Signer<'_> {
    /// Presigns `method` on `url` (path-style, e.g.
    /// `http://127.0.0.1:4566/bucket/key?x-id=PutObject`) as signed at `at`
    /// and valid `expires_secs`; `host` and `headers` (e.g. `content-type`) are
    /// signed. Uses the same canonicalization as [`verify_presigned`], so it
    /// forges URLs for tests but is no independent check of it.
    pub fn presign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        at: DateTime<Utc>,
        expires_secs: u64,
    ) -> Result<String> {
        let parsed = reqwest::Url::parse(url)?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(format!("no host in {url}").into()),
        };
        let amz_date = at.format(AMZ_DATE_FORMAT).to_string();
        let date = at.format("%Y%m%d").to_string();
        let credential = format!(
            "{}/{date}/{}/s3/aws4_request",
            self.access_key_id, self.region
        );
        let mut header_map = HeaderMap::new();
        header_map.insert(http::header::HOST, host.parse()?);
        for (name, value) in headers {
            header_map.append(
                http::HeaderName::from_bytes(name.as_bytes())?,
                value.parse()?,
            );
        }
        let mut names: Vec<String> = header_map.keys().map(|n| n.as_str().to_owned()).collect();
        names.sort();
        names.dedup();
        let mut pairs = query_pairs(parsed.query().unwrap_or(""));
        for (name, value) in [
            ("X-Amz-Algorithm", ALGORITHM.to_owned()),
            ("X-Amz-Credential", credential.clone()),
            ("X-Amz-Date", amz_date.clone()),
            ("X-Amz-Expires", expires_secs.to_string()),
            ("X-Amz-SignedHeaders", names.join(";")),
        ] {
            pairs.push((name.as_bytes().to_vec(), value.into_bytes()));
        }
        let path = canonical_uri(parsed.path());
        let query = canonical_query(&pairs);
        let headers_block =
            canonical_headers(&header_map, &names).ok_or("a signed header has no value")?;
        let canonical_request = format!(
            "{method}\n{path}\n{query}\n{headers_block}\n{}\n{UNSIGNED_PAYLOAD}",
            names.join(";")
        );
        let to_sign = string_to_sign(
            &amz_date,
            &credential_scope(&credential),
            &canonical_request,
        );
        let key = signing_key(self.secret_access_key, &date, self.region);
        let signature = hex(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        Ok(format!(
            "{}://{host}{path}?{query}&X-Amz-Signature={signature}",
            parsed.scheme()
        ))
    }
}

/// The scope part of `X-Amz-Credential` (everything after the access key id).
fn credential_scope(credential: &str) -> String {
    credential
        .split_once('/')
        .map(|(_, scope)| scope.to_owned())
        .unwrap_or_default()
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, canonical_request.as_bytes());
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex(hash.as_ref()))
}

/// `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), "s3"), "aws4_request")`.
fn signing_key(secret: &str, date: &str, region: &str) -> ring::hmac::Key {
    let step = |key: &[u8], data: &str| {
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            data.as_bytes(),
        )
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), "s3");
    let k_signing = step(k_service.as_ref(), "aws4_request");
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k_signing.as_ref())
}

/// The decoded `(name, value)` pairs of a raw query string (`+` is a literal
/// plus, as SigV4 signers encode a space as `%20`).
fn query_pairs(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Every parameter but `X-Amz-Signature`, each name and value URI-encoded,
/// sorted by name then value.
fn canonical_query(pairs: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| name != b"X-Amz-Signature")
        .map(|(name, value)| (uri_encode(name), uri_encode(value)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The path with each segment decoded and URI-encoded once (S3 does not
/// double-encode); `/` separators kept.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| uri_encode(&percent_decode(segment)))
        .collect::<Vec<_>>()
        .join("/")
}

/// `name:value\n` for each of `names` (lower-case, sorted): values of a
/// repeated header joined by `,`, trimmed, inner runs of spaces collapsed.
/// `None` when the request lacks one of them.
fn canonical_headers(headers: &HeaderMap, names: &[String]) -> Option<String> {
    let mut block = String::new();
    for name in names {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|value| {
                String::from_utf8_lossy(value.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return None;
        }
        block.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Some(block)
}

/// SigV4 URI encoding: unreserved `A-Z a-z 0-9 - _ . ~` kept, every other byte
/// `%XX` (upper-case hex), `/` included.
fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            // Strictly two hex digits (`from_str_radix` alone would take a `+`).
            let digits = pair.len() == 2 && pair.iter().all(u8::is_ascii_hexdigit);
            let pair = std::str::from_utf8(pair).ok().filter(|_| digits)?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A running front: presigned requests are verified, everything is forwarded
/// to the upstream S3 emulator unless refused.
#[derive(Clone)]
pub struct S3Front {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    refusals: Arc<Mutex<BTreeMap<String, usize>>>,
    verified: Arc<AtomicUsize>,
    mirror: Option<S3Mirror>,
}

impl S3Front {
    /// Starts a front to `upstream` (e.g. moto's endpoint) that accepts
    /// presigned URLs signed with this one key pair.
    pub async fn start(
        upstream: &str,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self> {
        Self::serve(upstream, access_key_id, secret_access_key, None).await
    }

    /// Starts a front as [`start`](Self::start) does that also mirrors
    /// `bucket`'s objects into `dir` ([`S3Mirror`], reading `upstream`
    /// directly). After the upstream accepts (2xx) a request that changes the
    /// bucket's objects, and before the front answers, the mirror is brought
    /// up to date: for a request naming one key (PutObject, CopyObject, object
    /// tagging, DeleteObject, CompleteMultipartUpload, a POST form upload) that
    /// key is read back, for any other (DeleteObjects) the whole bucket is
    /// reconciled. When that fails the front logs it to stderr and answers 500
    /// `InternalError` instead. `dir` must already match the bucket (a
    /// [`restore`](crate::s3_mirror::restore) into the new bucket first), and
    /// requests must be path-style (`/<bucket>/<key>`).
    pub async fn start_mirrored(
        upstream: &str,
        access_key_id: &str,
        secret_access_key: &str,
        bucket: &str,
        dir: &std::path::Path,
    ) -> Result<Self> {
        let s3 = crate::aws::s3_client(upstream.trim_end_matches('/')).await;
        let mirror = S3Mirror::new(s3, bucket, dir)?;
        Self::serve(upstream, access_key_id, secret_access_key, Some(mirror)).await
    }

    async fn serve(
        upstream: &str,
        access_key_id: &str,
        secret_access_key: &str,
        mirror: Option<S3Mirror>,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let refusals: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let verified: Arc<AtomicUsize> = Arc::default();
        let client = crate::http_client();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let key_pair = Arc::new((access_key_id.to_owned(), secret_access_key.to_owned()));
        let (tally, passed) = (refusals.clone(), verified.clone());
        let mirrored = mirror.clone();
        crate::http_server::serve(listener, move |req, _peer| {
            let (client, upstream, key_pair) = (client.clone(), upstream.clone(), key_pair.clone());
            let (tally, passed) = (tally.clone(), passed.clone());
            let mirror = mirrored.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let query = parts.uri.query().unwrap_or("");
                if let Some(preflight) = cors_preflight(&parts) {
                    return answer_preflight(&client, &upstream, preflight).await;
                }
                // Any other OPTIONS carries the URL's query but is not the signed request.
                if parts.method != Method::OPTIONS && is_presigned(query) {
                    let secret_for = |akid: &str| (akid == key_pair.0).then(|| key_pair.1.clone());
                    let checked = verify_presigned(
                        parts.method.as_str(),
                        parts.uri.path(),
                        query,
                        &parts.headers,
                        secret_for,
                        Utc::now(),
                    )
                    .and_then(|()| check_body_length(&parts.headers, query, body.len()));
                    match checked {
                        Ok(()) => {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(refusal) => {
                            *tally
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(refusal.code.to_owned())
                                .or_default() += 1;
                            return refusal_response(&refusal);
                        }
                    }
                }
                let Some(mirror) = mirror else {
                    return forward(&client, &upstream, parts, body).await;
                };
                let change = change_of(&parts, &body, mirror.bucket());
                let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
                let answer = forward(&client, &upstream, parts, body).await;
                let accepted = answer.status().is_success()
                    || (method == Method::POST && answer.status().is_redirection());
                match change {
                    Some(change) if accepted => {
                        mirror_change(&mirror, change, &method, &path, answer).await
                    }
                    _ => answer,
                }
            }
        });
        Ok(Self {
            endpoint,
            refusals,
            verified,
            mirror,
        })
    }

    /// The mirror of a front started with
    /// [`start_mirrored`](Self::start_mirrored).
    pub fn mirror(&self) -> Option<&S3Mirror> {
        self.mirror.as_ref()
    }

    /// Presigned requests refused so far, by S3 error code.
    pub fn refusals(&self) -> BTreeMap<String, usize> {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many presigned requests passed verification and were forwarded.
    pub fn verified(&self) -> usize {
        self.verified.load(Ordering::SeqCst)
    }
}

/// What an accepted request changed in the mirrored bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// One key's object (written, re-tagged or deleted).
    Key(String),
    /// Keys the request does not simply name (DeleteObjects' body).
    Bucket,
}

/// What `parts` (with `body`) would change in `bucket`'s objects, if the
/// upstream accepts it; `None` for reads, other buckets, bucket settings and
/// the steps of a multipart upload before it completes.
fn change_of(parts: &http::request::Parts, body: &[u8], bucket: &str) -> Option<Change> {
    let method = &parts.method;
    if ![Method::PUT, Method::POST, Method::DELETE].contains(method) {
        return None;
    }
    let path = parts.uri.path().strip_prefix('/')?;
    let (bucket_part, key_part) = path.split_once('/').unwrap_or((path, ""));
    if percent_decode(bucket_part) != bucket.as_bytes() {
        return None;
    }
    let names: Vec<Vec<u8>> = query_pairs(parts.uri.query().unwrap_or(""))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let has = |wanted: &str| names.iter().any(|name| name == wanted.as_bytes());
    let post = *method == Method::POST;
    if key_part.is_empty() {
        // PUT and DELETE of the bucket itself create, configure or delete it.
        if !post {
            return None;
        }
        let form_key = (!has("delete"))
            .then(|| {
                let content_type = parts.headers.get(http::header::CONTENT_TYPE)?;
                form_field(content_type.to_str().ok()?, body, "key")
            })
            .flatten()
            // S3 puts the file's name there: left to a resync.
            .filter(|key| !key.contains("${filename}"));
        return Some(form_key.map_or(Change::Bucket, Change::Key));
    }
    // UploadPart, AbortMultipartUpload, CreateMultipartUpload and SelectObjectContent
    // leave the bucket's objects as they are.
    if (has("uploadId") && !post) || (post && (has("uploads") || has("select"))) {
        return None;
    }
    Some(String::from_utf8(percent_decode(key_part)).map_or(Change::Bucket, Change::Key))
}

/// The value of field `wanted` (name compared case-insensitively) of a
/// `multipart/form-data` body (RFC 7578); `None` when there is none.
fn form_field(content_type: &str, body: &[u8], wanted: &str) -> Option<String> {
    let (essence, params) = content_type.split_once(';')?;
    if !essence.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.split(';').find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })?;
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    // Skip the preamble, then one part per delimiter until the closing one.
    let mut at = find(rest, delimiter.as_bytes())?;
    loop {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            return None;
        }
        let end = find(rest, delimiter.as_bytes())?;
        let part = &rest[..end];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = find(part, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&part[..split]).ok()?;
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let name = head.split("\r\n").find_map(|line| {
            let (header, value) = line.split_once(':')?;
            if !header.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            value.split(';').find_map(|param| {
                let (name, value) = param.split_once('=')?;
                (name.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
            })
        });
        if name.is_some_and(|name| name.eq_ignore_ascii_case(wanted)) {
            return String::from_utf8(content.to_vec()).ok();
        }
        at = end;
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Brings the mirror up to date for `change`, then returns `answer`; a
/// failure is logged and answered 500 instead.
async fn mirror_change(
    mirror: &S3Mirror,
    change: Change,
    method: &Method,
    path: &str,
    answer: Response<Body>,
) -> Response<Body> {
    let updated = match &change {
        Change::Key(key) => mirror.sync_key(key).await.map(|_| ()),
        Change::Bucket => mirror.resync().await.map(|_| ()),
    };
    match updated {
        Ok(()) => answer,
        Err(e) => {
            eprintln!(
                "s3 front: {method} {path} was accepted but the mirror of bucket {} in {} \
                 failed ({change:?}): {e}",
                mirror.bucket(),
                mirror.dir().path().display()
            );
            refusal_response(&Refusal::new(
                500,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))
        }
    }
}

/// When `content-length` is signed, the body forwarded must be that long.
fn check_body_length(
    headers: &HeaderMap,
    query: &str,
    body_len: usize,
) -> std::result::Result<(), Refusal> {
    let signs_length = query_pairs(query).iter().any(|(name, value)| {
        name == b"X-Amz-SignedHeaders"
            && value
                .split(|&b| b == b';')
                .any(|n| n.eq_ignore_ascii_case(b"content-length"))
    });
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if signs_length && declared != Some(body_len) {
        return Err(Refusal::mismatch());
    }
    Ok(())
}

/// A browser's CORS preflight: the bucket, `Origin`, the requested method
/// and the raw `Access-Control-Request-Headers`.
struct Preflight {
    bucket: String,
    origin: String,
    method: String,
    headers: String,
}

fn cors_preflight(parts: &http::request::Parts) -> Option<Preflight> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if parts.method != Method::OPTIONS {
        return None;
    }
    Some(Preflight {
        bucket: parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()?
            .to_owned(),
        origin: header("origin")?,
        method: header("access-control-request-method")?,
        headers: header("access-control-request-headers").unwrap_or_default(),
    })
}

/// Answers a preflight as S3 does, from the bucket's CORS rules in moto.
async fn answer_preflight(
    client: &reqwest::Client,
    upstream: &str,
    preflight: Preflight,
) -> Response<Body> {
    let rules = match client
        .get(format!("{upstream}/{}?cors", preflight.bucket))
        .send()
        .await
    {
        Ok(resp) if resp.status().is_success() => {
            crate::s3_cors::parse_rules(&resp.text().await.unwrap_or_default())
        }
        Ok(_) => Vec::new(),
        Err(_) => {
            let mut out = Response::new(full(Bytes::from_static(b"upstream down")));
            *out.status_mut() = StatusCode::BAD_GATEWAY;
            return out;
        }
    };
    match crate::s3_cors::preflight(
        &rules,
        &preflight.origin,
        &preflight.method,
        &preflight.headers,
    ) {
        Ok(headers) => {
            let mut out = Response::new(full(Bytes::new()));
            for (name, value) in headers {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    out.headers_mut().insert(name, value);
                }
            }
            out
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

fn refusal_response(refusal: &Refusal) -> Response<Body> {
    let mut out = Response::new(full(refusal.xml()));
    *out.status_mut() = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    out
}

/// Forwards one request to `upstream` and returns its answer (502 when the
/// upstream cannot be reached).
async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    parts: http::request::Parts,
    body: Bytes,
) -> Response<Body> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut fwd = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        // The client sets host and content-length for the upstream and the real body.
        if name != http::header::HOST
            && name != http::header::CONTENT_LENGTH
            && !HOP_BY_HOP.contains(&name.as_str())
        {
            fwd = fwd.header(name, value);
        }
    }
    let head = parts.method == Method::HEAD;
    match fwd.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = Response::new(full(bytes));
            *out.status_mut() = status;
            for (name, value) in &headers {
                // A HEAD answer keeps the object's length; others get the real body's.
                let length = name == http::header::CONTENT_LENGTH;
                if (!length || head) && !HOP_BY_HOP.contains(&name.as_str()) {
                    out.headers_mut().append(name, value.clone());
                }
            }
            out
        }
        Err(_) => {
            let mut out = Response::new(full(Bytes::from_static(b"upstream down")));
            *out.status_mut() = StatusCode::BAD_GATEWAY;
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example (sigv4-query-string-auth.html, "An Example").
    const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const AWS_QUERY: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

    /// Presigned by botocore 1.44.8 (`generate_presigned_url`, path style,
    /// endpoint `http://127.0.0.1:4566`, region eu-west-3, clock fixed at
    /// 2025-03-14T09:26:53Z): a PUT with `ContentType: image/jpeg` of key
    /// `user 1/photo (1)~ü.jpg`, and a GET of key `a/b+c=d&e.txt` with a
    /// `response-content-disposition` override.
    const BOTO_KEY: &str = "testing-akid";
    const BOTO_SECRET: &str = "testing/secret+key";
    const BOTO_HOST: &str = "127.0.0.1:4566";
    const BOTO_PUT_PATH: &str = "/uploads/user%201/photo%20%281%29~%C3%BC.jpg";
    const BOTO_PUT_QUERY: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=testing-akid%2F20250314%2Feu-west-3%2Fs3%2Faws4_request\
        &X-Amz-Date=20250314T092653Z&X-Amz-Expires=900&X-Amz-SignedHeaders=content-type%3Bhost\
        &X-Amz-Signature=4a65dbaa27040b2b52fa77ec8fdd90d44e81bedf9b234abf373e317cef9c7876";
    const BOTO_GET_PATH: &str = "/uploads/a/b%2Bc%3Dd%26e.txt";
    const BOTO_GET_QUERY: &str = "response-content-disposition=\
        attachment%3B%20filename%3D%22r%C3%A9sum%C3%A9%20v2.pdf%22\
        &X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=testing-akid%2F20250314%2Feu-west-3%2Fs3%2Faws4_request\
        &X-Amz-Date=20250314T092653Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=6e936e5166a95fdc4b72cd56122b9f870c14c51bd9e1f0b2d06604d05cfe5528";

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn aws(key: &str) -> Option<String> {
        (key == AWS_KEY).then(|| AWS_SECRET.to_owned())
    }

    fn boto(key: &str) -> Option<String> {
        (key == BOTO_KEY).then(|| BOTO_SECRET.to_owned())
    }

    fn check_aws(path: &str, query: &str, now: &str) -> std::result::Result<(), Refusal> {
        let host = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        verify_presigned("GET", path, query, &host, aws, at(now))
    }

    fn code(result: std::result::Result<(), Refusal>) -> &'static str {
        result.err().map(|r| r.code).unwrap_or("accepted")
    }

    #[test]
    fn aws_documented_example_verifies() {
        assert_eq!(
            check_aws("/test.txt", AWS_QUERY, "2013-05-24T00:00:00Z"),
            Ok(())
        );
        // Valid until the last second of its 86400.
        assert_eq!(
            check_aws("/test.txt", AWS_QUERY, "2013-05-25T00:00:00Z"),
            Ok(())
        );
        assert!(is_presigned(AWS_QUERY));
        assert!(!is_presigned("list-type=2&prefix=a"));
    }

    #[test]
    fn tampered_request_does_not_match() {
        let now = "2013-05-24T01:00:00Z";
        let longer = AWS_QUERY.replace("X-Amz-Expires=86400", "X-Amz-Expires=86401");
        let mismatch = check_aws("/test.txt", &longer, now).unwrap_err();
        assert_eq!(mismatch.code, "SignatureDoesNotMatch");
        assert_eq!(mismatch.status, 403);
        assert!(
            mismatch
                .xml()
                .contains("<CanonicalRequest>GET\n/test.txt\n")
        );
        let extra = format!("{AWS_QUERY}&x-id=GetObject");
        assert_eq!(
            code(check_aws("/test.txt", &extra, now)),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            code(check_aws("/other.txt", AWS_QUERY, now)),
            "SignatureDoesNotMatch"
        );
        let host = headers(&[("host", "evilbucket.s3.amazonaws.com")]);
        let moved = verify_presigned("GET", "/test.txt", AWS_QUERY, &host, aws, at(now));
        assert_eq!(code(moved), "SignatureDoesNotMatch");
        let host = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let put = verify_presigned("PUT", "/test.txt", AWS_QUERY, &host, aws, at(now));
        assert_eq!(code(put), "SignatureDoesNotMatch");
        let wrong_secret = |_: &str| Some("not-the-secret".to_owned());
        let forged = verify_presigned("GET", "/test.txt", AWS_QUERY, &host, wrong_secret, at(now));
        assert_eq!(code(forged), "SignatureDoesNotMatch");
        let signed = AWS_QUERY.replace("X-Amz-Signature=aeee", "X-Amz-Signature=AEEE");
        assert_eq!(check_aws("/test.txt", &signed, now), Ok(()));
        let plus = AWS_QUERY.replace("X-Amz-Signature=ae", "X-Amz-Signature=%2Be");
        assert_eq!(
            code(check_aws("/test.txt", &plus, now)),
            "SignatureDoesNotMatch"
        );
        let garbled = AWS_QUERY.replace("X-Amz-Signature=aeee", "X-Amz-Signature=zzzz");
        assert_eq!(
            code(check_aws("/test.txt", &garbled, now)),
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn expired_is_access_denied() {
        let late = check_aws("/test.txt", AWS_QUERY, "2013-05-25T00:00:01Z").unwrap_err();
        assert_eq!(
            (late.status, late.code, late.message.as_str()),
            (403, "AccessDenied", "Request has expired")
        );
        let now = "2013-05-24T01:00:00Z";
        let too_long = AWS_QUERY.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801");
        assert_eq!(code(check_aws("/test.txt", &too_long, now)), "AccessDenied");
        let bad_date = AWS_QUERY.replace("20130524T000000Z", "2013-05-24T00:00:00Z");
        assert_eq!(code(check_aws("/test.txt", &bad_date, now)), "AccessDenied");
        let negative = AWS_QUERY.replace("X-Amz-Expires=86400", "X-Amz-Expires=-1");
        assert_eq!(code(check_aws("/test.txt", &negative, now)), "AccessDenied");
    }

    #[test]
    fn unknown_access_key_id_is_refused() {
        let host = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let now = at("2013-05-24T01:00:00Z");
        let refused = verify_presigned("GET", "/test.txt", AWS_QUERY, &host, |_| None, now);
        assert_eq!(code(refused), "InvalidAccessKeyId");
        let other = AWS_QUERY.replace("AKIAIOSFODNN7EXAMPLE%2F", "AKIAOTHERKEY0000%2F");
        let refused = verify_presigned("GET", "/test.txt", &other, &host, aws, now);
        assert_eq!(code(refused), "InvalidAccessKeyId");
    }

    #[test]
    fn botocore_put_with_signed_content_type() {
        let now = at("2025-03-14T09:30:00Z");
        let put = |headers: &HeaderMap| {
            verify_presigned("PUT", BOTO_PUT_PATH, BOTO_PUT_QUERY, headers, boto, now)
        };
        let jpeg = headers(&[("host", BOTO_HOST), ("content-type", "image/jpeg")]);
        assert_eq!(put(&jpeg), Ok(()));
        let html = headers(&[("host", BOTO_HOST), ("content-type", "text/html")]);
        assert_eq!(code(put(&html)), "SignatureDoesNotMatch");
        let missing = headers(&[("host", BOTO_HOST)]);
        assert_eq!(code(put(&missing)), "SignatureDoesNotMatch");
        // Unsigned headers are free to vary.
        let extra = headers(&[
            ("host", BOTO_HOST),
            ("content-type", "  image/jpeg "),
            ("x-amz-meta-note", "hi"),
        ]);
        assert_eq!(put(&extra), Ok(()));
        // The same key sent with fewer escapes canonicalizes the same.
        let loose = "/uploads/user%201/photo%20(1)~%c3%bc.jpg";
        let sent = verify_presigned("PUT", loose, BOTO_PUT_QUERY, &jpeg, boto, now);
        assert_eq!(sent, Ok(()));
        let late = verify_presigned(
            "PUT",
            BOTO_PUT_PATH,
            BOTO_PUT_QUERY,
            &jpeg,
            boto,
            at("2025-03-14T09:41:54Z"),
        );
        assert_eq!(code(late), "AccessDenied");
    }

    #[test]
    fn botocore_get_with_encoded_key_and_override() {
        let now = at("2025-03-14T10:00:00Z");
        let host = headers(&[("host", BOTO_HOST)]);
        let get = |path: &str, query: &str| verify_presigned("GET", path, query, &host, boto, now);
        assert_eq!(get(BOTO_GET_PATH, BOTO_GET_QUERY), Ok(()));
        let renamed = BOTO_GET_QUERY.replace("v2.pdf", "v3.pdf");
        assert_eq!(code(get(BOTO_GET_PATH, &renamed)), "SignatureDoesNotMatch");
        // `%2B` is a plus in the key; a raw `+` in the path is the same plus.
        assert_eq!(get("/uploads/a/b+c%3Dd%26e.txt", BOTO_GET_QUERY), Ok(()));
        // `%2F` is not a separator: a different key.
        assert_eq!(
            code(get("/uploads/a%2Fb%2Bc%3Dd%26e.txt", BOTO_GET_QUERY)),
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn malformed_auth_parameters() {
        let now = "2013-05-24T01:00:00Z";
        let unsigned = AWS_QUERY.split("&X-Amz-Signature").next().unwrap();
        assert!(is_presigned(unsigned));
        let refused = check_aws("/test.txt", unsigned, now).unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (400, "AuthorizationQueryParametersError")
        );
        let lower = AWS_QUERY.replace("X-Amz-Signature=", "x-amz-signature=");
        assert!(is_presigned(&lower));
        assert_eq!(
            code(check_aws("/test.txt", &lower, now)),
            "AuthorizationQueryParametersError"
        );
        let v2 = AWS_QUERY.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1");
        assert_eq!(
            code(check_aws("/test.txt", &v2, now)),
            "AuthorizationQueryParametersError"
        );
        let scope = AWS_QUERY.replace("%2Fs3%2F", "%2Fdynamodb%2F");
        assert_eq!(
            code(check_aws("/test.txt", &scope, now)),
            "AuthorizationQueryParametersError"
        );
    }

    #[test]
    fn signer_round_trips_and_refusal_xml() {
        let signer = Signer {
            access_key_id: AWS_KEY,
            secret_access_key: AWS_SECRET,
            region: "us-east-1",
        };
        let url = signer
            .presign(
                "GET",
                "https://examplebucket.s3.amazonaws.com/test.txt",
                &[],
                at("2013-05-24T00:00:00Z"),
                86400,
            )
            .unwrap();
        assert_eq!(
            url,
            format!("https://examplebucket.s3.amazonaws.com/test.txt?{AWS_QUERY}")
        );

        let xml = Refusal::expired().xml();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
             <Message>Request has expired</Message></Error>"
        );
    }

    /// A fake S3 that answers what it received, as `method path body-length`.
    async fn echo_upstream() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<AtomicUsize> = Arc::default();
        let seen = hits.clone();
        crate::http_server::serve(listener, move |req, _| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                let head = req.method() == Method::HEAD;
                let line = format!(
                    "{} {} ct={:?} te={:?}",
                    req.method(),
                    req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
                    req.headers().get("content-type"),
                    req.headers().get("te"),
                );
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let text = format!("{line} len={}", body.len());
                let mut out = Response::new(full(if head { String::new() } else { text }));
                out.headers_mut().insert("etag", "\"abc\"".parse().unwrap());
                if head {
                    out.headers_mut()
                        .insert("content-length", "1234".parse().unwrap());
                }
                out
            }
        });
        (endpoint, hits)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn front_refuses_bad_presigned_requests_and_forwards_the_rest() {
        let (upstream, hits) = echo_upstream().await;
        let front = S3Front::start(&upstream, "front-key", "front/secret")
            .await
            .unwrap();
        let http = crate::http_client();
        let signer = Signer {
            access_key_id: "front-key",
            secret_access_key: "front/secret",
            region: "us-east-1",
        };
        let object = format!("{}/uploads/u1/a b.png?x-id=PutObject", front.endpoint);
        let put = signer
            .presign(
                "PUT",
                &object,
                &[("content-type", "image/png")],
                Utc::now(),
                300,
            )
            .unwrap();

        // The SDK's own calls (and anything unsigned) pass untouched.
        let sdk = http
            .get(format!("{}/uploads?list-type=2", front.endpoint))
            .header("authorization", "AWS4-HMAC-SHA256 Credential=...")
            .header("te", "trailers")
            .send()
            .await
            .unwrap();
        assert_eq!(sdk.status(), 200);
        assert_eq!(sdk.headers()["etag"], "\"abc\"");
        assert_eq!(
            sdk.text().await.unwrap(),
            "GET /uploads?list-type=2 ct=None te=None len=0"
        );

        // A good presigned PUT reaches the upstream with its body.
        let ok = http
            .put(&put)
            .header("content-type", "image/png")
            .body(vec![7u8; 10])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let echoed = ok.text().await.unwrap();
        assert!(echoed.starts_with("PUT /uploads/u1/a%20b.png?"), "{echoed}");
        assert!(
            echoed.ends_with("ct=Some(\"image/png\") te=None len=10"),
            "{echoed}"
        );
        assert_eq!(front.verified(), 1);

        // The same URL with another content type, or tampered, never arrives.
        let before = hits.load(Ordering::SeqCst);
        let other = http
            .put(&put)
            .header("content-type", "text/html")
            .body("<script>")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 403);
        assert_eq!(other.headers()["content-type"], "application/xml");
        assert!(
            other
                .text()
                .await
                .unwrap()
                .contains("<Code>SignatureDoesNotMatch</Code>")
        );
        let elsewhere = put.replace("/u1/", "/u2/");
        let moved = http
            .put(&elsewhere)
            .header("content-type", "image/png")
            .send()
            .await
            .unwrap();
        assert_eq!(moved.status(), 403);

        // Expired, and forged with another key.
        let old = signer
            .presign(
                "GET",
                &object,
                &[],
                Utc::now() - chrono::Duration::seconds(301),
                300,
            )
            .unwrap();
        let expired = http.get(&old).send().await.unwrap();
        assert_eq!(expired.status(), 403);
        assert!(
            expired
                .text()
                .await
                .unwrap()
                .contains("<Message>Request has expired</Message>")
        );
        let stranger = Signer {
            access_key_id: "someone-else",
            ..signer
        };
        let forged = stranger
            .presign("GET", &object, &[], Utc::now(), 300)
            .unwrap();
        assert_eq!(http.get(&forged).send().await.unwrap().status(), 403);
        assert_eq!(hits.load(Ordering::SeqCst), before);
        assert_eq!(
            front.refusals(),
            BTreeMap::from([
                ("AccessDenied".to_owned(), 1),
                ("InvalidAccessKeyId".to_owned(), 1),
                ("SignatureDoesNotMatch".to_owned(), 2),
            ])
        );

        // A CORS preflight of the URL is forwarded; a HEAD keeps the object's length.
        let preflight = http.request(Method::OPTIONS, &put).send().await.unwrap();
        assert_eq!(preflight.status(), 200);
        let head = signer
            .presign("HEAD", &object, &[], Utc::now(), 300)
            .unwrap();
        let head = http.head(&head).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "1234");
        assert_eq!(front.verified(), 2);
    }

    mod mirrored {
        use super::*;
        use crate::s3_mirror::MirroredObject;
        use crate::scratch::ScratchDir;
        use aws_sdk_s3::primitives::ByteStream;
        use aws_sdk_s3::types::{Delete, ObjectIdentifier, Tag, Tagging};

        /// A mirrored front to a new bucket in the shared moto.
        struct Fixture {
            front: S3Front,
            /// An SDK client whose calls go through the front.
            s3: aws_sdk_s3::Client,
            bucket: String,
            dir: ScratchDir,
        }

        impl Fixture {
            async fn start() -> Self {
                let moto = tokio::task::spawn_blocking(crate::moto::Moto::shared)
                    .await
                    .unwrap()
                    .unwrap();
                let direct = crate::aws::s3_client(&moto.endpoint).await;
                let bucket = format!("front-{}", ulid::Ulid::new().to_string().to_lowercase());
                direct.create_bucket().bucket(&bucket).send().await.unwrap();
                let dir = ScratchDir::new("front-mirror").unwrap();
                let front =
                    S3Front::start_mirrored(&moto.endpoint, "test", "test", &bucket, dir.path())
                        .await
                        .unwrap();
                let s3 = crate::aws::s3_client(&front.endpoint).await;
                Self {
                    front,
                    s3,
                    bucket,
                    dir,
                }
            }

            fn mirror(&self) -> &S3Mirror {
                self.front.mirror().unwrap()
            }

            fn on_disk(&self, key: &str) -> Option<MirroredObject> {
                self.mirror().dir().load(key).unwrap()
            }

            fn keys_on_disk(&self) -> Vec<String> {
                self.mirror().dir().entries().unwrap().into_keys().collect()
            }

            fn files(&self) -> usize {
                std::fs::read_dir(self.dir.path()).unwrap().count()
            }

            async fn put(&self, key: &str, body: &'static str) {
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .body(ByteStream::from_static(body.as_bytes()))
                    .send()
                    .await
                    .unwrap();
            }

            fn object_url(&self, key: &str) -> String {
                format!(
                    "{}/{}/{}",
                    self.front.endpoint,
                    self.bucket,
                    uri_encode_path(key)
                )
            }
        }

        fn uri_encode_path(key: &str) -> String {
            key.split('/')
                .map(|segment| uri_encode(segment.as_bytes()))
                .collect::<Vec<_>>()
                .join("/")
        }

        fn signer(secret: &str) -> Signer<'_> {
            Signer {
                access_key_id: "test",
                secret_access_key: secret,
                region: "us-east-1",
            }
        }

        fn parts(method: Method, uri: &str, content_type: Option<&str>) -> http::request::Parts {
            let mut request = http::Request::builder().method(method).uri(uri);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.body(()).unwrap().into_parts().0
        }

        const FORM: &str = "multipart/form-data; boundary=\"XyZ\"";

        fn form(key: &str) -> String {
            format!(
                "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"x-amz-meta-note\"\r\n\r\n\
                 from a form\r\n--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n\
                 --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
                 Content-Type: text/plain\r\n\r\nhello, form\r\n--XyZ--\r\n"
            )
        }

        #[test]
        fn form_field_reads_a_multipart_field() {
            let body = form("uploads/a b.txt");
            assert_eq!(
                form_field(FORM, body.as_bytes(), "Key").as_deref(),
                Some("uploads/a b.txt")
            );
            assert_eq!(
                form_field(FORM, body.as_bytes(), "file").as_deref(),
                Some("hello, form")
            );
            assert_eq!(form_field(FORM, body.as_bytes(), "acl"), None);
            assert_eq!(form_field("text/plain", body.as_bytes(), "key"), None);
            assert_eq!(form_field(FORM, b"--XyZ\r\nbroken", "key"), None);
        }

        #[test]
        fn requests_are_classified_by_what_they_change() {
            let change = |method: Method, uri: &str, content_type: Option<&str>, body: &str| {
                change_of(&parts(method, uri, content_type), body.as_bytes(), "b")
            };
            let key = |k: &str| Some(Change::Key(k.to_owned()));
            // Key-level writes, re-tagging and deletes name their key.
            assert_eq!(
                change(Method::PUT, "/b/a%20b/%C3%BC+?x-id=PutObject", None, ""),
                key("a b/ü+")
            );
            assert_eq!(change(Method::PUT, "/b/k?tagging", None, ""), key("k"));
            assert_eq!(change(Method::DELETE, "/b/k?tagging", None, ""), key("k"));
            assert_eq!(change(Method::DELETE, "/b/k", None, ""), key("k"));
            assert_eq!(change(Method::POST, "/b/k?uploadId=u", None, ""), key("k"));
            // A form upload names its key in the form, unless S3 fills it in.
            assert_eq!(
                change(Method::POST, "/b", Some(FORM), &form("f/1")),
                key("f/1")
            );
            assert_eq!(
                change(Method::POST, "/b/", Some(FORM), &form("f/${filename}")),
                Some(Change::Bucket)
            );
            // DeleteObjects names its keys in the body: the bucket is reconciled.
            assert_eq!(
                change(Method::POST, "/b?delete", None, "<Delete/>"),
                Some(Change::Bucket)
            );
            assert_eq!(
                change(Method::PUT, "/b/%FF", None, ""),
                Some(Change::Bucket)
            );
            // Reads, other buckets, bucket settings and unfinished uploads change nothing.
            for (method, uri) in [
                (Method::GET, "/b/k"),
                (Method::HEAD, "/b/k"),
                (Method::PUT, "/other/k"),
                (Method::PUT, "/bb/k"),
                (Method::PUT, "/b"),
                (Method::PUT, "/b?cors"),
                (Method::DELETE, "/b"),
                (Method::PUT, "/b/k?partNumber=1&uploadId=u"),
                (Method::DELETE, "/b/k?uploadId=u"),
                (Method::POST, "/b/k?uploads"),
            ] {
                assert_eq!(
                    change(method.clone(), uri, None, ""),
                    None,
                    "{method} {uri}"
                );
            }
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn put_object_is_on_disk_when_acknowledged() {
            let f = Fixture::start().await;
            let key = "attachments/a b/ü?#%";
            f.s3.put_object()
                .bucket(&f.bucket)
                .key(key)
                .body(ByteStream::from_static(b"\x89PNG\r\n\x1a\n"))
                .content_type("image/png")
                .content_disposition("inline")
                .metadata("owner", "alice")
                .tagging("taskpilot-attachment=pending")
                .send()
                .await
                .unwrap();
            let stored = f.on_disk(key).unwrap();
            assert_eq!(&stored.body[..], b"\x89PNG\r\n\x1a\n");
            assert_eq!(stored.content_type.as_deref(), Some("image/png"));
            assert_eq!(stored.content_disposition.as_deref(), Some("inline"));
            // The SDK's chunked upload encoding is transport, not the object's.
            assert_eq!(stored.content_encoding, None);
            assert_eq!(stored.metadata["owner"], "alice");
            assert_eq!(stored.tags["taskpilot-attachment"], "pending");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn presigned_put_is_mirrored() {
            let f = Fixture::start().await;
            let key = "attachments/01JPRESIGNED";
            let headers = [
                ("content-type", "image/jpeg"),
                ("x-amz-tagging", "taskpilot-attachment=pending"),
            ];
            let url = signer("test")
                .presign("PUT", &f.object_url(key), &headers, Utc::now(), 300)
                .unwrap();
            let mut put = crate::http_client().put(&url).body("jpeg bytes");
            for (name, value) in headers {
                put = put.header(name, value);
            }
            assert_eq!(put.send().await.unwrap().status(), 200);
            let stored = f.on_disk(key).unwrap();
            assert_eq!(&stored.body[..], b"jpeg bytes");
            assert_eq!(stored.content_type.as_deref(), Some("image/jpeg"));
            assert_eq!(stored.tags["taskpilot-attachment"], "pending");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn form_post_upload_is_mirrored() {
            let f = Fixture::start().await;
            let answer = crate::http_client()
                .post(format!("{}/{}", f.front.endpoint, f.bucket))
                .header("content-type", FORM)
                .body(form("uploads/from form.txt"))
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success(), "{}", answer.status());
            let stored = f.on_disk("uploads/from form.txt").unwrap();
            assert_eq!(&stored.body[..], b"hello, form");
            assert_eq!(stored.metadata["note"], "from a form");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn copy_object_is_mirrored() {
            let f = Fixture::start().await;
            f.put("source", "copied bytes").await;
            f.s3.copy_object()
                .bucket(&f.bucket)
                .key("target")
                .copy_source(format!("{}/source", f.bucket))
                .send()
                .await
                .unwrap();
            assert_eq!(&f.on_disk("target").unwrap().body[..], b"copied bytes");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn put_object_tagging_is_mirrored() {
            let f = Fixture::start().await;
            f.put("k", "bytes").await;
            let tagging = Tagging::builder()
                .tag_set(
                    Tag::builder()
                        .key("taskpilot-attachment")
                        .value("used")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap();
            f.s3.put_object_tagging()
                .bucket(&f.bucket)
                .key("k")
                .tagging(tagging)
                .send()
                .await
                .unwrap();
            let stored = f.on_disk("k").unwrap();
            assert_eq!(stored.tags["taskpilot-attachment"], "used");
            assert_eq!(&stored.body[..], b"bytes");
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn delete_object_removes_the_files() {
            let f = Fixture::start().await;
            f.put("k", "bytes").await;
            assert_eq!(f.files(), 2);
            f.s3.delete_object()
                .bucket(&f.bucket)
                .key("k")
                .send()
                .await
                .unwrap();
            assert_eq!(f.on_disk("k"), None);
            assert_eq!(f.files(), 0);
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn delete_objects_removes_the_files() {
            let f = Fixture::start().await;
            for key in ["a", "b", "c"] {
                f.put(key, "bytes").await;
            }
            let delete = Delete::builder()
                .objects(ObjectIdentifier::builder().key("a").build().unwrap())
                .objects(ObjectIdentifier::builder().key("c").build().unwrap())
                .build()
                .unwrap();
            f.s3.delete_objects()
                .bucket(&f.bucket)
                .delete(delete)
                .send()
                .await
                .unwrap();
            assert_eq!(f.keys_on_disk(), ["b"]);
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn forged_presigned_put_mirrors_nothing() {
            let f = Fixture::start().await;
            let url = signer("not-the-secret")
                .presign("PUT", &f.object_url("forged"), &[], Utc::now(), 300)
                .unwrap();
            let answer = crate::http_client()
                .put(&url)
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 403);
            assert_eq!(f.mirror().updates(), 0);
            assert_eq!(f.files(), 0);
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn request_the_upstream_refuses_mirrors_nothing() {
            let f = Fixture::start().await;
            let copied =
                f.s3.copy_object()
                    .bucket(&f.bucket)
                    .key("target")
                    .copy_source(format!("{}/no-such-source", f.bucket))
                    .send()
                    .await;
            let status = copied
                .unwrap_err()
                .raw_response()
                .map(|r| r.status().as_u16());
            assert_eq!(status, Some(404));
            assert_eq!(f.mirror().updates(), 0);
            assert_eq!(f.files(), 0);
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn mirror_failure_answers_500() {
            let f = Fixture::start().await;
            // The mirror's directory becomes a file: nothing can be written there.
            std::fs::remove_dir_all(f.dir.path()).unwrap();
            std::fs::write(f.dir.path(), "not a directory").unwrap();
            let answer = crate::http_client()
                .put(f.object_url("k"))
                .body("bytes")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 500);
            assert!(
                answer
                    .text()
                    .await
                    .unwrap()
                    .contains("<Code>InternalError</Code>")
            );
            std::fs::remove_file(f.dir.path()).unwrap();
        }
    }
}

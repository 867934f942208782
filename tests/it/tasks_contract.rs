//! Contract tests: API Gateway v2 events, with and without JWT authorizer
//! claims, fed straight to the real `tasks` binary through the Lambda Runtime
//! API; and the in-function JWT verification (HS256 and JWKS with RS256,
//! ES256 and EdDSA) against its classic pitfalls.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use emulators::build::{self, Profile};
use emulators::runtime_api::{FunctionConfig, InvokeError, LambdaFunction};
use emulators::tokens::DevAuth;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use taskpilot_testkit::stack::{base_env, fresh_table};

/// A table and a way to start `tasks` processes with a chosen environment.
struct Fixture {
    env: Vec<(String, String)>,
    auth: DevAuth,
}

impl Fixture {
    async fn new() -> Self {
        let (_, table, endpoint) = fresh_table("contract").await.unwrap();
        let auth = DevAuth::default();
        Self {
            env: base_env(&endpoint, &table, &auth),
            auth,
        }
    }

    /// A `tasks` function; `overrides` replace or (with an empty value) remove variables.
    fn function(&self, overrides: &[(&str, &str)]) -> LambdaFunction {
        let binary = build::binaries(&["tasks"], Profile::Dev).unwrap().remove(0);
        let mut env = self.env.clone();
        for (k, v) in overrides {
            env.retain(|(name, _)| name != k);
            if !v.is_empty() {
                env.push(((*k).to_owned(), (*v).to_owned()));
            }
        }
        LambdaFunction::new(FunctionConfig {
            name: "tasks".into(),
            binary,
            env,
            timeout: Duration::from_secs(10),
            max_instances: 2,
            echo_logs: false,
        })
    }
}

/// An API Gateway HTTP API (v2) event.
fn event(
    method: &str,
    path: &str,
    bearer: Option<&str>,
    claims: Option<Value>,
    body: Option<Value>,
) -> Value {
    let mut headers = json!({"content-type": "application/json", "user-agent": "contract-test"});
    if let Some(token) = bearer {
        headers["authorization"] = json!(format!("Bearer {token}"));
    }
    let mut ctx = json!({
        "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
        "domainPrefix": "api",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                 "sourceIp": "203.0.113.9", "userAgent": "contract-test"},
        "requestId": "req-1", "routeKey": "$default", "stage": "$default",
        "time": "22/Nov/2026:10:00:00 +0000", "timeEpoch": 1795341600000i64
    });
    if let Some(claims) = claims {
        ctx["authorizer"] = json!({"jwt": {"claims": claims, "scopes": null}});
    }
    let mut e = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": headers, "requestContext": ctx, "isBase64Encoded": false
    });
    if let Some(body) = body {
        e["body"] = json!(body.to_string());
    }
    e
}

/// Invokes and decodes `(status, body)`.
async fn call(f: &LambdaFunction, event: Value) -> (u16, Value) {
    let raw = f
        .invoke(event.to_string())
        .await
        .expect("invocation answers");
    let resp: Value = serde_json::from_slice(&raw).unwrap();
    let status = resp["statusCode"].as_u64().unwrap() as u16;
    let body = resp["body"]
        .as_str()
        .filter(|b| !b.is_empty())
        .map(|b| serde_json::from_str(b).unwrap())
        .unwrap_or(Value::Null);
    (status, body)
}

fn claims_for(auth: &DevAuth, sub: Option<&str>) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"iss": auth.issuer, "aud": auth.audience, "iat": now, "exp": now + 600});
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authorizer_claims_are_the_identity_and_win_over_headers() {
    let fx = Fixture::new().await;
    // Deployed behind API Gateway's authorizer: no key source configured.
    let gated = fx.function(&[("AUTH_JWT_SECRET", "")]);
    let claims = json!({"sub": "alice", "iss": fx.auth.issuer, "aud": fx.auth.audience});
    let (status, task) = call(
        &gated,
        event(
            "POST",
            "/api/v1/tasks",
            None,
            Some(claims.clone()),
            Some(json!({"title":"via authorizer"})),
        ),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    // A forged bearer for another user does not override the verified claims.
    let mallory = fx.auth.token("mallory");
    let (status, listing) = call(
        &gated,
        event("GET", "/api/v1/tasks", Some(&mallory), Some(claims), None),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listing["tasks"][0]["id"], task["id"]);
    // Without claims and without a key source, nothing is accepted.
    let (status, body) = call(
        &gated,
        event("GET", "/api/v1/tasks", Some(&mallory), None, None),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    // In-function verification sees the same data for the same subject.
    let verifying = fx.function(&[]);
    let alice = fx.auth.token("alice");
    let path = format!("/api/v1/tasks/{}", task["id"].as_str().unwrap());
    let (status, got) = call(&verifying, event("GET", &path, Some(&alice), None, None)).await;
    assert_eq!((status, &got), (200, &task));
    let (status, _) = call(&verifying, event("GET", &path, Some(&mallory), None, None)).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_pitfalls_are_rejected() {
    let fx = Fixture::new().await;
    let f = fx.function(&[]);
    let a = &fx.auth;
    let hs = |header: Header, claims: Value, secret: &str| {
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let now = chrono::Utc::now().timestamp();
    let good = claims_for(a, Some("alice"));
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&good)
    );
    let valid = hs(Header::new(Algorithm::HS256), good.clone(), &a.secret);
    let mut bad_sig = valid.clone();
    let flip = bad_sig.pop().unwrap();
    bad_sig.push(if flip == 'A' { 'B' } else { 'A' });
    let rejected = vec![
        ("alg none", unsigned),
        (
            "wrong alg (HS384)",
            hs(Header::new(Algorithm::HS384), good.clone(), &a.secret),
        ),
        (
            "other secret",
            hs(
                Header::new(Algorithm::HS256),
                good.clone(),
                "another-secret-another-secret-xx",
            ),
        ),
        ("bad signature", bad_sig),
        (
            "wrong iss",
            hs(
                Header::new(Algorithm::HS256),
                with("iss", json!("https://evil.example")),
                &a.secret,
            ),
        ),
        (
            "wrong aud",
            hs(
                Header::new(Algorithm::HS256),
                with("aud", json!("other-api")),
                &a.secret,
            ),
        ),
        (
            "missing aud",
            hs(Header::new(Algorithm::HS256), without("aud"), &a.secret),
        ),
        (
            "missing iss",
            hs(Header::new(Algorithm::HS256), without("iss"), &a.secret),
        ),
        (
            "expired",
            hs(
                Header::new(Algorithm::HS256),
                with("exp", json!(now - 120)),
                &a.secret,
            ),
        ),
        (
            "missing exp",
            hs(Header::new(Algorithm::HS256), without("exp"), &a.secret),
        ),
        (
            "not yet valid",
            hs(
                Header::new(Algorithm::HS256),
                with("nbf", json!(now + 120)),
                &a.secret,
            ),
        ),
        (
            "missing sub",
            hs(Header::new(Algorithm::HS256), without("sub"), &a.secret),
        ),
        (
            "empty sub",
            hs(
                Header::new(Algorithm::HS256),
                with("sub", json!("")),
                &a.secret,
            ),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in rejected {
        let (status, body) =
            call(&f, event("GET", "/api/v1/tasks", Some(&token), None, None)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert!(
            !body.to_string().contains(&token),
            "{what}: the token is echoed"
        );
    }
    // Within the 30 s leeway an expiry is tolerated; the valid token works.
    let skewed = hs(
        Header::new(Algorithm::HS256),
        with("exp", json!(now - 10)),
        &a.secret,
    );
    for token in [valid, skewed] {
        let (status, _) = call(&f, event("GET", "/api/v1/tasks", Some(&token), None, None)).await;
        assert_eq!(status, 200);
    }
    // Other schemes are not bearer tokens.
    let mut e = event("GET", "/api/v1/tasks", None, None, None);
    e["headers"]["authorization"] = json!(format!("Token {}", a.token("alice")));
    assert_eq!(call(&f, e).await.0, 401);
}

/// The throw-away private keys in tests/fixtures/keys, as DER.
fn der(name: &str) -> Vec<u8> {
    let path = taskpilot_testkit::repo_root()
        .join("tests/fixtures/keys")
        .join(name);
    let pem = std::fs::read_to_string(path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn signing_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(&der("rs256.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_der(&der("es256.pem")),
        _ => EncodingKey::from_ed_der(&der("eddsa.pem")),
    }
}

/// A JWKS endpoint on 127.0.0.1 that counts its fetches.
async fn jwks_server(set: JwkSet) -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let body = Bytes::from(serde_json::to_vec(&set).unwrap());
    let counter = fetches.clone();
    emulators::http_server::serve(listener, move |_req, _peer| {
        counter.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        async move { hyper::Response::new(emulators::http_server::full(body)) }
    });
    (url, fetches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_verification_pins_the_algorithm() {
    let fx = Fixture::new().await;
    let algs = [
        (Algorithm::RS256, "RS256", "rsa-1"),
        (Algorithm::ES256, "ES256", "ec-1"),
        (Algorithm::EdDSA, "EdDSA", "ed-1"),
    ];
    let keys = algs
        .iter()
        .map(|(alg, _, kid)| {
            let mut jwk = Jwk::from_encoding_key(&signing_key(*alg), *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    let (url, fetches) = jwks_server(JwkSet { keys }).await;
    let claims = claims_for(&fx.auth, Some("alice"));
    let sign = |alg: Algorithm, kid: &str| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        encode(&header, &claims, &signing_key(alg)).unwrap()
    };
    for (alg, name, kid) in algs {
        let f = fx.function(&[
            ("AUTH_JWT_SECRET", ""),
            ("AUTH_JWKS_URL", &url),
            ("AUTH_JWT_ALGORITHM", name),
        ]);
        let (status, body) = call(
            &f,
            event("GET", "/api/v1/tasks", Some(&sign(alg, kid)), None, None),
        )
        .await;
        assert_eq!(status, 200, "{name}: {body}");
        // Every other algorithm is refused, even with a key the JWKS holds.
        for (other, other_name, other_kid) in algs.iter().filter(|(a, ..)| *a != alg) {
            let token = sign(*other, other_kid);
            let (status, _) =
                call(&f, event("GET", "/api/v1/tasks", Some(&token), None, None)).await;
            assert_eq!(
                status, 401,
                "{other_name} token accepted by a {name} function"
            );
        }
        // Algorithm confusion: HS256 keyed with the public key.
        let public_pem =
            std::fs::read(taskpilot_testkit::repo_root().join("tests/fixtures/keys/rs256.pub.pem"))
                .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let confused = encode(&header, &claims, &EncodingKey::from_secret(&public_pem)).unwrap();
        let (status, _) = call(
            &f,
            event("GET", "/api/v1/tasks", Some(&confused), None, None),
        )
        .await;
        assert_eq!(status, 401, "{name}: algorithm confusion");
    }

    // Unknown kids: one fetch, then no more within the minute.
    let before = fetches.load(Ordering::SeqCst);
    let f = fx.function(&[("AUTH_JWT_SECRET", ""), ("AUTH_JWKS_URL", &url)]);
    for i in 0..20 {
        let token = sign(Algorithm::RS256, &format!("unknown-{i}"));
        let (status, _) = call(&f, event("GET", "/api/v1/tasks", Some(&token), None, None)).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst) - before,
        1,
        "unknown kids fetch at most once a minute"
    );
    // The known key still works from the cache, without another fetch.
    let (status, _) = call(
        &f,
        event(
            "GET",
            "/api/v1/tasks",
            Some(&sign(Algorithm::RS256, "rsa-1")),
            None,
            None,
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fetches.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_text_is_read_from_the_raw_query_string() {
    let fx = Fixture::new().await;
    let f = fx.function(&[]);
    let token = fx.auth.token("alice");
    let body = json!({"title":"Eggs, milk"});
    let (status, task) = call(
        &f,
        event("POST", "/api/v1/tasks", Some(&token), None, Some(body)),
    )
    .await;
    assert_eq!(status, 201, "{task}");
    // API Gateway joins a repeated parameter's values with commas in
    // `queryStringParameters`, which then cannot tell `q=a,b` from
    // `q=a&q=b`: the function reads `rawQueryString`.
    let search = |raw: &str, joined: &str| {
        let mut e = event("GET", "/api/v1/tasks", Some(&token), None, None);
        e["rawQueryString"] = json!(raw);
        e["queryStringParameters"] = json!({ "q": joined });
        e
    };
    let (status, listing) = call(&f, search("q=EGGS%2C+milk", "EGGS, milk")).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["tasks"], json!([task]));
    let (status, body) = call(&f, search("q=EGGS&q=+milk", "EGGS, milk")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["parameter"], "q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_events_do_not_kill_the_process() {
    let fx = Fixture::new().await;
    let f = fx.function(&[]);
    let token = fx.auth.token("alice");
    let (status, _) = call(&f, event("GET", "/api/v1/tasks", Some(&token), None, None)).await;
    assert_eq!(status, 200);
    for garbage in [json!({"foo": 1}), json!([1, 2, 3]), json!("scheduled")] {
        match f.invoke(garbage.to_string()).await {
            Err(InvokeError::Function(_)) | Ok(_) => {}
            Err(other) => panic!("{garbage}: {other}"),
        }
    }
    let mut binary = event("POST", "/api/v1/tasks", Some(&token), None, None);
    binary["body"] = json!("%%% not base64 %%%");
    binary["isBase64Encoded"] = json!(true);
    let _ = f.invoke(binary.to_string()).await;
    let (status, _) = call(&f, event("GET", "/api/v1/tasks", Some(&token), None, None)).await;
    assert_eq!(status, 200, "the same process keeps serving");
    assert_eq!(f.cold_starts(), 1, "{}", f.logs().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_configuration_fails_at_start_up_with_a_clear_message() {
    let fx = Fixture::new().await;
    for (overrides, needle) in [
        (vec![("TABLE_NAME", "")], "TABLE_NAME"),
        (vec![("CURSOR_SIGNING_KEY", "short")], "CURSOR_SIGNING_KEY"),
        (vec![("ALLOWED_ORIGINS", "*")], "ALLOWED_ORIGINS"),
        (vec![("AUTH_JWT_SECRET", "too-short")], "AUTH_JWT_SECRET"),
        (vec![("AUTH_JWT_ALGORITHM", "RS256")], "AUTH_JWT_ALGORITHM"),
    ] {
        let f = fx.function(&overrides);
        let err = f
            .invoke(event("GET", "/api/v1/tasks", None, None, None).to_string())
            .await;
        assert!(
            matches!(err, Err(InvokeError::Crashed(_))),
            "{needle}: {err:?}"
        );
        let named = f
            .wait_for_log(|l| l.contains(needle), Duration::from_secs(60))
            .await;
        assert!(
            named.is_some(),
            "{needle} not named in: {}",
            f.logs().join("\n")
        );
    }
}

//! The routes and the probe in process, on a table fake and the OpenAI stub
//! (a loopback HTTP server speaking the real API), each HTTP answer checked
//! against the OpenAPI spec.

use std::sync::Arc;
use std::time::Duration;

use taskpilot_domain::StoreError;
use taskpilot_openai::OpenAi;
use taskpilot_secrets::{SecretCache, Secrets};
use taskpilot_testkit::handler::{Answer, call, dispatch};
use taskpilot_testkit::openai_stub::OpenAiStub;

use crate::checks::{Checks, TableStatus};

const KEY: &str = "sk-test-health";

/// A table that answers one status, or fails.
struct Table(Result<&'static str, &'static str>);

impl TableStatus for Table {
    async fn table_status(&self) -> Result<String, StoreError> {
        self.0
            .map(str::to_owned)
            .map_err(|e| StoreError::Unavailable(e.into()))
    }
}

fn openai(base_url: &str, key: &str) -> OpenAi {
    let secrets = Secrets::parse(key).unwrap();
    OpenAi::new(
        taskpilot_runtime::tls::http_client(&Default::default()).unwrap(),
        base_url,
        Duration::from_secs(5),
        Arc::new(SecretCache::fixed(secrets)),
    )
}

/// Nothing listens there: a connection is refused at once.
const NOWHERE: &str = "http://127.0.0.1:9/v1";

async fn get(checks: &Checks<Table>, path: &str) -> Answer {
    dispatch("GET", path, call("GET", path), |req| {
        crate::routes::handle(checks, req)
    })
    .await
}

#[tokio::test]
async fn the_shallow_report_is_200_and_does_no_io() {
    let checks = Checks::new(Table(Err("must not be asked")), openai(NOWHERE, KEY), false);
    for path in ["/health", "/api/v1/chatkit/health"] {
        let a = get(&checks, path).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body["status"], "healthy");
        assert_eq!(a.body["mode"], "self_hosted");
        assert_eq!(a.header("cache-control"), Some("no-store"));
        assert!(a.body.get("checks").is_none());
    }
}

#[tokio::test]
async fn with_the_placeholder_key_the_assistant_is_not_ready() {
    let checks = Checks::new(
        Table(Ok("ACTIVE")),
        openai(NOWHERE, taskpilot_secrets::PLACEHOLDER_KEY),
        true,
    );
    let a = get(&checks, "/health").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("degraded"))
    );
    assert_eq!(a.body["chatkit_ready"], false);
    assert_eq!(a.body["mode"], "hosted");
}

#[tokio::test]
async fn a_deep_report_checks_the_table_the_key_and_openai() {
    let stub = OpenAiStub::start(KEY, &[]).await.unwrap();
    let checks = Checks::new(Table(Ok("ACTIVE")), openai(&stub.base_url, KEY), false);
    let a = get(&checks, "/health?deep=true").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("healthy"))
    );
    for check in ["dynamodb", "secret", "openai"] {
        assert_eq!(a.body["checks"][check]["status"], "pass", "{check}: {a:?}");
    }
    let again = get(&checks, "/health?deep=1").await;
    assert_eq!(
        again.body["cached"], true,
        "a second deep check within 15 s is reused"
    );
}

#[tokio::test]
async fn openai_unreachable_is_degraded_and_the_table_failing_is_503() {
    let degraded = Checks::new(Table(Ok("ACTIVE")), openai(NOWHERE, KEY), false);
    let a = get(&degraded, "/health?deep=true").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("degraded"))
    );
    assert_eq!(a.body["checks"]["openai"]["status"], "fail");
    let unhealthy = Checks::new(Table(Err("unreachable")), openai(NOWHERE, KEY), false);
    let a = get(&unhealthy, "/health?deep=true").await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (503, Some("unhealthy"))
    );
    let updating = Checks::new(Table(Ok("UPDATING")), openai(NOWHERE, KEY), false);
    let a = get(&updating, "/health?deep=true").await;
    assert_eq!(a.body["checks"]["dynamodb"]["status"], "warn");
}

#[tokio::test]
async fn a_bad_value_is_422_an_unknown_parameter_400_and_other_paths_404_or_405() {
    let checks = Checks::new(Table(Ok("ACTIVE")), openai(NOWHERE, KEY), false);
    assert_eq!(get(&checks, "/health?deep=maybe").await.status, 422);
    assert_eq!(get(&checks, "/health?verbose=1").await.status, 400);
    let a = get(&checks, "/nowhere").await;
    assert_eq!((a.status, a.code()), (404, "route_not_found"));
    let a = dispatch("POST", "/health", call("POST", "/health"), |req| {
        crate::routes::handle(&checks, req)
    })
    .await;
    assert_eq!((a.status, a.header("allow")), (405, Some("GET, OPTIONS")));
}

#[tokio::test]
async fn the_probe_fails_the_invocation_only_when_unhealthy() {
    let degraded = Checks::new(Table(Ok("ACTIVE")), openai(NOWHERE, KEY), false);
    let summary = crate::probe::run(&degraded).await.unwrap();
    assert_eq!(summary["status"], "degraded");
    let unhealthy = Checks::new(Table(Err("unreachable")), openai(NOWHERE, KEY), false);
    let err = crate::probe::run(&unhealthy).await.unwrap_err();
    assert!(err.to_string().starts_with("unhealthy"), "{err}");
}

//! The real `health` binary: shallow and deep HTTP checks, and the scheduled
//! probe fed an EventBridge event through the Runtime API.
use crate::common::Api;
use emulators::runtime_api::InvokeError;
use reqwest::Method;
use serde_json::{Value, json};
use taskpilot_testkit::openai_stub::Fault;
use taskpilot_testkit::stack::{STUB_OPENAI_KEY, StackOptions};

async fn start(env: &[(&str, &str)], secret: Option<&str>) -> Api {
    Api::start_with(StackOptions {
        functions: Some(vec!["health".into()]),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        openai_secret: secret.map(str::to_owned),
        max_instances: 1,
        ..StackOptions::default()
    })
    .await
}

async fn public(api: &Api, path: &str) -> crate::common::Reply {
    api.send(Method::GET, path, None, None, &[]).await
}

fn scheduled_event() -> Value {
    taskpilot_testkit::events::scheduled_event()
}

/// The EMF metric lines the function printed, once the first has been read
/// from its output (which can trail the invocation's answer).
async fn metric_lines(api: &Api) -> Vec<Value> {
    let f = api.stack.function("health").unwrap();
    f.wait_for_log(
        |l| l.contains("\"_aws\""),
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|| panic!("no metric line: {}", f.logs().join("\n")));
    f.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shallow_and_deep_reports() {
    let api = start(&[], None).await;
    for path in ["/health", "/api/v1/chatkit/health"] {
        let r = public(&api, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body["status"], "healthy");
        assert_eq!(r.body["chatkit_ready"], true);
        assert_eq!(r.body["mode"], "self_hosted");
        assert!(r.body["version"].is_string());
        assert!(r.body.get("checks").is_none());
    }
    let deep = public(&api, "/health?deep=true").await;
    assert_eq!(deep.status, 200, "{:?}", deep.body);
    let checks = &deep.body["checks"];
    for name in ["dynamodb", "secret", "openai"] {
        assert_eq!(checks[name]["status"], "pass", "{name}: {}", checks[name]);
        assert!(checks[name]["latency_ms"].is_u64());
        assert!(checks[name]["message"].is_string());
    }
    assert_eq!(deep.body["status"], "healthy");
    let stub = api.stack.openai.as_ref().unwrap();
    let models = stub.requests_to("/v1/models");
    assert_eq!(models.len(), 1);
    assert_eq!(
        models[0].headers["authorization"],
        format!("Bearer {STUB_OPENAI_KEY}")
    );
    // A second deep request within the window is served from the last result.
    let again = public(&api, "/health?deep=true").await;
    assert_eq!(again.body["cached"], true);
    assert_eq!(
        stub.requests_to("/v1/models").len(),
        1,
        "deep checks are rate-limited"
    );
    assert_eq!(public(&api, "/health?deep=maybe").await.status, 422);
    assert_eq!(public(&api, "/health?verbose=1").await.status, 400);
    // Nothing secret in any answer or log line.
    let logs = api.stack.function("health").unwrap().logs().join("\n");
    for text in [deep.body.to_string(), logs] {
        assert!(!text.contains(STUB_OPENAI_KEY));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_dependencies_degrade_or_fail_the_report() {
    // OpenAI down: tasks still work, so the service is degraded (200).
    let api = start(&[], None).await;
    for _ in 0..3 {
        api.stack
            .openai
            .as_ref()
            .unwrap()
            .push_fault(Fault::Status {
                status: 500,
                retry_after: None,
            });
    }
    let r = public(&api, "/health?deep=true").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "degraded");
    assert_eq!(r.body["chatkit_ready"], false);
    assert_eq!(r.body["checks"]["openai"]["status"], "fail");
    assert!(!r.body.to_string().contains("scripted failure"));

    // The table is gone: unhealthy, 503.
    let api = start(&[("TABLE_NAME", "no-such-table")], None).await;
    let r = public(&api, "/health?deep=true").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["status"], "unhealthy");
    assert_eq!(r.body["checks"]["dynamodb"]["status"], "fail");

    // A placeholder key: ChatKit is not ready, OpenAI is not even asked.
    let api = start(&[], Some(taskpilot_secrets::PLACEHOLDER_KEY)).await;
    let r = public(&api, "/health").await;
    assert_eq!(
        (r.body["status"].clone(), r.body["chatkit_ready"].clone()),
        (json!("degraded"), json!(false))
    );
    let r = public(&api, "/health?deep=true").await;
    assert_eq!(r.body["checks"]["secret"]["status"], "warn");
    assert_eq!(r.body["checks"]["openai"]["status"], "warn");
    assert!(
        api.stack
            .openai
            .as_ref()
            .unwrap()
            .requests_to("/v1/models")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduled_probe_emits_a_metric_and_fails_when_unhealthy() {
    let api = start(&[], None).await;
    let f = api.stack.function("health").unwrap();
    let out = f
        .invoke(scheduled_event().to_string())
        .await
        .expect("healthy probe succeeds");
    let report: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["status"], "healthy");
    let metrics = metric_lines(&api).await;
    assert_eq!(metrics.len(), 1, "one EMF line per probe");
    let m = &metrics[0];
    assert_eq!(m["HealthCheckFailed"], 0);
    assert_eq!(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], "TaskPilot");
    let names: Vec<&str> = m["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "HealthCheckFailed",
            "DynamoDbLatency",
            "SecretLatency",
            "OpenAiLatency"
        ]
    );
    for name in &names[1..] {
        assert!(m[name].is_u64(), "{name}");
    }
    // Something that is neither HTTP nor a schedule is refused, and the process lives on.
    assert!(matches!(
        f.invoke(json!({"hello": "world"}).to_string()).await,
        Err(InvokeError::Function(_))
    ));
    assert_eq!(public(&api, "/health").await.status, 200);
    assert_eq!(f.cold_starts(), 1);

    let api = start(&[("TABLE_NAME", "no-such-table")], None).await;
    let f = api.stack.function("health").unwrap();
    match f.invoke(scheduled_event().to_string()).await {
        Err(InvokeError::Function(message)) => assert!(message.contains("unhealthy"), "{message}"),
        other => panic!("an unhealthy probe must fail the invocation: {other:?}"),
    }
    assert_eq!(metric_lines(&api).await[0]["HealthCheckFailed"], 1);
}

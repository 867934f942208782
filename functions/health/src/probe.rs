//! The scheduled probe: deep checks, one structured log line, one CloudWatch
//! EMF metric line, and a failed invocation when unhealthy.

use serde_json::{Value, json};
use taskpilot_http::metrics::Emf;

use crate::checks::{Checks, Status, TableStatus};

/// CloudWatch namespace of the metrics.
const NAMESPACE: &str = "TaskPilot";

/// Runs the probe.
pub async fn run<T: TableStatus>(checks: &Checks<T>) -> Result<Value, lambda_runtime::Error> {
    let report = checks.deep().await;
    let failed = u8::from(report.status == Status::Unhealthy);
    let deep = report.checks.as_ref();
    let latency = |f: fn(&crate::checks::DeepChecks) -> u64| deep.map(f).unwrap_or(0);
    Emf::new(NAMESPACE)
        .dimension("Service", "taskpilot-api")
        .metric("HealthCheckFailed", "Count", failed)
        .metric(
            "DynamoDbLatency",
            "Milliseconds",
            latency(|c| c.dynamodb.latency_ms),
        )
        .metric(
            "SecretLatency",
            "Milliseconds",
            latency(|c| c.secret.latency_ms),
        )
        .metric(
            "OpenAiLatency",
            "Milliseconds",
            latency(|c| c.openai.latency_ms),
        )
        .property("status", json!(report.status))
        .print();
    let summary = serde_json::to_value(&report).unwrap_or(Value::Null);
    tracing::info!(status = ?report.status, report = %summary, "health probe");
    if failed == 1 {
        return Err(format!("unhealthy: {summary}").into());
    }
    Ok(summary)
}

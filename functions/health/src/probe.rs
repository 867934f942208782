//! The scheduled probe: deep checks, one structured log line, one CloudWatch
//! EMF metric line, and a failed invocation when unhealthy.

use serde_json::{Value, json};

use crate::checks::{Checks, Status};

/// CloudWatch namespace of the metrics.
const NAMESPACE: &str = "TaskPilot";

/// Runs the probe.
pub async fn run(checks: &Checks) -> Result<Value, lambda_runtime::Error> {
    let report = checks.deep().await;
    let failed = u8::from(report.status == Status::Unhealthy);
    let deep = report.checks.as_ref();
    let latency = |f: fn(&crate::checks::DeepChecks) -> u64| deep.map(f).unwrap_or(0);
    let emf = json!({
        "_aws": {
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service"]],
                "Metrics": [
                    {"Name": "HealthCheckFailed", "Unit": "Count"},
                    {"Name": "DynamoDbLatency", "Unit": "Milliseconds"},
                    {"Name": "SecretLatency", "Unit": "Milliseconds"},
                    {"Name": "OpenAiLatency", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Service": "taskpilot-api",
        "HealthCheckFailed": failed,
        "DynamoDbLatency": latency(|c| c.dynamodb.latency_ms),
        "SecretLatency": latency(|c| c.secret.latency_ms),
        "OpenAiLatency": latency(|c| c.openai.latency_ms),
        "status": report.status,
    });
    // EMF must be a line of its own on stdout.
    println!("{emf}");
    let summary = serde_json::to_value(&report).unwrap_or(Value::Null);
    tracing::info!(status = ?report.status, report = %summary, "health probe");
    if failed == 1 {
        return Err(format!("unhealthy: {summary}").into());
    }
    Ok(summary)
}

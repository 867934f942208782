//! The health report: shallow (configuration and cached state only) or deep
//! (DynamoDB, the secret and OpenAI, checked for real, at most every 15 s per
//! instance).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use taskpilot_domain::StoreError;
use taskpilot_openai::{Call, OpenAi};
use taskpilot_store::DynamoStore;

/// Shortest time between two real deep checks in one instance.
pub const DEEP_MIN_INTERVAL: Duration = Duration::from_secs(15);
/// Budget of the OpenAI reachability check.
const OPENAI_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything works.
    Healthy,
    /// Tasks work; the assistant does not.
    Degraded,
    /// Core dependencies fail.
    Unhealthy,
}

/// One dependency check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `pass`, `warn` or `fail`.
    pub status: &'static str,
    /// How long it took.
    pub latency_ms: u64,
    /// What was found.
    pub message: String,
}

/// Deep check results.
#[derive(Debug, Clone, Serialize)]
pub struct DeepChecks {
    /// DescribeTable.
    pub dynamodb: Check,
    /// GetSecretValue.
    pub secret: Check,
    /// `GET /models`.
    pub openai: Check,
}

/// The report served and logged.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Overall status.
    pub status: Status,
    /// Whether the assistant can answer.
    pub chatkit_ready: bool,
    /// Build version.
    pub version: &'static str,
    /// `self_hosted` or `hosted`.
    pub mode: &'static str,
    /// Deep results, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<DeepChecks>,
    /// Whether a deep report was served from the last 15 s.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// The table's state, as DescribeTable reports it (`ACTIVE`, …).
pub trait TableStatus: Send + Sync {
    /// The status, or why it could not be read.
    fn table_status(&self) -> impl Future<Output = Result<String, StoreError>> + Send;
}

impl TableStatus for DynamoStore {
    async fn table_status(&self) -> Result<String, StoreError> {
        DynamoStore::table_status(self).await
    }
}

/// The checks and their dependencies.
pub struct Checks<T> {
    store: T,
    openai: OpenAi,
    mode: &'static str,
    last_deep: Mutex<Option<(Instant, Report)>>,
}

fn timed(started: Instant, status: &'static str, message: impl Into<String>) -> Check {
    Check {
        status,
        latency_ms: started.elapsed().as_millis() as u64,
        message: message.into(),
    }
}

impl<T: TableStatus> Checks<T> {
    /// Wires the dependencies.
    pub fn new(store: T, openai: OpenAi, hosted: bool) -> Self {
        Self {
            store,
            openai,
            mode: if hosted { "hosted" } else { "self_hosted" },
            last_deep: Mutex::new(None),
        }
    }

    /// From configuration and cached state only: no I/O.
    pub async fn shallow(&self) -> Report {
        let ready = self
            .openai
            .secrets()
            .peek()
            .await
            .is_some_and(|s| !s.is_placeholder());
        Report {
            status: if ready {
                Status::Healthy
            } else {
                Status::Degraded
            },
            chatkit_ready: ready,
            version: env!("CARGO_PKG_VERSION"),
            mode: self.mode,
            checks: None,
            cached: false,
        }
    }

    /// The deep report, reusing one younger than [`DEEP_MIN_INTERVAL`].
    pub async fn deep_rate_limited(&self) -> Report {
        let mut last = self.last_deep.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < DEEP_MIN_INTERVAL
        {
            let mut report = report.clone();
            report.cached = true;
            return report;
        }
        let report = self.deep().await;
        *last = Some((Instant::now(), report.clone()));
        report
    }

    /// Checks every dependency now.
    pub async fn deep(&self) -> Report {
        let (dynamodb, (secret, key_ok)) = tokio::join!(self.check_dynamodb(), self.check_secret());
        let openai = if key_ok {
            self.check_openai().await
        } else {
            timed(Instant::now(), "warn", "skipped: no usable API key")
        };
        let status = if dynamodb.status == "fail" || secret.status == "fail" {
            Status::Unhealthy
        } else if openai.status != "pass" || secret.status != "pass" {
            Status::Degraded
        } else {
            Status::Healthy
        };
        Report {
            status,
            chatkit_ready: key_ok && openai.status == "pass",
            version: env!("CARGO_PKG_VERSION"),
            mode: self.mode,
            checks: Some(DeepChecks {
                dynamodb,
                secret,
                openai,
            }),
            cached: false,
        }
    }

    async fn check_dynamodb(&self) -> Check {
        let started = Instant::now();
        match self.store.table_status().await {
            Ok(status) if status == "ACTIVE" => timed(started, "pass", "table is ACTIVE"),
            Ok(status) => timed(started, "warn", format!("table is {status}")),
            Err(e) => timed(started, "fail", e.to_string()),
        }
    }

    /// The check, and whether a real key is available.
    async fn check_secret(&self) -> (Check, bool) {
        let started = Instant::now();
        match self.openai.secrets().check().await {
            Ok(s) if s.is_placeholder() => (
                timed(
                    started,
                    "warn",
                    "placeholder key: set a real OpenAI key in the secret",
                ),
                false,
            ),
            Ok(_) => (timed(started, "pass", "readable"), true),
            Err(e) => (timed(started, "fail", e.to_string()), false),
        }
    }

    async fn check_openai(&self) -> Check {
        let started = Instant::now();
        let call = Call {
            method: reqwest::Method::GET,
            path: "/models",
            body: None,
            header: None,
            not_found: "the models endpoint was not found (check OPENAI_BASE_URL)",
        };
        match self
            .openai
            .send(&call, Instant::now() + OPENAI_CHECK_TIMEOUT)
            .await
        {
            Ok(_) => timed(started, "pass", "reachable"),
            Err(e) => timed(started, "fail", e.to_string()),
        }
    }
}

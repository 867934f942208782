//! The table: [`DynamoStore`], the adapter every port is implemented on, and
//! what they share (the start-up warm-up, the table's status, the attribute
//! value helpers, a query over a key prefix).

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use taskpilot_domain::StoreError;

use crate::error::classify;
use crate::keys::{self, PK, SK};

/// The longest the start-up warm-up ([`DynamoStore::warm_up`]) may take.
pub const WARM_UP_BUDGET: Duration = Duration::from_millis(250);

/// TaskPilot's DynamoDB table: tasks, sessions, rate-limit counters.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl DynamoStore {
    /// An adapter over `table`, borrowing a client built once at start-up.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoStore {
    /// A Query for the rows of `pk` whose sort key starts with `prefix`.
    pub(crate) fn prefix_query(
        &self,
        pk: String,
        prefix: String,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
    }

    /// The table's status (`ACTIVE` when usable), with one DescribeTable.
    pub async fn table_status(&self) -> Result<String, StoreError> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .table
            .and_then(|t| t.table_status)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "UNKNOWN".into()))
    }

    /// Opens the connection (TLS handshake included) during init, so the first
    /// request does not pay for it: one attempt, no retries, given up after
    /// [`WARM_UP_BUDGET`]. It never fails: a DynamoDB that is slow or down at
    /// start-up must not hold every new sandbox up (the SDK's retries took
    /// 1.3-1.7 s); the first real request connects and reports errors as usual.
    pub async fn warm_up(&self) {
        self.warm_up_within(WARM_UP_BUDGET).await;
    }

    /// [`DynamoStore::warm_up`] with another time budget.
    pub async fn warm_up_within(&self, budget: Duration) {
        let attempt = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::key("WARMUP".into(), "WARMUP".into())))
            .customize()
            .config_override(
                aws_sdk_dynamodb::config::Builder::default()
                    .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
            )
            .send();
        match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %classify(e), "DynamoDB warm-up failed"),
            Err(_) => tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "DynamoDB warm-up gave up"
            ),
        }
    }
}

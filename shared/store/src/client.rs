//! The DynamoDB client, configured once per process.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;

/// A DynamoDB client with explicit timeouts and retries, sized to answer well
/// within a Lambda's deadline: 3 attempts of at most 2 s, 5 s in all.
pub fn dynamodb_client(sdk: &aws_types::SdkConfig) -> Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build();
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .build();
    Client::from_conf(config)
}

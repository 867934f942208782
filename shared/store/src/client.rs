//! The DynamoDB client, configured once per process.

use aws_sdk_dynamodb::Client;

/// A DynamoDB client. Its timeouts and retries come from `sdk`
/// (`taskpilot_runtime::aws::with_limits`, shared by every AWS client).
pub fn dynamodb_client(sdk: &aws_types::SdkConfig) -> Client {
    Client::new(sdk)
}

//! Mapping SDK errors to the domain's storage errors.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use taskpilot_domain::StoreError;

/// Error codes DynamoDB uses when it is overloaded or throttling us.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
];

/// Classifies any DynamoDB SDK error: throttling, timeouts and connection
/// failures are retryable (`Unavailable`); the rest are `Internal`.
pub fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::TimeoutError(_) => StoreError::Unavailable("DynamoDB timed out".into()),
        SdkError::DispatchFailure(_) => StoreError::Unavailable("DynamoDB is unreachable".into()),
        SdkError::ResponseError(_) => {
            StoreError::Unavailable("DynamoDB sent an unreadable response".into())
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            if RETRYABLE_CODES.contains(&code) {
                StoreError::Unavailable(format!("DynamoDB {code}"))
            } else {
                StoreError::Internal(format!(
                    "DynamoDB {code}: {}",
                    service.err().message().unwrap_or("")
                ))
            }
        }
        _ => StoreError::Internal(format!("DynamoDB request failed: {err}")),
    }
}

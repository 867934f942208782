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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_dynamodb::operation::get_item::GetItemError;

    type Failure = SdkError<GetItemError, ()>;

    fn service(code: &str, message: &str) -> Failure {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(GetItemError::generic(meta), ())
    }

    #[test]
    fn a_timeout_is_retryable() {
        let err: Failure = SdkError::timeout_error("slow");
        assert!(matches!(classify(err), StoreError::Unavailable(_)));
    }

    #[test]
    fn a_dispatch_failure_is_retryable() {
        let err: Failure = SdkError::dispatch_failure(ConnectorError::io("refused".into()));
        assert!(matches!(classify(err), StoreError::Unavailable(_)));
    }

    #[test]
    fn an_unreadable_response_is_retryable() {
        let err: Failure = SdkError::response_error("truncated", ());
        assert!(matches!(classify(err), StoreError::Unavailable(_)));
    }

    #[test]
    fn a_throttled_request_is_retryable() {
        let err = service("ProvisionedThroughputExceededException", "slow down");
        match classify(err) {
            StoreError::Unavailable(m) => {
                assert_eq!(m, "DynamoDB ProvisionedThroughputExceededException");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_other_service_error_is_internal_with_its_code_and_message() {
        match classify(service("ValidationException", "bad key")) {
            StoreError::Internal(m) => assert_eq!(m, "DynamoDB ValidationException: bad key"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_that_could_not_be_built_is_internal() {
        let err: Failure = SdkError::construction_failure("no table");
        assert!(matches!(classify(err), StoreError::Internal(_)));
    }
}

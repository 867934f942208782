//! The AWS SDK configuration, read from the variables Lambda sets, without
//! `aws-config`. Its credential chains, profile-file parsing and STS client
//! were about 450 KB of every binary, and a Lambda needs none of them: the
//! region and the role's credentials are in the environment.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::{
    RetryConfig, SharedCredentialsProvider, SharedHttpClient, TimeoutConfig,
};
use taskpilot_http::config::ConfigError;

/// A service's endpoint override variable (as the AWS SDKs name them).
pub const DYNAMODB_ENDPOINT: &str = "AWS_ENDPOINT_URL_DYNAMODB";
/// See [`DYNAMODB_ENDPOINT`].
pub const SECRETS_MANAGER_ENDPOINT: &str = "AWS_ENDPOINT_URL_SECRETS_MANAGER";

/// Region from `AWS_REGION` (or `AWS_DEFAULT_REGION`), credentials from
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
/// These are Lambda's reserved variables, so they are read directly rather
/// than recorded as the function's own configuration.
pub fn sdk_config(http: SharedHttpClient) -> Result<SdkConfig, ConfigError> {
    sdk_config_from(http, var)
}

/// [`sdk_config`] with the variables looked up by `var`.
fn sdk_config_from(
    http: SharedHttpClient,
    var: impl Fn(&str) -> Option<String>,
) -> Result<SdkConfig, ConfigError> {
    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .ok_or(ConfigError::Missing("AWS_REGION"))?;
    let key = var("AWS_ACCESS_KEY_ID").ok_or(ConfigError::Missing("AWS_ACCESS_KEY_ID"))?;
    let secret =
        var("AWS_SECRET_ACCESS_KEY").ok_or(ConfigError::Missing("AWS_SECRET_ACCESS_KEY"))?;
    let credentials = Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment");
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http);
    if let Some(url) = var("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(url);
    }
    Ok(with_limits(&builder.build()))
}

/// `sdk` with the timeouts and retries of every AWS client (DynamoDB, Secrets
/// Manager), sized to answer well within a Lambda's deadline: 1 s to connect,
/// 2 s per attempt, 3 attempts within 5 s. The SDK's default has no read
/// timeout, so a hanging dependency would hold a request until Lambda kills it.
pub fn with_limits(sdk: &SdkConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build();
    sdk.to_builder()
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .build()
}

/// `sdk` with the endpoint override of one service (`AWS_ENDPOINT_URL_<SERVICE>`,
/// which wins over `AWS_ENDPOINT_URL`), for local emulators.
pub fn for_service(sdk: &SdkConfig, endpoint_var: &str) -> SdkConfig {
    match var(endpoint_var) {
        Some(url) => sdk.to_builder().endpoint_url(url).build(),
        None => sdk.clone(),
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const LAMBDA: &[(&str, &str)] = &[
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "AKIA"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "token"),
    ];

    #[test]
    fn reads_lambdas_variables_and_applies_the_limits() {
        let sdk = sdk_config_from(
            crate::tls::aws_http_client(&Default::default()).unwrap(),
            vars(LAMBDA),
        )
        .unwrap();
        assert_eq!(sdk.region().unwrap().as_ref(), "eu-west-1");
        assert!(sdk.credentials_provider().is_some());
        assert_eq!(sdk.endpoint_url(), None);
        let timeouts = sdk.timeout_config().unwrap();
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(5)));
        assert_eq!(sdk.retry_config().unwrap().max_attempts(), 3);
    }

    #[test]
    fn a_missing_variable_is_named() {
        for missing in ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            let rest: Vec<(&str, &str)> = LAMBDA
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = sdk_config_from(
                crate::tls::aws_http_client(&Default::default()).unwrap(),
                vars(&rest),
            )
            .unwrap_err();
            assert!(err.to_string().contains(missing), "{err}");
        }
    }

    #[test]
    fn the_global_endpoint_override_is_honoured() {
        let mut with_url = LAMBDA.to_vec();
        with_url.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"));
        let sdk = sdk_config_from(
            crate::tls::aws_http_client(&Default::default()).unwrap(),
            vars(&with_url),
        )
        .unwrap();
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4566"));
    }
}

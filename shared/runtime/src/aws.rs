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
use taskpilot_config::{ConfigError, Vars};

/// Lambda's region and the role's credentials: `AWS_REGION` (or
/// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, and the SDK's endpoint overrides (`AWS_ENDPOINT_URL`,
/// `AWS_ENDPOINT_URL_<SERVICE>`). Lambda sets these (the local stack sets
/// them for its emulators), so they are platform variables, not the
/// function's own configuration.
#[derive(Clone)]
pub struct AwsSettings {
    region: String,
    credentials: Credentials,
    endpoint: Option<String>,
    endpoints: Vec<(Service, String)>,
}

/// An AWS service a function calls, for its endpoint override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `AWS_ENDPOINT_URL_DYNAMODB`.
    DynamoDb,
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    SecretsManager,
    /// `AWS_ENDPOINT_URL_S3`.
    S3,
}

impl Service {
    const ALL: [Service; 3] = [Service::DynamoDb, Service::SecretsManager, Service::S3];

    /// The endpoint override variable, as the AWS SDKs name it.
    pub fn endpoint_var(self) -> &'static str {
        match self {
            Service::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Service::SecretsManager => "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
        }
    }
}

impl AwsSettings {
    /// Reads the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let var = |name: &'static str| vars.platform(name);
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .ok_or(ConfigError::Missing("AWS_REGION"))?;
        let key = var("AWS_ACCESS_KEY_ID").ok_or(ConfigError::Missing("AWS_ACCESS_KEY_ID"))?;
        let secret =
            var("AWS_SECRET_ACCESS_KEY").ok_or(ConfigError::Missing("AWS_SECRET_ACCESS_KEY"))?;
        let credentials =
            Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment");
        let endpoints = Service::ALL
            .into_iter()
            .filter_map(|service| var(service.endpoint_var()).map(|url| (service, url)))
            .collect();
        Ok(Self {
            region,
            credentials,
            endpoint: var("AWS_ENDPOINT_URL"),
            endpoints,
        })
    }

    /// The SDK configuration, with the [limits](with_limits) of every client.
    pub fn sdk_config(&self, http: SharedHttpClient) -> SdkConfig {
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(self.credentials.clone()))
            .http_client(http);
        if let Some(url) = &self.endpoint {
            builder = builder.endpoint_url(url);
        }
        with_limits(&builder.build())
    }

    /// `sdk` with `service`'s endpoint override (which wins over
    /// `AWS_ENDPOINT_URL`), for local emulators.
    pub fn for_service(&self, sdk: &SdkConfig, service: Service) -> SdkConfig {
        match self.endpoints.iter().find(|(s, _)| *s == service) {
            Some((_, url)) => sdk.to_builder().endpoint_url(url).build(),
            None => sdk.clone(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk_config_from(
        http: SharedHttpClient,
        pairs: &[(&str, &str)],
    ) -> Result<SdkConfig, ConfigError> {
        let vars = Vars::from_pairs(pairs.iter().copied());
        let settings = AwsSettings::from_vars(&vars)?;
        assert!(vars.read().is_empty(), "platform variables are not listed");
        Ok(settings.sdk_config(http))
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
            LAMBDA,
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
                &rest,
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
            &with_url,
        )
        .unwrap();
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4566"));
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn a_service_override_wins_over_the_global_endpoint_for_that_service_only() {
        let vars = Vars::from_pairs([
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:2"),
        ]);
        let settings = AwsSettings::from_vars(&vars).unwrap();
        let sdk = settings.sdk_config(crate::tls::aws_http_client(&Default::default()).unwrap());
        let url = |service| {
            settings
                .for_service(&sdk, service)
                .endpoint_url()
                .map(str::to_owned)
        };
        assert_eq!(url(Service::S3).as_deref(), Some("http://127.0.0.1:3"));
        assert_eq!(
            url(Service::SecretsManager).as_deref(),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(
            url(Service::DynamoDb).as_deref(),
            Some("http://127.0.0.1:1")
        );
    }
}

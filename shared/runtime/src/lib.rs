//! What every function builds once at start-up: the SDK configuration, the
//! DynamoDB table and the outbound HTTP client. Requests borrow them.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::sync::OnceLock;

pub mod aws;
pub mod tls;

use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::CursorCodec;
use taskpilot_secrets::CursorKey;
use taskpilot_store::{DynamoStore, dynamodb_client};

use aws::{AwsSettings, Service};

/// How long a listing cursor stays valid.
pub const CURSOR_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// What every function needs to reach AWS: the table (`TABLE_NAME`), extra
/// trusted roots (`SSL_CERT_FILE`, optional) and Lambda's region,
/// credentials and endpoint overrides ([`AwsSettings`]).
#[derive(Clone)]
pub struct BackendSettings {
    table: String,
    roots: tls::ExtraRoots,
    aws: AwsSettings,
}

impl BackendSettings {
    /// Reads and checks the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            table: vars.required("TABLE_NAME")?,
            roots: tls::ExtraRoots::from_vars(vars)?,
            aws: AwsSettings::from_vars(vars)?,
        })
    }
}

/// The clients of one process.
pub struct Backend {
    /// AWS SDK configuration (region, credentials, the global endpoint).
    pub sdk: aws_types::SdkConfig,
    /// The table.
    pub store: DynamoStore,
    aws: AwsSettings,
    roots: tls::ExtraRoots,
    /// The one outbound HTTP client (rustls), built when first asked for.
    http: OnceLock<reqwest::Client>,
}

impl Backend {
    /// The SDK configuration and the table client `settings` describe.
    pub fn new(settings: BackendSettings) -> Result<Self, ConfigError> {
        let BackendSettings { table, roots, aws } = settings;
        let sdk = aws.sdk_config(tls::aws_http_client(&roots)?);
        let store = DynamoStore::new(
            dynamodb_client(&aws.for_service(&sdk, Service::DynamoDb)),
            table,
        );
        Ok(Self {
            sdk,
            store,
            aws,
            roots,
            http: OnceLock::new(),
        })
    }

    /// The SDK configuration for `service` (its endpoint override applied).
    pub fn sdk_for(&self, service: Service) -> aws_types::SdkConfig {
        self.aws.for_service(&self.sdk, service)
    }

    /// The one outbound HTTP client (JWKS, OpenAI), built on the first call:
    /// a function that needs none (tasks without a JWKS) never builds it.
    pub fn http(&self) -> Result<reqwest::Client, ConfigError> {
        if let Some(client) = self.http.get() {
            return Ok(client.clone());
        }
        let client = tls::http_client(&self.roots)?;
        Ok(self.http.get_or_init(|| client).clone())
    }

    /// The listing-cursor codec, its key (at least 32 bytes) from `key`,
    /// read while the DynamoDB connection warms up.
    pub async fn cursors_and_warm_up(&self, key: &CursorKey) -> Result<CursorCodec, ConfigError> {
        let sdk = self.sdk_for(Service::SecretsManager);
        let (key, ()) = tokio::join!(
            taskpilot_secrets::cursor_signing_key(key, &sdk),
            self.store.warm_up()
        );
        CursorCodec::new(key?.expose().as_bytes(), CURSOR_LIFETIME).ok_or_else(|| {
            ConfigError::invalid(
                "CURSOR_SIGNING_KEY",
                format!("must be at least {} bytes", CursorCodec::MIN_KEY_LEN),
            )
        })
    }
}

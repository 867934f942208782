//! What every function builds once at start-up: the SDK configuration, the
//! DynamoDB table, the outbound HTTP client and, for those that talk to
//! OpenAI, the secret cache and the OpenAI client. Requests borrow them.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::sync::{Arc, OnceLock};

pub mod aws;
pub mod tls;

use taskpilot_domain::CursorCodec;
use taskpilot_http::config::{self, ConfigError};
use taskpilot_openai::OpenAi;
use taskpilot_secrets::SecretCache;
use taskpilot_store::{DynamoStore, dynamodb_client};

/// How long a listing cursor stays valid.
pub const CURSOR_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

/// The clients of one process.
pub struct Backend {
    /// AWS SDK configuration (region, credentials, endpoints).
    pub sdk: aws_types::SdkConfig,
    /// The table (`TABLE_NAME`).
    pub store: DynamoStore,
    /// Extra trusted roots (`SSL_CERT_FILE`).
    roots: tls::ExtraRoots,
    /// The one outbound HTTP client (rustls), built when first asked for.
    http: OnceLock<reqwest::Client>,
}

/// The OpenAI side: the secret cache and the client that uses it.
pub struct OpenAiSide {
    /// The secret cache (`OPENAI_SECRET_ARN` or `OPENAI_API_KEY`).
    pub secrets: Arc<SecretCache>,
    /// The client (`OPENAI_BASE_URL`, `OPENAI_TIMEOUT_MS`).
    pub openai: OpenAi,
}

impl Backend {
    /// Reads `TABLE_NAME` and loads the SDK configuration.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let table = config::required("TABLE_NAME")?;
        let roots = tls::ExtraRoots::from_env()?;
        let sdk = aws::sdk_config(tls::aws_http_client(&roots)?)?;
        let dynamodb = dynamodb_client(&aws::for_service(&sdk, aws::DYNAMODB_ENDPOINT));
        let store = DynamoStore::new(dynamodb, table);
        Ok(Self {
            sdk,
            store,
            roots,
            http: OnceLock::new(),
        })
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

    /// The secret cache and OpenAI client.
    pub fn openai(&self) -> Result<OpenAiSide, ConfigError> {
        let sdk = aws::for_service(&self.sdk, aws::SECRETS_MANAGER_ENDPOINT);
        let secrets = Arc::new(SecretCache::from_env(&sdk)?);
        let openai = OpenAi::from_env(self.http()?, secrets.clone())?;
        Ok(OpenAiSide { secrets, openai })
    }

    /// Opens the DynamoDB connection and fetches the secret during init, so the
    /// first request does not pay for either.
    pub async fn warm_up(&self, openai: Option<&OpenAiSide>) {
        match openai {
            Some(side) => {
                tokio::join!(self.store.warm_up(), side.secrets.prefetch());
            }
            None => self.store.warm_up().await,
        }
    }
}

impl Backend {
    /// The listing-cursor codec, its key (at least 32 bytes) from the
    /// `APP_KEYS_SECRET_ARN` secret (or `CURSOR_SIGNING_KEY` locally), read
    /// while the DynamoDB connection warms up.
    pub async fn cursors_and_warm_up(&self) -> Result<CursorCodec, ConfigError> {
        let sdk = aws::for_service(&self.sdk, aws::SECRETS_MANAGER_ENDPOINT);
        let (key, ()) = tokio::join!(
            taskpilot_secrets::cursor_signing_key(&sdk),
            self.store.warm_up()
        );
        CursorCodec::new(key?.expose().as_bytes(), CURSOR_LIFETIME).ok_or(ConfigError::Invalid {
            name: "CURSOR_SIGNING_KEY",
            reason: format!("must be at least {} bytes", CursorCodec::MIN_KEY_LEN),
        })
    }
}

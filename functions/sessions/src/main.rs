//! The `sessions` Lambda: mints, refreshes and cancels ChatKit client secrets.

mod routes;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve, telemetry};
use taskpilot_openai::OpenAi;
use taskpilot_secrets::SecretCache;
use taskpilot_store::{DynamoStore, dynamodb_client};

use routes::SessionsApi;
use settings::Settings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let (api, cors) = match init().await {
        Ok(ready) => ready,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            return Err(e.into());
        }
    };
    serve::run(cors, |req| api.handle(req)).await
}

/// Configuration, SDK clients, the secret and the OpenAI client, once per process.
async fn init() -> Result<(SessionsApi, Cors), ConfigError> {
    let settings = Settings::from_env()?;
    let table = config::required("TABLE_NAME")?;
    let cors = Cors::from_env()?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "OPENAI_BASE_URL",
            reason: format!("HTTP client: {e}"),
        })?;
    let auth = Authenticator::from_env(http.clone())?;
    let sdk = aws_config::load_from_env().await;
    let secrets = Arc::new(SecretCache::from_env(&sdk)?);
    let openai = OpenAi::from_env(http, secrets.clone())?;
    let store = DynamoStore::new(dynamodb_client(&sdk), table);
    // Fetch the secret and open the DynamoDB connection during init.
    let (secret, ()) = tokio::join!(secrets.get(), store.warm_up());
    if let Err(e) = secret {
        tracing::warn!(error = %e, "the OpenAI secret is not readable yet; requests will retry");
    }
    Ok((SessionsApi::new(settings, store, openai, auth), cors))
}

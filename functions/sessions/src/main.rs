//! The `sessions` Lambda: mints, refreshes and cancels ChatKit client secrets.

mod routes;
mod settings;

use std::sync::Arc;

use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve};
use taskpilot_openai::OpenAi;
use taskpilot_secrets::SecretCache;
use taskpilot_store::{DynamoStore, dynamodb_client};

use routes::SessionsApi;
use settings::Settings;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (api, cors) = serve::boot(init()).await?;
    serve::run(cors, |req| api.handle(req)).await
}

/// Configuration, SDK clients, the secret and the OpenAI client, once per process.
async fn init() -> Result<(SessionsApi, Cors), ConfigError> {
    let settings = Settings::from_env()?;
    let table = config::required("TABLE_NAME")?;
    let cors = Cors::from_env()?;
    let http = serve::http_client()?;
    let auth = Authenticator::from_env(http.clone())?;
    let sdk = aws_config::load_from_env().await;
    let secrets = Arc::new(SecretCache::from_env(&sdk)?);
    let openai = OpenAi::from_env(http, secrets.clone())?;
    let store = DynamoStore::new(dynamodb_client(&sdk), table);
    // Fetch the secret and open the DynamoDB connection during init.
    tokio::join!(secrets.prefetch(), store.warm_up());
    Ok((SessionsApi::new(settings, store, openai, auth), cors))
}

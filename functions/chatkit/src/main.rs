//! The `chatkit` Lambda: the self-hosted ChatKit protocol behind a Function URL
//! with response streaming, so tokens reach the browser as they arrive.

mod endpoint;
mod identity;

use std::sync::Arc;

use lambda_http::{Request, service_fn};

use taskpilot_chatkit::server::{AgentSettings, ChatKitServer, DEFAULT_INSTRUCTIONS};
use taskpilot_domain::{CursorCodec, TaskService};
use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve};
use taskpilot_openai::OpenAi;
use taskpilot_secrets::SecretCache;
use taskpilot_store::{DynamoStore, dynamodb_client};

use endpoint::Endpoint;
use identity::Identity;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once and kept for the life of the process; requests borrow it.
    let endpoint: &'static Endpoint = Box::leak(Box::new(serve::boot(init()).await?));
    lambda_http::run_with_streaming_response(service_fn(move |req: Request| endpoint.handle(req)))
        .await
}

async fn init() -> Result<Endpoint, ConfigError> {
    let table = config::required("TABLE_NAME")?;
    let cursor_key = config::required("CURSOR_SIGNING_KEY")?;
    let cursors = CursorCodec::new(cursor_key.as_bytes(), chrono::Duration::hours(1)).ok_or(
        ConfigError::Invalid {
            name: "CURSOR_SIGNING_KEY",
            reason: format!("must be at least {} bytes", CursorCodec::MIN_KEY_LEN),
        },
    )?;
    let settings = AgentSettings {
        model: config::optional("CHATKIT_MODEL").unwrap_or_else(|| "gpt-4.1".into()),
        temperature: config::parsed("CHATKIT_TEMPERATURE", 0.7f64)?,
        instructions: config::optional("CHATKIT_INSTRUCTIONS")
            .unwrap_or_else(|| DEFAULT_INSTRUCTIONS.into()),
        max_tool_steps: config::parsed("CHATKIT_MAX_TOOL_STEPS", 8usize)?,
    };
    if !(0.0..=2.0).contains(&settings.temperature) {
        return Err(ConfigError::Invalid {
            name: "CHATKIT_TEMPERATURE",
            reason: "must be between 0 and 2".into(),
        });
    }
    let cors = Cors::from_env()?;
    let http = serve::http_client()?;
    let auth = Authenticator::from_env(http.clone())?;
    let sdk = aws_config::load_from_env().await;
    let secrets = Arc::new(SecretCache::from_env(&sdk)?);
    let openai = OpenAi::from_env(http, secrets.clone())?;
    let store = DynamoStore::new(dynamodb_client(&sdk), table);
    tokio::join!(secrets.prefetch(), store.warm_up());
    let server = ChatKitServer::new(
        store.clone(),
        TaskService::new(store.clone(), cursors),
        openai,
        settings,
    );
    Ok(Endpoint::new(
        server,
        Identity::new(store, secrets, auth),
        cors,
    ))
}

//! The `tasks` Lambda: per-user task CRUD behind API Gateway.

mod routes;

use taskpilot_domain::{CursorCodec, TaskService};
use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve};
use taskpilot_store::{DynamoStore, dynamodb_client};

use routes::TasksApi;

/// Cursor lifetime: a listing can be paged through for an hour.
const CURSOR_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let (api, cors) = serve::boot(init()).await?;
    serve::run(cors, |req| api.handle(req)).await
}

/// Builds configuration, SDK clients and the service once per process.
async fn init() -> Result<(TasksApi, Cors), ConfigError> {
    let table = config::required("TABLE_NAME")?;
    let cursor_key = config::required("CURSOR_SIGNING_KEY")?;
    let cursors =
        CursorCodec::new(cursor_key.as_bytes(), CURSOR_LIFETIME).ok_or(ConfigError::Invalid {
            name: "CURSOR_SIGNING_KEY",
            reason: format!("must be at least {} bytes", CursorCodec::MIN_KEY_LEN),
        })?;
    let cors = Cors::from_env()?;
    let http = serve::http_client()?;
    let auth = Authenticator::from_env(http)?;
    let sdk = aws_config::load_from_env().await;
    let store = DynamoStore::new(dynamodb_client(&sdk), table);
    store.warm_up().await;
    Ok((TasksApi::new(TaskService::new(store, cursors), auth), cors))
}

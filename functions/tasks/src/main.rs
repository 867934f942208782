//! The `tasks` Lambda: per-user task CRUD behind API Gateway.

mod routes;

use taskpilot_domain::TaskService;
use taskpilot_http::{Authenticator, ConfigError, Cors, serve};
use taskpilot_runtime::Backend;

use routes::TasksApi;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let (api, cors) = serve::boot(init()).await?;
    serve::run(cors, |req| api.handle(req)).await
}

/// Builds configuration, SDK clients and the service once per process.
async fn init() -> Result<(TasksApi, Cors), ConfigError> {
    let cors = Cors::from_env()?;
    let backend = Backend::from_env().await?;
    let auth = Authenticator::from_env(|| backend.http())?;
    let cursors = backend.cursors_and_warm_up().await?;
    Ok((
        TasksApi::new(TaskService::new(backend.store, cursors), auth),
        cors,
    ))
}

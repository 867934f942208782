//! The `tasks` Lambda: per-user task CRUD behind API Gateway.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod routes;
mod settings;
#[cfg(test)]
mod tests;

use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::TaskService;
use taskpilot_http::{Authenticator, Cors, serve};
use taskpilot_runtime::Backend;
use taskpilot_store::DynamoStore;

use routes::TasksApi;
use settings::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let vars = Vars::from_env();
    let (api, cors) = serve::boot(&vars, init(&vars)).await?;
    serve::run(cors, |req| api.handle(req)).await
}

/// Builds configuration, SDK clients and the service once per process.
async fn init(vars: &Vars) -> Result<(TasksApi<DynamoStore>, Cors), ConfigError> {
    let settings = Settings::from_vars(vars)?;
    let backend = Backend::new(settings.backend)?;
    let auth = Authenticator::new(settings.auth, || backend.http())?;
    let cursors = backend.cursors_and_warm_up(&settings.cursor_key).await?;
    Ok((
        TasksApi::new(TaskService::new(backend.store, cursors), auth),
        settings.cors,
    ))
}

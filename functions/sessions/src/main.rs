//! The `sessions` Lambda: mints, refreshes and cancels ChatKit client secrets,
//! and shows a user their chat budget.

mod routes;
mod settings;

use taskpilot_domain::budget::BudgetGate;
use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve};
use taskpilot_runtime::Backend;

use routes::SessionsApi;
use settings::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let (api, cors) = serve::boot(init()).await?;
    serve::run(cors, |req| api.handle(req)).await
}

/// Configuration, SDK clients, the secret and the OpenAI client, once per process.
async fn init() -> Result<(SessionsApi, Cors), ConfigError> {
    let settings = Settings::from_env()?;
    let budget = config::chat_budget()?;
    let cors = Cors::from_env()?;
    let backend = Backend::from_env().await?;
    let auth = Authenticator::from_env(|| backend.http())?;
    let side = backend.openai()?;
    backend.warm_up(Some(&side)).await;
    let gate = BudgetGate::new(backend.store.clone(), budget);
    Ok((
        SessionsApi::new(settings, backend.store, side.openai, auth, gate),
        cors,
    ))
}

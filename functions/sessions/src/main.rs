//! The `sessions` Lambda: mints, refreshes and cancels ChatKit client secrets,
//! and shows a user their chat budget.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod routes;
mod settings;
#[cfg(test)]
mod tests;

use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::budget::BudgetGate;
use taskpilot_http::{Authenticator, Cors, serve};
use taskpilot_openai::OpenAi;
use taskpilot_runtime::Backend;
use taskpilot_runtime::aws::Service;
use taskpilot_store::DynamoStore;

use routes::SessionsApi;
use settings::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let vars = Vars::from_env();
    let (api, cors) = serve::boot(&vars, init(&vars)).await?;
    serve::run(cors, |req| api.handle(req)).await
}

/// Configuration, SDK clients, the secret and the OpenAI client, once per process.
async fn init(vars: &Vars) -> Result<(SessionsApi<DynamoStore>, Cors), ConfigError> {
    let settings = Settings::from_vars(vars)?;
    let backend = Backend::new(settings.backend)?;
    let auth = Authenticator::new(settings.auth, || backend.http())?;
    let openai = OpenAi::connect(
        &settings.openai,
        &settings.secrets,
        &backend.sdk_for(Service::SecretsManager),
        backend.http()?,
    );
    tokio::join!(backend.store.warm_up(), openai.secrets().prefetch());
    let gate = BudgetGate::new(backend.store.clone(), settings.budget);
    Ok((
        SessionsApi::new(settings.rules, backend.store, openai, auth, gate),
        settings.cors,
    ))
}

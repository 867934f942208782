//! The `health` Lambda: `GET /health` (shallow or `?deep=true`) over HTTP, and
//! the scheduled probe (EventBridge) that runs the deep checks and emits a
//! CloudWatch metric.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod checks;
mod probe;
mod routes;
mod settings;
#[cfg(test)]
mod tests;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

use taskpilot_config::{ConfigError, Vars};
use taskpilot_http::{Cors, events, serve};
use taskpilot_openai::OpenAi;
use taskpilot_runtime::Backend;
use taskpilot_runtime::aws::Service;
use taskpilot_store::DynamoStore;

use checks::Checks;
use settings::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let vars = Vars::from_env();
    let (checks, cors) = serve::boot(&vars, init(&vars)).await?;
    let (checks, cors) = (&checks, &cors);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let (payload, context) = event.into_parts();
        if events::is_http(&payload) {
            let req = events::to_request(payload, context)?;
            let resp = serve::dispatch(cors, req, |req| routes::handle(checks, req)).await;
            Ok(events::to_payload(resp))
        } else if events::is_scheduled(&payload) {
            probe::run(checks).await
        } else {
            Err(
                "unsupported event: expected an HTTP request or an EventBridge scheduled event"
                    .into(),
            )
        }
    }))
    .await
}

/// Configuration, SDK clients, the secret and the OpenAI client, once per process.
async fn init(vars: &Vars) -> Result<(Checks<DynamoStore>, Cors), ConfigError> {
    let settings = Settings::from_vars(vars)?;
    let backend = Backend::new(settings.backend)?;
    let openai = OpenAi::connect(
        &settings.openai,
        &settings.secrets,
        &backend.sdk_for(Service::SecretsManager),
        backend.http()?,
    );
    tokio::join!(backend.store.warm_up(), openai.secrets().prefetch());
    Ok((
        Checks::new(backend.store, openai, settings.hosted),
        settings.cors,
    ))
}

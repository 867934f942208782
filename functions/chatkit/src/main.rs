//! The `chatkit` Lambda: the self-hosted ChatKit protocol behind a Function URL
//! with response streaming, so tokens reach the browser as they arrive.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod endpoint;
mod gate;
mod identity;
mod settings;
mod stream_report;
#[cfg(test)]
mod tests;
mod upload;

use taskpilot_assistant::TaskAgent;
use taskpilot_chatkit::engine::Engine;
use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::TaskService;
use taskpilot_domain::budget::BudgetGate;
use taskpilot_files::S3Files;
use taskpilot_http::{Authenticator, Cors, serve};
use taskpilot_openai::{Dictation, OpenAi};
use taskpilot_runtime::Backend;
use taskpilot_runtime::aws::Service;
use taskpilot_store::DynamoStore;

use endpoint::Endpoint;
use identity::Identity;
use settings::Settings;

/// The endpoint on DynamoDB, OpenAI and S3.
type Server =
    Endpoint<DynamoStore, TaskAgent<DynamoStore, OpenAi>, S3Files, Dictation, DynamoStore>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let vars = Vars::from_env();
    let (server, cors) = serve::boot(&vars, init(&vars)).await?;
    // Built once and kept for the life of the process: a stream's task
    // borrows it after the handler has returned.
    let server: &'static Server = Box::leak(Box::new(server));
    serve::run_streaming(cors, move |req| server.answer(req)).await
}

async fn init(vars: &Vars) -> Result<(Server, Cors), ConfigError> {
    let settings = Settings::from_vars(vars)?;
    let backend = Backend::new(settings.backend)?;
    let auth = Authenticator::new(settings.auth, || backend.http())?;
    let openai = OpenAi::connect(
        &settings.openai,
        &settings.secrets,
        &backend.sdk_for(Service::SecretsManager),
        backend.http()?,
    );
    let secrets = openai.secrets().clone();
    let (cursors, ()) = tokio::join!(
        backend.cursors_and_warm_up(&settings.cursor_key),
        secrets.prefetch()
    );
    let store = backend.store.clone();
    let dictation = Dictation {
        openai: openai.clone(),
        model: settings.transcribe_model,
    };
    let agent = TaskAgent::new(
        TaskService::new(store.clone(), cursors?),
        openai,
        settings.agent,
    )
    .with_metrics(endpoint::EmfMetrics);
    let files = S3Files::new(&backend.sdk_for(Service::S3), settings.bucket);
    let engine = Engine::new(store.clone(), agent)
        .with_attachments(files, settings.attachments)
        .with_dictation(dictation);
    let budget = BudgetGate::new(store.clone(), settings.budget);
    Ok((
        Endpoint::new(engine, Identity::new(store, secrets, auth), budget),
        settings.cors,
    ))
}

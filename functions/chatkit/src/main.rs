//! The `chatkit` Lambda: the self-hosted ChatKit protocol behind a Function URL
//! with response streaming, so tokens reach the browser as they arrive.

mod endpoint;
mod identity;

use lambda_http::{Request, service_fn};

use taskpilot_chatkit::agent::{AgentSettings, DEFAULT_INSTRUCTIONS, TaskAgent};
use taskpilot_chatkit::engine::Engine;
use taskpilot_domain::TaskService;
use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve};
use taskpilot_runtime::{Backend, cursor_codec};

use endpoint::Endpoint;
use identity::Identity;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once and kept for the life of the process; requests borrow it.
    let endpoint: &'static Endpoint = Box::leak(Box::new(serve::boot(init()).await?));
    lambda_http::run_with_streaming_response(service_fn(move |req: Request| endpoint.handle(req)))
        .await
}

async fn init() -> Result<Endpoint, ConfigError> {
    let cursors = cursor_codec()?;
    let settings = AgentSettings {
        model: config::optional("CHATKIT_MODEL").unwrap_or_else(|| "gpt-4.1".into()),
        temperature: config::parsed("CHATKIT_TEMPERATURE", 0.7f64)?,
        instructions: config::optional("CHATKIT_INSTRUCTIONS")
            .unwrap_or_else(|| DEFAULT_INSTRUCTIONS.into()),
        max_tool_steps: config::parsed("CHATKIT_MAX_TOOL_STEPS", 8usize)?,
        max_tool_calls: config::parsed("CHATKIT_MAX_TOOL_CALLS", 20usize)?,
    };
    if !(0.0..=2.0).contains(&settings.temperature) {
        return Err(ConfigError::Invalid {
            name: "CHATKIT_TEMPERATURE",
            reason: "must be between 0 and 2".into(),
        });
    }
    let cors = Cors::from_env()?;
    let backend = Backend::from_env().await?;
    let auth = Authenticator::from_env(backend.http.clone())?;
    let side = backend.openai()?;
    backend.warm_up(Some(&side)).await;
    let (store, openai, secrets) = (backend.store, side.openai, side.secrets);
    let agent = TaskAgent::new(TaskService::new(store.clone(), cursors), openai, settings)
        .with_metrics(endpoint::EmfMetrics);
    let server = Engine::new(store.clone(), agent);
    Ok(Endpoint::new(
        server,
        Identity::new(store, secrets, auth),
        cors,
    ))
}

//! The `chatkit` Lambda: the self-hosted ChatKit protocol behind a Function URL
//! with response streaming, so tokens reach the browser as they arrive.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod endpoint;
mod identity;
mod stream_report;

use lambda_http::{Request, service_fn};

use taskpilot_chatkit::agent::{AgentSettings, DEFAULT_INSTRUCTIONS, TaskAgent};
use taskpilot_chatkit::attachments::AttachmentPolicy;
use taskpilot_chatkit::engine::Engine;
use taskpilot_domain::TaskService;
use taskpilot_domain::budget::BudgetGate;
use taskpilot_files::{S3_ENDPOINT, S3Files};
use taskpilot_http::{Authenticator, ConfigError, Cors, config, serve};
use taskpilot_openai::{DEFAULT_TRANSCRIBE_MODEL, OpenAi};
use taskpilot_runtime::{Backend, aws};

use endpoint::{Dictation, Endpoint};
use identity::Identity;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once and kept for the life of the process; requests borrow it.
    let endpoint: &'static Endpoint = Box::leak(Box::new(serve::boot(init()).await?));
    lambda_http::run_with_streaming_response(service_fn(move |req: Request| endpoint.handle(req)))
        .await
}

async fn init() -> Result<Endpoint, ConfigError> {
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
    let auth = Authenticator::from_env(|| backend.http())?;
    let side = backend.openai()?;
    let (cursors, ()) = tokio::join!(backend.cursors_and_warm_up(), side.secrets.prefetch());
    let cursors = cursors?;
    let (store, openai, secrets) = (backend.store.clone(), side.openai, side.secrets);
    let dictation = Dictation {
        openai: OpenAi::from_env(backend.http()?, secrets.clone())?,
        model: config::optional("CHATKIT_TRANSCRIBE_MODEL")
            .unwrap_or_else(|| DEFAULT_TRANSCRIBE_MODEL.into()),
    };
    let agent = TaskAgent::new(TaskService::new(store.clone(), cursors), openai, settings)
        .with_metrics(endpoint::EmfMetrics);
    let files = S3Files::new(
        &aws::for_service(&backend.sdk, S3_ENDPOINT),
        config::optional("ATTACHMENTS_BUCKET"),
    );
    let server = Engine::new(store.clone(), agent).with_attachments(files, attachment_policy()?);
    let gate = BudgetGate::new(store.clone(), config::chat_budget()?);
    Ok(Endpoint::new(
        server,
        Identity::new(store, secrets, auth),
        gate,
        cors,
        dictation,
    ))
}

/// What users may attach: `CHATKIT_ATTACHMENT_IMAGE_TYPES` and
/// `CHATKIT_ATTACHMENT_DOCUMENT_TYPES` (comma-separated mime types),
/// `CHATKIT_ATTACHMENT_MAX_IMAGE_MB`, `CHATKIT_ATTACHMENT_MAX_DOCUMENT_MB` and
/// `CHATKIT_ATTACHMENT_QUOTA_MB` (per user); defaults in [`AttachmentPolicy`].
fn attachment_policy() -> Result<AttachmentPolicy, ConfigError> {
    const MB: u64 = 1024 * 1024;
    let defaults = AttachmentPolicy::default();
    let types = |name: &'static str, default: Vec<String>| {
        config::optional(name).map_or(default, |list| {
            list.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect()
        })
    };
    let megabytes = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        Ok(config::parsed(name, default / MB)? * MB)
    };
    Ok(AttachmentPolicy {
        image_types: types("CHATKIT_ATTACHMENT_IMAGE_TYPES", defaults.image_types),
        document_types: types("CHATKIT_ATTACHMENT_DOCUMENT_TYPES", defaults.document_types),
        max_image_bytes: megabytes("CHATKIT_ATTACHMENT_MAX_IMAGE_MB", defaults.max_image_bytes)?,
        max_document_bytes: megabytes(
            "CHATKIT_ATTACHMENT_MAX_DOCUMENT_MB",
            defaults.max_document_bytes,
        )?,
        quota_bytes: megabytes("CHATKIT_ATTACHMENT_QUOTA_MB", defaults.quota_bytes)?,
    })
}

//! The `health` Lambda: `GET /health` (shallow or `?deep=true`) over HTTP, and
//! the scheduled probe (EventBridge) that runs the deep checks and emits a
//! CloudWatch metric.

mod checks;
mod probe;
mod routes;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

use taskpilot_http::{ConfigError, Cors, config, events, serve};
use taskpilot_runtime::Backend;

use checks::Checks;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (checks, cors) = serve::boot(init()).await?;
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

async fn init() -> Result<(Checks, Cors), ConfigError> {
    let cors = Cors::from_env()?;
    let backend = Backend::from_env().await?;
    let side = backend.openai()?;
    backend.warm_up(Some(&side)).await;
    let hosted = config::optional("CHATKIT_WORKFLOW_ID").is_some();
    Ok((Checks::new(backend.store, side.openai, hosted), cors))
}

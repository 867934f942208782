//! Server-side keys from the stack's `AppKeys` secret, read once at start-up:
//! `APP_KEYS_SECRET_ARN` names the secret (JSON with `CURSOR_SIGNING_KEY`),
//! so the function's configuration holds the secret's ARN, never its value.
//! `CURSOR_SIGNING_KEY` in the environment wins (local development only).

use aws_sdk_secretsmanager::Client;
use serde::Deserialize;

use taskpilot_http::config::{self, ConfigError};

use crate::Redacted;

#[derive(Deserialize)]
struct AppKeys {
    #[serde(rename = "CURSOR_SIGNING_KEY")]
    cursor_signing_key: String,
}

/// The pagination-cursor HMAC key: `CURSOR_SIGNING_KEY`, else the one in the
/// `APP_KEYS_SECRET_ARN` secret (one `GetSecretValue`). Failing to read it
/// fails start-up with a message naming the variable (Lambda retries the
/// init on the next request), never with the value.
pub async fn cursor_signing_key(sdk: &aws_types::SdkConfig) -> Result<Redacted, ConfigError> {
    if let Some(key) = config::optional("CURSOR_SIGNING_KEY") {
        return Ok(Redacted::new(key));
    }
    let secret_id = config::required("APP_KEYS_SECRET_ARN")?;
    let unreadable = |reason: String| ConfigError::Invalid {
        name: "APP_KEYS_SECRET_ARN",
        reason,
    };
    let out = Client::new(sdk)
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| unreadable(format!("cannot be read ({})", crate::sdk_error_code(&e))))?;
    let raw = out
        .secret_string()
        .ok_or_else(|| unreadable("the secret has no string value".into()))?;
    let keys: AppKeys = serde_json::from_str(raw)
        .map_err(|_| unreadable("the secret is not JSON with CURSOR_SIGNING_KEY".into()))?;
    tracing::info!("app keys fetched");
    Ok(Redacted::new(keys.cursor_signing_key))
}

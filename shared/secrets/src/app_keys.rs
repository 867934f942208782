//! Server-side keys from the stack's `AppKeys` secret, read once at start-up:
//! `APP_KEYS_SECRET_ARN` names the secret (JSON with `CURSOR_SIGNING_KEY`),
//! so the function's configuration holds the secret's ARN, never its value.
//! `CURSOR_SIGNING_KEY` in the environment wins (local development only).

use aws_sdk_secretsmanager::Client;
use serde::Deserialize;

use taskpilot_config::{ConfigError, Vars};

use crate::Redacted;

#[derive(Deserialize)]
struct AppKeys {
    #[serde(rename = "CURSOR_SIGNING_KEY")]
    cursor_signing_key: String,
}

/// Where the pagination-cursor HMAC key comes from: `CURSOR_SIGNING_KEY`
/// (wins; local development only), else the `APP_KEYS_SECRET_ARN` secret.
#[derive(Clone)]
pub enum CursorKey {
    /// The key itself.
    Fixed(Redacted),
    /// The secret holding it.
    Secret(String),
}

impl CursorKey {
    /// Reads the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        match vars.optional("CURSOR_SIGNING_KEY") {
            Some(key) => Ok(Self::Fixed(Redacted::new(key))),
            None => Ok(Self::Secret(vars.required("APP_KEYS_SECRET_ARN")?)),
        }
    }
}

/// The pagination-cursor HMAC key `source` names (one `GetSecretValue` for a
/// secret). Failing to read it fails start-up with a message naming the
/// variable (Lambda retries the init on the next request), never with the
/// value.
pub async fn cursor_signing_key(
    source: &CursorKey,
    sdk: &aws_types::SdkConfig,
) -> Result<Redacted, ConfigError> {
    let secret_id = match source {
        CursorKey::Fixed(key) => return Ok(key.clone()),
        CursorKey::Secret(arn) => arn.clone(),
    };
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

//! The OpenAI API key (and the session signing key) from AWS Secrets Manager.
//!
//! Fetched once during init and cached in memory for `SECRET_TTL_SECONDS`
//! (default 900); refreshed early when OpenAI answers 401. `OPENAI_API_KEY` in
//! the environment replaces Secrets Manager for local development. Values never
//! appear in `Debug` output, logs or error messages.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod app_keys;
mod redacted;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Mutex, RwLock};

use taskpilot_config::{ConfigError, Vars};

pub use app_keys::{CursorKey, cursor_signing_key};
pub use redacted::Redacted;

/// The key the local stack seeds when no real key is given; health reports it
/// as not ready.
pub const PLACEHOLDER_KEY: &str = "sk-placeholder-not-configured";

/// The secrets one process needs.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The OpenAI API key.
    pub openai_api_key: Redacted,
    /// The key that signs ChatKit client secrets (explicit, or derived from the API key).
    pub session_signing_key: Redacted,
}

impl Secrets {
    /// Parses a secret string: the key itself, or JSON with `OPENAI_API_KEY` and an
    /// optional `SESSION_SIGNING_KEY`.
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let raw = raw.trim();
        let (key, signing) = if raw.starts_with('{') {
            #[derive(serde::Deserialize)]
            #[allow(non_snake_case)]
            struct Doc {
                OPENAI_API_KEY: Option<String>,
                SESSION_SIGNING_KEY: Option<String>,
            }
            let doc: Doc = serde_json::from_str(raw).map_err(|_| {
                SecretError::Malformed("the secret is JSON but not an object of strings".into())
            })?;
            let key = doc
                .OPENAI_API_KEY
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| {
                    SecretError::Malformed("the secret JSON has no OPENAI_API_KEY".into())
                })?;
            (
                key,
                doc.SESSION_SIGNING_KEY.filter(|k| !k.trim().is_empty()),
            )
        } else if raw.is_empty() {
            return Err(SecretError::Malformed("the secret is empty".into()));
        } else {
            (raw.to_owned(), None)
        };
        let signing = signing.unwrap_or_else(|| derive_signing_key(&key));
        Ok(Self {
            openai_api_key: Redacted::new(key),
            session_signing_key: Redacted::new(signing),
        })
    }

    /// Whether the API key is the local placeholder (ChatKit cannot work).
    pub fn is_placeholder(&self) -> bool {
        self.openai_api_key.expose() == PLACEHOLDER_KEY
    }
}

/// A signing key derived from the API key when the secret names none.
fn derive_signing_key(api_key: &str) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(api_key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return api_key.to_owned(),
    };
    mac.update(b"taskpilot/chatkit-session-signing/v1");
    hex::encode(mac.finalize().into_bytes())
}

/// What a failed Secrets Manager call says, without anything of the secret.
fn sdk_error_code<E: aws_sdk_secretsmanager::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> String {
    use aws_sdk_secretsmanager::error::SdkError;
    match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("ServiceError").to_owned(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "unreachable".into(),
        _ => "request failed".into(),
    }
}

/// Why the secret could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager failed or is unreachable (retryable).
    #[error("Secrets Manager is unavailable: {0}")]
    Unavailable(String),
    /// The secret exists but its content is unusable.
    #[error("the OpenAI secret is malformed: {0}")]
    Malformed(String),
}

impl From<SecretError> for taskpilot_http::UpstreamError {
    fn from(e: SecretError) -> Self {
        taskpilot_http::UpstreamError::Secret(e.to_string())
    }
}

/// Where the OpenAI key comes from: `OPENAI_API_KEY` (wins; local
/// development) or the `OPENAI_SECRET_ARN` secret, cached for
/// `SECRET_TTL_SECONDS` (default 900).
#[derive(Clone)]
pub struct SecretSettings {
    key: KeySetting,
    ttl: Duration,
}

#[derive(Clone)]
enum KeySetting {
    Fixed(Arc<Secrets>),
    Arn(String),
}

impl SecretSettings {
    /// Reads and checks the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let ttl = Duration::from_secs(vars.parsed("SECRET_TTL_SECONDS", 900u64)?);
        let key = match vars.optional("OPENAI_API_KEY") {
            Some(key) => KeySetting::Fixed(Arc::new(
                Secrets::parse(&key)
                    .map_err(|e| ConfigError::invalid("OPENAI_API_KEY", e.to_string()))?,
            )),
            None => KeySetting::Arn(vars.required("OPENAI_SECRET_ARN")?),
        };
        Ok(Self { key, ttl })
    }
}

enum Source {
    /// `OPENAI_API_KEY` from the environment.
    Fixed(Arc<Secrets>),
    /// A Secrets Manager secret.
    Manager { client: Client, secret_id: String },
}

struct Cached {
    value: Arc<Secrets>,
    fetched: Instant,
}

/// The cache, built once in `main` and shared by every request.
pub struct SecretCache {
    source: Source,
    ttl: Duration,
    cached: RwLock<Option<Cached>>,
    refreshing: Mutex<()>,
}

impl SecretCache {
    /// The cache `settings` describe; `sdk` reaches Secrets Manager.
    pub fn new(settings: &SecretSettings, sdk: &aws_types::SdkConfig) -> Self {
        let source = match &settings.key {
            KeySetting::Fixed(secrets) => Source::Fixed(secrets.clone()),
            KeySetting::Arn(secret_id) => Source::Manager {
                client: Client::new(sdk),
                secret_id: secret_id.clone(),
            },
        };
        Self::with_source(source, settings.ttl)
    }

    /// A cache that always answers `secrets` (tests, local tools).
    pub fn fixed(secrets: Secrets) -> Self {
        Self::with_source(Source::Fixed(Arc::new(secrets)), Duration::MAX)
    }

    fn with_source(source: Source, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            cached: RwLock::new(None),
            refreshing: Mutex::new(()),
        }
    }

    /// The current secrets, fetching them when absent or older than the TTL.
    pub async fn get(&self) -> Result<Arc<Secrets>, SecretError> {
        if let Source::Fixed(s) = &self.source {
            return Ok(s.clone());
        }
        if let Some(c) = self.cached.read().await.as_ref()
            && c.fetched.elapsed() < self.ttl
        {
            return Ok(c.value.clone());
        }
        self.fetch(None).await
    }

    /// Refetches after `stale` was rejected upstream (a rotated key). Concurrent
    /// callers holding the same stale value cause one fetch, not one each.
    pub async fn refresh(&self, stale: &Arc<Secrets>) -> Result<Arc<Secrets>, SecretError> {
        if let Source::Fixed(s) = &self.source {
            return Ok(s.clone());
        }
        self.fetch(Some(stale)).await
    }

    async fn fetch(&self, stale: Option<&Arc<Secrets>>) -> Result<Arc<Secrets>, SecretError> {
        let Source::Manager { client, secret_id } = &self.source else {
            return Err(SecretError::Unavailable("no secret source".into()));
        };
        let _one_at_a_time = self.refreshing.lock().await;
        // Someone else may have fetched while we waited.
        if let Some(c) = self.cached.read().await.as_ref() {
            let fresh = c.fetched.elapsed() < self.ttl;
            let replaced = stale.is_some_and(|s| !Arc::ptr_eq(s, &c.value));
            if (stale.is_none() && fresh) || replaced {
                return Ok(c.value.clone());
            }
        }
        let started = Instant::now();
        let out = client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| SecretError::Unavailable(sdk_error_code(&e)))?;
        let raw = out
            .secret_string()
            .ok_or_else(|| SecretError::Malformed("the secret has no string value".into()))?;
        let value = Arc::new(Secrets::parse(raw)?);
        tracing::info!(
            latency_ms = started.elapsed().as_millis() as u64,
            rotated = stale.is_some(),
            "OpenAI secret fetched"
        );
        *self.cached.write().await = Some(Cached {
            value: value.clone(),
            fetched: Instant::now(),
        });
        Ok(value)
    }

    /// Fetches during init so the first request does not wait; a failure is
    /// logged and the next request retries.
    pub async fn prefetch(&self) {
        if let Err(e) = self.get().await {
            tracing::warn!(error = %e, "the OpenAI secret is not readable yet; requests will retry");
        }
    }

    /// The cached value without any I/O (even past its TTL); `None` before the
    /// first successful fetch.
    pub async fn peek(&self) -> Option<Arc<Secrets>> {
        match &self.source {
            Source::Fixed(s) => Some(s.clone()),
            Source::Manager { .. } => self.cached.read().await.as_ref().map(|c| c.value.clone()),
        }
    }

    /// Reads the secret now, ignoring the cache (the deep health check).
    pub async fn check(&self) -> Result<Arc<Secrets>, SecretError> {
        match self.peek().await {
            Some(current) if self.uses_secrets_manager() => self.fetch(Some(&current)).await,
            Some(current) => Ok(current),
            None => self.fetch(None).await,
        }
    }

    /// Whether the key comes from Secrets Manager (not the environment).
    pub fn uses_secrets_manager(&self) -> bool {
        matches!(self.source, Source::Manager { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_json_secrets() {
        let plain = Secrets::parse("sk-abc").unwrap();
        assert_eq!(plain.openai_api_key.expose(), "sk-abc");
        assert_eq!(plain.session_signing_key.expose().len(), 64);
        let json =
            Secrets::parse(r#"{"OPENAI_API_KEY":"sk-x","SESSION_SIGNING_KEY":"sign"}"#).unwrap();
        assert_eq!(json.session_signing_key.expose(), "sign");
        assert!(Secrets::parse(r#"{"OTHER":"x"}"#).is_err());
        assert!(Secrets::parse("  ").is_err());
        assert!(Secrets::parse(PLACEHOLDER_KEY).unwrap().is_placeholder());
    }

    #[test]
    fn debug_never_shows_values() {
        let s =
            Secrets::parse(r#"{"OPENAI_API_KEY":"sk-live-123","SESSION_SIGNING_KEY":"sig-456"}"#)
                .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("sk-live-123") && !shown.contains("sig-456"),
            "{shown}"
        );
    }
}

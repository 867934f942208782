//! The sessions function's settings.

use taskpilot_http::config::{self, ConfigError};

/// A hosted Agent Builder workflow (legacy mode).
#[derive(Debug, Clone)]
pub struct Workflow {
    /// `CHATKIT_WORKFLOW_ID`
    pub id: String,
    /// `CHATKIT_WORKFLOW_VERSION`
    pub version: Option<String>,
}

/// Read once at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Session lifetime (`CHATKIT_SESSION_TTL_SECONDS`, default 600).
    pub ttl_secs: u64,
    /// Per-session budget (`CHATKIT_MAX_REQUESTS_PER_MINUTE`, default 30).
    pub max_requests_per_minute: u32,
    /// Per-user creations per minute (`SESSION_CREATE_PER_MINUTE`, default 20).
    pub create_per_minute: u32,
    /// Most active self-hosted sessions per user (`CHATKIT_MAX_ACTIVE_SESSIONS`,
    /// default 5, at least 1): a new one beyond it cancels the oldest. Hosted
    /// mode (legacy: Agent Builder workflows are shut down) is not capped; its
    /// sessions live upstream.
    pub max_active_sessions: u32,
    /// Set: hosted mode.
    pub workflow: Option<Workflow>,
    /// Where the self-hosted ChatKit endpoint is (`CHATKIT_URL`).
    pub chatkit_url: Option<String>,
}

impl Settings {
    /// Reads and checks the variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        let ttl_secs = config::parsed("CHATKIT_SESSION_TTL_SECONDS", 600u64)?;
        if !(60..=86_400).contains(&ttl_secs) {
            return Err(ConfigError::Invalid {
                name: "CHATKIT_SESSION_TTL_SECONDS",
                reason: "must be between 60 and 86400".into(),
            });
        }
        let max_requests_per_minute = config::parsed("CHATKIT_MAX_REQUESTS_PER_MINUTE", 30u32)?;
        let create_per_minute = config::parsed("SESSION_CREATE_PER_MINUTE", 20u32)?;
        let max_active_sessions = config::parsed("CHATKIT_MAX_ACTIVE_SESSIONS", 5u32)?;
        for (name, value) in [
            ("CHATKIT_MAX_REQUESTS_PER_MINUTE", max_requests_per_minute),
            ("SESSION_CREATE_PER_MINUTE", create_per_minute),
            ("CHATKIT_MAX_ACTIVE_SESSIONS", max_active_sessions),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(Self {
            ttl_secs,
            max_requests_per_minute,
            create_per_minute,
            max_active_sessions,
            workflow: config::optional("CHATKIT_WORKFLOW_ID").map(|id| Workflow {
                id,
                version: config::optional("CHATKIT_WORKFLOW_VERSION"),
            }),
            chatkit_url: config::optional("CHATKIT_URL"),
        })
    }
}

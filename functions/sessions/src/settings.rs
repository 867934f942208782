//! The sessions function's configuration: every variable it reads, read once
//! at start-up (each part documents its variables, defaults and checks).

use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::budget::ChatBudget;
use taskpilot_http::Cors;
use taskpilot_http::auth::AuthSettings;
use taskpilot_openai::OpenAiSettings;
use taskpilot_runtime::BackendSettings;
use taskpilot_secrets::SecretSettings;

/// Read once in `main`.
pub struct Settings {
    /// The table and the AWS clients.
    pub backend: BackendSettings,
    /// `ALLOWED_ORIGINS`.
    pub cors: Cors,
    /// How callers are verified.
    pub auth: AuthSettings,
    /// The OpenAI key.
    pub secrets: SecretSettings,
    /// The OpenAI client (hosted mode).
    pub openai: OpenAiSettings,
    /// The per-user chat budget it shows.
    pub budget: ChatBudget,
    /// Session lifetimes and limits.
    pub rules: SessionRules,
}

impl Settings {
    /// Reads and checks every variable.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            backend: BackendSettings::from_vars(vars)?,
            cors: Cors::from_vars(vars)?,
            auth: AuthSettings::from_vars(vars)?,
            secrets: SecretSettings::from_vars(vars)?,
            openai: OpenAiSettings::from_vars(vars)?,
            budget: taskpilot_http::budget::chat_budget(vars)?,
            rules: SessionRules::from_vars(vars)?,
        })
    }
}

/// A hosted Agent Builder workflow (legacy mode).
#[derive(Debug, Clone)]
pub struct Workflow {
    /// `CHATKIT_WORKFLOW_ID`
    pub id: String,
    /// `CHATKIT_WORKFLOW_VERSION`
    pub version: Option<String>,
}

/// How sessions are minted and limited.
#[derive(Debug, Clone)]
pub struct SessionRules {
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

impl SessionRules {
    /// Reads and checks the variables above.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let ttl_secs = vars.parsed("CHATKIT_SESSION_TTL_SECONDS", 600u64)?;
        if !(60..=86_400).contains(&ttl_secs) {
            return Err(ConfigError::invalid(
                "CHATKIT_SESSION_TTL_SECONDS",
                "must be between 60 and 86400",
            ));
        }
        let max_requests_per_minute = vars.parsed("CHATKIT_MAX_REQUESTS_PER_MINUTE", 30u32)?;
        let create_per_minute = vars.parsed("SESSION_CREATE_PER_MINUTE", 20u32)?;
        let max_active_sessions = vars.parsed("CHATKIT_MAX_ACTIVE_SESSIONS", 5u32)?;
        for (name, value) in [
            ("CHATKIT_MAX_REQUESTS_PER_MINUTE", max_requests_per_minute),
            ("SESSION_CREATE_PER_MINUTE", create_per_minute),
            ("CHATKIT_MAX_ACTIVE_SESSIONS", max_active_sessions),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(name, "must be at least 1"));
            }
        }
        Ok(Self {
            ttl_secs,
            max_requests_per_minute,
            create_per_minute,
            max_active_sessions,
            workflow: match (
                vars.optional("CHATKIT_WORKFLOW_ID"),
                vars.optional("CHATKIT_WORKFLOW_VERSION"),
            ) {
                (Some(id), version) => Some(Workflow { id, version }),
                (None, _) => None,
            },
            chatkit_url: vars.optional("CHATKIT_URL"),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_and_env_json_set_exactly_what_it_reads() {
        taskpilot_testkit::settings::check("SessionsFunction", |vars| {
            super::Settings::from_vars(vars).map(drop)
        });
    }
}

//! The health function's configuration: every variable it reads, read once at
//! start-up (each part documents its variables, defaults and checks).

use taskpilot_config::{ConfigError, Vars};
use taskpilot_http::Cors;
use taskpilot_openai::OpenAiSettings;
use taskpilot_runtime::BackendSettings;
use taskpilot_secrets::SecretSettings;

/// Read once in `main`.
pub struct Settings {
    /// The table and the AWS clients.
    pub backend: BackendSettings,
    /// `ALLOWED_ORIGINS`.
    pub cors: Cors,
    /// The OpenAI key it checks.
    pub secrets: SecretSettings,
    /// The OpenAI API it checks.
    pub openai: OpenAiSettings,
    /// Hosted mode (legacy), reported as such: `CHATKIT_WORKFLOW_ID` is set.
    pub hosted: bool,
}

impl Settings {
    /// Reads and checks every variable.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            backend: BackendSettings::from_vars(vars)?,
            cors: Cors::from_vars(vars)?,
            secrets: SecretSettings::from_vars(vars)?,
            openai: OpenAiSettings::from_vars(vars)?,
            hosted: vars.optional("CHATKIT_WORKFLOW_ID").is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_and_env_json_set_exactly_what_it_reads() {
        taskpilot_testkit::settings::check("HealthFunction", |vars| {
            super::Settings::from_vars(vars).map(drop)
        });
    }
}

//! The tasks function's configuration: every variable it reads, read once at
//! start-up (each part documents its variables, defaults and checks).

use taskpilot_config::{ConfigError, Vars};
use taskpilot_http::Cors;
use taskpilot_http::auth::AuthSettings;
use taskpilot_runtime::BackendSettings;
use taskpilot_secrets::CursorKey;

/// Read once in `main`.
pub struct Settings {
    /// The table and the AWS clients.
    pub backend: BackendSettings,
    /// `ALLOWED_ORIGINS`.
    pub cors: Cors,
    /// How callers are verified.
    pub auth: AuthSettings,
    /// The listing-cursor key.
    pub cursor_key: CursorKey,
}

impl Settings {
    /// Reads and checks every variable.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            backend: BackendSettings::from_vars(vars)?,
            cors: Cors::from_vars(vars)?,
            auth: AuthSettings::from_vars(vars)?,
            cursor_key: CursorKey::from_vars(vars)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_template_and_env_json_set_exactly_what_it_reads() {
        taskpilot_testkit::settings::check("TasksFunction", |vars| {
            super::Settings::from_vars(vars).map(drop)
        });
    }
}

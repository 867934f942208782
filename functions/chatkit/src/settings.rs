//! The chatkit function's configuration: every variable it reads, read once
//! at start-up (each part documents its variables, defaults and checks).

use taskpilot_assistant::{AgentSettings, DEFAULT_INSTRUCTIONS};
use taskpilot_chatkit::attachments::AttachmentPolicy;
use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::budget::ChatBudget;
use taskpilot_http::Cors;
use taskpilot_http::auth::AuthSettings;
use taskpilot_openai::{DEFAULT_TRANSCRIBE_MODEL, OpenAiSettings};
use taskpilot_runtime::BackendSettings;
use taskpilot_secrets::{CursorKey, SecretSettings};

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
    /// The OpenAI client.
    pub openai: OpenAiSettings,
    /// The listing-cursor key (the assistant's task listings).
    pub cursor_key: CursorKey,
    /// The per-user chat budget it enforces.
    pub budget: ChatBudget,
    /// The assistant.
    pub agent: AgentSettings,
    /// The dictation model (`CHATKIT_TRANSCRIBE_MODEL`).
    pub transcribe_model: String,
    /// Where attachments are kept (`ATTACHMENTS_BUCKET`; unset, none).
    pub bucket: Option<String>,
    /// What users may attach.
    pub attachments: AttachmentPolicy,
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
            cursor_key: CursorKey::from_vars(vars)?,
            budget: taskpilot_http::budget::chat_budget(vars)?,
            agent: agent(vars)?,
            transcribe_model: vars
                .optional("CHATKIT_TRANSCRIBE_MODEL")
                .unwrap_or_else(|| DEFAULT_TRANSCRIBE_MODEL.into()),
            bucket: vars.optional("ATTACHMENTS_BUCKET"),
            attachments: attachment_policy(vars)?,
        })
    }
}

/// The assistant: `CHATKIT_MODEL` (default `gpt-4.1`), `CHATKIT_MODELS` (the
/// models the composer's picker may choose, comma-separated; default just
/// `CHATKIT_MODEL`, which a set list must hold), `CHATKIT_TEMPERATURE`
/// (0 to 2, default 0.7), `CHATKIT_INSTRUCTIONS` (default the built-in
/// prompt), `CHATKIT_MAX_TOOL_STEPS` (default 8) and `CHATKIT_MAX_TOOL_CALLS`
/// (default 20).
fn agent(vars: &Vars) -> Result<AgentSettings, ConfigError> {
    let settings = AgentSettings {
        model: vars
            .optional("CHATKIT_MODEL")
            .unwrap_or_else(|| "gpt-4.1".into()),
        models: vars.list("CHATKIT_MODELS").unwrap_or_default(),
        temperature: vars.parsed("CHATKIT_TEMPERATURE", 0.7f64)?,
        instructions: vars
            .optional("CHATKIT_INSTRUCTIONS")
            .unwrap_or_else(|| DEFAULT_INSTRUCTIONS.into()),
        max_tool_steps: vars.parsed("CHATKIT_MAX_TOOL_STEPS", 8usize)?,
        max_tool_calls: vars.parsed("CHATKIT_MAX_TOOL_CALLS", 20usize)?,
    };
    if !settings.models.is_empty() && !settings.models.contains(&settings.model) {
        return Err(ConfigError::invalid(
            "CHATKIT_MODELS",
            "must include CHATKIT_MODEL (the model of turns that pick none)",
        ));
    }
    if !(0.0..=2.0).contains(&settings.temperature) {
        return Err(ConfigError::invalid(
            "CHATKIT_TEMPERATURE",
            "must be between 0 and 2",
        ));
    }
    Ok(settings)
}

/// What users may attach: `CHATKIT_ATTACHMENT_IMAGE_TYPES` and
/// `CHATKIT_ATTACHMENT_DOCUMENT_TYPES` (comma-separated mime types),
/// `CHATKIT_ATTACHMENT_MAX_IMAGE_MB`, `CHATKIT_ATTACHMENT_MAX_DOCUMENT_MB` and
/// `CHATKIT_ATTACHMENT_QUOTA_MB` (per user); defaults in [`AttachmentPolicy`].
fn attachment_policy(vars: &Vars) -> Result<AttachmentPolicy, ConfigError> {
    const MB: u64 = 1024 * 1024;
    let defaults = AttachmentPolicy::default();
    let types = |name: &'static str, default: Vec<String>| {
        vars.list(name).map_or(default, |list| {
            list.iter().map(|t| t.to_ascii_lowercase()).collect()
        })
    };
    let megabytes = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
        Ok(vars.parsed(name, default / MB)? * MB)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_and_env_json_set_exactly_what_it_reads() {
        taskpilot_testkit::settings::check("ChatKitFunction", |vars| {
            Settings::from_vars(vars).map(drop)
        });
    }

    #[test]
    fn the_model_list_must_hold_the_default_model() {
        let vars = Vars::from_pairs([("CHATKIT_MODELS", "o4-mini, gpt-4.1-mini")]);
        assert!(matches!(
            agent(&vars),
            Err(ConfigError::Invalid {
                name: "CHATKIT_MODELS",
                ..
            })
        ));
        let vars = Vars::from_pairs([("CHATKIT_MODELS", "o4-mini, gpt-4.1")]);
        assert_eq!(agent(&vars).unwrap().models, ["o4-mini", "gpt-4.1"]);
        assert!(
            agent(&Vars::from_pairs([("CHATKIT_MODELS", "")]))
                .unwrap()
                .models
                .is_empty()
        );
    }

    #[test]
    fn a_temperature_outside_0_to_2_is_refused() {
        for bad in ["-0.1", "2.1"] {
            let vars = Vars::from_pairs([("CHATKIT_TEMPERATURE", bad)]);
            assert!(
                matches!(
                    agent(&vars),
                    Err(ConfigError::Invalid {
                        name: "CHATKIT_TEMPERATURE",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for good in ["0", "2"] {
            assert!(agent(&Vars::from_pairs([("CHATKIT_TEMPERATURE", good)])).is_ok());
        }
    }

    #[test]
    fn attachment_types_are_lowercased_and_sizes_are_megabytes() {
        let vars = Vars::from_pairs([
            ("CHATKIT_ATTACHMENT_IMAGE_TYPES", "Image/PNG, image/gif,"),
            ("CHATKIT_ATTACHMENT_MAX_IMAGE_MB", "2"),
        ]);
        let policy = attachment_policy(&vars).unwrap();
        assert_eq!(policy.image_types, ["image/png", "image/gif"]);
        assert_eq!(policy.max_image_bytes, 2 * 1024 * 1024);
        assert_eq!(
            policy.document_types,
            AttachmentPolicy::default().document_types
        );
    }
}

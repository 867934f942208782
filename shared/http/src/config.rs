//! Reading configuration from the environment, once, at start-up.

/// A missing or unusable setting; start-up fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} must be set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Every variable this process looked up (logged once after start-up, so a
/// test can compare it with what the template sets).
static READ: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The variables read so far.
pub fn variables_read() -> Vec<&'static str> {
    READ.lock()
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default()
}

/// A variable's value, or `None` when unset or blank.
pub fn optional(name: &'static str) -> Option<String> {
    if let Ok(mut read) = READ.lock() {
        read.insert(name);
    }
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A variable that must be set.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    optional(name).ok_or(ConfigError::Missing(name))
}

/// A variable parsed with `FromStr`, or `default` when unset.
pub fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match optional(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

/// The per-user chat budget, read alike by the functions that enforce it
/// (`chatkit`) and show it (`sessions`): `CHATKIT_USER_TURNS_PER_MINUTE`
/// (default 10) and `CHATKIT_USER_TOKENS_PER_DAY` (default 200000), both at
/// least 1; `CHATKIT_USER_BUDGET_WARN_PERCENT` (default 80, 1 to 100).
pub fn chat_budget() -> Result<taskpilot_domain::budget::ChatBudget, ConfigError> {
    let defaults = taskpilot_domain::budget::ChatBudget::default();
    let budget = taskpilot_domain::budget::ChatBudget {
        turns_per_minute: parsed("CHATKIT_USER_TURNS_PER_MINUTE", defaults.turns_per_minute)?,
        tokens_per_day: parsed("CHATKIT_USER_TOKENS_PER_DAY", defaults.tokens_per_day)?,
        warn_percent: parsed("CHATKIT_USER_BUDGET_WARN_PERCENT", defaults.warn_percent)?,
    };
    let at_least_one = |name: &'static str, zero: bool| match zero {
        true => Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1".into(),
        }),
        false => Ok(()),
    };
    at_least_one(
        "CHATKIT_USER_TURNS_PER_MINUTE",
        budget.turns_per_minute == 0,
    )?;
    at_least_one("CHATKIT_USER_TOKENS_PER_DAY", budget.tokens_per_day == 0)?;
    if !(1..=100).contains(&budget.warn_percent) {
        return Err(ConfigError::Invalid {
            name: "CHATKIT_USER_BUDGET_WARN_PERCENT",
            reason: "must be between 1 and 100".into(),
        });
    }
    Ok(budget)
}

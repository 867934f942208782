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

#[cfg(test)]
mod tests {
    use super::*;

    /// Set by Cargo for every test process.
    const SET: &str = "CARGO_PKG_NAME";
    /// Set by Cargo, blank: this package has no homepage.
    const BLANK: &str = "CARGO_PKG_HOMEPAGE";
    const UNSET: &str = "TASKPILOT_HTTP_TEST_NEVER_SET";

    #[test]
    fn a_set_variable_is_read() {
        assert_eq!(optional(SET).as_deref(), Some(env!("CARGO_PKG_NAME")));
    }

    #[test]
    fn an_unset_variable_is_none() {
        assert_eq!(optional(UNSET), None);
    }

    #[test]
    fn a_blank_variable_is_none() {
        assert_eq!(std::env::var(BLANK).as_deref(), Ok(""), "precondition");
        assert_eq!(optional(BLANK), None);
    }

    #[test]
    fn a_required_variable_is_read() {
        assert_eq!(required(SET).unwrap(), env!("CARGO_PKG_NAME"));
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        assert!(matches!(required(UNSET), Err(ConfigError::Missing(UNSET))));
    }

    #[test]
    fn an_unset_parsed_variable_takes_the_default() {
        assert_eq!(parsed(UNSET, 7u32).unwrap(), 7);
    }

    #[test]
    fn a_set_parsed_variable_is_parsed() {
        let patch: u32 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap();
        assert_eq!(parsed("CARGO_PKG_VERSION_PATCH", patch + 1).unwrap(), patch);
    }

    #[test]
    fn an_unparsable_variable_is_invalid() {
        let err = parsed::<u32>(SET, 7).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { name: SET, .. }),
            "{err}"
        );
    }

    #[test]
    fn what_was_looked_up_is_listed() {
        optional("TASKPILOT_HTTP_TEST_LOOKED_UP");
        assert!(variables_read().contains(&"TASKPILOT_HTTP_TEST_LOOKED_UP"));
    }

    #[test]
    fn an_unset_chat_budget_is_the_default() {
        for name in [
            "CHATKIT_USER_TURNS_PER_MINUTE",
            "CHATKIT_USER_TOKENS_PER_DAY",
            "CHATKIT_USER_BUDGET_WARN_PERCENT",
        ] {
            assert!(
                std::env::var(name).is_err(),
                "precondition: {name} is unset"
            );
        }
        assert_eq!(
            chat_budget().unwrap(),
            taskpilot_domain::budget::ChatBudget::default()
        );
    }
}

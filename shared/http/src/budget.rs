//! The per-user chat budget's settings, shared by the functions that enforce
//! it and show it.

use taskpilot_config::{ConfigError, Vars};
use taskpilot_domain::budget::ChatBudget;

/// The per-user chat budget, read alike by the functions that enforce it
/// (`chatkit`) and show it (`sessions`): `CHATKIT_USER_TURNS_PER_MINUTE`
/// (default 10) and `CHATKIT_USER_TOKENS_PER_DAY` (default 200000), both at
/// least 1; `CHATKIT_USER_BUDGET_WARN_PERCENT` (default 80, 1 to 100).
pub fn chat_budget(vars: &Vars) -> Result<ChatBudget, ConfigError> {
    let defaults = ChatBudget::default();
    let budget = ChatBudget {
        turns_per_minute: vars
            .parsed("CHATKIT_USER_TURNS_PER_MINUTE", defaults.turns_per_minute)?,
        tokens_per_day: vars.parsed("CHATKIT_USER_TOKENS_PER_DAY", defaults.tokens_per_day)?,
        warn_percent: vars.parsed("CHATKIT_USER_BUDGET_WARN_PERCENT", defaults.warn_percent)?,
    };
    let at_least_one = |name: &'static str, zero: bool| match zero {
        true => Err(ConfigError::invalid(name, "must be at least 1")),
        false => Ok(()),
    };
    at_least_one(
        "CHATKIT_USER_TURNS_PER_MINUTE",
        budget.turns_per_minute == 0,
    )?;
    at_least_one("CHATKIT_USER_TOKENS_PER_DAY", budget.tokens_per_day == 0)?;
    if !(1..=100).contains(&budget.warn_percent) {
        return Err(ConfigError::invalid(
            "CHATKIT_USER_BUDGET_WARN_PERCENT",
            "must be between 1 and 100",
        ));
    }
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_chat_budget_is_the_default() {
        assert_eq!(
            chat_budget(&Vars::from_pairs::<&str, &str>([])).unwrap(),
            ChatBudget::default()
        );
    }

    #[test]
    fn a_set_chat_budget_is_read() {
        let vars = Vars::from_pairs([
            ("CHATKIT_USER_TURNS_PER_MINUTE", "3"),
            ("CHATKIT_USER_TOKENS_PER_DAY", "1000"),
            ("CHATKIT_USER_BUDGET_WARN_PERCENT", "50"),
        ]);
        let budget = chat_budget(&vars).unwrap();
        assert_eq!(
            (
                budget.turns_per_minute,
                budget.tokens_per_day,
                budget.warn_percent
            ),
            (3, 1000, 50)
        );
    }

    #[test]
    fn a_zero_or_out_of_range_budget_is_refused_and_named() {
        for (name, value) in [
            ("CHATKIT_USER_TURNS_PER_MINUTE", "0"),
            ("CHATKIT_USER_TOKENS_PER_DAY", "0"),
            ("CHATKIT_USER_BUDGET_WARN_PERCENT", "0"),
            ("CHATKIT_USER_BUDGET_WARN_PERCENT", "101"),
        ] {
            let err = chat_budget(&Vars::from_pairs([(name, value)])).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { name: n, .. } if n == name),
                "{name}={value}: {err}"
            );
        }
    }

    #[test]
    fn the_edges_of_the_warning_range_are_accepted() {
        for value in ["1", "100"] {
            let vars = Vars::from_pairs([("CHATKIT_USER_BUDGET_WARN_PERCENT", value)]);
            assert!(chat_budget(&vars).is_ok(), "{value}");
        }
    }
}

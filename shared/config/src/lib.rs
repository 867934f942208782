//! Start-up configuration, read once.
//!
//! Every setting reaches the code through a [`Vars`]: the process environment
//! in `main`, a list of pairs in a test. Each component reads its own
//! variables from it (`Cors::from_vars`, `AuthSettings::from_vars`, …) and
//! each function gathers them into one `Settings`, so a test can build any
//! function's configuration from values and check it against the template.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// A missing or unusable setting; start-up fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} must be set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why its value cannot be used (never the value of a secret).
        reason: String,
    },
}

impl ConfigError {
    /// `name` holds something unusable, for `reason`.
    pub fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name,
            reason: reason.into(),
        }
    }
}

/// Where variables come from, and which names were looked up (logged once
/// after start-up, and compared with the template by the settings tests).
pub struct Vars {
    source: Source,
    read: Mutex<BTreeSet<&'static str>>,
}

enum Source {
    Process,
    Pairs(BTreeMap<String, String>),
}

impl Vars {
    /// The process environment.
    pub fn from_env() -> Self {
        Self::new(Source::Process)
    }

    /// Only `pairs` (tests, tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::new(Source::Pairs(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            read: Mutex::new(BTreeSet::new()),
        }
    }

    /// A variable's value, or `None` when unset or blank.
    pub fn optional(&self, name: &'static str) -> Option<String> {
        if let Ok(mut read) = self.read.lock() {
            read.insert(name);
        }
        self.platform(name)
    }

    /// A variable the platform or the tooling sets, not the function's own
    /// configuration (Lambda's `AWS_REGION` and credentials, its log level
    /// and format, the SDK's endpoint overrides, `RUST_LOG`): read like
    /// [`Vars::optional`] but not listed by [`Vars::read`], so the template
    /// need not set it.
    pub fn platform(&self, name: &str) -> Option<String> {
        let value = match &self.source {
            Source::Process => std::env::var(name).ok(),
            Source::Pairs(pairs) => pairs.get(name).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    /// A variable that must be set.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// A variable parsed with `FromStr`, or `default` when unset.
    pub fn parsed<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, e.to_string())),
        }
    }

    /// A comma-separated list (items trimmed, empty items dropped), or `None`
    /// when unset.
    pub fn list(&self, name: &'static str) -> Option<Vec<String>> {
        self.optional(name).map(|raw| {
            raw.split(',')
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect()
        })
    }

    /// Every name looked up so far, sorted.
    pub fn read(&self) -> Vec<&'static str> {
        self.read
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_pairs([("SET", "value"), ("BLANK", "  "), ("NUMBER", " 42 ")])
    }

    #[test]
    fn a_set_variable_is_read() {
        assert_eq!(vars().optional("SET").as_deref(), Some("value"));
    }

    #[test]
    fn unset_and_blank_variables_are_none() {
        let vars = vars();
        assert_eq!(vars.optional("UNSET"), None);
        assert_eq!(vars.optional("BLANK"), None);
    }

    #[test]
    fn a_missing_required_variable_is_named() {
        assert!(matches!(
            vars().required("UNSET"),
            Err(ConfigError::Missing("UNSET"))
        ));
        assert_eq!(vars().required("SET").unwrap(), "value");
    }

    #[test]
    fn parsed_variables_take_the_default_when_unset_and_are_trimmed() {
        let vars = vars();
        assert_eq!(vars.parsed("UNSET", 7u32).unwrap(), 7);
        assert_eq!(vars.parsed("NUMBER", 7u32).unwrap(), 42);
    }

    #[test]
    fn an_unparsable_variable_is_invalid_and_named() {
        let err = vars().parsed::<u32>("SET", 7).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { name: "SET", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_list_is_split_and_trimmed() {
        let vars = Vars::from_pairs([("L", " a, b ,,c ")]);
        assert_eq!(vars.list("L").unwrap(), ["a", "b", "c"]);
        assert_eq!(vars.list("UNSET"), None);
    }

    #[test]
    fn what_was_looked_up_is_listed_once_and_sorted() {
        let vars = vars();
        vars.optional("SET");
        vars.optional("UNSET");
        vars.optional("SET");
        assert_eq!(vars.read(), ["SET", "UNSET"]);
    }

    #[test]
    fn a_platform_variable_is_read_but_not_listed() {
        let vars = vars();
        assert_eq!(vars.platform("SET").as_deref(), Some("value"));
        assert_eq!(vars.platform("BLANK"), None);
        assert!(vars.read().is_empty());
    }

    #[test]
    fn the_process_environment_is_a_source() {
        let vars = Vars::from_env();
        assert_eq!(
            vars.optional("CARGO_PKG_NAME").as_deref(),
            Some("taskpilot-config")
        );
    }
}

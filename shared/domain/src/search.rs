//! Text search over a user's tasks (`GET /api/v1/tasks?q=`): the validated
//! query, the case folding, and the folded text a task is searched in.
//!
//! Folding is Unicode's default lowercase mapping, character by character
//! ([`char::to_lowercase`]: locale-independent and context-free, so `İ`
//! becomes `i̇` and `Σ` always `σ`), with the final sigma `ς` read as `σ`
//! so a Greek word matches whichever form it was typed in. There is no accent
//! stripping and no normalization: `é` and `e` + U+0301 differ, and `ß`
//! does not match `ss`. The store keeps the folded title and tags on each
//! task row, so both sides of a comparison are folded by this one function.

use crate::error::DomainError;
use crate::task::Task;

/// Longest query, in characters, after trimming.
pub const QUERY_MAX: usize = 100;

/// Separates the tags in their folded search text. A query cannot contain it
/// (control characters are refused), so no match spans two tags.
pub const TAG_SEPARATOR: char = '\n';

/// A validated search query: no control characters, 1–100 characters after
/// trimming Unicode whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    typed: String,
    folded: String,
}

impl SearchText {
    /// Validates a raw `q` value.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.chars().any(char::is_control) {
            return Err(DomainError::validation(
                "q",
                "must not contain control characters",
            ));
        }
        let typed = raw.trim();
        let len = typed.chars().count();
        if len == 0 {
            return Err(DomainError::validation(
                "q",
                "must not be empty (leave `q` out to list every task)",
            ));
        }
        if len > QUERY_MAX {
            return Err(DomainError::validation(
                "q",
                format!("must be at most {QUERY_MAX} characters after trimming (got {len})"),
            ));
        }
        Ok(Self {
            typed: typed.to_owned(),
            folded: fold(typed),
        })
    }

    /// The query as sent, trimmed.
    pub fn typed(&self) -> &str {
        &self.typed
    }

    /// The folded query: what a task's folded title or tags must contain.
    pub fn folded(&self) -> &str {
        &self.folded
    }

    /// Whether the task's title or one of its tags contains the query,
    /// ignoring case (the store applies the same rule).
    pub fn matches(&self, task: &Task) -> bool {
        fold(&task.title).contains(&self.folded) || fold_tags(&task.tags).contains(&self.folded)
    }
}

/// The case-folded form of `text` (see the module documentation).
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect()
}

/// The folded tags as one text, separated by [`TAG_SEPARATOR`].
pub fn fold_tags(tags: &[String]) -> String {
    let folded: Vec<String> = tags.iter().map(|t| fold(t)).collect();
    folded.join(&TAG_SEPARATOR.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Priority, TaskId};

    fn field_of(raw: &str) -> String {
        match SearchText::parse(raw).unwrap_err() {
            DomainError::Validation { field, message } => {
                assert!(!message.is_empty());
                field
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn task(title: &str, tags: &[&str]) -> Task {
        let now = crate::timestamp::now();
        Task {
            id: TaskId::generate(),
            title: title.into(),
            description: Some("the description is not searched".into()),
            completed: false,
            priority: Priority::Medium,
            due_date: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            created_at: now,
            updated_at: now,
            completed_at: None,
            version: 1,
        }
    }

    fn finds(query: &str, t: &Task) -> bool {
        SearchText::parse(query).unwrap().matches(t)
    }

    #[test]
    fn queries_are_trimmed_and_bounded() {
        let q = SearchText::parse("  Buy Milk \u{3000}").unwrap();
        assert_eq!((q.typed(), q.folded()), ("Buy Milk", "buy milk"));
        for empty in ["", " ", "\u{a0}\u{2003}\u{3000}"] {
            assert_eq!(field_of(empty), "q", "{empty:?}");
        }
        assert!(SearchText::parse(&"x".repeat(QUERY_MAX)).is_ok());
        assert_eq!(field_of(&"x".repeat(QUERY_MAX + 1)), "q");
        // The limit counts characters, not bytes, and not the trimmed spaces.
        assert!(SearchText::parse(&"🚀".repeat(QUERY_MAX)).is_ok());
        assert!(SearchText::parse(&format!("   {}   ", "é".repeat(QUERY_MAX))).is_ok());
        assert_eq!(field_of(&"é".repeat(QUERY_MAX + 1)), "q");
    }

    #[test]
    fn control_characters_are_refused_anywhere() {
        for c in [
            '\0', '\u{7}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}',
        ] {
            assert_eq!(field_of(&format!("a{c}b")), "q", "U+{:04X}", c as u32);
            // Even where trimming would have removed it.
            assert_eq!(field_of(&format!("{c}ab")), "q", "U+{:04X}", c as u32);
        }
        // Other invisible characters are text like any other.
        for ok in ["a\u{200b}b", "\u{feff}x", "a\u{202e}b", "a\u{2028}b"] {
            assert!(SearchText::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn folding_is_unicode_lowercase() {
        assert_eq!(fold("Buy MILK"), "buy milk");
        assert_eq!(fold("ÉCOLE Ünïcödé"), "école ünïcödé");
        assert_eq!(fold("İSTANBUL"), "i\u{307}stanbul");
        assert_eq!(fold("ΟΔΟΣ οδος"), "οδοσ οδοσ", "sigma in every form");
        assert_eq!(fold("STRASSE"), "strasse");
        assert_eq!(fold("Straße"), "straße", "no full case folding");
        assert_eq!(fold("🚀 ＡＢＣ"), "🚀 ａｂｃ");
        assert_eq!(fold_tags(&["Home".into(), "WORK".into()]), "home\nwork");
        assert_eq!(fold_tags(&[]), "");
    }

    #[test]
    fn folding_is_idempotent_and_per_character() {
        // The store relies on both: the raw-title fallback for old rows can
        // then never match where the folded text would not.
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let once = fold(&c.to_string());
            assert_eq!(fold(&once), once, "U+{:04X}", c as u32);
        }
        let (a, b) = ("ΣΑΣ İx", "Ǆ ß ΣΟ");
        assert_eq!(fold(&format!("{a}{b}")), format!("{}{}", fold(a), fold(b)));
    }

    #[test]
    fn titles_and_tags_match_ignoring_case() {
        let t = task("Buy Oat MILK", &["Errands", "home"]);
        for hit in [
            "milk",
            "MILK",
            "oat m",
            "buy oat milk",
            "errand",
            "RANDS",
            "home",
        ] {
            assert!(finds(hit, &t), "{hit}");
        }
        for miss in [
            "description",
            "milkerrands",
            "milk errands",
            "errandshome",
            "oats",
        ] {
            assert!(!finds(miss, &t), "{miss}");
        }
        let greek = task("ΟΔΟΣ", &[]);
        assert!(finds("οδος", &greek) && finds("ΟΔΟΣ", &greek) && finds("οσ", &greek));
        let turkish = task("İstanbul trip", &[]);
        assert!(finds("İSTANBUL", &turkish));
        assert!(!finds("istanbul", &turkish), "İ folds to i + U+0307");
        assert!(!finds("strasse", &task("Straße", &[])));
        // Text that looks like an expression is only text.
        let odd = task("a) OR :q (b", &["#search"]);
        for hit in [") OR :q (", ":q", "#SEARCH"] {
            assert!(finds(hit, &odd), "{hit}");
        }
    }
}

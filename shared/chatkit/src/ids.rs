//! Time-sortable ids with ChatKit's prefixes (`thr_`, `msg_`, …), so a store
//! can order threads and items by id alone, ties included.

/// A new id: `<prefix>_<ulid in lower case>`.
pub fn new(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        taskpilot_domain::TaskId::generate().as_str().to_lowercase()
    )
}

/// A new thread id.
pub fn thread() -> String {
    new("thr")
}

/// A new message id.
pub fn message() -> String {
    new("msg")
}

/// A new widget item id.
pub fn widget() -> String {
    new("wdg")
}

/// A new structured-input item id.
pub fn question() -> String {
    new("sti")
}

/// A new attachment id.
pub fn attachment() -> String {
    new("atc")
}

/// A new client tool call item id.
pub fn tool_call() -> String {
    new("ctc")
}

/// A new hidden-context item id.
pub fn hidden() -> String {
    new("shcx")
}

/// Whether `id` could be one of ours (guards store keys against junk).
pub fn plausible(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_id_has_its_prefix_and_a_lower_case_ulid() {
        for (id, prefix) in [
            (thread(), "thr_"),
            (message(), "msg_"),
            (widget(), "wdg_"),
            (question(), "sti_"),
            (attachment(), "atc_"),
            (hidden(), "shcx_"),
        ] {
            let ulid = id.strip_prefix(prefix).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(ulid.len(), 26, "{id}");
            assert_eq!(ulid, ulid.to_lowercase(), "{id}");
            assert!(plausible(&id), "{id}");
        }
    }

    #[test]
    fn plausible_ids_are_short_and_plain() {
        assert!(plausible(&"a".repeat(64)));
        assert!(!plausible(&"a".repeat(65)));
        assert!(!plausible(""));
        assert!(!plausible("thr_1/../x"));
        assert!(plausible("thr_01-ab_C"));
    }
}

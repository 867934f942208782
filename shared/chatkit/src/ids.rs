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

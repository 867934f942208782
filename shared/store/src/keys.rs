//! Key builders: the only place that knows the key layout.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use taskpilot_domain::{TaskId, UserId};

/// Partition key attribute.
pub const PK: &str = "pk";
/// Sort key attribute.
pub const SK: &str = "sk";
/// Expiry attribute (epoch seconds) that DynamoDB's TTL removes.
pub const TTL: &str = "ttl";
/// Sort-key prefix of tasks.
pub const TASK_PREFIX: &str = "TASK#";
const IDEMPOTENCY_PREFIX: &str = "IDEMPOTENCY#TASK#";

/// `USER#<sub>`
pub fn user_pk(user: &UserId) -> String {
    format!("USER#{}", user.as_str())
}

/// `TASK#<id>`
pub fn task_sk(id: &TaskId) -> String {
    format!("{TASK_PREFIX}{id}")
}

/// `IDEMPOTENCY#TASK#<key>`
pub fn idempotency_sk(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}

/// The task id inside a task sort key.
pub fn task_id_from_sk(sk: &str) -> Option<TaskId> {
    sk.strip_prefix(TASK_PREFIX).and_then(TaskId::parse)
}

/// A full primary key.
pub fn key(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(pk)),
        (SK.to_owned(), AttributeValue::S(sk)),
    ])
}

/// `SESSION#<id>`
pub fn session_sk(id: &str) -> String {
    format!("{SESSION_PREFIX}{id}")
}

/// Sort-key prefix of sessions.
pub const SESSION_PREFIX: &str = "SESSION#";

/// `RATE#<bucket>#<window start>`
pub fn rate_sk(bucket: &str, window_start: i64) -> String {
    format!("RATE#{bucket}#{window_start}")
}

/// Sort-key prefix of a user's daily usage records.
pub const USAGE_PREFIX: &str = "USAGE#";

/// `USAGE#<yyyy-mm-dd>`: a user's model usage on one UTC day.
pub fn usage_sk(day: &taskpilot_domain::budget::UsageDay) -> String {
    format!("{USAGE_PREFIX}{}", day.key())
}

/// `THREAD#<id>`: a ChatKit thread's metadata.
pub fn thread_sk(thread_id: &str) -> String {
    format!("{THREAD_PREFIX}{thread_id}")
}

/// Sort-key prefix of threads.
pub const THREAD_PREFIX: &str = "THREAD#";

/// `ITEM#<thread id>#`: the prefix of a thread's items.
pub fn items_prefix(thread_id: &str) -> String {
    format!("ITEM#{thread_id}#")
}

/// `ITEM#<thread id>#~`: a copy of the thread's metadata that sorts after all
/// its items, so one descending Query reads the thread and its latest items.
pub fn thread_head_sk(thread_id: &str) -> String {
    format!("{}~", items_prefix(thread_id))
}

/// The upper bound of a thread's item keys (below its head): item ids are
/// `[0-9A-Za-z_-]`, all before `}` and `~`.
pub fn items_end(thread_id: &str) -> String {
    format!("{}}}", items_prefix(thread_id))
}

/// `ATTACHMENT#`: the prefix of a user's attachment records.
pub const ATTACHMENT_PREFIX: &str = "ATTACHMENT#";

/// `ATTACHMENT#<id>`: one attachment's record.
pub fn attachment_sk(attachment_id: &str) -> String {
    format!("{ATTACHMENT_PREFIX}{attachment_id}")
}

/// `FEEDBACK#<thread id>#`: the prefix of a thread's ratings.
pub fn feedback_prefix(thread_id: &str) -> String {
    format!("FEEDBACK#{thread_id}#")
}

/// `FEEDBACK#<thread id>#<item id>`: one rating per item.
pub fn feedback_sk(thread_id: &str, item_id: &str) -> String {
    format!("{}{item_id}", feedback_prefix(thread_id))
}

/// `ITEM#<thread id>#<ulid>#<prefix>` for an item id `<prefix>_<ulid>`: the
/// time-sortable part comes first, so items of every kind (`msg_`, `wdg_`…)
/// sort by creation.
pub fn item_sk(thread_id: &str, item_id: &str) -> String {
    match item_id.split_once('_') {
        Some((prefix, rest)) => format!("{}{rest}#{prefix}", items_prefix(thread_id)),
        None => format!("{}{item_id}", items_prefix(thread_id)),
    }
}

//! Key builders: the only place that knows the key layout.

use aws_sdk_dynamodb::types::AttributeValue;

use taskpilot_domain::{TaskId, UserId};

use crate::item::Item;

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
pub fn key(pk: String, sk: String) -> Item {
    Item::from([
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

#[cfg(feature = "chat")]
pub use chat::*;

/// The ChatKit adapter's keys (threads, items, attachments, feedback).
#[cfg(feature = "chat")]
mod chat {
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

    /// `ACTIVITY#`: the prefix of the activity index (threads by latest activity).
    pub const ACTIVITY_PREFIX: &str = "ACTIVITY#";

    /// `ACTIVITY#<ms, 13 digits>#<thread id>`: one position of a thread in the
    /// activity index (ms since the epoch, so the keys sort by time, then id).
    pub fn activity_sk(at_ms: u64, thread_id: &str) -> String {
        format!("{ACTIVITY_PREFIX}{at_ms:013}#{thread_id}")
    }

    /// The upper bound of the index entries at `at_ms` or before: ids are
    /// `[0-9A-Za-z_-]`, all before `~`.
    pub fn activity_end(at_ms: u64) -> String {
        format!("{ACTIVITY_PREFIX}{at_ms:013}#~")
    }

    /// `LASTACTIVE#`: the prefix of the threads' pointers to their entries.
    pub const LAST_ACTIVE_PREFIX: &str = "LASTACTIVE#";

    /// `LASTACTIVE#<thread id>`: the time of the thread's current index entry.
    pub fn last_active_sk(thread_id: &str) -> String {
        format!("{LAST_ACTIVE_PREFIX}{thread_id}")
    }

    /// `LISTING#THREADS`: the user's listing floor (the latest snapshot a
    /// listing took) and whether threads older than the index are indexed.
    pub const LISTING_SK: &str = "LISTING#THREADS";

    /// `ITEM#<thread id>#<ulid>#<prefix>` for an item id `<prefix>_<ulid>`: the
    /// time-sortable part comes first, so items of every kind (`msg_`, `wdg_`…)
    /// sort by creation.
    pub fn item_sk(thread_id: &str, item_id: &str) -> String {
        match item_id.split_once('_') {
            Some((prefix, rest)) => format!("{}{rest}#{prefix}", items_prefix(thread_id)),
            None => format!("{}{item_id}", items_prefix(thread_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ULID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    fn task_id() -> TaskId {
        TaskId::parse(ULID).unwrap()
    }

    #[test]
    fn every_key_is_spelled_as_the_stored_rows_spell_it() {
        let user = UserId::new("auth0|abc").unwrap();
        let day = taskpilot_domain::budget::UsageDay::of("2026-03-07T23:59:59Z".parse().unwrap());
        for (built, stored) in [
            (user_pk(&user), "USER#auth0|abc".to_owned()),
            (task_sk(&task_id()), format!("TASK#{ULID}")),
            (session_sk("cksess_01"), "SESSION#cksess_01".into()),
            (
                rate_sk("chat", 1_700_000_040),
                "RATE#chat#1700000040".into(),
            ),
            (usage_sk(&day), "USAGE#2026-03-07".into()),
        ] {
            assert_eq!(built, stored);
        }
    }

    #[cfg(feature = "chat")]
    #[test]
    fn every_chat_key_is_spelled_as_the_stored_rows_spell_it() {
        for (built, stored) in [
            (thread_sk("thr_1"), "THREAD#thr_1"),
            (items_prefix("thr_1"), "ITEM#thr_1#"),
            (thread_head_sk("thr_1"), "ITEM#thr_1#~"),
            (items_end("thr_1"), "ITEM#thr_1#}"),
            (attachment_sk("atc_1"), "ATTACHMENT#atc_1"),
            (feedback_prefix("thr_1"), "FEEDBACK#thr_1#"),
            (feedback_sk("thr_1", "msg_2"), "FEEDBACK#thr_1#msg_2"),
            // An item's ULID comes before its kind, split at the first `_`.
            (item_sk("thr_1", "msg_01AB"), "ITEM#thr_1#01AB#msg"),
            (item_sk("thr_1", "wdg_01AB_x"), "ITEM#thr_1#01AB_x#wdg"),
            (item_sk("thr_1", "legacy"), "ITEM#thr_1#legacy"),
            (
                activity_sk(1_772_877_600_000, "thr_1"),
                "ACTIVITY#1772877600000#thr_1",
            ),
            (activity_sk(7, "thr_1"), "ACTIVITY#0000000000007#thr_1"),
            (activity_end(7), "ACTIVITY#0000000000007#~"),
            (last_active_sk("thr_1"), "LASTACTIVE#thr_1"),
        ] {
            assert_eq!(built, stored);
        }
    }

    #[test]
    fn an_idempotency_sort_key_is_outside_the_task_prefix() {
        let sk = idempotency_sk("key-1");
        assert_eq!(sk, "IDEMPOTENCY#TASK#key-1");
        assert!(
            !sk.starts_with(TASK_PREFIX),
            "a task listing must not read it"
        );
    }

    #[test]
    fn a_task_sort_key_gives_its_id_back() {
        assert_eq!(task_id_from_sk(&task_sk(&task_id())), Some(task_id()));
    }

    #[test]
    fn a_sort_key_without_the_task_prefix_has_no_task_id() {
        assert_eq!(task_id_from_sk(ULID), None);
        assert_eq!(task_id_from_sk(&idempotency_sk(ULID)), None);
    }

    #[test]
    fn a_task_sort_key_whose_id_is_no_ulid_has_no_task_id() {
        assert_eq!(task_id_from_sk("TASK#not-a-ulid"), None);
    }

    #[test]
    fn a_key_holds_exactly_the_partition_and_sort_keys() {
        let key = key("USER#u".into(), "TASK#t".into());
        assert_eq!(
            key,
            Item::from([
                ("pk".to_owned(), AttributeValue::S("USER#u".into())),
                ("sk".to_owned(), AttributeValue::S("TASK#t".into())),
            ])
        );
    }

    #[cfg(feature = "chat")]
    #[test]
    fn item_keys_sort_inside_their_range_and_before_the_head() {
        let item = item_sk("thr_1", "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        let last_of_every_kind = item_sk("thr_1", "zzz_zzzzzzzzzzzzzzzzzzzzzzzzzz");
        assert!(items_prefix("thr_1") < item);
        assert!(last_of_every_kind < items_end("thr_1"));
        assert!(items_end("thr_1") < thread_head_sk("thr_1"));
    }

    #[cfg(feature = "chat")]
    #[test]
    fn activity_entries_sort_by_time_then_thread_and_inside_their_bound() {
        let earlier = activity_sk(999, "thr_z");
        let later = activity_sk(1_000, "thr_a");
        let tie = activity_sk(1_000, "thr_b");
        assert!(ACTIVITY_PREFIX < earlier.as_str());
        assert!(earlier < later && later < tie);
        assert!(tie < activity_end(1_000) && activity_end(1_000) < activity_sk(1_001, "thr_0"));
        assert!(activity_sk(1_000, &"z".repeat(64)) < activity_end(1_000));
        for other in [LAST_ACTIVE_PREFIX, LISTING_SK, "ATTACHMENT#", "THREAD#"] {
            assert!(!other.starts_with(ACTIVITY_PREFIX), "{other}");
        }
    }

    #[cfg(feature = "chat")]
    #[test]
    fn items_of_different_kinds_sort_by_creation() {
        let older_widget = item_sk("thr_1", "wdg_01ARZ3NDEKTSV4RRFFQ69G5FAA");
        let newer_message = item_sk("thr_1", "msg_01ARZ3NDEKTSV4RRFFQ69G5FAB");
        assert!(older_widget < newer_message);
    }
}

//! What a process remembers per key until a moment: refusals that hold until
//! their window ends, sessions that stay cancelled until their secret
//! expires. Bounded: when full, expired entries go first, then everything.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};

/// Most entries kept.
pub const REMEMBERED: usize = 4096;

/// Values by key, each until its moment.
#[derive(Debug)]
pub struct Remembered<V>(Mutex<HashMap<String, (V, DateTime<Utc>)>>);

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<V: Copy> Remembered<V> {
    fn map(&self) -> MutexGuard<'_, HashMap<String, (V, DateTime<Utc>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` and its moment, while that moment is after `now`.
    pub fn get(&self, key: &str, now: DateTime<Utc>) -> Option<(V, DateTime<Utc>)> {
        self.map()
            .get(key)
            .copied()
            .filter(|(_, until)| *until > now)
    }

    /// Remembers `value` for `key` until `until`.
    pub fn remember(&self, key: &str, value: V, until: DateTime<Utc>, now: DateTime<Utc>) {
        let mut map = self.map();
        if map.len() >= REMEMBERED {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= REMEMBERED {
                map.clear();
            }
        }
        map.insert(key.to_owned(), (value, until));
    }

    /// How many entries are kept (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, s).unwrap()
    }

    fn key(i: usize) -> String {
        format!("user-{i}")
    }

    #[test]
    fn a_value_holds_until_its_moment() {
        let r = Remembered::default();
        assert!(r.is_empty());
        r.remember("a", 7u8, at(10, 0, 30), at(10, 0, 0));
        assert_eq!(r.get("a", at(10, 0, 29)), Some((7, at(10, 0, 30))));
        assert_eq!(r.get("a", at(10, 0, 30)), None);
        assert_eq!(r.get("b", at(10, 0, 0)), None);
    }

    #[test]
    fn expired_values_stay_while_there_is_room() {
        let r = Remembered::default();
        r.remember("a", 1u8, at(10, 0, 0), at(10, 0, 0));
        assert!(!r.is_empty());
        r.remember("b", 1u8, at(10, 6, 0), at(10, 5, 0));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_full_map_drops_expired_values_first() {
        let r = Remembered::default();
        let now = at(10, 0, 30);
        // Half expire exactly at `now`, half later.
        for i in 0..REMEMBERED {
            let until = if i % 2 == 0 { now } else { at(10, 1, 0) };
            r.remember(&key(i), 1u8, until, at(10, 0, 0));
        }
        r.remember("alice", 1u8, at(10, 1, 0), now);
        assert_eq!(r.len(), REMEMBERED / 2 + 1);
        assert!(r.get(&key(1), now).is_some(), "a live value stays");
        assert!(r.get("alice", now).is_some());
    }

    #[test]
    fn a_map_full_of_live_values_starts_over() {
        let r = Remembered::default();
        let now = at(10, 0, 0);
        for i in 0..REMEMBERED {
            r.remember(&key(i), 1u8, at(10, 1, 0), now);
        }
        assert_eq!(r.len(), REMEMBERED);
        r.remember("alice", 1u8, at(10, 1, 0), now);
        assert_eq!(r.len(), 1);
        assert!(r.get("alice", now).is_some());
        assert_eq!(r.get(&key(0), now), None);
    }
}

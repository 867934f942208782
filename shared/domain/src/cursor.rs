//! Opaque pagination cursors: signed with HMAC-SHA256 and bound to the user,
//! the filter, the search text and an expiry, so they cannot be forged,
//! replayed by another user or reused with a different query.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::DomainError;
use crate::ports::TaskFilter;
use crate::search::SearchText;
use crate::task::TaskId;
use crate::user::UserId;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const ID_LEN: usize = 26;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = 1 + ID_LEN + 8 + TAG_LEN;

/// Encodes and verifies cursors with one secret key.
#[derive(Clone)]
pub struct CursorCodec {
    mac: HmacSha256,
    lifetime: chrono::Duration,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CursorCodec").finish_non_exhaustive()
    }
}

impl CursorCodec {
    /// Shortest accepted key.
    pub const MIN_KEY_LEN: usize = 32;

    /// A codec whose cursors live for `lifetime`. Returns `None` for a key shorter
    /// than [`Self::MIN_KEY_LEN`] bytes.
    pub fn new(key: &[u8], lifetime: chrono::Duration) -> Option<Self> {
        if key.len() < Self::MIN_KEY_LEN {
            return None;
        }
        let mac = HmacSha256::new_from_slice(key).ok()?;
        Some(Self { mac, lifetime })
    }

    /// A cursor that resumes after `after` for this user, filter and search.
    pub fn encode(
        &self,
        user: &UserId,
        filter: &TaskFilter,
        search: Option<&SearchText>,
        after: &TaskId,
        now: DateTime<Utc>,
    ) -> String {
        let expires = (now + self.lifetime).timestamp();
        let mut token = Vec::with_capacity(TOKEN_LEN);
        token.push(VERSION);
        token.extend_from_slice(after.as_str().as_bytes());
        token.extend_from_slice(&expires.to_be_bytes());
        let tag = self.tag(user, filter, search, &token);
        token.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Verifies a cursor and returns the id to resume after.
    pub fn decode(
        &self,
        user: &UserId,
        filter: &TaskFilter,
        search: Option<&SearchText>,
        cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<TaskId, DomainError> {
        let token = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| DomainError::InvalidCursor)?;
        if token.len() != TOKEN_LEN || token[0] != VERSION {
            return Err(DomainError::InvalidCursor);
        }
        let (body, tag) = token.split_at(TOKEN_LEN - TAG_LEN);
        let mut mac = self.mac(user, filter, search);
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| DomainError::InvalidCursor)?;
        let id =
            std::str::from_utf8(&body[1..1 + ID_LEN]).map_err(|_| DomainError::InvalidCursor)?;
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&body[1 + ID_LEN..]);
        if i64::from_be_bytes(expires) < now.timestamp() {
            return Err(DomainError::InvalidCursor);
        }
        TaskId::parse(id).ok_or(DomainError::InvalidCursor)
    }

    fn mac(&self, user: &UserId, filter: &TaskFilter, search: Option<&SearchText>) -> HmacSha256 {
        // Length-prefixed fields so no two (user, filter, search) triples share an encoding.
        let mut scope = vec![
            serde_json::json!("tasks.list"),
            serde_json::json!(user.as_str()),
            serde_json::json!(filter.completed),
            serde_json::json!(filter.tag),
            serde_json::json!(filter.due_before.map(|d| d.to_string())),
        ];
        // The folded text: queries that differ only in case or surrounding
        // spaces select the same tasks and share cursors. Appended only when
        // set, so a listing without `q` signs exactly what it signed before.
        if let Some(search) = search {
            scope.push(serde_json::json!(search.folded()));
        }
        let scope = serde_json::Value::Array(scope).to_string();
        let mut mac = self.mac.clone();
        mac.update(&(scope.len() as u64).to_be_bytes());
        mac.update(scope.as_bytes());
        mac
    }

    fn tag(
        &self,
        user: &UserId,
        filter: &TaskFilter,
        search: Option<&SearchText>,
        body: &[u8],
    ) -> Vec<u8> {
        let mut mac = self.mac(user, filter, search);
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> CursorCodec {
        CursorCodec::new(&[7u8; 32], chrono::Duration::hours(1)).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let c = codec();
        let alice = UserId::new("alice").unwrap();
        let bob = UserId::new("bob").unwrap();
        let open = TaskFilter {
            completed: Some(false),
            ..Default::default()
        };
        let id = TaskId::generate();
        let now = Utc::now();
        let token = c.encode(&alice, &open, None, &id, now);
        assert_eq!(c.decode(&alice, &open, None, &token, now).unwrap(), id);
        // Another user, another filter, later than the expiry: all rejected.
        assert!(c.decode(&bob, &open, None, &token, now).is_err());
        assert!(
            c.decode(&alice, &TaskFilter::default(), None, &token, now)
                .is_err()
        );
        assert!(
            c.decode(
                &alice,
                &open,
                None,
                &token,
                now + chrono::Duration::hours(2)
            )
            .is_err()
        );
    }

    #[test]
    fn tampering_is_detected() {
        let c = codec();
        let alice = UserId::new("alice").unwrap();
        let f = TaskFilter::default();
        let token = c.encode(&alice, &f, None, &TaskId::generate(), Utc::now());
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(&raw);
            assert!(
                c.decode(&alice, &f, None, &forged, Utc::now()).is_err(),
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        for junk in ["", "abc", "!!!", &"A".repeat(68)] {
            assert!(c.decode(&alice, &f, None, junk, Utc::now()).is_err());
        }
        let other = CursorCodec::new(&[8u8; 32], chrono::Duration::hours(1)).unwrap();
        assert!(other.decode(&alice, &f, None, &token, Utc::now()).is_err());
    }

    #[test]
    fn cursors_are_bound_to_the_search_text() {
        let c = codec();
        let alice = UserId::new("alice").unwrap();
        let f = TaskFilter::default();
        let q = |raw: &str| SearchText::parse(raw).unwrap();
        let milk = q("milk");
        let id = TaskId::generate();
        let now = Utc::now();
        let token = c.encode(&alice, &f, Some(&milk), &id, now);
        assert_eq!(c.decode(&alice, &f, Some(&milk), &token, now).unwrap(), id);
        // The same query in another case or with spaces selects the same tasks.
        for same in [" MILK ", "Milk"] {
            assert_eq!(
                c.decode(&alice, &f, Some(&q(same)), &token, now).unwrap(),
                id
            );
        }
        // Another query, no query, or a cursor of the unsearched list: rejected.
        for other in ["mil", "milk tea", "bread", "milk)", ":q"] {
            assert!(c.decode(&alice, &f, Some(&q(other)), &token, now).is_err());
        }
        assert!(c.decode(&alice, &f, None, &token, now).is_err());
        let plain = c.encode(&alice, &f, None, &id, now);
        assert!(c.decode(&alice, &f, Some(&milk), &plain, now).is_err());
        // A search for the tag's text is not the tag filter.
        let tagged = TaskFilter {
            tag: Some("milk".into()),
            ..Default::default()
        };
        assert!(c.decode(&alice, &tagged, None, &token, now).is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(CursorCodec::new(b"short", chrono::Duration::hours(1)).is_none());
    }

    #[test]
    fn a_cursor_lives_until_the_end_of_its_lifetime_second() {
        let c = codec();
        let alice = UserId::new("alice").unwrap();
        let filter = TaskFilter::default();
        let id = TaskId::generate();
        let now: DateTime<Utc> = "2026-12-07T10:00:00Z".parse().unwrap();
        let token = c.encode(&alice, &filter, None, &id, now);
        let expiry = now + chrono::Duration::hours(1);
        assert_eq!(c.decode(&alice, &filter, None, &token, expiry).unwrap(), id);
        assert!(matches!(
            c.decode(
                &alice,
                &filter,
                None,
                &token,
                expiry + chrono::Duration::seconds(1)
            ),
            Err(DomainError::InvalidCursor)
        ));
    }

    #[test]
    fn debug_output_shows_no_key() {
        assert_eq!(format!("{:?}", codec()), "CursorCodec { .. }");
    }
}

//! ChatKit sessions: the record, the signed client secret the ChatKit endpoint
//! accepts, and the storage and rate-limit ports.

use std::future::Future;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::user::UserId;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of self-hosted client secrets.
pub const TOKEN_PREFIX: &str = "cks_";

/// Who serves the ChatKit conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Our own ChatKit endpoint (the default).
    SelfHosted,
    /// An OpenAI-hosted Agent Builder workflow (legacy).
    Hosted,
}

/// Lifecycle of a session (expiry is derived from `expires_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Usable until it expires.
    Active,
    /// Cancelled (refreshed or explicitly): its secret is refused.
    Cancelled,
}

/// A session record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatSession {
    /// `cksess_…`
    pub id: String,
    /// Self-hosted or hosted.
    pub mode: SessionMode,
    /// Active or cancelled.
    pub status: SessionStatus,
    /// Creation time.
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    /// Expiry time.
    #[serde(with = "crate::timestamp")]
    pub expires_at: DateTime<Utc>,
    /// Request budget per minute, enforced by the ChatKit endpoint.
    pub max_requests_per_minute: u32,
    /// Hosted mode: the workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Hosted mode: SHA-256 of the upstream client secret (for refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
}

impl ChatSession {
    /// Whether the session can still be used at `now`.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.status == SessionStatus::Active && now < self.expires_at
    }
}

/// Prefix of self-hosted session ids: `cksess_<lowercase ULID>`.
pub const SESSION_ID_PREFIX: &str = "cksess_";

/// A new self-hosted session id.
pub fn new_session_id() -> String {
    session_id_at(Utc::now())
}

/// A self-hosted session id created at `at`: `cksess_` and a lowercase ULID
/// whose time part is `at`, so ids sort by creation time (to the millisecond).
pub fn session_id_at(at: DateTime<Utc>) -> String {
    let ulid = ulid::Ulid::from_datetime(std::time::SystemTime::from(at));
    format!("{SESSION_ID_PREFIX}{}", ulid.to_string().to_lowercase())
}

/// The smallest self-hosted session id that can have been created at or
/// after `at` (its ULID's randomness all zeros): every such id sorts at or
/// after it, every id created earlier before it.
pub fn first_session_id_since(at: DateTime<Utc>) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(millis, 0);
    format!("{SESSION_ID_PREFIX}{}", ulid.to_string().to_lowercase())
}

/// A bound above every self-hosted session id (`~` sorts after the ULID
/// alphabet).
pub fn session_id_ceiling() -> String {
    format!("{SESSION_ID_PREFIX}~")
}

/// The cap on a user's active self-hosted sessions
/// (`CHATKIT_MAX_ACTIVE_SESSIONS`). A new session beyond it cancels the
/// oldest active ones, so a user who opens (or reloads) the page is never
/// locked out; only the oldest tabs lose their chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveSessionCap {
    /// Most active sessions per user (at least 1).
    pub max_active: u32,
    /// Session lifetime: a session created longer ago has expired.
    pub ttl: chrono::Duration,
}

impl ActiveSessionCap {
    /// The earliest creation time of a session that can still be active at `now`.
    pub fn created_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.ttl
    }

    /// Of `active` (a user's active sessions, oldest first), the ones to
    /// cancel so that one more session keeps the user within the cap: the
    /// oldest `active - max + 1`, none while `active < max`.
    pub fn to_cancel<'a>(&self, active: &'a [ChatSession]) -> &'a [ChatSession] {
        let max = usize::try_from(self.max_active.max(1)).unwrap_or(usize::MAX);
        let excess = (active.len() + 1).saturating_sub(max);
        &active[..excess.min(active.len())]
    }
}

/// SHA-256 (hex) of a client secret, so secrets are never stored.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// What a self-hosted client secret asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Format version.
    pub v: u8,
    /// The session.
    pub sid: String,
    /// The user it was issued to.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why a client secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not one of ours, or altered.
    #[error("the client secret is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("the client secret has expired")]
    Expired,
}

/// Signs and verifies self-hosted client secrets (HMAC-SHA256).
#[derive(Clone)]
pub struct SessionTokens {
    mac: HmacSha256,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTokens([redacted])")
    }
}

impl SessionTokens {
    /// A codec for `key` (any length; from the secret).
    pub fn new(key: &[u8]) -> Option<Self> {
        HmacSha256::new_from_slice(key).ok().map(|mac| Self { mac })
    }

    /// The client secret for a session of `user`.
    pub fn sign(&self, session: &ChatSession, user: &UserId) -> String {
        let claims = SessionClaims {
            v: 1,
            sid: session.id.clone(),
            sub: user.as_str().to_owned(),
            exp: session.expires_at.timestamp(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{TOKEN_PREFIX}{payload}.{tag}")
    }

    /// Checks the signature and (unless `allow_expired`) the expiry.
    pub fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
        allow_expired: bool,
    ) -> Result<SessionClaims, TokenError> {
        let body = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::Invalid)?;
        let (payload, tag) = body.split_once('.').ok_or(TokenError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| TokenError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid)?;
        let claims: SessionClaims =
            serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if claims.v != 1 {
            return Err(TokenError::Invalid);
        }
        if !allow_expired && claims.exp <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Session storage.
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    fn put_session(
        &self,
        user: &UserId,
        session: &ChatSession,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads one session of `user`.
    fn get_session(
        &self,
        user: &UserId,
        id: &str,
    ) -> impl Future<Output = Result<Option<ChatSession>, StoreError>> + Send;

    /// Marks a session of `user` cancelled; `None` when there is no such session.
    fn cancel_session(
        &self,
        user: &UserId,
        id: &str,
    ) -> impl Future<Output = Result<Option<ChatSession>, StoreError>> + Send;

    /// The session of `user` whose client secret hashes to `hash`.
    fn find_session_by_secret(
        &self,
        user: &UserId,
        hash: &str,
    ) -> impl Future<Output = Result<Option<ChatSession>, StoreError>> + Send;

    /// The self-hosted sessions of `user` still usable at `now` (mode
    /// self-hosted, status active, `expires_at` after `now`) whose id was
    /// minted at or after
    /// `created_since`, oldest first. Creation is read from the id (a
    /// `cksess_` ULID, [`session_id_at`]), so only the ids in
    /// `[first_session_id_since(created_since), session_id_ceiling()]` are
    /// read, never all of a user's records (kept a day past expiry).
    /// `created_since` is `now` minus the session lifetime: an older session
    /// cannot be active any more.
    fn active_sessions(
        &self,
        user: &UserId,
        created_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ChatSession>, StoreError>> + Send;
}

/// Outcome of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the limit (and counted).
    Allowed,
    /// Over the limit; retry after this many seconds.
    Limited { retry_after: u64 },
}

/// The fixed window `now` falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Its start, in epoch seconds.
    pub start: i64,
    /// Its length in seconds (at least 1).
    pub secs: i64,
}

impl RateWindow {
    /// The window of `secs` seconds holding `now`.
    pub fn at(now: DateTime<Utc>, secs: u64) -> Self {
        let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
        Self {
            start: now.timestamp() - now.timestamp().rem_euclid(secs),
            secs,
        }
    }

    /// Seconds from `now` until the next window (at least 1).
    pub fn retry_after(&self, now: DateTime<Utc>) -> u64 {
        u64::try_from(self.start + self.secs - now.timestamp()).map_or(1, |s| s.max(1))
    }
}

/// Fixed-window counters.
pub trait RateLimiter: Send + Sync {
    /// Counts one hit on `bucket` of `user` in the current window of
    /// `window_secs`, refusing it past `limit`.
    fn hit(
        &self,
        user: &UserId,
        bucket: &str,
        limit: u32,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RateDecision, StoreError>> + Send;

    /// Gives back one hit counted on `bucket` in `window` (a turn admitted,
    /// then refused for another reason); never below zero.
    fn give_back(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts one hit on `bucket` in the window of `window_secs` holding
    /// `now`, whatever the count, and returns the count with it (the caller
    /// applies a limit it learns meanwhile, e.g. a session's own).
    fn count(
        &self,
        user: &UserId,
        bucket: &str,
        window_secs: u64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Hits counted on `bucket` in `window`.
    fn hits(
        &self,
        user: &UserId,
        bucket: &str,
        window: RateWindow,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_in: i64) -> ChatSession {
        let now = Utc::now();
        ChatSession {
            id: new_session_id(),
            mode: SessionMode::SelfHosted,
            status: SessionStatus::Active,
            created_at: now,
            expires_at: now + chrono::Duration::seconds(expires_in),
            max_requests_per_minute: 30,
            workflow_id: None,
            secret_hash: None,
        }
    }

    #[test]
    fn tokens_bind_session_user_and_expiry() {
        let tokens = SessionTokens::new(b"key").unwrap();
        let alice = UserId::new("alice").unwrap();
        let s = session(600);
        let token = tokens.sign(&s, &alice);
        let claims = tokens.verify(&token, Utc::now(), false).unwrap();
        assert_eq!(
            (claims.sid.as_str(), claims.sub.as_str()),
            (s.id.as_str(), "alice")
        );
        let other = SessionTokens::new(b"other").unwrap();
        assert_eq!(
            other.verify(&token, Utc::now(), false),
            Err(TokenError::Invalid)
        );
        let later = Utc::now() + chrono::Duration::seconds(601);
        assert_eq!(
            tokens.verify(&token, later, false),
            Err(TokenError::Expired)
        );
        assert!(tokens.verify(&token, later, true).is_ok());
        // Any altered character breaks it.
        let mut chars: Vec<char> = token.chars().collect();
        let i = 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let forged: String = chars.into_iter().collect();
        assert_eq!(
            tokens.verify(&forged, Utc::now(), false),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            tokens.verify("cks_x", Utc::now(), false),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn session_ids_sort_by_creation_within_their_range() {
        let t: DateTime<Utc> = "2026-12-02T10:00:00.250Z".parse().unwrap();
        let ms = chrono::Duration::milliseconds(1);
        let floor = first_session_id_since(t);
        assert!(
            floor.starts_with(SESSION_ID_PREFIX) && floor.len() == SESSION_ID_PREFIX.len() + 26
        );
        assert!(floor.ends_with(&"0".repeat(16)), "no randomness: {floor}");
        for _ in 0..100 {
            let (before, at, after) = (
                session_id_at(t - ms),
                session_id_at(t),
                session_id_at(t + ms),
            );
            assert!(before < floor, "{before} < {floor}");
            assert!(floor <= at && at < after, "{floor} <= {at} < {after}");
            assert!(after < session_id_ceiling());
            assert_eq!(at, at.to_lowercase());
        }
        assert!(
            new_session_id() > first_session_id_since(Utc::now() - chrono::Duration::seconds(1))
        );
        // The ceiling bounds self-hosted ids only: anything without the
        // prefix (a hosted session's id, say) sorts outside the range.
        let ceiling = session_id_ceiling();
        assert!(ceiling.starts_with(SESSION_ID_PREFIX));
        assert!(ceiling.as_str() < "ckset" && ceiling.as_str() < "wf_session");
    }

    #[test]
    fn the_cap_cancels_the_oldest_to_make_room_for_one() {
        let active: Vec<ChatSession> = (0..6).map(|_| session(600)).collect();
        let cap = |max_active| ActiveSessionCap {
            max_active,
            ttl: chrono::Duration::seconds(600),
        };
        let ids = |s: &[ChatSession]| s.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        // Under the cap: nothing.
        assert!(cap(5).to_cancel(&active[..4]).is_empty());
        assert!(cap(5).to_cancel(&[]).is_empty());
        // At the cap: the oldest one.
        assert_eq!(ids(cap(5).to_cancel(&active[..5])), ids(&active[..1]));
        // Over it (concurrent mints): back to max - 1, oldest first.
        assert_eq!(ids(cap(2).to_cancel(&active)), ids(&active[..5]));
        // One session at a time: every other one goes.
        assert_eq!(ids(cap(1).to_cancel(&active)), ids(&active));
        // 0 is read as 1 (the settings refuse it).
        assert_eq!(cap(0).to_cancel(&active).len(), 6);
        let now = Utc::now();
        assert_eq!(
            cap(5).created_since(now),
            now - chrono::Duration::seconds(600)
        );
    }

    #[test]
    fn a_session_is_usable_while_active_and_strictly_before_it_expires() {
        let s = session(600);
        let second = chrono::Duration::seconds(1);
        assert!(s.is_usable(s.expires_at - second));
        assert!(!s.is_usable(s.expires_at), "expired at expires_at");
        assert!(!s.is_usable(s.expires_at + second));
        let cancelled = ChatSession {
            status: SessionStatus::Cancelled,
            ..s.clone()
        };
        assert!(!cancelled.is_usable(s.expires_at - second));
    }

    #[test]
    fn a_secret_hash_is_the_hex_sha256_of_the_secret() {
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(secret_hash("abd"), secret_hash("abc"));
    }

    #[test]
    fn a_new_session_id_is_a_prefixed_ulid_of_now() {
        let before = first_session_id_since(Utc::now() - chrono::Duration::milliseconds(1));
        let id = new_session_id();
        let ulid = id.strip_prefix(SESSION_ID_PREFIX).unwrap();
        assert!(ulid::Ulid::from_string(ulid).is_ok(), "{id}");
        assert!(id > before, "{id} sorts after the ids of a moment ago");
        assert_ne!(new_session_id(), id);
    }

    #[test]
    fn the_signing_key_never_shows_in_debug_output() {
        let tokens = SessionTokens::new(b"very-secret-signing-key").unwrap();
        let shown = format!("{tokens:?}");
        assert_eq!(shown, "SessionTokens([redacted])");
    }
}

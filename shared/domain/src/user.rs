//! The authenticated user's identity.

use crate::error::DomainError;

/// A user id: the verified JWT `sub`. Only the authentication layer creates one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Longest accepted `sub`; keeps DynamoDB keys far below their 1,024-byte limit.
    pub const MAX_LEN: usize = 256;

    /// Wraps a verified subject, rejecting empty, oversized or control-character values.
    pub fn new(sub: impl Into<String>) -> Result<Self, DomainError> {
        let sub = sub.into();
        if sub.is_empty() || sub.len() > Self::MAX_LEN || sub.chars().any(char::is_control) {
            return Err(DomainError::validation("sub", "is not a usable subject"));
        }
        Ok(Self(sub))
    }

    /// The subject as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

//! JWTs for local development and tests.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// The HS256 settings the local stack gives its functions.
#[derive(Debug, Clone)]
pub struct DevAuth {
    /// Shared secret (`AUTH_JWT_SECRET`).
    pub secret: String,
    /// `AUTH_ISSUER`
    pub issuer: String,
    /// `AUTH_AUDIENCE`
    pub audience: String,
}

impl Default for DevAuth {
    fn default() -> Self {
        Self {
            secret: "local-dev-only-secret-0123456789abcdef".into(),
            issuer: "https://auth.taskpilot.local".into(),
            audience: "taskpilot-api".into(),
        }
    }
}

impl DevAuth {
    /// A token for `sub`, valid for 12 hours.
    pub fn token(&self, sub: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        self.sign(json!({
            "sub": sub,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + 12 * 3600,
        }))
    }

    /// Signs arbitrary claims with the dev secret (HS256).
    pub fn sign(&self, claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .unwrap_or_default()
    }

    /// The variables that make a function verify these tokens.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AUTH_JWT_SECRET".into(), self.secret.clone()),
            ("AUTH_ISSUER".into(), self.issuer.clone()),
            ("AUTH_AUDIENCE".into(), self.audience.clone()),
        ]
    }
}

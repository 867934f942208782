//! A JWKS cache: keys by `kid`, refetched at most once a minute when an
//! unknown `kid` shows up, so random `kid`s cannot hammer the issuer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;

use crate::auth::JWKS_TIMEOUT;

/// Shortest time between two fetches.
const MIN_REFETCH: Duration = Duration::from_secs(60);

pub(crate) struct JwksCache {
    url: String,
    http: reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
}

impl JwksCache {
    pub(crate) fn new(url: String, http: reqwest::Client) -> Self {
        Self {
            url,
            http,
            state: Mutex::new(State::default()),
        }
    }

    /// The key for `kid` usable with `alg`, fetching the JWKS if the kid is unknown
    /// and the last fetch is over a minute old. `Ok(None)`: no such key.
    pub(crate) async fn key(
        &self,
        kid: &str,
        alg: Algorithm,
    ) -> Result<Option<DecodingKey>, reqwest::Error> {
        let mut state = self.state.lock().await;
        if let Some(key) = lookup(&state, kid, alg) {
            return Ok(Some(key));
        }
        if state.fetched_at.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return Ok(None);
        }
        state.fetched_at = Some(Instant::now());
        let set: JwkSet = self
            .http
            .get(&self.url)
            .timeout(JWKS_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        state.keys = set
            .keys
            .iter()
            .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let alg = algorithm_of(&jwk.algorithm)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, (alg, key)))
            })
            .collect();
        tracing::info!(keys = state.keys.len(), "JWKS fetched");
        Ok(lookup(&state, kid, alg))
    }
}

fn lookup(state: &State, kid: &str, alg: Algorithm) -> Option<DecodingKey> {
    state
        .keys
        .get(kid)
        .filter(|(key_alg, _)| *key_alg == alg)
        .map(|(_, key)| key.clone())
}

/// The one algorithm a key can verify, from its type and curve.
fn algorithm_of(params: &AlgorithmParameters) -> Option<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

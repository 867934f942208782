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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use jsonwebtoken::jwk::Jwk;
    use serde_json::json;

    use super::*;

    /// An Ed25519 public key.
    const ED25519_X: &str = "O1bETrbd4314rxay9Nf3ugiFbooQRL2apzvjihHaH2E";

    fn algorithm(jwk: serde_json::Value) -> Option<Algorithm> {
        let jwk: Jwk = serde_json::from_value(jwk).unwrap();
        algorithm_of(&jwk.algorithm)
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    /// A cache whose URL refuses connections, holding `kid` for EdDSA.
    fn cache_holding(kid: &str, fetched_at: Instant) -> JwksCache {
        let cache = JwksCache::new("http://127.0.0.1:1/jwks".into(), client());
        let state = State {
            keys: HashMap::from([(
                kid.to_owned(),
                (Algorithm::EdDSA, DecodingKey::from_secret(b"k")),
            )]),
            fetched_at: Some(fetched_at),
        };
        JwksCache {
            state: Mutex::new(state),
            ..cache
        }
    }

    /// Serves `body` as JSON to one request on a loopback port.
    fn serve_once(body: String) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(response.as_bytes()).unwrap();
        });
        format!("http://{addr}/jwks")
    }

    #[test]
    fn rsa_keys_verify_rs256() {
        let jwk = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
        assert_eq!(algorithm(jwk), Some(Algorithm::RS256));
    }

    #[test]
    fn p256_keys_verify_es256() {
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"});
        assert_eq!(algorithm(jwk), Some(Algorithm::ES256));
    }

    #[test]
    fn other_curves_are_not_used() {
        let jwk = json!({"kty": "EC", "crv": "P-384", "x": "AQAB", "y": "AQAB"});
        assert_eq!(algorithm(jwk), None);
    }

    #[test]
    fn ed25519_keys_verify_eddsa() {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": ED25519_X});
        assert_eq!(algorithm(jwk), Some(Algorithm::EdDSA));
    }

    #[test]
    fn other_octet_key_pairs_are_not_used() {
        let jwk = json!({"kty": "OKP", "crv": "P-256", "x": ED25519_X});
        assert_eq!(algorithm(jwk), None);
    }

    #[test]
    fn symmetric_keys_are_not_used() {
        let jwk = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(algorithm(jwk), None);
    }

    #[test]
    fn a_key_is_found_only_for_its_own_algorithm() {
        let state = State {
            keys: HashMap::from([(
                "k1".to_owned(),
                (Algorithm::RS256, DecodingKey::from_secret(b"k")),
            )]),
            fetched_at: None,
        };
        assert!(lookup(&state, "k1", Algorithm::RS256).is_some());
        assert!(lookup(&state, "k1", Algorithm::ES256).is_none());
        assert!(lookup(&state, "k2", Algorithm::RS256).is_none());
    }

    #[tokio::test]
    async fn a_cached_key_is_served_without_a_fetch() {
        let cache = cache_holding("k1", Instant::now());
        assert!(cache.key("k1", Algorithm::EdDSA).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_unknown_kid_right_after_a_fetch_does_not_refetch() {
        let cache = cache_holding("k1", Instant::now());
        // A fetch would fail: nothing listens at the cache's URL.
        assert!(cache.key("k2", Algorithm::EdDSA).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_unknown_kid_a_minute_after_a_fetch_refetches() {
        let long_ago = Instant::now()
            .checked_sub(MIN_REFETCH * 2)
            .expect("the clock is over two minutes old");
        let cache = cache_holding("k1", long_ago);
        assert!(cache.key("k2", Algorithm::EdDSA).await.is_err());
    }

    #[tokio::test]
    async fn a_fetch_keeps_the_signing_keys() {
        let key = |kid: &str, use_: Option<&str>| {
            let mut jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": kid});
            if let Some(u) = use_ {
                jwk["use"] = json!(u);
            }
            jwk
        };
        let set =
            json!({"keys": [key("sig", Some("sig")), key("any", None), key("enc", Some("enc"))]});
        let cache = JwksCache::new(serve_once(set.to_string()), client());
        assert!(cache.key("sig", Algorithm::EdDSA).await.unwrap().is_some());
        assert!(cache.key("any", Algorithm::EdDSA).await.unwrap().is_some());
        assert!(cache.key("enc", Algorithm::EdDSA).await.unwrap().is_none());
    }
}

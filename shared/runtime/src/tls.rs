//! The outbound HTTP clients and what they trust: Mozilla's root certificates
//! compiled in (`webpki-root-certs`), so start-up reads no certificate file.
//! Loading the platform's roots (`/etc/ssl/certs`: one bundle and ~290 hashed
//! files, each certificate parsed) cost about 15 ms of every cold start, twice
//! (reqwest and the AWS SDK each loaded them). A private CA (a TLS-inspecting
//! proxy, an emulator with TLS) is added with `SSL_CERT_FILE`, a PEM bundle read
//! once at start-up, as OpenSSL and rustls-native-certs read it.

use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use taskpilot_config::{ConfigError, Vars};

/// Mozilla's roots as one PEM bundle (the AWS SDK's trust store takes PEM),
/// written by `build.rs` from `webpki-root-certs`.
pub const MOZILLA_ROOTS_PEM: &str = include_str!(concat!(env!("OUT_DIR"), "/mozilla-roots.pem"));

/// The variable naming extra trusted roots (a PEM bundle).
pub const EXTRA_ROOTS_VAR: &str = "SSL_CERT_FILE";

/// Extra trusted roots in PEM, besides Mozilla's.
#[derive(Debug, Clone, Default)]
pub struct ExtraRoots(Option<Vec<u8>>);

impl ExtraRoots {
    /// The PEM bundle `SSL_CERT_FILE` names, if set; an unreadable file or one
    /// without a certificate is a configuration error (never silently ignored).
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        match vars.optional(EXTRA_ROOTS_VAR) {
            Some(path) => Self::from_file(std::path::Path::new(&path)),
            None => Ok(Self(None)),
        }
    }

    /// The PEM bundle at `path` (see [`ExtraRoots::from_vars`]).
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: EXTRA_ROOTS_VAR,
            reason,
        };
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        Self::from_pem(pem).map_err(invalid)
    }

    /// `pem`, which must hold at least one certificate, each usable as a
    /// trust anchor (checked here: the SDK would only find out, and panic,
    /// when it builds its first connection).
    pub fn from_pem(pem: Vec<u8>) -> Result<Self, String> {
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM bundle: {e}"))?;
        if certs.is_empty() {
            return Err("no PEM certificate in the file".into());
        }
        let mut anchors = rustls::RootCertStore::empty();
        for cert in certs {
            anchors
                .add(cert)
                .map_err(|e| format!("a certificate cannot be a trust anchor: {e}"))?;
        }
        Ok(Self(Some(pem)))
    }

    fn pem(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

/// The process's one outbound HTTP client for JWKS and OpenAI: rustls on
/// ring, trusting Mozilla's roots and `extra`.
pub fn http_client(extra: &ExtraRoots) -> Result<reqwest::Client, ConfigError> {
    let invalid = |e: reqwest::Error| ConfigError::Invalid {
        name: "HTTP client",
        reason: e.to_string(),
    };
    // reqwest is built without a crypto provider; ring is the process default.
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The PEM bundle, not webpki-root-certs' DER list: one copy of the roots
    // in the binary (each copy is ~140 KB of every zip).
    let mut roots =
        reqwest::Certificate::from_pem_bundle(MOZILLA_ROOTS_PEM.as_bytes()).map_err(invalid)?;
    if let Some(pem) = extra.pem() {
        roots.extend(reqwest::Certificate::from_pem_bundle(pem).map_err(invalid)?);
    }
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(invalid)
}

/// The AWS SDK's HTTP client: hyper with rustls on ring (no aws-lc), trusting
/// Mozilla's roots and `extra`, TCP_NODELAY. Its connector (and trust store)
/// is built once, for the first request; see [`BuiltOnFirstUse`].
pub fn aws_http_client(extra: &ExtraRoots) -> Result<SharedHttpClient, ConfigError> {
    let mut roots = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(MOZILLA_ROOTS_PEM);
    if let Some(pem) = extra.pem() {
        roots = roots.with_pem_certificate(pem.to_vec());
    }
    let context = TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "AWS HTTP client",
            reason: e.to_string(),
        })?;
    let client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https();
    Ok(SharedHttpClient::new(BuiltOnFirstUse(client)))
}

/// The SDK's hyper client, minus its start-up check: `validate_base_client_config`
/// builds a throwaway connector at every `Client::new` (so that native roots
/// load early), which with a PEM trust store parses the whole bundle again for
/// each client (about 0.6 ms each). The connector is built when a request
/// first needs it, then cached by the client as before.
#[derive(Debug)]
struct BuiltOnFirstUse(SharedHttpClient);

impl HttpClient for BuiltOnFirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TEST_CA: &str = include_str!("../testdata/ca.pem");
    const SERVER_CERT: &str = include_str!("../testdata/server.pem");
    const SERVER_KEY: &str = include_str!("../testdata/server.key");

    /// A TLS server on 127.0.0.1 with a certificate of the test CA, answering
    /// every request `200 {}`; returns its `https://localhost:<port>` URL.
    async fn tls_server() -> String {
        let certs = CertificateDer::pem_slice_iter(SERVER_CERT.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                              content-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        format!("https://localhost:{port}")
    }

    fn test_ca() -> ExtraRoots {
        ExtraRoots::from_pem(TEST_CA.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_compiled_bundle_holds_exactly_mozillas_roots() {
        let parsed = CertificateDer::pem_slice_iter(MOZILLA_ROOTS_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert!(parsed.len() > 100, "{} roots", parsed.len());
        assert_eq!(parsed, webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
    }

    #[test]
    fn extra_roots_must_be_certificates() {
        assert!(ExtraRoots::from_pem(b"not a certificate".to_vec()).is_err());
        assert!(ExtraRoots::from_pem(Vec::new()).is_err());
        let mangled = TEST_CA.replace("MII", "MIX");
        assert!(ExtraRoots::from_pem(mangled.into_bytes()).is_err());
        assert!(ExtraRoots::from_pem(TEST_CA.as_bytes().to_vec()).is_ok());
    }

    #[test]
    fn an_unreadable_or_wrong_file_is_a_configuration_error_naming_the_variable() {
        let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        assert!(ExtraRoots::from_file(&testdata.join("ca.pem")).is_ok());
        for path in [testdata.join("missing.pem"), testdata.join("server.key")] {
            match ExtraRoots::from_file(&path) {
                Err(ConfigError::Invalid { name, reason }) => {
                    assert_eq!(name, EXTRA_ROOTS_VAR);
                    assert!(!reason.contains("PRIVATE KEY"), "{reason}");
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
    }

    #[tokio::test]
    async fn the_http_client_trusts_a_private_ca_only_when_given() {
        let url = tls_server().await;
        let plain = http_client(&ExtraRoots::default()).unwrap();
        let refused = plain.get(&url).send().await.unwrap_err();
        assert!(refused.is_connect(), "{refused:?}");
        let with_ca = http_client(&test_ca()).unwrap();
        let answer = with_ca.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
    }

    #[tokio::test]
    async fn the_aws_client_trusts_a_private_ca_only_when_given() {
        let url = tls_server().await;
        let list_tables = |extra: ExtraRoots| {
            let url = url.clone();
            async move {
                let sdk = aws_types::SdkConfig::builder()
                    .behavior_version(
                        aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
                    )
                    .region(aws_types::region::Region::new("us-east-1"))
                    .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
                        aws_credential_types::Credentials::new("test", "test", None, None, "test"),
                    ))
                    .http_client(aws_http_client(&extra).unwrap())
                    .endpoint_url(url)
                    .retry_config(aws_types::sdk_config::RetryConfig::disabled())
                    .build();
                taskpilot_store::dynamodb_client(&sdk)
                    .list_tables()
                    .send()
                    .await
            }
        };
        let refused = list_tables(ExtraRoots::default()).await.unwrap_err();
        let chain = format!("{:?}", std::error::Error::source(&refused));
        assert!(chain.contains("UnknownIssuer"), "{chain}");
        list_tables(test_ca()).await.unwrap();
    }
}

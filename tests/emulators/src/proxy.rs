//! A forwarding proxy in front of an emulator that counts the operations it
//! forwards (by `X-Amz-Target`), so tests can assert how many requests a
//! function really made, and that can make the emulator fail, hang or answer
//! garbage on demand ([`ProxyFault`]). On request it also keeps a timeline:
//! the moment each request arrived, to place a function's requests between
//! other events ([`CountingProxy::start_timeline`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

use crate::Result;
use crate::http_server::full;

/// What the proxy does instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFault {
    /// Forward (the default).
    None,
    /// Answer this status with an AWS-style JSON error.
    Status(u16),
    /// Never answer.
    Hang,
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Hold the request this long, then forward it (a frozen service that
    /// comes back and applies what it was sent).
    Delay(std::time::Duration),
}

/// `(arrival, operation)` of each request, while a timeline is recorded.
type Timeline = Arc<Mutex<Option<Vec<(Instant, String)>>>>;

/// A running proxy.
#[derive(Clone)]
pub struct CountingProxy {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    fault: Arc<Mutex<ProxyFault>>,
    timeline: Timeline,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingProxy {
    /// Starts a proxy to `upstream` (e.g. moto's endpoint).
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let fault = Arc::new(Mutex::new(ProxyFault::None));
        let timeline: Timeline = Arc::default();
        let held: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let holding = held.clone();
        let client = crate::http_client();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let tally = counts.clone();
        let mode = fault.clone();
        let log = timeline.clone();
        crate::http_server::serve(listener, move |req, _peer| {
            // The request's head has been read: it has arrived.
            let arrived = Instant::now();
            let (client, upstream, tally) = (client.clone(), upstream.clone(), tally.clone());
            let log = log.clone();
            let holding = holding.clone();
            let fault = mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
            async move {
                let (parts, body) = req.into_parts();
                let op = parts
                    .headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("unknown")
                    .to_owned();
                if let Some(events) = log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                    events.push((arrived, op.clone()));
                }
                *tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(op)
                    .or_default() += 1;
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                match fault {
                    ProxyFault::None => {}
                    ProxyFault::Status(status) => {
                        let mut out = Response::new(full(Bytes::from_static(
                            br#"{"__type":"InternalServiceError","message":"injected failure"}"#,
                        )));
                        *out.status_mut() =
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                        out.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
                        );
                        return out;
                    }
                    ProxyFault::Hang => {
                        std::future::pending::<()>().await;
                    }
                    ProxyFault::Garbage => {
                        return Response::new(full(Bytes::from_static(
                            b"<html><body>502 Bad Gateway</body></html>",
                        )));
                    }
                    ProxyFault::Delay(pause) => {
                        // Forwarded even if the caller gives up meanwhile, as a
                        // frozen service still applies what it was sent.
                        use std::sync::atomic::Ordering;
                        holding.fetch_add(1, Ordering::SeqCst);
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        tokio::spawn(async move {
                            tokio::time::sleep(pause).await;
                            let answer = forward(&client, &upstream, parts, body).await;
                            holding.fetch_sub(1, Ordering::SeqCst);
                            let _ = tx.send(answer);
                        });
                        return rx.await.unwrap_or_else(|_| {
                            let mut out = Response::new(full(Bytes::from_static(b"dropped")));
                            *out.status_mut() = StatusCode::BAD_GATEWAY;
                            out
                        });
                    }
                }
                forward(&client, &upstream, parts, body).await
            }
        });
        Ok(Self {
            endpoint,
            counts,
            fault,
            timeline,
            held,
        })
    }

    /// Starts recording when each request arrives (dropping an earlier
    /// record), to be read with [`CountingProxy::take_timeline`].
    pub fn start_timeline(&self) {
        *self.timeline.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// Stops recording and returns `(arrival, operation)` for every request
    /// that arrived since [`CountingProxy::start_timeline`], in arrival order.
    /// The arrival is the moment the proxy had read the request's head.
    pub fn take_timeline(&self) -> Vec<(Instant, String)> {
        let mut events = self
            .timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        events.sort_by_key(|(at, _)| *at);
        events
    }

    /// How many requests a [`ProxyFault::Delay`] is holding right now.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What the proxy does with the requests that arrive from now on.
    pub fn set_fault(&self, fault: ProxyFault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Every operation forwarded so far, with its count.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times `operation` (e.g. `secretsmanager.GetSecretValue`) was forwarded.
    pub fn count(&self, operation: &str) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

/// Forwards one request to `upstream` and returns its answer (502 when the
/// upstream cannot be reached).
async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<crate::http_server::Body> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut fwd = client.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            fwd = fwd.header(name, value);
        }
    }
    match fwd.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = Response::new(full(bytes));
            *out.status_mut() = status;
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" {
                    out.headers_mut().append(name, value.clone());
                }
            }
            out
        }
        Err(_) => {
            let mut out = Response::new(full(Bytes::from_static(b"upstream down")));
            *out.status_mut() = StatusCode::BAD_GATEWAY;
            out
        }
    }
}

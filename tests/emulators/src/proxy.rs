//! A forwarding proxy in front of an emulator that counts the operations it
//! forwards (by `X-Amz-Target`), so tests can assert how many requests a
//! function really made, and that can make the emulator fail, hang or answer
//! garbage on demand ([`ProxyFault`]). On request it also keeps a timeline:
//! the moment each request arrived and the moment its answer was sent back,
//! to place a function's requests between other events and to tell requests
//! made concurrently from requests made one after another
//! ([`CountingProxy::start_timeline`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// One request of a timeline: when it arrived, when its answer went back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The moment the proxy had read the request's head.
    pub arrived: Instant,
    /// The moment the proxy handed the whole answer to the connection (its
    /// last bytes buffered for writing, or the body dropped); `None` while
    /// no answer was sent (still forwarding, or [`ProxyFault::Hang`]).
    pub answered: Option<Instant>,
    /// The `X-Amz-Target` (`unknown` without one).
    pub operation: String,
}

/// The requests recorded since [`CountingProxy::start_timeline`], while a
/// timeline is recorded. `generation` tells a request that arrived before a
/// restart (whose answer must not land in the new record) from one after.
#[derive(Default)]
struct Recording {
    generation: u64,
    exchanges: Option<Vec<Exchange>>,
}

type Timeline = Arc<Mutex<Recording>>;

/// Where to note a request's answer: its place in one recording.
struct AnswerMark {
    log: Timeline,
    generation: u64,
    index: usize,
}

impl AnswerMark {
    fn note(self) {
        let at = Instant::now();
        let mut rec = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if rec.generation != self.generation {
            return;
        }
        if let Some(exchange) = rec
            .exchanges
            .as_mut()
            .and_then(|events| events.get_mut(self.index))
        {
            exchange.answered = Some(at);
        }
    }
}

/// An answer's body that notes, once, when it has been handed over whole:
/// its last frame taken, or the body dropped (hyper drops a body as soon
/// as its last bytes are buffered, and when the client goes away).
struct Noted {
    inner: crate::http_server::Body,
    mark: Option<AnswerMark>,
}

impl Noted {
    fn note(&mut self) {
        if let Some(mark) = self.mark.take() {
            mark.note();
        }
    }
}

impl hyper::body::Body for Noted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.note();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        self.note();
    }
}

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
                let mark = {
                    let mut rec = log.lock().unwrap_or_else(|p| p.into_inner());
                    let generation = rec.generation;
                    rec.exchanges.as_mut().map(|events| {
                        events.push(Exchange {
                            arrived,
                            answered: None,
                            operation: op.clone(),
                        });
                        AnswerMark {
                            log: log.clone(),
                            generation,
                            index: events.len() - 1,
                        }
                    })
                };
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
                let answer = async move {
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
                .await;
                match mark {
                    Some(mark) => answer.map(|body| {
                        BodyExt::boxed(Noted {
                            inner: body,
                            mark: Some(mark),
                        })
                    }),
                    None => answer,
                }
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

    /// Starts recording when each request arrives and when its answer is
    /// sent back (dropping an earlier record), to be read with
    /// [`CountingProxy::take_timeline`] or [`CountingProxy::take_exchanges`].
    pub fn start_timeline(&self) {
        let mut rec = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        rec.generation += 1;
        rec.exchanges = Some(Vec::new());
    }

    /// Stops recording and returns `(arrival, operation)` for every request
    /// that arrived since [`CountingProxy::start_timeline`], in arrival order.
    /// The arrival is the moment the proxy had read the request's head.
    pub fn take_timeline(&self) -> Vec<(Instant, String)> {
        self.take_exchanges()
            .into_iter()
            .map(|e| (e.arrived, e.operation))
            .collect()
    }

    /// Stops recording and returns every request that arrived since
    /// [`CountingProxy::start_timeline`], in arrival order, with the moment
    /// its answer was sent back when it was (an answer sent after this call
    /// is not seen).
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        let mut rec = self.timeline.lock().unwrap_or_else(|p| p.into_inner());
        rec.generation += 1;
        let mut events = rec.exchanges.take().unwrap_or_default();
        drop(rec);
        events.sort_by_key(|e| e.arrived);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An upstream that answers each request after the milliseconds its
    /// `x-amz-target` names (`slow.30` → 30 ms).
    async fn upstream() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        crate::http_server::serve(listener, |req, _| async move {
            let pause = req
                .headers()
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('.').next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Response::new(full(Bytes::from_static(b"{}")))
        });
        endpoint
    }

    async fn call(http: &reqwest::Client, proxy: &CountingProxy, target: &str) {
        let resp = http
            .post(&proxy.endpoint)
            .header("x-amz-target", target)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_timeline_tells_concurrent_requests_from_sequential_ones() {
        let proxy = CountingProxy::start(&upstream().await).await.unwrap();
        let http = crate::http_client();
        call(&http, &proxy, "warm.0").await;
        proxy.start_timeline();
        tokio::join!(
            call(&http, &proxy, "a.40"),
            call(&http, &proxy, "b.40"),
            call(&http, &proxy, "c.40")
        );
        call(&http, &proxy, "d.0").await;
        let exchanges = proxy.take_exchanges();
        assert_eq!(exchanges.len(), 4, "{exchanges:?}");
        let answered: Vec<Instant> = exchanges
            .iter()
            .map(|e| e.answered.expect("every request was answered"))
            .collect();
        for (e, end) in exchanges.iter().zip(&answered) {
            assert!(*end >= e.arrived, "{e:?}");
        }
        // The three concurrent requests overlap; the last starts after all.
        let (first, last) = exchanges.split_at(3);
        let latest_start = first.iter().map(|e| e.arrived).max().unwrap();
        assert!(answered[..3].iter().all(|end| *end > latest_start));
        assert_eq!(last[0].operation, "d.0");
        assert!(answered[..3].iter().all(|end| *end <= last[0].arrived));
        // The arrivals-only view is the same record.
        assert!(proxy.take_timeline().is_empty(), "taking stops recording");
        assert_eq!(proxy.count("a.40"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswered_request_has_no_answer_time_and_a_restart_forgets_it() {
        let proxy = CountingProxy::start(&upstream().await).await.unwrap();
        let http = crate::http_client();
        proxy.start_timeline();
        let slow = tokio::spawn({
            let (http, proxy) = (http.clone(), proxy.clone());
            async move { call(&http, &proxy, "slow.300").await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let taken = proxy.take_timeline();
        assert_eq!(
            taken.iter().map(|(_, op)| op.as_str()).collect::<Vec<_>>(),
            ["slow.300"]
        );
        proxy.start_timeline();
        call(&http, &proxy, "fast.0").await;
        slow.await.unwrap();
        let exchanges = proxy.take_exchanges();
        assert_eq!(exchanges.len(), 1, "{exchanges:?}");
        assert_eq!(exchanges[0].operation, "fast.0");
        assert!(exchanges[0].answered.is_some());

        proxy.start_timeline();
        proxy.set_fault(ProxyFault::Hang);
        let hung = tokio::spawn({
            let (http, proxy) = (http.clone(), proxy.clone());
            async move {
                let _ = http
                    .post(&proxy.endpoint)
                    .header("x-amz-target", "hung.0")
                    .timeout(Duration::from_millis(100))
                    .send()
                    .await;
            }
        });
        hung.await.unwrap();
        let exchanges = proxy.take_exchanges();
        assert_eq!(exchanges.len(), 1, "{exchanges:?}");
        assert_eq!(exchanges[0].answered, None);
    }
}

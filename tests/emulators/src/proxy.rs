//! A forwarding proxy in front of an emulator that counts the operations it
//! forwards (by `X-Amz-Target`), so tests can assert how many requests a
//! function really made, and that can make the emulator fail, hang or answer
//! garbage on demand ([`ProxyFault`]). On request it also keeps a timeline:
//! the moment each request arrived and the moment its answer was sent back,
//! to place a function's requests between other events and to tell requests
//! made concurrently from requests made one after another
//! ([`CountingProxy::start_timeline`]).
//!
//! In front of DynamoDB it can also measure what each request consumed
//! ([`CountingProxy::set_capacity_mode`]): it asks for
//! `"ReturnConsumedCapacity":"TOTAL"` where the caller did not and notes
//! the read and write units the answer reports in the request's
//! [`Exchange`]. DynamoDB Local does not check SigV4 signatures (a request
//! with a made-up signature is served), so the rewritten body, which no
//! longer matches the signed hash, is accepted. The answer is passed on as
//! DynamoDB sent it, `ConsumedCapacity` included even when the caller had
//! not asked for it: the SDK parses it into a field the functions never
//! read, and stripping it would mean rewriting the answer (and its
//! `x-amz-crc32` checksum) for nothing.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use serde_json::Value;
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

/// One request of a timeline: when it arrived, when its answer went back,
/// and (in capacity mode) the DynamoDB capacity it consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The moment the proxy had read the request's head.
    pub arrived: Instant,
    /// The moment the proxy handed the whole answer to the connection (its
    /// last bytes buffered for writing, or the body dropped); `None` while
    /// no answer was sent (still forwarding, or [`ProxyFault::Hang`]).
    pub answered: Option<Instant>,
    /// The `X-Amz-Target` (`unknown` without one).
    pub operation: String,
    /// Read units the answer's `ConsumedCapacity` reported (0 unless
    /// `capacity_reported`).
    pub read_units: f64,
    /// Write units the answer's `ConsumedCapacity` reported (0 unless
    /// `capacity_reported`).
    pub write_units: f64,
    /// Whether the answer carried `ConsumedCapacity`: false when the
    /// capacity mode was off, for an operation without capacity
    /// (`DescribeTable`…), a fault, or an error answer (DynamoDB reports no
    /// capacity with an error, e.g. a failed condition, though it charges it).
    pub capacity_reported: bool,
}

/// The operations that take `ReturnConsumedCapacity`, by the kind of unit
/// a bare `CapacityUnits` counts: reads for Get/Query/Scan/BatchGet/TransactGet,
/// writes otherwise. `None` for any other target (the PartiQL operations
/// included: their kind depends on the statement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitKind {
    Read,
    Write,
}

fn unit_kind(target: &str) -> Option<UnitKind> {
    match target.strip_prefix("DynamoDB_20120810.")? {
        "GetItem" | "Query" | "Scan" | "BatchGetItem" | "TransactGetItems" => Some(UnitKind::Read),
        "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems" => {
            Some(UnitKind::Write)
        }
        _ => None,
    }
}

const RETURN_CONSUMED_CAPACITY: &str = "ReturnConsumedCapacity";

/// `body` asking for `"ReturnConsumedCapacity":"TOTAL"`, or `None` to send
/// it unchanged (not a JSON object, or already asking for `TOTAL` or
/// `INDEXES`). When the field is absent it is inserted as the object's first
/// member and the rest of the bytes are kept; an explicit `NONE` is
/// replaced (the object re-serialized).
fn ask_for_capacity(body: &[u8]) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    match fields.get(RETURN_CONSUMED_CAPACITY) {
        Some(Value::String(asked)) if asked == "TOTAL" || asked == "INDEXES" => None,
        Some(_) => {
            fields.insert(RETURN_CONSUMED_CAPACITY.into(), "TOTAL".into());
            serde_json::to_vec(&Value::Object(fields)).ok()
        }
        None => {
            // A JSON object: only whitespace comes before its `{`.
            let open = body.iter().position(|b| *b == b'{')?;
            let rest = &body[open + 1..];
            let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let field: &[u8] = if empty {
                br#""ReturnConsumedCapacity":"TOTAL""#
            } else {
                br#""ReturnConsumedCapacity":"TOTAL","#
            };
            Some([&body[..=open], field, rest].concat())
        }
    }
}

/// Read and write units an answer reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Consumed {
    read: f64,
    write: f64,
}

/// The units an answer's `ConsumedCapacity` reports (an object, or a list
/// of them for the batch and transaction operations), summed: an entry's
/// `ReadCapacityUnits` and `WriteCapacityUnits` when it gives either, else
/// its `CapacityUnits` as `kind` (DynamoDB Local gives only those). The
/// per-table and per-index breakdowns of `INDEXES` are parts of the total
/// and not added again. `None` when the answer has no `ConsumedCapacity`.
fn consumed_capacity(kind: UnitKind, answer: &[u8]) -> Option<Consumed> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let entries: Vec<&Value> = match value.get("ConsumedCapacity")? {
        Value::Array(list) => list.iter().collect(),
        entry @ Value::Object(_) => vec![entry],
        _ => return None,
    };
    let mut total = Consumed::default();
    for entry in entries {
        let read = entry.get("ReadCapacityUnits").and_then(Value::as_f64);
        let write = entry.get("WriteCapacityUnits").and_then(Value::as_f64);
        if read.is_some() || write.is_some() {
            total.read += read.unwrap_or(0.0);
            total.write += write.unwrap_or(0.0);
        } else if let Some(units) = entry.get("CapacityUnits").and_then(Value::as_f64) {
            match kind {
                UnitKind::Read => total.read += units,
                UnitKind::Write => total.write += units,
            }
        }
    }
    Some(total)
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
    /// Notes the capacity the answer reported.
    fn consumed(&self, consumed: Consumed) {
        self.update(|exchange| {
            exchange.read_units = consumed.read;
            exchange.write_units = consumed.write;
            exchange.capacity_reported = true;
        });
    }

    /// Changes the request's exchange, if it is still in the recording it
    /// arrived in.
    fn update(&self, change: impl FnOnce(&mut Exchange)) {
        let mut rec = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if rec.generation != self.generation {
            return;
        }
        if let Some(exchange) = rec
            .exchanges
            .as_mut()
            .and_then(|events| events.get_mut(self.index))
        {
            change(exchange);
        }
    }

    fn note(self) {
        let at = Instant::now();
        self.update(|exchange| exchange.answered = Some(at));
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
    capacity: Arc<AtomicBool>,
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
        let capacity: Arc<AtomicBool> = Arc::default();
        let measuring = capacity.clone();
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
            let measure = fault == ProxyFault::None && measuring.load(Ordering::SeqCst);
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
                            read_units: 0.0,
                            write_units: 0.0,
                            capacity_reported: false,
                        });
                        AnswerMark {
                            log: log.clone(),
                            generation,
                            index: events.len() - 1,
                        }
                    })
                };
                let kind = if measure { unit_kind(&op) } else { None };
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
                let (answer, consumed) = async move {
                    match fault {
                        ProxyFault::None => {
                            if let Some(kind) = kind {
                                let body = ask_for_capacity(&body).map_or(body, Bytes::from);
                                let fetched = fetch(&client, &upstream, parts, body).await;
                                let consumed = fetched
                                    .as_ref()
                                    .and_then(|answer| consumed_capacity(kind, &answer.body));
                                return (respond(fetched), consumed);
                            }
                        }
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
                            return (out, None);
                        }
                        ProxyFault::Hang => {
                            std::future::pending::<()>().await;
                        }
                        ProxyFault::Garbage => {
                            let out = Response::new(full(Bytes::from_static(
                                b"<html><body>502 Bad Gateway</body></html>",
                            )));
                            return (out, None);
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
                            let out = rx.await.unwrap_or_else(|_| {
                                let mut out = Response::new(full(Bytes::from_static(b"dropped")));
                                *out.status_mut() = StatusCode::BAD_GATEWAY;
                                out
                            });
                            return (out, None);
                        }
                    }
                    (forward(&client, &upstream, parts, body).await, None)
                }
                .await;
                if let (Some(mark), Some(consumed)) = (&mark, consumed) {
                    mark.consumed(consumed);
                }
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
            capacity,
        })
    }

    /// Turns the capacity mode on or off (off by default) for the requests
    /// that arrive from now on: each DynamoDB request whose operation takes
    /// `ReturnConsumedCapacity` (Get/Put/Update/DeleteItem, Query, Scan,
    /// BatchGet/BatchWriteItem, TransactGet/TransactWriteItems) asks for
    /// `TOTAL`, and a timeline's [`Exchange`] holds the units its answer
    /// reported. Not while a [`ProxyFault`] is set.
    pub fn set_capacity_mode(&self, on: bool) {
        self.capacity.store(on, Ordering::SeqCst);
    }

    /// Whether the capacity mode is on.
    pub fn capacity_mode(&self) -> bool {
        self.capacity.load(Ordering::SeqCst)
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
    respond(fetch(client, upstream, parts, body).await)
}

/// An upstream's answer, read whole.
struct Fetched {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// Sends one request to `upstream` (its `Content-Length` taken from `body`)
/// and reads the whole answer; `None` when the upstream cannot be reached.
async fn fetch(
    client: &reqwest::Client,
    upstream: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Option<Fetched> {
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
    let resp = fwd.body(body).send().await.ok()?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    Some(Fetched {
        status,
        headers,
        body,
    })
}

/// The answer to pass on: the upstream's, or a 502 when it could not be reached.
fn respond(fetched: Option<Fetched>) -> Response<crate::http_server::Body> {
    let Some(fetched) = fetched else {
        let mut out = Response::new(full(Bytes::from_static(b"upstream down")));
        *out.status_mut() = StatusCode::BAD_GATEWAY;
        return out;
    };
    let mut out = Response::new(full(fetched.body));
    *out.status_mut() = fetched.status;
    for (name, value) in &fetched.headers {
        if name != "content-length" && name != "transfer-encoding" {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
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

    #[test]
    fn the_operations_that_take_return_consumed_capacity_are_reads_or_writes() {
        for op in [
            "GetItem",
            "Query",
            "Scan",
            "BatchGetItem",
            "TransactGetItems",
        ] {
            let target = format!("DynamoDB_20120810.{op}");
            assert_eq!(unit_kind(&target), Some(UnitKind::Read), "{op}");
        }
        for op in [
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "BatchWriteItem",
            "TransactWriteItems",
        ] {
            let target = format!("DynamoDB_20120810.{op}");
            assert_eq!(unit_kind(&target), Some(UnitKind::Write), "{op}");
        }
        assert_eq!(unit_kind("DynamoDB_20120810.DescribeTable"), None);
        assert_eq!(unit_kind("DynamoDB_20120810.ExecuteStatement"), None);
        assert_eq!(unit_kind("GetItem"), None);
        assert_eq!(unit_kind("secretsmanager.GetSecretValue"), None);
        assert_eq!(unit_kind("unknown"), None);
    }

    fn asked(body: &str) -> Option<String> {
        ask_for_capacity(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn a_request_is_rewritten_to_ask_for_its_total_capacity() {
        // Absent: inserted first, the rest kept byte for byte.
        assert_eq!(
            asked(r#" {"TableName":"t", "Key":{"pk":{"S":"a"}}}"#).as_deref(),
            Some(r#" {"ReturnConsumedCapacity":"TOTAL","TableName":"t", "Key":{"pk":{"S":"a"}}}"#)
        );
        assert_eq!(
            asked("{ }").as_deref(),
            Some(r#"{"ReturnConsumedCapacity":"TOTAL" }"#)
        );
        assert_eq!(
            asked("{}").as_deref(),
            Some(r#"{"ReturnConsumedCapacity":"TOTAL"}"#)
        );
        // Asked for already: unchanged.
        assert_eq!(asked(r#"{"ReturnConsumedCapacity":"TOTAL"}"#), None);
        assert_eq!(asked(r#"{"ReturnConsumedCapacity":"INDEXES","a":1}"#), None);
        // Declined: overridden.
        let declined = asked(r#"{"a":1,"ReturnConsumedCapacity":"NONE"}"#).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&declined).unwrap(),
            serde_json::json!({"a": 1, "ReturnConsumedCapacity": "TOTAL"})
        );
        // Not a JSON object: left alone.
        assert_eq!(asked("[]"), None);
        assert_eq!(asked(""), None);
        assert_eq!(asked("{not json"), None);
        // Every rewrite is a valid object asking for TOTAL.
        let rewritten = asked(r#"{"TableName":"t"}"#).unwrap();
        let value: Value = serde_json::from_str(&rewritten).unwrap();
        assert_eq!(value[RETURN_CONSUMED_CAPACITY], "TOTAL");
        assert_eq!(value["TableName"], "t");
    }

    fn consumed(kind: UnitKind, answer: &str) -> Option<Consumed> {
        consumed_capacity(kind, answer.as_bytes())
    }

    #[test]
    fn consumed_capacity_is_summed_and_attributed_by_operation_kind() {
        // DynamoDB Local's shapes: a bare CapacityUnits, as the operation's kind.
        let get = r#"{"Item":{},"ConsumedCapacity":{"TableName":"t","CapacityUnits":0.5}}"#;
        let read_half = Consumed {
            read: 0.5,
            write: 0.0,
        };
        assert_eq!(consumed(UnitKind::Read, get), Some(read_half));
        let put = r#"{"ConsumedCapacity":{"TableName":"t","CapacityUnits":2.0,"Table":{"CapacityUnits":1.0},
                      "GlobalSecondaryIndexes":{"g":{"CapacityUnits":1.0}}}}"#;
        let write_two = Consumed {
            read: 0.0,
            write: 2.0,
        };
        assert_eq!(consumed(UnitKind::Write, put), Some(write_two));
        // Batch and transaction answers: a list, one entry per table.
        let batch = r#"{"ConsumedCapacity":[{"TableName":"a","CapacityUnits":4.0},{"TableName":"b","CapacityUnits":2.0}]}"#;
        let six = Consumed {
            read: 0.0,
            write: 6.0,
        };
        assert_eq!(consumed(UnitKind::Write, batch), Some(six));
        // Split units win over the total (not counted twice).
        let split = r#"{"ConsumedCapacity":[{"CapacityUnits":3.0,"ReadCapacityUnits":1.0,"WriteCapacityUnits":2.0},
                                             {"CapacityUnits":4.0,"ReadCapacityUnits":4.0}]}"#;
        let both = Consumed {
            read: 5.0,
            write: 2.0,
        };
        assert_eq!(consumed(UnitKind::Write, split), Some(both));
        let only_write = r#"{"ConsumedCapacity":{"CapacityUnits":9.0,"WriteCapacityUnits":3.0}}"#;
        let three = Consumed {
            read: 0.0,
            write: 3.0,
        };
        assert_eq!(consumed(UnitKind::Read, only_write), Some(three));
        // Nothing reported: none (an error answer, or capacity not asked for).
        assert_eq!(consumed(UnitKind::Read, "{}"), None);
        assert_eq!(
            consumed(
                UnitKind::Write,
                r#"{"__type":"ConditionalCheckFailedException"}"#
            ),
            None
        );
        assert_eq!(consumed(UnitKind::Read, r#"{"ConsumedCapacity":1}"#), None);
        assert_eq!(consumed(UnitKind::Read, "garbage"), None);
        assert_eq!(
            consumed(UnitKind::Read, r#"{"ConsumedCapacity":[]}"#),
            Some(Consumed::default())
        );
    }

    /// An upstream like DynamoDB: it reports 1.5 capacity units when the
    /// request asked for them, and echoes the request it received.
    async fn capacity_upstream() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        crate::http_server::serve(listener, |req, _| async move {
            let length = req
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(length, Some(body.len()), "Content-Length matches the body");
            let seen: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut answer = serde_json::json!({ "Seen": seen });
            if seen[RETURN_CONSUMED_CAPACITY] == "TOTAL" {
                answer["ConsumedCapacity"] =
                    serde_json::json!({"TableName": "t", "CapacityUnits": 1.5});
            }
            Response::new(full(Bytes::from(answer.to_string())))
        });
        endpoint
    }

    async fn send(http: &reqwest::Client, proxy: &CountingProxy, op: &str, body: &str) -> Value {
        http.post(&proxy.endpoint)
            .header("x-amz-target", format!("DynamoDB_20120810.{op}"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_capacity_mode_asks_for_capacity_and_notes_it_per_request() {
        let proxy = CountingProxy::start(&capacity_upstream().await)
            .await
            .unwrap();
        let http = crate::http_client();
        let request = r#"{"TableName":"t","Key":{"pk":{"S":"a"}}}"#;

        // Off (the default): requests and exchanges as before.
        assert!(!proxy.capacity_mode());
        proxy.start_timeline();
        let answer = send(&http, &proxy, "GetItem", request).await;
        assert_eq!(
            answer["Seen"],
            serde_json::from_str::<Value>(request).unwrap()
        );
        let off = proxy.take_exchanges();
        assert_eq!(off.len(), 1);
        assert!(!off[0].capacity_reported);
        assert_eq!((off[0].read_units, off[0].write_units), (0.0, 0.0));

        // On: asked for, and noted by kind.
        proxy.set_capacity_mode(true);
        assert!(proxy.capacity_mode());
        proxy.start_timeline();
        let answer = send(&http, &proxy, "GetItem", request).await;
        assert_eq!(answer["Seen"][RETURN_CONSUMED_CAPACITY], "TOTAL");
        assert_eq!(answer["ConsumedCapacity"]["CapacityUnits"], 1.5);
        send(&http, &proxy, "PutItem", request).await;
        let other = send(&http, &proxy, "DescribeTable", request).await;
        assert!(other["Seen"].get(RETURN_CONSUMED_CAPACITY).is_none());
        let on = proxy.take_exchanges();
        let noted: Vec<(&str, f64, f64, bool)> = on
            .iter()
            .map(|e| {
                (
                    e.operation.as_str(),
                    e.read_units,
                    e.write_units,
                    e.capacity_reported,
                )
            })
            .collect();
        assert_eq!(
            noted,
            [
                ("DynamoDB_20120810.GetItem", 1.5, 0.0, true),
                ("DynamoDB_20120810.PutItem", 0.0, 1.5, true),
                ("DynamoDB_20120810.DescribeTable", 0.0, 0.0, false),
            ]
        );
        assert!(on.iter().all(|e| e.answered.is_some()));

        // A fault answers instead: nothing asked, nothing noted.
        proxy.start_timeline();
        proxy.set_fault(ProxyFault::Status(500));
        let resp = http
            .post(&proxy.endpoint)
            .header("x-amz-target", "DynamoDB_20120810.GetItem")
            .body(request)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        proxy.set_fault(ProxyFault::None);
        let faulted = proxy.take_exchanges();
        assert!(!faulted[0].capacity_reported);

        // Off again: the caller's body goes through untouched.
        proxy.set_capacity_mode(false);
        let answer = send(&http, &proxy, "GetItem", request).await;
        assert!(answer["Seen"].get(RETURN_CONSUMED_CAPACITY).is_none());
        assert_eq!(proxy.count("DynamoDB_20120810.GetItem"), 4);
    }
}

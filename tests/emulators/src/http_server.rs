//! The one HTTP/1 accept loop the harness's servers share, with bodies that
//! can be whole or streamed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A response body: whole or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body fed by a channel; the body ends when the sender is dropped,
/// and fails (cutting the connection) on an `Err`.
pub fn streamed(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// Serves `handle(request, peer)` on every connection of `listener` until the
/// returned task is aborted.
pub fn serve<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_on(listener, handle, false)
}

/// Like [`serve`], but each request's target is first percent-encoded the
/// way a browser's URL parser would ([`encode_target`]): a request such as
/// `GET /tasks/<id>` reaches `handle` as `/tasks/%3Cid%3E` instead of being
/// refused by the HTTP parser with an empty 400. Every request of a
/// connection is, keep-alive and pipelining included ([`TargetEncoder`]).
pub fn serve_encoding_targets<F, Fut>(listener: TcpListener, handle: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_on(listener, handle, true)
}

fn serve_on<F, Fut>(listener: TcpListener, handle: F, encode: bool) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            // Small frames (SSE events, streamed chunks) must not wait for
            // Nagle's algorithm and delayed ACKs.
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let answer = handle(req, peer);
                    async move { Ok::<_, hyper::Error>(answer.await) }
                });
                let builder = http1::Builder::new();
                let _ = if encode {
                    let io = TokioIo::new(EncodedTargets::new(stream));
                    builder.serve_connection(io, svc).await
                } else {
                    builder.serve_connection(TokioIo::new(stream), svc).await
                };
            });
        }
    })
}

/// Whether a printable ASCII byte of a request target must be
/// percent-encoded: in the path, the bytes of WHATWG's path percent-encode
/// set (`"`, `<`, `>`, `` ` ``, `{`, `}`), in the query those of its query set
/// (`"`, `<`, `>`). Control bytes, spaces and non-ASCII bytes are left as
/// they are (the HTTP parser judges them as before).
fn needs_encoding(byte: u8, in_query: bool) -> bool {
    match byte {
        b'"' | b'<' | b'>' => true,
        b'`' | b'{' | b'}' => !in_query,
        _ => false,
    }
}

/// A request target with the printable ASCII bytes a browser would have
/// percent-encoded (see [`needs_encoding`]) as `%XX`; everything from a `#`
/// on is left as it is. A target needing nothing is returned unchanged.
pub fn encode_target(target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len());
    let mut in_query = false;
    for (i, &byte) in target.iter().enumerate() {
        if byte == b'#' {
            out.extend_from_slice(&target[i..]);
            break;
        }
        in_query |= byte == b'?';
        if needs_encoding(byte, in_query) {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        } else {
            out.push(byte);
        }
    }
    out
}

/// A request line (`METHOD SP target SP version`, with its line ending)
/// with its target encoded by [`encode_target`]; anything else unchanged.
fn encode_request_line(line: &[u8]) -> Vec<u8> {
    let (Some(first), Some(last)) = (
        line.iter().position(|b| *b == b' '),
        line.iter().rposition(|b| *b == b' '),
    ) else {
        return line.to_vec();
    };
    if first >= last {
        return line.to_vec();
    }
    let mut out = line[..=first].to_vec();
    out.extend_from_slice(&encode_target(&line[first + 1..last]));
    out.extend_from_slice(&line[last..]);
    out
}

/// The longest line (request line, header, chunk size) the encoder holds
/// back while looking for its end; a longer one passes through as it is and
/// the encoder stops (the HTTP parser refuses it, or serves it, as before).
const MAX_LINE: usize = 64 * 1024;

/// Where the encoder is in the stream of requests.
#[derive(Debug, Clone, PartialEq)]
enum Framing {
    /// Collecting a request line (empty lines before one pass through).
    RequestLine,
    /// Collecting the head's header lines.
    Headers(Head),
    /// Passing `n` body bytes through.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// Passing `n` chunk bytes through, then the line ending after them.
    ChunkData(u64),
    /// Collecting the line ending after a chunk's data.
    ChunkEnd,
    /// Collecting trailer lines up to the empty one.
    Trailers,
    /// Not understood (an upgrade, a conflicting length, a line too long):
    /// every further byte passes through as it is.
    Passthrough,
}

/// What a request's head says about its body.
#[derive(Debug, Clone, PartialEq, Default)]
struct Head {
    content_length: Option<u64>,
    chunked: bool,
    /// Anything that makes the body's end unknowable here.
    unsure: bool,
}

/// Follows a connection's requests (HTTP/1.1 framing: `Content-Length` or
/// chunked bodies) so that the target of each request line, not only the
/// first, is encoded with [`encode_target`]; every other byte passes
/// through unchanged. Pure: bytes in, bytes out, in any split.
#[derive(Debug)]
pub struct TargetEncoder {
    framing: Framing,
    /// The line being collected.
    line: Vec<u8>,
}

impl Default for TargetEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TargetEncoder {
    /// An encoder at the start of a connection.
    pub fn new() -> Self {
        Self {
            framing: Framing::RequestLine,
            line: Vec::new(),
        }
    }

    /// Feeds bytes read from the client; what the HTTP parser should read
    /// is appended to `out` (lines are held back until they end).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match &mut self.framing {
                Framing::Passthrough => {
                    out.extend_from_slice(input);
                    return;
                }
                Framing::Body(left) | Framing::ChunkData(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.framing = match self.framing {
                            Framing::ChunkData(_) => Framing::ChunkEnd,
                            _ => Framing::RequestLine,
                        };
                    }
                }
                _ => {
                    let end = input.iter().position(|b| *b == b'\n');
                    let take = end.map_or(input.len(), |i| i + 1);
                    self.line.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if end.is_some() {
                        let line = std::mem::take(&mut self.line);
                        self.line_done(line, out);
                    } else if self.line.len() > MAX_LINE {
                        out.append(&mut self.line);
                        self.framing = Framing::Passthrough;
                    }
                }
            }
        }
    }

    /// The bytes held back (a line not yet ended), for when the client has
    /// closed its side.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.line);
        self.framing = Framing::Passthrough;
    }

    fn line_done(&mut self, line: Vec<u8>, out: &mut Vec<u8>) {
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(&line);
        let empty = content.is_empty();
        let next = match std::mem::replace(&mut self.framing, Framing::Passthrough) {
            Framing::RequestLine if empty => Framing::RequestLine,
            Framing::RequestLine => {
                out.extend_from_slice(&encode_request_line(&line));
                // A CONNECT tunnel is not HTTP after its head.
                self.framing = if content.starts_with(b"CONNECT ") {
                    Framing::Passthrough
                } else {
                    Framing::Headers(Head::default())
                };
                return;
            }
            Framing::Headers(head) if empty => match head {
                Head { unsure: true, .. } => Framing::Passthrough,
                Head {
                    chunked: true,
                    content_length: None,
                    ..
                } => Framing::ChunkSize,
                Head { chunked: true, .. } => Framing::Passthrough,
                Head {
                    content_length: Some(n),
                    ..
                } if n > 0 => Framing::Body(n),
                Head { .. } => Framing::RequestLine,
            },
            Framing::Headers(mut head) => {
                head.read(content);
                Framing::Headers(head)
            }
            Framing::ChunkSize => {
                let size = content.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size).ok().map(str::trim);
                match size.and_then(|s| u64::from_str_radix(s, 16).ok()) {
                    Some(0) => Framing::Trailers,
                    Some(n) => Framing::ChunkData(n),
                    None => Framing::Passthrough,
                }
            }
            Framing::ChunkEnd if empty => Framing::ChunkSize,
            Framing::Trailers if empty => Framing::RequestLine,
            Framing::Trailers => Framing::Trailers,
            _ => Framing::Passthrough,
        };
        out.extend_from_slice(&line);
        self.framing = next;
    }
}

impl Head {
    /// Notes what a header line says about the body.
    fn read(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return;
        };
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "content-length" => match (value.parse::<u64>(), self.content_length) {
                (Ok(n), None) => self.content_length = Some(n),
                (Ok(n), Some(m)) if n == m => {}
                _ => self.unsure = true,
            },
            "transfer-encoding" => {
                // Only a final `chunked` frames a request body.
                let last = value.rsplit(',').next().unwrap_or_default().trim();
                if last == "chunked" {
                    self.chunked = true;
                } else {
                    self.unsure = true;
                }
            }
            "upgrade" => self.unsure = true,
            _ => {}
        }
    }
}

/// A connection whose reads go through a [`TargetEncoder`]; writes pass
/// straight through.
pub struct EncodedTargets<S> {
    inner: S,
    encoder: TargetEncoder,
    /// Encoded bytes not yet read, from `at`.
    ready: Vec<u8>,
    at: usize,
    eof: bool,
}

impl<S> EncodedTargets<S> {
    /// Wraps a connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            encoder: TargetEncoder::new(),
            ready: Vec::new(),
            at: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for EncodedTargets<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.ready.len() {
                let n = (this.ready.len() - this.at).min(buf.remaining());
                buf.put_slice(&this.ready[this.at..this.at + n]);
                this.at += n;
                if this.at == this.ready.len() {
                    this.ready.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.eof = true;
                    this.encoder.finish(&mut this.ready);
                }
                Poll::Ready(Ok(())) => this.encoder.feed(read.filled(), &mut this.ready),
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EncodedTargets<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn encoded(input: &[u8]) -> Vec<u8> {
        let mut encoder = TargetEncoder::new();
        let mut out = Vec::new();
        encoder.feed(input, &mut out);
        encoder.finish(&mut out);
        out
    }

    /// The same input fed one byte at a time.
    fn encoded_bytewise(input: &[u8]) -> Vec<u8> {
        let mut encoder = TargetEncoder::new();
        let mut out = Vec::new();
        for b in input {
            encoder.feed(std::slice::from_ref(b), &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    #[test]
    fn a_target_is_encoded_as_a_browser_would() {
        let cases: [(&[u8], &[u8]); 8] = [
            (b"/api/v1/tasks", b"/api/v1/tasks"),
            (
                b"/api/v1/tasks/<id>/complete",
                b"/api/v1/tasks/%3Cid%3E/complete",
            ),
            (b"/a/`{x}\"", b"/a/%60%7Bx%7D%22"),
            // The query set: `{`, `}` and `` ` `` stay.
            (b"/a?q=<b>&j={\"k\"}`", b"/a?q=%3Cb%3E&j={%22k%22}`"),
            // Already encoded, and other printable bytes, stay.
            (b"/a%3C/!$&'()*+,;=:@[]|^~\\", b"/a%3C/!$&'()*+,;=:@[]|^~\\"),
            // Non-ASCII and control bytes are the HTTP parser's to judge.
            (b"/a/\xce\xb1/\xff\x01", b"/a/\xce\xb1/\xff\x01"),
            // A fragment is left as it is.
            (b"/a<#<b>", b"/a%3C#<b>"),
            (b"*", b"*"),
        ];
        for (target, want) in cases {
            assert_eq!(
                encode_target(target),
                want,
                "{}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn every_request_line_of_a_connection_is_encoded_and_nothing_else() {
        // Keep-alive and pipelined: a body with `<` (Content-Length), a
        // chunked body with a trailer, a request without a body.
        let input: &[u8] = b"\r\nPOST /t/<a> HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"t\":\"<b>\"}\n\
PUT /t/<c> HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;ext=1\r\n<d>\n\r\n0\r\nX-T: <e>\r\n\r\n\
GET /t/<f>?q=<g> HTTP/1.1\r\nX-H: <h>\r\n\r\n";
        let want: &[u8] = b"\r\nPOST /t/%3Ca%3E HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"t\":\"<b>\"}\n\
PUT /t/%3Cc%3E HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;ext=1\r\n<d>\n\r\n0\r\nX-T: <e>\r\n\r\n\
GET /t/%3Cf%3E?q=%3Cg%3E HTTP/1.1\r\nX-H: <h>\r\n\r\n";
        assert_eq!(
            String::from_utf8_lossy(&encoded(input)),
            String::from_utf8_lossy(want)
        );
        assert_eq!(encoded_bytewise(input), want);
    }

    #[test]
    fn what_the_encoder_cannot_follow_passes_through_untouched() {
        // Conflicting lengths, a transfer coding that is not chunked, an
        // upgrade, CONNECT, a bad chunk size: the first request line is
        // encoded, then everything passes as it came.
        let heads: [&[u8]; 5] = [
            b"POST /<a> HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST /<a> HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET /<a> HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"CONNECT <a> HTTP/1.1\r\n\r\n",
            b"POST /<a> HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ];
        for head in heads {
            let input = [head, b"GET /<b> HTTP/1.1\r\n\r\n"].concat();
            let out = encoded(&input);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("GET /<b>"), "{text}");
            assert!(!text.contains("/<a>"), "{text}");
            assert_eq!(encoded_bytewise(&input), out);
        }
        // A line longer than the encoder holds is passed on as it is.
        let long = [b"GET /<".as_slice(), &vec![b'a'; MAX_LINE + 10]].concat();
        assert_eq!(encoded(&long), long);
        // An unfinished line is released when the client closes.
        assert_eq!(encoded(b"GET /<a"), b"GET /<a");
    }

    /// Writes `request` on a fresh connection to `addr` and reads to EOF.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            stream.read_to_end(&mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A server answering each request with its method and target.
    async fn echo_server(encode: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = |req: Request<Incoming>, _| async move {
            let target = req.uri().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::new(full(format!("[{target} {}]", body.len())))
        };
        if encode {
            serve_encoding_targets(listener, echo);
        } else {
            serve(listener, echo);
        }
        addr
    }

    #[tokio::test]
    async fn every_printable_byte_in_a_target_reaches_the_handler() {
        let (plain, encoding) = (echo_server(false).await, echo_server(true).await);
        let mut refused_before = Vec::new();
        for byte in 0x21u8..=0x7e {
            if byte == b'#' {
                continue; // a fragment: dropped by the URI parser
            }
            for target in [vec![b'/', b'a', byte], vec![b'/', b'?', b'q', byte]] {
                let request = [
                    b"GET ".as_slice(),
                    &target,
                    b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                ]
                .concat();
                let answer = exchange(encoding, &request).await;
                assert!(
                    answer.starts_with("HTTP/1.1 200"),
                    "{:?}: {answer}",
                    char::from(byte)
                );
                if !exchange(plain, &request).await.starts_with("HTTP/1.1 200") {
                    refused_before.push(char::from(byte));
                }
            }
        }
        // What hyper refuses without the encoder (the point of it).
        assert!(refused_before.contains(&'<'), "{refused_before:?}");
    }

    #[tokio::test]
    async fn a_kept_alive_connection_has_each_request_encoded() {
        let addr = echo_server(true).await;
        let request = b"POST /t/<a> HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n<b>\
GET /t/<c>?d=<e> HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let answer = exchange(addr, request).await;
        assert!(answer.contains("[/t/%3Ca%3E 3]"), "{answer}");
        assert!(answer.contains("[/t/%3Cc%3E?d=%3Ce%3E 0]"), "{answer}");
    }
}

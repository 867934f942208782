//! Server-sent events as OpenAI streams them: `data:` blocks separated by a
//! blank line, comments and keep-alives skipped, `[DONE]` ignored. Each event
//! comes out as its JSON object; what the objects mean is `responses`' job.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use taskpilot_http::UpstreamError;

/// Server-sent events of a streamed call, one JSON object per event.
pub struct EventStream {
    resp: reqwest::Response,
    buffer: Vec<u8>,
    /// The longest gap allowed between two chunks.
    idle: Duration,
}

impl EventStream {
    pub(crate) fn new(resp: reqwest::Response, idle: Duration) -> Self {
        Self {
            resp,
            buffer: Vec::new(),
            idle,
        }
    }

    /// The next event's `data` as JSON; `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<Result<Value, UpstreamError>> {
        self.next_as().await
    }

    /// The next event's `data` read as `T` (straight from the text, no
    /// intermediate JSON tree); `None` at the end of the stream.
    pub async fn next_as<T: DeserializeOwned>(&mut self) -> Option<Result<T, UpstreamError>> {
        loop {
            if let Some(event) = take_event(&mut self.buffer) {
                match event {
                    Some(Ok(v)) => return Some(Ok(v)),
                    Some(Err(e)) => return Some(Err(e)),
                    None => continue,
                }
            }
            let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
            let Ok(chunk) = tokio::time::timeout(self.idle, self.resp.chunk()).await else {
                return Some(Err(UpstreamError::Timeout(idle_ms)));
            };
            match chunk {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) if self.buffer.iter().all(u8::is_ascii_whitespace) => return None,
                Ok(None) => {
                    return Some(Err(UpstreamError::Unavailable(
                        "the stream ended mid-event".into(),
                    )));
                }
                Err(e) if e.is_timeout() => {
                    return Some(Err(UpstreamError::Timeout(idle_ms)));
                }
                Err(_) => {
                    return Some(Err(UpstreamError::Unavailable(
                        "the stream was cut off".into(),
                    )));
                }
            }
        }
    }
}

/// Takes one complete event block from `buffer`: `Some(None)` for a block
/// without data (a comment or keep-alive), `None` when no block is complete.
fn take_event<T: DeserializeOwned>(
    buffer: &mut Vec<u8>,
) -> Option<Option<Result<T, UpstreamError>>> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let block: Vec<u8> = buffer.drain(..end + 2).collect();
    let text = String::from_utf8_lossy(&block);
    let data: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() || data == ["[DONE]"] {
        return Some(None);
    }
    Some(Some(serde_json::from_str(&data.join("\n")).map_err(|_| {
        UpstreamError::Unavailable("unreadable stream event".into())
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sse_blocks() {
        let mut buf = b"event: response.created\ndata: {\"type\":\"response.created\"}\n\n: keep-alive\n\ndata: {\"a\":".to_vec();
        let first: Value = take_event(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(first["type"], "response.created");
        assert!(
            take_event::<Value>(&mut buf).unwrap().is_none(),
            "comment block"
        );
        assert!(
            take_event::<Value>(&mut buf).is_none(),
            "incomplete block waits"
        );
        buf.extend_from_slice(b"1}\r\n\n");
        let second: Value = take_event(&mut buf).unwrap().unwrap().unwrap();
        assert_eq!(second["a"], 1);
    }
}

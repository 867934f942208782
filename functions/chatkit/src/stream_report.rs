//! What one streamed response did, as one EMF line when it ends: the
//! `ChatStreamErrors` alarm and the dashboard's time to first token read it.

use std::time::{Duration, Instant};

use serde_json::Value;
use taskpilot_chatkit::types::{ItemUpdate, StreamError, StreamEvent};
use taskpilot_http::metrics::Emf;

/// The `error` code of a failure (OpenAI unavailable, out of time, a store
/// error); `custom` errors are answers (the day's budget, a refused action).
const FAILURE_CODE: &str = StreamError::STREAM;

/// Watches the events of one stream.
#[derive(Debug)]
pub struct StreamReport {
    started: Instant,
    first_token: Option<Duration>,
    error: Option<String>,
}

impl StreamReport {
    /// A stream whose request arrived at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            first_token: None,
            error: None,
        }
    }

    /// Notes an event as it is sent.
    pub fn observe(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::ItemUpdated {
                update: ItemUpdate::TextDelta { .. },
                ..
            } if self.first_token.is_none() => {
                self.first_token = Some(self.started.elapsed());
            }
            StreamEvent::Error { code, .. } if self.error.is_none() => {
                self.error = Some(code.clone());
            }
            _ => {}
        }
    }

    /// Whether the stream carried a failure (`stream.error`).
    pub fn failed(&self) -> bool {
        self.error.as_deref() == Some(FAILURE_CODE)
    }

    /// `TaskPilot` › `ChatStreams` (1), `ChatStreamErrors` (1 when the stream
    /// carried a `stream.error`, else 0) and, once the model's text began,
    /// `TimeToFirstToken` (ms since the request arrived), by `Function`; the
    /// first error's `code` as a property.
    pub fn line(&self) -> Emf {
        let mut line = Emf::new("TaskPilot")
            .dimension("Function", "chatkit")
            .metric("ChatStreams", "Count", 1)
            .metric("ChatStreamErrors", "Count", u8::from(self.failed()));
        if let Some(first) = self.first_token {
            let millis = u64::try_from(first.as_millis()).unwrap_or(u64::MAX);
            line = line.metric("TimeToFirstToken", "Milliseconds", millis);
        }
        if let Some(code) = &self.error {
            line = line.property("code", Value::String(code.clone()));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn delta(text: &str) -> StreamEvent {
        StreamEvent::ItemUpdated {
            item_id: "msg_1".into(),
            update: ItemUpdate::TextDelta {
                content_index: 0,
                delta: text.into(),
            },
        }
    }

    fn error(code: &str) -> StreamEvent {
        StreamEvent::Error {
            code: code.into(),
            message: None,
            allow_retry: true,
        }
    }

    fn metric_names(line: &Value) -> Vec<&str> {
        line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_clean_stream_counts_one_stream_and_no_error() {
        let mut report = StreamReport::new(Instant::now());
        report.observe(&StreamEvent::ItemRemoved {
            item_id: "x".into(),
        });
        let line = report.line().to_json();
        assert_eq!(
            (&line["ChatStreams"], &line["ChatStreamErrors"]),
            (&json!(1), &json!(0))
        );
        assert_eq!(line["Function"], "chatkit");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "TaskPilot"
        );
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
        assert!(!metric_names(&line).contains(&"TimeToFirstToken"));
        assert!(line.get("code").is_none());
    }

    #[test]
    fn a_stream_error_is_counted_with_its_code() {
        let mut report = StreamReport::new(Instant::now());
        report.observe(&error("stream.error"));
        report.observe(&error("custom"));
        assert!(report.failed());
        let line = report.line().to_json();
        assert_eq!(line["ChatStreamErrors"], 1);
        assert_eq!(line["code"], "stream.error");
    }

    #[test]
    fn a_custom_error_is_an_answer_not_a_failure() {
        let mut report = StreamReport::new(Instant::now());
        report.observe(&error("custom"));
        assert!(!report.failed());
        let line = report.line().to_json();
        assert_eq!(line["ChatStreamErrors"], 0);
        assert_eq!(line["code"], "custom");
    }

    #[test]
    fn time_to_first_token_is_the_first_text_delta_since_the_request() {
        let started = Instant::now() - Duration::from_millis(250);
        let mut report = StreamReport::new(started);
        report.observe(&delta("Hel"));
        let first = report.first_token.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        report.observe(&delta("lo"));
        assert_eq!(report.first_token, Some(first), "only the first delta");
        assert!(first >= Duration::from_millis(250), "{first:?}");
        let line = report.line().to_json();
        assert!(metric_names(&line).contains(&"TimeToFirstToken"));
        let millis = line["TimeToFirstToken"].as_u64().unwrap();
        assert!((250..60_000).contains(&millis), "{millis}");
    }
}

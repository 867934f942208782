//! The metrics port: counts the engine or the assistant wants a team to see
//! (e.g. tool calls refused over the per-turn cap). The `chatkit` function
//! prints them as CloudWatch EMF lines; tests record them.

use crate::request::FeedbackKind;

/// The count of ratings users gave ([`Metrics::feedback`]).
pub const FEEDBACK: &str = "Feedback";

/// Where counts go.
pub trait Metrics: Send + Sync {
    /// Adds `value` to the count `name`.
    fn count(&self, name: &'static str, value: u64);

    /// One rating request of `kind` (a count of [`FEEDBACK`] by default; the
    /// function's metrics add the kind).
    fn feedback(&self, kind: FeedbackKind) {
        let _ = kind;
        self.count(FEEDBACK, 1);
    }
}

/// Counts nobody reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn count(&self, _name: &'static str, _value: u64) {}
}

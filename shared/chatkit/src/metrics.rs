//! The metrics port: counts the engine or the assistant wants a team to see
//! (e.g. tool calls refused over the per-turn cap). The `chatkit` function
//! prints them as CloudWatch EMF lines; tests record them.

/// Where counts go.
pub trait Metrics: Send + Sync {
    /// Adds `value` to the count `name`.
    fn count(&self, name: &'static str, value: u64);
}

/// Counts nobody reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn count(&self, _name: &'static str, _value: u64) {}
}

//! Structured logging set-up.

use taskpilot_config::Vars;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs the global subscriber: JSON lines when Lambda's advanced logging
/// asks for it (`AWS_LAMBDA_LOG_FORMAT=JSON`) or `LOG_FORMAT=json`, plain text
/// otherwise. Level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, then `info`.
pub fn init(vars: &Vars) {
    let level = vars
        .platform("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| vars.platform("RUST_LOG"))
        .unwrap_or_else(|| "info".into())
        .to_lowercase();
    // SDK internals are noisy at info; keep them at warn unless asked.
    // `Targets` takes `RUST_LOG`'s `target=level` directives without pulling
    // in a regex engine (EnvFilter's span and field filters are not needed).
    let filter: Targets = format!("{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn")
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let json = ["AWS_LAMBDA_LOG_FORMAT", "LOG_FORMAT"].iter().any(|v| {
        vars.platform(v)
            .is_some_and(|f| f.eq_ignore_ascii_case("json"))
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    let result = if json {
        let layer = layer
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .with_filter(filter);
        tracing_subscriber::registry().with(layer).try_init()
    } else {
        let layer = layer.without_time().with_filter(filter);
        tracing_subscriber::registry().with(layer).try_init()
    };
    if result.is_err() {
        eprintln!("tracing subscriber was already installed");
    }
}

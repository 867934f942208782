//! Structured logging set-up.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: JSON lines when Lambda's advanced logging
/// asks for it (`AWS_LAMBDA_LOG_FORMAT=JSON`) or `LOG_FORMAT=json`, plain text
/// otherwise. Level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, then `info`.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into())
        .to_lowercase();
    // SDK internals are noisy at info; keep them at warn unless asked.
    let filter = EnvFilter::try_new(format!(
        "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn"
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = ["AWS_LAMBDA_LOG_FORMAT", "LOG_FORMAT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|f| f.eq_ignore_ascii_case("json")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init()
    } else {
        builder.without_time().try_init()
    };
    if result.is_err() {
        eprintln!("tracing subscriber was already installed");
    }
}

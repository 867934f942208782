//! Structured logging set-up.

use std::fmt;

use taskpilot_config::Vars;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// One JSON object per line (Lambda's advanced logging, CloudWatch Insights).
    Json,
    /// Text with the runtime's span (`Lambda runtime invoke{requestId=…}`).
    Text,
    /// The level and the event's fields only, for a developer's terminal
    /// (`LOG_FORMAT=local`, set by the local stack).
    Local,
}

impl LogFormat {
    /// JSON when Lambda's advanced logging asks for it (`AWS_LAMBDA_LOG_FORMAT=JSON`)
    /// or `LOG_FORMAT=json`; `LOG_FORMAT=local` for the compact local lines;
    /// text otherwise.
    fn of(vars: &Vars) -> Self {
        let is = |name: &str, value: &str| {
            vars.platform(name)
                .is_some_and(|f| f.eq_ignore_ascii_case(value))
        };
        if is("AWS_LAMBDA_LOG_FORMAT", "json") || is("LOG_FORMAT", "json") {
            Self::Json
        } else if is("LOG_FORMAT", "local") {
            Self::Local
        } else {
            Self::Text
        }
    }
}

/// Installs the global subscriber in the format [`LogFormat::of`] picks.
/// Level from `AWS_LAMBDA_LOG_LEVEL`, then `RUST_LOG`, then `info`.
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
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    let result = match LogFormat::of(vars) {
        LogFormat::Json => {
            let layer = layer
                .json()
                .with_current_span(false)
                .flatten_event(true)
                .with_filter(filter);
            tracing_subscriber::registry().with(layer).try_init()
        }
        LogFormat::Text => {
            let layer = layer.without_time().with_filter(filter);
            tracing_subscriber::registry().with(layer).try_init()
        }
        LogFormat::Local => {
            let layer = layer.event_format(LocalLine).with_filter(filter);
            tracing_subscriber::registry().with(layer).try_init()
        }
    };
    if result.is_err() {
        eprintln!("tracing subscriber was already installed");
    }
}

/// `LEVEL message field=value…`: no time (the terminal has it), no span
/// (the local gateway's access line says which request it was).
struct LocalLine;

impl<S, N> FormatEvent<S, N> for LocalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{} ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn lambdas_json_setting_wins_then_log_format_then_text() {
        assert_eq!(LogFormat::of(&vars(&[])), LogFormat::Text);
        assert_eq!(
            LogFormat::of(&vars(&[("LOG_FORMAT", "json")])),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::of(&vars(&[("LOG_FORMAT", "Local")])),
            LogFormat::Local
        );
        assert_eq!(
            LogFormat::of(&vars(&[
                ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
                ("LOG_FORMAT", "local")
            ])),
            LogFormat::Json
        );
        assert_eq!(
            LogFormat::of(&vars(&[
                ("AWS_LAMBDA_LOG_FORMAT", "Text"),
                ("LOG_FORMAT", "local")
            ])),
            LogFormat::Local
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_local_line_is_the_level_and_the_fields_without_the_span() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .event_format(LocalLine),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("Lambda runtime invoke", requestId = "r-1");
            let _entered = span.enter();
            tracing::warn!(status = 404, "task not found");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "WARN task not found status=404\n");
    }
}

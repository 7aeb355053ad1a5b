//! Logging: JSON lines in Lambda (CloudWatch Logs Insights can query them), readable text on a
//! laptop. Secrets never reach a log because every secret is held in a `secrecy` type whose
//! `Debug` is redacted, and no code formats a token or credential into a message.

use std::str::FromStr;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

pub mod metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "text" | "pretty" | "plain" => Ok(LogFormat::Text),
            other => Err(format!("unknown log format {other:?}: use json or text")),
        }
    }
}

/// Installs the global subscriber once; later calls are ignored (tests call it repeatedly).
/// `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// As [`init`], with another filter when `RUST_LOG` is unset (the demo keeps its output quiet).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let _ = FORMAT.set(format);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_ansi(false)
            .without_time()
            .with_writer(std::io::stderr)
            .boxed(),
        // Colour only for a person at a terminal, never into a file or a pipe.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(
            layer
                .with_filter(filter)
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    may_log(meta.level(), meta.target())
                })),
        )
        .try_init();
}

/// Whatever `RUST_LOG` says, other crates' TRACE events are never written: at that level the
/// Lambda runtime logs every invocation's raw payload (a caller's `user_token`, a consent
/// `state`), and HTTP clients their traffic. This project's own events are written at every
/// level; none of them carries a secret.
fn may_log(level: &tracing::Level, target: &str) -> bool {
    *level != tracing::Level::TRACE || OWN_TARGETS.iter().any(|own| target.starts_with(own))
}

/// The module paths of this workspace's crates.
const OWN_TARGETS: [&str; 6] = [
    "defender_partner",
    "mint_token",
    "consent_callback",
    "fetch_incidents",
    "dp_operator",
    "defender_partner_demo",
];

/// The log format implied by the environment without reading the rest of the settings, for
/// logging a configuration error itself.
pub fn format_from_env() -> LogFormat {
    crate::config::log_format_or_default(crate::config::process_env)
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Whether logs go out as JSON lines (in Lambda), where CloudWatch reads metrics from them.
fn writes_json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_never_log_at_trace() {
        use tracing::Level;
        // lambda_runtime logs "raw JSON event received from Lambda" with the payload at TRACE.
        assert!(!may_log(
            &Level::TRACE,
            "lambda_runtime::layers::api_response"
        ));
        assert!(!may_log(&Level::TRACE, "hyper_util::client"));
        assert!(may_log(
            &Level::DEBUG,
            "lambda_runtime::layers::api_response"
        ));
        assert!(may_log(&Level::TRACE, "defender_partner::entra::cache"));
        assert!(may_log(&Level::TRACE, "mint_token"));
    }
}

//! Logging: JSON lines in Lambda (CloudWatch Logs Insights can query them), readable text on a
//! laptop. Secrets never reach a log because every secret is held in a `secrecy` type whose
//! `Debug` is redacted, and no code formats a token or credential into a message.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_ansi(false)
            .without_time()
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// The log format implied by the environment without reading the rest of the settings, for
/// logging a configuration error itself.
pub fn format_from_env() -> LogFormat {
    std::env::var(crate::config::ENV_LOG_FORMAT)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            LogFormat::Json
        } else {
            LogFormat::Text
        })
}

//! How logs are written: JSON in Lambda (CloudWatch reads its fields), text on a laptop.

use super::env::{ConfigError, Env};
use crate::telemetry::LogFormat;

pub const ENV_LOG_FORMAT: &str = "DP_LOG_FORMAT";

pub(super) fn read(env: &Env) -> Result<LogFormat, ConfigError> {
    env.parse_or(ENV_LOG_FORMAT, default_format(env))
}

/// The log format without failing on a bad value: for logging a configuration error itself,
/// before the rest of the settings are read.
pub fn log_format_or_default(lookup: impl Fn(&str) -> Option<String>) -> LogFormat {
    let env = Env::new(&lookup);
    read(&env).unwrap_or_else(|_| default_format(&env))
}

fn default_format(env: &Env) -> LogFormat {
    if env.in_lambda() {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::{ENV_LAMBDA_FUNCTION_NAME, with};
    use super::*;

    #[test]
    fn json_in_lambda_text_elsewhere_unless_set() {
        assert_eq!(with(&[], |env| read(&env)).unwrap(), LogFormat::Text);
        let lambda = [(ENV_LAMBDA_FUNCTION_NAME, "mint-token")];
        assert_eq!(with(&lambda, |env| read(&env)).unwrap(), LogFormat::Json);
        let chosen = [
            (ENV_LAMBDA_FUNCTION_NAME, "mint-token"),
            (ENV_LOG_FORMAT, "text"),
        ];
        assert_eq!(with(&chosen, |env| read(&env)).unwrap(), LogFormat::Text);
        let bad = [
            (ENV_LAMBDA_FUNCTION_NAME, "mint-token"),
            (ENV_LOG_FORMAT, "xml"),
        ];
        assert_eq!(
            with(&bad, |env| read(&env)).unwrap_err().variable,
            ENV_LOG_FORMAT
        );
        let map: std::collections::HashMap<&str, &str> = bad.into_iter().collect();
        assert_eq!(
            log_format_or_default(|name| map.get(name).map(|value| (*value).to_owned())),
            LogFormat::Json
        );
    }
}

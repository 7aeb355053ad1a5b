//! How app tokens are requested: which token endpoint, how long before expiry a cached token is
//! replaced, and how long one request (and one HTTP exchange) may take.

use std::str::FromStr;
use std::time::Duration;

use super::env::{ConfigError, Env};

pub const ENV_TOKEN_ENDPOINT: &str = "DP_TOKEN_ENDPOINT";
pub const ENV_TOKEN_REFRESH_AHEAD_SECONDS: &str = "DP_TOKEN_REFRESH_AHEAD_SECONDS";
pub const ENV_TOKEN_DEADLINE_SECONDS: &str = "DP_TOKEN_DEADLINE_SECONDS";
pub const ENV_HTTP_TIMEOUT_SECONDS: &str = "DP_HTTP_TIMEOUT_SECONDS";

/// Which token endpoint of Entra ID to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenEndpointVersion {
    /// `/oauth2/v2.0/token` with `scope={resource}/.default` (the default).
    V2,
    /// `/oauth2/token` with `resource={resource}`.
    V1,
}

impl FromStr for TokenEndpointVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v2" | "2" | "v2.0" => Ok(TokenEndpointVersion::V2),
            "v1" | "1" | "v1.0" => Ok(TokenEndpointVersion::V1),
            other => Err(format!("unknown token endpoint {other:?}: use v2 or v1")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub endpoint_version: TokenEndpointVersion,
    /// A cached token is replaced once it has less than this left.
    pub refresh_ahead: Duration,
    /// The most one token request may take, retries and throttling waits included.
    pub deadline: Duration,
    /// The most one HTTP exchange may take.
    pub http_timeout: Duration,
}

pub(super) fn read(env: &Env) -> Result<TokenSettings, ConfigError> {
    Ok(TokenSettings {
        endpoint_version: env.parse_or(ENV_TOKEN_ENDPOINT, TokenEndpointVersion::V2)?,
        refresh_ahead: env.seconds(ENV_TOKEN_REFRESH_AHEAD_SECONDS, 300, 0..=1800)?,
        deadline: env.seconds(ENV_TOKEN_DEADLINE_SECONDS, 20, 1..=900)?,
        http_timeout: env.seconds(ENV_HTTP_TIMEOUT_SECONDS, 10, 1..=300)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let defaults = with(&[], |env| read(&env)).unwrap();
        assert_eq!(defaults.endpoint_version, TokenEndpointVersion::V2);
        assert_eq!(defaults.refresh_ahead, Duration::from_secs(300));
        assert_eq!(defaults.deadline, Duration::from_secs(20));
        assert_eq!(defaults.http_timeout, Duration::from_secs(10));
        let chosen = with(&[(ENV_TOKEN_ENDPOINT, "v1.0")], |env| read(&env)).unwrap();
        assert_eq!(chosen.endpoint_version, TokenEndpointVersion::V1);
    }
}

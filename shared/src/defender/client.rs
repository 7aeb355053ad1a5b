//! One call to a Defender or Graph API: a slot from the limiter, a token from the cache, the
//! request, and the answer typed. A 401 is answered by one refresh and one retry; a 429 is
//! returned with Microsoft's wait (header, or the body's "Try again in N seconds").

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::limiter::Limiter;
use super::sources::SourceSpec;
use crate::api::DefenderApi;
use crate::config::ApiAccessSettings;
use crate::entra::errors::parse_retry_after;
use crate::entra::{AppTokenError, AppTokenProvider};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};
use secrecy::ExposeSecret;

/// When Microsoft throttles without saying for how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Token(#[from] AppTokenError),
    #[error("the API refused the token (HTTP 401) even after a refresh")]
    Unauthorized,
    #[error(
        "the API refused the call (HTTP 403 {0}): the tenant has not granted the permission, or the product is not enabled"
    )]
    Forbidden(String),
    #[error("throttled; retry after {} s", .0.as_secs())]
    Throttled(Duration),
    #[error("the API failed (HTTP {0})")]
    Unavailable(u16),
    #[error("the API refused the query (HTTP {status} {code}): {message}")]
    BadRequest {
        status: u16,
        code: String,
        message: String,
    },
    #[error("could not reach the API: {0}")]
    Transport(String),
    #[error("our own client limit leaves no call slot for {} s", .0.as_secs())]
    LocalLimit(Duration),
    /// 206 Partial Content: a provider behind Graph failed, the page is incomplete. `body` is
    /// what it holds (delivered, never taken as the whole page).
    #[error("the API answered only part of the page (HTTP 206): provider {provider} failed")]
    PartialContent {
        provider: String,
        body: bytes::Bytes,
    },
    /// Microsoft answered the route as retired (MC1220762: the Defender XDR and Defender for
    /// Endpoint APIs, 2027-02-01): retrying cannot help.
    #[error(
        "Microsoft retired this API (HTTP {status}: {message}); use the Graph source that succeeds it"
    )]
    Retired { status: u16, message: String },
}

impl CallerError for ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Token(error) => error.code(),
            ApiError::Unauthorized | ApiError::Forbidden(_) => ErrorCode::RolesMissing,
            ApiError::Throttled(_) | ApiError::LocalLimit(_) => ErrorCode::Throttled,
            ApiError::Unavailable(_) | ApiError::Transport(_) => ErrorCode::MicrosoftUnavailable,
            ApiError::BadRequest { .. } => ErrorCode::Internal,
            ApiError::PartialContent { .. } => ErrorCode::PartialContent,
            ApiError::Retired { .. } => ErrorCode::ApiRetired,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Throttled(wait) | ApiError::LocalLimit(wait) => Some(*wait),
            ApiError::Token(error) => error.retry_after(),
            _ => None,
        }
    }
}

pub struct DefenderClient {
    http: reqwest::Client,
    settings: ApiAccessSettings,
    tokens: Arc<AppTokenProvider>,
    limiter: Limiter,
}

impl DefenderClient {
    pub fn new(
        http: reqwest::Client,
        settings: ApiAccessSettings,
        tokens: Arc<AppTokenProvider>,
    ) -> DefenderClient {
        DefenderClient {
            http,
            settings,
            tokens,
            limiter: Limiter::new(),
        }
    }

    /// Whether the app still gets a usable token from `tenant` for `api` (cache first). Only a
    /// refusal of the app or of its credential counts as no; a token short of roles is a yes.
    pub async fn app_accepted_by(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
    ) -> Result<bool, AppTokenError> {
        match self
            .tokens
            .token(tenant, api, None, self.settings.access.required_roles(api))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) => match error.code() {
                ErrorCode::RolesMissing | ErrorCode::TokenTenantMismatch => Ok(true),
                ErrorCode::NotConsented
                | ErrorCode::CredentialInvalid
                | ErrorCode::CredentialExpired
                | ErrorCode::AppDisabled => Ok(false),
                _ => Err(error),
            },
        }
    }

    /// `{api base}/{path}` with `query` appended.
    pub fn url(&self, spec: &SourceSpec, path: &str, query: &[(&str, String)]) -> Url {
        let base = self
            .settings
            .endpoints
            .api_base(spec.api)
            .as_str()
            .trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/{}", path.trim_start_matches('/')))
            .expect("API bases are URLs");
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    /// GETs `url`, waiting at most `max_wait` for a call slot.
    pub async fn get(
        &self,
        tenant: &TenantId,
        spec: &SourceSpec,
        url: &Url,
        max_wait: Duration,
    ) -> Result<bytes::Bytes, ApiError> {
        let mut refreshed = false;
        loop {
            self.limiter
                .acquire(tenant, spec.api, max_wait)
                .await
                .map_err(ApiError::LocalLimit)?;
            let token = self
                .tokens
                .token(
                    tenant,
                    spec.api,
                    None,
                    self.settings.access.required_roles(spec.api),
                )
                .await?;
            let answer = crate::http::read(
                self.http
                    .get(url.clone())
                    .bearer_auth(token.token.expose_secret())
                    .header("Accept", "application/json")
                    .send()
                    .await,
            )
            .await
            .map_err(ApiError::Transport)?;
            let (status, header_wait, body) =
                (answer.status, answer.retry_after, answer.body.clone());
            if is_retirement(status, &body) {
                return Err(ApiError::Retired {
                    status,
                    message: error_message(&body),
                });
            }
            match status {
                200 => return Ok(body),
                206 => {
                    return Err(ApiError::PartialContent {
                        provider: provider_of(answer.warning.as_deref()),
                        body,
                    });
                }
                401 if !refreshed => {
                    // Expired or revoked between cache and call: one fresh token, one retry.
                    self.tokens.invalidate(tenant, spec.api).await;
                    refreshed = true;
                }
                401 => return Err(ApiError::Unauthorized),
                403 => return Err(ApiError::Forbidden(error_code(&body))),
                429 => {
                    let wait = header_wait
                        .or_else(|| wait_from_body(&body))
                        .unwrap_or(DEFAULT_RETRY_AFTER);
                    return Err(ApiError::Throttled(wait));
                }
                500..=599 => return Err(ApiError::Unavailable(status)),
                _ => {
                    return Err(ApiError::BadRequest {
                        status,
                        code: error_code(&body),
                        message: error_message(&body),
                    });
                }
            }
        }
    }
}

/// Microsoft's answer for a retired route: 410 Gone, or an error whose code or message names
/// the retirement (the retirement is gradual and its wording is not documented).
fn is_retirement(status: u16, body: &[u8]) -> bool {
    if status == 410 {
        return true;
    }
    if !(400..500).contains(&status) || status == 429 {
        return false;
    }
    let text = format!("{} {}", error_code(body), error_message(body)).to_ascii_lowercase();
    [
        "retired",
        "retirement",
        "mc1220762",
        "deprecated api",
        "no longer supported",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The provider a `Warning: 199 - "{vendor}/{provider}/{status}/{latency}"` names.
fn provider_of(warning: Option<&str>) -> String {
    let Some(warning) = warning else {
        return "unknown".to_owned();
    };
    let quoted = warning
        .split('"')
        .nth(1)
        .unwrap_or(warning)
        .trim()
        .to_owned();
    let parts: Vec<&str> = quoted.split('/').collect();
    let provider = match parts.as_slice() {
        [_, provider, status, ..] => format!("{provider} ({status})"),
        _ => quoted,
    };
    provider
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect()
}

fn error_field(body: &[u8], field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")?
        .get(field)?
        .as_str()
        .map(|text| text.chars().take(300).collect())
}

fn error_code(body: &[u8]) -> String {
    error_field(body, "code").unwrap_or_default()
}

fn error_message(body: &[u8]) -> String {
    error_field(body, "message").unwrap_or_default()
}

/// M365 Defender states the wait in the message: "Rate limit is exceeded. Try again in 37 seconds."
fn wait_from_body(body: &[u8]) -> Option<Duration> {
    let message = error_message(body).to_ascii_lowercase();
    let after = message
        .find("try again in ")
        .map(|at| &message[at + "try again in ".len()..])
        .or_else(|| {
            message
                .find("retry after ")
                .map(|at| &message[at + "retry after ".len()..])
        })?;
    let number: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    parse_retry_after(&number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wait_from_the_documented_bodies() {
        let fixtures: serde_json::Value =
            serde_json::from_slice(include_bytes!("../../tests/fixtures/errors.json")).unwrap();
        let body = fixtures["m365d"]["429_throttled"]["body"].to_string();
        assert_eq!(
            wait_from_body(body.as_bytes()),
            Some(Duration::from_secs(37))
        );
        let graph = fixtures["graph"]["429_throttled_documented"]["body"].to_string();
        assert_eq!(wait_from_body(graph.as_bytes()), None);
        assert_eq!(error_code(graph.as_bytes()), "TooManyRequests");
        assert_eq!(wait_from_body(b"not json"), None);
    }

    #[test]
    fn a_retired_route_is_told_from_its_answer() {
        assert!(is_retirement(410, b""));
        assert!(is_retirement(
            404,
            br#"{"error":{"code":"NotFound","message":"This API has been retired (MC1220762)"}}"#
        ));
        assert!(is_retirement(
            400,
            br#"{"error":{"code":"ApiRetired","message":"x"}}"#
        ));
        assert!(!is_retirement(
            404,
            br#"{"error":{"code":"NotFound","message":"no such incident"}}"#
        ));
        assert!(!is_retirement(429, br#"{"error":{"message":"retired"}}"#));
        assert!(!is_retirement(500, br#"{"error":{"message":"retired"}}"#));
    }

    #[test]
    fn the_failed_provider_is_read_from_the_warning() {
        assert_eq!(
            provider_of(Some(
                r#"199 - "Microsoft/MicrosoftDefenderForIdentity/503/1200""#
            )),
            "MicrosoftDefenderForIdentity (503)"
        );
        assert_eq!(provider_of(None), "unknown");
        assert_eq!(provider_of(Some("199 - odd")), "199 - odd");
    }
}

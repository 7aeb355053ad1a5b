//! Entra ID error answers (`error`, `error_description` starting with `AADSTSnnnn:`,
//! `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`).
//!
//! Descriptions are built only from ids, names and URLs the caller already knows: never from a
//! secret or an assertion, which the constructors do not even receive.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

const FIC_DOCS: &str = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

/// One AADSTS error, ready to be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    pub status: StatusCode,
    /// The OAuth `error` value clients branch on.
    pub error: String,
    /// The AADSTS number.
    pub code: u32,
    /// The human sentence after `AADSTSnnnn: `.
    pub message: String,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
    /// Echo of the caller's `client-request-id`, as Entra does; random otherwise.
    pub correlation_id: Option<String>,
    /// Conditional Access claims challenge (`interaction_required`), sent as `claims`.
    pub claims: Option<String>,
}

impl EntraError {
    pub fn new(status: StatusCode, error: &str, code: u32, message: impl Into<String>) -> Self {
        EntraError {
            status,
            error: error.to_owned(),
            code,
            message: message.into(),
            retry_after: None,
            correlation_id: None,
            claims: None,
        }
    }

    pub fn with_correlation(mut self, headers: &HeaderMap) -> Self {
        self.correlation_id = correlation_id(headers);
        self
    }

    /// The JSON body, with fresh trace id and timestamp.
    pub fn body(&self) -> serde_json::Value {
        let trace_id = Uuid::new_v4().to_string();
        let correlation_id = self
            .correlation_id
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let mut body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        if let Some(claims) = &self.claims {
            body["claims"] = json!(claims);
            body["suberror"] = json!("basic_action");
        }
        body
    }

    // --- request shape -------------------------------------------------------------------

    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub fn unsupported_grant_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type. This endpoint accepts 'client_credentials', 'authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:jwt-bearer' and 'urn:ietf:params:oauth:grant-type:device_code'.",
        )
    }

    pub fn post_required(method: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST requests. Received a {} request.",
                method.chars().take(16).collect::<String>()
            ),
        )
    }

    /// A v2 request that still carries the v1 `resource` parameter: a common client bug.
    pub fn resource_parameter_on_v2() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            901002,
            "The 'resource' request parameter is not supported.",
        )
    }

    pub fn invalid_scope(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
                clip(scope)
            ),
        )
    }

    pub fn scope_with_several_resources(scope: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            700022,
            format!(
                "Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {} is not valid.",
                clip(scope)
            ),
        )
    }

    // --- tenant ---------------------------------------------------------------------------

    pub fn malformed_tenant(segment: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900023,
            format!(
                "Specified tenant identifier '{}' is neither a valid DNS name, nor a valid external domain.",
                clip(segment)
            ),
        )
    }

    pub fn multi_tenant_endpoint() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9001023,
            "The grant type is not supported over the /common, /organizations or /consumers endpoints. Please use the tenant-specific endpoint.",
        )
    }

    pub fn tenant_not_found(segment: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
                clip(segment)
            ),
        )
    }

    // --- application ----------------------------------------------------------------------

    pub fn app_not_in_tenant(client_id: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                clip(client_id),
                clip(tenant)
            ),
        )
    }

    pub fn app_disabled(client_id: &str, display_name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            7000112,
            format!("Application '{client_id}'({display_name}) is disabled."),
        )
    }

    pub fn resource_not_found(resource: &str, tenant: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                clip(resource),
                clip(tenant)
            ),
        )
    }

    // --- credentials ----------------------------------------------------------------------

    pub fn missing_credential() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    }

    pub fn two_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain exactly one of the following parameters: 'client_assertion' or 'client_secret'.",
        )
    }

    pub fn unsupported_assertion_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_assertion_type' with the value 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.",
        )
    }

    pub fn wrong_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )
    }

    pub fn expired_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app, or consider using certificate credentials for added security."
            ),
        )
    }

    /// `reason` must be the emulator's own words (or public data such as a thumbprint).
    pub fn invalid_assertion(reason: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700027,
            format!("Client assertion failed signature validation. [Reason - {reason}]"),
        )
    }

    pub fn assertion_out_of_time_range(reason: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700024,
            format!("Client assertion is not within its valid time range. {reason}"),
        )
    }

    // --- federated credentials (workload identity federation) ----------------------------
    // Issuer, subject and audience of an assertion are public facts about the caller's
    // identity, quoted as Entra quotes them; the assertion itself never is.

    /// No federated credential of the app has anything in common with the assertion. Entra
    /// answers this one `invalid_request` (400), unlike the more specific codes below.
    pub fn no_federated_credential_matches(issuer: &str, subject: &str, audience: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            70021,
            format!(
                "No matching federated identity record found for presented assertion. \
                 Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'. {FIC_DOCS}",
                clip(issuer),
                clip(subject),
                clip(audience)
            ),
        )
    }

    pub fn federated_issuer_not_matched(issuer: &str) -> Self {
        Self::federated_mismatch(700211, "issuer", issuer, "")
    }

    pub fn federated_audience_not_matched(audience: &str) -> Self {
        Self::federated_mismatch(700212, "audience", audience, "")
    }

    pub fn federated_subject_not_matched(subject: &str) -> Self {
        Self::federated_mismatch(700213, "subject", subject, "")
    }

    /// The subject matches a credential's only when case is ignored: Entra compares exactly.
    pub fn federated_subject_case_mismatch(subject: &str) -> Self {
        Self::federated_mismatch(
            7002138,
            "subject",
            subject,
            " Please note that the matching is done using a case-sensitive comparison.",
        )
    }

    fn federated_mismatch(code: u32, part: &str, value: &str, note: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            format!(
                "No matching federated identity record found for presented assertion {part} \
                 '{}'.{note} Check your federated identity credential Subject, Audience and \
                 Issuer against the presented assertion. {FIC_DOCS}",
                clip(value)
            ),
        )
    }

    /// The external issuer's discovery document or keys could not be read.
    pub fn external_oidc_failed(issuer: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            50166,
            format!(
                "Request to External OIDC endpoint failed. Issuer: '{}'.",
                clip(issuer)
            ),
        )
    }

    // --- delegated flows ------------------------------------------------------------------

    /// `invalid_grant` (400) with an AADSTS code: codes, refresh tokens, assertions, consent.
    pub fn invalid_grant(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", code, message)
    }

    /// A device-code polling answer (`authorization_pending`, `slow_down`, ...): 400.
    pub fn device_flow(error: &str, code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, code, message)
    }

    /// MFA or Conditional Access required: `interaction_required` with a claims challenge that
    /// the client app must send back unchanged when it signs the user in again.
    pub fn interaction_required(code: u32, message: impl Into<String>, claims: String) -> Self {
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "interaction_required",
            code,
            message,
        );
        error.claims = Some(claims);
        error
    }

    // --- injected faults ------------------------------------------------------------------

    /// The transient answer for an injected status: throttling for 429, a retryable server
    /// error for 5xx.
    pub fn transient(status: StatusCode) -> Self {
        if status == StatusCode::TOO_MANY_REQUESTS {
            Self::new(
                status,
                "temporarily_unavailable",
                90055,
                "TenantThrottlingThreshold - There are too many incoming requests. Retry after the interval given in the Retry-After header.",
            )
        } else if status.is_server_error() {
            let error = if status == StatusCode::INTERNAL_SERVER_ERROR {
                "server_error"
            } else {
                "temporarily_unavailable"
            };
            Self::new(
                status,
                error,
                90024,
                "RequestBudgetExceededError - A transient error has occurred. Try again.",
            )
        } else {
            Self::new(
                status,
                "invalid_request",
                90024,
                "An injected error occurred (emulator fault).",
            )
        }
    }
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        // Entra never lets an error be cached either.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The caller's `client-request-id` when it is a GUID (anything else is not echoed).
pub(crate) fn correlation_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("client-request-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Uuid::parse_str(value).ok())
        .map(|id| id.to_string())
}

/// Caller-supplied text in a description is cut short: it is there to help, not to be echoed
/// back at length.
pub(crate) fn clip(text: &str) -> String {
    const LIMIT: usize = 256;
    if text.chars().count() <= LIMIT {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(LIMIT).collect();
        clipped.push('…');
        clipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_entra_shape() {
        let body = EntraError::wrong_secret("11111111-1111-4111-8111-111111111111").body();
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"], json!([7000215]));
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with("AADSTS7000215: Invalid client secret provided."));
        assert!(description.contains(body["trace_id"].as_str().unwrap()));
        assert!(description.contains(body["correlation_id"].as_str().unwrap()));
        let timestamp = body["timestamp"].as_str().unwrap();
        assert!(chrono::NaiveDateTime::parse_from_str(timestamp, "%Y-%m-%d %H:%M:%SZ").is_ok());
        assert!(Uuid::parse_str(body["trace_id"].as_str().unwrap()).is_ok());
        assert_eq!(
            body["error_uri"],
            "https://login.microsoftonline.com/error?code=7000215"
        );
        let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "correlation_id",
                "error",
                "error_codes",
                "error_description",
                "error_uri",
                "timestamp",
                "trace_id"
            ]
        );
    }

    #[test]
    fn echoes_a_guid_client_request_id_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "client-request-id",
            HeaderValue::from_static("AAAAAAAA-0000-4000-8000-000000000000"),
        );
        let error = EntraError::missing_credential().with_correlation(&headers);
        assert_eq!(
            error.body()["correlation_id"],
            "aaaaaaaa-0000-4000-8000-000000000000"
        );
        headers.insert("client-request-id", HeaderValue::from_static("<script>"));
        assert_eq!(correlation_id(&headers), None);
    }

    #[test]
    fn transient_errors_match_the_status() {
        let throttled = EntraError::transient(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            (throttled.error.as_str(), throttled.code),
            ("temporarily_unavailable", 90055)
        );
        let unavailable = EntraError::transient(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (unavailable.error.as_str(), unavailable.code),
            ("temporarily_unavailable", 90024)
        );
        let internal = EntraError::transient(StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(internal.error, "server_error");
    }

    #[test]
    fn long_caller_text_is_clipped() {
        let scope = "x".repeat(10_000);
        let message = EntraError::invalid_scope(&scope).message;
        assert!(message.len() < 1_000);
    }
}

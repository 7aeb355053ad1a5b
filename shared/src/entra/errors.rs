//! Entra ID's answers, typed. We branch on `error` and `error_codes`, never on the description,
//! and every message tells the operator what to do. Messages carry Microsoft's trace and
//! correlation ids (safe, and what Microsoft support asks for), never a credential.

use std::time::Duration;

use serde::Deserialize;

use crate::ErrorCode;

/// The JSON body of an Entra ID error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EntraErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_codes: Vec<i64>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The Conditional Access challenge of an `interaction_required` answer.
    #[serde(default)]
    pub claims: Option<String>,
}

/// Where to look when Microsoft support or the logs are needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    pub status: u16,
    pub codes: Vec<i64>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.codes.is_empty() {
            let codes: Vec<String> = self
                .codes
                .iter()
                .map(|code| format!("AADSTS{code}"))
                .collect();
            write!(f, ", {}", codes.join("/"))?;
        }
        if let Some(trace_id) = &self.trace_id {
            write!(f, ", trace id {trace_id}")?;
        }
        if let Some(correlation_id) = &self.correlation_id {
            write!(f, ", correlation id {correlation_id}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntraError {
    #[error(
        "the app is not consented in tenant {tenant} (or the client id is wrong): send the customer's administrator the consent link, then retry ({trace})"
    )]
    NotConsented { tenant: String, trace: Trace },
    #[error(
        "tenant {tenant} has no service principal for the requested API (it may not use that Defender product): check the customer's licences and that the API is the right one ({trace})"
    )]
    ResourceNotInTenant { tenant: String, trace: Trace },
    #[error(
        "tenant {tenant} has not enabled the service the app needs: the customer must turn on the Defender product first ({trace})"
    )]
    ServiceNotEnabled { tenant: String, trace: Trace },
    #[error(
        "the client secret was refused: store the secret's VALUE (not its id) in the app credential secret, and check the client id ({trace})"
    )]
    CredentialInvalid { trace: Trace },
    #[error(
        "the client secret has expired: create a new secret on the app registration and update the app credential secret ({trace})"
    )]
    CredentialExpired { trace: Trace },
    #[error(
        "the certificate assertion was refused: upload the certificate to the app registration and check that the stored key matches it ({trace})"
    )]
    AssertionInvalid { trace: Trace },
    #[error(
        "the client assertion was outside its valid time (expired or not yet valid): check the clock, and the assertion lifetime ({trace})"
    )]
    AssertionExpired { trace: Trace },
    #[error(
        "Entra ID does not know tenant {tenant} in this cloud: check the tenant id, or the DP_CLOUD setting ({trace})"
    )]
    TenantNotFound { tenant: String, trace: Trace },
    #[error("Entra ID refused tenant identifier {tenant} as malformed ({trace})")]
    TenantMalformed { tenant: String, trace: Trace },
    #[error(
        "tenant {tenant} lives in another national cloud: set DP_CLOUD for that cloud and deploy a separate stack for it ({trace})"
    )]
    WrongCloud { tenant: String, trace: Trace },
    #[error(
        "the application is disabled (by the partner or in the customer tenant): re-enable it before minting tokens ({trace})"
    )]
    AppDisabled { trace: Trace },
    #[error("Entra ID is throttling token requests; retry after {} s ({trace})", retry_after.map_or(0, |d| d.as_secs()))]
    Throttled {
        retry_after: Option<Duration>,
        trace: Trace,
    },
    #[error("Entra ID is unavailable (transient); retry later ({trace})")]
    Unavailable {
        retry_after: Option<Duration>,
        trace: Trace,
    },
    #[error(
        "Entra ID refused the user's token as an on-behalf-of assertion (signature, audience or tenant wrong): the calling app must get a new token for this app from Entra ID ({trace})"
    )]
    UserAssertionInvalid { trace: Trace },
    #[error(
        "the user's token expired before it could be exchanged: the calling app must get a fresh token for the user and retry ({trace})"
    )]
    UserAssertionExpired { trace: Trace },
    #[error(
        "the user (or tenant {tenant}) has not consented to the delegated permissions this API needs: have the user sign in with consent, or the customer's administrator grant admin consent for the delegated permissions ({trace})"
    )]
    ConsentRequired { tenant: String, trace: Trace },
    #[error(
        "tenant {tenant} requires the user to interact again (multi-factor authentication or Conditional Access): pass the claims challenge back to the calling app so it signs the user in again with it ({trace})"
    )]
    InteractionRequired {
        tenant: String,
        /// Microsoft's `claims` challenge, exactly as received (not secret, never altered).
        /// Boxed to keep the error small.
        claims: Option<Box<String>>,
        trace: Trace,
    },
    #[error("Entra ID refused the request with {error:?} ({trace})")]
    Rejected { error: String, trace: Trace },
    #[error("could not reach Entra ID: {0}")]
    Transport(String),
    #[error("Entra ID answered something that is not a token response: {0}")]
    MalformedResponse(String),
    #[error("no token within the deadline of {} s: Entra ID kept failing or throttling", .0.as_secs())]
    DeadlineExceeded(Duration),
}

impl EntraError {
    /// Types an error answer of the token endpoint.
    pub fn from_response(
        tenant: &str,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> EntraError {
        let parsed: EntraErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let trace = Trace {
            status,
            codes: parsed.error_codes.clone(),
            trace_id: parsed.trace_id.clone(),
            correlation_id: parsed.correlation_id.clone(),
        };
        let has = |code: i64| parsed.error_codes.contains(&code);
        let tenant = tenant.to_owned();

        if status == 429 || has(50196) || has(90055) {
            return EntraError::Throttled { retry_after, trace };
        }
        if status >= 500 || has(90024) || parsed.error == "temporarily_unavailable" {
            return EntraError::Unavailable { retry_after, trace };
        }
        if has(7000222) {
            return EntraError::CredentialExpired { trace };
        }
        if has(7000215) {
            return EntraError::CredentialInvalid { trace };
        }
        if has(700024) {
            return EntraError::AssertionExpired { trace };
        }
        if has(700027) {
            return EntraError::AssertionInvalid { trace };
        }
        if has(50076) || has(50079) || parsed.error == "interaction_required" {
            return EntraError::InteractionRequired {
                tenant,
                claims: parsed.claims.clone().map(Box::new),
                trace,
            };
        }
        if has(65001) || parsed.error == "consent_required" {
            return EntraError::ConsentRequired { tenant, trace };
        }
        if has(500133) {
            return EntraError::UserAssertionExpired { trace };
        }
        if has(50013) {
            return EntraError::UserAssertionInvalid { trace };
        }
        if has(7000112) || has(70001) {
            return EntraError::AppDisabled { trace };
        }
        if has(700016) {
            return EntraError::NotConsented { tenant, trace };
        }
        if has(500011) {
            return EntraError::ResourceNotInTenant { tenant, trace };
        }
        if has(650052) {
            return EntraError::ServiceNotEnabled { tenant, trace };
        }
        if has(90038) {
            return EntraError::WrongCloud { tenant, trace };
        }
        if has(90002) {
            return EntraError::TenantNotFound { tenant, trace };
        }
        if has(900023) {
            return EntraError::TenantMalformed { tenant, trace };
        }
        match parsed.error.as_str() {
            "invalid_client" => EntraError::CredentialInvalid { trace },
            "unauthorized_client" => EntraError::NotConsented { tenant, trace },
            "invalid_tenant" => EntraError::TenantNotFound { tenant, trace },
            "" => EntraError::Rejected {
                error: "unknown".into(),
                trace,
            },
            other => EntraError::Rejected {
                error: other.chars().take(64).collect(),
                trace,
            },
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            EntraError::NotConsented { .. } => ErrorCode::NotConsented,
            EntraError::ResourceNotInTenant { .. } | EntraError::ServiceNotEnabled { .. } => {
                ErrorCode::ApiNotEnabled
            }
            EntraError::CredentialInvalid { .. } | EntraError::AssertionInvalid { .. } => {
                ErrorCode::CredentialInvalid
            }
            EntraError::CredentialExpired { .. } | EntraError::AssertionExpired { .. } => {
                ErrorCode::CredentialExpired
            }
            EntraError::TenantNotFound { .. } => ErrorCode::TenantUnknown,
            EntraError::TenantMalformed { .. } => ErrorCode::InvalidTenantId,
            EntraError::WrongCloud { .. } => ErrorCode::WrongCloud,
            EntraError::AppDisabled { .. } => ErrorCode::AppDisabled,
            EntraError::Throttled { .. } => ErrorCode::Throttled,
            EntraError::Unavailable { .. }
            | EntraError::Transport(_)
            | EntraError::MalformedResponse(_)
            | EntraError::DeadlineExceeded(_) => ErrorCode::MicrosoftUnavailable,
            EntraError::UserAssertionInvalid { .. } => ErrorCode::AssertionInvalid,
            EntraError::UserAssertionExpired { .. } => ErrorCode::AssertionExpired,
            EntraError::ConsentRequired { .. } => ErrorCode::UserConsentMissing,
            EntraError::InteractionRequired { .. } => ErrorCode::InteractionRequired,
            EntraError::Rejected { .. } => ErrorCode::Internal,
        }
    }

    /// Worth trying again with the same request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EntraError::Throttled { .. }
                | EntraError::Unavailable { .. }
                | EntraError::Transport(_)
        )
    }

    /// What Microsoft asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EntraError::Throttled { retry_after, .. }
            | EntraError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Microsoft's `claims` challenge of an `interaction_required` answer, unchanged: the
    /// calling app must hand it to its sign-in so the user can satisfy it.
    pub fn claims_challenge(&self) -> Option<&str> {
        match self {
            EntraError::InteractionRequired { claims, .. } => claims.as_deref().map(String::as_str),
            _ => None,
        }
    }

    /// The credential itself was refused: a rotated secret may already be in Secrets Manager.
    pub fn is_credential_rejection(&self) -> bool {
        matches!(
            self,
            EntraError::CredentialInvalid { .. }
                | EntraError::CredentialExpired { .. }
                | EntraError::AssertionInvalid { .. }
        )
    }
}

pub use crate::http::parse_retry_after;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn typed(status: u16, error: &str, codes: &[i64]) -> EntraError {
        let body = json!({
            "error": error,
            "error_description": "AADSTS: some text that must not matter",
            "error_codes": codes,
            "trace_id": "trace-1",
            "correlation_id": "corr-1",
        });
        EntraError::from_response("tenant-x", status, None, body.to_string().as_bytes())
    }

    #[test]
    fn every_reference_code_maps_to_its_type() {
        let cases: &[(u16, &str, i64, ErrorCode)] = &[
            (400, "unauthorized_client", 700016, ErrorCode::NotConsented),
            (400, "invalid_resource", 500011, ErrorCode::ApiNotEnabled),
            (400, "invalid_request", 650052, ErrorCode::ApiNotEnabled),
            (401, "invalid_client", 7000215, ErrorCode::CredentialInvalid),
            (401, "invalid_client", 7000222, ErrorCode::CredentialExpired),
            (401, "invalid_client", 700027, ErrorCode::CredentialInvalid),
            (401, "invalid_client", 700024, ErrorCode::CredentialExpired),
            (400, "invalid_tenant", 90002, ErrorCode::TenantUnknown),
            (400, "invalid_request", 900023, ErrorCode::InvalidTenantId),
            (400, "invalid_request", 90038, ErrorCode::WrongCloud),
            (400, "unauthorized_client", 7000112, ErrorCode::AppDisabled),
            (400, "unauthorized_client", 70001, ErrorCode::AppDisabled),
            (400, "invalid_request", 50196, ErrorCode::Throttled),
            (400, "invalid_request", 90055, ErrorCode::Throttled),
            (
                503,
                "temporarily_unavailable",
                90024,
                ErrorCode::MicrosoftUnavailable,
            ),
        ];
        for (status, error, code, expected) in cases {
            let typed = typed(*status, error, &[*code]);
            assert_eq!(typed.code(), *expected, "AADSTS{code}");
            let message = typed.to_string();
            assert!(message.contains(&format!("AADSTS{code}")), "{message}");
            assert!(message.contains("trace-1"), "{message}");
            assert!(
                !message.contains("some text"),
                "description leaked: {message}"
            );
        }
    }

    #[test]
    fn throttling_and_outages_are_retryable_with_their_wait() {
        let throttled = EntraError::from_response("t", 429, Some(Duration::from_secs(7)), b"");
        assert!(throttled.is_retryable());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(throttled.code(), ErrorCode::Throttled);
        let outage = EntraError::from_response("t", 502, None, b"<html>bad gateway</html>");
        assert!(outage.is_retryable());
        assert_eq!(outage.code(), ErrorCode::MicrosoftUnavailable);
        assert!(!typed(401, "invalid_client", &[7000215]).is_retryable());
    }

    #[test]
    fn credential_rejections_are_recognised() {
        assert!(typed(401, "invalid_client", &[7000215]).is_credential_rejection());
        assert!(typed(401, "invalid_client", &[7000222]).is_credential_rejection());
        assert!(typed(401, "invalid_client", &[]).is_credential_rejection());
        assert!(!typed(400, "unauthorized_client", &[700016]).is_credential_rejection());
    }

    #[test]
    fn on_behalf_of_errors_map_to_their_codes() {
        let cases: &[(u16, &str, i64, ErrorCode)] = &[
            (400, "invalid_grant", 50013, ErrorCode::AssertionInvalid),
            (400, "invalid_grant", 500133, ErrorCode::AssertionExpired),
            (400, "invalid_grant", 65001, ErrorCode::UserConsentMissing),
            (
                400,
                "interaction_required",
                50076,
                ErrorCode::InteractionRequired,
            ),
            (
                400,
                "interaction_required",
                50079,
                ErrorCode::InteractionRequired,
            ),
        ];
        for (status, error, code, expected) in cases {
            let typed = typed(*status, error, &[*code]);
            assert_eq!(typed.code(), *expected, "AADSTS{code}");
            assert!(!typed.is_retryable() && !typed.is_credential_rejection());
            let message = typed.to_string();
            assert!(message.contains(&format!("AADSTS{code}")), "{message}");
            assert!(!message.contains("some text"), "{message}");
        }
    }

    #[test]
    fn the_claims_challenge_is_kept_unchanged() {
        let challenge = r#"{"access_token":{"capolids":{"essential":true,"values":["c0ffee"]}}}"#;
        let body = json!({
            "error": "interaction_required",
            "error_description": "AADSTS50076: you must use MFA",
            "error_codes": [50076],
            "suberror": "basic_action",
            "claims": challenge,
        });
        let required =
            EntraError::from_response("tenant-x", 400, None, body.to_string().as_bytes());
        assert_eq!(required.claims_challenge(), Some(challenge));
        assert!(required.to_string().contains("claims challenge"));
        // Without a claims field the error is still typed.
        let bare = typed_without_claims();
        assert_eq!(bare.code(), ErrorCode::InteractionRequired);
        assert_eq!(bare.claims_challenge(), None);
        assert_eq!(
            typed(400, "invalid_client", &[7000215]).claims_challenge(),
            None
        );
    }

    fn typed_without_claims() -> EntraError {
        typed(400, "interaction_required", &[])
    }

    #[test]
    fn unknown_errors_keep_their_code_without_the_description() {
        let typed = typed(400, "weird_new_error", &[123]);
        assert_eq!(typed.code(), ErrorCode::Internal);
        assert!(typed.to_string().contains("weird_new_error"));
    }
}

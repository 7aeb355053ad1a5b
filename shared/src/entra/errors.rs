//! Entra ID's answers, typed. We branch on `error` and `error_codes`, never on the description,
//! and every message tells the operator what to do. Messages carry Microsoft's trace and
//! correlation ids (safe, and what Microsoft support asks for), never a credential.

use std::time::Duration;

use serde::Deserialize;

use super::federated::{FederationContext, FederationError};
use crate::{CallerError, ErrorCode};

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
    #[error("the app's federated credential could not be used: {0}")]
    Federation(FederationError),
    #[error(
        "no federated identity credential on the app matches the AWS token (issuer {}, subject {}, audience {}): add one on the app registration; `dp-operator federation` prints the values and the body for `az ad app federated-credential create` ({trace})",
        federation.issuer_text(), federation.subject_text(), federation.audience_text()
    )]
    FederatedCredentialMissing {
        federation: Box<FederationContext>,
        trace: Trace,
    },
    #[error(
        "the federated credential's issuer does not match the AWS token's issuer {}: set the FIC's issuer to the account's issuer URL exactly as `aws iam get-outbound-web-identity-federation-info` prints it ({trace})",
        federation.issuer_text()
    )]
    FederatedIssuerMismatch {
        federation: Box<FederationContext>,
        trace: Trace,
    },
    #[error(
        "the federated credential's audiences do not include the AWS token's audience {}: add it to the FIC's audiences, or set DP_FEDERATION_AUDIENCE (and the role's sts:IdentityTokenAudience condition) to the FIC's audience ({trace})",
        federation.audience_text()
    )]
    FederatedAudienceMismatch {
        federation: Box<FederationContext>,
        trace: Trace,
    },
    #[error(
        "the federated credential's subject does not match the AWS token's subject {}: set the FIC's subject to the ARN of the role the function runs as (the stack's *RoleArn outputs), compared case-sensitively ({trace})",
        federation.subject_text()
    )]
    FederatedSubjectMismatch {
        federation: Box<FederationContext>,
        trace: Trace,
    },
    #[error(
        "the federated credential's subject matches the AWS token's subject {} only when case is ignored: Entra ID compares it case-sensitively, copy the role ARN with its exact case into the FIC ({trace})",
        federation.subject_text()
    )]
    FederatedSubjectCaseMismatch {
        federation: Box<FederationContext>,
        trace: Trace,
    },
    #[error(
        "Entra ID found the AWS token outside its valid time, even after a fresh one was fetched: check the function's clock and DP_FEDERATION_DURATION_SECONDS (60-3600 s) ({trace})"
    )]
    ClientAssertionExpired { trace: Trace },
    #[error(
        "Entra ID refused the AWS token as client assertion (signature or format; issuer {}): check that the FIC's issuer serves its keys at /.well-known/jwks.json and that the token is signed RS256 ({trace})",
        federation.issuer_text()
    )]
    FederatedAssertionRefused {
        federation: Box<FederationContext>,
        trace: Trace,
    },
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
        // Federated identity credential mismatches: only an external assertion (the AWS token)
        // meets these, and they are app-wide configuration errors, never a tenant's consent.
        let federation = || Box::<FederationContext>::default();
        if has(7002138) {
            return EntraError::FederatedSubjectCaseMismatch {
                federation: federation(),
                trace,
            };
        }
        if has(700211) {
            return EntraError::FederatedIssuerMismatch {
                federation: federation(),
                trace,
            };
        }
        if has(700212) {
            return EntraError::FederatedAudienceMismatch {
                federation: federation(),
                trace,
            };
        }
        if has(700213) {
            return EntraError::FederatedSubjectMismatch {
                federation: federation(),
                trace,
            };
        }
        if has(70021) {
            return EntraError::FederatedCredentialMissing {
                federation: federation(),
                trace,
            };
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

    /// Worth trying again with the same request.
    pub fn is_retryable(&self) -> bool {
        match self {
            EntraError::Throttled { .. }
            | EntraError::Unavailable { .. }
            | EntraError::Transport(_) => true,
            EntraError::Federation(error) => error.is_transient(),
            _ => false,
        }
    }

    /// Types an answer to a request whose client assertion was the AWS token: what Entra ID
    /// says about "the credential" is then about the federated credential, and its messages get
    /// the issuer, subject and audience the token presented.
    pub fn for_federated_assertion(self, presented: FederationContext) -> EntraError {
        let presented = Box::new(presented);
        match self {
            EntraError::FederatedCredentialMissing { trace, .. } => {
                EntraError::FederatedCredentialMissing {
                    federation: presented,
                    trace,
                }
            }
            EntraError::FederatedIssuerMismatch { trace, .. } => {
                EntraError::FederatedIssuerMismatch {
                    federation: presented,
                    trace,
                }
            }
            EntraError::FederatedAudienceMismatch { trace, .. } => {
                EntraError::FederatedAudienceMismatch {
                    federation: presented,
                    trace,
                }
            }
            EntraError::FederatedSubjectMismatch { trace, .. } => {
                EntraError::FederatedSubjectMismatch {
                    federation: presented,
                    trace,
                }
            }
            EntraError::FederatedSubjectCaseMismatch { trace, .. } => {
                EntraError::FederatedSubjectCaseMismatch {
                    federation: presented,
                    trace,
                }
            }
            EntraError::AssertionExpired { trace } => EntraError::ClientAssertionExpired { trace },
            EntraError::CredentialInvalid { trace } | EntraError::AssertionInvalid { trace } => {
                EntraError::FederatedAssertionRefused {
                    federation: presented,
                    trace,
                }
            }
            other => other,
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

impl CallerError for EntraError {
    fn code(&self) -> ErrorCode {
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
            EntraError::Federation(error) => error.code(),
            EntraError::FederatedCredentialMissing { .. } => ErrorCode::FederatedCredentialMissing,
            EntraError::FederatedIssuerMismatch { .. } => ErrorCode::FederatedIssuerMismatch,
            EntraError::FederatedAudienceMismatch { .. } => ErrorCode::FederatedAudienceMismatch,
            EntraError::FederatedSubjectMismatch { .. } => ErrorCode::FederatedSubjectMismatch,
            EntraError::FederatedSubjectCaseMismatch { .. } => {
                ErrorCode::FederatedSubjectCaseMismatch
            }
            EntraError::ClientAssertionExpired { .. } => ErrorCode::ClientAssertionExpired,
            EntraError::FederatedAssertionRefused { .. } => ErrorCode::FederatedAssertionRefused,
        }
    }

    /// What Microsoft asked us to wait, if it said.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            EntraError::Throttled { retry_after, .. }
            | EntraError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Microsoft's `claims` challenge of an `interaction_required` answer, unchanged: the
    /// calling app must hand it to its sign-in so the user can satisfy it.
    fn claims_challenge(&self) -> Option<&str> {
        match self {
            EntraError::InteractionRequired { claims, .. } => claims.as_deref().map(String::as_str),
            _ => None,
        }
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

    fn presented() -> FederationContext {
        FederationContext {
            issuer: Some("https://abc.tokens.sts.global.api.aws".into()),
            subject: Some("arn:aws:iam::123456789012:role/MintToken".into()),
            audience: Some("api://AzureADTokenExchange".into()),
        }
    }

    #[test]
    fn federated_credential_errors_map_to_their_codes_and_name_the_value_to_compare() {
        let cases: &[(i64, ErrorCode, &str, &str)] = &[
            (
                70021,
                ErrorCode::FederatedCredentialMissing,
                "arn:aws:iam::123456789012:role/MintToken",
                "dp-operator federation",
            ),
            (
                700211,
                ErrorCode::FederatedIssuerMismatch,
                "https://abc.tokens.sts.global.api.aws",
                "get-outbound-web-identity-federation-info",
            ),
            (
                700212,
                ErrorCode::FederatedAudienceMismatch,
                "api://AzureADTokenExchange",
                "DP_FEDERATION_AUDIENCE",
            ),
            (
                700213,
                ErrorCode::FederatedSubjectMismatch,
                "arn:aws:iam::123456789012:role/MintToken",
                "case-sensitively",
            ),
            (
                7002138,
                ErrorCode::FederatedSubjectCaseMismatch,
                "arn:aws:iam::123456789012:role/MintToken",
                "exact case",
            ),
        ];
        for (code, expected, value, guidance) in cases {
            let bare = typed(401, "invalid_client", &[*code]);
            assert_eq!(bare.code(), *expected, "AADSTS{code}");
            let message = bare.to_string();
            assert!(message.contains("(unknown)"), "{message}");
            let refined = bare.for_federated_assertion(presented());
            assert_eq!(refined.code(), *expected, "AADSTS{code}");
            let message = refined.to_string();
            for needle in [*value, *guidance, &format!("AADSTS{code}"), "trace-1"] {
                assert!(message.contains(needle), "{needle} missing: {message}");
            }
            assert!(!message.contains("some text"), "{message}");
            // App-wide configuration, not a tenant's consent: nothing marks a tenant revoked,
            // nothing retries, nothing re-reads a stored secret.
            assert_ne!(refined.code(), ErrorCode::NotConsented);
            assert!(!refined.is_retryable() && !refined.is_credential_rejection());
            assert_eq!(refined.code().http_status(), 500);
        }
        assert_eq!(
            ErrorCode::FederatedCredentialMissing.as_str(),
            "federated_credential_missing"
        );
        assert_eq!(
            ErrorCode::FederatedIssuerMismatch.as_str(),
            "federated_issuer_mismatch"
        );
        assert_eq!(
            ErrorCode::FederatedAudienceMismatch.as_str(),
            "federated_audience_mismatch"
        );
        assert_eq!(
            ErrorCode::FederatedSubjectMismatch.as_str(),
            "federated_subject_mismatch"
        );
        assert_eq!(
            ErrorCode::FederatedSubjectCaseMismatch.as_str(),
            "federated_subject_case_mismatch"
        );
    }

    #[test]
    fn federated_assertion_refusals_are_not_about_a_client_secret() {
        // Outside the federated path the existing meanings stay.
        assert_eq!(
            typed(401, "invalid_client", &[700024]).code(),
            ErrorCode::CredentialExpired
        );
        let expired = typed(401, "invalid_client", &[700024]).for_federated_assertion(presented());
        assert_eq!(expired.code(), ErrorCode::ClientAssertionExpired);
        assert_eq!(expired.code().as_str(), "client_assertion_expired");
        assert!(
            expired
                .to_string()
                .contains("DP_FEDERATION_DURATION_SECONDS")
        );
        for codes in [&[700027][..], &[][..]] {
            let refused = typed(401, "invalid_client", codes).for_federated_assertion(presented());
            assert_eq!(
                refused.code(),
                ErrorCode::FederatedAssertionRefused,
                "{codes:?}"
            );
            assert!(!refused.to_string().contains("client secret"));
            assert!(!refused.is_credential_rejection());
        }
        // A tenant that never consented is still that, whatever the credential.
        let not_consented =
            typed(400, "unauthorized_client", &[700016]).for_federated_assertion(presented());
        assert_eq!(not_consented.code(), ErrorCode::NotConsented);
    }

    #[test]
    fn sts_failures_keep_their_codes_and_transient_ones_retry() {
        let request = crate::entra::federated::WebIdentityTokenRequest {
            audience: "api://AzureADTokenExchange".into(),
            duration: Duration::from_secs(300),
        };
        let disabled = EntraError::Federation(FederationError::from_sts(
            Some("OutboundWebIdentityFederationDisabledException"),
            None,
            &request,
        ));
        assert_eq!(disabled.code(), ErrorCode::FederationDisabled);
        assert!(!disabled.is_retryable());
        let busy = EntraError::Federation(FederationError::from_sts(
            Some("Throttling"),
            None,
            &request,
        ));
        assert!(busy.is_retryable());
    }
}

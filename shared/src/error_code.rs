//! Stable error codes: what a calling workflow branches on, at every edge (Lambda error type,
//! HTTP JSON body, operator output). Never rename one; add new ones. And the one trait every
//! error a caller may see implements.

use std::time::Duration;

use serde::Serialize;

/// An error a caller sees: its stable code, how long to wait before trying again (when Microsoft
/// said), and Microsoft's claims challenge (MFA / Conditional Access) for the calling app to hand
/// to its user's sign-in. Its `Display` is the message, which never holds a secret. An HTTP
/// caller gets it from `edge::error_response`, a direct invoker from `entry::lambda_error`.
pub trait CallerError: std::fmt::Display {
    fn code(&self) -> ErrorCode;

    fn retry_after(&self) -> Option<Duration> {
        None
    }

    fn claims_challenge(&self) -> Option<&str> {
        None
    }
}

/// Declares the codes once: the enum, its stable names and the list of them all.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $code:ident => $name:literal,)+) => {
        /// A stable, machine-readable error code and its HTTP status at the API edge.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $name)] $code,)+
        }

        impl ErrorCode {
            /// Every code, in the order declared.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$code,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $name,)+
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest => "invalid_request",
    InvalidTenantId => "invalid_tenant_id",
    UnknownApi => "unknown_api",
    TenantNotRegistered => "tenant_not_registered",
    TenantNotActive => "tenant_not_active",
    NotConsented => "not_consented",
    ApiNotEnabled => "api_not_enabled",
    CredentialInvalid => "credential_invalid",
    CredentialExpired => "credential_expired",
    CredentialUnavailable => "credential_unavailable",
    AppDisabled => "app_disabled",
    TenantUnknown => "tenant_unknown",
    WrongCloud => "wrong_cloud",
    RolesMissing => "roles_missing",
    TokenTenantMismatch => "token_tenant_mismatch",
    Throttled => "throttled",
    MicrosoftUnavailable => "microsoft_unavailable",
    RegistryUnavailable => "registry_unavailable",
    ConfigInvalid => "config_invalid",
    Internal => "internal",
    UserTokenInvalid => "user_token_invalid",
    UserTokenExpired => "user_token_expired",
    UserTokenWrongAudience => "user_token_wrong_audience",
    UserTokenWrongTenant => "user_token_wrong_tenant",
    UserConsentMissing => "user_consent_missing",
    InteractionRequired => "interaction_required",
    AssertionInvalid => "assertion_invalid",
    AssertionExpired => "assertion_expired",
    ScopesMissing => "scopes_missing",
    UserMismatch => "user_mismatch",
    /// No usable sign-in is stored for the user (never signed in, refresh token revoked or
    /// expired): the user must sign in again.
    SignInRequired => "sign_in_required",
    /// Minting from a stored sign-in is not enabled for this function.
    StoredSignInDisabled => "stored_sign_in_disabled",
    /// The key service that opens stored refresh tokens (KMS) is unavailable.
    KeyServiceUnavailable => "key_service_unavailable",
    DeviceCodeDeclined => "device_code_declined",
    DeviceCodeExpired => "device_code_expired",
    DeviceCodeInvalid => "device_code_invalid",
    FederationDisabled => "federation_disabled",
    FederationDenied => "federation_denied",
    FederationRefused => "federation_refused",
    FederatedCredentialMissing => "federated_credential_missing",
    FederatedIssuerMismatch => "federated_issuer_mismatch",
    FederatedAudienceMismatch => "federated_audience_mismatch",
    FederatedSubjectMismatch => "federated_subject_mismatch",
    FederatedSubjectCaseMismatch => "federated_subject_case_mismatch",
    ClientAssertionExpired => "client_assertion_expired",
    FederatedAssertionRefused => "federated_assertion_refused",
    IdTokenInvalid => "id_token_invalid",
    TenantMismatch => "tenant_mismatch",
    AdminRoleMissing => "admin_role_missing",
    ApiRetired => "api_retired",
    PartialContent => "partial_content",
    StatusInvalid => "status_invalid",
    ClassificationInvalid => "classification_invalid",
    DeterminationInvalid => "determination_invalid",
    UpdateRefused => "update_refused",
    TargetNotFound => "target_not_found",
    WritePermissionMissing => "write_permission_missing",
    AnalystRoleMissing => "analyst_role_missing",
    IdempotencyKeyReused => "idempotency_key_reused",
    UpdateInProgress => "update_in_progress",
    UpdateConflict => "update_conflict",
    TimespanInvalid => "timespan_invalid",
    HuntQueryInvalid => "hunt_query_invalid",
    HuntNotFound => "hunt_not_found",
    HuntNoTenants => "hunt_no_tenants",
    HuntTimedOut => "hunt_timed_out",
    HuntResultsUnavailable => "hunt_results_unavailable",
    HuntQueueUnavailable => "hunt_queue_unavailable",
    /// The caller's mapping (`dp-operator callers`) does not let it mint for this tenant.
    CallerNotAllowed => "caller_not_allowed",
}

impl ErrorCode {
    /// A passing condition (throttling, an outage) rather than a verdict: a still-valid cached
    /// token may be handed out instead.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::Throttled
                | ErrorCode::MicrosoftUnavailable
                | ErrorCode::RegistryUnavailable
                | ErrorCode::KeyServiceUnavailable
                | ErrorCode::CredentialUnavailable
                | ErrorCode::PartialContent
                | ErrorCode::HuntResultsUnavailable
                | ErrorCode::HuntQueueUnavailable
        )
    }

    /// The HTTP status this code maps to on an API route.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidTenantId | ErrorCode::UnknownApi => 400,
            ErrorCode::TenantNotRegistered | ErrorCode::TenantUnknown => 404,
            ErrorCode::TenantNotActive
            | ErrorCode::NotConsented
            | ErrorCode::ApiNotEnabled
            | ErrorCode::RolesMissing => 403,
            ErrorCode::UserTokenWrongTenant
            | ErrorCode::UserConsentMissing
            | ErrorCode::ScopesMissing
            | ErrorCode::DeviceCodeDeclined => 403,
            ErrorCode::DeviceCodeExpired | ErrorCode::DeviceCodeInvalid => 401,
            ErrorCode::UserTokenInvalid
            | ErrorCode::UserTokenExpired
            | ErrorCode::UserTokenWrongAudience
            | ErrorCode::InteractionRequired
            | ErrorCode::AssertionInvalid
            | ErrorCode::AssertionExpired
            | ErrorCode::SignInRequired => 401,
            ErrorCode::StoredSignInDisabled | ErrorCode::CallerNotAllowed => 403,
            ErrorCode::IdTokenInvalid => 401,
            ErrorCode::TenantMismatch | ErrorCode::AdminRoleMissing => 403,
            ErrorCode::ApiRetired => 410,
            ErrorCode::PartialContent => 502,
            // Write-back (update-incident).
            ErrorCode::StatusInvalid
            | ErrorCode::ClassificationInvalid
            | ErrorCode::DeterminationInvalid
            | ErrorCode::UpdateRefused => 400,
            ErrorCode::TargetNotFound => 404,
            ErrorCode::WritePermissionMissing | ErrorCode::AnalystRoleMissing => 403,
            ErrorCode::IdempotencyKeyReused
            | ErrorCode::UpdateInProgress
            | ErrorCode::UpdateConflict => 409,
            // Fleet hunting (hunt).
            ErrorCode::TimespanInvalid | ErrorCode::HuntQueryInvalid => 400,
            ErrorCode::HuntNotFound | ErrorCode::HuntNoTenants => 404,
            ErrorCode::HuntTimedOut => 504,
            ErrorCode::HuntResultsUnavailable | ErrorCode::HuntQueueUnavailable => 503,
            ErrorCode::UserMismatch => 502,
            ErrorCode::Throttled => 429,
            ErrorCode::TokenTenantMismatch => 502,
            ErrorCode::MicrosoftUnavailable
            | ErrorCode::RegistryUnavailable
            | ErrorCode::KeyServiceUnavailable => 503,
            ErrorCode::CredentialInvalid
            | ErrorCode::CredentialExpired
            | ErrorCode::CredentialUnavailable
            | ErrorCode::AppDisabled
            | ErrorCode::WrongCloud
            | ErrorCode::ConfigInvalid
            | ErrorCode::Internal => 500,
            // The app's federated credential is misconfigured: the partner's to fix, for every
            // tenant at once.
            ErrorCode::FederationDisabled
            | ErrorCode::FederationDenied
            | ErrorCode::FederationRefused
            | ErrorCode::FederatedCredentialMissing
            | ErrorCode::FederatedIssuerMismatch
            | ErrorCode::FederatedAudienceMismatch
            | ErrorCode::FederatedSubjectMismatch
            | ErrorCode::FederatedSubjectCaseMismatch
            | ErrorCode::ClientAssertionExpired
            | ErrorCode::FederatedAssertionRefused => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(names.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
    }

    /// The README's table of codes is what callers branch on: every code is there, with the
    /// HTTP status it answers.
    #[test]
    fn the_readme_lists_every_code_with_its_http_status() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let rows: std::collections::HashMap<&str, &str> = readme
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
                let code = cells.first()?.trim().strip_prefix('`')?.strip_suffix('`')?;
                Some((code, cells.last()?.trim()))
            })
            .collect();
        for code in ErrorCode::ALL {
            let status = rows
                .get(code.as_str())
                .unwrap_or_else(|| panic!("README.md's table of error codes lacks `{code}`"));
            assert_eq!(
                *status,
                code.http_status().to_string(),
                "README.md gives `{code}` another HTTP status than it answers"
            );
        }
    }
}

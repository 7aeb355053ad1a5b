//! Stable error codes: what a calling workflow branches on, at every edge (Lambda error type,
//! HTTP JSON body, operator output). Never rename one; add new ones.

use serde::Serialize;

/// A stable, machine-readable error code and its HTTP status at the API edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidTenantId,
    UnknownApi,
    TenantNotRegistered,
    TenantNotActive,
    NotConsented,
    ApiNotEnabled,
    CredentialInvalid,
    CredentialExpired,
    CredentialUnavailable,
    AppDisabled,
    TenantUnknown,
    WrongCloud,
    RolesMissing,
    TokenTenantMismatch,
    Throttled,
    MicrosoftUnavailable,
    RegistryUnavailable,
    ConfigInvalid,
    Internal,
    UserTokenInvalid,
    UserTokenExpired,
    UserTokenWrongAudience,
    UserTokenWrongTenant,
    UserConsentMissing,
    InteractionRequired,
    AssertionInvalid,
    AssertionExpired,
    ScopesMissing,
    UserMismatch,
    /// No usable sign-in is stored for the user (never signed in, refresh token revoked or
    /// expired): the user must sign in again.
    SignInRequired,
    /// Minting from a stored sign-in is not enabled for this function.
    StoredSignInDisabled,
    /// The key service that opens stored refresh tokens (KMS) is unavailable.
    KeyServiceUnavailable,
    DeviceCodeDeclined,
    DeviceCodeExpired,
    DeviceCodeInvalid,
    FederationDisabled,
    FederationDenied,
    FederationRefused,
    FederatedCredentialMissing,
    FederatedIssuerMismatch,
    FederatedAudienceMismatch,
    FederatedSubjectMismatch,
    FederatedSubjectCaseMismatch,
    ClientAssertionExpired,
    FederatedAssertionRefused,
    IdTokenInvalid,
    TenantMismatch,
    AdminRoleMissing,
    ApiRetired,
    PartialContent,
    StatusInvalid,
    ClassificationInvalid,
    DeterminationInvalid,
    UpdateRefused,
    TargetNotFound,
    WritePermissionMissing,
    AnalystRoleMissing,
    IdempotencyKeyReused,
    UpdateInProgress,
    UpdateConflict,
    TimespanInvalid,
    HuntQueryInvalid,
    HuntNotFound,
    HuntNoTenants,
    HuntTimedOut,
    HuntResultsUnavailable,
    HuntQueueUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidTenantId => "invalid_tenant_id",
            ErrorCode::UnknownApi => "unknown_api",
            ErrorCode::TenantNotRegistered => "tenant_not_registered",
            ErrorCode::TenantNotActive => "tenant_not_active",
            ErrorCode::NotConsented => "not_consented",
            ErrorCode::ApiNotEnabled => "api_not_enabled",
            ErrorCode::CredentialInvalid => "credential_invalid",
            ErrorCode::CredentialExpired => "credential_expired",
            ErrorCode::CredentialUnavailable => "credential_unavailable",
            ErrorCode::AppDisabled => "app_disabled",
            ErrorCode::TenantUnknown => "tenant_unknown",
            ErrorCode::WrongCloud => "wrong_cloud",
            ErrorCode::RolesMissing => "roles_missing",
            ErrorCode::TokenTenantMismatch => "token_tenant_mismatch",
            ErrorCode::Throttled => "throttled",
            ErrorCode::MicrosoftUnavailable => "microsoft_unavailable",
            ErrorCode::RegistryUnavailable => "registry_unavailable",
            ErrorCode::ConfigInvalid => "config_invalid",
            ErrorCode::Internal => "internal",
            ErrorCode::UserTokenInvalid => "user_token_invalid",
            ErrorCode::UserTokenExpired => "user_token_expired",
            ErrorCode::UserTokenWrongAudience => "user_token_wrong_audience",
            ErrorCode::UserTokenWrongTenant => "user_token_wrong_tenant",
            ErrorCode::UserConsentMissing => "user_consent_missing",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::AssertionInvalid => "assertion_invalid",
            ErrorCode::AssertionExpired => "assertion_expired",
            ErrorCode::ScopesMissing => "scopes_missing",
            ErrorCode::UserMismatch => "user_mismatch",
            ErrorCode::SignInRequired => "sign_in_required",
            ErrorCode::StoredSignInDisabled => "stored_sign_in_disabled",
            ErrorCode::KeyServiceUnavailable => "key_service_unavailable",
            ErrorCode::DeviceCodeDeclined => "device_code_declined",
            ErrorCode::DeviceCodeExpired => "device_code_expired",
            ErrorCode::DeviceCodeInvalid => "device_code_invalid",
            ErrorCode::FederationDisabled => "federation_disabled",
            ErrorCode::FederationDenied => "federation_denied",
            ErrorCode::FederationRefused => "federation_refused",
            ErrorCode::FederatedCredentialMissing => "federated_credential_missing",
            ErrorCode::FederatedIssuerMismatch => "federated_issuer_mismatch",
            ErrorCode::FederatedAudienceMismatch => "federated_audience_mismatch",
            ErrorCode::FederatedSubjectMismatch => "federated_subject_mismatch",
            ErrorCode::FederatedSubjectCaseMismatch => "federated_subject_case_mismatch",
            ErrorCode::ClientAssertionExpired => "client_assertion_expired",
            ErrorCode::FederatedAssertionRefused => "federated_assertion_refused",
            ErrorCode::IdTokenInvalid => "id_token_invalid",
            ErrorCode::TenantMismatch => "tenant_mismatch",
            ErrorCode::AdminRoleMissing => "admin_role_missing",
            ErrorCode::ApiRetired => "api_retired",
            ErrorCode::PartialContent => "partial_content",
            ErrorCode::StatusInvalid => "status_invalid",
            ErrorCode::ClassificationInvalid => "classification_invalid",
            ErrorCode::DeterminationInvalid => "determination_invalid",
            ErrorCode::UpdateRefused => "update_refused",
            ErrorCode::TargetNotFound => "target_not_found",
            ErrorCode::WritePermissionMissing => "write_permission_missing",
            ErrorCode::AnalystRoleMissing => "analyst_role_missing",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::UpdateInProgress => "update_in_progress",
            ErrorCode::UpdateConflict => "update_conflict",
            ErrorCode::TimespanInvalid => "timespan_invalid",
            ErrorCode::HuntQueryInvalid => "hunt_query_invalid",
            ErrorCode::HuntNotFound => "hunt_not_found",
            ErrorCode::HuntNoTenants => "hunt_no_tenants",
            ErrorCode::HuntTimedOut => "hunt_timed_out",
            ErrorCode::HuntResultsUnavailable => "hunt_results_unavailable",
            ErrorCode::HuntQueueUnavailable => "hunt_queue_unavailable",
        }
    }

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
            ErrorCode::StoredSignInDisabled => 403,
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
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::InvalidTenantId,
            ErrorCode::MicrosoftUnavailable,
            ErrorCode::Internal,
            ErrorCode::UserTokenWrongAudience,
            ErrorCode::InteractionRequired,
            ErrorCode::UserMismatch,
            ErrorCode::SignInRequired,
            ErrorCode::StoredSignInDisabled,
            ErrorCode::KeyServiceUnavailable,
            ErrorCode::DeviceCodeDeclined,
            ErrorCode::DeviceCodeExpired,
            ErrorCode::DeviceCodeInvalid,
            ErrorCode::FederatedSubjectCaseMismatch,
            ErrorCode::ClientAssertionExpired,
            ErrorCode::IdTokenInvalid,
            ErrorCode::TenantMismatch,
            ErrorCode::AdminRoleMissing,
            ErrorCode::ApiRetired,
            ErrorCode::PartialContent,
            ErrorCode::TimespanInvalid,
            ErrorCode::HuntQueryInvalid,
            ErrorCode::HuntNotFound,
            ErrorCode::HuntNoTenants,
            ErrorCode::HuntTimedOut,
            ErrorCode::HuntResultsUnavailable,
            ErrorCode::HuntQueueUnavailable,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}

//! The in-process way to change a running emulator: the same operations as the HTTP control
//! API (`control.rs` is a thin layer over this), without going through HTTP.

use std::fmt;
use std::sync::Arc;

use crate::aws::{ShortLivedTokens, StsCallCounts, StsFailure};
use crate::entra::request_log::TokenRequestRecord;
use crate::faults::Fault;
use crate::scenario::{
    AppConfig, CertificateConfig, FederatedCredentialConfig, GrantConfig, SecretConfig,
    TenantConfig,
};
use crate::state::Shared;

/// A cheap, cloneable handle on a running emulator's state.
#[derive(Clone)]
pub struct EmulatorHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Why a control operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The request is malformed or describes something the emulator cannot serve.
    Invalid(String),
    /// The app or tenant does not exist.
    NotFound(String),
    /// The app or tenant already exists.
    Conflict(String),
}

impl ControlError {
    pub(crate) fn invalid(error: impl Into<anyhow::Error>) -> ControlError {
        ControlError::Invalid(format!("{:#}", error.into()))
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Invalid(message)
            | ControlError::NotFound(message)
            | ControlError::Conflict(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ControlError {}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Queues a fault behind those already queued.
    pub fn push_fault(&self, fault: Fault) -> Result<(), ControlError> {
        fault.validate().map_err(ControlError::Invalid)?;
        self.shared.faults().push(fault);
        Ok(())
    }

    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.faults().pending()
    }

    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Every token request since start or the last clear, oldest first.
    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.shared.log().all()
    }

    pub fn clear_token_requests(&self) {
        self.shared.log().clear();
    }

    /// Replaces the app's secrets (rotation).
    pub fn set_secrets(
        &self,
        client_id: &str,
        secrets: Vec<SecretConfig>,
    ) -> Result<(), ControlError> {
        self.shared.directory_mut().set_secrets(client_id, secrets)
    }

    /// Replaces the app's certificates.
    pub fn set_certificates(
        &self,
        client_id: &str,
        certificates: &[CertificateConfig],
    ) -> Result<(), ControlError> {
        self.shared
            .directory_mut()
            .set_certificates(client_id, certificates)
    }

    pub fn set_app_disabled(&self, client_id: &str, disabled: bool) -> Result<(), ControlError> {
        self.shared
            .directory_mut()
            .set_app_disabled(client_id, disabled)
    }

    pub fn add_app(&self, app: &AppConfig) -> Result<(), ControlError> {
        self.shared.directory_mut().add_app(app)
    }

    pub fn add_tenant(&self, tenant: &TenantConfig) -> Result<(), ControlError> {
        self.shared.directory_mut().add_tenant(tenant)?;
        self.shared.defender.register(tenant);
        Ok(())
    }

    /// Sets or replaces the grant of `grant.client_id` on `grant.resource` in the tenant
    /// (named by GUID or domain).
    pub fn set_grant(&self, tenant: &str, grant: &GrantConfig) -> Result<(), ControlError> {
        self.shared.directory_mut().set_grant(tenant, grant)
    }

    /// Removes the app's consent in the tenant: its token requests then get AADSTS700016.
    pub fn revoke_consent(&self, tenant: &str, client_id: &str) -> Result<(), ControlError> {
        self.shared
            .directory_mut()
            .revoke_consent(tenant, client_id)
    }

    /// `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: u64) -> Result<(), ControlError> {
        if seconds == 0 {
            return Err(ControlError::Invalid(
                "token_lifetime_seconds must be at least 1".to_owned(),
            ));
        }
        self.shared.directory_mut().token_lifetime_seconds = seconds;
        Ok(())
    }

    /// Replaces the app's federated identity credentials. An issuer may start with
    /// [`crate::demo::EMULATOR_URL_PLACEHOLDER`] to name this emulator.
    pub fn set_federated_credentials(
        &self,
        client_id: &str,
        credentials: &[FederatedCredentialConfig],
    ) -> Result<(), ControlError> {
        let mut credentials = credentials.to_vec();
        crate::entra::federated::resolve_placeholder(&mut credentials, &self.shared.base_url);
        self.shared
            .directory_mut()
            .set_federated_credentials(client_id, credentials)
    }

    /// Discovery round trips made to outside issuers' keys (the cache's misses).
    pub fn issuer_key_fetches(&self) -> u64 {
        self.shared.issuer_keys.fetches()
    }

    /// The emulated AWS account's issuer URL (`{base}/aws-issuer/{account_id}`).
    pub fn aws_issuer(&self) -> String {
        let account_id = self.shared.aws.lock().config.account_id.clone();
        crate::demo::aws_issuer(&self.shared.base_url, &account_id)
    }

    /// The role of access key ids the scenario does not map.
    pub fn aws_default_role_arn(&self) -> String {
        self.shared.aws.lock().config.default_role_arn.clone()
    }

    /// `iam:Enable/DisableOutboundWebIdentityFederation`.
    pub fn set_aws_federation_enabled(&self, enabled: bool) {
        self.shared.aws.lock().config.federation_enabled = enabled;
    }

    /// Every role loses `sts:GetWebIdentityToken` (`AccessDenied`), or gets it back.
    pub fn set_aws_role_denied(&self, denied: bool) {
        self.shared.aws.lock().role_denied = denied;
    }

    /// The caller's session ends `seconds` from now (`None`: no limit); a longer
    /// `DurationSeconds` gets `SessionDurationEscalationException`.
    pub fn set_aws_session_remaining(&self, seconds: Option<u64>) {
        self.shared.aws.lock().session_remaining_seconds = seconds;
    }

    /// The next `count` web identity tokens live `lifetime_seconds` (zero or less: already
    /// expired). Replaces an override still pending.
    pub fn shorten_next_sts_tokens(&self, short: ShortLivedTokens) -> Result<(), ControlError> {
        short.validate()?;
        self.shared.aws.lock().short_lived = Some(short);
        Ok(())
    }

    /// The next `failure.count` STS calls answer `failure.status` with `failure.code`.
    /// Replaces a failure still pending.
    pub fn fail_next_sts_calls(&self, failure: StsFailure) -> Result<(), ControlError> {
        failure.validate()?;
        self.shared.aws.lock().failures = Some(failure);
        Ok(())
    }

    pub fn sts_calls(&self) -> StsCallCounts {
        self.shared.aws.lock().calls
    }

    pub fn reset_sts_calls(&self) {
        self.shared.aws.lock().calls = StsCallCounts::default();
    }
}

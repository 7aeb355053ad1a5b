//! Onboarding: hand out consent links, receive Microsoft's redirect, prove the consent, record
//! the tenant; and the operator's re-verification and offboarding.

use std::sync::Arc;

use chrono::Utc;
use url::Url;
use uuid::Uuid;

use super::callback::{CallbackOutcome, parse_callback};
use super::keys::load_state_key;
use super::links::{LinkKind, consent_url};
use super::pages::Page;
use super::proof::{Promotion, ProofFailure, prove_and_record};
use super::state::{ConsentState, StateError, StateSigner};
use crate::ErrorCode;
use crate::config::{ENV_CONSENT_REDIRECT_URI, Settings};
use crate::entra::AppTokenProvider;
use crate::runtime::Services;
use crate::secrets::{CredentialError, CredentialStore};
use crate::tenant_id::TenantId;
use crate::tenants::{
    AttemptStatus, ConsentAttempt, ConsentAttempts, ConsumeError, RegistryError, TenantRecord,
    TenantRegistry, TenantStatus, stored_now,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    #[error(
        "customer reference {0:?} is not valid: use 1 to 64 letters, digits, spaces or . _ : @ / -"
    )]
    InvalidCustomerRef(String),
    #[error(
        "{ENV_CONSENT_REDIRECT_URI} is not set: consent links need the callback URL registered on the app"
    )]
    RedirectUriMissing,
    #[error("tenant {0} is not registered")]
    NotRegistered(String),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("consent for tenant {tenant} is not proven: {failure}")]
    NotProven {
        tenant: String,
        failure: ProofFailure,
    },
}

impl ConsentError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ConsentError::InvalidCustomerRef(_) => ErrorCode::InvalidRequest,
            ConsentError::RedirectUriMissing => ErrorCode::ConfigInvalid,
            ConsentError::NotRegistered(_) => ErrorCode::TenantNotRegistered,
            ConsentError::Credential(error) => error.code(),
            ConsentError::Registry(error) => error.code(),
            ConsentError::NotProven { failure, .. } => failure.code,
        }
    }
}

/// A consent link ready to send to a customer's administrator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsentLink {
    pub url: String,
    pub customer_ref: String,
    pub link: String,
    pub expires_at: chrono::DateTime<Utc>,
}

pub struct ConsentService {
    settings: Settings,
    signer: StateSigner,
    attempts: Arc<dyn ConsentAttempts>,
    registry: Arc<dyn TenantRegistry>,
    tokens: Arc<AppTokenProvider>,
    credentials: Arc<CredentialStore>,
}

impl ConsentService {
    /// Reads the state signing key; once per cold start.
    pub async fn build(services: &Services) -> Result<ConsentService, CredentialError> {
        let key =
            load_state_key(&services.settings.consent.state_key, services.aws.as_ref()).await?;
        Ok(ConsentService {
            settings: services.settings.clone(),
            signer: StateSigner::new(&key),
            attempts: services.attempts.clone(),
            registry: services.registry.clone(),
            tokens: services.tokens.clone(),
            credentials: services.credentials.clone(),
        })
    }

    fn redirect_uri(&self) -> Result<&Url, ConsentError> {
        self.settings
            .consent
            .redirect_uri
            .as_ref()
            .ok_or(ConsentError::RedirectUriMissing)
    }

    /// A new single-use consent link for `customer_ref`.
    pub async fn start(
        &self,
        customer_ref: &str,
        link: Option<LinkKind>,
    ) -> Result<ConsentLink, ConsentError> {
        let customer_ref = valid_customer_ref(customer_ref)?;
        let redirect_uri = self.redirect_uri()?.clone();
        let link = link.unwrap_or(self.settings.consent.link);
        let credential = self.credentials.current().await?;
        let now = stored_now();
        let expires_at = now
            + chrono::Duration::from_std(self.settings.consent.state_ttl)
                .expect("bounded by configuration");
        let attempt = ConsentAttempt {
            nonce: Uuid::new_v4().simple().to_string(),
            customer_ref: customer_ref.clone(),
            link: link.as_str().to_owned(),
            status: AttemptStatus::Issued,
            tenant_id: None,
            detail: None,
            created_at: now,
            expires_at,
            updated_at: now,
        };
        self.attempts.issue(&attempt).await?;
        let state = self.signer.sign(&ConsentState {
            nonce: attempt.nonce.clone(),
            customer_ref: customer_ref.clone(),
            link: link.as_str().to_owned(),
            expires: expires_at.timestamp(),
        });
        let url = consent_url(
            link,
            &self.settings.endpoints,
            &credential.client_id,
            &redirect_uri,
            &state,
            &self.settings.consent.apis,
        );
        tracing::info!(customer_ref = %customer_ref, link = %link, expires_at = %expires_at, "consent link issued");
        Ok(ConsentLink {
            url: url.to_string(),
            customer_ref,
            link: link.as_str().to_owned(),
            expires_at,
        })
    }

    /// Handles Microsoft's redirect. Always answers a page; never fails.
    pub async fn callback(&self, raw_query: &str) -> Page {
        let support_ref = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let page = self.handle_callback(raw_query, &support_ref).await;
        tracing::info!(support_ref = %support_ref, status = page.status, outcome = page.title, "consent callback answered");
        page
    }

    async fn handle_callback(&self, raw_query: &str, support_ref: &str) -> Page {
        let callback = match parse_callback(raw_query) {
            Ok(callback) => callback,
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "malformed consent callback");
                return Page::invalid();
            }
        };
        let state = match self.signer.verify(callback.state.as_deref(), Utc::now()) {
            Ok(state) => state,
            Err(StateError::Expired) => return Page::expired(),
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "consent callback with a state we did not issue");
                return Page::invalid();
            }
        };
        let attempt = match self.attempts.consume(&state.nonce, Utc::now()).await {
            Ok(attempt) => attempt,
            Err(ConsumeError::AlreadyUsed) => {
                tracing::warn!(support_ref, customer_ref = %state.customer_ref, "consent callback replayed");
                return Page::replayed();
            }
            Err(ConsumeError::Expired) => return Page::expired(),
            Err(ConsumeError::Unknown) => {
                tracing::warn!(support_ref, "consent callback for a nonce never issued");
                return Page::invalid();
            }
            Err(ConsumeError::Store(error)) => {
                tracing::error!(support_ref, error = %error, "consent attempt could not be read");
                return Page::error(support_ref);
            }
        };
        match callback.outcome {
            CallbackOutcome::Declined { error, description } => {
                tracing::info!(support_ref, customer_ref = %attempt.customer_ref, error = %error, "consent declined");
                self.finish(
                    &attempt,
                    AttemptStatus::Declined,
                    None,
                    Some(&error),
                    support_ref,
                )
                .await;
                Page::declined(&error, description.as_deref())
            }
            CallbackOutcome::Granted { tenant: None } => {
                self.finish(
                    &attempt,
                    AttemptStatus::Unproven,
                    None,
                    Some("the legacy link returns no tenant id: confirm with the operator command"),
                    support_ref,
                )
                .await;
                Page::legacy_without_tenant(&attempt.customer_ref)
            }
            CallbackOutcome::Granted {
                tenant: Some(claimed),
            } => {
                let Ok(tenant) = TenantId::parse(&claimed) else {
                    tracing::warn!(support_ref, "consent callback with a malformed tenant");
                    self.finish(
                        &attempt,
                        AttemptStatus::Declined,
                        None,
                        Some("malformed tenant in callback"),
                        support_ref,
                    )
                    .await;
                    return Page::invalid();
                };
                // A tenant onboarded for one customer is never moved to another by a link issued
                // for someone else: that is the operator's decision (`tenants verify --customer`).
                match self.registry.get(&tenant).await {
                    Ok(Some(existing))
                        if existing
                            .customer_ref
                            .as_deref()
                            .is_some_and(|owner| owner != attempt.customer_ref) =>
                    {
                        tracing::warn!(support_ref, tenant = %tenant, customer_ref = %attempt.customer_ref, "consent callback for a tenant registered to another customer");
                        self.finish(
                            &attempt,
                            AttemptStatus::Declined,
                            Some(&tenant),
                            Some("tenant already registered to another customer reference"),
                            support_ref,
                        )
                        .await;
                        return Page::registered_elsewhere(support_ref);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::error!(support_ref, error = %error, "registry unavailable");
                        return Page::error(support_ref);
                    }
                }
                match self.prove_and_record(&tenant, &attempt.customer_ref).await {
                    Ok(record) if record.status == TenantStatus::Active => {
                        self.finish(
                            &attempt,
                            AttemptStatus::Completed,
                            Some(&tenant),
                            None,
                            support_ref,
                        )
                        .await;
                        Page::success(&tenant, &attempt.customer_ref, &record.roles)
                    }
                    Ok(record) => {
                        let reason = record.status_reason.clone().unwrap_or_default();
                        self.finish(
                            &attempt,
                            AttemptStatus::Unproven,
                            Some(&tenant),
                            Some(&reason),
                            support_ref,
                        )
                        .await;
                        Page::pending(&tenant, support_ref)
                    }
                    Err(error) => {
                        tracing::error!(support_ref, tenant = %tenant, error = %error, "consent could not be recorded");
                        Page::error(support_ref)
                    }
                }
            }
        }
    }

    async fn finish(
        &self,
        attempt: &ConsentAttempt,
        status: AttemptStatus,
        tenant: Option<&TenantId>,
        detail: Option<&str>,
        support_ref: &str,
    ) {
        if let Err(error) = self
            .attempts
            .finish(&attempt.nonce, status, tenant, detail)
            .await
        {
            // The tenant record is what matters; the attempt is bookkeeping.
            tracing::warn!(support_ref, error = %error, "consent attempt outcome not recorded");
        }
    }

    async fn prove_and_record(
        &self,
        tenant: &TenantId,
        customer_ref: &str,
    ) -> Result<TenantRecord, RegistryError> {
        prove_and_record(
            self.registry.as_ref(),
            &self.tokens,
            &self.settings,
            tenant,
            customer_ref,
            self.settings.consent.proof_window,
            Promotion::Any,
        )
        .await
    }

    /// Re-verifies a tenant (the operator's command, the fetch cycle). A tenant not yet in the
    /// registry (onboarded with the legacy link) is added when `customer_ref` is given.
    pub async fn verify_tenant(
        &self,
        tenant: &TenantId,
        customer_ref: Option<&str>,
    ) -> Result<TenantRecord, ConsentError> {
        let existing = self.registry.get(tenant).await?;
        let customer_ref = match (&existing, customer_ref) {
            (_, Some(given)) => valid_customer_ref(given)?,
            (Some(record), None) => record
                .customer_ref
                .clone()
                .unwrap_or_else(|| record.display_name.clone()),
            (None, None) => return Err(ConsentError::NotRegistered(tenant.to_string())),
        };
        Ok(self.prove_and_record(tenant, &customer_ref).await?)
    }

    /// Ends the relationship: no more tokens for this tenant.
    pub async fn offboard(&self, tenant: &TenantId) -> Result<TenantRecord, ConsentError> {
        match self
            .registry
            .set_status(
                tenant,
                TenantStatus::Offboarded,
                Some("offboarded by the operator".into()),
            )
            .await
        {
            Err(RegistryError::NotFound(_)) => Err(ConsentError::NotRegistered(tenant.to_string())),
            other => Ok(other?),
        }
    }
}

fn valid_customer_ref(text: &str) -> Result<String, ConsentError> {
    let trimmed = text.trim();
    let ok = !trimmed.is_empty()
        && trimmed.chars().count() <= 64
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._:@/-".contains(c));
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(ConsentError::InvalidCustomerRef(
            text.chars().take(80).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_references_are_bounded() {
        assert_eq!(valid_customer_ref(" CRM-42 ").unwrap(), "CRM-42");
        assert!(valid_customer_ref("Contoso Ltd / EU:01").is_ok());
        for bad in ["", "   ", "<script>", &"x".repeat(65), "a\nb", "naïve"] {
            assert!(valid_customer_ref(bad).is_err(), "{bad}");
        }
    }
}

//! Onboarding: hand out consent links, receive Microsoft's redirect, prove the consent, record
//! the tenant; and the operator's re-verification and offboarding.

use std::sync::Arc;

use chrono::Utc;
use url::Url;
use uuid::Uuid;

use super::admin_sign_in::{AdminSignIn, AdminSignInError};
use super::callback::{CallbackOutcome, parse_callback};
use super::links::{LinkKind, consent_url};
use super::pages;
use super::proof::{ProofFailure, prove_and_record};
use super::state::{ConsentClaims, ConsentState};
use crate::config::{ConsentServiceSettings, ENV_CONSENT_REDIRECT_URI};
use crate::entra::id_token::{IdTokenError, IdTokenVerifier};
use crate::entra::{AppTokenProvider, TokenClient};
use crate::redirect::key::load_state_key;
use crate::redirect::{
    CallbackAnswer, Page, Purpose, Refusal, SignedState, StateError, StateSigner, answer_callback,
};
use crate::runtime::Services;
use crate::secrets::{AppCredential, CredentialError, CredentialStore};
use crate::store::{
    AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, ConsumeError, Ownership,
    RegistryError, TenantRecord, TenantRegistry, TenantStatus, classify_failed_consume, stored_now,
};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

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
    InvalidTenant(#[from] crate::tenant_id::TenantIdError),
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

impl CallerError for ConsentError {
    fn code(&self) -> ErrorCode {
        match self {
            ConsentError::InvalidCustomerRef(_) => ErrorCode::InvalidRequest,
            ConsentError::RedirectUriMissing => ErrorCode::ConfigInvalid,
            ConsentError::NotRegistered(_) => ErrorCode::TenantNotRegistered,
            ConsentError::InvalidTenant(_) => ErrorCode::InvalidTenantId,
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
    /// The tenant the link is bound to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub expires_at: chrono::DateTime<Utc>,
}

pub struct ConsentService {
    settings: ConsentServiceSettings,
    /// Signs the consent link's `state`.
    signer: StateSigner,
    /// Signs the `state` of the administrator's sign-in that follows the consent.
    proof_signer: StateSigner,
    admin_sign_in: AdminSignIn,
    id_tokens: IdTokenVerifier,
    client: TokenClient,
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
            settings: services.settings.consent_service(),
            signer: StateSigner::new(&key, Purpose::ConsentLink),
            proof_signer: StateSigner::new(&key, Purpose::AdminSignIn),
            admin_sign_in: AdminSignIn::new(&key),
            id_tokens: IdTokenVerifier::new(
                services.http.clone(),
                services.settings.endpoints.clone(),
            ),
            client: TokenClient::new(services.http.clone(), services.settings.endpoints.clone()),
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

    /// A new single-use consent link for `customer_ref`; with `tenant`, bound to that tenant
    /// (Microsoft shows the consent for it, and the callback accepts no other).
    pub async fn start(
        &self,
        customer_ref: &str,
        link: Option<LinkKind>,
        tenant: Option<&str>,
    ) -> Result<ConsentLink, ConsentError> {
        let customer_ref = valid_customer_ref(customer_ref)?;
        let tenant = tenant
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(TenantId::parse)
            .transpose()?;
        let redirect_uri = self.redirect_uri()?.clone();
        let link = link.unwrap_or(self.settings.consent.link);
        let credential = self.credentials.current().await?;
        let now = stored_now();
        let expires_at = now
            + chrono::Duration::from_std(self.settings.consent.state_ttl)
                .expect("bounded by configuration");
        let attempt = ConsentAttempt {
            nonce: Uuid::new_v4().simple().to_string(),
            flow: AttemptFlow::Consent {
                customer_ref: customer_ref.clone(),
                link: link.as_str().to_owned(),
            },
            status: AttemptStatus::Issued,
            tenant_id: tenant.clone(),
            detail: None,
            created_at: now,
            expires_at,
            updated_at: now,
        };
        self.attempts.issue(&attempt).await?;
        let state = self.signer.sign(&SignedState {
            nonce: attempt.nonce.clone(),
            expires: expires_at.timestamp(),
            claims: ConsentClaims {
                customer_ref: customer_ref.clone(),
                link: link.as_str().to_owned(),
                tenant: tenant.as_ref().map(TenantId::to_string),
            },
        });
        let url = consent_url(
            link,
            &self.settings.endpoints,
            &credential.client_id,
            &redirect_uri,
            &state,
            &self.settings.consent.apis,
            tenant.as_ref(),
        );
        tracing::info!(customer_ref = %customer_ref, link = %link, tenant = tenant.as_ref().map(TenantId::as_str).unwrap_or("any"), expires_at = %expires_at, "consent link issued");
        Ok(ConsentLink {
            url: url.to_string(),
            customer_ref,
            link: link.as_str().to_owned(),
            tenant_id: tenant.map(|tenant| tenant.to_string()),
            expires_at,
        })
    }

    /// Handles Microsoft's redirects (the consent's, then the administrator's sign-in's).
    /// Always answers: a page, or the browser's next step; never fails.
    pub async fn callback(&self, raw_query: &str) -> CallbackAnswer {
        answer_callback("consent", async |support_ref| {
            self.handle_callback(raw_query, support_ref).await
        })
        .await
    }

    async fn handle_callback(&self, raw_query: &str, support_ref: &str) -> CallbackAnswer {
        let callback = match parse_callback(raw_query) {
            Ok(callback) => callback,
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "malformed consent callback");
                return pages::invalid().into();
            }
        };
        let now = Utc::now();
        // Which step this is follows from the key that signed the state: each step's state is
        // signed with its own key, so one is never taken for the other.
        match self.signer.verify(callback.state.as_deref(), now) {
            Ok(state) => {
                return self
                    .consent_answered(state, callback.outcome, support_ref)
                    .await;
            }
            Err(StateError::Expired) => return pages::expired().into(),
            Err(StateError::BadSignature) => {}
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "consent callback with a state we did not issue");
                return pages::invalid().into();
            }
        }
        match self.proof_signer.verify(callback.state.as_deref(), now) {
            Ok(state) => self
                .sign_in_answered(state, callback.outcome, support_ref)
                .await
                .into(),
            Err(StateError::Expired) => pages::expired().into(),
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "consent callback with a state we did not issue");
                pages::invalid().into()
            }
        }
    }

    /// The attempt behind a state, if it may still be used (read only: nothing is spent here).
    async fn usable_attempt(
        &self,
        state: &ConsentState,
        support_ref: &str,
    ) -> Result<Onboarding, Page> {
        let now = Utc::now();
        let read = match self.attempts.attempt(&state.nonce).await {
            Ok(Some(attempt))
                if attempt.status == AttemptStatus::Issued && attempt.expires_at > now =>
            {
                Ok(attempt)
            }
            Ok(stored) => Err(classify_failed_consume(stored.as_ref(), now)),
            Err(error) => Err(ConsumeError::Store(error)),
        };
        onboarding_or_page(read, state, support_ref)
    }

    /// Step 1: Microsoft's answer to the consent. A refusal ends the attempt; a consent sends
    /// the browser on to the administrator's sign-in. Nothing is recorded for a tenant here.
    async fn consent_answered(
        &self,
        state: ConsentState,
        outcome: CallbackOutcome,
        support_ref: &str,
    ) -> CallbackAnswer {
        let bound = match state
            .claims
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
        {
            Ok(bound) => bound,
            Err(_) => return pages::invalid().into(),
        };
        let claimed = match outcome {
            CallbackOutcome::Declined(Refusal { error, description }) => {
                let attempt = match self.spend(&state, support_ref).await {
                    Ok(attempt) => attempt,
                    Err(page) => return page.into(),
                };
                tracing::info!(support_ref, customer_ref = %attempt.customer_ref, error = %error, "consent declined");
                self.finish(
                    &attempt,
                    AttemptStatus::Declined,
                    None,
                    Some(&error),
                    support_ref,
                )
                .await;
                return pages::declined(&error, description.as_deref()).into();
            }
            // A code answers a sign-in, which this state never started.
            CallbackOutcome::Code(_) => return pages::invalid().into(),
            CallbackOutcome::Granted { tenant } => tenant,
        };
        let claimed = match claimed.as_deref().map(TenantId::parse).transpose() {
            Ok(claimed) => claimed,
            Err(_) => {
                tracing::warn!(support_ref, "consent callback with a malformed tenant");
                return pages::invalid().into();
            }
        };
        if let (Some(bound), Some(claimed)) = (&bound, &claimed)
            && bound != claimed
        {
            tracing::warn!(support_ref, customer_ref = %state.claims.customer_ref, bound = %bound, claimed = %claimed, "consent callback for another tenant than the link's");
            return pages::wrong_tenant(support_ref).into();
        }
        let attempt = match self.usable_attempt(&state, support_ref).await {
            Ok(attempt) => attempt,
            Err(page) => return page.into(),
        };
        let (redirect_uri, credential) = match self.sign_in_parts(support_ref).await {
            Ok(parts) => parts,
            Err(page) => return page.into(),
        };
        // The tenant to prove: the link's, else the one the redirect names (a forged one only
        // sends the forger to sign in where they cannot), else the administrator's own.
        let expected = bound.or(claimed);
        let authority = expected
            .as_ref()
            .map_or("organizations", TenantId::as_str)
            .to_owned();
        let proof_state = self.proof_signer.sign(&SignedState {
            nonce: attempt.nonce.clone(),
            expires: state.expires,
            claims: ConsentClaims {
                customer_ref: attempt.customer_ref.clone(),
                link: attempt.link.clone(),
                tenant: expected.map(|tenant| tenant.to_string()),
            },
        });
        let url = self.admin_sign_in.authorize_url(
            &self.settings.endpoints,
            &authority,
            &credential.client_id,
            redirect_uri,
            &proof_state,
            &attempt.nonce,
        );
        tracing::info!(support_ref, customer_ref = %attempt.customer_ref, authority = %authority, "consent given; the administrator signs in to prove the tenant");
        CallbackAnswer::Redirect(url.to_string())
    }

    /// What both steps of the administrator's sign-in need: the callback URL and the app's
    /// credential. Without them the administrator sees our error page, and nothing is spent.
    async fn sign_in_parts(
        &self,
        support_ref: &str,
    ) -> Result<(&Url, std::sync::Arc<AppCredential>), Page> {
        match (self.redirect_uri(), self.credentials.current().await) {
            (Ok(redirect_uri), Ok(credential)) => Ok((redirect_uri, credential)),
            _ => {
                tracing::error!(support_ref, "redirect URI or app credential unavailable");
                Err(pages::error(support_ref))
            }
        }
    }

    /// Spends the attempt's single-use nonce.
    async fn spend(&self, state: &ConsentState, support_ref: &str) -> Result<Onboarding, Page> {
        let spent = self.attempts.consume(&state.nonce, Utc::now()).await;
        onboarding_or_page(spent, state, support_ref)
    }

    /// Step 2: the administrator's sign-in. Its verified ID token names the tenant; only then
    /// is the nonce spent and the tenant recorded.
    async fn sign_in_answered(
        &self,
        state: ConsentState,
        outcome: CallbackOutcome,
        support_ref: &str,
    ) -> Page {
        let expected = match state
            .claims
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
        {
            Ok(expected) => expected,
            Err(_) => return pages::invalid(),
        };
        let code = match outcome {
            CallbackOutcome::Code(code) => code,
            CallbackOutcome::Declined(Refusal { error, .. }) => {
                let attempt = match self.spend(&state, support_ref).await {
                    Ok(attempt) => attempt,
                    Err(page) => return page,
                };
                tracing::info!(support_ref, customer_ref = %attempt.customer_ref, error = %error, "administrator sign-in not completed");
                self.finish(
                    &attempt,
                    AttemptStatus::Declined,
                    None,
                    Some(&error),
                    support_ref,
                )
                .await;
                return pages::sign_in_not_completed(&error, support_ref);
            }
            CallbackOutcome::Granted { .. } => return pages::invalid(),
        };
        if let Err(page) = self.usable_attempt(&state, support_ref).await {
            return page;
        }
        let (redirect_uri, credential) = match self.sign_in_parts(support_ref).await {
            Ok(parts) => parts,
            Err(page) => return page,
        };
        let authority = expected.as_ref().map_or("organizations", TenantId::as_str);
        let identity = match self
            .admin_sign_in
            .prove(
                &self.client,
                &self.id_tokens,
                authority,
                &code,
                redirect_uri,
                &credential,
                &state.nonce,
                expected.as_ref(),
            )
            .await
        {
            Ok(identity) => identity,
            Err(error) => return self.sign_in_refused(&state, &error, support_ref).await,
        };
        let tenant = identity.tenant.clone();
        // Proven: now the nonce is spent (a concurrent replay loses here).
        let attempt = match self.spend(&state, support_ref).await {
            Ok(attempt) => attempt,
            Err(page) => return page,
        };
        tracing::info!(support_ref, tenant = %tenant, customer_ref = %attempt.customer_ref, admin_oid = %identity.oid, "administrator proved the tenant");
        let proven_by = format!("administrator {}", identity.oid);
        match self.registry.get(&tenant).await {
            Ok(Some(existing))
                if existing.ownership.is_proven()
                    && existing
                        .customer_ref
                        .as_deref()
                        .is_some_and(|owner| owner != attempt.customer_ref) =>
            {
                tracing::warn!(support_ref, tenant = %tenant, customer_ref = %attempt.customer_ref, "consent for a tenant registered to another customer");
                self.finish(
                    &attempt,
                    AttemptStatus::Declined,
                    Some(&tenant),
                    Some("tenant already registered to another customer reference"),
                    support_ref,
                )
                .await;
                return pages::registered_elsewhere(support_ref);
            }
            Ok(Some(existing)) if !existing.ownership.is_proven() => {
                tracing::warn!(support_ref, tenant = %tenant, previous_customer_ref = existing.customer_ref.as_deref().unwrap_or(""), customer_ref = %attempt.customer_ref, "an unproven claim on the tenant is replaced by its administrator's consent");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(support_ref, error = %error, "registry unavailable");
                self.finish(
                    &attempt,
                    AttemptStatus::Unproven,
                    Some(&tenant),
                    Some("registry unavailable"),
                    support_ref,
                )
                .await;
                return pages::error(support_ref);
            }
        }
        match self
            .prove_and_record(&tenant, &attempt.customer_ref, Some(Ownership::AdminSignIn))
            .await
        {
            Ok(record) if record.status == TenantStatus::Active => {
                self.finish(
                    &attempt,
                    AttemptStatus::Completed,
                    Some(&tenant),
                    Some(&proven_by),
                    support_ref,
                )
                .await;
                pages::success(&tenant, &attempt.customer_ref, &record.roles)
            }
            Ok(record) => {
                let reason = record.status_reason.clone().unwrap_or_default();
                self.finish(
                    &attempt,
                    AttemptStatus::Unproven,
                    Some(&tenant),
                    Some(&format!("{proven_by}; {reason}")),
                    support_ref,
                )
                .await;
                pages::almost_done(&tenant, support_ref)
            }
            Err(error) => {
                tracing::error!(support_ref, tenant = %tenant, error = %error, "consent could not be recorded");
                pages::error(support_ref)
            }
        }
    }

    /// The sign-in did not prove the tenant: nothing is recorded and the link stays usable
    /// for the right administrator, except when Microsoft refused the code (it is spent).
    async fn sign_in_refused(
        &self,
        state: &ConsentState,
        error: &AdminSignInError,
        support_ref: &str,
    ) -> Page {
        tracing::warn!(support_ref, customer_ref = %state.claims.customer_ref, error = %error, "administrator sign-in did not prove the tenant");
        match error {
            AdminSignInError::IdToken(IdTokenError::WrongTenant { .. }) => {
                pages::wrong_tenant(support_ref)
            }
            AdminSignInError::IdToken(IdTokenError::NotAnAdministrator) => {
                pages::not_an_administrator()
            }
            AdminSignInError::IdToken(IdTokenError::KeysUnavailable(_)) => {
                pages::error(support_ref)
            }
            AdminSignInError::Redeem(entra) if entra.is_retryable() => pages::error(support_ref),
            AdminSignInError::Redeem(entra) => {
                pages::sign_in_not_completed(entra.code().as_str(), support_ref)
            }
            AdminSignInError::IdToken(id_token) => {
                pages::sign_in_not_completed(id_token.code().as_str(), support_ref)
            }
        }
    }

    async fn finish(
        &self,
        attempt: &Onboarding,
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
        ownership: Option<Ownership>,
    ) -> Result<TenantRecord, RegistryError> {
        prove_and_record(
            self.registry.as_ref(),
            &self.tokens,
            &self.settings.proof,
            tenant,
            customer_ref,
            self.settings.consent.proof_window,
            ownership,
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
        // Naming the customer is the operator's decision on whom the tenant belongs to.
        let (customer_ref, ownership) = match (&existing, customer_ref) {
            (_, Some(given)) => (valid_customer_ref(given)?, Some(Ownership::Operator)),
            (Some(record), None) => (
                record
                    .customer_ref
                    .clone()
                    .unwrap_or_else(|| record.display_name.clone()),
                None,
            ),
            (None, None) => return Err(ConsentError::NotRegistered(tenant.to_string())),
        };
        Ok(self
            .prove_and_record(tenant, &customer_ref, ownership)
            .await?)
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

/// An attempt of the onboarding flow, as the store holds it: whom it is for and which link.
struct Onboarding {
    nonce: String,
    customer_ref: String,
    link: String,
}

impl Onboarding {
    /// The onboarding part of `attempt`; an attempt of another flow is no link of ours.
    fn of(attempt: ConsentAttempt, support_ref: &str) -> Result<Onboarding, Page> {
        match attempt.flow {
            AttemptFlow::Consent { customer_ref, link } => Ok(Onboarding {
                nonce: attempt.nonce,
                customer_ref,
                link,
            }),
            AttemptFlow::SignIn { .. } => {
                tracing::warn!(support_ref, "consent callback for a sign-in attempt");
                Err(pages::invalid())
            }
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

/// The attempt read or spent for a callback, or the page that says why it cannot go on (the
/// same page whether the attempt was only read, at step 1, or spent, at step 2).
fn onboarding_or_page(
    attempt: Result<ConsentAttempt, ConsumeError>,
    state: &ConsentState,
    support_ref: &str,
) -> Result<Onboarding, Page> {
    match attempt {
        Ok(attempt) => Onboarding::of(attempt, support_ref),
        Err(ConsumeError::AlreadyUsed) => {
            tracing::warn!(support_ref, customer_ref = %state.claims.customer_ref, "consent callback replayed");
            Err(pages::replayed())
        }
        Err(ConsumeError::Expired) => Err(pages::expired()),
        Err(ConsumeError::Unknown) => {
            tracing::warn!(support_ref, "consent callback for a nonce never issued");
            Err(pages::invalid())
        }
        Err(ConsumeError::Store(error)) => {
            tracing::error!(support_ref, error = %error, "consent attempt could not be read");
            Err(pages::error(support_ref))
        }
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

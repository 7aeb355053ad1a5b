//! Proving a consent: mint a client-credentials token for the tenant the callback names and
//! check its `tid` and `roles`. Consent takes a while to reach the token service, so the proof is
//! retried for a bounded window before it is called failed.

use std::time::Duration;

use tokio::time::Instant;

use crate::ErrorCode;
use crate::api::DefenderApi;
use crate::config::Settings;
use crate::entra::provider::verify;
use crate::entra::{AppTokenError, AppTokenProvider};
use crate::tenant_id::TenantId;
use crate::tenants::{RegistryError, TenantRecord, TenantRegistry, TenantStatus, stored_now};

/// Why a tenant could not be proven consented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProofFailure {
    pub code: ErrorCode,
    pub message: String,
}

/// Errors that consent propagation explains: worth another try within the window.
fn may_be_propagating(error: &AppTokenError) -> bool {
    matches!(
        error.code(),
        ErrorCode::NotConsented | ErrorCode::RolesMissing | ErrorCode::ApiNotEnabled
    ) || matches!(error, AppTokenError::Entra(entra) if entra.is_retryable())
}

/// The union of the roles granted for `apis`, once every API's token verifies.
pub async fn prove_consent(
    tokens: &AppTokenProvider,
    settings: &Settings,
    tenant: &TenantId,
    apis: &[DefenderApi],
    window: Duration,
) -> Result<Vec<String>, ProofFailure> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        match prove_once(tokens, settings, tenant, apis).await {
            Ok(roles) => return Ok(roles),
            Err(error) if may_be_propagating(&error) && started.elapsed() + pause < window => {
                tracing::info!(tenant = %tenant, code = %error.code(), wait_ms = pause.as_millis() as u64, "consent not visible yet; retrying the proof");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(error) => {
                return Err(ProofFailure {
                    code: error.code(),
                    message: error.to_string(),
                });
            }
        }
    }
}

async fn prove_once(
    tokens: &AppTokenProvider,
    settings: &Settings,
    tenant: &TenantId,
    apis: &[DefenderApi],
) -> Result<Vec<String>, AppTokenError> {
    let mut roles: Vec<String> = Vec::new();
    for api in apis {
        // A fresh token, not a cached one: the point is what Entra says now.
        let token = tokens
            .fetch(tenant, *api, settings.token.endpoint_version)
            .await?;
        verify(&token, tenant, *api, settings.required_roles(*api))?;
        for role in &token.claims.roles {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
    }
    roles.sort();
    Ok(roles)
}

/// Proves consent for `tenant` and records the result: `active` with its roles, or (when not
/// proven) `pending` with the reason — except that an already active tenant stays active. Used by
/// the callback, the operator's re-verification and the fetch cycle (for pending tenants).
pub async fn prove_and_record(
    registry: &dyn TenantRegistry,
    tokens: &AppTokenProvider,
    settings: &Settings,
    tenant: &TenantId,
    customer_ref: &str,
    window: Duration,
) -> Result<TenantRecord, RegistryError> {
    let proof = prove_consent(tokens, settings, tenant, &settings.consent.apis, window).await;
    let existing = registry.get(tenant).await?;
    let mut record = existing
        .unwrap_or_else(|| TenantRecord::new(tenant.clone(), customer_ref, TenantStatus::Pending));
    record.customer_ref = Some(customer_ref.to_owned());
    record.updated_at = stored_now();
    match proof {
        Ok(roles) => {
            record.status = TenantStatus::Active;
            record.roles = roles;
            record.status_reason = None;
            tracing::info!(tenant = %tenant, customer_ref, roles = ?record.roles, "consent proven; tenant active");
        }
        Err(failure) => {
            tracing::warn!(tenant = %tenant, code = %failure.code, error = %failure.message, "consent not proven");
            if record.status != TenantStatus::Active {
                record.status = TenantStatus::Pending;
            }
            record.status_reason = Some(format!("{}: {}", failure.code, failure.message));
        }
    }
    registry.upsert(&record).await
}

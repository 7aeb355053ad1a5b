//! Proving a consent: mint a client-credentials token for the tenant the callback names and
//! check its `tid` and `roles`. Consent takes a while to reach the token service, so the proof is
//! retried for a bounded window before it is called failed.

use std::time::Duration;

use tokio::time::Instant;

use crate::api::DefenderApi;
use crate::config::ProofSettings;
use crate::entra::provider::verify;
use crate::entra::{AppTokenError, AppTokenProvider};
use crate::store::{
    Ownership, RegistryError, TenantRecord, TenantRegistry, TenantStatus, stored_now,
};
use crate::telemetry::metrics::{self, TokenPath};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

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
    settings: &ProofSettings,
    tenant: &TenantId,
    apis: &[DefenderApi],
    window: Duration,
) -> Result<Vec<String>, ProofFailure> {
    let started = Instant::now();
    // Never past the invocation's deadline: what is not proven by then is left to the fetch
    // cycle's re-verification.
    let window = crate::deadline::bounded(window);
    let mut pause = Duration::from_millis(500);
    loop {
        let attempt = prove_once(tokens, settings, tenant, apis);
        let outcome = match crate::deadline::invocation_deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(AppTokenError::Entra(
                        crate::entra::EntraError::DeadlineExceeded(started.elapsed()),
                    ))
                }),
            None => attempt.await,
        };
        match outcome {
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
    settings: &ProofSettings,
    tenant: &TenantId,
    apis: &[DefenderApi],
) -> Result<Vec<String>, AppTokenError> {
    let mut roles: Vec<String> = Vec::new();
    for api in apis {
        // A fresh token, not a cached one: the point is what Entra says now.
        let token = tokens
            .fetch(tenant, *api, settings.endpoint_version)
            .await?;
        verify(&token, tenant, *api, settings.access.required_roles(*api))?;
        for role in &token.claims.roles {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
    }
    roles.sort();
    Ok(roles)
}

/// Writes of one outcome tried before giving up to a concurrent writer.
const RECORD_ATTEMPTS: usize = 8;

/// Proves consent for `tenant` and records the result: `active` with its roles, or (when not
/// proven) `pending` with the reason — except that an already active tenant stays active. Used by
/// the callback and the operator's re-verification (the fetch cycle has its own, per API:
/// `fetch::Reverifier`). The
/// record is re-read after the proof and written only if nobody changed it since (a conditional
/// write, retried): an offboarding during the proof is never overwritten by a stale copy.
/// `ownership`, when given, is how the caller proved the tenant belongs to `customer_ref` (an
/// administrator's sign-in, the operator's word); `None` keeps what the record says.
pub async fn prove_and_record(
    registry: &dyn TenantRegistry,
    tokens: &AppTokenProvider,
    settings: &ProofSettings,
    tenant: &TenantId,
    customer_ref: &str,
    window: Duration,
    ownership: Option<Ownership>,
) -> Result<TenantRecord, RegistryError> {
    let proof = prove_consent(tokens, settings, tenant, &settings.apis, window).await;
    match &proof {
        Ok(roles) => {
            tracing::info!(tenant = %tenant, customer_ref, roles = ?roles, "consent proven")
        }
        Err(failure) => {
            tracing::warn!(tenant = %tenant, code = %failure.code, error = %failure.message, "consent not proven");
            metrics::token_error(TokenPath::ConsentSignin, failure.code);
        }
    }
    for _ in 0..RECORD_ATTEMPTS {
        let existing = registry.get(tenant).await?;
        let is_new = existing.is_none();
        let record = outcome(existing.clone(), &proof, tenant, customer_ref, ownership);
        let written = if is_new {
            registry.insert(&record).await.map(|()| record.clone())
        } else {
            registry.replace(&record).await.map(|()| TenantRecord {
                version: record.version + 1,
                ..record.clone()
            })
        };
        match written {
            Err(RegistryError::Conflict(_)) => continue,
            other => return other,
        }
    }
    Err(RegistryError::Conflict(tenant.to_string()))
}

/// The record to write for a proof's outcome, from the record as it stands now.
fn outcome(
    existing: Option<TenantRecord>,
    proof: &Result<Vec<String>, ProofFailure>,
    tenant: &TenantId,
    customer_ref: &str,
    ownership: Option<Ownership>,
) -> TenantRecord {
    let mut record = existing.unwrap_or_else(|| {
        let mut fresh = TenantRecord::new(tenant.clone(), customer_ref, TenantStatus::Pending);
        fresh.ownership = Ownership::Unverified;
        fresh
    });
    if let Some(ownership) = ownership {
        record.ownership = ownership;
    }
    record.customer_ref = Some(customer_ref.to_owned());
    record.updated_at = stored_now();
    match proof {
        Ok(roles) => {
            record.status = TenantStatus::Active;
            record.roles = roles.clone();
            record.status_reason = None;
        }
        Err(failure) => {
            if record.status != TenantStatus::Active {
                record.status = TenantStatus::Pending;
            }
            record.status_reason = Some(format!("{}: {}", failure.code, failure.message));
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap()
    }

    fn stored(status: TenantStatus) -> TenantRecord {
        let mut record = TenantRecord::new(tenant(), "CRM-1", status);
        record.version = 4;
        record
    }

    fn proven() -> Result<Vec<String>, ProofFailure> {
        Ok(vec!["Incident.Read.All".to_owned()])
    }

    fn refused() -> Result<Vec<String>, ProofFailure> {
        Err(ProofFailure {
            code: ErrorCode::NotConsented,
            message: "not yet".to_owned(),
        })
    }

    #[test]
    fn a_proof_activates_a_new_tenant_with_its_roles() {
        let record = outcome(
            None,
            &proven(),
            &tenant(),
            "CRM-1",
            Some(Ownership::AdminSignIn),
        );
        assert_eq!(record.ownership, Ownership::AdminSignIn);
        assert_eq!(record.status, TenantStatus::Active);
        assert_eq!(record.roles, ["Incident.Read.All"]);
        assert_eq!(record.version, 0);
    }

    #[test]
    fn the_write_is_conditional_on_the_version_read_after_the_proof() {
        let record = outcome(
            Some(stored(TenantStatus::Pending)),
            &proven(),
            &tenant(),
            "CRM-1",
            None,
        );
        assert_eq!(record.version, 4, "replace() checks this version");
        assert_eq!(record.status, TenantStatus::Active);
    }

    #[test]
    fn an_operators_decision_activates_an_unproven_claim() {
        let mut claim = stored(TenantStatus::Pending);
        claim.ownership = Ownership::Unverified;
        let decided = outcome(
            Some(claim),
            &proven(),
            &tenant(),
            "CRM-1",
            Some(Ownership::Operator),
        );
        assert_eq!(decided.status, TenantStatus::Active);
        assert_eq!(decided.ownership, Ownership::Operator);
    }

    #[test]
    fn a_new_consent_may_bring_back_an_offboarded_tenant() {
        let record = outcome(
            Some(stored(TenantStatus::Offboarded)),
            &proven(),
            &tenant(),
            "CRM-1",
            None,
        );
        assert_eq!(record.status, TenantStatus::Active);
        let unproven = outcome(
            Some(stored(TenantStatus::Offboarded)),
            &refused(),
            &tenant(),
            "CRM-1",
            None,
        );
        assert_eq!(unproven.status, TenantStatus::Pending);
        assert!(unproven.status_reason.unwrap().contains("not_consented"));
    }

    #[test]
    fn an_active_tenant_stays_active_when_a_proof_fails() {
        let record = outcome(
            Some(stored(TenantStatus::Active)),
            &refused(),
            &tenant(),
            "CRM-1",
            None,
        );
        assert_eq!(record.status, TenantStatus::Active);
        assert!(record.status_reason.is_some());
    }
}

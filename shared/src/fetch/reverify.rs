//! The fetch cycle's re-verification of pending tenants: a consent that could not be proven in
//! time at the callback (Entra slow to propagate it, throttled, down) is proven here on a later
//! cycle, so the tenant becomes active without the operator's help.

use std::sync::Arc;
use std::time::Duration;

use crate::ErrorCode;
use crate::api::DefenderApi;
use crate::config::ProofSettings;
use crate::entra::AppTokenProvider;
use crate::store::{RegistryError, TenantRecord, TenantRegistry, TenantStatus, stored_now};
use crate::tenant_id::TenantId;

/// Proves a pending tenant's consent (the fetch cycle's re-verification), one API at a time: a
/// tenant that consented to some APIs only becomes active for what it granted (its other sources
/// are then reported `roles_missing` by the plan) instead of staying pending, re-proven with a
/// token request per API on every cycle.
pub struct Reverifier {
    pub tokens: Arc<AppTokenProvider>,
    pub settings: ProofSettings,
}

/// Writes of one outcome tried before giving up to a concurrent writer.
const REVERIFY_WRITE_ATTEMPTS: usize = 8;

impl Reverifier {
    pub async fn prove(
        &self,
        tenant: &TenantId,
        apis: &[DefenderApi],
        registry: &dyn TenantRegistry,
    ) -> Result<TenantRecord, RegistryError> {
        // Only what a proven administrator (or the operator) started is the cycle's to finish:
        // an unverified claim waits for the operator's decision, and costs no token request.
        if let Some(record) = registry.get(tenant).await?
            && (record.status != TenantStatus::Pending || !record.ownership.is_proven())
        {
            return Ok(record);
        }
        let mut roles: Vec<String> = Vec::new();
        let mut granted = Vec::new();
        let mut refused = Vec::new();
        let mut passing = None;
        for api in apis {
            // No waiting here: the next cycle tries again.
            match crate::consent::proof::prove_consent(
                &self.tokens,
                &self.settings,
                tenant,
                &[*api],
                Duration::ZERO,
            )
            .await
            {
                Ok(proven) => {
                    granted.push(*api);
                    for role in proven {
                        if !roles.contains(&role) {
                            roles.push(role);
                        }
                    }
                }
                // Throttling or an outage says nothing about the grant: no verdict this cycle,
                // or a tenant would be made active without an API it did grant.
                Err(failure) if failure.code.is_transient() => {
                    passing.get_or_insert(failure);
                }
                Err(failure) => refused.push((*api, failure)),
            }
        }
        roles.sort();
        let verdict = match (passing, refused.first()) {
            (Some(failure), _) => Err(format!("{}: {}", failure.code, failure.message)),
            (None, _) if !granted.is_empty() => Ok(roles),
            (None, Some((_, failure))) => Err(format!("{}: {}", failure.code, failure.message)),
            (None, None) => Err(format!("{}: no API to prove", ErrorCode::ConfigInvalid)),
        };
        match &verdict {
            Ok(roles) => {
                tracing::info!(tenant = %tenant, roles = ?roles, granted = ?granted, refused = refused.len(), "consent proven by the fetch cycle")
            }
            Err(reason) => tracing::warn!(tenant = %tenant, reason = %reason, "consent not proven"),
        }
        // Re-read and written only if nobody changed it since (conditional write): an offboarding
        // while the proof ran is never overwritten, and only a pending tenant is promoted.
        for _ in 0..REVERIFY_WRITE_ATTEMPTS {
            let current = registry
                .get(tenant)
                .await?
                .ok_or_else(|| RegistryError::NotFound(tenant.to_string()))?;
            if current.status != TenantStatus::Pending || !current.ownership.is_proven() {
                return Ok(current);
            }
            let mut next = current.clone();
            next.updated_at = stored_now();
            match &verdict {
                Ok(roles) => {
                    next.status = TenantStatus::Active;
                    next.roles = roles.clone();
                    next.status_reason = None;
                }
                Err(reason) => next.status_reason = Some(reason.clone()),
            }
            match registry.replace(&next).await {
                Ok(()) => {
                    return Ok(TenantRecord {
                        version: next.version + 1,
                        ..next
                    });
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(RegistryError::Conflict(tenant.to_string()))
    }
}

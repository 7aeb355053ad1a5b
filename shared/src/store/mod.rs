//! The store: everything the functions keep (the tenant registry, consent and sign-in attempts,
//! checkpoints and the delivery ledger, leases, signed-in users, write-back records, hunts, the
//! callers' scopes), one port per concern, each with an embedded (SQLite) and an AWS (DynamoDB) adapter that pass the same
//! conformance suite (`tests/kit/src/conformance`). The tenant registry says which customer
//! tenants exist for the partner, and whether tokens may be minted for them.

mod attempts;
mod callers;
mod checkpoints;
mod dynamo;
mod dynamo_attempts;
mod dynamo_callers;
mod dynamo_checkpoints;
mod dynamo_hunts;
mod dynamo_items;
mod dynamo_leases;
mod dynamo_signed_in;
mod dynamo_updates;
mod hunts;
mod leases;
mod record;
mod signed_in;
mod sqlite;
mod sqlite_attempts;
mod sqlite_callers;
mod sqlite_checkpoints;
mod sqlite_hunts;
mod sqlite_leases;
mod sqlite_signed_in;
mod sqlite_updates;
mod updates;

pub(crate) use attempts::classify_failed_consume;
pub use attempts::{AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, ConsumeError};
pub use callers::{CallerLookup, CallerScope, CallerScopes, update_caller_scope};
pub use checkpoints::{
    ANSWER_HOURS_KEPT, AnswerCounts, AnswerHour, Checkpoint, Checkpoints, OpenWindow,
    RECENT_ERRORS_KEPT, RecentError,
};
pub use dynamo::{DynamoRegistry, KIND_INDEX};
pub use dynamo_callers::CALLER_PREFIX;
pub use dynamo_hunts::HUNT_PREFIX;
pub use dynamo_leases::FLEET_PREFIX;
pub use dynamo_updates::WRITEBACK_PREFIX;
pub use hunts::{
    HUNT_RETENTION_DAYS, HuntRecord, HuntRecords, HuntStatus, HuntTarget, SavedHunt,
    TenantHuntResult, TenantHuntStatus,
};
pub use leases::{FLEET_RUN, RunLeases};
pub use record::{Ownership, TenantRecord, TenantStatus, stored_now};
pub use signed_in::{SignedInUser, SignedInUsers};
pub use sqlite::SqliteRegistry;
pub use updates::{AuditEntry, KeyClaim, OwnChange, UpdateRecords};

use async_trait::async_trait;

use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("tenant {0} changed while it was being written; retry")]
    Conflict(String),
    #[error("tenant {0} is not registered")]
    NotFound(String),
    #[error("the tenant registry is unavailable: {0}")]
    Unavailable(String),
    #[error("the tenant registry holds an unreadable record: {0}")]
    Corrupt(String),
}

impl CallerError for RegistryError {
    fn code(&self) -> ErrorCode {
        match self {
            RegistryError::NotFound(_) => ErrorCode::TenantNotRegistered,
            _ => ErrorCode::RegistryUnavailable,
        }
    }
}

/// Everything the functions keep: the tenant registry, the consent attempts, fetch progress,
/// signed-in users, write-back records and hunts, in one store.
pub trait Store:
    TenantRegistry
    + ConsentAttempts
    + Checkpoints
    + SignedInUsers
    + UpdateRecords
    + HuntRecords
    + CallerScopes
    + RunLeases
{
}

impl<
    T: TenantRegistry
        + ConsentAttempts
        + Checkpoints
        + SignedInUsers
        + UpdateRecords
        + HuntRecords
        + CallerScopes
        + RunLeases,
> Store for T
{
}

/// How often an upsert re-reads and retries after losing a race.
const UPSERT_ATTEMPTS: usize = 8;

#[async_trait]
pub trait TenantRegistry: Send + Sync {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, RegistryError>;

    /// Writes a record that must not exist yet; `Conflict` if it does.
    async fn insert(&self, record: &TenantRecord) -> Result<(), RegistryError>;

    /// Writes `record` over the stored one only if the stored one still has `record.version`
    /// (optimistic concurrency); the stored version becomes `record.version + 1`.
    async fn replace(&self, record: &TenantRecord) -> Result<(), RegistryError>;

    /// Every tenant, ordered by tenant id.
    async fn list(&self) -> Result<Vec<TenantRecord>, RegistryError>;

    /// Creates or updates a tenant: concurrent calls for the same tenant each apply fully, one
    /// after the other, and leave one consistent record. `created_at` of an existing record is
    /// kept.
    async fn upsert(&self, record: &TenantRecord) -> Result<TenantRecord, RegistryError> {
        for _ in 0..UPSERT_ATTEMPTS {
            let outcome = match self.get(&record.tenant_id).await? {
                None => {
                    let fresh = TenantRecord {
                        version: 0,
                        ..record.clone()
                    };
                    self.insert(&fresh).await.map(|()| fresh)
                }
                Some(existing) => {
                    let merged = TenantRecord {
                        version: existing.version,
                        created_at: existing.created_at,
                        ..record.clone()
                    };
                    self.replace(&merged).await.map(|()| TenantRecord {
                        version: merged.version + 1,
                        ..merged
                    })
                }
            };
            match outcome {
                Err(RegistryError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(RegistryError::Conflict(record.tenant_id.to_string()))
    }

    /// Sets a tenant's status (with a reason, or none), keeping the rest.
    async fn set_status(
        &self,
        tenant: &TenantId,
        status: TenantStatus,
        reason: Option<String>,
    ) -> Result<TenantRecord, RegistryError> {
        for _ in 0..UPSERT_ATTEMPTS {
            let existing = self
                .get(tenant)
                .await?
                .ok_or_else(|| RegistryError::NotFound(tenant.to_string()))?;
            let updated = TenantRecord {
                status,
                status_reason: reason.clone(),
                updated_at: record::stored_now(),
                ..existing
            };
            match self.replace(&updated).await {
                Ok(()) => {
                    return Ok(TenantRecord {
                        version: updated.version + 1,
                        ..updated
                    });
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(RegistryError::Conflict(tenant.to_string()))
    }
}

//! What write-back keeps, per tenant: idempotency keys (a retry gets the first answer), our own
//! changes (so the fetch can tell our echo from someone else's edit) and the audit trail.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::tenant_id::TenantId;

/// An idempotency key is honoured this long after its first use.
pub const IDEMPOTENCY_RETENTION_HOURS: i64 = 24;
/// Our own changes are remembered this long: a fetch later than that delivers the record as a
/// plain update (the fetch runs every few minutes; this only bounds the table).
pub const OWN_CHANGE_RETENTION_DAYS: i64 = 30;
/// Audit entries are kept this long (then the table's TTL removes them).
pub const AUDIT_RETENTION_DAYS: i64 = 400;

/// The state of an idempotency key when a request arrives with it.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyClaim {
    /// Nobody used the key (or its earlier attempt failed or died): this request owns it now.
    Owned,
    /// An earlier request with the same key and the same content succeeded: its answer.
    Answered(serde_json::Value),
    /// An earlier request with the same key is still being applied.
    Running,
    /// The key was used for a request with other content.
    OtherRequest,
}

/// A change this project made, as Microsoft answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnChange {
    pub tenant_id: TenantId,
    /// `incident` or `alert`.
    pub kind: String,
    pub id: String,
    /// The `lastUpdateDateTime` Microsoft answered for our change, as it spelled it.
    pub last_update: String,
    pub fields: Vec<String>,
    pub request_id: String,
    pub caller: String,
    pub at: DateTime<Utc>,
}

/// One write-back request, whatever became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub tenant_id: TenantId,
    pub at: DateTime<Utc>,
    pub request_id: String,
    /// The caller's IAM principal (or `direct` when the invocation carried none).
    pub caller: String,
    /// `app`, or the analyst the change was made as (`user:<oid>`).
    pub acting_as: String,
    pub kind: String,
    pub id: String,
    /// The fields as they were before the change, and as Microsoft answered after it.
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    /// `applied`, `replayed`, or the error code.
    pub result: String,
    /// Microsoft's `request-id` for the write, to quote in a support case.
    pub microsoft_request_id: Option<String>,
}

#[async_trait]
pub trait UpdateRecords: Send + Sync {
    /// Claims `key` for a request whose content hashes to `fingerprint`, with one conditional
    /// write. A claim still running after `running_until` is taken over (its request died).
    async fn claim_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        running_until: DateTime<Utc>,
    ) -> Result<KeyClaim, RegistryError>;

    /// Stores the successful answer for `key`; a retry with the key gets it back.
    async fn answer_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        answer: &serde_json::Value,
    ) -> Result<(), RegistryError>;

    /// Frees `key` after a failure, so a retry applies the change again.
    async fn release_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
    ) -> Result<(), RegistryError>;

    /// Remembers our latest change to a target (replacing the one before).
    async fn remember_change(&self, change: &OwnChange) -> Result<(), RegistryError>;

    /// Our latest change to each of `ids` (of one `kind`) that is remembered.
    async fn own_changes(
        &self,
        tenant: &TenantId,
        kind: &str,
        ids: &[String],
    ) -> Result<HashMap<String, OwnChange>, RegistryError>;

    /// Takes the hold on one target (`incident:7`) for `holder` until `until`, with one
    /// conditional write: `false` while another request holds it. Our writers of a target's tags
    /// take turns, so none overwrites another's edit.
    async fn hold_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError>;

    /// Ends `holder`'s hold; one another request holds now is left alone.
    async fn release_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
    ) -> Result<(), RegistryError>;

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError>;

    /// A tenant's audit entries at or after `since`, oldest first.
    async fn audit(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, RegistryError>;
}

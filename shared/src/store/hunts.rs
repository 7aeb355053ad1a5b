//! What fleet hunting keeps: each hunt (its query, its tenants, how many are still to finish),
//! each tenant's result, the saved hunts and, per saved hunt and tenant, the rows already seen.
//!
//! The counter of unfinished tenants is decremented in the same atomic write that records a
//! tenant's result, once per tenant however often its message is delivered: the last finisher
//! sees it reach zero, and closing the hunt (a conditional write) lets exactly one finisher
//! write the final manifest and announce the hunt.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::tenant_id::TenantId;

/// Hunts and their per-tenant results are kept this long (then the table's TTL removes them;
/// the results in S3 follow the bucket's own lifecycle).
pub const HUNT_RETENTION_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HuntStatus {
    Running,
    Completed,
    /// The query itself was refused (a syntax or semantic error is the same in every tenant).
    Failed,
}

impl HuntStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HuntStatus::Running => "running",
            HuntStatus::Completed => "completed",
            HuntStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<HuntStatus, RegistryError> {
        match text {
            "running" => Ok(HuntStatus::Running),
            "completed" => Ok(HuntStatus::Completed),
            "failed" => Ok(HuntStatus::Failed),
            other => Err(RegistryError::Corrupt(format!(
                "unknown hunt status {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for HuntStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tenant a hunt runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntTarget {
    pub tenant_id: TenantId,
    pub customer_ref: Option<String>,
}

/// A submitted hunt. `status`, `remaining`, `error_code`, `error` and `finished_at` change as it
/// runs; the rest is fixed at submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HuntRecord {
    pub id: String,
    pub name: Option<String>,
    pub query: String,
    /// As the caller wrote it (validated), sent to Microsoft as `Timespan`.
    pub timespan: Option<String>,
    pub targets: Vec<HuntTarget>,
    pub submitted_at: DateTime<Utc>,
    /// The caller's IAM principal, `operator`, or `schedule`.
    pub submitted_by: String,
    /// The saved hunt this run belongs to: its rows are compared with the rows seen before.
    pub saved: Option<String>,
    pub status: HuntStatus,
    /// Tenants whose result is not recorded yet.
    pub remaining: u64,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantHuntStatus {
    /// Microsoft answered; the rows are written (`truncated` says whether it cut them).
    Succeeded,
    /// The query ran past Microsoft's 3 minutes in this tenant.
    TimedOut,
    /// The tenant has not granted `ThreatHunting.Read.All`.
    RolesMissing,
    /// Anything else that ended this tenant's part (the code says what).
    Failed,
}

impl TenantHuntStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantHuntStatus::Succeeded => "succeeded",
            TenantHuntStatus::TimedOut => "timed_out",
            TenantHuntStatus::RolesMissing => "roles_missing",
            TenantHuntStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for TenantHuntStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a hunt ended in one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantHuntResult {
    pub tenant_id: TenantId,
    pub customer_ref: Option<String>,
    pub status: TenantHuntStatus,
    pub rows: u64,
    /// Microsoft's answer held its row cap (100,000): more rows matched than it returned.
    pub truncated: bool,
    /// Result objects written (`part-1` … `part-{parts}`).
    pub parts: u32,
    /// A saved hunt's run: the rows not seen in earlier runs (announced on the bus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_rows: Option<u64>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Time spent querying and writing, over every attempt.
    pub duration_ms: u64,
    pub attempts: u32,
    pub finished_at: DateTime<Utc>,
}

/// A hunt kept by name, run on demand or, with `every_minutes`, on the schedule as a fleet
/// detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedHunt {
    pub name: String,
    /// The hunt request (`query`, `timespan`, `tenants`), validated when saved and at each run.
    pub request: serde_json::Value,
    pub every_minutes: Option<u32>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_hunt_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait HuntRecords: Send + Sync {
    /// Records a new hunt with `remaining` set; `Conflict` if the id exists.
    async fn create_hunt(&self, hunt: &HuntRecord) -> Result<(), RegistryError>;

    async fn hunt(&self, id: &str) -> Result<Option<HuntRecord>, RegistryError>;

    /// Records a tenant's result and decrements the hunt's counter in one atomic write: the
    /// tenants left as read after it (the last finisher reads zero), or `None` when the
    /// tenant's result was already recorded (a repeated message), in which case nothing changes.
    async fn finish_tenant(
        &self,
        hunt_id: &str,
        result: &TenantHuntResult,
    ) -> Result<Option<u64>, RegistryError>;

    /// Every recorded tenant result of a hunt, ordered by tenant id.
    async fn tenant_results(&self, hunt_id: &str) -> Result<Vec<TenantHuntResult>, RegistryError>;

    /// Moves a running hunt to `status`, once: `true` for the call that did it.
    async fn close_hunt(
        &self,
        hunt_id: &str,
        status: HuntStatus,
        error_code: Option<&str>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, RegistryError>;

    /// Creates or replaces a saved hunt (keeping its last run when it had one).
    async fn save_hunt(&self, saved: &SavedHunt) -> Result<(), RegistryError>;

    async fn saved_hunt(&self, name: &str) -> Result<Option<SavedHunt>, RegistryError>;

    /// Every saved hunt, ordered by name.
    async fn saved_hunts(&self) -> Result<Vec<SavedHunt>, RegistryError>;

    /// `true` if it existed.
    async fn delete_saved_hunt(&self, name: &str) -> Result<bool, RegistryError>;

    /// Takes a scheduled run of `name`: moves `last_run_at` from `previous` (as read) to `now`,
    /// with one conditional write, so that of two schedulers one runs it. `false` when another
    /// took it (or it was deleted).
    async fn claim_saved_run(
        &self,
        name: &str,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        hunt_id: &str,
    ) -> Result<bool, RegistryError>;

    /// Of `hashes` (rows of a saved hunt in one tenant), remembers those not seen before (or
    /// whose memory has expired) until `expires`, and answers them, in the order given.
    async fn claim_new_rows(
        &self,
        saved: &str,
        tenant: &TenantId,
        hashes: &[String],
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError>;

    /// Forgets rows claimed by a run that could not announce them, so the next run does.
    async fn release_rows(
        &self,
        saved: &str,
        tenant: &TenantId,
        hashes: &[String],
    ) -> Result<(), RegistryError>;
}

//! Fetch progress per tenant and source: the checkpoint (what is delivered, where an unfinished
//! window stopped, health figures) and the ledger (id → last-update time delivered), which tells
//! a new record from an update and drops repeats from overlapping windows.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::tenant_id::TenantId;

/// A window being paged, newest first, from `upper` down to the checkpoint's `low`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenWindow {
    /// Inclusive upper bound of the window (an API time literal).
    pub upper: String,
    /// Everything newer than this, down from `upper`, is delivered; `None` before the first page.
    pub cursor: Option<String>,
    /// Sources whose pages come in no documented order (Graph): the lower bound of the query in
    /// progress when it covers only part of the rest of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// And that query's next page (`@odata.nextLink`), so that a run cut short resumes the
    /// chain instead of reading its first pages again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tenant_id: TenantId,
    pub source: String,
    /// Records last updated at or after this are (re)queried; everything before it is delivered.
    pub low: Option<String>,
    /// An unfinished window, resumed by the next run.
    pub window: Option<OpenWindow>,
    pub last_success: Option<DateTime<Utc>>,
    /// Last-update time of the newest record delivered (lag = now − this).
    pub newest_delivered: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency counter, maintained by the store.
    pub version: u64,
}

impl Checkpoint {
    pub fn new(tenant_id: TenantId, source: impl Into<String>) -> Checkpoint {
        Checkpoint {
            tenant_id,
            source: source.into(),
            low: None,
            window: None,
            last_success: None,
            newest_delivered: None,
            consecutive_failures: 0,
            last_error: None,
            updated_at: super::stored_now(),
            version: 0,
        }
    }
}

#[async_trait]
pub trait Checkpoints: Send + Sync {
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        source: &str,
    ) -> Result<Option<Checkpoint>, RegistryError>;

    /// Writes `checkpoint` if the stored one still has `checkpoint.version` (or none exists and
    /// the version is 0); returns the stored copy with its new version.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RegistryError>;

    /// Every checkpoint (the operator's and the metrics' view).
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, RegistryError>;

    /// The delivered last-update time of each of `ids` that the ledger knows.
    async fn delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, RegistryError>;

    /// Records `(id, last_update)` pairs as delivered.
    async fn mark_delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        entries: &[(String, String)],
    ) -> Result<(), RegistryError>;

    /// Takes the pair's lease for `holder` until `until`, with one conditional write: `true` if
    /// nobody else holds an unexpired one at `now` (or `holder` already does: the lease is
    /// extended), `false` if another run owns the pair. A run writes nothing for a pair (sink,
    /// ledger, checkpoint) before it holds the lease, so two overlapping runs never deliver the
    /// same page twice; the expiry frees the pair of a run that died holding it.
    async fn take_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError>;

    /// Ends `holder`'s lease on the pair; a lease another run holds now is left alone.
    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError>;
}

//! `IncidentUpdated` on the partner's EventBridge bus: every write-back request, applied or not,
//! with the audit entry as its detail, so a SOAR can follow what was done in its name.

use async_trait::async_trait;

use crate::sink::eventbridge::Announcer;
use crate::store::AuditEntry;

pub const DETAIL_TYPE_UPDATED: &str = "IncidentUpdated";
/// The detail type a partner's workflow puts on the bus to ask for a change.
pub const DETAIL_TYPE_REQUESTED: &str = "IncidentUpdateRequested";

#[async_trait]
pub trait UpdateEvents: Send + Sync {
    /// Announces one request's audit entry. A failure is logged by the caller, never fails the
    /// update: the change is applied and audited in the store either way.
    async fn announce(&self, entry: &AuditEntry) -> Result<(), String>;
}

/// No bus configured: the store's audit trail is the record.
pub struct NoEvents;

#[async_trait]
impl UpdateEvents for NoEvents {
    async fn announce(&self, _entry: &AuditEntry) -> Result<(), String> {
        Ok(())
    }
}

/// The partner's bus.
pub type EventBridgeEvents = Announcer;

#[async_trait]
impl UpdateEvents for EventBridgeEvents {
    async fn announce(&self, entry: &AuditEntry) -> Result<(), String> {
        let detail = serde_json::to_string(entry).map_err(|error| error.to_string())?;
        self.put(DETAIL_TYPE_UPDATED, &[detail]).await
    }
}

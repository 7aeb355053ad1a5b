//! What a hunt announces on the partner's EventBridge bus: `HuntCompleted` once per hunt (its
//! summary and where the manifest is), and for a saved hunt, `HuntDetection` for each row no
//! earlier run of it had seen in that tenant: a custom detection over every customer at once.

use async_trait::async_trait;

use super::manifest::Manifest;
use crate::sink::eventbridge::Announcer;

pub const DETAIL_TYPE_COMPLETED: &str = "HuntCompleted";
pub const DETAIL_TYPE_DETECTION: &str = "HuntDetection";

#[async_trait]
pub trait HuntEvents: Send + Sync {
    async fn completed(&self, manifest: &Manifest) -> Result<(), String>;

    /// One event per row; `details` are the events' JSON texts.
    async fn detections(&self, details: &[String]) -> Result<(), String>;
}

/// No bus configured: the manifest is the record (and new rows are counted there).
pub struct NoEvents;

#[async_trait]
impl HuntEvents for NoEvents {
    async fn completed(&self, _manifest: &Manifest) -> Result<(), String> {
        Ok(())
    }

    async fn detections(&self, _details: &[String]) -> Result<(), String> {
        Ok(())
    }
}

/// The partner's bus.
pub type EventBridgeEvents = Announcer;

#[async_trait]
impl HuntEvents for EventBridgeEvents {
    async fn completed(&self, manifest: &Manifest) -> Result<(), String> {
        let detail =
            serde_json::to_string(&manifest.summary()).map_err(|error| error.to_string())?;
        self.put(DETAIL_TYPE_COMPLETED, &[detail]).await
    }

    async fn detections(&self, details: &[String]) -> Result<(), String> {
        self.put(DETAIL_TYPE_DETECTION, details).await
    }
}

//! What a hunt announces on the partner's EventBridge bus: `HuntCompleted` once per hunt (its
//! summary and where the manifest is), and for a saved hunt, `HuntDetection` for each row no
//! earlier run of it had seen in that tenant: a custom detection over every customer at once.

use async_trait::async_trait;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::manifest::Manifest;
use crate::sink::EVENT_SOURCE;

pub const DETAIL_TYPE_COMPLETED: &str = "HuntCompleted";
pub const DETAIL_TYPE_DETECTION: &str = "HuntDetection";
/// PutEvents takes at most ten entries per call.
const PUT_EVENTS_LIMIT: usize = 10;

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

pub struct EventBridgeEvents {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeEvents {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> EventBridgeEvents {
        EventBridgeEvents {
            client,
            bus: bus.into(),
        }
    }

    async fn put(&self, detail_type: &str, details: &[String]) -> Result<(), String> {
        for chunk in details.chunks(PUT_EVENTS_LIMIT) {
            let entries = chunk
                .iter()
                .map(|detail| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(EVENT_SOURCE)
                        .detail_type(detail_type)
                        .detail(detail)
                        .build()
                })
                .collect();
            let answer = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|error| DisplayErrorContext(&error).to_string())?;
            if answer.failed_entry_count > 0 {
                return Err(answer
                    .entries
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|entry| entry.error_code)
                    .unwrap_or_else(|| "the bus refused an event".into()));
            }
        }
        Ok(())
    }
}

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

//! The fan-out: one message per tenant of a hunt, on SQS in AWS (the machinery the fetch
//! already uses), or in this process when run locally. A tenant throttled by its CPU quota
//! waits in the queue (a delayed message), not in a running function.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::fetch::queue::{MAX_DELAY_SECONDS, send_batches, send_delayed};
use crate::tenant_id::TenantId;

/// SQS delays a message at most 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(MAX_DELAY_SECONDS);

/// One tenant's part of a hunt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntTask {
    pub hunt_id: String,
    pub tenant_id: TenantId,
    /// Earlier attempts of this tenant (requeued after throttling or an outage).
    #[serde(default)]
    pub attempt: u32,
    /// Time already spent on this tenant in earlier attempts.
    #[serde(default)]
    pub spent_ms: u64,
    /// The hunt's first tenant: the others are queued once it has shown that Microsoft accepts
    /// the query, so a syntax error costs one query, not one per tenant.
    #[serde(default)]
    pub probe: bool,
}

#[async_trait]
pub trait HuntQueue: Send + Sync {
    async fn send(&self, tasks: &[HuntTask]) -> Result<(), String>;
    /// Sends `task` to be delivered after `delay` (at most [`MAX_DELAY`]).
    async fn send_later(&self, task: &HuntTask, delay: Duration) -> Result<(), String>;
}

pub struct SqsHuntQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsHuntQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsHuntQueue {
        SqsHuntQueue {
            client,
            url: url.into(),
        }
    }
}

fn body(task: &HuntTask) -> String {
    serde_json::to_string(task).expect("a task serialises")
}

#[async_trait]
impl HuntQueue for SqsHuntQueue {
    async fn send(&self, tasks: &[HuntTask]) -> Result<(), String> {
        let bodies: Vec<String> = tasks.iter().map(body).collect();
        send_batches(&self.client, &self.url, &bodies).await
    }

    async fn send_later(&self, task: &HuntTask, delay: Duration) -> Result<(), String> {
        send_delayed(&self.client, &self.url, body(task), delay.as_secs()).await
    }
}

/// Tasks kept in this process, each due at a time: `HuntService::drain_local` runs them.
#[derive(Default)]
pub struct LocalQueue {
    tasks: Mutex<VecDeque<(Instant, HuntTask)>>,
}

impl LocalQueue {
    /// The tasks due now, and how long until the next one (if any waits).
    pub fn take_due(&self) -> (Vec<HuntTask>, Option<Duration>) {
        let now = Instant::now();
        let mut tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (due, waiting): (VecDeque<_>, VecDeque<_>) =
            tasks.drain(..).partition(|(at, _)| *at <= now);
        let next = waiting.iter().map(|(at, _)| at.duration_since(now)).min();
        *tasks = waiting;
        (due.into_iter().map(|(_, task)| task).collect(), next)
    }

    pub fn is_empty(&self) -> bool {
        self.tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .is_empty()
    }
}

#[async_trait]
impl HuntQueue for LocalQueue {
    async fn send(&self, tasks: &[HuntTask]) -> Result<(), String> {
        let now = Instant::now();
        self.tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend(tasks.iter().cloned().map(|task| (now, task)));
        Ok(())
    }

    async fn send_later(&self, task: &HuntTask, delay: Duration) -> Result<(), String> {
        self.tasks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push_back((Instant::now() + delay.min(MAX_DELAY), task.clone()));
        Ok(())
    }
}

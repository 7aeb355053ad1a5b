//! The fan-out queue in AWS: one SQS message per tenant and source.

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use super::fleet::{PairTask, WorkQueue};

/// SQS takes at most ten messages per batch call.
const BATCH: usize = 10;

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    /// Makes a received message visible again after `seconds` (a throttled tenant waits in the
    /// queue, not in a running Lambda).
    pub async fn delay(&self, receipt_handle: &str, seconds: u64) -> Result<(), String> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.min(43_200) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|error| {
                format!(
                    "ChangeMessageVisibility: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&error)
                )
            })
    }
}

#[async_trait::async_trait]
impl WorkQueue for SqsQueue {
    async fn enqueue(&self, tasks: &[PairTask]) -> Result<(), String> {
        for chunk in tasks.chunks(BATCH) {
            let mut pending: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(index, task)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(serde_json::to_string(task).expect("a task serialises"))
                        .build()
                        .map_err(|error| error.to_string())
                })
                .collect::<Result<_, _>>()?;
            for round in 0..5u32 {
                let answer = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await
                    .map_err(|error| {
                        format!(
                            "SendMessageBatch: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(&error)
                        )
                    })?;
                let failed: Vec<String> = answer
                    .failed()
                    .iter()
                    .map(|entry| entry.id().to_owned())
                    .collect();
                if failed.is_empty() {
                    break;
                }
                if round == 4 {
                    return Err(format!("{} messages could not be queued", failed.len()));
                }
                pending.retain(|entry| failed.iter().any(|id| id == entry.id()));
                tokio::time::sleep(std::time::Duration::from_millis(100 * 2u64.pow(round))).await;
            }
        }
        Ok(())
    }
}

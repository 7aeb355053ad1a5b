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

    /// Queues the continuation of unfinished work as a new message, visible after `delay`: a
    /// throttled tenant waits in the queue, not in a running Lambda, and a run cut by its
    /// deadline resumes at once. A new message, rather than returning the received one, keeps
    /// unfinished work from counting towards the dead-letter queue's receive limit.
    pub async fn continue_later(&self, task: &PairTask, delay_seconds: u64) -> Result<(), String> {
        let body = serde_json::to_string(task).expect("a task serialises");
        send_delayed(&self.client, &self.url, body, delay_seconds).await
    }
}

#[async_trait::async_trait]
impl WorkQueue for SqsQueue {
    async fn enqueue(&self, tasks: &[PairTask]) -> Result<(), String> {
        let bodies: Vec<String> = tasks
            .iter()
            .map(|task| serde_json::to_string(task).expect("a task serialises"))
            .collect();
        send_batches(&self.client, &self.url, &bodies).await
    }
}

/// SQS delays a message at most 15 minutes; a longer wait is met by the next delay.
pub const MAX_DELAY_SECONDS: u64 = 900;

/// Sends one message to `url`, delivered after `delay_seconds` (at most [`MAX_DELAY_SECONDS`]).
pub async fn send_delayed(
    client: &aws_sdk_sqs::Client,
    url: &str,
    body: String,
    delay_seconds: u64,
) -> Result<(), String> {
    client
        .send_message()
        .queue_url(url)
        .message_body(body)
        .delay_seconds(delay_seconds.min(MAX_DELAY_SECONDS) as i32)
        .send()
        .await
        .map(|_| ())
        .map_err(|error| {
            format!(
                "SendMessage: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&error)
            )
        })
}

/// Sends one message per body to `url`, ten per `SendMessageBatch`; the entries SQS refuses in
/// an accepted call are sent again, with backoff, four more times, then the call fails.
pub async fn send_batches(
    client: &aws_sdk_sqs::Client,
    url: &str,
    bodies: &[String],
) -> Result<(), String> {
    for chunk in bodies.chunks(BATCH) {
        let mut pending: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(index, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|error| error.to_string())
            })
            .collect::<Result<_, _>>()?;
        for round in 0..5u32 {
            let answer = client
                .send_message_batch()
                .queue_url(url)
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

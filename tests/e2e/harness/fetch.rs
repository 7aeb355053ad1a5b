//! What the ingestion end-to-end test (`e2e_fetch.rs`) needs besides the [`Stack`] (whose
//! emulator's control client also reads the truth: what the API holds, paged by the test itself):
//!
//! - [`FetchAws`]: the function's AWS world in moto — the records bucket (S3), the fan-out work
//!   queue with its dead-letter queue (SQS), and the event bus (EventBridge) with a rule whose
//!   SQS target lets the test read the announcements back;
//! - Lambda event payloads (schedule, SQS) and the `fetch-incidents` process under
//!   `cargo lambda watch` (to SIGKILL it mid-run).
//!
//! [`Stack`]: crate::Stack

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, QueueAttributeName};
use defender_partner::sink::{EVENT_SOURCE, SinkLine};
use serde_json::{Value, json};

use crate::moto::{self, Moto};
use crate::stack::guid;

/// The function's AWS resources in moto.
pub struct FetchAws {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bucket: String,
    /// The fan-out queue (`DP_FETCH_QUEUE_URL`).
    pub work_queue_url: String,
    pub work_queue_arn: String,
    pub dead_letter_queue_url: String,
    pub bus: String,
    /// Receives every event of `bus` from `defender-partner`, through a rule.
    pub capture_queue_url: String,
    /// Events drained from the capture queue so far, not yet taken.
    captured: Arc<Mutex<Vec<Value>>>,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for FetchAws {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl FetchAws {
    /// Creates the bucket, the work queue (redriving to a dead-letter queue after 3
    /// receives), the bus, and the bus's capture rule and queue.
    pub async fn create(moto: &Moto) -> Result<FetchAws> {
        let config = moto.sdk_config().await;
        let suffix = &guid()[..8];
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&config);
        let events = aws_sdk_eventbridge::Client::new(&config);

        let bucket = format!("dp-e2e-records-{suffix}");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {bucket}"))?;

        let (dead_letter_queue_url, dead_letter_arn) =
            create_queue(&sqs, &format!("dp-e2e-fetch-dlq-{suffix}"), &[]).await?;
        let redrive = json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": "3"});
        let (work_queue_url, work_queue_arn) = create_queue(
            &sqs,
            &format!("dp-e2e-fetch-{suffix}"),
            &[
                (QueueAttributeName::VisibilityTimeout, "60".to_owned()),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ],
        )
        .await?;

        let bus = format!("dp-e2e-bus-{suffix}");
        let (capture_queue_url, capture_arn) =
            create_queue(&sqs, &format!("dp-e2e-events-{suffix}"), &[]).await?;
        events
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .with_context(|| format!("creating event bus {bus}"))?;
        let rule = format!("{bus}-capture");
        events
            .put_rule()
            .name(&rule)
            .event_bus_name(&bus)
            .event_pattern(json!({"source": [EVENT_SOURCE]}).to_string())
            .send()
            .await
            .context("PutRule")?;
        events
            .put_targets()
            .rule(&rule)
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("capture")
                    .arn(capture_arn)
                    .build()?,
            )
            .send()
            .await
            .context("PutTargets")?;

        // moto's SQS slows down as a queue fills (every PutEvents delivery scans it), so the
        // capture queue is drained all along rather than read at the end.
        let captured = Arc::new(Mutex::new(Vec::new()));
        let drain = tokio::spawn(drain_events(
            sqs.clone(),
            capture_queue_url.clone(),
            captured.clone(),
        ));
        Ok(FetchAws {
            s3,
            sqs,
            bucket,
            work_queue_url,
            work_queue_arn,
            dead_letter_queue_url,
            bus,
            capture_queue_url,
            captured,
            drain,
        })
    }

    /// `DP_SINK_BUCKET`, `DP_EVENT_BUS`, `DP_FETCH_QUEUE_URL`.
    pub fn function_env(&self) -> Vec<(String, String)> {
        vec![
            ("DP_SINK_BUCKET".to_owned(), self.bucket.clone()),
            ("DP_EVENT_BUS".to_owned(), self.bus.clone()),
            ("DP_FETCH_QUEUE_URL".to_owned(), self.work_queue_url.clone()),
        ]
    }

    /// Every line stored in the bucket so far (list, get, gunzip, parse), checking each object's
    /// name and headers on the way.
    pub async fn sink_lines(&self) -> Result<Vec<SinkLine>> {
        let mut lines = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix("incidents/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.context("ListObjectsV2")?.contents() {
                let key = object.key().context("an object without a key")?.to_owned();
                if !key.ends_with(".ndjson.gz") {
                    bail!("unexpected object {key}");
                }
                let answer = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .with_context(|| format!("GetObject {key}"))?;
                if answer.content_encoding() != Some("gzip") {
                    bail!("{key} has Content-Encoding {:?}", answer.content_encoding());
                }
                let body = answer.body.collect().await?.into_bytes();
                let mut text = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut text)
                    .with_context(|| format!("{key} does not decompress"))?;
                let parsed = SinkLine::parse_all(&text)
                    .with_context(|| format!("{key} holds a line that is not a SinkLine"))?;
                if parsed.is_empty() {
                    bail!("{key} is empty");
                }
                lines.extend(parsed);
            }
        }
        Ok(lines)
    }

    /// The captured events not yet taken, once `expected` of them arrived (then one more
    /// second, for any extra) or once nothing arrived for `quiet`. Pass `expected` 0 to take
    /// whatever arrives within `quiet`.
    pub async fn take_events(&self, expected: usize, quiet: Duration) -> Result<Vec<Value>> {
        let count = || {
            self.captured
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len()
        };
        let mut seen = count();
        let mut last_arrival = Instant::now();
        loop {
            if expected > 0 && seen >= expected {
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
            if last_arrival.elapsed() > quiet {
                break;
            }
            if self.drain.is_finished() {
                bail!("the event drain stopped");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = count();
            if now > seen {
                seen = now;
                last_arrival = Instant::now();
            }
        }
        Ok(std::mem::take(
            &mut *self
                .captured
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        ))
    }

    /// Receives from the work queue until `count` messages arrived or `patience` passed;
    /// received messages stay invisible for `visibility` seconds (the queue's default when
    /// `None`).
    pub async fn receive_work(
        &self,
        count: usize,
        patience: Duration,
        visibility: Option<i32>,
    ) -> Result<Vec<Message>> {
        let started = Instant::now();
        let mut messages: Vec<Message> = Vec::new();
        while messages.len() < count && started.elapsed() < patience {
            let wanted = (count - messages.len()).min(10) as i32;
            for message in self
                .receive(&self.work_queue_url, wanted, 1, visibility)
                .await?
            {
                if !messages
                    .iter()
                    .any(|seen| seen.message_id() == message.message_id())
                {
                    messages.push(message);
                }
            }
        }
        Ok(messages)
    }

    /// The work queue's approximate counts.
    pub async fn work_queue_depth(&self) -> Result<QueueDepth> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.work_queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .context("GetQueueAttributes")?
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// Deletes processed work messages, as the Lambda event source mapping does after a batch.
    pub async fn delete_work(&self, messages: &[Message]) -> Result<()> {
        self.delete(&self.work_queue_url, messages).await
    }

    /// Empties a queue.
    pub async fn purge(&self, queue_url: &str) -> Result<()> {
        self.sqs
            .purge_queue()
            .queue_url(queue_url)
            .send()
            .await
            .with_context(|| format!("PurgeQueue {queue_url}"))?;
        Ok(())
    }

    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        wait_seconds: i32,
        visibility: Option<i32>,
    ) -> Result<Vec<Message>> {
        let answer = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds)
            .set_visibility_timeout(visibility)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .with_context(|| format!("ReceiveMessage {queue_url}"))?;
        Ok(answer.messages.unwrap_or_default())
    }

    async fn delete(&self, queue_url: &str, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, message)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let answer = self
                .sqs
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("DeleteMessageBatch")?;
            if !answer.failed().is_empty() {
                bail!("DeleteMessageBatch refused {:?}", answer.failed());
            }
        }
        Ok(())
    }
}

/// Receives and deletes every message of `queue_url`, forever, keeping the JSON bodies.
async fn drain_events(sqs: aws_sdk_sqs::Client, queue_url: String, into: Arc<Mutex<Vec<Value>>>) {
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await;
        let messages = match answer {
            Ok(answer) => answer.messages.unwrap_or_default(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter_map(|(index, message)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        let _ = sqs
            .delete_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let bodies = messages.iter().map(|message| {
            serde_json::from_str(message.body().unwrap_or_default())
                .unwrap_or_else(|_| Value::String(message.body().unwrap_or_default().to_owned()))
        });
        into.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(bodies);
    }
}

/// `ApproximateNumberOfMessages*` of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<(String, String)> {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.iter().cloned().collect()))
        .send()
        .await
        .with_context(|| format!("CreateQueue {name}"))?
        .queue_url
        .context("CreateQueue returned no URL")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("GetQueueAttributes")?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .context("no queue ARN")?;
    Ok((url, arn))
}

/// An EventBridge scheduled event, as the schedule rule delivers it (`aws_lambda_events`'
/// `CloudWatchEvent` fixture shape).
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": guid(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": moto::REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/defender-partner-fetch-schedule"],
        "detail": {}
    })
}

/// An SQS event carrying `messages` received from the queue `queue_arn`, as the Lambda event
/// source mapping builds it.
pub fn sqs_event(messages: &[Message], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|message| {
            let attributes: HashMap<String, String> = message
                .attributes()
                .map(|attributes| {
                    attributes
                        .iter()
                        .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": message.message_id(),
                "receiptHandle": message.receipt_handle(),
                "body": message.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": message.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": moto::REGION,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Live `fetch-incidents`-like processes (by `comm`, 15 characters at most) below `root`.
pub fn processes_named(root: u32, name: &str) -> Vec<i32> {
    let comm: String = name.chars().take(15).collect();
    crate::process::descendants_of(root as i32)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|text| text.trim_end() == comm)
                && crate::process::is_alive(*pid)
        })
        .collect()
}

/// SIGKILLs the function process `name` started by the `cargo lambda watch` at `watch_pid`;
/// returns its pid.
pub fn kill_function(watch_pid: u32, name: &str) -> Result<i32> {
    let found = processes_named(watch_pid, name);
    let [pid] = found[..] else {
        bail!("expected one {name} process below {watch_pid}, found {found:?}");
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own descendant.
    let sent = unsafe { libc::kill(pid, libc::SIGKILL) };
    if sent != 0 {
        bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
    }
    let started = Instant::now();
    while crate::process::is_alive(pid) {
        if started.elapsed() > Duration::from_secs(5) {
            bail!("{name} ({pid}) still alive 5 s after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// Where `text` holds something shaped like a compact JWT (`eyJ….eyJ….`): byte offsets.
pub fn jwt_like(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let is_b64 = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("eyJ") {
        let start = from + offset;
        let mut end = start;
        while end < bytes.len() && is_b64(bytes[end]) {
            end += 1;
        }
        if end - start >= 10 && bytes.get(end) == Some(&b'.') && text[end + 1..].starts_with("eyJ")
        {
            found.push(start);
        }
        from = start + 3;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_jwt_shapes_only() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiJ4In0.c2lnbmF0dXJl";
        assert_eq!(jwt_like(&format!("Bearer {token} tail")), vec![7]);
        assert!(jwt_like("eyJ alone, eyJhbGciOiJSUzI1NiJ9 without a payload").is_empty());
        assert!(jwt_like("").is_empty());
    }
}

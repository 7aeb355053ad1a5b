//! What the ingestion end-to-end test (`e2e_fetch.rs`) needs besides the [`Stack`]:
//!
//! - [`FetchAws`]: the function's AWS world in moto — the records bucket (S3), the fan-out work
//!   queue with its dead-letter queue (SQS), and the event bus (EventBridge) with a rule whose
//!   SQS target lets the test read the announcements back;
//! - [`DataApis`]: the emulator's data-API control calls (per-tenant data, settings, faults with
//!   `"match":"data"`, call counters, touches) and the truth: what the API holds, paged by the
//!   test itself with its own token;
//! - Lambda event payloads (schedule, SQS) and the `fetch-incidents` process under
//!   `cargo lambda watch` (to SIGKILL it mid-run).
//!
//! [`Stack`]: crate::Stack

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, QueueAttributeName};
use defender_partner::sink::{EVENT_SOURCE, SinkLine, Source};
use serde_json::{Value, json};

use crate::emulator::{RESOURCE_GRAPH, RESOURCE_M365D, RESOURCE_MDE};
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
/// Every line's key appears once.
#[track_caller]
pub fn keys_once(lines: &[SinkLine]) {
    let mut seen = HashSet::new();
    for line in lines {
        assert!(seen.insert(&line.key), "{} delivered twice", line.key);
    }
}

/// A tenant's lines of one source.
pub fn lines_of<'a>(lines: &'a [SinkLine], tenant: &str, source: Source) -> Vec<&'a SinkLine> {
    lines
        .iter()
        .filter(|line| line.tenant_id.as_str() == tenant && line.source == source)
        .collect()
}

/// Every (id, last-update) the API holds now (`truth`) is in the sink.
#[track_caller]
pub fn nothing_missing(
    lines: &[SinkLine],
    tenant: &str,
    source: Source,
    truth: &HashMap<String, String>,
) {
    let delivered: HashSet<(&str, &str)> = lines_of(lines, tenant, source)
        .into_iter()
        .map(|line| (line.id.as_str(), line.last_update_time.as_str()))
        .collect();
    let missing: Vec<&String> = truth
        .iter()
        .filter(|(id, time)| !delivered.contains(&(id.as_str(), time.as_str())))
        .map(|(id, _)| id)
        .collect();
    assert!(
        missing.is_empty(),
        "{tenant} {source}: {} of {} records missing, e.g. {:?}",
        missing.len(),
        truth.len(),
        &missing[..missing.len().min(5)]
    );
}

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

/// The emulator's data-API control calls.
pub struct DataApis {
    base_url: String,
    http: reqwest::Client,
}

/// The resource (token audience) of each source's API.
pub fn resource_of(source: Source) -> &'static str {
    match source {
        Source::M365dIncidents => RESOURCE_M365D,
        Source::GraphIncidents => RESOURCE_GRAPH,
        Source::MdeAlerts => RESOURCE_MDE,
        Source::GraphAlerts => RESOURCE_GRAPH,
    }
}

impl DataApis {
    pub fn new(base_url: &str) -> Result<DataApis> {
        Ok(DataApis {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/_emulator/{path}", self.base_url);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {url} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Replaces a tenant's generated data (`PUT /_emulator/tenants/{t}/data`): its records end
    /// about now.
    pub async fn set_data(&self, tenant: &str, data: Value) -> Result<()> {
        self.control(
            reqwest::Method::PUT,
            &format!("tenants/{tenant}/data"),
            Some(data),
        )
        .await
        .map(drop)
    }

    /// `PUT /_emulator/tenants/{tenant}/data/modes` (e.g. `{"omit_alerts_v2_next_link": true}`).
    pub async fn set_data_modes(&self, tenant: &str, modes: Value) -> Result<()> {
        self.control(
            reqwest::Method::PUT,
            &format!("tenants/{tenant}/data/modes"),
            Some(modes),
        )
        .await
        .map(drop)
    }

    /// `PUT /_emulator/settings` (data API settings, token lifetime).
    pub async fn settings(&self, settings: Value) -> Result<()> {
        self.control(reqwest::Method::PUT, "settings", Some(settings))
            .await
            .map(drop)
    }

    /// Queues a fault (`POST /_emulator/faults`), e.g. `{"match":"data","tenant":t,
    /// "status":429,"retry_after":1,"count":3}` or `{"match":"data","delay_ms":300,"count":9}`.
    pub async fn push_fault(&self, fault: Value) -> Result<()> {
        self.control(reqwest::Method::POST, "faults", Some(fault))
            .await
            .map(drop)
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.control(reqwest::Method::DELETE, "faults", None)
            .await
            .map(drop)
    }

    /// The data-API call counters of a tenant (`GET /_emulator/data/calls?tenant=`):
    /// `{"m365d_incidents":{"requests","ok","throttled","failed"},…}`.
    pub async fn calls(&self, tenant: &str) -> Result<Value> {
        let answer = self
            .control(
                reqwest::Method::GET,
                &format!("data/calls?tenant={tenant}"),
                None,
            )
            .await?;
        Ok(answer["calls"].clone())
    }

    /// Touches `count` incidents of a tenant (they get a new last-update time); returns their ids.
    pub async fn touch(&self, tenant: &str, count: usize) -> Result<Vec<Value>> {
        let answer = self
            .control(
                reqwest::Method::POST,
                &format!("tenants/{tenant}/touch"),
                Some(json!({ "count": count })),
            )
            .await?;
        Ok(answer["touched"].as_array().cloned().unwrap_or_default())
    }

    /// Touches `count` of a tenant's `target` (`incidents`, `mde_alerts`, `graph_alerts`).
    pub async fn touch_target(
        &self,
        tenant: &str,
        count: usize,
        target: &str,
    ) -> Result<Vec<Value>> {
        let answer = self
            .control(
                reqwest::Method::POST,
                &format!("tenants/{tenant}/touch"),
                Some(json!({ "count": count, "target": target })),
            )
            .await?;
        Ok(answer["touched"].as_array().cloned().unwrap_or_default())
    }

    /// A client-credentials token of the app for `tenant` and the API of `source`.
    pub async fn token(
        &self,
        tenant: &str,
        source: Source,
        client_id: &str,
        client_secret: &str,
    ) -> Result<String> {
        let answer: Value = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("scope", &format!("{}/.default", resource_of(source))),
            ])
            .send()
            .await?
            .json()
            .await?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no token for {tenant}: {answer}"))
    }

    /// What the API holds now for a tenant's source, read straight from it with `token`:
    /// id → last-update time, exactly as sent.
    pub async fn truth(
        &self,
        tenant: &str,
        source: Source,
        token: &str,
    ) -> Result<HashMap<String, String>> {
        let (path, id_field, time_field, top) = match source {
            Source::M365dIncidents => ("api/incidents", "incidentId", "lastUpdateTime", 100),
            Source::GraphIncidents => ("v1.0/security/incidents", "id", "lastUpdateDateTime", 50),
            Source::MdeAlerts => ("api/alerts", "id", "lastUpdateTime", 10_000),
            Source::GraphAlerts => ("v1.0/security/alerts_v2", "id", "lastUpdateDateTime", 1000),
        };
        let mut found = HashMap::new();
        let mut next = Some(format!("{}/{path}?$top={top}", self.base_url));
        let mut skip = 0;
        while let Some(url) = next.take() {
            let response = self
                .http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = response.status();
            let body: Value = response.json().await?;
            if !status.is_success() {
                bail!("reading the truth of {tenant}: {url} answered {status}: {body}");
            }
            let page = body["value"].as_array().cloned().unwrap_or_default();
            for record in &page {
                let id = &record[id_field];
                let id = id
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| id.to_string());
                let time = record[time_field]
                    .as_str()
                    .with_context(|| format!("a record without {time_field}"))?;
                if found.insert(id.clone(), time.to_owned()).is_some() {
                    bail!("the truth of {tenant} lists {id} twice");
                }
            }
            if let Some(link) = body["@odata.nextLink"].as_str() {
                next = Some(link.to_owned());
            } else if page.len() == top && source != Source::GraphIncidents {
                skip += top;
                next = Some(format!("{}/{path}?$top={top}&$skip={skip}", self.base_url));
            }
        }
        Ok(found)
    }
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

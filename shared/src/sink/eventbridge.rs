//! Records announced on an EventBridge bus: one event per record, `Source: defender-partner`,
//! `DetailType: Defender incident changed` (or `Defender alert changed`), and a summary as
//! `Detail` — the key and origin of the record plus its title, severity and status when it has
//! them, never the whole record (an event is limited to 256 KB; the record itself is in S3).
//!
//! PutEvents takes at most 10 entries and 256 KB per request and may refuse some entries of an
//! accepted request (`FailedEntryCount`, throttling or an internal failure). Those entries alone
//! are sent again, with exponential backoff, a few times; then `write` fails and the checkpoint
//! stays where it was.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Change, RecordSink, RunId, SinkError, SinkRecord};
use crate::defender::Source;
use crate::tenant_id::TenantId;

pub const EVENT_SOURCE: &str = "defender-partner";
pub const DETAIL_TYPE_INCIDENT: &str = "Defender incident changed";
pub const DETAIL_TYPE_ALERT: &str = "Defender alert changed";

/// PutEvents' limits: entries per request, and bytes per request (counted as EventBridge does:
/// source, detail type, detail, resources and 14 bytes for the time).
const MAX_ENTRIES: usize = 10;
const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Summary strings taken from the record are cut to this many characters.
const MAX_TITLE_CHARS: usize = 512;
const MAX_FIELD_CHARS: usize = 128;

/// How often failed entries are sent again, and how long to wait in between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    attempts: usize,
    min_delay: Duration,
    max_delay: Duration,
}

const DEFAULT_RETRY: Retry = Retry {
    attempts: 5,
    min_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
};

/// Announcements are sent while a caller waits for its answer: fewer, shorter retries.
const ANNOUNCE_RETRY: Retry = Retry {
    attempts: 3,
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(1),
};

pub struct EventBridgeSink {
    client: Client,
    /// A bus name or ARN.
    bus: String,
    retry: Retry,
    max_request_bytes: usize,
}

impl EventBridgeSink {
    pub fn new(client: Client, bus: impl Into<String>) -> EventBridgeSink {
        EventBridgeSink {
            client,
            bus: bus.into(),
            retry: DEFAULT_RETRY,
            max_request_bytes: MAX_REQUEST_BYTES,
        }
    }

    /// Sends refused entries up to `attempts` times in all (at least once), waiting from
    /// `min_delay` up to `max_delay` (doubling, with jitter) in between.
    pub fn with_retries(
        mut self,
        attempts: usize,
        min_delay: Duration,
        max_delay: Duration,
    ) -> EventBridgeSink {
        self.retry = Retry {
            attempts: attempts.max(1),
            min_delay,
            max_delay: max_delay.max(min_delay),
        };
        self
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }

    fn entry(
        &self,
        run: &RunId,
        record: &SinkRecord,
    ) -> Result<(PutEventsRequestEntry, usize), SinkError> {
        let detail = serde_json::to_string(&summary(run, record))
            .map_err(|error| SinkError::Unavailable(format!("encoding an event: {error}")))?;
        let detail_type = detail_type(record.source);
        let size = 14 + EVENT_SOURCE.len() + detail_type.len() + detail.len();
        if size > self.max_request_bytes {
            return Err(SinkError::TooLarge(format!(
                "the event of {} is {size} bytes; EventBridge takes at most {} per request",
                record.key(),
                self.max_request_bytes
            )));
        }
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        Ok((entry, size))
    }

    /// Sends one request's worth of entries, sending refused ones again with backoff.
    async fn put(&self, pending: Vec<PutEventsRequestEntry>) -> Result<(), SinkError> {
        put_entries(&self.client, &self.bus, self.retry, pending)
            .await
            .map_err(SinkError::Unavailable)
    }
}

/// The bus the smaller announcements beside the records go to (hunts, write-backs): each
/// feature implements its own events trait for it.
pub struct Announcer {
    client: Client,
    bus: String,
}

impl Announcer {
    pub fn new(client: Client, bus: impl Into<String>) -> Announcer {
        Announcer {
            client,
            bus: bus.into(),
        }
    }

    /// Announces `details` (JSON texts) under `detail_type`: ten entries a request, refused
    /// entries sent again with backoff, a few times. The details are far below PutEvents' byte
    /// limit.
    pub async fn put(&self, detail_type: &str, details: &[String]) -> Result<(), String> {
        for chunk in details.chunks(MAX_ENTRIES) {
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
            put_entries(&self.client, &self.bus, ANNOUNCE_RETRY, entries).await?;
        }
        Ok(())
    }
}

/// One PutEvents request of `pending`, refused entries alone sent again as `retry` says.
async fn put_entries(
    client: &Client,
    bus: &str,
    retry: Retry,
    mut pending: Vec<PutEventsRequestEntry>,
) -> Result<(), String> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(retry.min_delay)
        .with_max_delay(retry.max_delay)
        .with_max_times(retry.attempts - 1)
        .with_jitter()
        .build();
    loop {
        let sent = pending.len();
        let answer = client
            .put_events()
            .set_entries(Some(pending.clone()))
            .send()
            .await
            .map_err(|error| {
                format!(
                    "EventBridge PutEvents on bus {bus}: {}",
                    DisplayErrorContext(&error)
                )
            })?;
        if answer.failed_entry_count() == 0 {
            return Ok(());
        }
        let results = answer.entries();
        let mut reason = None;
        pending = if results.len() == sent {
            // Results are in the order of the entries sent.
            pending
                .into_iter()
                .zip(results)
                .filter(|(_, result)| result.error_code().is_some())
                .map(|(entry, result)| {
                    reason.get_or_insert_with(|| {
                        format!(
                            "{}: {}",
                            result.error_code().unwrap_or_default(),
                            result.error_message().unwrap_or_default()
                        )
                    });
                    entry
                })
                .collect()
        } else {
            // Which ones failed cannot be told: send them all again (repeats carry their key).
            pending
        };
        let failed = answer.failed_entry_count();
        let reason = reason.unwrap_or_else(|| "no error code".to_owned());
        match delays.next() {
            Some(delay) => {
                tracing::warn!(
                    bus = %bus,
                    failed,
                    sent,
                    reason = %reason,
                    "EventBridge refused some events; sending them again"
                );
                tokio::time::sleep(delay).await;
            }
            None => {
                return Err(format!(
                    "EventBridge bus {bus} refused {failed} of {sent} events after {} attempts ({reason})",
                    retry.attempts
                ));
            }
        }
    }
}

#[async_trait]
impl RecordSink for EventBridgeSink {
    async fn write(&self, run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let mut request = Vec::new();
        let mut request_bytes = 0;
        for record in batch {
            let (entry, size) = self.entry(run, record)?;
            if request.len() == MAX_ENTRIES || request_bytes + size > self.max_request_bytes {
                self.put(std::mem::take(&mut request)).await?;
                request_bytes = 0;
            }
            request.push(entry);
            request_bytes += size;
        }
        if !request.is_empty() {
            self.put(request).await?;
        }
        Ok(())
    }
}

fn detail_type(source: Source) -> &'static str {
    match source {
        Source::MdeAlerts | Source::GraphAlerts => DETAIL_TYPE_ALERT,
        Source::M365dIncidents | Source::GraphIncidents => DETAIL_TYPE_INCIDENT,
    }
}

/// An event's `Detail`.
#[derive(Serialize)]
struct Summary<'a> {
    key: String,
    tenant_id: &'a TenantId,
    source: Source,
    id: &'a str,
    last_update_time: &'a str,
    change: Change,
    redirected_to: Option<&'a str>,
    run: &'a RunId,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
}

/// The few fields of a record that an event shows, whichever API it came from.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Highlights {
    /// MDE alerts.
    title: Option<Value>,
    /// M365D incidents.
    incident_name: Option<Value>,
    /// Graph incidents.
    display_name: Option<Value>,
    severity: Option<Value>,
    status: Option<Value>,
}

fn summary<'a>(run: &'a RunId, record: &'a SinkRecord) -> Summary<'a> {
    // A record that is not an object (never seen) just has no highlights.
    let highlights: Highlights = serde_json::from_str(record.raw.get()).unwrap_or_default();
    let title = [
        highlights.title,
        highlights.incident_name,
        highlights.display_name,
    ]
    .into_iter()
    .flatten()
    .find_map(|value| match value {
        Value::String(text) => Some(cut(text, MAX_TITLE_CHARS)),
        _ => None,
    });
    Summary {
        key: record.key(),
        tenant_id: &record.tenant_id,
        source: record.source,
        id: &record.id,
        last_update_time: &record.last_update,
        change: record.change,
        redirected_to: record.redirected_to.as_deref(),
        run,
        title,
        severity: highlights.severity.and_then(scalar),
        status: highlights.status.and_then(scalar),
    }
}

/// Keeps short strings, numbers and booleans; drops objects and arrays.
fn scalar(value: Value) -> Option<Value> {
    match value {
        Value::String(text) => Some(Value::String(cut(text, MAX_FIELD_CHARS))),
        Value::Number(_) | Value::Bool(_) => Some(value),
        _ => None,
    }
}

fn cut(mut text: String, max_chars: usize) -> String {
    if let Some((index, _)) = text.char_indices().nth(max_chars) {
        text.truncate(index);
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_eventbridge::config::{BehaviorVersion, Credentials, Region};
    use serde_json::json;
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    use super::*;
    use crate::sink::test_records::{fresh_tenant, record};

    /// An EventBridge client of the fake at `server`.
    fn client_of(server: &MockServer) -> Client {
        let config = aws_sdk_eventbridge::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(server.uri())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        Client::from_conf(config)
    }

    type Plan = dyn Fn(usize, &[Value]) -> Value + Send + Sync;

    /// A fake PutEvents: records every request's entries and answers what `plan` says.
    struct FakePutEvents {
        requests: Arc<Mutex<Vec<Vec<Value>>>>,
        plan: Box<Plan>,
    }

    impl Respond for FakePutEvents {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let entries = body["Entries"].as_array().unwrap().clone();
            let mut requests = self.requests.lock().unwrap();
            let answer = (self.plan)(requests.len(), &entries);
            requests.push(entries);
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/x-amz-json-1.1")
                .set_body_string(answer.to_string())
        }
    }

    fn all_accepted(entries: &[Value]) -> Value {
        let results: Vec<Value> = (0..entries.len())
            .map(|index| json!({"EventId": format!("event-{index}")}))
            .collect();
        json!({"FailedEntryCount": 0, "Entries": results})
    }

    async fn fake(plan: Box<Plan>) -> (MockServer, Arc<Mutex<Vec<Vec<Value>>>>, EventBridgeSink) {
        let server = MockServer::start().await;
        let requests = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(header("x-amz-target", "AWSEvents.PutEvents"))
            .respond_with(FakePutEvents {
                requests: requests.clone(),
                plan,
            })
            .mount(&server)
            .await;
        let sink = EventBridgeSink::new(client_of(&server), "partner-bus").with_retries(
            3,
            Duration::from_millis(1),
            Duration::from_millis(5),
        );
        (server, requests, sink)
    }

    fn batch(count: usize) -> Vec<SinkRecord> {
        let tenant = fresh_tenant();
        (0..count)
            .map(|index| {
                let raw = json!({
                    "incidentId": index,
                    "incidentName": format!("Incident {index}\u{200b}"),
                    "severity": "High",
                    "status": "Active",
                    "lastUpdateTime": "2026-11-24T10:00:00.1234567Z",
                    "alerts": [{"huge": "x".repeat(1000)}],
                });
                record(
                    &tenant,
                    Source::M365dIncidents,
                    &index.to_string(),
                    "2026-11-24T10:00:00.1234567Z",
                    &raw.to_string(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn sends_one_summary_event_per_record_ten_at_a_time() {
        let (_server, requests, sink) = fake(Box::new(|_, entries| all_accepted(entries))).await;
        let records = batch(23);
        let run = RunId::new();
        sink.write(&run, &records).await.unwrap();
        let requests = requests.lock().unwrap();
        let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        let entries: Vec<&Value> = requests.iter().flatten().collect();
        for (entry, record) in entries.iter().zip(&records) {
            assert_eq!(entry["Source"], EVENT_SOURCE);
            assert_eq!(entry["DetailType"], DETAIL_TYPE_INCIDENT);
            assert_eq!(entry["EventBusName"], "partner-bus");
            let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
            assert_eq!(
                detail,
                json!({
                    "key": record.key(),
                    "tenant_id": record.tenant_id.as_str(),
                    "source": "m365d-incidents",
                    "id": record.id,
                    "last_update_time": "2026-11-24T10:00:00.1234567Z",
                    "change": "new",
                    "redirected_to": null,
                    "run": run.as_str(),
                    "title": format!("Incident {}\u{200b}", record.id),
                    "severity": "High",
                    "status": "Active",
                })
            );
        }
    }

    #[tokio::test]
    async fn alerts_and_graph_incidents_have_their_title() {
        let (_server, requests, sink) = fake(Box::new(|_, entries| all_accepted(entries))).await;
        let tenant = fresh_tenant();
        let records = vec![
            record(
                &tenant,
                Source::MdeAlerts,
                "da637",
                "2026-11-24T10:00:00Z",
                r#"{"id":"da637","title":"Suspicious PowerShell","severity":"Medium","status":"New"}"#,
            ),
            record(
                &tenant,
                Source::GraphIncidents,
                "7",
                "2026-11-24T10:00:00Z",
                r#"{"id":"7","displayName":"Ransomware","severity":"high","status":{"odd":true}}"#,
            ),
            record(
                &tenant,
                Source::GraphIncidents,
                "8",
                "2026-11-24T10:00:00Z",
                "[1,2]",
            ),
        ];
        sink.write(&RunId::new(), &records).await.unwrap();
        let requests = requests.lock().unwrap();
        let details: Vec<Value> = requests[0]
            .iter()
            .map(|entry| serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(requests[0][0]["DetailType"], DETAIL_TYPE_ALERT);
        assert_eq!(details[0]["title"], "Suspicious PowerShell");
        assert_eq!(details[0]["status"], "New");
        assert_eq!(requests[0][1]["DetailType"], DETAIL_TYPE_INCIDENT);
        assert_eq!(details[1]["title"], "Ransomware");
        assert_eq!(details[1].get("status"), None, "objects are not summarised");
        assert_eq!(details[2].get("title"), None);
        assert_eq!(details[2]["id"], "8");
    }

    #[tokio::test]
    async fn refused_entries_alone_are_sent_again() {
        // First answer: entries 2 and 5 refused; then everything accepted.
        let (_server, requests, sink) = fake(Box::new(|call, entries| {
            if call > 0 {
                return all_accepted(entries);
            }
            let results: Vec<Value> = (0..entries.len())
                .map(|index| match index {
                    2 => {
                        json!({"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"})
                    }
                    5 => json!({"ErrorCode": "InternalFailure", "ErrorMessage": "oops"}),
                    _ => json!({"EventId": format!("event-{index}")}),
                })
                .collect();
            json!({"FailedEntryCount": 2, "Entries": results})
        }))
        .await;
        let records = batch(7);
        sink.write(&RunId::new(), &records).await.unwrap();
        let requests = requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].len(), 7);
        let detail_id = |entry: &Value| -> String {
            let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
            detail["id"].as_str().unwrap().to_owned()
        };
        let resent: Vec<String> = requests[1].iter().map(detail_id).collect();
        assert_eq!(resent, vec!["2", "5"]);
    }

    #[tokio::test]
    async fn entries_refused_every_time_fail_the_write() {
        let (_server, requests, sink) = fake(Box::new(|_, entries| {
            let mut results: Vec<Value> = (1..entries.len())
                .map(|index| json!({"EventId": format!("event-{index}")}))
                .collect();
            results.insert(
                0,
                json!({"ErrorCode": "InternalFailure", "ErrorMessage": "try later"}),
            );
            json!({"FailedEntryCount": 1, "Entries": results})
        }))
        .await;
        let error = sink.write(&RunId::new(), &batch(4)).await.unwrap_err();
        assert!(matches!(error, SinkError::Unavailable(_)));
        let message = error.to_string();
        assert!(
            message.contains("refused 1 of 1 events after 3 attempts"),
            "{message}"
        );
        assert!(message.contains("InternalFailure"), "{message}");
        let sizes: Vec<usize> = requests.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 1, 1]);
    }

    #[tokio::test]
    async fn requests_stay_under_the_byte_limit() {
        let (_server, requests, mut sink) =
            fake(Box::new(|_, entries| all_accepted(entries))).await;
        let records = batch(9);
        let one = sink.entry(&RunId::new(), &records[0]).unwrap().1;
        sink.max_request_bytes = one * 3 + one / 2;
        sink.write(&RunId::new(), &records).await.unwrap();
        let sizes: Vec<usize> = requests.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 3]);
        sink.max_request_bytes = one / 2;
        let error = sink.write(&RunId::new(), &records).await.unwrap_err();
        assert!(matches!(error, SinkError::TooLarge(_)), "{error}");
    }

    #[tokio::test]
    async fn a_refused_request_is_reported() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(400)
                    .insert_header("content-type", "application/x-amz-json-1.1")
                    .set_body_string(
                        json!({"__type": "ResourceNotFoundException", "message": "Event bus nope does not exist."})
                            .to_string(),
                    ),
            )
            .mount(&server)
            .await;
        let sink = EventBridgeSink::new(client_of(&server), "nope");
        let error = sink.write(&RunId::new(), &batch(1)).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("ResourceNotFoundException"), "{message}");
        assert!(message.contains("bus nope"), "{message}");
    }

    #[test]
    fn long_titles_are_cut_on_a_character_boundary() {
        assert_eq!(cut("ab\u{200b}cd".to_owned(), 3), "ab\u{200b}");
        assert_eq!(cut("abc".to_owned(), 10), "abc");
    }
}

//! The AWS sinks against moto (`moto_server`, PyPI `moto[server]`): S3 passes the same
//! conformance suite as the local folder, objects are gzip NDJSON with the right headers, and
//! EventBridge events reach a rule's target (as `e2e_registry.rs` does for the DynamoDB
//! registry). moto is required: the harness fails the test, saying how to get it, when it is
//! neither in `.venv/bin` nor on PATH.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::SdkConfig;
use defender_partner::defender::Source;
use defender_partner::sink::{
    DETAIL_TYPE_ALERT, DETAIL_TYPE_INCIDENT, ENV_EVENT_BUS, ENV_SINK_BUCKET, ENV_SINK_PREFIX,
    EVENT_SOURCE, EventBridgeSink, RecordSink, RunId, S3Sink, SinkLine, sink_from_env,
};
use defender_partner::tenant_id::TenantId;
use defender_partner_e2e::moto::Moto;
use defender_partner_testkit::conformance::sink::{self as conformance, StoredObjects};
use flate2::read::GzDecoder;

/// The objects of one S3 sink, read back through the API.
struct S3Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

#[async_trait]
impl StoredObjects for S3Objects {
    async fn objects(&self, tenant: &TenantId) -> Vec<(String, Vec<u8>)> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}incidents/tenant={tenant}/", self.prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for object in page.expect("ListObjectsV2").contents() {
                let key = object.key().expect("a key").to_owned();
                let answer = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("GetObject");
                assert_eq!(answer.content_type(), Some("application/x-ndjson"), "{key}");
                assert_eq!(answer.content_encoding(), Some("gzip"), "{key}");
                assert!(key.ends_with(".ndjson.gz"), "{key}");
                let body = answer.body.collect().await.expect("a body").into_bytes();
                assert_eq!(&body[..2], &[0x1f, 0x8b], "{key} is gzip");
                let mut lines = Vec::new();
                GzDecoder::new(&body[..])
                    .read_to_end(&mut lines)
                    .unwrap_or_else(|error| panic!("{key} does not decompress: {error}"));
                let name = key
                    .strip_prefix(&self.prefix)
                    .expect("under the prefix")
                    .to_owned();
                objects.push((name, lines));
            }
        }
        objects
    }
}

async fn create_bucket(config: &SdkConfig, bucket: &str) -> aws_sdk_s3::Client {
    let client = aws_sdk_s3::Client::new(config);
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("CreateBucket");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sink_passes_the_conformance_suite() {
    let moto = Moto::start().await.expect("starting moto");
    let config = moto.sdk_config().await;
    let client = create_bucket(&config, "partner-records").await;
    let sink = S3Sink::new(
        client.clone(),
        "partner-records",
        Some("/defender/raw/".into()),
    );
    let stored = S3Objects {
        client: client.clone(),
        bucket: "partner-records".into(),
        prefix: "defender/raw/".into(),
    };
    conformance::run(&sink, &stored).await;

    // Two instances that share a run id (and so part numbers) never replace each other's
    // objects: every PutObject is conditional.
    let sinks = [
        Arc::new(S3Sink::new(
            client.clone(),
            "partner-records",
            Some("defender/raw".into()),
        )) as Arc<dyn RecordSink>,
        Arc::new(S3Sink::new(
            client.clone(),
            "partner-records",
            Some("defender/raw".into()),
        )) as Arc<dyn RecordSink>,
    ];
    conformance::concurrent_writers_never_overwrite(sinks, &stored).await;
}

#[tokio::test]
async fn s3_sink_reports_a_missing_bucket() {
    let moto = Moto::start().await.expect("starting moto");
    let config = moto.sdk_config().await;
    let sink = S3Sink::new(aws_sdk_s3::Client::new(&config), "no-such-bucket", None);
    let tenant = conformance::fresh_tenant();
    let error = sink
        .write(&RunId::new(), &conformance::sample_batch(&tenant))
        .await
        .expect_err("no bucket");
    let message = error.to_string();
    assert!(message.contains("NoSuchBucket"), "{message}");
    assert!(message.contains("DP_SINK_BUCKET"), "{message}");
}

/// A queue that receives every event of `bus` from `defender-partner`, through a rule.
async fn capture_events(config: &SdkConfig, bus: &str) -> (aws_sdk_sqs::Client, String) {
    let sqs = aws_sdk_sqs::Client::new(config);
    let events = aws_sdk_eventbridge::Client::new(config);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{bus}-capture"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|mut attributes| {
            attributes.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        })
        .expect("a queue ARN");
    events
        .create_event_bus()
        .name(bus)
        .send()
        .await
        .expect("CreateEventBus");
    events
        .put_rule()
        .name(format!("{bus}-all"))
        .event_bus_name(bus)
        .event_pattern(serde_json::json!({"source": [EVENT_SOURCE]}).to_string())
        .send()
        .await
        .expect("PutRule");
    events
        .put_targets()
        .rule(format!("{bus}-all"))
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("capture")
                .arn(queue_arn)
                .build()
                .expect("a target"),
        )
        .send()
        .await
        .expect("PutTargets");
    (sqs, queue_url)
}

/// Receives until `count` events arrived (or 30 s passed); returns their bodies.
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    count: usize,
) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    let started = Instant::now();
    while events.len() < count && started.elapsed() < Duration::from_secs(30) {
        let answer = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        for message in answer.messages() {
            events
                .push(serde_json::from_str(message.body().expect("a body")).expect("a JSON event"));
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().expect("a receipt handle"))
                .send()
                .await
                .expect("DeleteMessage");
        }
    }
    events
}

#[tokio::test]
async fn eventbridge_sink_delivers_one_summary_event_per_record() {
    let moto = Moto::start().await.expect("starting moto");
    let config = moto.sdk_config().await;
    let (sqs, queue_url) = capture_events(&config, "partner-bus").await;
    let sink = EventBridgeSink::new(aws_sdk_eventbridge::Client::new(&config), "partner-bus");
    let tenant = conformance::fresh_tenant();
    // 5 sample records, 4 times over with distinct ids: 20 events, so 10 per request.
    let mut batch = Vec::new();
    for round in 0..4 {
        for mut record in conformance::sample_batch(&tenant) {
            record.id = format!("{}-{round}", record.id);
            batch.push(record);
        }
    }
    let run = RunId::new();
    sink.write(&run, &batch).await.expect("events put");
    let events = receive(&sqs, &queue_url, batch.len()).await;
    assert_eq!(events.len(), batch.len(), "one event per record");
    let mut keys = HashSet::new();
    for event in &events {
        assert_eq!(event["source"], EVENT_SOURCE);
        let detail = &event["detail"];
        let record = batch
            .iter()
            .find(|record| record.key() == detail["key"])
            .unwrap_or_else(|| panic!("an event of a written record: {event}"));
        let expected_type = if record.source == Source::MdeAlerts {
            DETAIL_TYPE_ALERT
        } else {
            DETAIL_TYPE_INCIDENT
        };
        assert_eq!(event["detail-type"], expected_type);
        assert_eq!(detail["tenant_id"], tenant.as_str());
        assert_eq!(detail["source"], record.source.as_str());
        assert_eq!(detail["id"], record.id.as_str());
        assert_eq!(detail["last_update_time"], record.last_update.as_str());
        assert_eq!(detail["run"], run.as_str());
        assert!(
            detail.get("record").is_none(),
            "the record itself is not in the event"
        );
        keys.insert(detail["key"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.len(), batch.len());
    let titled = events
        .iter()
        .find(|event| event["detail"]["id"] == "924565-0")
        .expect("the sample incident");
    assert_eq!(
        titled["detail"]["title"],
        "Zero\u{200b}width and literal\u{200b}ZWSP"
    );
    assert_eq!(titled["detail"]["severity"], "High");
    assert_eq!(titled["detail"]["status"], "Active");
}

#[tokio::test]
async fn sink_settings_build_s3_then_eventbridge() {
    let moto = Moto::start().await.expect("starting moto");
    let config = moto.sdk_config().await;
    let client = create_bucket(&config, "settings-records").await;
    let (sqs, queue_url) = capture_events(&config, "settings-bus").await;
    let env = HashMap::from([
        (ENV_SINK_BUCKET, "settings-records"),
        (ENV_SINK_PREFIX, "raw"),
        (ENV_EVENT_BUS, "settings-bus"),
    ]);
    let sink = sink_from_env(
        |name| env.get(name).map(|value| (*value).to_owned()),
        Some(&config),
    )
    .expect("sinks built");
    let tenant = conformance::fresh_tenant();
    let batch = conformance::sample_batch(&tenant);
    sink.write(&RunId::new(), &batch).await.expect("written");
    let stored = S3Objects {
        client,
        bucket: "settings-records".into(),
        prefix: "raw/".into(),
    };
    let mut lines = Vec::new();
    for (_, body) in stored.objects(&tenant).await {
        lines.extend(SinkLine::parse_all(&body).expect("NDJSON"));
    }
    assert_eq!(lines.len(), batch.len(), "every record in S3");
    assert_eq!(
        receive(&sqs, &queue_url, batch.len()).await.len(),
        batch.len(),
        "and announced"
    );
}

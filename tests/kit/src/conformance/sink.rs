//! One behaviour, every file sink: each adapter that stores NDJSON runs this suite (the local
//! folder in `shared/tests/sink_local.rs`, S3 against moto in `shared/tests/sink_moto.rs`). It panics on the first
//! broken expectation. Every check uses fresh tenants, so the suite can run again on a store that
//! holds earlier results.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use defender_partner::defender::Source;
use defender_partner::sink::{Change, Partition, RecordSink, RunId, SinkLine, SinkRecord};
use defender_partner::tenant_id::TenantId;

/// Reads back what a sink stored.
#[async_trait]
pub trait StoredObjects: Send + Sync {
    /// Every object (file) stored for `tenant`: its name below the sink's root, without any key
    /// prefix (`incidents/tenant=…/source=…/date=…/{run}-{part}.ndjson[.gz]`), and its NDJSON
    /// text, decompressed.
    async fn objects(&self, tenant: &TenantId) -> Vec<(String, Vec<u8>)>;
}

/// The files of a [`defender_partner::sink::LocalSink`] rooted at a folder.
pub struct LocalFiles {
    root: PathBuf,
}

impl LocalFiles {
    pub fn new(root: impl Into<PathBuf>) -> LocalFiles {
        LocalFiles { root: root.into() }
    }
}

#[async_trait]
impl StoredObjects for LocalFiles {
    async fn objects(&self, tenant: &TenantId) -> Vec<(String, Vec<u8>)> {
        let mut found = Vec::new();
        let mut folders = vec![self.root.join(format!("incidents/tenant={tenant}"))];
        while let Some(folder) = folders.pop() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a readable folder entry").path();
                let hidden = path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with('.'));
                if path.is_dir() {
                    folders.push(path);
                } else if !hidden {
                    let name = relative_name(&self.root, &path);
                    found.push((name, std::fs::read(&path).expect("a readable file")));
                }
            }
        }
        found
    }
}

fn relative_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("below the root")
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

pub fn fresh_tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

/// A new record of `source` whose raw text is `raw` (which must be JSON).
pub fn record(
    tenant: &TenantId,
    source: Source,
    id: &str,
    last_update: &str,
    raw: &str,
) -> SinkRecord {
    SinkRecord {
        tenant_id: tenant.clone(),
        source,
        id: id.to_owned(),
        last_update: last_update.to_owned(),
        last_update_at: DateTime::parse_from_rfc3339(last_update)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc),
        change: Change::New,
        redirected_to: None,
        continues: None,
        change_origin: None,
        raw: RawValue::from_string(raw.to_owned()).expect("raw JSON"),
    }
}

/// Records of one tenant over every source and two dates, whose raw text has what a careless
/// re-encoding would change: unknown fields, 7-digit fractions, U+200B both literal and escaped,
/// other escapes, big and odd numbers, spacing.
pub fn sample_batch(tenant: &TenantId) -> Vec<SinkRecord> {
    let incident = concat!(
        r#"{"incidentId":924565,"redirectIncidentId":null,"incidentName":"Zero\u200bwidth and literal"#,
        "\u{200b}",
        r#"ZWSP","createdTime":"2026-11-24T08:01:02.1234567Z","lastUpdateTime":"2026-11-24T23:59:59.9999999Z","#,
        r#""severity":"High","status":"Active","determination":"NotAvailable","#,
        r#""unknownFutureField":{"nested":[1,2.50,1E+2,-0.0,12345678901234567890123],"empty":{},"#,
        r#""text":"\ud83d\ude00 caf\u00e9 \/ \"quoted\" tab\tend"},"tags" : [ "spaced" ,"keys"  ]}"#
    );
    let mut merged = record(
        tenant,
        Source::M365dIncidents,
        "924566",
        "2026-11-25T00:00:00.0000001Z",
        r#"{"incidentId":924566,"redirectIncidentId":924565,"lastUpdateTime":"2026-11-25T00:00:00.0000001Z","status":"Redirected"}"#,
    );
    merged.change = Change::Updated;
    merged.redirected_to = Some("924565".to_owned());
    vec![
        record(
            tenant,
            Source::M365dIncidents,
            "924565",
            "2026-11-24T23:59:59.9999999Z",
            incident,
        ),
        merged,
        record(
            tenant,
            Source::GraphIncidents,
            "2972395",
            "2026-11-24T10:00:00.1234567Z",
            concat!(
                r##"{"@odata.type":"#microsoft.graph.security.incident","id":"2972395","displayName":"Multi-stage\u200b incident","##,
                r#""lastUpdateDateTime":"2026-11-24T10:00:00.1234567Z","customTags":[],"x-new":true}"#
            ),
        ),
        record(
            tenant,
            Source::MdeAlerts,
            "da638000000000000000_-1234567890",
            "2026-11-24T10:00:00Z",
            concat!(
                r#"{"id":"da638000000000000000_-1234567890","title":"Suspicious "#,
                "\u{200b}",
                r#"process","lastUpdateTime":"2026-11-24T10:00:00Z","evidence":[]}"#
            ),
        ),
        record(
            tenant,
            Source::M365dIncidents,
            "924567",
            "2026-11-24T12:00:00.5Z",
            r#"{"incidentId":924567,"lastUpdateTime":"2026-11-24T12:00:00.5Z"}"#,
        ),
    ]
}

pub async fn run(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    a_batch_reads_back_byte_for_byte(sink, stored).await;
    records_land_in_their_partition(sink, stored).await;
    keys_are_stable(sink, stored).await;
    writes_in_one_run_never_overwrite(sink, stored).await;
    an_empty_batch_writes_nothing(sink, stored).await;
    multi_line_records_stay_on_one_line(sink, stored).await;
}

/// An object's name split into its partition folder, run and part number.
fn parse_name(name: &str) -> (String, String, u64) {
    let (folder, file) = name.rsplit_once('/').expect("a name with a folder");
    let stem = file
        .strip_suffix(".ndjson.gz")
        .or_else(|| file.strip_suffix(".ndjson"))
        .unwrap_or_else(|| panic!("{name} is not an .ndjson or .ndjson.gz object"));
    let (run, part) = stem.rsplit_once('-').expect("{run}-{part}");
    assert!(
        part.len() >= 5,
        "{name}: part numbers have at least 5 digits"
    );
    (
        folder.to_owned(),
        run.to_owned(),
        part.parse()
            .unwrap_or_else(|_| panic!("{name}: part is not a number")),
    )
}

/// Every stored line for `tenant` with the name of its object and its exact text.
async fn stored_lines(
    stored: &dyn StoredObjects,
    tenant: &TenantId,
) -> Vec<(String, String, SinkLine)> {
    let mut lines = Vec::new();
    for (name, body) in stored.objects(tenant).await {
        assert!(body.ends_with(b"\n"), "{name} ends with a line break");
        let text = String::from_utf8(body).unwrap_or_else(|_| panic!("{name} is UTF-8"));
        for line in text.lines() {
            let parsed: SinkLine = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{name}: unreadable line {line}: {error}"));
            lines.push((name.clone(), line.to_owned(), parsed));
        }
    }
    lines
}

async fn a_batch_reads_back_byte_for_byte(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    let tenant = fresh_tenant();
    let batch = sample_batch(&tenant);
    let run = RunId::new();
    let before = Utc::now() - chrono::Duration::seconds(1);
    sink.write(&run, &batch)
        .await
        .expect("the batch is written");
    let after = Utc::now() + chrono::Duration::seconds(1);
    let lines = stored_lines(stored, &tenant).await;
    assert_eq!(lines.len(), batch.len(), "one line per record");
    for record in &batch {
        let matching: Vec<_> = lines
            .iter()
            .filter(|(_, _, line)| line.id == record.id && line.source == record.source)
            .collect();
        assert_eq!(matching.len(), 1, "record {} stored once", record.key());
        let (name, text, line) = matching[0];
        assert_eq!(
            line.record.get(),
            record.raw.get(),
            "{name}: record changed"
        );
        assert!(
            text.contains(record.raw.get()),
            "{name}: the line holds the record's bytes verbatim"
        );
        assert_eq!(line.key, record.key());
        assert_eq!(line.tenant_id, tenant);
        assert_eq!(line.last_update_time, record.last_update, "kept as sent");
        assert_eq!(line.change, record.change);
        assert_eq!(line.redirected_to, record.redirected_to);
        assert_eq!(line.run, run);
        assert!(
            before <= line.written_at && line.written_at <= after,
            "written_at {} is the time of the write",
            line.written_at
        );
        let value: serde_json::Value = serde_json::from_str(text).expect("a JSON line");
        let fields: BTreeSet<&str> = value
            .as_object()
            .expect("a line is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "key",
                "tenant_id",
                "source",
                "id",
                "last_update_time",
                "change",
                "redirected_to",
                "written_at",
                "run",
                "record"
            ])
        );
    }
}

async fn records_land_in_their_partition(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    let (first, second) = (fresh_tenant(), fresh_tenant());
    let mut batch = sample_batch(&first);
    batch.extend(sample_batch(&second));
    // Interleave tenants: grouping must not depend on the batch's order.
    batch.sort_by(|a, b| a.id.cmp(&b.id));
    let run = RunId::new();
    sink.write(&run, &batch)
        .await
        .expect("the batch is written");
    for tenant in [&first, &second] {
        let expected: BTreeMap<Partition, usize> = batch
            .iter()
            .filter(|record| record.tenant_id == *tenant)
            .fold(BTreeMap::new(), |mut counts, record| {
                *counts.entry(record.partition()).or_default() += 1;
                counts
            });
        let objects = stored.objects(tenant).await;
        assert_eq!(
            objects.len(),
            expected.len(),
            "one object per partition of one write: {:?}",
            objects.iter().map(|(name, _)| name).collect::<Vec<_>>()
        );
        let lines = stored_lines(stored, tenant).await;
        for (name, _, line) in &lines {
            let (folder, object_run, _) = parse_name(name);
            assert_eq!(object_run, run.as_str(), "{name}");
            let record = batch
                .iter()
                .find(|record| record.key() == line.key)
                .expect("a line of a written record");
            assert_eq!(
                folder,
                record.partition().path(),
                "{name} holds {}",
                line.key
            );
            assert_eq!(line.source, record.source);
        }
        assert_eq!(lines.len(), expected.values().sum::<usize>());
    }
    // The date is the UTC day of the last update, to the last 100 ns.
    let names: Vec<String> = stored
        .objects(&first)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for folder in [
        format!("incidents/tenant={first}/source=m365d-incidents/date=2026-11-24"),
        format!("incidents/tenant={first}/source=m365d-incidents/date=2026-11-25"),
        format!("incidents/tenant={first}/source=graph-incidents/date=2026-11-24"),
        format!("incidents/tenant={first}/source=mde-alerts/date=2026-11-24"),
    ] {
        assert!(
            names
                .iter()
                .any(|name| name.starts_with(&format!("{folder}/"))),
            "no object in {folder}: {names:?}"
        );
    }
}

async fn keys_are_stable(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    let tenant = fresh_tenant();
    let batch = sample_batch(&tenant);
    assert_eq!(
        batch[0].key(),
        format!("{tenant}/m365d-incidents/924565/2026-11-24T23:59:59.9999999Z")
    );
    assert_eq!(batch[0].key(), batch[0].clone().key());
    // The same records written by two runs (a re-run after a crash) carry the same keys.
    let (first_run, second_run) = (RunId::new(), RunId::new());
    sink.write(&first_run, &batch).await.expect("first write");
    sink.write(&second_run, &batch).await.expect("second write");
    let lines = stored_lines(stored, &tenant).await;
    assert_eq!(lines.len(), 2 * batch.len());
    for record in &batch {
        let runs: BTreeSet<&str> = lines
            .iter()
            .filter(|(_, _, line)| line.key == record.key())
            .map(|(_, _, line)| line.run.as_str())
            .collect();
        assert_eq!(
            runs,
            BTreeSet::from([first_run.as_str(), second_run.as_str()])
        );
    }
}

async fn writes_in_one_run_never_overwrite(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    let tenant = fresh_tenant();
    let run = RunId::new();
    let page = |first: u32| -> Vec<SinkRecord> {
        (first..first + 3)
            .map(|id| {
                record(
                    &tenant,
                    Source::M365dIncidents,
                    &id.to_string(),
                    "2026-11-24T10:00:00.1234567Z",
                    &format!(
                        r#"{{"incidentId":{id},"lastUpdateTime":"2026-11-24T10:00:00.1234567Z"}}"#
                    ),
                )
            })
            .collect()
    };
    let (first, second) = (page(100), page(200));
    sink.write(&run, &first).await.expect("first page");
    sink.write(&run, &second).await.expect("second page");
    // The first page again, as a retry after a failure would send it.
    sink.write(&run, &first).await.expect("first page again");
    let objects = stored.objects(&tenant).await;
    assert_eq!(objects.len(), 3, "one object per write");
    let parts: BTreeSet<u64> = objects.iter().map(|(name, _)| parse_name(name).2).collect();
    assert_eq!(parts.len(), 3, "distinct part numbers");
    let ids: Vec<String> = stored_lines(stored, &tenant)
        .await
        .into_iter()
        .map(|(_, _, line)| line.id)
        .collect();
    for record in first.iter().chain(&second) {
        let expected = if first.iter().any(|r| r.id == record.id) {
            2
        } else {
            1
        };
        assert_eq!(
            ids.iter().filter(|id| **id == record.id).count(),
            expected,
            "record {}",
            record.id
        );
    }
}

async fn an_empty_batch_writes_nothing(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    sink.write(&RunId::new(), &[])
        .await
        .expect("nothing to write");
    // A tenant nobody wrote for has no objects at all.
    assert!(stored.objects(&fresh_tenant()).await.is_empty());
}

async fn multi_line_records_stay_on_one_line(sink: &dyn RecordSink, stored: &dyn StoredObjects) {
    let tenant = fresh_tenant();
    let pretty = "{\r\n  \"id\": \"pretty\",\n  \"lastUpdateDateTime\": \"2026-11-24T10:00:00Z\",\n  \"text\": \"line\\nbreak\"\n}";
    let batch = vec![record(
        &tenant,
        Source::GraphIncidents,
        "pretty",
        "2026-11-24T10:00:00Z",
        pretty,
    )];
    sink.write(&RunId::new(), &batch).await.expect("written");
    let lines = stored_lines(stored, &tenant).await;
    assert_eq!(lines.len(), 1, "the record is one line");
    let record = &lines[0].2.record;
    assert_eq!(record.get(), pretty.replace(['\r', '\n'], ""));
    let read: serde_json::Value = serde_json::from_str(record.get()).unwrap();
    let sent: serde_json::Value = serde_json::from_str(pretty).unwrap();
    assert_eq!(read, sent, "same value");
}

/// Two sinks (two instances of the function) using one run id write to the same partition at
/// once: every write keeps its own object.
pub async fn concurrent_writers_never_overwrite(
    sinks: [Arc<dyn RecordSink>; 2],
    stored: &dyn StoredObjects,
) {
    const WRITES: u32 = 6;
    let tenant = fresh_tenant();
    let run = RunId::new();
    let mut tasks = Vec::new();
    for (index, sink) in sinks.into_iter().enumerate() {
        let (tenant, run) = (tenant.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            for write in 0..WRITES {
                let id = format!("{index}-{write}");
                let batch = vec![record(
                    &tenant,
                    Source::MdeAlerts,
                    &id,
                    "2026-11-24T10:00:00Z",
                    &format!(r#"{{"id":"{id}"}}"#),
                )];
                sink.write(&run, &batch).await.expect("written");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let objects = stored.objects(&tenant).await;
    assert_eq!(
        objects.len(),
        2 * WRITES as usize,
        "no object replaced another"
    );
    let ids: BTreeSet<String> = stored_lines(stored, &tenant)
        .await
        .into_iter()
        .map(|(_, _, line)| line.id)
        .collect();
    assert_eq!(ids.len(), 2 * WRITES as usize);
}

//! The stored form shared by the file adapters: one JSON object per line (NDJSON), grouped into
//! partitions by tenant, source and the UTC date of the record's last update.

use std::collections::BTreeMap;
use std::io::{self, Write};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Change, RunId, SinkRecord};
use crate::defender::Source;
use crate::tenant_id::TenantId;

/// Top folder of every stored object (alerts included: one tree for everything fetched).
pub(crate) const ROOT_FOLDER: &str = "incidents";

/// Where a record is stored: one folder (or key prefix) per tenant, source and day.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub tenant_id: TenantId,
    pub source: Source,
    /// UTC date of the record's last update.
    pub date: NaiveDate,
}

impl Partition {
    /// `incidents/tenant={id}/source={name}/date={yyyy-mm-dd}`, without a trailing slash.
    pub fn path(&self) -> String {
        format!(
            "{ROOT_FOLDER}/tenant={}/source={}/date={}",
            self.tenant_id,
            self.source,
            self.date.format("%Y-%m-%d")
        )
    }

    /// The name of part `part` of run `run` in this partition, e.g.
    /// `incidents/tenant=…/source=…/date=…/{run}-00001.ndjson` plus `extension`.
    pub fn object_name(&self, run: &RunId, part: u64, extension: &str) -> String {
        format!("{}/{run}-{part:05}{extension}", self.path())
    }
}

/// One stored line, as a consumer reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkLine {
    /// `{tenant}/{source}/{id}/{last_update_time}`: equal for repeats of one record version.
    pub key: String,
    pub tenant_id: TenantId,
    pub source: Source,
    pub id: String,
    /// Exactly as the API sent it.
    pub last_update_time: String,
    pub change: Change,
    pub redirected_to: Option<String>,
    /// The retiring source's record this one continues (see [`super::Continues`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<super::Continues>,
    /// Our own change, echoed back (see [`super::ChangeOrigin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_origin: Option<super::ChangeOrigin>,
    pub written_at: DateTime<Utc>,
    pub run: RunId,
    /// The record as received. A record that arrived spread over several lines has its line
    /// breaks (insignificant whitespace in JSON) removed; everything else is byte for byte.
    pub record: Box<RawValue>,
}

impl SinkLine {
    /// Reads every line of an NDJSON text (blank lines skipped).
    pub fn parse_all(text: &[u8]) -> Result<Vec<SinkLine>, serde_json::Error> {
        text.split(|byte| *byte == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(serde_json::from_slice)
            .collect()
    }
}

/// The line as written: borrowed from the record, serialised once.
#[derive(Serialize)]
struct LineOut<'a> {
    key: String,
    tenant_id: &'a TenantId,
    source: Source,
    id: &'a str,
    last_update_time: &'a str,
    change: Change,
    redirected_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continues: Option<&'a super::Continues>,
    #[serde(skip_serializing_if = "Option::is_none")]
    change_origin: Option<&'a super::ChangeOrigin>,
    written_at: &'a str,
    run: &'a RunId,
    record: &'a RawValue,
}

/// The time written into every line of one `write` call.
pub(crate) fn written_at_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The batch's records by partition, each keeping the batch's order.
pub(crate) fn group(batch: &[SinkRecord]) -> BTreeMap<Partition, Vec<&SinkRecord>> {
    let mut groups: BTreeMap<Partition, Vec<&SinkRecord>> = BTreeMap::new();
    for record in batch {
        groups.entry(record.partition()).or_default().push(record);
    }
    groups
}

/// Writes one NDJSON line per record to `out`.
pub(crate) fn write_lines<W: Write>(
    out: &mut W,
    run: &RunId,
    written_at: &str,
    records: &[&SinkRecord],
) -> io::Result<()> {
    for record in records {
        let text = record.raw.get();
        // JSON escapes control characters inside strings, so a CR or LF in a record is
        // whitespace between tokens: dropping it keeps the value and the line intact.
        let flattened;
        let raw: &RawValue = if text.contains(['\n', '\r']) {
            flattened =
                RawValue::from_string(text.replace(['\n', '\r'], "")).map_err(io::Error::other)?;
            &flattened
        } else {
            &record.raw
        };
        let line = LineOut {
            key: record.key(),
            tenant_id: &record.tenant_id,
            source: record.source,
            id: &record.id,
            last_update_time: &record.last_update,
            change: record.change,
            redirected_to: record.redirected_to.as_deref(),
            continues: record.continues.as_ref(),
            change_origin: record.change_origin.as_ref(),
            written_at,
            run,
            record: raw,
        };
        serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(raw: &str, last_update: &str) -> SinkRecord {
        SinkRecord {
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            source: Source::GraphIncidents,
            id: "42".into(),
            last_update: last_update.into(),
            last_update_at: DateTime::parse_from_rfc3339(last_update)
                .unwrap()
                .with_timezone(&Utc),
            change: Change::New,
            redirected_to: Some("41".into()),
            continues: None,
            change_origin: None,
            raw: RawValue::from_string(raw.into()).unwrap(),
        }
    }

    #[test]
    fn a_line_has_the_documented_fields_in_order() {
        let record = record(r#"{"id" : "42","x":1.50}"#, "2026-11-24T23:59:59.9999999Z");
        let run: RunId = "run-1".parse().unwrap();
        let mut out = Vec::new();
        write_lines(&mut out, &run, "2026-11-25T05:12:00.000Z", &[&record]).unwrap();
        let expected = concat!(
            r#"{"key":"72f988bf-86f1-41af-91ab-2d7cd011db47/graph-incidents/42/2026-11-24T23:59:59.9999999Z","#,
            r#""tenant_id":"72f988bf-86f1-41af-91ab-2d7cd011db47","source":"graph-incidents","id":"42","#,
            r#""last_update_time":"2026-11-24T23:59:59.9999999Z","change":"new","redirected_to":"41","#,
            r#""written_at":"2026-11-25T05:12:00.000Z","run":"run-1","record":{"id" : "42","x":1.50}}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        let parsed = SinkLine::parse_all(&out).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].record.get(), r#"{"id" : "42","x":1.50}"#);
        assert_eq!(parsed[0].key, record.key());
    }

    #[test]
    fn a_line_names_the_record_it_continues() {
        let mut record = record("{}", "2026-11-24T23:59:59Z");
        record.source = Source::GraphAlerts;
        record.continues = Some(super::super::Continues {
            source: Source::MdeAlerts,
            id: "da637".into(),
        });
        let run: RunId = "run-1".parse().unwrap();
        let mut out = Vec::new();
        write_lines(&mut out, &run, "2026-11-25T05:12:00.000Z", &[&record]).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.contains(r#""continues":{"source":"mde-alerts","id":"da637"}"#),
            "{text}"
        );
        let parsed = SinkLine::parse_all(&out).unwrap();
        assert_eq!(parsed[0].continues, record.continues);
    }

    #[test]
    fn partitions_use_the_utc_date() {
        let record = record("{}", "2026-11-25T00:30:00.0000000+01:00");
        assert_eq!(
            record.partition().path(),
            "incidents/tenant=72f988bf-86f1-41af-91ab-2d7cd011db47/source=graph-incidents/date=2026-11-24"
        );
        let run: RunId = "r".parse().unwrap();
        assert!(
            record
                .partition()
                .object_name(&run, 7, ".ndjson")
                .ends_with("/date=2026-11-24/r-00007.ndjson")
        );
    }

    #[test]
    fn multi_line_records_are_flattened() {
        let record = record(
            "{\r\n  \"a\": \"x\\ny\",\n  \"b\": [1,\n2]\n}",
            "2026-11-24T10:00:00Z",
        );
        let mut out = Vec::new();
        write_lines(&mut out, &RunId::new(), &written_at_now(), &[&record]).unwrap();
        assert_eq!(out.iter().filter(|byte| **byte == b'\n').count(), 1);
        let parsed = SinkLine::parse_all(&out).unwrap();
        assert_eq!(
            parsed[0].record.get(),
            "{  \"a\": \"x\\ny\",  \"b\": [1,2]}"
        );
    }
}

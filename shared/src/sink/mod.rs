//! Where records go: the sink port. The fetch engine hands each page of changed records to a
//! [`RecordSink`] and advances its checkpoint only after `write` returns `Ok`, so every adapter
//! makes a batch durable before answering.
//!
//! Adapters, side by side: [`LocalSink`] (NDJSON files in a folder, the embedded default),
//! [`S3Sink`] (gzip NDJSON objects), [`EventBridgeSink`] (one summary event per record) and
//! [`FanOutSink`] (several of them, in order). [`sink_from_env`] picks them from the settings.
//!
//! Every stored line has the same shape ([`SinkLine`]): the record's stable key, where it came
//! from, and the record itself exactly as the API sent it. A re-run may write a record again; its
//! key (tenant, source, id, last-update time) lets consumers drop the repeat.

mod build;
pub mod eventbridge;
mod fanout;
mod lines;
mod local;
mod s3;
#[cfg(test)]
mod test_records;

/// The sink's settings, read with the others in `crate::config`.
pub use crate::config::{
    DEFAULT_SINK_DIR, ENV_EVENT_BUS, ENV_SINK_BUCKET, ENV_SINK_DIR, ENV_SINK_PREFIX, SinkSettings,
};
pub(crate) use build::s3_client;
pub use build::sink_from_env;
pub use eventbridge::{DETAIL_TYPE_ALERT, DETAIL_TYPE_INCIDENT, EVENT_SOURCE, EventBridgeSink};
pub use fanout::FanOutSink;
pub use lines::{Partition, SinkLine};
pub use local::LocalSink;
pub use s3::S3Sink;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::defender::Source;
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// Whether the sink sees a record for the first time or a newer version of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    New,
    Updated,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Updated => "updated",
        }
    }
}

/// One record on its way out.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    pub tenant_id: TenantId,
    pub source: Source,
    /// The record's id as a string (M365D's integer `incidentId` is stringified).
    pub id: String,
    /// The record's last-update time exactly as the API sent it (7-digit fractions kept).
    pub last_update: String,
    /// The same time, parsed: it picks the record's date partition.
    pub last_update_at: DateTime<Utc>,
    pub change: Change,
    /// For a merged incident, the incident it was merged into.
    pub redirected_to: Option<String>,
    /// The record of a retiring source this one continues under another id (a Graph alert that
    /// `mde-alerts` delivered as an MDE alert).
    pub continues: Option<Continues>,
    /// This version is a change we made (write-back) and nothing else changed since: a consumer
    /// syncing both ways drops it as its own echo.
    pub change_origin: Option<ChangeOrigin>,
    /// The record as received, byte for byte.
    pub raw: Box<RawValue>,
}

/// Who asked for the change that produced a record's version (see `writeback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOrigin {
    /// `update-incident`'s request id (its answer and audit entry carry it too).
    pub request_id: String,
    /// The caller's IAM principal, `events:<source>@<account>`, or `direct-invoke`.
    pub caller: String,
    /// The fields the request changed.
    pub fields: Vec<String>,
}

/// A record delivered by another source that this one continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continues {
    pub source: Source,
    pub id: String,
}

impl SinkRecord {
    /// The stable key of this version of the record: `{tenant}/{source}/{id}/{last_update}`.
    /// Writing the same version twice gives the same key, so consumers can drop repeats.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.tenant_id, self.source, self.id, self.last_update
        )
    }

    /// The partition (tenant, source, UTC date of the last update) this record is stored in.
    pub fn partition(&self) -> Partition {
        Partition {
            tenant_id: self.tenant_id.clone(),
            source: self.source,
            date: self.last_update_at.date_naive(),
        }
    }
}

/// Names one run of the fetch job in stored file names and lines, e.g.
/// `20261125T051200Z-1a2b3c4d`. Only `[A-Za-z0-9_-]`, so it is safe in paths and object keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// A new id: the UTC start time and 8 random hex digits.
    pub fn new() -> RunId {
        let random = uuid::Uuid::new_v4().simple().to_string();
        RunId(format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            &random[..8]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if valid {
            Ok(RunId(text.to_owned()))
        } else {
            Err(format!(
                "run id {:?} must be 1 to 64 characters of A-Z, a-z, 0-9, - and _",
                text.chars().take(80).collect::<String>()
            ))
        }
    }
}

impl TryFrom<String> for RunId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<RunId> for String {
    fn from(value: RunId) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The destination refused or could not be reached; the batch is not (fully) written.
    #[error("the record sink is unavailable: {0}")]
    Unavailable(String),
    /// A record cannot be written to this destination whatever the retries.
    #[error("a record is too large for the sink: {0}")]
    TooLarge(String),
}

impl CallerError for SinkError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

#[async_trait]
pub trait RecordSink: Send + Sync {
    /// Writes one batch durably: when this returns Ok, the records survive a crash.
    ///
    /// A batch may span tenants, sources and dates; each adapter groups it. Writing the same
    /// batch again (a re-run after a crash) never overwrites what an earlier write stored.
    async fn write(&self, run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_names_are_lower_case() {
        assert_eq!(serde_json::to_value(Change::Updated).unwrap(), "updated");
        assert_eq!(serde_json::to_value(Change::New).unwrap(), "new");
    }

    #[test]
    fn run_ids_are_safe_names() {
        let run = RunId::new();
        let text = run.to_string();
        assert_eq!(text.len(), "20261125T051200Z-1a2b3c4d".len(), "{text}");
        assert_eq!(text.parse::<RunId>().unwrap(), run);
        assert_ne!(RunId::new(), run);
        for bad in ["", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(bad.parse::<RunId>().is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<RunId>("\"../etc\"").is_err());
    }

    #[test]
    fn errors_have_a_code() {
        assert_eq!(
            SinkError::Unavailable("x".into()).code(),
            ErrorCode::Internal
        );
    }
}

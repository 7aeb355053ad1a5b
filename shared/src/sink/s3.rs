//! Records in S3: gzip NDJSON objects
//! `[{prefix}/]incidents/tenant={id}/source={name}/date={yyyy-mm-dd}/{run}-{part:05}.ndjson.gz`
//! (`Content-Type: application/x-ndjson`, `Content-Encoding: gzip`).
//!
//! A run writes several objects per partition, one per `write` call: each page is made durable
//! (a successful PutObject is) before the checkpoint moves, and S3 objects cannot be appended to.
//! The part number makes keys unique within a run, and every PutObject is conditional
//! (`If-None-Match: *`), so an object is never replaced, even by another instance that happens
//! to use the same run id: a taken key just moves the write to the next part number.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::lines::{group, write_lines, written_at_now};
use super::{RecordSink, RunId, SinkError, SinkRecord};

pub(crate) const EXTENSION: &str = ".ndjson.gz";
pub const CONTENT_TYPE: &str = "application/x-ndjson";
pub const CONTENT_ENCODING: &str = "gzip";

/// How many part numbers one object tries before giving up (others are taken).
const KEY_ATTEMPTS: usize = 16;

pub struct S3Sink {
    client: Client,
    bucket: String,
    /// Without leading or trailing slashes; `None` for the bucket's top.
    prefix: Option<String>,
    /// Makes keys unique within a run: every object this sink writes takes the next number.
    part: AtomicU64,
}

impl S3Sink {
    /// `prefix` is put before `incidents/…` (slashes around it are ignored; empty means none).
    pub fn new(client: Client, bucket: impl Into<String>, prefix: Option<String>) -> S3Sink {
        let prefix = prefix
            .map(|prefix| prefix.trim_matches('/').to_owned())
            .filter(|prefix| !prefix.is_empty());
        S3Sink {
            client,
            bucket: bucket.into(),
            prefix,
            part: AtomicU64::new(0),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix, without slashes (`None`: keys start with `incidents/`).
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    fn key(&self, name: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}/{name}"),
            None => name.to_owned(),
        }
    }

    async fn put(
        &self,
        run: &RunId,
        partition: &super::Partition,
        body: bytes::Bytes,
    ) -> Result<(), SinkError> {
        for _ in 0..KEY_ATTEMPTS {
            let number = self.part.fetch_add(1, Ordering::Relaxed) + 1;
            let key = self.key(&partition.object_name(run, number, EXTENSION));
            let answer = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(body.clone()))
                .content_type(CONTENT_TYPE)
                .content_encoding(CONTENT_ENCODING)
                .if_none_match("*")
                .send()
                .await;
            match answer {
                Ok(_) => return Ok(()),
                // The key exists (412) or another conditional write to it is under way (409).
                Err(error) if key_taken(&error) => continue,
                Err(error) => return Err(unavailable(&self.bucket, &key, error)),
            }
        }
        Err(SinkError::Unavailable(format!(
            "S3 bucket {}: {KEY_ATTEMPTS} keys of run {run} under {} were already taken",
            self.bucket,
            self.key(&partition.path())
        )))
    }
}

fn key_taken<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(
        error.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    )
}

fn unavailable<E, R>(bucket: &str, key: &str, error: SdkError<E, R>) -> SinkError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let hint = match error.code() {
        Some("NoSuchBucket") => ": the bucket does not exist; check DP_SINK_BUCKET",
        Some("AccessDenied") => ": the function's role may not write to this bucket",
        _ => "",
    };
    SinkError::Unavailable(format!(
        "S3 PutObject s3://{bucket}/{key}: {}{hint}",
        DisplayErrorContext(&error)
    ))
}

#[async_trait]
impl RecordSink for S3Sink {
    async fn write(&self, run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError> {
        let written_at = written_at_now();
        for (partition, records) in group(batch) {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            write_lines(&mut encoder, run, &written_at, &records)
                .and_then(|()| encoder.flush())
                .map_err(|error| SinkError::Unavailable(format!("encoding records: {error}")))?;
            let body = encoder
                .finish()
                .map_err(|error| SinkError::Unavailable(format!("compressing records: {error}")))?;
            self.put(run, &partition, bytes::Bytes::from(body)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn prefixes_are_normalised() {
        let run: RunId = "r".parse().unwrap();
        let partition =
            crate::sink::test_records::batch(&crate::sink::test_records::fresh_tenant())[0]
                .partition();
        let name = partition.object_name(&run, 1, EXTENSION);
        for (prefix, expected) in [
            (None, name.clone()),
            (Some(""), name.clone()),
            (Some("/"), name.clone()),
            (Some("/defender/raw/"), format!("defender/raw/{name}")),
            (Some("defender"), format!("defender/{name}")),
        ] {
            let sink = S3Sink::new(client(), "bucket", prefix.map(str::to_owned));
            assert_eq!(sink.key(&name), expected, "{prefix:?}");
        }
        assert!(name.ends_with("/r-00001.ndjson.gz"), "{name}");
    }
}

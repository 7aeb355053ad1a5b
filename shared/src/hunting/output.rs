//! Where a hunt's results go: gzip NDJSON parts, each tenant's schema and the hunt's manifest,
//! under `hunts/<hunt id>/`: in S3 in AWS, in a local folder by default. One port, two adapters.
//!
//! ```text
//! hunts/<hunt id>/manifest.json
//! hunts/<hunt id>/tenant=<tenant id>/schema.json
//! hunts/<hunt id>/tenant=<tenant id>/part-<n>.ndjson.gz
//! ```

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::tenant_id::TenantId;

/// Where hunts go in S3 (`DP_HUNT_BUCKET`, else the records' `DP_SINK_BUCKET`).
pub const ENV_HUNT_BUCKET: &str = "DP_HUNT_BUCKET";
/// The local folder when no bucket is set (`DP_HUNT_DIR`, else `DP_SINK_DIR`, else `.local/sink`).
pub const ENV_HUNT_DIR: &str = "DP_HUNT_DIR";
/// The top of every key this module writes (the IAM policy in template.yaml names it).
pub const HUNTS_PREFIX: &str = "hunts/";
/// Uncompressed bytes per part: a part is built in memory, so this bounds a tenant's footprint.
pub const PART_RAW_BYTES: usize = 8 * 1024 * 1024;

pub fn manifest_key(hunt_id: &str) -> String {
    format!("{HUNTS_PREFIX}{hunt_id}/manifest.json")
}

pub fn schema_key(hunt_id: &str, tenant: &TenantId) -> String {
    format!("{HUNTS_PREFIX}{hunt_id}/tenant={tenant}/schema.json")
}

pub fn part_key(hunt_id: &str, tenant: &TenantId, part: u32) -> String {
    format!("{HUNTS_PREFIX}{hunt_id}/tenant={tenant}/part-{part}.ndjson.gz")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    GzipNdjson,
    Json,
}

#[async_trait]
pub trait HuntOutput: Send + Sync {
    /// Writes (or replaces) one object.
    async fn put(&self, key: &str, body: Bytes, kind: ObjectKind) -> Result<(), String>;
    /// Reads one object; `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, String>;
    /// Where `key` lives, for people (`s3://bucket/key` or a path).
    fn location(&self, key: &str) -> String;
}

/// A folder on this machine.
pub struct FolderOutput {
    dir: PathBuf,
}

impl FolderOutput {
    pub fn new(dir: impl Into<PathBuf>) -> FolderOutput {
        FolderOutput { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        // Keys are built here from validated ids only; no `..` can appear.
        self.dir.join(key)
    }
}

#[async_trait]
impl HuntOutput for FolderOutput {
    async fn put(&self, key: &str, body: Bytes, _kind: ObjectKind) -> Result<(), String> {
        let path = self.path(key);
        let describe = |error: std::io::Error| format!("{}: {error}", path.display());
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(describe)?;
        }
        // Written aside, then renamed: a reader (the manifest's poller) never sees half a file.
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, &body).await.map_err(describe)?;
        tokio::fs::rename(&partial, &path).await.map_err(describe)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        let path = self.path(key);
        match tokio::fs::read(&path).await {
            Ok(body) => Ok(Some(Bytes::from(body))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!("{}: {error}", path.display())),
        }
    }

    fn location(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }
}

pub struct S3Output {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Output {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> S3Output {
        S3Output {
            client,
            bucket: bucket.into(),
        }
    }
}

fn s3_error<
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
>(
    operation: &str,
    error: aws_sdk_s3::error::SdkError<E, R>,
) -> String {
    format!(
        "S3 {operation}: {}",
        aws_sdk_s3::error::DisplayErrorContext(&error)
    )
}

#[async_trait]
impl HuntOutput for S3Output {
    async fn put(&self, key: &str, body: Bytes, kind: ObjectKind) -> Result<(), String> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body));
        put = match kind {
            ObjectKind::GzipNdjson => put
                .content_type("application/x-ndjson")
                .content_encoding("gzip"),
            ObjectKind::Json => put.content_type("application/json"),
        };
        put.send()
            .await
            .map(|_| ())
            .map_err(|error| s3_error("PutObject", error))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, String> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match answer {
            Ok(object) => object
                .body
                .collect()
                .await
                .map(|body| Some(body.into_bytes()))
                .map_err(|error| format!("S3 GetObject body: {error}")),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|service| service.is_no_such_key()) =>
            {
                Ok(None)
            }
            Err(error) => Err(s3_error("GetObject", error)),
        }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// Lines gathered into gzip parts of about [`PART_RAW_BYTES`] each.
pub struct PartWriter {
    encoder: GzEncoder<Vec<u8>>,
    raw_bytes: usize,
    limit: usize,
}

impl Default for PartWriter {
    fn default() -> Self {
        PartWriter::new(PART_RAW_BYTES)
    }
}

impl PartWriter {
    pub fn new(limit: usize) -> PartWriter {
        PartWriter {
            encoder: GzEncoder::new(Vec::new(), Compression::fast()),
            raw_bytes: 0,
            limit,
        }
    }

    /// Adds one line (without its newline); a full part comes back, ready to write.
    pub fn write_line(&mut self, line: &str) -> Option<Bytes> {
        // Writing into a Vec cannot fail.
        let _ = self.encoder.write_all(line.as_bytes());
        let _ = self.encoder.write_all(b"\n");
        self.raw_bytes += line.len() + 1;
        if self.raw_bytes >= self.limit {
            self.take()
        } else {
            None
        }
    }

    /// The last, partly filled part, if any line is waiting.
    pub fn take(&mut self) -> Option<Bytes> {
        if self.raw_bytes == 0 {
            return None;
        }
        let encoder = std::mem::replace(
            &mut self.encoder,
            GzEncoder::new(Vec::new(), Compression::fast()),
        );
        self.raw_bytes = 0;
        encoder.finish().ok().map(Bytes::from)
    }
}

/// Every line of a gzip NDJSON part.
pub fn part_lines(body: &[u8]) -> Result<Vec<String>, String> {
    use std::io::BufRead;
    std::io::BufReader::new(flate2::read::GzDecoder::new(body))
        .lines()
        .filter(|line| !matches!(line, Ok(line) if line.is_empty()))
        .collect::<Result<_, _>>()
        .map_err(|error| format!("a result part is not gzip NDJSON: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_at_the_limit_and_read_back_line_by_line() {
        let mut writer = PartWriter::new(16);
        let mut parts = Vec::new();
        for n in 0..5 {
            if let Some(part) = writer.write_line(&format!("{{\"n\":{n}}}")) {
                parts.push(part);
            }
        }
        parts.extend(writer.take());
        assert!(writer.take().is_none());
        assert_eq!(parts.len(), 3);
        let lines: Vec<String> = parts
            .iter()
            .flat_map(|part| part_lines(part).unwrap())
            .collect();
        assert_eq!(
            lines,
            (0..5).map(|n| format!("{{\"n\":{n}}}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn the_folder_keeps_objects_under_their_keys() {
        let dir = std::env::temp_dir().join(format!("dp-hunt-{}", uuid::Uuid::new_v4()));
        let output = FolderOutput::new(&dir);
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let key = schema_key("h1", &tenant);
        assert_eq!(output.get(&key).await.unwrap(), None);
        output
            .put(&key, Bytes::from_static(b"[]"), ObjectKind::Json)
            .await
            .unwrap();
        output
            .put(&key, Bytes::from_static(b"[1]"), ObjectKind::Json)
            .await
            .unwrap();
        assert_eq!(
            output.get(&key).await.unwrap(),
            Some(Bytes::from_static(b"[1]"))
        );
        assert!(
            output
                .location(&key)
                .ends_with("hunts/h1/tenant=72f988bf-86f1-41af-91ab-2d7cd011db47/schema.json")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

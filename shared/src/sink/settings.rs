//! Which sinks a deployment writes to, read from the environment:
//!
//! | variable | meaning |
//! |---|---|
//! | `DP_SINK_BUCKET` | S3 bucket for the records (in AWS; required in Lambda unless `DP_SINK_DIR` is set) |
//! | `DP_SINK_PREFIX` | optional key prefix inside the bucket |
//! | `DP_EVENT_BUS` | optional EventBridge bus (name or ARN): one summary event per record as well |
//! | `DP_SINK_DIR` | local folder when there is no bucket (default `.local/sink`) |
//!
//! A bucket gives S3, otherwise the local folder; a bus adds EventBridge after it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ConfigError;

use super::{EventBridgeSink, FanOutSink, LocalSink, RecordSink, S3Sink};

pub const ENV_SINK_BUCKET: &str = "DP_SINK_BUCKET";
pub const ENV_SINK_PREFIX: &str = "DP_SINK_PREFIX";
pub const ENV_EVENT_BUS: &str = "DP_EVENT_BUS";
pub const ENV_SINK_DIR: &str = "DP_SINK_DIR";
/// Where records go on a laptop when nothing is configured.
pub const DEFAULT_SINK_DIR: &str = ".local/sink";

/// Where an S3 endpoint override is read from, besides the SDK's global `AWS_ENDPOINT_URL`.
const ENV_S3_ENDPOINT: &str = "AWS_ENDPOINT_URL_S3";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    pub bucket: Option<String>,
    /// Without leading or trailing slashes.
    pub prefix: Option<String>,
    pub event_bus: Option<String>,
    /// Used when there is no bucket.
    pub dir: PathBuf,
    /// An S3 endpoint override (`AWS_ENDPOINT_URL_S3`) seen in the environment.
    s3_endpoint: Option<String>,
}

fn error(variable: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        problem: problem.into(),
    }
}

impl SinkSettings {
    /// Reads the settings through `lookup` (blank values count as unset).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SinkSettings, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let bucket = get(ENV_SINK_BUCKET);
        if let Some(bucket) = &bucket {
            check_bucket(bucket)?;
        }
        let prefix = match get(ENV_SINK_PREFIX) {
            Some(prefix) => {
                if prefix.chars().any(char::is_control) {
                    return Err(error(ENV_SINK_PREFIX, "must not hold control characters"));
                }
                Some(prefix.trim_matches('/').to_owned()).filter(|prefix| !prefix.is_empty())
            }
            None => None,
        };
        if prefix.is_some() && bucket.is_none() {
            return Err(error(
                ENV_SINK_PREFIX,
                format!("is a key prefix inside {ENV_SINK_BUCKET}, which is not set"),
            ));
        }
        let event_bus = get(ENV_EVENT_BUS);
        if let Some(bus) = &event_bus {
            check_bus(bus)?;
        }
        let dir = get(ENV_SINK_DIR);
        // Lambda's file system is read-only and per instance: an implicit local folder there
        // would hold records nobody ever reads.
        if bucket.is_none() && dir.is_none() && lookup("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            return Err(error(
                ENV_SINK_BUCKET,
                format!(
                    "is required in Lambda (set {ENV_SINK_DIR} to write to a local folder on purpose)"
                ),
            ));
        }
        Ok(SinkSettings {
            bucket,
            prefix,
            event_bus,
            dir: PathBuf::from(dir.unwrap_or_else(|| DEFAULT_SINK_DIR.to_owned())),
            s3_endpoint: get(ENV_S3_ENDPOINT),
        })
    }

    /// Whether building the sinks needs the AWS SDK configuration.
    pub fn needs_aws(&self) -> bool {
        self.bucket.is_some() || self.event_bus.is_some()
    }

    /// Where records go, for a start-up log line.
    pub fn describe(&self) -> String {
        let primary = match (&self.bucket, &self.prefix) {
            (Some(bucket), Some(prefix)) => format!("s3://{bucket}/{prefix}/"),
            (Some(bucket), None) => format!("s3://{bucket}/"),
            (None, _) => format!("folder {}", self.dir.display()),
        };
        match &self.event_bus {
            Some(bus) => format!("{primary}, then EventBridge bus {bus}"),
            None => primary,
        }
    }

    /// The sinks, in writing order (S3 or the folder, then EventBridge).
    pub fn build(
        &self,
        aws: Option<&aws_config::SdkConfig>,
    ) -> Result<Arc<dyn RecordSink>, ConfigError> {
        let aws = || {
            aws.ok_or_else(|| {
                let variable = if self.bucket.is_some() {
                    ENV_SINK_BUCKET
                } else {
                    ENV_EVENT_BUS
                };
                error(
                    variable,
                    "needs the AWS configuration, which was not loaded (a start-up bug)",
                )
            })
        };
        let mut sinks: Vec<Arc<dyn RecordSink>> = Vec::new();
        match &self.bucket {
            Some(bucket) => {
                let aws = aws()?;
                let mut config = aws_sdk_s3::config::Builder::from(aws);
                let endpoint = self.s3_endpoint.as_deref().or(aws.endpoint_url());
                if endpoint.is_some_and(needs_path_style) {
                    config = config.force_path_style(true);
                }
                sinks.push(Arc::new(S3Sink::new(
                    aws_sdk_s3::Client::from_conf(config.build()),
                    bucket.clone(),
                    self.prefix.clone(),
                )));
            }
            None => sinks.push(Arc::new(LocalSink::new(self.dir.clone()))),
        }
        if let Some(bus) = &self.event_bus {
            sinks.push(Arc::new(EventBridgeSink::new(
                aws_sdk_eventbridge::Client::new(aws()?),
                bus.clone(),
            )));
        }
        Ok(match sinks.len() {
            1 => sinks.pop().expect("one sink"),
            _ => Arc::new(FanOutSink::new(sinks)),
        })
    }
}

/// Reads the sink settings through `lookup` and builds the sinks; `aws` is needed when a bucket
/// or a bus is set (see [`SinkSettings::needs_aws`]).
pub fn sink_from_env(
    lookup: impl Fn(&str) -> Option<String>,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<Arc<dyn RecordSink>, ConfigError> {
    SinkSettings::from_lookup(lookup)?.build(aws)
}

/// A bucket name (3–63 of a-z, 0-9, `.`, `-`, starting and ending with a letter or digit) or an
/// access point ARN.
fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    if bucket.starts_with("arn:") && !bucket.contains(char::is_whitespace) {
        return Ok(());
    }
    let edges_ok = |byte: Option<&u8>| {
        byte.is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
    };
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'.' || byte == b'-'
        })
        && edges_ok(bucket.as_bytes().first())
        && edges_ok(bucket.as_bytes().last());
    if valid {
        Ok(())
    } else {
        Err(error(
            ENV_SINK_BUCKET,
            format!(
                "{bucket:?} is not a bucket name: 3 to 63 lower-case letters, digits, dots and hyphens"
            ),
        ))
    }
}

/// A bus name (1–256 of A-Z, a-z, 0-9, `.`, `-`, `_`, `/`) or an event bus ARN.
fn check_bus(bus: &str) -> Result<(), ConfigError> {
    let valid = if bus.starts_with("arn:") {
        bus.contains(":event-bus/") && !bus.contains(char::is_whitespace)
    } else {
        bus.len() <= 256
            && bus
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-/".contains(&byte))
    };
    if valid {
        Ok(())
    } else {
        Err(error(
            ENV_EVENT_BUS,
            format!("{bus:?} is neither an event bus name nor an event bus ARN"),
        ))
    }
}

/// Virtual-hosted bucket addresses (`bucket.host`) only resolve on AWS itself; an emulator or
/// another S3-compatible endpoint is reached with the bucket in the path.
fn needs_path_style(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    !(host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
        || host.ends_with(".api.aws"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<SinkSettings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        SinkSettings::from_lookup(move |name| map.get(name).cloned())
    }

    async fn aws() -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await
    }

    #[test]
    fn defaults_to_a_local_folder() {
        let chosen = settings(&[]).unwrap();
        assert_eq!(chosen.bucket, None);
        assert_eq!(chosen.event_bus, None);
        assert_eq!(chosen.dir, PathBuf::from(DEFAULT_SINK_DIR));
        assert!(!chosen.needs_aws());
        assert_eq!(chosen.describe(), "folder .local/sink");
        assert!(sink_from_env(|_| None, None).is_ok());
    }

    #[test]
    fn reads_bucket_prefix_and_bus() {
        let chosen = settings(&[
            (ENV_SINK_BUCKET, "partner-records"),
            (ENV_SINK_PREFIX, "/defender/raw/"),
            (
                ENV_EVENT_BUS,
                "arn:aws:events:eu-west-1:123456789012:event-bus/partner",
            ),
        ])
        .unwrap();
        assert_eq!(chosen.bucket.as_deref(), Some("partner-records"));
        assert_eq!(chosen.prefix.as_deref(), Some("defender/raw"));
        assert!(chosen.needs_aws());
        assert_eq!(
            chosen.describe(),
            "s3://partner-records/defender/raw/, then EventBridge bus arn:aws:events:eu-west-1:123456789012:event-bus/partner"
        );
        let local_and_bus =
            settings(&[(ENV_EVENT_BUS, "partner-bus"), (ENV_SINK_DIR, "/tmp/x")]).unwrap();
        assert_eq!(local_and_bus.dir, PathBuf::from("/tmp/x"));
        assert!(local_and_bus.needs_aws());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            (ENV_SINK_BUCKET, "Upper_Case"),
            (ENV_SINK_BUCKET, "ab"),
            (ENV_SINK_BUCKET, "-bucket"),
            (ENV_EVENT_BUS, "bus name"),
            (ENV_EVENT_BUS, "arn:aws:sqs:eu-west-1:1:queue"),
        ] {
            let error = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{variable}={value}");
        }
        let error = settings(&[(ENV_SINK_PREFIX, "raw")]).unwrap_err();
        assert_eq!(error.variable, ENV_SINK_PREFIX);
        let error =
            settings(&[(ENV_SINK_BUCKET, "bucket"), (ENV_SINK_PREFIX, "a\nb")]).unwrap_err();
        assert_eq!(error.variable, ENV_SINK_PREFIX);
    }

    #[test]
    fn lambda_needs_a_bucket_unless_a_folder_is_chosen() {
        let error = settings(&[("AWS_LAMBDA_FUNCTION_NAME", "fetch-incidents")]).unwrap_err();
        assert_eq!(error.variable, ENV_SINK_BUCKET);
        assert!(error.problem.contains(ENV_SINK_DIR));
        assert!(
            settings(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "fetch-incidents"),
                (ENV_SINK_DIR, "/tmp/sink")
            ])
            .is_ok()
        );
        assert!(
            settings(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "fetch-incidents"),
                (ENV_SINK_BUCKET, "records")
            ])
            .is_ok()
        );
    }

    #[test]
    fn aws_sinks_need_the_aws_configuration() {
        let error = sink_from_env(
            |name| (name == ENV_EVENT_BUS).then(|| "bus".to_owned()),
            None,
        )
        .err()
        .expect("refused");
        assert_eq!(error.variable, ENV_EVENT_BUS);
    }

    #[tokio::test]
    async fn builds_every_combination() {
        let aws = aws().await;
        for pairs in [
            vec![(ENV_SINK_BUCKET, "records")],
            vec![(ENV_SINK_BUCKET, "records"), (ENV_EVENT_BUS, "bus")],
            vec![(ENV_EVENT_BUS, "bus")],
        ] {
            let map: HashMap<&str, &str> = pairs.into_iter().collect();
            assert!(
                sink_from_env(|name| map.get(name).map(|v| (*v).to_owned()), Some(&aws)).is_ok()
            );
        }
    }

    #[test]
    fn path_style_is_for_endpoints_off_aws() {
        assert!(needs_path_style("http://127.0.0.1:5000"));
        assert!(needs_path_style("http://localhost:4566"));
        assert!(needs_path_style("http://moto:5000"));
        assert!(!needs_path_style("https://s3.eu-west-1.amazonaws.com"));
        assert!(!needs_path_style(
            "https://bucket.vpce-1a2b.s3.us-east-1.vpce.amazonaws.com"
        ));
    }
}

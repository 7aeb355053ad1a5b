//! Which sinks a deployment writes to:
//!
//! | variable | meaning |
//! |---|---|
//! | `DP_SINK_BUCKET` | S3 bucket for the records (in AWS; required in Lambda unless `DP_SINK_DIR` is set) |
//! | `DP_SINK_PREFIX` | optional key prefix inside the bucket |
//! | `DP_EVENT_BUS` | optional EventBridge bus (name or ARN): one summary event per record as well |
//! | `DP_SINK_DIR` | local folder when there is no bucket (default `.local/sink`) |
//!
//! A bucket gives S3, otherwise the local folder; a bus adds EventBridge after it. The sinks are
//! built from these settings in `crate::sink`.

use std::path::PathBuf;

use super::env::{ConfigError, Env};

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

impl SinkSettings {
    /// Reads the settings through `lookup` (blank values count as unset).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SinkSettings, ConfigError> {
        SinkSettings::read(&Env::new(&lookup))
    }

    pub(super) fn read(env: &Env) -> Result<SinkSettings, ConfigError> {
        let bucket = env.trimmed(ENV_SINK_BUCKET);
        if let Some(bucket) = &bucket {
            check_bucket(bucket)?;
        }
        let prefix = match env.trimmed(ENV_SINK_PREFIX) {
            Some(prefix) => {
                if prefix.chars().any(char::is_control) {
                    return Err(ConfigError::new(
                        ENV_SINK_PREFIX,
                        "must not hold control characters",
                    ));
                }
                Some(prefix.trim_matches('/').to_owned()).filter(|prefix| !prefix.is_empty())
            }
            None => None,
        };
        if prefix.is_some() && bucket.is_none() {
            return Err(ConfigError::new(
                ENV_SINK_PREFIX,
                format!("is a key prefix inside {ENV_SINK_BUCKET}, which is not set"),
            ));
        }
        let event_bus = env.trimmed(ENV_EVENT_BUS);
        if let Some(bus) = &event_bus {
            check_bus(bus)?;
        }
        let dir = env.trimmed(ENV_SINK_DIR);
        // Lambda's file system is read-only and per instance: an implicit local folder there
        // would hold records nobody ever reads.
        if bucket.is_none() && dir.is_none() && env.in_lambda() {
            return Err(ConfigError::new(
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
            s3_endpoint: env.trimmed(ENV_S3_ENDPOINT),
        })
    }

    /// Whether building the sinks needs the AWS SDK configuration.
    pub fn needs_aws(&self) -> bool {
        self.bucket.is_some() || self.event_bus.is_some()
    }

    /// The S3 endpoint override seen in the environment, if any.
    pub fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint.as_deref()
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
        Err(ConfigError::new(
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
        Err(ConfigError::new(
            ENV_EVENT_BUS,
            format!("{bus:?} is neither an event bus name nor an event bus ARN"),
        ))
    }
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

    #[test]
    fn defaults_to_a_local_folder() {
        let chosen = settings(&[]).unwrap();
        assert_eq!(chosen.bucket, None);
        assert_eq!(chosen.event_bus, None);
        assert_eq!(chosen.dir, PathBuf::from(DEFAULT_SINK_DIR));
        assert!(!chosen.needs_aws());
        assert_eq!(chosen.describe(), "folder .local/sink");
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
}

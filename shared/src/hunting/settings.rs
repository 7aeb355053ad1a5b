//! Where hunting's parts are, read once at start from the environment: the queue
//! (`DP_HUNT_QUEUE_URL`; without it, tenants are queried in this process), the results
//! (`DP_HUNT_BUCKET`, else `DP_SINK_BUCKET`; else the folder `DP_HUNT_DIR`, else `DP_SINK_DIR`,
//! else `.local/sink`), the bus (`DP_EVENT_BUS`) and Microsoft's row cap (`DP_HUNT_ROW_CAP`).

use std::path::PathBuf;

use super::output::{ENV_HUNT_BUCKET, ENV_HUNT_DIR};
use super::runner::DEFAULT_ROW_CAP;
use crate::config::ConfigError;
use crate::sink::{DEFAULT_SINK_DIR, ENV_EVENT_BUS, ENV_SINK_BUCKET, ENV_SINK_DIR};

pub const ENV_HUNT_QUEUE_URL: &str = "DP_HUNT_QUEUE_URL";
pub const ENV_HUNT_ROW_CAP: &str = "DP_HUNT_ROW_CAP";
const ENV_S3_ENDPOINT: &str = "AWS_ENDPOINT_URL_S3";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntSettings {
    pub queue_url: Option<String>,
    pub bucket: Option<String>,
    pub dir: PathBuf,
    pub event_bus: Option<String>,
    pub row_cap: u64,
    pub s3_endpoint: Option<String>,
}

fn error(variable: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        problem: problem.into(),
    }
}

impl HuntSettings {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<HuntSettings, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let in_lambda = get("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let queue_url = get(ENV_HUNT_QUEUE_URL);
        if in_lambda && queue_url.is_none() {
            return Err(error(
                ENV_HUNT_QUEUE_URL,
                "is required in Lambda: a hunt's tenants are fanned out on that queue",
            ));
        }
        let bucket = get(ENV_HUNT_BUCKET).or_else(|| get(ENV_SINK_BUCKET));
        if in_lambda && bucket.is_none() {
            return Err(error(
                ENV_HUNT_BUCKET,
                format!("is required in Lambda (or {ENV_SINK_BUCKET}): where the results go"),
            ));
        }
        let row_cap = match get(ENV_HUNT_ROW_CAP) {
            None => DEFAULT_ROW_CAP,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|cap| *cap > 0)
                .ok_or_else(|| error(ENV_HUNT_ROW_CAP, "must be a positive number of rows"))?,
        };
        Ok(HuntSettings {
            queue_url,
            bucket,
            dir: PathBuf::from(
                get(ENV_HUNT_DIR)
                    .or_else(|| get(ENV_SINK_DIR))
                    .unwrap_or_else(|| DEFAULT_SINK_DIR.to_owned()),
            ),
            event_bus: get(ENV_EVENT_BUS),
            row_cap,
            s3_endpoint: get(ENV_S3_ENDPOINT),
        })
    }

    pub fn needs_aws(&self) -> bool {
        self.queue_url.is_some() || self.bucket.is_some() || self.event_bus.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<HuntSettings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        HuntSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn locally_everything_has_a_default() {
        let local = settings(&[]).unwrap();
        assert_eq!(local.queue_url, None);
        assert_eq!(local.bucket, None);
        assert_eq!(local.dir, PathBuf::from(DEFAULT_SINK_DIR));
        assert_eq!(local.row_cap, DEFAULT_ROW_CAP);
        assert!(!local.needs_aws());
        let dir = settings(&[(ENV_SINK_DIR, "/tmp/sink"), (ENV_HUNT_ROW_CAP, "500")]).unwrap();
        assert_eq!(dir.dir, PathBuf::from("/tmp/sink"));
        assert_eq!(dir.row_cap, 500);
    }

    #[test]
    fn lambda_needs_the_queue_and_the_bucket() {
        let lambda = [("AWS_LAMBDA_FUNCTION_NAME", "hunt")];
        assert_eq!(settings(&lambda).unwrap_err().variable, ENV_HUNT_QUEUE_URL);
        let error = settings(&[lambda[0], (ENV_HUNT_QUEUE_URL, "https://sqs/q")]).unwrap_err();
        assert_eq!(error.variable, ENV_HUNT_BUCKET);
        let ready = settings(&[
            lambda[0],
            (ENV_HUNT_QUEUE_URL, "https://sqs/q"),
            (ENV_SINK_BUCKET, "records"),
        ])
        .unwrap();
        assert_eq!(ready.bucket.as_deref(), Some("records"));
        assert!(settings(&[(ENV_HUNT_ROW_CAP, "0")]).is_err());
    }
}

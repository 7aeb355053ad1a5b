//! The sinks a deployment's [`SinkSettings`] name, built in writing order.

use std::sync::Arc;

use super::{EventBridgeSink, FanOutSink, LocalSink, RecordSink, S3Sink};
use crate::config::{ConfigError, ENV_EVENT_BUS, ENV_SINK_BUCKET, SinkSettings};

impl SinkSettings {
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
                ConfigError::new(
                    variable,
                    "needs the AWS configuration, which was not loaded (a start-up bug)",
                )
            })
        };
        let mut sinks: Vec<Arc<dyn RecordSink>> = Vec::new();
        match &self.bucket {
            Some(bucket) => {
                sinks.push(Arc::new(S3Sink::new(
                    s3_client(aws()?, self.s3_endpoint()),
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

/// An S3 client for `aws`, at `endpoint` when one is set (else the configuration's own).
pub(crate) fn s3_client(aws: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::config::Builder::from(aws);
    if endpoint
        .or(aws.endpoint_url())
        .is_some_and(needs_path_style)
    {
        config = config.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
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
    fn the_local_folder_needs_no_aws_configuration() {
        assert!(sink_from_env(|_| None, None).is_ok());
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

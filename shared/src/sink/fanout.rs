//! Several destinations for one batch, in order: each sink has the whole batch before the next
//! one gets it (in AWS: S3 first, the record of truth, then the EventBridge announcements), and
//! the write fails as soon as one of them fails. The checkpoint then stays put, and the next run
//! writes the page again to every sink: a sink that had it already gets a repeat, which the
//! records' stable keys let consumers drop.

use std::sync::Arc;

use async_trait::async_trait;

use super::{RecordSink, RunId, SinkError, SinkRecord};

pub struct FanOutSink {
    sinks: Vec<Arc<dyn RecordSink>>,
}

impl FanOutSink {
    /// `sinks` in the order they are written.
    pub fn new(sinks: Vec<Arc<dyn RecordSink>>) -> FanOutSink {
        FanOutSink { sinks }
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

#[async_trait]
impl RecordSink for FanOutSink {
    async fn write(&self, run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError> {
        for sink in &self.sinks {
            sink.write(run, batch).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::sink::test_records::{batch, fresh_tenant};

    /// Notes each write in a shared log; fails when told to.
    struct Probe {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        fail: bool,
    }

    #[async_trait]
    impl RecordSink for Probe {
        async fn write(&self, _run: &RunId, batch: &[SinkRecord]) -> Result<(), SinkError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} {}", self.name, batch.len()));
            if self.fail {
                return Err(SinkError::Unavailable(format!("{} is down", self.name)));
            }
            Ok(())
        }
    }

    fn probes(failing: &[&'static str]) -> (FanOutSink, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sinks = ["s3", "events", "third"]
            .into_iter()
            .map(|name| {
                Arc::new(Probe {
                    name,
                    log: log.clone(),
                    fail: failing.contains(&name),
                }) as Arc<dyn RecordSink>
            })
            .collect();
        (FanOutSink::new(sinks), log)
    }

    #[tokio::test]
    async fn writes_every_sink_in_order() {
        let (fan_out, log) = probes(&[]);
        let batch = batch(&fresh_tenant());
        fan_out.write(&RunId::new(), &batch).await.unwrap();
        let n = batch.len();
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                format!("s3 {n}"),
                format!("events {n}"),
                format!("third {n}")
            ]
        );
        assert_eq!(fan_out.len(), 3);
    }

    #[tokio::test]
    async fn stops_at_the_first_failure() {
        let (fan_out, log) = probes(&["events"]);
        let error = fan_out
            .write(&RunId::new(), &batch(&fresh_tenant()))
            .await
            .unwrap_err();
        assert_eq!(error, SinkError::Unavailable("events is down".into()));
        assert_eq!(
            log.lock().unwrap().len(),
            2,
            "the third sink is not written"
        );
    }
}

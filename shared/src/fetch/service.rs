//! The ingestion job assembled from the settings, once per cold start, and its three entry
//! points: a scheduled run, a batch of queue messages, one pair on request.

use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use super::admission::SourceRoles;
use super::engine::Fetcher;
use super::fleet::{FleetReport, PairTask, run_pairs, run_scheduled};
use super::outcome::{PairOutcome, PairResult};
use super::queue::SqsQueue;
use super::reverify::Reverifier;
use crate::config::{ConfigError, ENV_EVENT_BUS, ENV_QUEUE_URL, ENV_SINK_BUCKET, FetchJobSettings};
use crate::defender::DefenderClient;
use crate::runtime::Services;
use crate::store::{RegistryError, RunLeases};

pub struct FetchService {
    pub fetcher: Arc<Fetcher>,
    queue: Option<SqsQueue>,
    /// The fleet's run lease: one scheduled run at a time.
    run_leases: Arc<dyn RunLeases>,
}

/// A queue message as the function receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    pub message_id: String,
    pub body: String,
}

#[derive(Debug, Serialize)]
pub struct BatchReport {
    pub outcomes: Vec<PairOutcome>,
    /// Messages to hand back to the queue (partial batch failure).
    pub failed_message_ids: Vec<String>,
}

impl FetchService {
    /// Assembles the job on `services`, with the job's settings they were built with
    /// ([`Services::from_env_for_fetch`]), else those `lookup` gives (a local caller: the demo, a
    /// bench, a test). The AWS configuration is the one `services` loaded: never loaded here.
    pub async fn build(
        services: &Services,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<FetchService, ConfigError> {
        let job = match &services.settings.fetch_job {
            Some(job) => job.clone(),
            None => FetchJobSettings::from_lookup(&lookup)?,
        };
        // Once per cold start: a source on an API Microsoft retires still works until then.
        job.fetch.warn_retiring();
        let aws = services.aws.as_ref();
        if aws.is_none()
            && let Some(variable) = aws_variable(&job)
        {
            return Err(ConfigError::new(
                variable,
                "needs the AWS configuration, which the services were built without: build them \
                 with the job's settings (Settings::with_fetch_job)",
            ));
        }
        let sink = job.sink.build(aws)?;
        let queue = job
            .fetch
            .queue_url
            .as_ref()
            .zip(aws)
            .map(|(url, aws)| SqsQueue::new(aws_sdk_sqs::Client::new(aws), url.clone()));
        let proof = services.settings.proof();
        let client = DefenderClient::new(
            services.http.clone(),
            services.settings.api_access(),
            services.tokens.clone(),
        );
        Ok(FetchService {
            fetcher: Arc::new(Fetcher {
                client: Arc::new(client),
                roles: SourceRoles::from_proof(&proof),
                reverify: Some(Reverifier {
                    tokens: services.tokens.clone(),
                    settings: proof,
                }),
                checkpoints: services.checkpoints.clone(),
                updates: services.updates.clone(),
                registry: services.registry.clone(),
                sink,
                settings: job.fetch,
            }),
            queue,
            run_leases: services.run_leases.clone(),
        })
    }

    pub async fn scheduled(&self, deadline: Instant) -> Result<FleetReport, RegistryError> {
        let queue = self
            .queue
            .as_ref()
            .map(|queue| queue as &dyn super::fleet::WorkQueue);
        run_scheduled(
            self.fetcher.clone(),
            queue,
            self.run_leases.as_ref(),
            deadline,
        )
        .await
    }

    pub async fn pairs(&self, tasks: Vec<PairTask>, deadline: Instant) -> Vec<PairOutcome> {
        run_pairs(self.fetcher.clone(), tasks, deadline).await
    }

    /// Processes queue messages. A pair that failed goes back to the queue (retried, then
    /// dead-lettered); a throttled pair, or one cut by the deadline, continues in a new message
    /// (delayed by Microsoft's wait); an unreadable message is reported failed.
    pub async fn batch(&self, messages: Vec<QueuedTask>, deadline: Instant) -> BatchReport {
        let mut failed = Vec::new();
        let mut tasks = Vec::new();
        let mut owners = Vec::new();
        for message in messages {
            match serde_json::from_str::<PairTask>(&message.body) {
                // The same pair twice in one batch (a continuation and a scheduled message): run
                // once; the copy is deleted, so that one continuation at most follows.
                Ok(task) if tasks.contains(&task) => {
                    tracing::info!(message_id = %message.message_id, tenant = %task.tenant_id, source = %task.source.as_str(), "pair already in this batch; message dropped");
                }
                Ok(task) => {
                    tasks.push(task);
                    owners.push(message);
                }
                Err(error) => {
                    tracing::error!(message_id = %message.message_id, error = %error, "unreadable queue message");
                    failed.push(message.message_id);
                }
            }
        }
        let outcomes = self.pairs(tasks.clone(), deadline).await;
        for (task, message) in tasks.iter().zip(owners) {
            let Some(outcome) = outcomes.iter().find(|outcome| {
                outcome.tenant_id == task.tenant_id && outcome.source == task.source
            }) else {
                failed.push(message.message_id);
                continue;
            };
            let delay = match &outcome.result {
                // Busy: the run that owns the pair continues it. Dropped: the registry ended the
                // pair; the message is deleted and its continuation chain ends here.
                PairResult::Complete
                | PairResult::Revoked { .. }
                | PairResult::Busy
                | PairResult::Dropped { .. } => continue,
                PairResult::Throttled {
                    retry_after_seconds,
                } => Some(*retry_after_seconds),
                PairResult::Partial => Some(0),
                // Microsoft retired the route: no retry can help, the chain ends here.
                PairResult::Failed {
                    code: crate::ErrorCode::ApiRetired,
                    ..
                } => continue,
                // A failure goes back to the queue: retried, then dead-lettered.
                PairResult::Failed { .. } => None,
            };
            let continued = match (delay, &self.queue) {
                (Some(delay), Some(queue)) => match queue.continue_later(task, delay).await {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::warn!(error = %error, "could not queue the continuation; returning the message");
                        false
                    }
                },
                _ => false,
            };
            if !continued {
                failed.push(message.message_id);
            }
        }
        BatchReport {
            outcomes,
            failed_message_ids: failed,
        }
    }
}

/// The first of the job's settings that names something in AWS.
fn aws_variable(job: &FetchJobSettings) -> Option<&'static str> {
    [
        (ENV_SINK_BUCKET, job.sink.bucket.is_some()),
        (ENV_EVENT_BUS, job.sink.event_bus.is_some()),
        (ENV_QUEUE_URL, job.fetch.queue_url.is_some()),
    ]
    .into_iter()
    .find_map(|(variable, set)| set.then_some(variable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ENV_SOURCES, Settings};

    fn local(name: &str) -> Option<String> {
        match name {
            "DP_CREDENTIAL_JSON" => Some(
                r#"{"client_id": "11111111-1111-4111-8111-111111111111", "client_secret": "x"}"#
                    .into(),
            ),
            "DP_SQLITE_PATH" => Some(":memory:".into()),
            "DP_SINK_DIR" => Some("/tmp/defender-partner-unused-sink".into()),
            _ => None,
        }
    }

    fn queued(name: &str) -> Option<String> {
        match name {
            ENV_QUEUE_URL => Some("https://sqs.us-east-1.amazonaws.com/123456789012/work".into()),
            _ => local(name),
        }
    }

    #[tokio::test]
    async fn a_job_reaching_aws_on_services_without_it_is_refused_not_loaded_again() {
        let services = Services::build_with_aws(Settings::from_lookup(queued).unwrap(), None)
            .await
            .unwrap();
        let error = FetchService::build(&services, queued).await.err().unwrap();
        assert_eq!(error.variable, ENV_QUEUE_URL);
        assert!(FetchService::build(&services, local).await.is_ok());
    }

    #[tokio::test]
    async fn the_jobs_settings_the_services_were_built_with_win() {
        let settings = Settings::from_lookup(local)
            .unwrap()
            .with_fetch_job(local)
            .unwrap();
        let services = Services::build(settings).await.unwrap();
        assert!(services.aws.is_none(), "nothing configured lives in AWS");
        let unreadable = |name: &str| (name == ENV_SOURCES).then(|| "sentinel".to_owned());
        let service = FetchService::build(&services, unreadable).await.unwrap();
        assert!(service.queue.is_none());
        assert_eq!(
            service.fetcher.settings.sources,
            crate::config::DEFAULT_SOURCES.to_vec()
        );
    }
}

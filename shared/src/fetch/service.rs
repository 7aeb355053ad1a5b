//! The ingestion job assembled from the settings, once per cold start, and its three entry
//! points: a scheduled run, a batch of queue messages, one pair on request.

use std::sync::Arc;

use serde::Serialize;
use tokio::time::Instant;

use super::engine::{Fetcher, PairOutcome, PairResult};
use super::fleet::{FleetReport, PairTask, run_pairs, run_scheduled};
use super::queue::SqsQueue;
use super::settings::FetchSettings;
use crate::config::ConfigError;
use crate::defender::DefenderClient;
use crate::runtime::Services;
use crate::sink::SinkSettings;
use crate::tenants::RegistryError;

pub struct FetchService {
    pub fetcher: Arc<Fetcher>,
    queue: Option<SqsQueue>,
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
    pub async fn build(
        services: &Services,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<FetchService, ConfigError> {
        let settings = FetchSettings::from_lookup(&lookup)?;
        // Once per cold start: a source on an API Microsoft retires still works until then.
        settings.warn_retiring();
        let sink_settings = SinkSettings::from_lookup(&lookup)?;
        // The registry and credential may be local while the sink or queue are in AWS.
        let loaded;
        let aws = match services.aws.as_ref() {
            Some(aws) => Some(aws),
            None if sink_settings.needs_aws() || settings.queue_url.is_some() => {
                loaded = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                Some(&loaded)
            }
            None => None,
        };
        let sink = sink_settings.build(aws)?;
        let queue = settings
            .queue_url
            .as_ref()
            .zip(aws)
            .map(|(url, aws)| SqsQueue::new(aws_sdk_sqs::Client::new(aws), url.clone()));
        let client = DefenderClient::new(
            services.http.clone(),
            services.settings.clone(),
            services.tokens.clone(),
        );
        Ok(FetchService {
            fetcher: Arc::new(Fetcher {
                client: Arc::new(client),
                reverify: Some(super::engine::Reverifier {
                    tokens: services.tokens.clone(),
                    settings: services.settings.clone(),
                }),
                checkpoints: services.checkpoints.clone(),
                registry: services.registry.clone(),
                sink,
                settings,
                roles: super::admission::SourceRoles::from_settings(&services.settings),
            }),
            queue,
        })
    }

    pub async fn scheduled(&self, deadline: Instant) -> Result<FleetReport, RegistryError> {
        let queue = self
            .queue
            .as_ref()
            .map(|queue| queue as &dyn super::fleet::WorkQueue);
        run_scheduled(self.fetcher.clone(), queue, deadline).await
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

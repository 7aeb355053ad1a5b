//! Every active tenant and source in one scheduled run: processed here with bounded concurrency
//! when the fleet is small, fanned out through the queue (one message per tenant and source) when
//! it is large. One pair failing never stops the others.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::engine::{Fetcher, PairOutcome, PairResult};
use crate::sink::Source;
use crate::tenant_id::TenantId;
use crate::tenants::{RegistryError, TenantStatus};

/// Time a scheduled run keeps for its active tenants before it re-verifies pending ones.
const REVERIFY_RESERVE: Duration = Duration::from_secs(60);

/// One unit of work: what a queue message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairTask {
    pub tenant_id: TenantId,
    pub source: Source,
}

/// What a scheduled run did.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub tenants: usize,
    pub pairs: usize,
    /// Pairs handed to the queue instead of processed here.
    pub enqueued: usize,
    pub outcomes: Vec<PairOutcome>,
}

impl FleetReport {
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| outcome.is_failure())
            .count()
    }
}

/// Where fanned-out work goes (SQS in AWS).
#[async_trait::async_trait]
pub trait WorkQueue: Send + Sync {
    async fn enqueue(&self, tasks: &[PairTask]) -> Result<(), String>;
}

/// The pairs to run now: every active tenant × every configured source. Pending tenants (consent
/// given but not yet proven) are re-verified first, so a consent that has propagated since the
/// callback starts flowing in this run.
pub async fn plan(
    fetcher: &Fetcher,
    deadline: Instant,
) -> Result<(usize, Vec<PairTask>), RegistryError> {
    let mut tenants = Vec::new();
    for tenant in fetcher.registry.list().await? {
        match tenant.status {
            TenantStatus::Active => tenants.push(tenant.tenant_id),
            TenantStatus::Pending => {
                // Proofs must not eat the time the active tenants need: past the reserve, the
                // next cycle proves them.
                let time_left = deadline.saturating_duration_since(Instant::now());
                if time_left < fetcher.settings.deadline_margin + REVERIFY_RESERVE {
                    tracing::info!(tenant = %tenant.tenant_id, "pending tenant left for the next cycle: time is short");
                    continue;
                }
                if let Some(reverify) = &fetcher.reverify {
                    let customer_ref = tenant
                        .customer_ref
                        .clone()
                        .unwrap_or_else(|| tenant.display_name.clone());
                    match reverify
                        .prove(&tenant.tenant_id, &customer_ref, fetcher.registry.as_ref())
                        .await
                    {
                        Ok(record) if record.status == TenantStatus::Active => {
                            tenants.push(record.tenant_id)
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(tenant = %tenant.tenant_id, error = %error, "pending tenant not re-verified")
                        }
                    }
                }
            }
            TenantStatus::Revoked | TenantStatus::Offboarded => {}
        }
    }
    let tasks = tenants
        .iter()
        .flat_map(|tenant| {
            fetcher.settings.sources.iter().map(|source| PairTask {
                tenant_id: tenant.clone(),
                source: *source,
            })
        })
        .collect();
    Ok((tenants.len(), tasks))
}

pub async fn run_scheduled(
    fetcher: Arc<Fetcher>,
    queue: Option<&dyn WorkQueue>,
    deadline: Instant,
) -> Result<FleetReport, RegistryError> {
    let (tenants, tasks) = plan(&fetcher, deadline).await?;
    let pairs = tasks.len();
    if let Some(queue) = queue.filter(|_| pairs > fetcher.settings.fanout_threshold) {
        queue
            .enqueue(&tasks)
            .await
            .map_err(|error| RegistryError::Unavailable(format!("queue: {error}")))?;
        tracing::info!(tenants, pairs, "fleet fanned out through the queue");
        return Ok(FleetReport {
            tenants,
            pairs,
            enqueued: pairs,
            outcomes: Vec::new(),
        });
    }
    let outcomes = run_pairs(fetcher, tasks, deadline).await;
    Ok(FleetReport {
        tenants,
        pairs,
        enqueued: 0,
        outcomes,
    })
}

/// Runs `tasks` with the configured concurrency; every task yields an outcome.
pub async fn run_pairs(
    fetcher: Arc<Fetcher>,
    tasks: Vec<PairTask>,
    deadline: Instant,
) -> Vec<PairOutcome> {
    let permits = Arc::new(Semaphore::new(fetcher.settings.concurrency));
    let mut running = JoinSet::new();
    for task in tasks.iter().cloned() {
        let fetcher = fetcher.clone();
        let permits = permits.clone();
        running.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            fetcher
                .run_pair(&task.tenant_id, task.source, deadline)
                .await
        });
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => tracing::error!(error = %error, "a pair's task panicked"),
        }
    }
    // A panicked task still has an outcome: nothing is silently dropped from the report.
    for task in tasks {
        if !outcomes
            .iter()
            .any(|outcome| outcome.tenant_id == task.tenant_id && outcome.source == task.source)
        {
            outcomes.push(PairOutcome {
                tenant_id: task.tenant_id,
                source: task.source,
                result: PairResult::Failed {
                    code: crate::ErrorCode::Internal,
                    message: "the pair's task panicked".into(),
                },
                delivered: 0,
                new: 0,
                updated: 0,
                repeats: 0,
                pages: 0,
                api_calls: 0,
                unreadable: 0,
            });
        }
    }
    outcomes
        .sort_by(|a, b| (&a.tenant_id, a.source.as_str()).cmp(&(&b.tenant_id, b.source.as_str())));
    outcomes
}

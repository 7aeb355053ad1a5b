//! Every active tenant and source in one scheduled run: processed here with bounded concurrency
//! when the fleet is small, fanned out through the queue (one message per tenant and source) when
//! it is large. One pair failing never stops the others. A scheduled run holds the fleet's run
//! lease while it walks: a second run started meanwhile (an overlapping schedule, a retry, an
//! operator's invoke) finds it held, reports `busy` and does nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::admission::{ROLES_MISSING_PREFIX, plan_sources, roles_missing_reason};
use super::engine::Fetcher;
use super::outcome::{PairOutcome, PairResult};
use super::window::lease_until;
use crate::defender::Source;
use crate::sink::RunId;
use crate::store::{FLEET_RUN, RegistryError, RunLeases, TenantRecord, TenantStatus, stored_now};
use crate::tenant_id::TenantId;

/// Time a scheduled run keeps for its active tenants before it re-verifies pending ones.
const REVERIFY_RESERVE: Duration = Duration::from_secs(60);

/// One unit of work: what a queue message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairTask {
    pub tenant_id: TenantId,
    pub source: Source,
}

/// What a scheduled run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetReport {
    /// Another scheduled run held the fleet's run lease: this one walked nothing.
    pub busy: bool,
    pub tenants: usize,
    pub pairs: usize,
    /// Pairs handed to the queue instead of processed here.
    pub enqueued: usize,
    pub outcomes: Vec<PairOutcome>,
    /// Sources left out for a tenant (`roles_missing`: its consent does not grant them).
    pub not_planned: Vec<NotPlanned>,
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

/// A configured source a tenant is not fetched for, and why (reported, not a failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotPlanned {
    pub tenant_id: TenantId,
    pub source: Source,
    pub code: crate::ErrorCode,
}

/// The pairs to run now: every active tenant × every configured source its roles allow. Pending
/// tenants (consent given but not yet proven) are re-verified first, so a consent that has
/// propagated since the callback starts flowing in this run. Sources a tenant did not grant are
/// left out and reported once in its status reason (`roles_missing: …`).
pub async fn plan(
    fetcher: &Fetcher,
    deadline: Instant,
) -> Result<(usize, Vec<PairTask>, Vec<NotPlanned>), RegistryError> {
    let mut tenants = Vec::new();
    for tenant in fetcher.registry.list().await? {
        match tenant.status {
            TenantStatus::Active => tenants.push(tenant),
            TenantStatus::Pending => {
                // Proofs must not eat the time the active tenants need: past the reserve, the
                // next cycle proves them.
                let time_left = deadline.saturating_duration_since(Instant::now());
                if time_left < fetcher.settings.deadline_margin + REVERIFY_RESERVE {
                    tracing::info!(tenant = %tenant.tenant_id, "pending tenant left for the next cycle: time is short");
                    continue;
                }
                if let Some(reverify) = &fetcher.reverify {
                    match reverify
                        .prove(
                            &tenant.tenant_id,
                            &fetcher.roles.apis(),
                            fetcher.registry.as_ref(),
                        )
                        .await
                    {
                        Ok(record) if record.status == TenantStatus::Active => tenants.push(record),
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
    let mut tasks = Vec::new();
    let mut not_planned = Vec::new();
    for tenant in &tenants {
        let (planned, skipped) =
            plan_sources(&fetcher.settings.sources, &fetcher.roles, &tenant.roles);
        tasks.extend(planned.into_iter().map(|source| PairTask {
            tenant_id: tenant.tenant_id.clone(),
            source,
        }));
        not_planned.extend(skipped.iter().map(|(source, _)| NotPlanned {
            tenant_id: tenant.tenant_id.clone(),
            source: *source,
            code: crate::ErrorCode::RolesMissing,
        }));
        report_missing_roles(fetcher, tenant, &skipped).await;
    }
    Ok((tenants.len(), tasks, not_planned))
}

/// Puts the sources a tenant's consent does not cover in its status reason, once: written only
/// when the text changes (and cleared when a new consent covers them), so a partly consented
/// tenant is neither a failure on every cycle nor a write on every cycle.
async fn report_missing_roles(
    fetcher: &Fetcher,
    tenant: &TenantRecord,
    skipped: &[(Source, Vec<String>)],
) {
    let reason = roles_missing_reason(skipped);
    let ours = tenant
        .status_reason
        .as_deref()
        .is_some_and(|text| text.starts_with(ROLES_MISSING_PREFIX));
    let wanted = match reason {
        Some(reason) if tenant.status_reason.as_deref() != Some(reason.as_str()) => Some(reason),
        None if ours => None,
        _ => return,
    };
    match &wanted {
        Some(reason) => {
            tracing::warn!(tenant = %tenant.tenant_id, code = %crate::ErrorCode::RolesMissing, reason = %reason, "sources not granted by the tenant are not fetched")
        }
        None => {
            tracing::info!(tenant = %tenant.tenant_id, "the tenant's roles now cover every source")
        }
    }
    let updated = TenantRecord {
        status_reason: wanted,
        updated_at: stored_now(),
        ..tenant.clone()
    };
    // Conditional on the version listed: a tenant changed meanwhile is reported next cycle.
    if let Err(error) = fetcher.registry.replace(&updated).await {
        tracing::info!(tenant = %tenant.tenant_id, error = %error, "missing roles not recorded this cycle");
    }
}

/// One scheduled run: takes the fleet's run lease (until the invocation's deadline and a margin,
/// so that a run that dies holding it frees the fleet for the next schedule), walks the fleet,
/// releases the lease. Finding the lease held, it does nothing and reports `busy`.
pub async fn run_scheduled(
    fetcher: Arc<Fetcher>,
    queue: Option<&dyn WorkQueue>,
    leases: &dyn RunLeases,
    deadline: Instant,
) -> Result<FleetReport, RegistryError> {
    let holder = RunId::new();
    let now = Utc::now();
    let until = lease_until(now, deadline, Instant::now());
    if !leases
        .take_run_lease(FLEET_RUN, holder.as_str(), now, until)
        .await?
    {
        tracing::warn!("another scheduled run is walking the fleet: this run does nothing (busy)");
        return Ok(FleetReport {
            busy: true,
            ..FleetReport::default()
        });
    }
    let report = walk(fetcher, queue, deadline).await;
    if let Err(error) = leases.release_run_lease(FLEET_RUN, holder.as_str()).await {
        // The lease expires on its own; the next schedule waits for that.
        tracing::warn!(error = %error, "fleet run lease not released");
    }
    report
}

/// Every active tenant and source: fanned out, or processed here.
async fn walk(
    fetcher: Arc<Fetcher>,
    queue: Option<&dyn WorkQueue>,
    deadline: Instant,
) -> Result<FleetReport, RegistryError> {
    let (tenants, tasks, not_planned) = plan(&fetcher, deadline).await?;
    let pairs = tasks.len();
    if let Some(queue) = queue.filter(|_| pairs > fetcher.settings.fanout_threshold) {
        queue
            .enqueue(&tasks)
            .await
            .map_err(|error| RegistryError::Unavailable(format!("queue: {error}")))?;
        tracing::info!(tenants, pairs, "fleet fanned out through the queue");
        return Ok(FleetReport {
            busy: false,
            tenants,
            pairs,
            enqueued: pairs,
            outcomes: Vec::new(),
            not_planned,
        });
    }
    let outcomes = run_pairs(fetcher, tasks, deadline).await;
    Ok(FleetReport {
        busy: false,
        tenants,
        pairs,
        enqueued: 0,
        outcomes,
        not_planned,
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
                result: PairResult::Failed {
                    code: crate::ErrorCode::Internal,
                    message: "the pair's task panicked".into(),
                },
                ..PairOutcome::new(&task.tenant_id, task.source)
            });
        }
    }
    outcomes
        .sort_by(|a, b| (&a.tenant_id, a.source.as_str()).cmp(&(&b.tenant_id, b.source.as_str())));
    outcomes
}

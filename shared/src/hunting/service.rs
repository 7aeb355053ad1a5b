//! Fleet hunting: a hunt is submitted (answered at once with its id), its tenants are fanned out
//! one message each, each message queries one tenant, and the last tenant to finish closes the
//! hunt, writes the final manifest and announces it. Saved hunts run the same way, on demand or
//! on the schedule, and announce only the rows their earlier runs had not seen.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use super::answer::Column;
use super::error::HuntError;
use super::events::{EventBridgeEvents, HuntEvents, NoEvents};
use super::manifest::Manifest;
use super::output::{
    FolderOutput, HUNTS_PREFIX, HuntOutput, ObjectKind, S3Output, manifest_key, part_key,
    part_lines, schema_key,
};
use super::queue::{HuntQueue, HuntTask, LocalQueue, SqsHuntQueue};
use super::request::{HuntRequest, TenantSelection, saved_name};
use super::runner::{HuntRunner, NewRows, TenantRun, Verdict};
use super::settings::HuntSettings;
use crate::CallerError;
use crate::ErrorCode;
use crate::api::DefenderApi;
use crate::callers::{Admission, Caller, CallerScoping, OUTSIDE_MAPPING, Reach, ScopeError};
use crate::defender::limiter::Limiter;
use crate::runtime::Services;
use crate::sink::s3_client;
use crate::store::{
    HuntRecord, HuntRecords, HuntStatus, HuntTarget, SavedHunt, TenantHuntResult, TenantHuntStatus,
    TenantRegistry, TenantStatus,
};
use crate::telemetry::metrics::{self, Finished};
use crate::tenant_id::TenantId;

/// Attempts of one tenant (throttling, the CPU quota, outages) before it is reported failed.
pub const MAX_ATTEMPTS: u32 = 12;
/// A row a saved hunt has seen is remembered this long: longer than any timespan of 30 days,
/// so a row still inside a run's window is never announced twice.
pub const SEEN_ROW_DAYS: i64 = 31;
/// The manifest is rewritten at most this often per instance while tenants finish (always at
/// the end).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Lambda's own limit is 15 minutes; Microsoft stops a query after 3; the rest is download.
const QUERY_HTTP_TIMEOUT: Duration = Duration::from_secs(300);
/// Tenants queried at once by one process draining its local queue.
const LOCAL_CONCURRENCY: usize = 16;
/// A saved hunt is due a little before its interval ends, so a schedule that fires every N
/// minutes runs an N-minute hunt every time rather than every other time.
const SCHEDULE_SLACK: chrono::Duration = chrono::Duration::seconds(60);

/// The tenants of a selection: the active ones to query, and the listed ones that cannot be,
/// each with its code and why.
type Targets = (Vec<HuntTarget>, Vec<(HuntTarget, ErrorCode, String)>);

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submitted {
    pub hunt_id: String,
    pub status: String,
    pub tenants: usize,
    /// Where to poll: the manifest's location.
    pub manifest: String,
}

pub struct HuntService {
    runner: HuntRunner,
    store: Arc<dyn HuntRecords>,
    registry: Arc<dyn TenantRegistry>,
    queue: Arc<dyn HuntQueue>,
    /// When tenants are queried in this process rather than by queue messages.
    local: Option<Arc<LocalQueue>>,
    events: Arc<dyn HuntEvents>,
    last_progress: Mutex<Option<Instant>>,
    /// Who may hunt across, and read the hunts of, which tenants (`dp-operator callers`).
    scoping: Option<CallerScoping>,
}

/// Who asks: the operator's tools and the schedule are trusted with every tenant; a caller of
/// the function is held to its mapping.
#[derive(Debug, Clone, Copy)]
pub enum Asker<'a> {
    Trusted,
    Caller(&'a Caller),
}

impl HuntService {
    pub fn new(
        runner: HuntRunner,
        store: Arc<dyn HuntRecords>,
        registry: Arc<dyn TenantRegistry>,
        queue: Arc<dyn HuntQueue>,
        local: Option<Arc<LocalQueue>>,
        events: Arc<dyn HuntEvents>,
    ) -> HuntService {
        HuntService {
            runner,
            store,
            registry,
            queue,
            local,
            events,
            last_progress: Mutex::new(None),
            scoping: None,
        }
    }

    /// Holds callers of the function ([`Asker::Caller`]) to their mapping.
    pub fn with_caller_scoping(mut self, scoping: CallerScoping) -> HuntService {
        self.scoping = Some(scoping);
        self
    }

    async fn reach(&self, asker: Asker<'_>) -> Result<Reach, HuntError> {
        match (&self.scoping, asker) {
            (Some(scoping), Asker::Caller(caller)) => Ok(scoping.reach(caller).await?),
            _ => Ok(Reach::Everything(Admission::ScopingOff)),
        }
    }

    /// The service with the clients `services` holds and the settings `lookup` reads.
    pub async fn build(
        services: &Services,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<HuntService, Box<dyn std::error::Error + Send + Sync>> {
        let settings = HuntSettings::from_lookup(lookup)?;
        let aws = match (&services.aws, settings.needs_aws()) {
            (_, false) => None,
            (Some(config), true) => Some(config.clone()),
            (None, true) => {
                Some(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
            }
        };
        let output: Arc<dyn HuntOutput> = match (&settings.bucket, &aws) {
            (Some(bucket), Some(aws)) => Arc::new(S3Output::new(
                s3_client(aws, settings.s3_endpoint.as_deref()),
                bucket.clone(),
            )),
            _ => Arc::new(FolderOutput::new(settings.dir.clone())),
        };
        let (queue, local): (Arc<dyn HuntQueue>, _) = match (&settings.queue_url, &aws) {
            (Some(url), Some(aws)) => (
                Arc::new(SqsHuntQueue::new(
                    aws_sdk_sqs::Client::new(aws),
                    url.clone(),
                )),
                None,
            ),
            _ => {
                let local = Arc::new(LocalQueue::default());
                (local.clone() as Arc<dyn HuntQueue>, Some(local))
            }
        };
        let events: Arc<dyn HuntEvents> = match (&settings.event_bus, &aws) {
            (Some(bus), Some(aws)) => Arc::new(EventBridgeEvents::new(
                aws_sdk_eventbridge::Client::new(aws),
                bus.clone(),
            )),
            _ => Arc::new(NoEvents),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("defender-partner/", env!("CARGO_PKG_VERSION")))
            .timeout(QUERY_HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| format!("the HTTP client could not be built: {error}"))?;
        let runner = HuntRunner::new(
            http,
            services
                .settings
                .endpoints
                .api_base(DefenderApi::Graph)
                .clone(),
            services.tokens.clone(),
            Arc::new(Limiter::new()),
            output,
            settings.row_cap,
        );
        Ok(HuntService::new(
            runner,
            services.hunts.clone(),
            services.registry.clone(),
            queue,
            local,
            events,
        )
        .with_caller_scoping(CallerScoping::new(
            services.settings.callers.clone(),
            services.callers.clone(),
        )))
    }

    /// Whether tenants are queried in this process (no queue configured): the caller then
    /// runs [`HuntService::drain_local`].
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    fn output(&self) -> &Arc<dyn HuntOutput> {
        self.runner.output()
    }

    /// Where a hunt's results are.
    pub fn results_location(&self, hunt_id: &str) -> String {
        self.output().location(&format!("{HUNTS_PREFIX}{hunt_id}/"))
    }

    /// Submits a hunt request for the trusted `caller` (the operator's tools).
    pub async fn submit_json(
        &self,
        body: &serde_json::Value,
        caller: &str,
    ) -> Result<Submitted, HuntError> {
        self.submit_json_as(body, caller, Asker::Trusted).await
    }

    /// Submits a hunt request for `caller` (as recorded), within `asker`'s reach.
    pub async fn submit_json_as(
        &self,
        body: &serde_json::Value,
        caller: &str,
        asker: Asker<'_>,
    ) -> Result<Submitted, HuntError> {
        let request = HuntRequest::from_json(body)?;
        let reach = self.reach(asker).await?;
        self.submit_within(
            &request,
            caller,
            None,
            uuid::Uuid::new_v4().to_string(),
            &reach,
        )
        .await
    }

    /// Records the hunt and queues its first tenant (the probe); answers at once.
    pub async fn submit(
        &self,
        request: &HuntRequest,
        caller: &str,
        saved: Option<&str>,
        hunt_id: String,
    ) -> Result<Submitted, HuntError> {
        let everything = Reach::Everything(Admission::ScopingOff);
        self.submit_within(request, caller, saved, hunt_id, &everything)
            .await
    }

    /// [`HuntService::submit`], over the tenants of the selection `reach` includes.
    async fn submit_within(
        &self,
        request: &HuntRequest,
        caller: &str,
        saved: Option<&str>,
        hunt_id: String,
        reach: &Reach,
    ) -> Result<Submitted, HuntError> {
        let selected = self.targets_within(&request.tenants, caller, reach).await?;
        let targets: Vec<HuntTarget> = every_target(&selected).cloned().collect();
        if targets.is_empty() {
            return Err(HuntError::NoTenants(describe(&request.tenants)));
        }
        let (active, unusable) = selected;
        let hunt = HuntRecord {
            id: hunt_id,
            name: request.name.clone().or_else(|| saved.map(str::to_owned)),
            query: request.query.clone(),
            timespan: request
                .timespan
                .as_ref()
                .map(|timespan| timespan.as_str().to_owned()),
            remaining: targets.len() as u64,
            targets,
            submitted_at: Utc::now(),
            submitted_by: caller.to_owned(),
            saved: saved.map(str::to_owned),
            status: HuntStatus::Running,
            error_code: None,
            error: None,
            finished_at: None,
        };
        self.store.create_hunt(&hunt).await?;
        tracing::info!(hunt = %hunt.id, tenants = hunt.targets.len(), caller, "hunt submitted");
        let mut remaining = hunt.remaining;
        for (target, code, error) in &unusable {
            let result = TenantHuntResult {
                tenant_id: target.tenant_id.clone(),
                customer_ref: target.customer_ref.clone(),
                status: TenantHuntStatus::Failed,
                rows: 0,
                truncated: false,
                parts: 0,
                new_rows: None,
                error_code: Some(code.as_str().to_owned()),
                error: Some(error.clone()),
                duration_ms: 0,
                attempts: 0,
                finished_at: Utc::now(),
            };
            if let Some(left) = self.store.finish_tenant(&hunt.id, &result).await? {
                remaining = left;
            }
        }
        match active.first() {
            Some(first) => {
                let probe = HuntTask {
                    hunt_id: hunt.id.clone(),
                    tenant_id: first.tenant_id.clone(),
                    attempt: 0,
                    spent_ms: 0,
                    probe: true,
                };
                if let Err(error) = self.queue.send(&[probe]).await {
                    self.fail(&hunt.id, ErrorCode::HuntQueueUnavailable, &error)
                        .await?;
                    return Err(HuntError::Queue(error));
                }
                self.publish_manifest(&hunt.id).await?;
            }
            None if remaining == 0 => self.complete(&hunt.id).await?,
            None => {}
        }
        Ok(Submitted {
            hunt_id: hunt.id.clone(),
            status: HuntStatus::Running.to_string(),
            tenants: hunt.targets.len(),
            manifest: self.output().location(&manifest_key(&hunt.id)),
        })
    }

    /// [`HuntService::targets`] within `reach` (see [`within_reach`]).
    async fn targets_within(
        &self,
        selection: &TenantSelection,
        caller: &str,
        reach: &Reach,
    ) -> Result<Targets, HuntError> {
        let targets = self.targets(selection).await?;
        within_reach(selection, reach, targets).map_err(|(target, reason)| {
            HuntError::Scope(ScopeError::NotAllowed {
                caller: caller.to_owned(),
                target,
                reason,
            })
        })
    }

    /// The tenants a selection names: the active ones to query, and the listed ones that cannot
    /// be (unknown or not active), each with why.
    async fn targets(&self, selection: &TenantSelection) -> Result<Targets, HuntError> {
        let registered = self.registry.list().await?;
        let target = |tenant_id: &TenantId, customer_ref: &Option<String>| HuntTarget {
            tenant_id: tenant_id.clone(),
            customer_ref: customer_ref.clone(),
        };
        let active = |record: &&crate::store::TenantRecord| record.status == TenantStatus::Active;
        Ok(match selection {
            TenantSelection::All => (
                registered
                    .iter()
                    .filter(active)
                    .map(|record| target(&record.tenant_id, &record.customer_ref))
                    .collect(),
                Vec::new(),
            ),
            TenantSelection::Customer(customer) => (
                registered
                    .iter()
                    .filter(active)
                    .filter(|record| record.customer_ref.as_deref() == Some(customer.as_str()))
                    .map(|record| target(&record.tenant_id, &record.customer_ref))
                    .collect(),
                Vec::new(),
            ),
            TenantSelection::Listed(tenants) => {
                let mut usable = Vec::new();
                let mut unusable = Vec::new();
                for tenant in tenants {
                    match registered.iter().find(|record| &record.tenant_id == tenant) {
                        Some(record) if record.status == TenantStatus::Active => {
                            usable.push(target(tenant, &record.customer_ref));
                        }
                        Some(record) => unusable.push((
                            target(tenant, &record.customer_ref),
                            ErrorCode::TenantNotActive,
                            format!("tenant {tenant} is {}: not hunted", record.status),
                        )),
                        None => unusable.push((
                            target(tenant, &None),
                            ErrorCode::TenantNotRegistered,
                            format!("tenant {tenant} is not registered: not hunted"),
                        )),
                    }
                }
                (usable, unusable)
            }
        })
    }

    /// One tenant's message. `Err` only when the store or the queue failed: the message is then
    /// delivered again.
    pub async fn run_task(&self, task: HuntTask) -> Result<(), HuntError> {
        let Some(hunt) = self.store.hunt(&task.hunt_id).await? else {
            tracing::warn!(hunt = %task.hunt_id, "a message for an unknown hunt is dropped");
            return Ok(());
        };
        // A failed hunt (its query refused) queries nobody more.
        if hunt.status != HuntStatus::Running {
            return Ok(());
        }
        let Some(target) = hunt
            .targets
            .iter()
            .find(|target| target.tenant_id == task.tenant_id)
        else {
            tracing::warn!(hunt = %hunt.id, tenant = %task.tenant_id, "a message for a tenant outside the hunt is dropped");
            return Ok(());
        };
        let started = Instant::now();
        let detector = hunt.saved.as_deref().map(|saved| Detector {
            saved,
            hunt_id: &hunt.id,
            store: self.store.as_ref(),
            events: self.events.as_ref(),
        });
        let run = TenantRun {
            hunt_id: &hunt.id,
            tenant: &target.tenant_id,
            customer_ref: target.customer_ref.as_deref(),
            query: &hunt.query,
            timespan: hunt.timespan.as_deref(),
            new_rows: detector.as_ref().map(|detector| detector as &dyn NewRows),
        };
        let verdict = self.runner.run(&run).await;
        let spent_ms = task.spent_ms + started.elapsed().as_millis() as u64;
        let attempts = task.attempt + 1;
        let finished =
            |status, rows, truncated, parts, new_rows, code: Option<ErrorCode>, error| {
                TenantHuntResult {
                    tenant_id: target.tenant_id.clone(),
                    customer_ref: target.customer_ref.clone(),
                    status,
                    rows,
                    truncated,
                    parts,
                    new_rows,
                    error_code: code.map(|code| code.as_str().to_owned()),
                    error,
                    duration_ms: spent_ms,
                    attempts,
                    finished_at: Utc::now(),
                }
            };
        let result = match verdict {
            Verdict::QueryInvalid { code, message } => {
                tracing::warn!(hunt = %hunt.id, tenant = %target.tenant_id, %code, %message, "Microsoft refused the query: the hunt fails");
                let error = HuntError::QueryInvalid { code, message };
                return self
                    .fail(&hunt.id, ErrorCode::HuntQueryInvalid, &error.to_string())
                    .await;
            }
            Verdict::Requeue {
                after,
                code,
                reason,
            } if attempts < MAX_ATTEMPTS => {
                tracing::info!(hunt = %hunt.id, tenant = %target.tenant_id, wait_s = after.as_secs(), %code, %reason, "tenant requeued");
                if task.probe {
                    self.fan_out(&hunt).await?;
                }
                let again = HuntTask {
                    attempt: attempts,
                    spent_ms,
                    probe: false,
                    ..task
                };
                return self
                    .queue
                    .send_later(&again, after)
                    .await
                    .map_err(HuntError::Queue);
            }
            Verdict::Requeue { code, reason, .. } => finished(
                TenantHuntStatus::Failed,
                0,
                false,
                0,
                None,
                Some(code),
                Some(format!("gave up after {attempts} attempts: {reason}")),
            ),
            Verdict::Finished {
                status,
                rows,
                truncated,
                parts,
                new_rows,
                error_code,
                error,
            } => finished(status, rows, truncated, parts, new_rows, error_code, error),
        };
        // The others are queued before this tenant counts off: a crash in between repeats this
        // message (and the fan-out), never loses the rest.
        if task.probe {
            self.fan_out(&hunt).await?;
        }
        tracing::info!(hunt = %hunt.id, tenant = %target.tenant_id, status = %result.status, rows = result.rows, truncated = result.truncated, "tenant finished");
        match self.store.finish_tenant(&hunt.id, &result).await? {
            None => Ok(()),
            Some(0) => self.complete(&hunt.id).await,
            Some(_) => self.publish_progress(&hunt.id).await,
        }
    }

    /// Queues every tenant but the probe.
    async fn fan_out(&self, hunt: &HuntRecord) -> Result<(), HuntError> {
        let results = self.store.tenant_results(&hunt.id).await?;
        let finished: HashSet<&TenantId> = results.iter().map(|result| &result.tenant_id).collect();
        let tasks: Vec<HuntTask> = hunt
            .targets
            .iter()
            .skip(1)
            .filter(|target| !finished.contains(&target.tenant_id))
            .map(|target| HuntTask {
                hunt_id: hunt.id.clone(),
                tenant_id: target.tenant_id.clone(),
                attempt: 0,
                spent_ms: 0,
                probe: false,
            })
            .collect();
        self.queue.send(&tasks).await.map_err(HuntError::Queue)
    }

    async fn fail(&self, hunt_id: &str, code: ErrorCode, error: &str) -> Result<(), HuntError> {
        if self
            .store
            .close_hunt(
                hunt_id,
                HuntStatus::Failed,
                Some(code.as_str()),
                Some(error),
                Utc::now(),
            )
            .await?
        {
            self.announce(hunt_id).await?;
        }
        Ok(())
    }

    async fn complete(&self, hunt_id: &str) -> Result<(), HuntError> {
        if self
            .store
            .close_hunt(hunt_id, HuntStatus::Completed, None, None, Utc::now())
            .await?
        {
            self.announce(hunt_id).await?;
        }
        Ok(())
    }

    /// The final manifest, then `HuntCompleted` (whose failure is logged: the manifest is the
    /// record).
    async fn announce(&self, hunt_id: &str) -> Result<(), HuntError> {
        let manifest = self.publish_manifest(hunt_id).await?;
        tracing::info!(hunt = %hunt_id, status = %manifest.status, rows = manifest.rows_total, "hunt finished");
        metrics::hunt(if manifest.status == HuntStatus::Failed.as_str() {
            Finished::Failed
        } else {
            Finished::Done
        });
        if let Err(error) = self.events.completed(&manifest).await {
            tracing::warn!(hunt = %hunt_id, %error, "HuntCompleted could not be put on the bus");
        }
        Ok(())
    }

    async fn publish_progress(&self, hunt_id: &str) -> Result<(), HuntError> {
        {
            let mut last = self
                .last_progress
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if last.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        self.publish_manifest(hunt_id).await.map(|_| ())
    }

    async fn publish_manifest(&self, hunt_id: &str) -> Result<Manifest, HuntError> {
        let manifest = self.manifest(hunt_id).await?;
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        self.output()
            .put(&manifest_key(hunt_id), body.into(), ObjectKind::Json)
            .await
            .map_err(HuntError::Output)?;
        Ok(manifest)
    }

    /// The hunt's state as the store holds it.
    pub async fn manifest(&self, hunt_id: &str) -> Result<Manifest, HuntError> {
        // Hunt ids are UUIDs: anything else names no hunt (and no other partition of the store).
        if uuid::Uuid::parse_str(hunt_id).is_err() {
            return Err(HuntError::NotFound(hunt_id.to_owned()));
        }
        let hunt = self
            .store
            .hunt(hunt_id)
            .await?
            .ok_or_else(|| HuntError::NotFound(hunt_id.to_owned()))?;
        let results = self.store.tenant_results(hunt_id).await?;
        Ok(Manifest::build(
            &hunt,
            &results,
            self.results_location(hunt_id),
        ))
    }

    /// The hunt's state, for `asker`: a caller whose mapping does not include every tenant the
    /// hunt spans is refused it (the same refusal whoever submitted it).
    pub async fn manifest_as(
        &self,
        hunt_id: &str,
        asker: Asker<'_>,
    ) -> Result<Manifest, HuntError> {
        let reach = self.reach(asker).await?;
        let manifest = self.manifest(hunt_id).await?;
        let outside = manifest.tenants.iter().any(|tenant| {
            TenantId::parse(&tenant.tenant_id)
                .map(|id| !reach.allows(&id, tenant.customer_ref.as_deref()))
                .unwrap_or(true)
        });
        if outside {
            let caller = match asker {
                Asker::Caller(caller) => caller.to_string(),
                Asker::Trusted => "trusted".to_owned(),
            };
            return Err(HuntError::Scope(ScopeError::NotAllowed {
                caller,
                target: format!("hunt {hunt_id}"),
                reason: "the hunt spans tenants its mapping does not include",
            }));
        }
        Ok(manifest)
    }

    /// Every row of a finished tenant, part by part (one part in memory at a time), in the
    /// manifest's tenant order.
    pub async fn for_each_row(
        &self,
        hunt_id: &str,
        mut each: impl FnMut(&str) -> Result<(), String>,
    ) -> Result<(), HuntError> {
        let manifest = self.manifest(hunt_id).await?;
        for tenant in &manifest.tenants {
            let tenant_id = TenantId::parse(&tenant.tenant_id)?;
            for part in 1..=tenant.parts {
                let key = part_key(hunt_id, &tenant_id, part);
                let body = self
                    .output()
                    .get(&key)
                    .await
                    .map_err(HuntError::Output)?
                    .ok_or_else(|| {
                        HuntError::Output(format!("{} is missing", self.output().location(&key)))
                    })?;
                for line in part_lines(&body).map_err(HuntError::Output)? {
                    each(&line).map_err(HuntError::Output)?;
                }
            }
        }
        Ok(())
    }

    /// The columns Microsoft answered, in first-seen order over the hunt's tenants.
    pub async fn columns(&self, hunt_id: &str) -> Result<Vec<Column>, HuntError> {
        let manifest = self.manifest(hunt_id).await?;
        let mut columns: Vec<Column> = Vec::new();
        for tenant in manifest
            .tenants
            .iter()
            .filter(|tenant| tenant.status == "succeeded")
        {
            let tenant_id = TenantId::parse(&tenant.tenant_id)?;
            let Some(body) = self
                .output()
                .get(&schema_key(hunt_id, &tenant_id))
                .await
                .map_err(HuntError::Output)?
            else {
                continue;
            };
            let schema: Vec<Column> = serde_json::from_slice(&body)
                .map_err(|error| HuntError::Output(format!("a schema is unreadable: {error}")))?;
            for column in schema {
                if !columns.iter().any(|known| known.name == column.name) {
                    columns.push(column);
                }
            }
        }
        Ok(columns)
    }

    /// Runs the local queue until every task is done (tenants waiting for their quota are
    /// waited for). Only when no queue is configured.
    pub async fn drain_local(&self) {
        let Some(local) = &self.local else {
            return;
        };
        loop {
            let (due, next) = local.take_due();
            if due.is_empty() {
                match next {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None => return,
                }
            }
            for chunk in due.chunks(LOCAL_CONCURRENCY) {
                let runs = chunk.iter().cloned().map(|task| async move {
                    let tenant = task.tenant_id.clone();
                    if let Err(error) = self.run_task(task.clone()).await {
                        tracing::warn!(%tenant, %error, "tenant failed; retried");
                        let _ = self.queue.send_later(&task, Duration::from_secs(5)).await;
                    }
                });
                futures_join_all(runs).await;
            }
        }
    }

    pub async fn save(
        &self,
        name: &str,
        request: &serde_json::Value,
        every_minutes: Option<u32>,
    ) -> Result<SavedHunt, HuntError> {
        let name = saved_name(name)?;
        let request = HuntRequest::from_json(request)?;
        if every_minutes == Some(0) {
            return Err(HuntError::InvalidRequest(
                "every_minutes must be at least 1".into(),
            ));
        }
        let saved = SavedHunt {
            name,
            request: request.to_json(),
            every_minutes,
            last_run_at: None,
            last_hunt_id: None,
            created_at: Utc::now(),
        };
        self.store.save_hunt(&saved).await?;
        Ok(self.store.saved_hunt(&saved.name).await?.unwrap_or(saved))
    }

    pub async fn saved(&self) -> Result<Vec<SavedHunt>, HuntError> {
        Ok(self.store.saved_hunts().await?)
    }

    pub async fn delete_saved(&self, name: &str) -> Result<(), HuntError> {
        if self.store.delete_saved_hunt(name).await? {
            Ok(())
        } else {
            Err(HuntError::SavedNotFound(name.to_owned()))
        }
    }

    /// Runs a saved hunt now (its new rows are announced as on the schedule).
    pub async fn run_saved(&self, name: &str, caller: &str) -> Result<Submitted, HuntError> {
        self.run_saved_as(name, caller, Asker::Trusted).await
    }

    /// [`HuntService::run_saved`] for `asker`: only when its reach includes every tenant the
    /// saved hunt spans (a saved hunt runs as saved, never narrowed), checked before the run is
    /// claimed, so a refused caller does not move the saved hunt's schedule.
    pub async fn run_saved_as(
        &self,
        name: &str,
        caller: &str,
        asker: Asker<'_>,
    ) -> Result<Submitted, HuntError> {
        // A caller that reaches nothing learns nothing, not even which saved hunts exist.
        let reach = self.reach(asker).await?;
        let saved = self
            .store
            .saved_hunt(name)
            .await?
            .ok_or_else(|| HuntError::SavedNotFound(name.to_owned()))?;
        let request = HuntRequest::from_json(&saved.request)?;
        if let Reach::Mapped(_) = reach {
            let selected = self.targets(&request.tenants).await?;
            let mut targets = every_target(&selected).peekable();
            // No tenant at all is not "all within": the hunt's selection is still beyond it.
            if targets.peek().is_none() || !targets.all(|target| reaches(&reach, target)) {
                return Err(HuntError::Scope(ScopeError::NotAllowed {
                    caller: caller.to_owned(),
                    target: format!("saved hunt {name:?}"),
                    reason: "it spans tenants its mapping does not include",
                }));
            }
        }
        let hunt_id = uuid::Uuid::new_v4().to_string();
        if !self
            .store
            .claim_saved_run(name, saved.last_run_at, Utc::now(), &hunt_id)
            .await?
        {
            return Err(HuntError::InvalidRequest(format!(
                "saved hunt {name:?} was started by someone else just now; see `hunt list`"
            )));
        }
        // Within the same reach: a tenant that became active since the check is left out.
        self.submit_within(&request, caller, Some(&saved.name), hunt_id, &reach)
            .await
    }

    /// The schedule's tick: every saved hunt whose interval has passed is started, once however
    /// many schedulers tick at the same time.
    pub async fn scheduled(&self, now: DateTime<Utc>) -> Result<Vec<Submitted>, HuntError> {
        let mut started = Vec::new();
        for saved in self.store.saved_hunts().await? {
            let Some(every) = saved.every_minutes else {
                continue;
            };
            let due = saved.last_run_at.is_none_or(|last| {
                now - last + SCHEDULE_SLACK >= chrono::Duration::minutes(i64::from(every))
            });
            if !due {
                continue;
            }
            let hunt_id = uuid::Uuid::new_v4().to_string();
            if !self
                .store
                .claim_saved_run(&saved.name, saved.last_run_at, now, &hunt_id)
                .await?
            {
                continue;
            }
            let submitted = match HuntRequest::from_json(&saved.request) {
                Ok(request) => {
                    self.submit(&request, "schedule", Some(&saved.name), hunt_id)
                        .await
                }
                Err(error) => Err(error),
            };
            match submitted {
                Ok(submitted) => started.push(submitted),
                // One saved hunt's trouble (no tenant left, say) never stops the others.
                Err(error) => {
                    tracing::warn!(saved = %saved.name, code = %error.code(), %error, "scheduled hunt not started");
                }
            }
        }
        Ok(started)
    }
}

/// Every target of a selection: the active ones, then those that cannot be hunted.
fn every_target((active, unusable): &Targets) -> impl Iterator<Item = &HuntTarget> {
    active
        .iter()
        .chain(unusable.iter().map(|(target, _, _)| target))
}

/// Whether `reach` includes `target`.
fn reaches(reach: &Reach, target: &HuntTarget) -> bool {
    reach.allows(&target.tenant_id, target.customer_ref.as_deref())
}

/// The targets of `selection` that `reach` includes: a selection of all tenants is narrowed to
/// them; a customer the mapping does not name, or a list with a tenant outside it, is refused
/// (what was refused, and why), whether or not the tenant is registered, so that a caller learns
/// nothing of tenants beyond its mapping.
fn within_reach(
    selection: &TenantSelection,
    reach: &Reach,
    targets: Targets,
) -> Result<Targets, (String, &'static str)> {
    let Reach::Mapped(scope) = reach else {
        return Ok(targets);
    };
    match selection {
        TenantSelection::All => {
            let (active, _) = targets;
            let active: Vec<HuntTarget> = active
                .into_iter()
                .filter(|target| reaches(reach, target))
                .collect();
            if active.is_empty() {
                return Err(("any active tenant".to_owned(), "its mapping includes none"));
            }
            Ok((active, Vec::new()))
        }
        // Only a customer the mapping names: allowing one whose tenants all happen to be
        // mapped by id would tell a caller which customer its tenants belong to.
        TenantSelection::Customer(customer) if scope.customer_refs.contains(customer) => {
            Ok(targets)
        }
        TenantSelection::Customer(customer) => {
            Err((format!("customer {customer}"), OUTSIDE_MAPPING))
        }
        TenantSelection::Listed(_) => {
            let outside = every_target(&targets)
                .find(|target| !reaches(reach, target))
                .map(|target| format!("tenant {}", target.tenant_id));
            match outside {
                Some(outside) => Err((outside, OUTSIDE_MAPPING)),
                None => Ok(targets),
            }
        }
    }
}

/// Runs futures concurrently on this task, all to completion.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut pending = set;
    std::future::poll_fn(|context| {
        pending.retain_mut(|future| future.as_mut().poll(context).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

fn describe(selection: &TenantSelection) -> String {
    match selection {
        TenantSelection::All => "all".into(),
        TenantSelection::Listed(tenants) => format!("{} listed tenant(s)", tenants.len()),
        TenantSelection::Customer(customer) => format!("customer {customer:?}"),
    }
}

/// A saved hunt's rows compared with the ones its earlier runs saw in the tenant: the new ones
/// are remembered and announced; if announcing fails they are forgotten again, so the next run
/// announces them.
struct Detector<'a> {
    saved: &'a str,
    hunt_id: &'a str,
    store: &'a dyn HuntRecords,
    events: &'a dyn HuntEvents,
}

#[async_trait]
impl NewRows for Detector<'_> {
    async fn offer(&self, tenant: &TenantId, rows: Vec<(String, String)>) -> Result<u64, String> {
        let mut unique: Vec<String> = Vec::with_capacity(rows.len());
        for (hash, _) in &rows {
            if !unique.contains(hash) {
                unique.push(hash.clone());
            }
        }
        let now = Utc::now();
        let new = self
            .store
            .claim_new_rows(
                self.saved,
                tenant,
                &unique,
                now,
                now + chrono::Duration::days(SEEN_ROW_DAYS),
            )
            .await
            .map_err(|error| error.to_string())?;
        let mut fresh: HashSet<&String> = new.iter().collect();
        let details: Vec<String> = rows
            .iter()
            .filter(|(hash, _)| fresh.remove(hash))
            .map(|(hash, line)| {
                format!(
                    "{{\"saved_hunt\":{},\"hunt_id\":{},\"row_hash\":\"{hash}\",\"row\":{line}}}",
                    serde_json::Value::String(self.saved.to_owned()),
                    serde_json::Value::String(self.hunt_id.to_owned()),
                )
            })
            .collect();
        if let Err(error) = self.events.detections(&details).await {
            if let Err(release) = self.store.release_rows(self.saved, tenant, &new).await {
                tracing::warn!(%release, "claimed rows could not be released");
            }
            return Err(format!("new rows could not be announced: {error}"));
        }
        Ok(details.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CallerScope;

    const INSIDE: &str = "11111111-1111-4111-8111-111111111111";
    const BY_CUSTOMER: &str = "22222222-2222-4222-8222-222222222222";
    const OUTSIDE: &str = "33333333-3333-4333-8333-333333333333";

    fn target(id: &str, customer: &str) -> HuntTarget {
        HuntTarget {
            tenant_id: TenantId::parse(id).unwrap(),
            customer_ref: Some(customer.to_owned()),
        }
    }

    /// Every tenant active: INSIDE (named), BY_CUSTOMER (its customer named), OUTSIDE.
    fn fleet() -> Targets {
        (
            vec![
                target(INSIDE, "CRM-1"),
                target(BY_CUSTOMER, "CRM-2"),
                target(OUTSIDE, "CRM-3"),
            ],
            Vec::new(),
        )
    }

    fn mapped() -> Reach {
        let mut scope = CallerScope::empty("arn:aws:iam::123456789012:role/hunters");
        scope.tenants.insert(TenantId::parse(INSIDE).unwrap());
        scope.customer_refs.insert("CRM-2".into());
        Reach::Mapped(scope)
    }

    fn ids(targets: &Targets) -> Vec<String> {
        targets.0.iter().map(|t| t.tenant_id.to_string()).collect()
    }

    fn only(targets: Targets, ids: &[&str]) -> Targets {
        let (active, _) = targets;
        let active = active
            .into_iter()
            .filter(|t| ids.contains(&t.tenant_id.to_string().as_str()))
            .collect();
        (active, Vec::new())
    }

    #[test]
    fn all_tenants_is_narrowed_to_the_mapping_and_refused_when_it_holds_none() {
        let narrowed = within_reach(&TenantSelection::All, &mapped(), fleet()).unwrap();
        assert_eq!(ids(&narrowed), [INSIDE, BY_CUSTOMER]);
        let nothing_left =
            within_reach(&TenantSelection::All, &mapped(), only(fleet(), &[OUTSIDE]));
        assert_eq!(nothing_left.unwrap_err().0, "any active tenant");
        let everything = Reach::Everything(Admission::NoMappingExists);
        assert_eq!(
            ids(&within_reach(&TenantSelection::All, &everything, fleet()).unwrap()).len(),
            3
        );
    }

    #[test]
    fn a_list_or_a_customer_reaching_outside_is_refused_registered_or_not() {
        let listed = |ids: &[&str]| {
            TenantSelection::Listed(ids.iter().map(|id| TenantId::parse(id).unwrap()).collect())
        };
        let inside = within_reach(
            &listed(&[INSIDE, BY_CUSTOMER]),
            &mapped(),
            only(fleet(), &[INSIDE, BY_CUSTOMER]),
        );
        assert_eq!(ids(&inside.unwrap()), [INSIDE, BY_CUSTOMER]);
        let refused = within_reach(
            &listed(&[INSIDE, OUTSIDE]),
            &mapped(),
            only(fleet(), &[INSIDE, OUTSIDE]),
        )
        .unwrap_err();
        assert_eq!(refused, (format!("tenant {OUTSIDE}"), OUTSIDE_MAPPING));
        // Not registered: the same refusal as a registered tenant outside the mapping.
        let unregistered = (
            only(fleet(), &[INSIDE]).0,
            vec![(
                HuntTarget {
                    tenant_id: TenantId::parse(OUTSIDE).unwrap(),
                    customer_ref: None,
                },
                ErrorCode::TenantNotRegistered,
                "not registered".to_owned(),
            )],
        );
        let refused =
            within_reach(&listed(&[INSIDE, OUTSIDE]), &mapped(), unregistered).unwrap_err();
        assert_eq!(refused, (format!("tenant {OUTSIDE}"), OUTSIDE_MAPPING));

        let customer = |name: &str| TenantSelection::Customer(name.to_owned());
        assert!(within_reach(&customer("CRM-2"), &mapped(), only(fleet(), &[BY_CUSTOMER])).is_ok());
        // Its tenant mapped by id is no licence to name its customer (that would tell the
        // caller which customer the tenant belongs to).
        assert_eq!(
            within_reach(&customer("CRM-1"), &mapped(), only(fleet(), &[INSIDE]))
                .unwrap_err()
                .0,
            "customer CRM-1"
        );
        // A customer with no active tenant: the mapping decides, not the registry's answer.
        assert!(within_reach(&customer("CRM-2"), &mapped(), (Vec::new(), Vec::new())).is_ok());
        assert_eq!(
            within_reach(&customer("CRM-9"), &mapped(), (Vec::new(), Vec::new()))
                .unwrap_err()
                .0,
            "customer CRM-9"
        );
        assert!(within_reach(&customer("CRM-3"), &mapped(), only(fleet(), &[OUTSIDE])).is_err());
    }
}

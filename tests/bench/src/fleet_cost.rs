//! One fleet's scheduled runs, measured as Lambda bills them: the real fetch library (the fleet
//! plan, the engine, the fan-out's enqueue and batches) against the emulator with Microsoft's
//! latency injected, its store and sink calls metered and given AWS's latency
//! ([`crate::metered`]).
//!
//! - In-invocation: one scheduled invocation walks every pair (`run_scheduled` without a queue)
//!   with the configured concurrency. Billed: that one invocation.
//! - Fan-out: the scheduled invocation plans and sends one message per pair (`run_scheduled` with
//!   a stand-in for SQS that waits SQS's time per `SendMessageBatch` of 10); then the pairs run
//!   in batches of the template's `BatchSize` on `FetchMaxConcurrency` function instances at
//!   once, each its own services (token cache, store connection), as the queue's event source
//!   drives them (`run_pairs`, what `FetchService::batch` runs after reading the messages).
//!   Billed: the scheduled invocation and every batch.
//!
//! Before the measured runs a warm-up run without latency gives every pair its checkpoint (the
//! steady state of a fleet already onboarded). The cold run is a first run on fresh instances
//! (every token fetched); the warm run one on instances that hold every tenant's token. Before
//! each, each tenant gets a number of changed incidents drawn from [`CostBench::changes`]
//! (their alerts change with them; the same draw for both runs), which the run then delivers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use defender_emulator::{Latency, LatencyRange};
use defender_partner::config::fetch::{
    ENV_CONCURRENCY, ENV_FANOUT_THRESHOLD, ENV_LOOKBACK_HOURS, ENV_SOURCES,
};
use defender_partner::defender::spec;
use defender_partner::entra::roles::RoleRequirement;
use defender_partner::fetch::{
    FetchService, Fetcher, PairOutcome, PairResult, PairTask, WorkQueue, run_pairs, run_scheduled,
};
use defender_partner::runtime::Services;
use defender_partner::sink::RecordSink;
use defender_partner::store::{Checkpoints, RunLeases, TenantRegistry, UpdateRecords};
use defender_partner::tenant_id::TenantId;
use defender_partner_testkit::World;

use crate::cost::{RunUsage, TemplateDefaults};
use crate::metered::{AwsLatency, Billing, CallCount, Meter, Metered, wait};
use crate::{TenantData, ingestion_world};

const CLIENT_ID: &str = "cccccccc-1111-4111-8111-111111111111";
const SECRET: &str = "cost-bench-secret";
/// Each tenant's history: incidents six hours apart (two MDE alerts each, which Graph
/// `alerts_v2` lists too), the newest about now. With a one-hour lookback the warm-up run
/// delivers at most the newest.
const INCIDENTS: u32 = 40;
const ALERTS: u32 = 80;
const SPACING_SECONDS: u32 = 6 * 3600;
/// SQS takes at most ten messages per `SendMessageBatch`.
const SQS_BATCH: usize = 10;
/// Lambda's own lines per invocation in the function's log group (`platform.start`,
/// `platform.report` in the JSON log format): an estimate, not measured here.
pub const PLATFORM_LOG_BYTES_PER_INVOCATION: u64 = 600;
/// Size of a tenant item in the registry, for the read units of the fleet's Query (an
/// estimate: a few identifiers, a name, roles, timestamps).
const TENANT_ITEM_BYTES: f64 = 512.0;

/// How the scheduled run works through the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetPath {
    InInvocation,
    FanOut,
}

impl FleetPath {
    pub fn name(self) -> &'static str {
        match self {
            FleetPath::InInvocation => "in-invocation",
            FleetPath::FanOut => "fan-out",
        }
    }
}

/// One fleet to measure.
#[derive(Clone)]
pub struct CostBench {
    pub tenants: usize,
    pub path: FleetPath,
    pub template: TemplateDefaults,
    /// Microsoft's time per data API call and per token request.
    pub latency: Latency,
    pub aws: AwsLatency,
    /// `DP_FETCH_CONCURRENCY` (pairs at once per instance); `None`: the function's default.
    pub concurrency: Option<usize>,
    /// Changed incidents per tenant before a run: one value drawn uniformly per tenant and run.
    pub changes: Vec<u32>,
    /// Measure a first run on fresh instances (every token fetched) before the warm one.
    pub cold: bool,
    pub seed: u64,
    /// Bytes logged so far by this process (its log file's size), to count a run's logs.
    pub log_size: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// One measured scheduled run.
#[derive(Debug, Clone)]
pub struct RunMeasure {
    /// `cold` (fresh instances: every token fetched) or `warm`.
    pub kind: &'static str,
    /// Billed time of each invocation: the scheduled one first.
    pub invocations: Vec<Duration>,
    pub pairs: usize,
    pub changed_incidents: u64,
    pub delivered: usize,
    pub api_calls: usize,
    pub token_requests: usize,
    pub aws: BTreeMap<(Billing, &'static str), CallCount>,
    /// What the library logged (JSON lines and EMF metrics), Lambda's own lines excluded.
    pub log_bytes: u64,
    /// From the scheduled invocation's start to the last batch's end.
    pub wall: Duration,
    /// CPU time of the whole process during the run (the in-process emulator's included, so an
    /// upper bound of the library's).
    pub cpu: Duration,
}

impl RunMeasure {
    /// Lambda bills each invocation rounded up to the millisecond.
    pub fn billed_ms(&self) -> u64 {
        self.invocations
            .iter()
            .map(|duration| duration.as_micros().div_ceil(1000) as u64)
            .sum()
    }

    pub fn longest(&self) -> Duration {
        self.invocations.iter().copied().max().unwrap_or_default()
    }

    fn count(&self, billing: Billing) -> CallCount {
        self.aws
            .iter()
            .filter(|((kind, _), _)| *kind == billing)
            .fold(CallCount::default(), |sum, (_, count)| CallCount {
                calls: sum.calls + count.calls,
                items: sum.items + count.items,
            })
    }

    /// The bill's inputs: 1 read unit per item read strongly consistently (items under 4 KB),
    /// half a unit per 4 KB of the tenants' Query, 1 write unit per item written (under 1 KB).
    pub fn usage(&self) -> RunUsage {
        let queried = self.count(Billing::DynamoQuery);
        let query_units = (queried.items as f64 * TENANT_ITEM_BYTES / 4096.0).ceil() * 0.5;
        RunUsage {
            invocations: self.invocations.len() as f64,
            billed_ms: self.billed_ms() as f64,
            dynamodb_reads: self.count(Billing::DynamoRead).items as f64 + query_units,
            dynamodb_writes: self.count(Billing::DynamoWrite).items as f64,
            s3_puts: self.count(Billing::S3Put).calls as f64,
            events: self.count(Billing::EventsPut).items as f64,
            sqs_requests: self.count(Billing::SqsRequest).calls as f64,
            log_bytes: (self.log_bytes
                + PLATFORM_LOG_BYTES_PER_INVOCATION * self.invocations.len() as u64)
                as f64,
        }
    }
}

/// A GUID for tenant `n` of the bench.
fn tenant_guid(n: usize) -> String {
    format!("c0570000-0000-4000-8000-{n:012x}")
}

/// Runs the warm-up, then the measured runs (cold, if asked, then warm).
pub async fn measure(bench: &CostBench) -> Result<Vec<RunMeasure>> {
    ensure!(bench.tenants > 0, "a fleet needs a tenant");
    ensure!(!bench.changes.is_empty(), "the changes list is empty");
    let ids: Vec<String> = (0..bench.tenants).map(tenant_guid).collect();
    let world = start_world(bench, &ids).await?;
    let meter = Meter::default();
    let instance_count = match bench.path {
        FleetPath::InInvocation => 1,
        FleetPath::FanOut => bench.template.max_concurrency.max(1),
    };
    let mut instances = Vec::new();
    for _ in 0..instance_count {
        instances.push(instance(&world, &meter, bench.aws).await?);
    }
    // Warm-up without Microsoft's latency: every pair gets its checkpoint (the steady state of a
    // fleet already onboarded); nothing is counted.
    run_once(bench, &fetchers(&instances), leases(&instances), &meter).await?;
    world.handle().set_latency(bench.latency);
    let mut runs = Vec::new();
    for kind in ["cold", "warm"] {
        if kind == "cold" && !bench.cold {
            continue;
        }
        if kind == "warm" {
            // Every instance holds every tenant's token, as after an hour of runs; their
            // refresh is priced from the cold run's cost per token.
            world.handle().set_latency(Latency::default());
            for instance in &instances {
                instance.hold_tokens(&ids).await?;
            }
            world.handle().set_latency(bench.latency);
        } else {
            // Fresh instances, as after a cold start: every token is fetched again.
            instances.clear();
            for _ in 0..instance_count {
                instances.push(instance(&world, &meter, bench.aws).await?);
            }
        }
        // The same draw for every run, so that the cold and the warm run differ by the tokens.
        let mut random = fastrand::Rng::with_seed(bench.seed);
        let mut changed = 0;
        for id in &ids {
            let count = bench.changes[random.usize(..bench.changes.len())];
            if count > 0 {
                world
                    .handle()
                    .touch_incidents(id, count)
                    .map_err(|error| anyhow::anyhow!("touching {id}: {error}"))?;
                changed += u64::from(count);
            }
        }
        meter.take();
        world.handle().clear_token_requests();
        let logged_before = (bench.log_size)();
        let mut run = run_once(bench, &fetchers(&instances), leases(&instances), &meter).await?;
        run.kind = kind;
        run.changed_incidents = changed;
        run.token_requests = world.handle().token_requests().len();
        run.aws = meter.take();
        run.log_bytes = (bench.log_size)().saturating_sub(logged_before);
        runs.push(run);
    }
    world.handle().set_latency(Latency::default());
    drop(instances);
    world.shutdown().await;
    Ok(runs)
}

async fn start_world(bench: &CostBench, ids: &[String]) -> Result<World> {
    let data: Vec<TenantData> = ids
        .iter()
        .map(|id| TenantData {
            id: id.clone(),
            incidents: INCIDENTS,
            mde_alerts: ALERTS,
            spacing_seconds: SPACING_SECONDS,
        })
        .collect();
    let mut settings = vec![
        (ENV_SOURCES, bench.template.sources.join(",")),
        (ENV_LOOKBACK_HOURS, "1".to_owned()),
        (
            ENV_FANOUT_THRESHOLD,
            bench.template.fanout_threshold.to_string(),
        ),
    ];
    if let Some(concurrency) = bench.concurrency {
        settings.push((ENV_CONCURRENCY, concurrency.to_string()));
    }
    // Microsoft's per-tenant limits are far away at one or two calls per tenant and run: the
    // emulator's are off, the client's own limiter stays on.
    ingestion_world((CLIENT_ID, "cost bench", SECRET), &data, &settings).await
}

/// A function instance: its own services (token cache, store connection) and the job built on
/// them as the function builds it, its store and sink metered.
struct Instance {
    services: Services,
    fetcher: Arc<Fetcher>,
}

impl Instance {
    /// Fetches every tenant's token for every API the sources use, as an instance holds them
    /// after enough runs.
    async fn hold_tokens(&self, ids: &[String]) -> Result<()> {
        let mut apis: Vec<_> = self.fetcher.settings.sources.to_vec();
        apis.dedup_by_key(|source| spec(*source).api);
        for id in ids {
            let tenant = TenantId::parse(id)?;
            for source in &apis {
                self.services
                    .tokens
                    .token(
                        &tenant,
                        spec(*source).api,
                        None,
                        &RoleRequirement::default_for_source(*source),
                    )
                    .await
                    .with_context(|| format!("token of {id}"))?;
            }
        }
        Ok(())
    }
}

async fn instance(world: &World, meter: &Meter, aws: AwsLatency) -> Result<Instance> {
    let services = world.new_instance().await?;
    let service = FetchService::build(&services, world.lookup()).await?;
    let built = &service.fetcher;
    let registry: Arc<dyn TenantRegistry> =
        Arc::new(Metered::new(built.registry.clone(), meter.clone(), aws));
    let checkpoints: Arc<dyn Checkpoints> =
        Arc::new(Metered::new(built.checkpoints.clone(), meter.clone(), aws));
    let updates: Arc<dyn UpdateRecords> =
        Arc::new(Metered::new(built.updates.clone(), meter.clone(), aws));
    let sink: Arc<dyn RecordSink> = Arc::new(Metered::new(built.sink.clone(), meter.clone(), aws));
    let fetcher = Arc::new(Fetcher {
        client: built.client.clone(),
        // Every tenant is active: nothing to re-verify.
        reverify: None,
        checkpoints,
        updates,
        registry,
        sink,
        settings: built.settings.clone(),
        roles: built.roles.clone(),
    });
    Ok(Instance { services, fetcher })
}

/// The fleet run lease the scheduled invocation takes (not metered: two writes a run).
fn leases(instances: &[Instance]) -> &dyn RunLeases {
    instances[0].services.run_leases.as_ref()
}

fn fetchers(instances: &[Instance]) -> Vec<Arc<Fetcher>> {
    instances
        .iter()
        .map(|instance| instance.fetcher.clone())
        .collect()
}

/// SQS as the scheduled invocation sees it: `SendMessageBatch` of ten, each waiting SQS's time.
struct StandInQueue {
    meter: Meter,
    latency: Option<LatencyRange>,
    sent: Mutex<Vec<PairTask>>,
}

#[async_trait]
impl WorkQueue for StandInQueue {
    async fn enqueue(&self, tasks: &[PairTask]) -> Result<(), String> {
        for chunk in tasks.chunks(SQS_BATCH) {
            self.meter
                .note(Billing::SqsRequest, "SQS SendMessageBatch", 1, chunk.len());
            wait(self.latency).await;
        }
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(tasks);
        Ok(())
    }
}

/// One scheduled run on `instances`.
async fn run_once(
    bench: &CostBench,
    instances: &[Arc<Fetcher>],
    leases: &dyn RunLeases,
    meter: &Meter,
) -> Result<RunMeasure> {
    let timeout = Duration::from_secs(bench.template.fetch_timeout_seconds);
    let deadline = || tokio::time::Instant::now() + timeout;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let (invocations, pairs, outcomes) = match bench.path {
        FleetPath::InInvocation => {
            let report = run_scheduled(instances[0].clone(), None, leases, deadline()).await?;
            (vec![started.elapsed()], report.pairs, report.outcomes)
        }
        FleetPath::FanOut => {
            let queue = StandInQueue {
                meter: meter.clone(),
                latency: bench.aws.sqs,
                sent: Mutex::new(Vec::new()),
            };
            let report =
                run_scheduled(instances[0].clone(), Some(&queue), leases, deadline()).await?;
            let scheduled = started.elapsed();
            ensure!(
                report.enqueued == report.pairs,
                "{} pairs did not fan out (FanoutThreshold {}): measure them in-invocation",
                report.pairs,
                bench.template.fanout_threshold
            );
            let tasks = queue
                .sent
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            let (mut batches, outcomes) = drain(bench, instances, meter, tasks).await?;
            batches.insert(0, scheduled);
            (batches, report.pairs, outcomes)
        }
    };
    let wall = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    let failed: Vec<&PairOutcome> = outcomes
        .iter()
        .filter(|outcome| outcome.result != PairResult::Complete)
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {pairs} pairs did not complete, e.g. {:?}",
            failed.len(),
            failed.first()
        );
    }
    ensure!(
        outcomes.len() == pairs,
        "{pairs} pairs planned, {} outcomes",
        outcomes.len()
    );
    Ok(RunMeasure {
        kind: "warm-up",
        invocations,
        pairs,
        changed_incidents: 0,
        delivered: outcomes.iter().map(|outcome| outcome.delivered).sum(),
        api_calls: outcomes.iter().map(|outcome| outcome.api_calls).sum(),
        token_requests: 0,
        aws: BTreeMap::new(),
        log_bytes: 0,
        wall,
        cpu,
    })
}

/// User and system CPU time of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The queue's event source: batches of `BatchSize` messages, at most one batch per instance
/// at a time. Returns each batch invocation's time and every outcome.
async fn drain(
    bench: &CostBench,
    instances: &[Arc<Fetcher>],
    meter: &Meter,
    tasks: Vec<PairTask>,
) -> Result<(Vec<Duration>, Vec<PairOutcome>)> {
    let batches: VecDeque<Vec<PairTask>> = tasks
        .chunks(bench.template.batch_size.max(1))
        .map(<[PairTask]>::to_vec)
        .collect();
    let batches = Arc::new(Mutex::new(batches));
    let timeout = Duration::from_secs(bench.template.fetch_timeout_seconds);
    let mut workers = tokio::task::JoinSet::new();
    for fetcher in instances {
        let fetcher = fetcher.clone();
        let batches = batches.clone();
        let meter = meter.clone();
        workers.spawn(async move {
            let mut durations = Vec::new();
            let mut outcomes = Vec::new();
            loop {
                let next = batches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some(batch) = next else { break };
                // The event source's poll and its delete of the batch: SQS requests outside
                // the function's billed time.
                meter.note(Billing::SqsRequest, "SQS ReceiveMessage", 1, batch.len());
                meter.note(
                    Billing::SqsRequest,
                    "SQS DeleteMessageBatch",
                    1,
                    batch.len(),
                );
                let started = Instant::now();
                let answered = run_pairs(
                    fetcher.clone(),
                    batch,
                    tokio::time::Instant::now() + timeout,
                )
                .await;
                durations.push(started.elapsed());
                outcomes.extend(answered);
            }
            (durations, outcomes)
        });
    }
    let mut durations = Vec::new();
    let mut outcomes = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (worker_durations, worker_outcomes) = joined.context("a batch worker panicked")?;
        durations.extend(worker_durations);
        outcomes.extend(worker_outcomes);
    }
    Ok((durations, outcomes))
}

//! `fetch-bench`: the ingestion job's numbers, measured in one process against the emulator.
//!
//! Everything real but Microsoft: the emulator (`defender_emulator::start`, its rate limits off,
//! so the only limits are the client's own), the real `FetchService` built from a settings
//! lookup as the function builds it, the embedded SQLite registry and the local NDJSON sink in a
//! temporary folder (removed at the end).
//!
//! (a) One tenant, one source, paged to the end: wall time, records per second, API calls per
//!     1,000 records, peak RSS (`VmHWM`, reset before each run through `/proc/self/clear_refs`).
//!     First a "burst" size that fits in one minute's budget of the client limiter (M365
//!     Defender 50 calls, Graph 60), which shows the engine's own speed, then the big backfill
//!     (100,000 M365 Defender incidents by default), which shows the limiter's pace: M365
//!     Defender allows 50 calls in any minute per tenant, so 50 pages of 100, then a wait until
//!     the first leaves the window, and so on: about 5,000 incidents a minute.
//! (b) A fleet of small tenants (1,000 × 20 incidents, one source) in one scheduled run, at
//!     each concurrency given: wall time and pairs per second.
//!
//! `scripts/bench-fetch` builds it in release and runs it; see docs/performance.md.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use defender_partner::config::fetch::{ENV_CONCURRENCY, ENV_LOOKBACK_HOURS, ENV_SOURCES};
use defender_partner::defender::Source;
use defender_partner::fetch::{FetchService, PairResult, PairTask};
use defender_partner::tenant_id::TenantId;
use defender_partner_bench::{TenantData, ingestion_world, parse_options, thousands};
use defender_partner_testkit::World;

const CLIENT_ID: &str = "bbbbbbbb-1111-4111-8111-111111111111";
const SECRET: &str = "fetch-bench-secret";
/// Generated records are this far apart; the newest ends about at load time.
const SPACING_SECONDS: u32 = 5;

const USAGE: &str = "\
fetch-bench [options]
  --big N               (a) M365 Defender incidents of the one-tenant backfill (default 100000; 0 skips)
  --graph-big N         (a) Graph incidents of a one-tenant backfill (default 0: skipped; above
                        75,000 the client's 1,500 calls/h budget ends it throttled)
  --no-burst            (a) skip the runs that fit in the limiter's burst
  --fleet-tenants N     (b) tenants (default 1000; 0 skips the fleet)
  --fleet-incidents N   (b) incidents per tenant (default 20)
  --concurrency LIST    (b) DP_FETCH_CONCURRENCY values, comma-separated (default 4,16)
";

struct Args {
    big: u32,
    graph_big: u32,
    burst: bool,
    fleet_tenants: usize,
    fleet_incidents: u32,
    concurrency: Vec<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        big: 100_000,
        graph_big: 0,
        burst: true,
        fleet_tenants: 1_000,
        fleet_incidents: 20,
        concurrency: vec![4, 16],
    };
    parse_options(USAGE, |name, value| {
        match name {
            "--big" => args.big = value()?.parse()?,
            "--graph-big" => args.graph_big = value()?.parse()?,
            "--no-burst" => args.burst = false,
            "--fleet-tenants" => args.fleet_tenants = value()?.parse()?,
            "--fleet-incidents" => args.fleet_incidents = value()?.parse()?,
            "--concurrency" => {
                args.concurrency = value()?
                    .split(',')
                    .map(|item| item.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if args.big > 1_000_000 || args.graph_big > 1_000_000 {
        bail!("the emulator generates at most 1,000,000 incidents per tenant");
    }
    Ok(args)
}

/// A GUID for tenant number `n` of a world (stable, readable in the sink folder).
fn tenant_guid(world: u32, n: u32) -> String {
    format!("{world:08x}-0000-4000-8000-{n:012x}")
}

/// The world of one measurement (emulator, registry, sink) and the fetch service built on it.
/// `tenants`: (id, incidents, MDE alerts), all registered active.
async fn start(
    tenants: &[(String, u32, u32)],
    extra: &[(&str, String)],
) -> Result<(World, FetchService)> {
    let deepest = tenants
        .iter()
        .map(|(_, n, a)| (*n).max(*a))
        .max()
        .unwrap_or(0);
    let lookback_hours = (u64::from(deepest) * u64::from(SPACING_SECONDS)).div_ceil(3600) + 2;
    let mut settings = vec![(ENV_LOOKBACK_HOURS, lookback_hours.to_string())];
    settings.extend(extra.iter().cloned());
    let data: Vec<TenantData> = tenants
        .iter()
        .map(|(id, incidents, mde_alerts)| TenantData {
            id: id.clone(),
            incidents: *incidents,
            mde_alerts: *mde_alerts,
            spacing_seconds: SPACING_SECONDS,
        })
        .collect();
    let world = ingestion_world((CLIENT_ID, "fetch bench", SECRET), &data, &settings).await?;
    let service = FetchService::build(&world.services, world.lookup()).await?;
    Ok((world, service))
}

/// Lines stored for a tenant's source (counted, each parsed as JSON on the way).
fn stored(world: &World, tenant: &str, source: Source) -> Result<usize> {
    let folder = world
        .folder()
        .join("sink")
        .join("incidents")
        .join(format!("tenant={tenant}"))
        .join(format!("source={source}"));
    let mut count = 0;
    count_lines(&folder, &mut count)?;
    Ok(count)
}

fn count_lines(dir: &Path, count: &mut usize) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            count_lines(&path, count)?;
        } else {
            let mut text = Vec::new();
            std::fs::File::open(&path)?.read_to_end(&mut text)?;
            *count += text
                .split(|byte| *byte == b'\n')
                .filter(|line| !line.is_empty())
                .count();
        }
    }
    Ok(())
}

/// Peak resident set size so far (`VmHWM`), KiB.
fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
}

fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false when refused.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

struct SingleResult {
    label: String,
    records: usize,
    wall: Duration,
    api_calls: usize,
    emulator_calls: u64,
    token_requests: usize,
    invocations: usize,
    peak_before_kib: u64,
    peak_kib: u64,
    peak_reset: bool,
}

/// Pages one tenant's source to its end (resuming as the function would if a run is cut).
async fn single(label: &str, source: Source, records: u32) -> Result<SingleResult> {
    let tenant = tenant_guid(0xa, u32::from(source == Source::GraphIncidents));
    let (incidents, alerts) = match source {
        Source::MdeAlerts | Source::GraphAlerts => (0, records),
        _ => (records, 0),
    };
    let (world, service) = start(
        &[(tenant.clone(), incidents, alerts)],
        &[(ENV_SOURCES, source.as_str().to_owned())],
    )
    .await?;
    let task = PairTask {
        tenant_id: TenantId::parse(&tenant)?,
        source,
    };
    let peak_reset = reset_peak_rss();
    let peak_before_kib = peak_rss_kib();
    let started = Instant::now();
    let mut delivered = 0;
    let mut api_calls = 0;
    let mut invocations = 0;
    loop {
        invocations += 1;
        let outcome = service
            .pairs(
                vec![task.clone()],
                tokio::time::Instant::now() + Duration::from_secs(4 * 3600),
            )
            .await
            .remove(0);
        delivered += outcome.delivered;
        api_calls += outcome.api_calls;
        match outcome.result {
            PairResult::Complete => break,
            PairResult::Partial if invocations < 100 => continue,
            other => bail!("{label}: the run ended {other:?} after {delivered} records"),
        }
    }
    let wall = started.elapsed();
    let peak_kib = peak_rss_kib();
    let calls = world.handle().data_api_calls(&tenant);
    let emulator_calls = match source {
        Source::M365dIncidents => calls.m365d_incidents.requests,
        Source::GraphIncidents => calls.graph_incidents.requests,
        Source::MdeAlerts => calls.mde_alerts.requests,
        Source::GraphAlerts => calls.graph_alerts.requests,
    };
    let token_requests = world.handle().token_requests().len();
    let stored = stored(&world, &tenant, source)?;
    if delivered != records as usize || stored != records as usize {
        bail!("{label}: {records} records at the API, {delivered} delivered, {stored} stored");
    }
    world.shutdown().await;
    let result = SingleResult {
        label: label.to_owned(),
        records: delivered,
        wall,
        api_calls,
        emulator_calls,
        token_requests,
        invocations,
        peak_before_kib,
        peak_kib,
        peak_reset,
    };
    println!(
        "  {:<28} {:>9} records  {:>9.2} s  {:>8.0} records/s  {} API calls ({:.1} per 1,000; emulator saw {})  peak RSS {} (at start {}{})",
        result.label,
        thousands(result.records as u64),
        wall.as_secs_f64(),
        result.records as f64 / wall.as_secs_f64(),
        result.api_calls,
        result.api_calls as f64 * 1000.0 / result.records.max(1) as f64,
        result.emulator_calls,
        mib(result.peak_kib),
        mib(result.peak_before_kib),
        if peak_reset {
            ""
        } else {
            "; VmHWM not reset: process peak"
        },
    );
    Ok(result)
}

struct FleetResult {
    concurrency: usize,
    tenants: usize,
    pairs_complete: usize,
    records: usize,
    wall: Duration,
    api_calls: usize,
    peak_kib: u64,
}

async fn fleet(
    tenants: usize,
    incidents: u32,
    concurrency: usize,
    world_id: u32,
) -> Result<FleetResult> {
    let ids: Vec<(String, u32, u32)> = (0..tenants as u32)
        .map(|n| (tenant_guid(world_id, n), incidents, 0))
        .collect();
    let (world, service) = start(
        &ids,
        &[
            (ENV_SOURCES, "m365d-incidents".to_owned()),
            (ENV_CONCURRENCY, concurrency.to_string()),
        ],
    )
    .await?;
    reset_peak_rss();
    let started = Instant::now();
    let report = service
        .scheduled(tokio::time::Instant::now() + Duration::from_secs(4 * 3600))
        .await?;
    let wall = started.elapsed();
    let peak_kib = peak_rss_kib();
    let pairs_complete = report
        .outcomes
        .iter()
        .filter(|outcome| outcome.result == PairResult::Complete)
        .count();
    let records: usize = report
        .outcomes
        .iter()
        .map(|outcome| outcome.delivered)
        .sum();
    let api_calls: usize = report
        .outcomes
        .iter()
        .map(|outcome| outcome.api_calls)
        .sum();
    if pairs_complete != tenants || records != tenants * incidents as usize {
        let failed: Vec<_> = report
            .outcomes
            .iter()
            .filter(|outcome| outcome.result != PairResult::Complete)
            .take(3)
            .collect();
        bail!(
            "fleet at concurrency {concurrency}: {pairs_complete}/{tenants} complete, {records} records; e.g. {failed:?}"
        );
    }
    world.shutdown().await;
    let result = FleetResult {
        concurrency,
        tenants,
        pairs_complete,
        records,
        wall,
        api_calls,
        peak_kib,
    };
    println!(
        "  concurrency {:>2}: {} tenants  {:>8.2} s  {:>6.1} tenants/s  {:>7.0} records/s  {} API calls  peak RSS {}",
        concurrency,
        thousands(tenants as u64),
        wall.as_secs_f64(),
        tenants as f64 / wall.as_secs_f64(),
        records as f64 / wall.as_secs_f64(),
        api_calls,
        mib(peak_kib),
    );
    Ok(result)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    println!(
        "fetch-bench: RSS at start {}, tokio worker threads = {}",
        mib(rss_kib()),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let mut singles = Vec::new();
    println!(
        "(a) one tenant, one source, paged to the end (emulator rate limits off; the client's limiter on)"
    );
    if args.burst {
        // 49 full pages + the closing short one = 50 calls: the M365 Defender burst.
        singles.push(single("m365d, within the burst", Source::M365dIncidents, 4_900).await?);
        // About 51 calls, inside one minute's Graph budget (60) with room for the pages that
        // records sharing a last-update time add.
        singles.push(single("graph, within the burst", Source::GraphIncidents, 2_500).await?);
        // alerts_v2: pages of up to 1,000, read by splitting time ranges (no order, no trust in
        // links), inside one minute's Graph budget (150).
        singles.push(single("graph-alerts", Source::GraphAlerts, 10_000).await?);
    }
    if args.big > 0 {
        singles.push(single("m365d backfill", Source::M365dIncidents, args.big).await?);
    }
    if args.graph_big > 0 {
        singles.push(single("graph backfill", Source::GraphIncidents, args.graph_big).await?);
    }
    let mut fleets = Vec::new();
    if args.fleet_tenants > 0 {
        println!(
            "(b) a fleet of {} tenants × m365d-incidents, {} incidents each, one scheduled run",
            args.fleet_tenants, args.fleet_incidents
        );
        for (index, concurrency) in args.concurrency.iter().enumerate() {
            fleets.push(
                fleet(
                    args.fleet_tenants,
                    args.fleet_incidents,
                    *concurrency,
                    0xf0 + index as u32,
                )
                .await?,
            );
        }
    }

    println!("\nMarkdown:\n");
    if !singles.is_empty() {
        println!(
            "| Run | Records | Wall time | Records/s | API calls (per 1,000 records) | Invocations | Token requests | Peak RSS (at start) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for r in &singles {
            println!(
                "| {} | {} | {:.2} s | {:.0} | {} ({:.1}) | {} | {} | {} ({}){} |",
                r.label,
                thousands(r.records as u64),
                r.wall.as_secs_f64(),
                r.records as f64 / r.wall.as_secs_f64(),
                r.api_calls,
                r.api_calls as f64 * 1000.0 / r.records.max(1) as f64,
                r.invocations,
                r.token_requests,
                mib(r.peak_kib),
                mib(r.peak_before_kib),
                if r.peak_reset {
                    ""
                } else {
                    ", process peak: VmHWM not reset"
                },
            );
            debug_assert_eq!(r.api_calls as u64, r.emulator_calls);
        }
        println!();
    }
    if !fleets.is_empty() {
        println!(
            "| Concurrency | Tenants (complete) | Records | Wall time | Tenants/s | API calls | Peak RSS |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &fleets {
            println!(
                "| {} | {} ({}) | {} | {:.2} s | {:.1} | {} | {} |",
                r.concurrency,
                thousands(r.tenants as u64),
                thousands(r.pairs_complete as u64),
                thousands(r.records as u64),
                r.wall.as_secs_f64(),
                r.tenants as f64 / r.wall.as_secs_f64(),
                r.api_calls,
                mib(r.peak_kib),
            );
        }
    }
    Ok(())
}

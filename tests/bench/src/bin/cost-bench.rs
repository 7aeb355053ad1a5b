//! `cost-bench`: what `fetch-incidents` costs a month for a fleet, on both paths, at the
//! template's defaults (memory, schedule, sources, fan-out threshold, batch size, queue
//! concurrency, read from `template.yaml`) and the public prices (`cost::US_EAST_1`).
//!
//! Each fleet's scheduled runs are measured by `fleet_cost` (the real fetch library, the
//! emulator with Microsoft's latency, AWS's calls metered and given their latency); the library's
//! logs (JSON lines and EMF metrics, at the default level `info`) go to a file whose growth is
//! the run's CloudWatch Logs ingestion. `scripts/bench-cost` builds it in release and runs it;
//! docs/performance.md ("What it costs") has the figures.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use defender_emulator::{Latency, LatencyRange};
use defender_partner::telemetry::{self, LogFormat};
use defender_partner_bench::cost::{
    HOURS_PER_MONTH, MonthlyBill, RunUsage, TemplateDefaults, US_EAST_1,
};
use defender_partner_bench::fleet_cost::{
    CostBench, FleetPath, PLATFORM_LOG_BYTES_PER_INVOCATION, RunMeasure, measure,
};
use defender_partner_bench::metered::AwsLatency;
use defender_partner_bench::{build_kind, parse_options};

const USAGE: &str = "\
cost-bench [options]
  --tenants LIST            fleets to measure, comma-separated (default 100,1000)
  --paths LIST              in-invocation,fan-out (default both)
  --extrapolate N           a fleet priced from the largest measured one, per tenant (default
                            10000; 0: none)
  --cold-max N              measure a run after a cold start (every token fetched) for fleets
                            up to N tenants; larger ones take its extra per tenant (default 100)
  --batch-size N            messages per queue-driven invocation (default: the template's)
  --fetch-concurrency N     DP_FETCH_CONCURRENCY (default: the function's, equal to BatchSize)
  --changes LIST            changed incidents per tenant before a run, one drawn per tenant and
                            run (default 0,0,0,1,2: most runs find none, some one or two)
  --api-latency-ms R        Microsoft's time per data API call (default 200-400)
  --token-latency-ms R      Entra's time per token request (default 50-150)
  --dynamodb-latency-ms R   per DynamoDB request (default 4-8)
  --s3-latency-ms R         per S3 PutObject (default 20-40)
  --events-latency-ms R     per EventBridge PutEvents (default 15-30)
  --sqs-latency-ms R        per SQS SendMessageBatch (default 10-20)
  --template PATH           template.yaml (default: the repository's)
  --log-file PATH           where the library's logs go (default: a temporary file, removed)
  --seed N                  the changes' random draw (default 16)
  R is MIN-MAX or N milliseconds; 0 turns a latency off.
";

struct Args {
    tenants: Vec<usize>,
    paths: Vec<FleetPath>,
    extrapolate: usize,
    cold_max: usize,
    changes: Vec<u32>,
    batch_size: Option<usize>,
    concurrency: Option<usize>,
    latency: Latency,
    aws: AwsLatency,
    template: PathBuf,
    log_file: Option<PathBuf>,
    seed: u64,
}

fn range(text: &str) -> Result<Option<LatencyRange>> {
    let range: LatencyRange = text.parse().map_err(anyhow::Error::msg)?;
    Ok((range.max_ms > 0).then_some(range))
}

fn list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.split(',')
        .map(|item| item.trim().parse::<T>().map_err(anyhow::Error::from))
        .collect()
}

fn parse_args() -> Result<Args> {
    let fixed = |text: &str| range(text).expect("a valid default");
    let mut args = Args {
        tenants: vec![100, 1_000],
        paths: vec![FleetPath::InInvocation, FleetPath::FanOut],
        extrapolate: 10_000,
        cold_max: 100,
        changes: vec![0, 0, 0, 1, 2],
        batch_size: None,
        concurrency: None,
        latency: Latency {
            api: fixed("200-400"),
            token: fixed("50-150"),
        },
        aws: AwsLatency {
            dynamodb: fixed("4-8"),
            s3: fixed("20-40"),
            events: fixed("15-30"),
            sqs: fixed("10-20"),
        },
        template: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")),
        log_file: None,
        seed: 16,
    };
    parse_options(USAGE, |name, value| {
        match name {
            "--tenants" => args.tenants = list(&value()?)?,
            "--paths" => {
                args.paths = value()?
                    .split(',')
                    .map(|path| match path.trim() {
                        "in-invocation" => Ok(FleetPath::InInvocation),
                        "fan-out" => Ok(FleetPath::FanOut),
                        other => bail!("unknown path {other:?}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--extrapolate" => args.extrapolate = value()?.parse()?,
            "--cold-max" => args.cold_max = value()?.parse()?,
            "--changes" => args.changes = list(&value()?)?,
            "--batch-size" => args.batch_size = Some(value()?.parse()?),
            "--fetch-concurrency" => args.concurrency = Some(value()?.parse()?),
            "--api-latency-ms" => args.latency.api = range(&value()?)?,
            "--token-latency-ms" => args.latency.token = range(&value()?)?,
            "--dynamodb-latency-ms" => args.aws.dynamodb = range(&value()?)?,
            "--s3-latency-ms" => args.aws.s3 = range(&value()?)?,
            "--events-latency-ms" => args.aws.events = range(&value()?)?,
            "--sqs-latency-ms" => args.aws.sqs = range(&value()?)?,
            "--template" => args.template = PathBuf::from(value()?),
            "--log-file" => args.log_file = Some(PathBuf::from(value()?)),
            "--seed" => args.seed = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if args.tenants.is_empty() || args.tenants.contains(&0) || args.changes.is_empty() {
        bail!("--tenants needs fleets of at least one tenant, --changes one value at least");
    }
    Ok(args)
}

/// The process's stdout and stderr (the library's log lines and EMF metrics) go to a file; the
/// report goes to what stdout was.
struct LogCapture {
    path: PathBuf,
    remove: bool,
    report: File,
}

impl LogCapture {
    fn start(path: Option<PathBuf>) -> Result<LogCapture> {
        let remove = path.is_none();
        let path = path.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("cost-bench-{}.log", std::process::id()))
        });
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        std::io::stdout().flush()?;
        // SAFETY: plain descriptor calls on descriptors this process owns; the duplicate of
        // stdout is owned by the returned File alone.
        let report = unsafe {
            let saved = libc::dup(1);
            if saved < 0
                || libc::dup2(file.as_raw_fd(), 1) < 0
                || libc::dup2(file.as_raw_fd(), 2) < 0
            {
                bail!(
                    "cannot redirect stdout and stderr: {}",
                    std::io::Error::last_os_error()
                );
            }
            File::from_raw_fd(saved)
        };
        Ok(LogCapture {
            path,
            remove,
            report,
        })
    }

    fn size_reader(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let path = self.path.clone();
        Arc::new(move || {
            let _ = std::io::stdout().flush();
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        })
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One priced fleet: measured or extrapolated.
struct Priced {
    tenants: usize,
    path: FleetPath,
    warm: RunUsage,
    /// What one token request adds to a run (from a cold run).
    per_token: RunUsage,
    /// Token requests of a run in the steady state: each instance fetches each tenant's token
    /// once an hour.
    tokens_per_run: f64,
    /// `None`: extrapolated; the measured warm run otherwise.
    measured: Option<RunMeasure>,
    longest: Duration,
    note: String,
}

fn report_run(out: &mut impl Write, run: &RunMeasure) -> Result<()> {
    let usage = run.usage();
    writeln!(
        out,
        "  {:<5} run: {} invocations, billed {:.1} s (longest {:.2} s), wall {:.1} s, CPU {:.2} s; {} pairs, {} changed incidents, {} records delivered, {} Graph calls, {} token requests; DynamoDB {:.0} RRU / {:.0} WRU, S3 {} PUT, EventBridge {} events, SQS {} requests; logs {} B",
        run.kind,
        run.invocations.len(),
        run.billed_ms() as f64 / 1000.0,
        run.longest().as_secs_f64(),
        run.wall.as_secs_f64(),
        run.cpu.as_secs_f64(),
        run.pairs,
        run.changed_incidents,
        run.delivered,
        run.api_calls,
        run.token_requests,
        usage.dynamodb_reads,
        usage.dynamodb_writes,
        usage.s3_puts,
        usage.events,
        usage.sqs_requests,
        run.log_bytes,
    )?;
    for ((_, operation), count) in &run.aws {
        writeln!(
            out,
            "      {operation}: {} calls, {} items",
            count.calls, count.items
        )?;
    }
    Ok(())
}

fn usd(value: f64) -> String {
    if value >= 100.0 {
        format!("${value:.0}")
    } else if value >= 0.995 {
        format!("${value:.2}")
    } else {
        format!("${value:.3}")
    }
}

fn thousands(value: f64) -> String {
    defender_partner_bench::thousands(value.round().max(0.0) as u64)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut template = TemplateDefaults::read(
        &std::fs::read_to_string(&args.template)
            .with_context(|| format!("reading {}", args.template.display()))?,
    )?;
    if let Some(batch_size) = args.batch_size {
        template.batch_size = batch_size;
    }
    let runs = template.runs_per_month()?;
    // One token per tenant and instance serves an hour: the tokens a run fetches, per tenant
    // and instance.
    let refresh_share = (HOURS_PER_MONTH / runs).min(1.0);
    let capture = LogCapture::start(args.log_file.clone())?;
    let mut out = capture.report.try_clone()?;
    // As deployed: JSON lines at `info` (the LogLevel default); the emulator's own lines are
    // not the function's and stay out.
    telemetry::init_with_default(LogFormat::Json, "info,defender_emulator=off");
    let runtime = tokio::runtime::Runtime::new()?;

    writeln!(
        out,
        "cost-bench ({} build): FetchMemorySize {} MB, FetchSchedule {} ({runs:.0} runs a month), Sources {}, FanoutThreshold {}, BatchSize {}, FetchMaxConcurrency {}, FetchTimeoutSeconds {}, DP_FETCH_CONCURRENCY {}",
        build_kind(),
        template.fetch_memory_mb,
        template.schedule,
        template.sources.join(","),
        template.fanout_threshold,
        template.batch_size,
        template.max_concurrency,
        template.fetch_timeout_seconds,
        args.concurrency.map_or(
            format!(
                "default ({})",
                defender_partner::config::DEFAULT_CONCURRENCY
            ),
            |c| c.to_string()
        )
    )?;
    let show = |range: Option<LatencyRange>| range.map_or("none".to_owned(), |r| format!("{r} ms"));
    writeln!(
        out,
        "latency: Graph/Defender {}, Entra token {}, DynamoDB {}, S3 {}, EventBridge {}, SQS {}; changed incidents per tenant and run drawn from {:?}",
        show(args.latency.api),
        show(args.latency.token),
        show(args.aws.dynamodb),
        show(args.aws.s3),
        show(args.aws.events),
        show(args.aws.sqs),
        args.changes
    )?;

    let mut priced: Vec<Priced> = Vec::new();
    for path in &args.paths {
        let instances = match path {
            FleetPath::InInvocation => 1.0,
            FleetPath::FanOut => template.max_concurrency as f64,
        };
        // A token request's cost, from the largest fleet a cold run was measured on.
        let mut per_token: Option<(usize, RunUsage)> = None;
        let mut sizes = args.tenants.clone();
        sizes.sort_unstable();
        for tenants in sizes {
            let bench = CostBench {
                tenants,
                path: *path,
                template: template.clone(),
                latency: args.latency,
                aws: args.aws,
                concurrency: args.concurrency,
                changes: args.changes.clone(),
                cold: tenants <= args.cold_max,
                seed: args.seed,
                log_size: capture.size_reader(),
            };
            writeln!(out, "\n{} tenants, {}:", tenants, path.name())?;
            let measured = runtime.block_on(measure(&bench))?;
            for run in &measured {
                report_run(&mut out, run)?;
            }
            let warm = measured
                .iter()
                .find(|run| run.kind == "warm")
                .context("no warm run")?;
            if let Some(cold) = measured.iter().find(|run| run.kind == "cold") {
                let extra_tokens = cold.token_requests.saturating_sub(warm.token_requests);
                if extra_tokens > 0 {
                    per_token = Some((
                        tenants,
                        cold.usage()
                            .minus(&warm.usage())
                            .scaled(1.0 / extra_tokens as f64),
                    ));
                }
            }
            priced.push(Priced {
                tenants,
                path: *path,
                warm: warm.usage(),
                per_token: per_token.map(|(_, usage)| usage).unwrap_or_default(),
                tokens_per_run: instances * tenants as f64 * refresh_share,
                longest: warm.longest(),
                measured: Some(warm.clone()),
                note: match per_token {
                    Some((base, _)) if base == tenants => "measured".to_owned(),
                    Some((base, _)) => format!("measured; a token's cost from {base} tenants"),
                    None => "measured; token refresh not priced".to_owned(),
                },
            });
        }
        if args.extrapolate > 0
            && let Some(base) = priced
                .iter()
                .filter(|p| p.path == *path && p.measured.is_some())
                .max_by_key(|p| p.tenants)
            && args.extrapolate > base.tenants
        {
            let factor = args.extrapolate as f64 / base.tenants as f64;
            let longest = match path {
                FleetPath::InInvocation => base.longest.mul_f64(factor),
                // More batches, each as long; the scheduled invocation's enqueue grows.
                FleetPath::FanOut => base.longest.max(
                    base.measured
                        .as_ref()
                        .and_then(|run| run.invocations.first())
                        .map(|scheduled| scheduled.mul_f64(factor))
                        .unwrap_or_default(),
                ),
            };
            let mut warm = base.warm.scaled(factor);
            if *path == FleetPath::InInvocation {
                // Still one invocation a run.
                warm.invocations = base.warm.invocations;
            }
            priced.push(Priced {
                tenants: args.extrapolate,
                path: *path,
                warm,
                per_token: base.per_token,
                tokens_per_run: base.tokens_per_run * factor,
                measured: None,
                longest,
                note: format!("extrapolated from {} tenants", base.tenants),
            });
        }
    }

    let memory_gb = template.memory_gb();
    let margin = Duration::from_secs(20);
    let timeout = Duration::from_secs(template.fetch_timeout_seconds);
    writeln!(
        out,
        "\nMarkdown ({} MB, {runs:.0} runs a month; each instance fetches each tenant's token once an hour: {:.3} per tenant and instance a run):\n",
        template.fetch_memory_mb, refresh_share
    )?;
    writeln!(
        out,
        "| Tenants | Path | Invocations / run | Billed s / run | Longest invocation | GB-s / month | Requests / month | **Lambda / month** | DynamoDB | S3 | EventBridge | SQS | Logs (GB) | Others / month | Figures |"
    )?;
    writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for p in &priced {
        let month = p.warm.plus(&p.per_token.scaled(p.tokens_per_run));
        let bill = MonthlyBill::of(&month, runs, memory_gb, &US_EAST_1);
        let longest = if p.path == FleetPath::InInvocation && p.longest + margin > timeout {
            format!(
                "{:.0} s: over the {} s timeout, cannot run in one invocation",
                p.longest.as_secs_f64(),
                template.fetch_timeout_seconds
            )
        } else {
            format!("{:.1} s", p.longest.as_secs_f64())
        };
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {} | {} | **{}** | {} | {} | {} | {} | {} ({:.2}) | {} | {} |",
            thousands(p.tenants as f64),
            p.path.name(),
            thousands(p.warm.invocations),
            p.warm.billed_ms / 1000.0,
            longest,
            thousands(bill.gb_seconds),
            thousands(bill.requests),
            usd(bill.lambda()),
            usd(bill.dynamodb),
            usd(bill.s3),
            usd(bill.events),
            usd(bill.sqs),
            usd(bill.logs),
            bill.logs_gb,
            usd(bill.others()),
            p.note,
        )?;
    }
    writeln!(
        out,
        "\nPer warm run: | Tenants | Path | Graph calls | Token requests | Records delivered | DynamoDB RRU / WRU | S3 PUT | Events | SQS requests | Log bytes (library + {PLATFORM_LOG_BYTES_PER_INVOCATION} B Lambda per invocation) |"
    )?;
    for p in priced.iter().filter(|p| p.measured.is_some()) {
        let run = p.measured.as_ref().expect("filtered");
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            thousands(p.tenants as f64),
            p.path.name(),
            run.api_calls,
            run.token_requests,
            run.delivered,
            p.warm.dynamodb_reads,
            p.warm.dynamodb_writes,
            p.warm.s3_puts,
            p.warm.events,
            p.warm.sqs_requests,
            thousands(p.warm.log_bytes),
        )?;
    }
    drop(capture);
    Ok(())
}

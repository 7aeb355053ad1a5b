//! What a fleet run costs in money: the template's defaults the bill depends on (read from
//! `template.yaml`, so that the bench follows the template), the public prices, and the
//! arithmetic from measured billed durations and request counts to a month.

use anyhow::{Context, Result, bail};

/// Hours in a month, as AWS's pricing pages and calculator count them.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Public list prices, us-east-1, as of 2026-12 (AWS's pricing pages; check them before quoting).
/// Lambda's free tier (400,000 GB-s and 1 million requests a month per account, all functions
/// together) is left out: a partner's account usually spends it elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Prices {
    /// Lambda duration, arm64, first tier (the first 7.5 billion GB-s a month).
    pub lambda_gb_second: f64,
    pub lambda_per_million_requests: f64,
    /// DynamoDB on demand (the prices since 2024-11-01).
    pub dynamodb_per_million_reads: f64,
    pub dynamodb_per_million_writes: f64,
    pub s3_per_thousand_puts: f64,
    /// EventBridge custom events, per million (64 KB chunks; ours are one chunk).
    pub events_per_million: f64,
    /// SQS standard queue, per million requests (after the first million a month).
    pub sqs_per_million_requests: f64,
    /// CloudWatch Logs ingestion, Standard class, per GB.
    pub logs_per_gb: f64,
}

pub const US_EAST_1: Prices = Prices {
    lambda_gb_second: 0.000_013_333_4,
    lambda_per_million_requests: 0.20,
    dynamodb_per_million_reads: 0.125,
    dynamodb_per_million_writes: 0.625,
    s3_per_thousand_puts: 0.005,
    events_per_million: 1.00,
    sqs_per_million_requests: 0.40,
    logs_per_gb: 0.50,
};

/// The template's defaults a fetch run's bill depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateDefaults {
    /// `FetchMemorySize`.
    pub fetch_memory_mb: u32,
    /// `FetchTimeoutSeconds`.
    pub fetch_timeout_seconds: u64,
    /// `FetchSchedule`, or when that is empty `rate(FetchEveryMinutes minutes)`.
    pub schedule: String,
    /// `Sources`.
    pub sources: Vec<String>,
    /// `FanoutThreshold`: more pairs than this and the scheduled run fans out.
    pub fanout_threshold: usize,
    /// `FetchMaxConcurrency`: instances the queue drives at once.
    pub max_concurrency: usize,
    /// `BatchSize` of `FetchQueueEventSource`: messages per queue-driven invocation.
    pub batch_size: usize,
}

impl TemplateDefaults {
    pub fn read(template: &str) -> Result<TemplateDefaults> {
        let parameter = |name: &str| {
            block_value(template, "Parameters:", name, "Default:")
                .with_context(|| format!("template.yaml: no Default of parameter {name}"))
        };
        let number = |name: &str| -> Result<u64> {
            let text = parameter(name)?;
            text.parse()
                .with_context(|| format!("template.yaml: {name} default {text:?} is not a number"))
        };
        let batch_size = block_value(
            template,
            "Resources:",
            "FetchQueueEventSource",
            "BatchSize:",
        )
        .context("template.yaml: no BatchSize in FetchQueueEventSource")?;
        Ok(TemplateDefaults {
            fetch_memory_mb: number("FetchMemorySize")? as u32,
            fetch_timeout_seconds: number("FetchTimeoutSeconds")?,
            schedule: match parameter("FetchSchedule")? {
                // Empty (the template's default): every FetchEveryMinutes.
                schedule if schedule.is_empty() => {
                    format!("rate({} minutes)", number("FetchEveryMinutes")?)
                }
                schedule => schedule,
            },
            sources: parameter("Sources")?
                .split(',')
                .map(|source| source.trim().to_owned())
                .filter(|source| !source.is_empty())
                .collect(),
            fanout_threshold: number("FanoutThreshold")? as usize,
            max_concurrency: number("FetchMaxConcurrency")? as usize,
            batch_size: batch_size
                .parse()
                .context("template.yaml: BatchSize is not a number")?,
        })
    }

    pub fn memory_gb(&self) -> f64 {
        f64::from(self.fetch_memory_mb) / 1024.0
    }

    pub fn runs_per_month(&self) -> Result<f64> {
        runs_per_month(&self.schedule)
    }
}

/// The value of `key` inside the block `name:` of the top-level section `section` (two-space
/// indentation, as the template is written), quotes removed.
fn block_value(template: &str, section: &str, name: &str, key: &str) -> Option<String> {
    let mut lines = template
        .lines()
        .skip_while(|line| line.trim_end() != section)
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' ') || line.starts_with('#'));
    lines.find(|line| line.trim_end() == format!("  {name}:"))?;
    lines
        .take_while(|line| {
            line.is_empty() || line.starts_with("   ") || line.trim().starts_with('#')
        })
        .find_map(|line| line.trim().strip_prefix(key))
        .map(|value| value.trim().trim_matches('"').trim_matches('\'').to_owned())
}

/// Scheduled runs in a month of [`HOURS_PER_MONTH`] for an EventBridge `rate(...)` expression.
pub fn runs_per_month(schedule: &str) -> Result<f64> {
    let inner = schedule
        .trim()
        .strip_prefix("rate(")
        .and_then(|rest| rest.strip_suffix(')'))
        .with_context(|| {
            format!(
                "schedule {schedule:?}: only rate(...) is priced; give --runs-per-month for a cron"
            )
        })?;
    let (value, unit) = inner
        .trim()
        .split_once(' ')
        .with_context(|| format!("schedule {schedule:?}: expected rate(N unit)"))?;
    let value: f64 = value
        .parse()
        .with_context(|| format!("schedule {schedule:?}: {value:?} is not a number"))?;
    if value <= 0.0 {
        bail!("schedule {schedule:?}: the rate must be positive");
    }
    let per_hour = match unit.trim() {
        "minute" | "minutes" => 60.0 / value,
        "hour" | "hours" => 1.0 / value,
        "day" | "days" => 1.0 / (24.0 * value),
        other => bail!("schedule {schedule:?}: unknown unit {other:?}"),
    };
    Ok(per_hour * HOURS_PER_MONTH)
}

/// GB-seconds of invocations billed `billed_ms` (each already rounded up to the millisecond, as
/// Lambda bills) at `memory_gb`.
pub fn gb_seconds(billed_ms: u64, memory_gb: f64) -> f64 {
    billed_ms as f64 / 1000.0 * memory_gb
}

/// What one run used: the inputs of the bill.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunUsage {
    pub invocations: f64,
    /// Sum of the invocations' billed milliseconds.
    pub billed_ms: f64,
    pub dynamodb_reads: f64,
    pub dynamodb_writes: f64,
    pub s3_puts: f64,
    pub events: f64,
    pub sqs_requests: f64,
    pub log_bytes: f64,
}

impl RunUsage {
    /// Every figure of `self` and `other` combined by `combine`.
    fn zip_with(&self, other: &RunUsage, combine: impl Fn(f64, f64) -> f64) -> RunUsage {
        RunUsage {
            invocations: combine(self.invocations, other.invocations),
            billed_ms: combine(self.billed_ms, other.billed_ms),
            dynamodb_reads: combine(self.dynamodb_reads, other.dynamodb_reads),
            dynamodb_writes: combine(self.dynamodb_writes, other.dynamodb_writes),
            s3_puts: combine(self.s3_puts, other.s3_puts),
            events: combine(self.events, other.events),
            sqs_requests: combine(self.sqs_requests, other.sqs_requests),
            log_bytes: combine(self.log_bytes, other.log_bytes),
        }
    }

    pub fn plus(&self, other: &RunUsage) -> RunUsage {
        self.zip_with(other, |a, b| a + b)
    }

    pub fn minus(&self, other: &RunUsage) -> RunUsage {
        self.zip_with(other, |a, b| a - b)
    }

    /// Every figure times `factor` (a fleet `factor` times larger, per tenant alike).
    pub fn scaled(&self, factor: f64) -> RunUsage {
        self.zip_with(self, |a, _| a * factor)
    }
}

/// A month of runs, in units and dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonthlyBill {
    pub gb_seconds: f64,
    pub requests: f64,
    pub lambda_compute: f64,
    pub lambda_requests: f64,
    pub dynamodb: f64,
    pub s3: f64,
    pub events: f64,
    pub sqs: f64,
    pub logs_gb: f64,
    pub logs: f64,
}

impl MonthlyBill {
    pub fn of(run: &RunUsage, runs: f64, memory_gb: f64, prices: &Prices) -> MonthlyBill {
        let gb_seconds = run.billed_ms / 1000.0 * memory_gb * runs;
        let requests = run.invocations * runs;
        let logs_gb = run.log_bytes * runs / 1e9;
        MonthlyBill {
            gb_seconds,
            requests,
            lambda_compute: gb_seconds * prices.lambda_gb_second,
            lambda_requests: requests / 1e6 * prices.lambda_per_million_requests,
            dynamodb: run.dynamodb_reads * runs / 1e6 * prices.dynamodb_per_million_reads
                + run.dynamodb_writes * runs / 1e6 * prices.dynamodb_per_million_writes,
            s3: run.s3_puts * runs / 1e3 * prices.s3_per_thousand_puts,
            events: run.events * runs / 1e6 * prices.events_per_million,
            sqs: run.sqs_requests * runs / 1e6 * prices.sqs_per_million_requests,
            logs_gb,
            logs: logs_gb * prices.logs_per_gb,
        }
    }

    pub fn lambda(&self) -> f64 {
        self.lambda_compute + self.lambda_requests
    }

    pub fn others(&self) -> f64 {
        self.dynamodb + self.s3 + self.events + self.sqs + self.logs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "\
Parameters:
  FetchSchedule:
    Type: String
    Default: rate(5 minutes)
  Sources:
    Default: graph-incidents,graph-alerts
  FanoutThreshold:
    Type: Number
    # a comment
    Default: 40
  FetchTimeoutSeconds:
    Default: 600
  FetchMemorySize:
    Default: 512
  FetchMaxConcurrency:
    Default: \"5\"

Resources:
  Other:
    Properties:
      BatchSize: 1
  FetchQueueEventSource:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      BatchSize: 5
";

    #[test]
    fn the_defaults_are_read_from_the_template() {
        let defaults = TemplateDefaults::read(TEMPLATE).unwrap();
        assert_eq!(
            defaults,
            TemplateDefaults {
                fetch_memory_mb: 512,
                fetch_timeout_seconds: 600,
                schedule: "rate(5 minutes)".into(),
                sources: vec!["graph-incidents".into(), "graph-alerts".into()],
                fanout_threshold: 40,
                max_concurrency: 5,
                batch_size: 5,
            }
        );
        assert!(TemplateDefaults::read("Parameters:\n  FetchSchedule:\n").is_err());
        // An empty schedule is every FetchEveryMinutes.
        let every = TEMPLATE.replace(
            "    Default: rate(5 minutes)",
            "    Default: \"\"\n  FetchEveryMinutes:\n    Default: 10",
        );
        let defaults = TemplateDefaults::read(&every).unwrap();
        assert_eq!(defaults.schedule, "rate(10 minutes)");
        assert_eq!(defaults.runs_per_month().unwrap(), 4_380.0);
    }

    #[test]
    fn the_repositorys_template_is_readable() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"))
                .unwrap();
        let defaults = TemplateDefaults::read(&text).unwrap();
        assert!(defaults.fetch_memory_mb >= 128, "{defaults:?}");
        assert!(defaults.batch_size >= 1 && !defaults.sources.is_empty());
        assert!(defaults.runs_per_month().is_ok(), "{}", defaults.schedule);
    }

    #[test]
    fn schedules_become_runs_per_month() {
        assert_eq!(runs_per_month("rate(5 minutes)").unwrap(), 8_760.0);
        assert_eq!(runs_per_month("rate(1 hour)").unwrap(), 730.0);
        assert!((runs_per_month("rate(1 day)").unwrap() - 30.416).abs() < 0.01);
        assert!(runs_per_month("cron(0 * * * ? *)").is_err());
        assert!(runs_per_month("rate(0 minutes)").is_err());
        assert!(runs_per_month("rate(5 fortnights)").is_err());
    }

    #[test]
    fn a_month_is_priced_from_one_run() {
        let run = RunUsage {
            invocations: 2.0,
            billed_ms: 1_000.0,
            dynamodb_reads: 1e6,
            dynamodb_writes: 1e6,
            s3_puts: 1_000.0,
            events: 1e6,
            sqs_requests: 1e6,
            log_bytes: 1e9,
        };
        let bill = MonthlyBill::of(&run, 1.0, 0.5, &US_EAST_1);
        assert_eq!(bill.gb_seconds, 0.5);
        assert_eq!(bill.requests, 2.0);
        assert!((bill.lambda_compute - 0.5 * 0.000_013_333_4).abs() < 1e-12);
        assert!((bill.dynamodb - 0.75).abs() < 1e-9);
        assert!((bill.s3 - 0.005).abs() < 1e-9);
        assert!((bill.others() - (0.75 + 0.005 + 1.0 + 0.4 + 0.5)).abs() < 1e-9);
        assert_eq!(gb_seconds(1_500, 0.5), 0.75);
        assert_eq!(run.scaled(0.5).billed_ms, 500.0);
        assert_eq!(run.scaled(10.0).invocations, 20.0);
        assert_eq!(run.plus(&run).minus(&run), run);
    }
}

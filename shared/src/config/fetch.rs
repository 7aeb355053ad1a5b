//! The ingestion job: which sources it pulls, how far back and with how much overlap, how many
//! pairs at once, when it fans out through the queue, and page sizes.

use std::time::Duration;

use super::env::{ConfigError, Env, process_env};
use crate::defender::{Source, spec};

pub const ENV_SOURCES: &str = "DP_SOURCES";
pub const ENV_LOOKBACK_HOURS: &str = "DP_FETCH_LOOKBACK_HOURS";
pub const ENV_OVERLAP_SECONDS: &str = "DP_FETCH_OVERLAP_SECONDS";
pub const ENV_CONCURRENCY: &str = "DP_FETCH_CONCURRENCY";
/// Pairs one invocation runs at once by default: the fetch queue's `BatchSize` in
/// `template.yaml`, so that a batch runs in one round rather than the last pair alone in a second
/// (which cost about 30 % more Lambda time fanned out; docs/performance.md, "What it costs").
pub const DEFAULT_CONCURRENCY: u64 = 5;
pub const ENV_FANOUT_THRESHOLD: &str = "DP_FANOUT_THRESHOLD";
pub const ENV_QUEUE_URL: &str = "DP_FETCH_QUEUE_URL";
pub const ENV_DEADLINE_MARGIN_SECONDS: &str = "DP_DEADLINE_MARGIN_SECONDS";
pub const ENV_GRAPH_EXPAND_ALERTS: &str = "DP_GRAPH_EXPAND_ALERTS";
pub const ENV_MDE_EXPAND_EVIDENCE: &str = "DP_MDE_EXPAND_EVIDENCE";
pub const ENV_PAGE_SIZE_PREFIX: &str = "DP_PAGE_SIZE_";

/// What is pulled when `DP_SOURCES` is not set: the Graph security API, the only one that answers
/// after the retirement.
pub const DEFAULT_SOURCES: [Source; 2] = [Source::GraphIncidents, Source::GraphAlerts];

/// The day after which Microsoft no longer answers the retiring sources' APIs (MC1220762).
pub const RETIREMENT_DATE: &str = "2027-02-01";

/// Parses a `DP_SOURCES` value: comma-separated names, repeats dropped, at least one.
pub fn parse_sources(text: &str) -> Result<Vec<Source>, ConfigError> {
    let mut sources = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let source: Source = name.parse().map_err(|_| {
            ConfigError::new(
                ENV_SOURCES,
                format!(
                    "unknown source {name:?}: use graph-incidents, graph-alerts, or the retiring m365d-incidents, mde-alerts (until {RETIREMENT_DATE})"
                ),
            )
        })?;
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
    if sources.is_empty() {
        return Err(ConfigError::new(ENV_SOURCES, "names no source"));
    }
    Ok(sources)
}

/// The sources `DP_SOURCES` names through `lookup`, or the default.
pub fn sources_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Source>, ConfigError> {
    sources(&Env::new(&lookup))
}

pub(super) fn sources(env: &Env) -> Result<Vec<Source>, ConfigError> {
    match env.get(ENV_SOURCES) {
        None => Ok(DEFAULT_SOURCES.to_vec()),
        Some(text) => parse_sources(&text),
    }
}

/// The warning for a configured source whose API Microsoft retires, or `None` for a Graph source.
pub fn retiring_warning(source: Source) -> Option<String> {
    if !source.is_retiring() {
        return None;
    }
    let successor = source
        .successor()
        .map_or("a Graph source", |successor| successor.as_str());
    Some(format!(
        "source {} is retiring: Microsoft stops answering its API after {RETIREMENT_DATE} (MC1220762); switch {ENV_SOURCES} to {successor} (`dp-operator migration` shows what each tenant needs)",
        source.as_str()
    ))
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub sources: Vec<Source>,
    /// How far back a tenant's first run reaches.
    pub lookback: Duration,
    /// How much each window re-reads of the previous one, for records that became visible late.
    pub overlap: Duration,
    /// Tenant-source pairs processed at once in one invocation.
    pub concurrency: usize,
    /// More pairs than this (and a queue configured): fan out through SQS.
    pub fanout_threshold: usize,
    pub queue_url: Option<String>,
    /// Paging stops this long before the Lambda deadline.
    pub deadline_margin: Duration,
    pub graph_expand_alerts: bool,
    pub mde_expand_evidence: bool,
    page_sizes: [Option<u32>; ALL_SOURCES.len()],
}

impl FetchSettings {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<FetchSettings, ConfigError> {
        FetchSettings::read(&Env::new(&lookup))
    }

    pub(super) fn read(env: &Env) -> Result<FetchSettings, ConfigError> {
        let sources = sources(env)?;
        let mut page_sizes = [None; ALL_SOURCES.len()];
        for (slot, source) in page_sizes.iter_mut().zip(ALL_SOURCES) {
            let variable = format!("{ENV_PAGE_SIZE_PREFIX}{}", source_suffix(source));
            let max = u64::from(spec(source).max_top);
            if env.is_set(&variable) {
                *slot = Some(env.number(&variable, max, 1..=max)? as u32);
            }
        }
        Ok(FetchSettings {
            sources,
            lookback: Duration::from_secs(
                3600 * env.number(ENV_LOOKBACK_HOURS, 24 * 7, 1..=24 * 180)?,
            ),
            overlap: env.seconds(ENV_OVERLAP_SECONDS, 300, 0..=86_400)?,
            concurrency: env.number(ENV_CONCURRENCY, DEFAULT_CONCURRENCY, 1..=64)? as usize,
            fanout_threshold: env.number(ENV_FANOUT_THRESHOLD, 40, 0..=100_000)? as usize,
            queue_url: env.get(ENV_QUEUE_URL),
            deadline_margin: env.seconds(ENV_DEADLINE_MARGIN_SECONDS, 20, 1..=600)?,
            graph_expand_alerts: env.flag(ENV_GRAPH_EXPAND_ALERTS, false)?,
            mde_expand_evidence: env.flag(ENV_MDE_EXPAND_EVIDENCE, false)?,
            page_sizes,
        })
    }

    /// Logs one warning for each configured source whose API Microsoft retires. Called once where
    /// the job is assembled (a cold start), not on every run.
    pub fn warn_retiring(&self) {
        for source in &self.sources {
            if let Some(warning) = retiring_warning(*source) {
                tracing::warn!(source = %source.as_str(), retires = RETIREMENT_DATE, successor = source.successor().map(Source::as_str), "{warning}");
            }
        }
    }

    /// Whether the job needs the AWS configuration (the fan-out queue).
    pub fn needs_aws(&self) -> bool {
        self.queue_url.is_some()
    }

    /// The configured sources whose API Microsoft retires.
    pub fn retiring(&self) -> Vec<Source> {
        self.sources
            .iter()
            .copied()
            .filter(|source| source.is_retiring())
            .collect()
    }

    pub fn from_env() -> Result<FetchSettings, ConfigError> {
        FetchSettings::from_lookup(process_env)
    }

    /// `$top` for `source`: its maximum unless configured lower.
    pub fn page_size(&self, source: Source) -> u32 {
        let index = ALL_SOURCES
            .iter()
            .position(|candidate| *candidate == source)
            .expect("listed");
        self.page_sizes[index].unwrap_or_else(|| spec(source).max_top)
    }
}

pub const ALL_SOURCES: [Source; 4] = Source::ALL;

fn source_suffix(source: Source) -> &'static str {
    match source {
        Source::M365dIncidents => "M365D_INCIDENTS",
        Source::GraphIncidents => "GRAPH_INCIDENTS",
        Source::MdeAlerts => "MDE_ALERTS",
        Source::GraphAlerts => "GRAPH_ALERTS",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn retiring_sources_are_warned_about_with_their_successor() {
        let warning = retiring_warning(Source::M365dIncidents).unwrap();
        assert!(
            warning.contains("2027-02-01") && warning.contains("graph-incidents"),
            "{warning}"
        );
        let warning = retiring_warning(Source::MdeAlerts).unwrap();
        assert!(warning.contains("graph-alerts"), "{warning}");
        assert_eq!(retiring_warning(Source::GraphIncidents), None);
        assert_eq!(retiring_warning(Source::GraphAlerts), None);
    }

    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<FetchSettings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FetchSettings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let settings = settings(&[]).unwrap();
        assert_eq!(
            settings.sources,
            vec![Source::GraphIncidents, Source::GraphAlerts]
        );
        assert!(settings.retiring().is_empty());
        assert_eq!(settings.page_size(Source::M365dIncidents), 100);
        assert_eq!(settings.page_size(Source::GraphAlerts), 1000);
        assert_eq!(settings.page_size(Source::GraphIncidents), 50);
        assert_eq!(settings.page_size(Source::MdeAlerts), 10_000);
        assert_eq!(settings.overlap, Duration::from_secs(300));
    }

    #[test]
    fn parses_and_refuses() {
        let chosen = settings(&[
            (ENV_SOURCES, "mde-alerts, graph-incidents"),
            ("DP_PAGE_SIZE_MDE_ALERTS", "500"),
            (ENV_GRAPH_EXPAND_ALERTS, "true"),
        ])
        .unwrap();
        assert_eq!(
            chosen.sources,
            vec![Source::MdeAlerts, Source::GraphIncidents]
        );
        assert_eq!(chosen.page_size(Source::MdeAlerts), 500);
        assert_eq!(chosen.retiring(), vec![Source::MdeAlerts]);
        let graph_alerts = settings(&[
            (ENV_SOURCES, "graph-alerts"),
            ("DP_PAGE_SIZE_GRAPH_ALERTS", "200"),
        ])
        .unwrap();
        assert_eq!(graph_alerts.sources, vec![Source::GraphAlerts]);
        assert_eq!(graph_alerts.page_size(Source::GraphAlerts), 200);
        assert!(chosen.graph_expand_alerts);
        for (variable, value) in [
            (ENV_SOURCES, "sentinel"),
            ("DP_PAGE_SIZE_GRAPH_INCIDENTS", "51"),
            ("DP_PAGE_SIZE_GRAPH_ALERTS", "1001"),
            (ENV_SOURCES, " , "),
            (ENV_CONCURRENCY, "0"),
            (ENV_GRAPH_EXPAND_ALERTS, "maybe"),
        ] {
            assert_eq!(
                settings(&[(variable, value)]).unwrap_err().variable,
                variable
            );
        }
    }
}

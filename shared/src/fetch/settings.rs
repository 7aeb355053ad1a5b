//! Settings of the ingestion job, read once at start.

use std::time::Duration;

use crate::config::ConfigError;
use crate::sink::Source;

pub const ENV_SOURCES: &str = "DP_SOURCES";
pub const ENV_LOOKBACK_HOURS: &str = "DP_FETCH_LOOKBACK_HOURS";
pub const ENV_OVERLAP_SECONDS: &str = "DP_FETCH_OVERLAP_SECONDS";
pub const ENV_CONCURRENCY: &str = "DP_FETCH_CONCURRENCY";
pub const ENV_FANOUT_THRESHOLD: &str = "DP_FANOUT_THRESHOLD";
pub const ENV_QUEUE_URL: &str = "DP_FETCH_QUEUE_URL";
pub const ENV_DEADLINE_MARGIN_SECONDS: &str = "DP_DEADLINE_MARGIN_SECONDS";
pub const ENV_GRAPH_EXPAND_ALERTS: &str = "DP_GRAPH_EXPAND_ALERTS";
pub const ENV_MDE_EXPAND_EVIDENCE: &str = "DP_MDE_EXPAND_EVIDENCE";
pub const ENV_PAGE_SIZE_PREFIX: &str = "DP_PAGE_SIZE_";

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
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let error = |variable: &str, problem: String| ConfigError {
            variable: variable.to_owned(),
            problem,
        };
        let number = |variable: &str,
                      default: u64,
                      range: std::ops::RangeInclusive<u64>|
         -> Result<u64, ConfigError> {
            let value = match get(variable) {
                Some(text) => text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| error(variable, format!("{text:?} is not a whole number")))?,
                None => default,
            };
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(error(
                    variable,
                    format!(
                        "{value} is out of range ({}..={})",
                        range.start(),
                        range.end()
                    ),
                ))
            }
        };
        let flag = |variable: &str| -> Result<bool, ConfigError> {
            match get(variable).map(|text| text.trim().to_ascii_lowercase()) {
                None => Ok(false),
                Some(text) if matches!(text.as_str(), "1" | "true" | "yes") => Ok(true),
                Some(text) if matches!(text.as_str(), "0" | "false" | "no") => Ok(false),
                Some(text) => Err(error(variable, format!("{text:?} is not true or false"))),
            }
        };
        let sources = match get(ENV_SOURCES) {
            None => vec![Source::M365dIncidents],
            Some(text) => {
                let mut sources = Vec::new();
                for name in text
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                {
                    let source: Source = name.parse().map_err(|_| {
                        error(
                            ENV_SOURCES,
                            format!("unknown source {name:?}: use m365d-incidents, graph-incidents, mde-alerts"),
                        )
                    })?;
                    if !sources.contains(&source) {
                        sources.push(source);
                    }
                }
                if sources.is_empty() {
                    return Err(error(ENV_SOURCES, "names no source".into()));
                }
                sources
            }
        };
        let mut page_sizes = [None; ALL_SOURCES.len()];
        for (slot, source) in page_sizes.iter_mut().zip(ALL_SOURCES) {
            let variable = format!("{ENV_PAGE_SIZE_PREFIX}{}", source_suffix(source));
            let max = u64::from(super::super::defender::sources::spec(source).max_top);
            if get(&variable).is_some() {
                *slot = Some(number(&variable, max, 1..=max)? as u32);
            }
        }
        Ok(FetchSettings {
            sources,
            lookback: Duration::from_secs(3600 * number(ENV_LOOKBACK_HOURS, 24 * 7, 1..=24 * 180)?),
            overlap: Duration::from_secs(number(ENV_OVERLAP_SECONDS, 300, 0..=86_400)?),
            concurrency: number(ENV_CONCURRENCY, 4, 1..=64)? as usize,
            fanout_threshold: number(ENV_FANOUT_THRESHOLD, 40, 0..=100_000)? as usize,
            queue_url: get(ENV_QUEUE_URL),
            deadline_margin: Duration::from_secs(number(ENV_DEADLINE_MARGIN_SECONDS, 20, 1..=600)?),
            graph_expand_alerts: flag(ENV_GRAPH_EXPAND_ALERTS)?,
            mde_expand_evidence: flag(ENV_MDE_EXPAND_EVIDENCE)?,
            page_sizes,
        })
    }

    pub fn from_env() -> Result<FetchSettings, ConfigError> {
        FetchSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// `$top` for `source`: its maximum unless configured lower.
    pub fn page_size(&self, source: Source) -> u32 {
        let index = ALL_SOURCES
            .iter()
            .position(|candidate| *candidate == source)
            .expect("listed");
        self.page_sizes[index]
            .unwrap_or_else(|| super::super::defender::sources::spec(source).max_top)
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
        assert_eq!(settings.sources, vec![Source::M365dIncidents]);
        assert_eq!(settings.page_size(Source::M365dIncidents), 100);
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
        assert!(chosen.graph_expand_alerts);
        for (variable, value) in [
            (ENV_SOURCES, "sentinel"),
            ("DP_PAGE_SIZE_GRAPH_INCIDENTS", "51"),
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

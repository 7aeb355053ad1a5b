//! The sources a record comes from ([`Source`]) and what differs between them ([`SourceSpec`]):
//! path, field names, page size, expansion, limits.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::DefenderApi;

/// Which API a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Microsoft 365 Defender incidents (`/api/incidents`).
    M365dIncidents,
    /// Microsoft Graph security incidents (`/security/incidents`).
    GraphIncidents,
    /// Defender for Endpoint alerts (`/api/alerts`). Retiring (MC1220762): succeeded by
    /// `GraphAlerts`.
    MdeAlerts,
    /// Microsoft Graph security alerts of every Defender product (`/security/alerts_v2`).
    GraphAlerts,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::M365dIncidents,
        Source::GraphIncidents,
        Source::MdeAlerts,
        Source::GraphAlerts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::M365dIncidents => "m365d-incidents",
            Source::GraphIncidents => "graph-incidents",
            Source::MdeAlerts => "mde-alerts",
            Source::GraphAlerts => "graph-alerts",
        }
    }

    /// Sources on the APIs Microsoft retires on 2027-02-01 (MC1220762).
    pub fn is_retiring(self) -> bool {
        matches!(self, Source::M365dIncidents | Source::MdeAlerts)
    }

    /// The Graph source that succeeds a retiring one.
    pub fn successor(self) -> Option<Source> {
        match self {
            Source::M365dIncidents => Some(Source::GraphIncidents),
            Source::MdeAlerts => Some(Source::GraphAlerts),
            Source::GraphIncidents | Source::GraphAlerts => None,
        }
    }

    /// The retiring source a Graph source takes over from.
    pub fn predecessor(self) -> Option<Source> {
        Source::ALL
            .into_iter()
            .find(|source| source.successor() == Some(self))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        Source::ALL
            .into_iter()
            .find(|source| source.as_str() == wanted)
            .ok_or_else(|| {
                format!(
                    "unknown source {text:?}: use graph-incidents, graph-alerts, or the retiring m365d-incidents, mde-alerts"
                )
            })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SourceSpec {
    pub source: Source,
    pub api: DefenderApi,
    pub path: &'static str,
    /// The last-update field, for `$filter` and for reading records.
    pub time_field: &'static str,
    /// The most records one page may ask for.
    pub max_top: u32,
    /// Whether `$orderby` on the time field is accepted (undocumented on M365 Defender).
    pub accepts_orderby: bool,
    /// Whether pages come newest first (documented, or by `$orderby`): the engine then narrows
    /// the window to each page's oldest record. Otherwise (Graph documents no order) it follows
    /// `@odata.nextLink` and, where a full page comes without one, splits the time window.
    pub newest_first: bool,
    pub per_minute: NonZeroU32,
    pub per_hour: NonZeroU32,
}

const fn limit(value: u32) -> NonZeroU32 {
    match NonZeroU32::new(value) {
        Some(value) => value,
        None => panic!("limits are positive"),
    }
}

/// Graph security: 150 requests a minute per app per tenant (§10).
pub const GRAPH_PER_MINUTE: u32 = 150;
/// Graph states no hourly figure: the minute's budget sustained.
pub const GRAPH_PER_HOUR: u32 = GRAPH_PER_MINUTE * 60;

pub fn spec(source: Source) -> SourceSpec {
    match source {
        Source::M365dIncidents => SourceSpec {
            source,
            api: DefenderApi::M365d,
            path: "api/incidents",
            time_field: "lastUpdateTime",
            max_top: 100,
            accepts_orderby: false,
            newest_first: true,
            per_minute: limit(50),
            per_hour: limit(1500),
        },
        // Graph documents 150 requests a minute per app per tenant for the alert operations
        // and no other figure for incidents: the same budget, shared by both sources (one
        // limiter per tenant and API).
        Source::GraphIncidents => SourceSpec {
            source,
            api: DefenderApi::Graph,
            path: "v1.0/security/incidents",
            time_field: "lastUpdateDateTime",
            max_top: 50,
            accepts_orderby: false,
            newest_first: false,
            per_minute: limit(GRAPH_PER_MINUTE),
            per_hour: limit(GRAPH_PER_HOUR),
        },
        Source::GraphAlerts => SourceSpec {
            source,
            api: DefenderApi::Graph,
            path: "v1.0/security/alerts_v2",
            time_field: "lastUpdateDateTime",
            // Graph clamps `$top` at 1,000 on alerts_v2.
            max_top: 1000,
            accepts_orderby: false,
            newest_first: false,
            per_minute: limit(GRAPH_PER_MINUTE),
            per_hour: limit(GRAPH_PER_HOUR),
        },
        Source::MdeAlerts => SourceSpec {
            source,
            api: DefenderApi::Mde,
            path: "api/alerts",
            time_field: "lastUpdateTime",
            max_top: 10_000,
            accepts_orderby: true,
            newest_first: true,
            per_minute: limit(100),
            per_hour: limit(1500),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_round_trip() {
        for source in Source::ALL {
            assert_eq!(source.as_str().parse::<Source>().unwrap(), source);
            assert_eq!(
                serde_json::to_value(source).unwrap(),
                serde_json::Value::String(source.as_str().into())
            );
            assert_eq!(source.to_string(), source.as_str());
        }
        assert_eq!(" MDE-Alerts ".parse::<Source>().unwrap(), Source::MdeAlerts);
        assert!("incidents".parse::<Source>().is_err());
    }
}

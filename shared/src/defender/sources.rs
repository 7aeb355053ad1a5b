//! What differs between the three sources: path, field names, page size, expansion, limits.

use std::num::NonZeroU32;

use crate::api::DefenderApi;
use crate::sink::Source;

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

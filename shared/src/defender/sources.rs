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
    pub per_minute: NonZeroU32,
    pub per_hour: NonZeroU32,
}

const fn limit(value: u32) -> NonZeroU32 {
    match NonZeroU32::new(value) {
        Some(value) => value,
        None => panic!("limits are positive"),
    }
}

pub fn spec(source: Source) -> SourceSpec {
    match source {
        Source::M365dIncidents => SourceSpec {
            source,
            api: DefenderApi::M365d,
            path: "api/incidents",
            time_field: "lastUpdateTime",
            max_top: 100,
            accepts_orderby: false,
            per_minute: limit(50),
            per_hour: limit(1500),
        },
        Source::GraphIncidents => SourceSpec {
            source,
            api: DefenderApi::Graph,
            path: "v1.0/security/incidents",
            time_field: "lastUpdateDateTime",
            max_top: 50,
            accepts_orderby: true,
            // Graph publishes no figure for the security API; stay well under its global limits.
            per_minute: limit(60),
            per_hour: limit(1500),
        },
        Source::MdeAlerts => SourceSpec {
            source,
            api: DefenderApi::Mde,
            path: "api/alerts",
            time_field: "lastUpdateTime",
            max_top: 10_000,
            accepts_orderby: true,
            per_minute: limit(100),
            per_hour: limit(1500),
        },
    }
}

//! The JSON types of the data APIs: a tenant's generated data (scenario field `data`), its
//! failure modes, and the run-wide settings (rate limits, M365 Defender quirks).

use anyhow::bail;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The most records of one kind a tenant may have. Records are generated from their index on
/// demand, so this bounds ids and arithmetic, not memory.
pub const MAX_RECORDS: u32 = 1_000_000;

/// A tenant's incidents and alerts, generated deterministically from `seed`.
///
/// Incident `i` (0-based) has id `first_incident_id + i`; records are `spacing_seconds` apart
/// from `start` on, oldest first, so the newest is at `start + (n - 1) * spacing_seconds`.
/// M365 Defender and Graph show the same incidents; Defender for Endpoint alerts belong to them
/// (or to no incident when `incidents` is 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Incidents (M365 Defender `/api/incidents`, Graph `/v1.0/security/incidents`).
    #[serde(default)]
    pub incidents: u32,
    /// Defender for Endpoint alerts (`/api/alerts`); also listed in Graph `alerts_v2` and in
    /// their incidents' `alerts`.
    #[serde(default)]
    pub mde_alerts: u32,
    /// Alerts of every other product (Identity, Office 365, Cloud Apps, XDR, Entra ID
    /// Protection, app governance, DLP, Defender for Cloud, Sentinel), listed only by Graph
    /// `alerts_v2` and in their incidents' `alerts` (M365 Defender, Graph `$expand`).
    #[serde(default)]
    pub graph_alerts: u32,
    /// Changes every generated value (names, severities, ids of alerts, ...).
    #[serde(default)]
    pub seed: u64,
    /// Time of the oldest record's slot. Absent: chosen when the tenant is loaded so that the
    /// newest record is about "now".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    /// Seconds between two consecutive records (1..=86400).
    #[serde(default = "default_spacing")]
    pub spacing_seconds: u32,
    /// Id of the oldest incident.
    #[serde(default = "default_first_incident_id")]
    pub first_incident_id: u64,
    /// Graph `$expand=alerts` answers 500 while the tenant has more incidents than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_alerts_fails_above: Option<u32>,
    /// Change data while clients page through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touch_while_paging: Option<TouchWhilePaging>,
    /// Graph `alerts_v2` never sends `@odata.nextLink`, even when more records remain (users
    /// and Elastic report this from real Graph): a full page is the only sign of more.
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_alerts_v2_next_link: bool,
    /// The advanced hunting tables (`POST /v1.0/security/runHuntingQuery`); absent: every
    /// table is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting: Option<HuntingConfig>,
}

/// The most rows one hunting table may have: rows are generated while a query reads them, so
/// this bounds the time of a query that reads a whole table, not memory.
pub const MAX_HUNTING_ROWS: u32 = 10_000_000;

/// A tenant's advanced hunting tables, generated deterministically from the data's `seed`:
/// row `i` of a table of `n` rows has a `Timestamp` in the `i`-th of `n` equal slices of the
/// `span_days` before `end`, so rows are in time order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntingConfig {
    /// Rows of every table not named in `tables`.
    #[serde(default)]
    pub rows_per_table: u32,
    /// Rows of given tables (`DeviceProcessEvents`, `DeviceNetworkEvents`, `EmailEvents`,
    /// `IdentityLogonEvents`), overriding `rows_per_table`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tables: std::collections::BTreeMap<String, u32>,
    /// Days the rows span (1..=365).
    #[serde(default = "default_span_days")]
    pub span_days: u32,
    /// Time of the end of the span. Absent: when the tenant's data is loaded (to the second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// How long every query of the tenant runs, in milliseconds: above the
    /// `hunting_timeout_ms` setting its queries time out (504).
    #[serde(default)]
    pub query_ms: u64,
}

fn default_span_days() -> u32 {
    7
}

impl Default for HuntingConfig {
    fn default() -> Self {
        HuntingConfig {
            rows_per_table: 0,
            tables: std::collections::BTreeMap::new(),
            span_days: default_span_days(),
            end: None,
            query_ms: 0,
        }
    }
}

impl HuntingConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.rows_per_table > MAX_HUNTING_ROWS
            || self.tables.values().any(|rows| *rows > MAX_HUNTING_ROWS)
        {
            bail!("data.hunting: at most {MAX_HUNTING_ROWS} rows per table");
        }
        if !(1..=365).contains(&self.span_days) {
            bail!("data.hunting: span_days must be 1 to 365");
        }
        for name in self.tables.keys() {
            if !super::hunting::TABLE_NAMES.contains(&name.as_str()) {
                bail!(
                    "data.hunting: unknown table {name} (the emulator generates {})",
                    super::hunting::TABLE_NAMES.join(", ")
                );
            }
        }
        Ok(())
    }

    /// Rows of a table.
    pub(crate) fn rows(&self, table: &str) -> u32 {
        self.tables
            .get(table)
            .copied()
            .unwrap_or(self.rows_per_table)
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// After every `every_pages`-th page served for the tenant (any data API), `count` random
/// incidents (and their alerts) get a last-update time of "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouchWhilePaging {
    pub every_pages: u32,
    pub count: u32,
}

/// The failure modes of a tenant's data, changeable without regenerating it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataModes {
    #[serde(default)]
    pub expand_alerts_fails_above: Option<u32>,
    #[serde(default)]
    pub touch_while_paging: Option<TouchWhilePaging>,
    /// Graph `alerts_v2` omits `@odata.nextLink` even when more records remain.
    #[serde(default)]
    pub omit_alerts_v2_next_link: bool,
}

fn default_spacing() -> u32 {
    60
}

fn default_first_incident_id() -> u64 {
    1
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            incidents: 0,
            mde_alerts: 0,
            graph_alerts: 0,
            seed: 0,
            start: None,
            spacing_seconds: default_spacing(),
            first_incident_id: default_first_incident_id(),
            expand_alerts_fails_above: None,
            touch_while_paging: None,
            omit_alerts_v2_next_link: false,
            hunting: None,
        }
    }
}

impl DataConfig {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.incidents > MAX_RECORDS
            || self.mde_alerts > MAX_RECORDS
            || self.graph_alerts > MAX_RECORDS
        {
            bail!(
                "data: at most {MAX_RECORDS} incidents, {MAX_RECORDS} mde_alerts and {MAX_RECORDS} graph_alerts"
            );
        }
        if !(1..=86_400).contains(&self.spacing_seconds) {
            bail!("data: spacing_seconds must be 1 to 86400");
        }
        // Ids stay exact in JavaScript numbers.
        if self.first_incident_id == 0
            || self.first_incident_id > (1 << 52)
            || self.first_incident_id + u64::from(self.incidents) > (1 << 53)
        {
            bail!("data: first_incident_id must be 1 to 2^52");
        }
        if let Some(hunting) = &self.hunting {
            hunting.validate()?;
        }
        self.modes().validate()
    }

    pub(crate) fn modes(&self) -> DataModes {
        DataModes {
            expand_alerts_fails_above: self.expand_alerts_fails_above,
            touch_while_paging: self.touch_while_paging,
            omit_alerts_v2_next_link: self.omit_alerts_v2_next_link,
        }
    }

    pub(crate) fn set_modes(&mut self, modes: DataModes) {
        self.expand_alerts_fails_above = modes.expand_alerts_fails_above;
        self.touch_while_paging = modes.touch_while_paging;
        self.omit_alerts_v2_next_link = modes.omit_alerts_v2_next_link;
    }
}

impl DataModes {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if let Some(touch) = self.touch_while_paging
            && (touch.every_pages == 0 || touch.count == 0)
        {
            bail!("data: touch_while_paging needs every_pages and count of at least 1");
        }
        Ok(())
    }
}

/// Whether the documented per-app, per-tenant call limits are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitMode {
    #[default]
    On,
    Off,
}

/// How the legacy APIs (M365 Defender `/api/incidents`, Defender for Endpoint `/api/alerts`)
/// answer: as today, or as after their retirement on 2027-02-01 (MC1220762, reference §10).
/// Graph is never retired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retirement {
    /// The legacy APIs work.
    #[default]
    Off,
    /// Every call of a legacy route answers 410 Gone, code `Gone`.
    Gone,
    /// Every call answers 404, code `NotFound`, the message naming the retirement.
    NotFound,
    /// Every call answers 400, code `BadRequest`, the message naming the retirement.
    BadRequest,
}

/// Run-wide behaviour of the data APIs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenderSettings {
    /// `on` (default) or `off`.
    pub rate_limits: RateLimitMode,
    /// Multiplies every limit (a limit never goes below 1 call): 0.1 makes M365 Defender's
    /// 50/min 5/min, so tests reach it quickly; 100 makes limits practically disappear.
    pub rate_limit_scale: f64,
    /// M365 Defender adds `@odata.nextLink` when more records remain (its docs show none).
    pub m365d_next_link: bool,
    /// M365 Defender states the wait of a 429 only in the message, without `Retry-After`.
    pub m365d_retry_after_in_body_only: bool,
    /// Graph cuts every page at this many records whatever `$top` asks (server-driven paging),
    /// and links the rest with `@odata.nextLink`: a short page that is not the last.
    pub graph_page_cut: Option<u32>,
    /// The legacy APIs answer as retired (Graph keeps working).
    #[serde(default)]
    pub retirement: Retirement,
    /// Graph incident updates refuse a determination other than `unknown` unless the
    /// classification is `truePositive` (the legacy M365 Defender rule, reference §11): 400.
    #[serde(default = "yes")]
    pub incident_determination_rule: bool,
    /// Advanced hunting calls allowed per minute and tenant (documented: at least 45).
    #[serde(default = "default_hunting_calls_per_minute")]
    pub hunting_calls_per_minute: u32,
    /// Queries a tenant may run per CPU cycle before its quota is spent (429 until the cycle
    /// ends); `None`: no quota.
    #[serde(default)]
    pub hunting_cpu_quota: Option<u32>,
    /// Length of a CPU quota cycle (documented: 15 minutes).
    #[serde(default = "default_hunting_cpu_cycle_seconds")]
    pub hunting_cpu_cycle_seconds: u32,
    /// How long a query may run before it fails (documented: 3 minutes); a tenant's
    /// `hunting.query_ms` above it makes its queries time out.
    #[serde(default = "default_hunting_timeout_ms")]
    pub hunting_timeout_ms: u64,
    /// Rows of a hunting result at most (documented: 100,000); beyond it the result is cut.
    #[serde(default = "default_hunting_max_rows")]
    pub hunting_max_rows: u32,
    /// Hunting answers spell the schema `Name`/`Type` (older answers) instead of `name`/`type`.
    #[serde(default)]
    pub hunting_legacy_schema: bool,
    /// "Now" of advanced hunting (`ago()`, the default and relative `Timespan`s); `None`: the
    /// real clock. Set it so that a query and its truth agree to the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_clock: Option<DateTime<Utc>>,
}

fn yes() -> bool {
    true
}

fn default_hunting_calls_per_minute() -> u32 {
    45
}

fn default_hunting_cpu_cycle_seconds() -> u32 {
    900
}

fn default_hunting_timeout_ms() -> u64 {
    180_000
}

fn default_hunting_max_rows() -> u32 {
    100_000
}

impl Default for DefenderSettings {
    fn default() -> Self {
        DefenderSettings {
            rate_limits: RateLimitMode::On,
            rate_limit_scale: 1.0,
            m365d_next_link: false,
            m365d_retry_after_in_body_only: false,
            graph_page_cut: None,
            retirement: Retirement::Off,
            incident_determination_rule: true,
            hunting_calls_per_minute: default_hunting_calls_per_minute(),
            hunting_cpu_quota: None,
            hunting_cpu_cycle_seconds: default_hunting_cpu_cycle_seconds(),
            hunting_timeout_ms: default_hunting_timeout_ms(),
            hunting_max_rows: default_hunting_max_rows(),
            hunting_legacy_schema: false,
            hunting_clock: None,
        }
    }
}

impl DefenderSettings {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.rate_limit_scale.is_finite() && self.rate_limit_scale > 0.0) {
            return Err("rate_limit_scale must be a positive number".to_owned());
        }
        if self.graph_page_cut == Some(0) {
            return Err("graph_page_cut must be at least 1".to_owned());
        }
        if self.hunting_calls_per_minute == 0 {
            return Err("hunting_calls_per_minute must be at least 1".to_owned());
        }
        if self.hunting_cpu_quota == Some(0) {
            return Err("hunting_cpu_quota must be at least 1 (or null: no quota)".to_owned());
        }
        if self.hunting_cpu_cycle_seconds == 0 {
            return Err("hunting_cpu_cycle_seconds must be at least 1".to_owned());
        }
        if self.hunting_max_rows == 0 {
            return Err("hunting_max_rows must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A partial change of [`DefenderSettings`], as sent to `PUT /_emulator/settings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenderSettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimitMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m365d_next_link: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m365d_retry_after_in_body_only: Option<bool>,
    /// `Some(0)` turns the cut off; `Some(n)` cuts pages at `n` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_page_cut: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retirement: Option<Retirement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_determination_rule: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_calls_per_minute: Option<u32>,
    /// `Some(0)` removes the quota; `Some(n)`: `n` queries per cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_cpu_quota: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_cpu_cycle_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_max_rows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunting_legacy_schema: Option<bool>,
    /// `Some(None)` (JSON `null`) returns hunting to the real clock.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub hunting_clock: Option<Option<DateTime<Utc>>>,
}

/// A field that is present, `null` included: `Some(None)` for `null`, absent stays `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl DefenderSettingsPatch {
    /// Every field name, so that `PUT /_emulator/settings` can split its body among the parts
    /// of the emulator.
    pub const FIELDS: &'static [&'static str] = &[
        "rate_limits",
        "rate_limit_scale",
        "m365d_next_link",
        "m365d_retry_after_in_body_only",
        "graph_page_cut",
        "retirement",
        "incident_determination_rule",
        "hunting_calls_per_minute",
        "hunting_cpu_quota",
        "hunting_cpu_cycle_seconds",
        "hunting_timeout_ms",
        "hunting_max_rows",
        "hunting_legacy_schema",
        "hunting_clock",
    ];

    pub(crate) fn apply(&self, settings: &mut DefenderSettings) {
        if let Some(value) = self.rate_limits {
            settings.rate_limits = value;
        }
        if let Some(value) = self.rate_limit_scale {
            settings.rate_limit_scale = value;
        }
        if let Some(value) = self.m365d_next_link {
            settings.m365d_next_link = value;
        }
        if let Some(value) = self.m365d_retry_after_in_body_only {
            settings.m365d_retry_after_in_body_only = value;
        }
        if let Some(value) = self.graph_page_cut {
            settings.graph_page_cut = (value > 0).then_some(value);
        }
        if let Some(value) = self.retirement {
            settings.retirement = value;
        }
        if let Some(value) = self.incident_determination_rule {
            settings.incident_determination_rule = value;
        }
        if let Some(value) = self.hunting_calls_per_minute {
            settings.hunting_calls_per_minute = value;
        }
        if let Some(value) = self.hunting_cpu_quota {
            settings.hunting_cpu_quota = (value > 0).then_some(value);
        }
        if let Some(value) = self.hunting_cpu_cycle_seconds {
            settings.hunting_cpu_cycle_seconds = value;
        }
        if let Some(value) = self.hunting_timeout_ms {
            settings.hunting_timeout_ms = value;
        }
        if let Some(value) = self.hunting_max_rows {
            settings.hunting_max_rows = value;
        }
        if let Some(value) = self.hunting_legacy_schema {
            settings.hunting_legacy_schema = value;
        }
        if let Some(value) = self.hunting_clock {
            settings.hunting_clock = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brief_example_parses_with_defaults() {
        let config: DataConfig = serde_json::from_str(
            r#"{"incidents": 250, "mde_alerts": 300, "seed": 7,
                "start": "2026-01-01T00:00:00Z", "spacing_seconds": 60}"#,
        )
        .unwrap();
        assert_eq!(config.first_incident_id, 1);
        assert!(config.validate().is_ok());
        let empty: DataConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, DataConfig::default());
    }

    #[test]
    fn rejects_what_it_cannot_serve() {
        for text in [
            r#"{"incidents": 1000001}"#,
            r#"{"spacing_seconds": 0}"#,
            r#"{"first_incident_id": 0}"#,
            r#"{"touch_while_paging": {"every_pages": 0, "count": 1}}"#,
        ] {
            let config: DataConfig = serde_json::from_str(text).unwrap();
            assert!(config.validate().is_err(), "{text}");
        }
        assert!(serde_json::from_str::<DataConfig>(r#"{"incident": 1}"#).is_err());
    }

    #[test]
    fn settings_patch_changes_only_what_it_names() {
        let mut settings = DefenderSettings::default();
        let patch: DefenderSettingsPatch =
            serde_json::from_str(r#"{"rate_limits": "off"}"#).unwrap();
        patch.apply(&mut settings);
        assert_eq!(settings.rate_limits, RateLimitMode::Off);
        assert_eq!(settings.rate_limit_scale, 1.0);
        settings.rate_limit_scale = 0.0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn every_patch_field_is_listed() {
        let mut full = serde_json::Map::new();
        for field in DefenderSettingsPatch::FIELDS {
            full.insert((*field).to_owned(), serde_json::Value::Null);
        }
        // Every listed name is a field (null is accepted by every Option)...
        let patch: DefenderSettingsPatch =
            serde_json::from_value(serde_json::Value::Object(full)).unwrap();
        assert_eq!(patch.hunting_clock, Some(None));
        // ...and every field is listed: a patch naming all fields serializes only listed names.
        let all = DefenderSettingsPatch {
            rate_limits: Some(RateLimitMode::On),
            rate_limit_scale: Some(1.0),
            m365d_next_link: Some(true),
            m365d_retry_after_in_body_only: Some(true),
            graph_page_cut: Some(1),
            retirement: Some(Retirement::Off),
            incident_determination_rule: Some(true),
            hunting_calls_per_minute: Some(1),
            hunting_cpu_quota: Some(1),
            hunting_cpu_cycle_seconds: Some(1),
            hunting_timeout_ms: Some(1),
            hunting_max_rows: Some(1),
            hunting_legacy_schema: Some(true),
            hunting_clock: Some(None),
        };
        let value = serde_json::to_value(all).unwrap();
        let names: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(names.len(), DefenderSettingsPatch::FIELDS.len());
        for name in names {
            assert!(
                DefenderSettingsPatch::FIELDS.contains(&name.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn settings_without_the_new_fields_still_parse() {
        let settings: DefenderSettings = serde_json::from_str(
            r#"{"rate_limits":"on","rate_limit_scale":1.0,"m365d_next_link":false,
                "m365d_retry_after_in_body_only":false,"graph_page_cut":null}"#,
        )
        .unwrap();
        assert_eq!(settings, DefenderSettings::default());
    }
}

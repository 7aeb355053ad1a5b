//! Graph's `$expand=alerts` is known to fail with 500 on large tenants. Instead of stalling the
//! cursor, a failed page is fetched again without expansion and the incidents' alerts are read
//! from `alerts_v2`, then attached under `alerts` as the expansion would have.
//!
//! Reading them one incident at a time costs a call per incident (about 83 minutes of quota for
//! a 5,000-incident tenant), and `incidentId` is not among the properties `alerts_v2` documents
//! for `$filter`. So the alerts are read by time instead, which is documented: every alert whose
//! `lastUpdateDateTime` lies between an incident's creation (less [`CREATION_LEAD`], for the
//! alert that opened it) and now, grouped by `incidentId`. The pair's run keeps what it read
//! ([`AlertsFallback`]), so a window's pages of incidents, read from the newest down, each only
//! read the stretch of time not yet covered: the calls follow the number of alerts, not of
//! incidents.
//!
//! `alerts_v2` often leaves out `@odata.nextLink` on a page that is not the last (reference
//! §10), so a full page means "more" whatever the link says: the time range is then split in two
//! and each half read again, down to one instant, where only links and `$skip` are left.
//!
//! Incidents created longer ago than [`RANGE_HORIZON`] (an old incident touched today) would
//! make that stretch long; theirs are read per incident, as is everything once the run's reads
//! pass [`MAX_KEPT_BYTES`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use super::client::{ApiError, DefenderClient};
use super::records::FetchedRecord;
use super::sources::SourceSpec;
use super::time::{odata_literal, parse_api_time};
use crate::tenant_id::TenantId;

const ALERTS_PATH: &str = "v1.0/security/alerts_v2";
/// An incident is created from its first alert, moments after it: alerts last updated earlier
/// than this before the incident's creation are not looked for by time.
pub const CREATION_LEAD: chrono::Duration = chrono::Duration::hours(1);
/// Incidents created longer ago than this have their alerts read per incident.
pub const RANGE_HORIZON: chrono::Duration = chrono::Duration::days(30);
/// What one run keeps of the alerts it read, before it falls back to reading per incident.
pub const MAX_KEPT_BYTES: usize = 64 << 20;
/// A bound on the calls of one link chain (per incident, or at one instant).
const MAX_CHAIN_PAGES: usize = 50;
/// `$skip` above 500 is refused (reference §10).
const MAX_SKIP: u32 = 500;
/// The narrowest time range that is still split.
const MIN_SPLIT: chrono::Duration = chrono::Duration::milliseconds(1);

#[derive(Deserialize)]
struct AlertPage {
    value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// The fields of an alert this module reads.
#[derive(Deserialize)]
struct AlertKeys {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "incidentId", default)]
    incident_id: Option<serde_json::Value>,
}

/// The alerts one pair's run has read by time, by incident.
#[derive(Default)]
pub struct AlertsFallback {
    /// Alerts last updated from here up to the run's first read have been read.
    covered_from: Option<DateTime<Utc>>,
    by_incident: HashMap<String, Vec<Box<RawValue>>>,
    seen: HashSet<String>,
    kept_bytes: usize,
    /// Set when `kept_bytes` passed [`MAX_KEPT_BYTES`]: per incident from then on.
    per_incident_only: bool,
    /// Calls made, for the pair's outcome.
    pub calls: usize,
}

/// One `$filter` query of `alerts_v2`.
struct Range {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl AlertsFallback {
    /// Adds `alerts` to every record of the page, reading what the run has not read yet.
    /// `deadline` bounds the whole read: past it, the page is left for a later run (reported
    /// as our own limit, which the engine treats like a throttle).
    pub async fn attach(
        &mut self,
        client: &DefenderClient,
        tenant: &TenantId,
        spec: &SourceSpec,
        top: u32,
        records: &mut [FetchedRecord],
        deadline: Instant,
    ) -> Result<(), ApiError> {
        let reader = Reader {
            client,
            tenant,
            spec,
            top: top.max(1),
            deadline,
        };
        let now = Utc::now();
        let (by_time, per_incident) = self.split_by_age(records, now);
        if let Some(from) = by_time.iter().map(|(_, created)| *created).min() {
            self.cover(&reader, from - CREATION_LEAD, now).await?;
        }
        for (index, _) in &by_time {
            let record = &mut records[*index];
            let alerts = self
                .by_incident
                .get(&record.id)
                .cloned()
                .unwrap_or_default();
            record.raw = with_alerts(&record.raw, &alerts)?;
        }
        for index in per_incident {
            let record = &mut records[index];
            let alerts = reader.incident_alerts(&record.id, &mut self.calls).await?;
            record.raw = with_alerts(&record.raw, &alerts)?;
        }
        if self.kept_bytes > MAX_KEPT_BYTES && !self.per_incident_only {
            tracing::warn!(tenant = %tenant, kept = self.kept_bytes, "alerts read by time pass the memory bound: per incident for the rest of the run");
            self.per_incident_only = true;
            self.by_incident = HashMap::new();
            self.seen = HashSet::new();
        }
        Ok(())
    }

    /// The records whose alerts are read by time (index, creation), and those read per incident.
    fn split_by_age(
        &self,
        records: &[FetchedRecord],
        now: DateTime<Utc>,
    ) -> (Vec<(usize, DateTime<Utc>)>, Vec<usize>) {
        let mut by_time = Vec::new();
        let mut per_incident = Vec::new();
        for (index, record) in records.iter().enumerate() {
            // Without a readable creation time, the last update is the latest it can be.
            let created = created_at(&record.raw).unwrap_or(record.last_update_at);
            if self.per_incident_only || created < now - RANGE_HORIZON {
                per_incident.push(index);
            } else {
                by_time.push((index, created));
            }
        }
        (by_time, per_incident)
    }

    /// Reads every alert last updated in `[from, now]` that the run has not read yet.
    async fn cover(
        &mut self,
        reader: &Reader<'_>,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let to = match self.covered_from {
            Some(covered) if from >= covered => return Ok(()),
            // The stretch below what is covered; its upper end overlaps by one instant, and the
            // alert ids drop what was read twice.
            Some(covered) => covered,
            None => now,
        };
        let mut pending = vec![Range { from, to }];
        while let Some(range) = pending.pop() {
            let url = reader.range_url(&range, 0);
            let page = reader.page(&url, &mut self.calls).await?;
            let returned = page.value.len();
            let full = returned >= reader.top as usize || page.next_link.is_some();
            self.keep(page.value)?;
            if !full {
                continue;
            }
            let width = range.to - range.from;
            if width > MIN_SPLIT {
                let middle = range.from + width / 2;
                // Read the newer half first: nothing depends on it, but logs read naturally.
                pending.push(Range {
                    from: range.from,
                    to: middle,
                });
                pending.push(Range {
                    from: middle,
                    to: range.to,
                });
                continue;
            }
            let rest = reader
                .rest_of_instant(&range, &url, page.next_link, &mut self.calls)
                .await?;
            self.keep(rest)?;
        }
        self.covered_from = Some(from);
        Ok(())
    }

    fn keep(&mut self, alerts: Vec<Box<RawValue>>) -> Result<(), ApiError> {
        for alert in alerts {
            let keys: AlertKeys = serde_json::from_str(alert.get())
                .map_err(|error| malformed(format!("alerts_v2 record: {error}")))?;
            let (Some(id), Some(incident)) = (keys.id, keys.incident_id.and_then(id_text)) else {
                continue;
            };
            if !self.seen.insert(id) {
                continue;
            }
            self.kept_bytes += alert.get().len();
            self.by_incident.entry(incident).or_default().push(alert);
        }
        Ok(())
    }
}

/// `incidentId` as text: documented as a string, tolerated as a number.
fn id_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) if !text.is_empty() => Some(text),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn created_at(raw: &RawValue) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "createdDateTime", default)]
        created: Option<String>,
    }
    let created: Created = serde_json::from_str(raw.get()).ok()?;
    parse_api_time(created.created.as_deref()?)
}

/// The calls of one `attach`.
struct Reader<'a> {
    client: &'a DefenderClient,
    tenant: &'a TenantId,
    spec: &'a SourceSpec,
    top: u32,
    deadline: Instant,
}

impl Reader<'_> {
    fn range_url(&self, range: &Range, skip: u32) -> Url {
        let mut query = vec![
            (
                "$filter",
                format!(
                    "lastUpdateDateTime ge {} and lastUpdateDateTime le {}",
                    odata_literal(&range.from),
                    odata_literal(&range.to)
                ),
            ),
            ("$top", self.top.to_string()),
        ];
        if skip > 0 {
            query.push(("$skip", skip.to_string()));
        }
        self.client.url(self.spec, ALERTS_PATH, &query)
    }

    async fn page(&self, url: &Url, calls: &mut usize) -> Result<AlertPage, ApiError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // Not a failure of Microsoft's: the page is read again, alerts and all, next run.
            return Err(ApiError::LocalLimit(Duration::from_secs(1)));
        }
        let body = self.client.get(self.tenant, self.spec, url, left).await?;
        *calls += 1;
        serde_json::from_slice(&body).map_err(|error| malformed(format!("alerts_v2 page: {error}")))
    }

    /// The rest of a full answer for one instant, which cannot be split: its links, else `$skip`.
    async fn rest_of_instant(
        &self,
        range: &Range,
        first: &Url,
        mut next_link: Option<String>,
        calls: &mut usize,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        let mut alerts = Vec::new();
        let mut url = first.clone();
        let mut skip = 0;
        for _ in 0..MAX_CHAIN_PAGES {
            url = match next_link.take() {
                Some(link) => next_page(&url, &link)?,
                None if skip + self.top <= MAX_SKIP => {
                    skip += self.top;
                    self.range_url(range, skip)
                }
                None => break,
            };
            let page = self.page(&url, calls).await?;
            let returned = page.value.len();
            next_link = page.next_link;
            alerts.extend(page.value);
            if returned < self.top as usize && next_link.is_none() {
                return Ok(alerts);
            }
        }
        tracing::warn!(tenant = %self.tenant, at = %odata_literal(&range.from), "alerts at one instant capped");
        Ok(alerts)
    }

    /// One incident's alerts, by its id (not a documented filter, so a refusal is tolerated: the
    /// incident is then delivered without alerts, and a warning says so).
    async fn incident_alerts(
        &self,
        incident: &str,
        calls: &mut usize,
    ) -> Result<Vec<Box<RawValue>>, ApiError> {
        let escaped = incident.replace('\'', "''");
        let mut url = self.client.url(
            self.spec,
            ALERTS_PATH,
            &[("$filter", format!("incidentId eq '{escaped}'"))],
        );
        let mut alerts = Vec::new();
        for _ in 0..MAX_CHAIN_PAGES {
            let page = match self.page(&url, calls).await {
                Ok(page) => page,
                Err(ApiError::BadRequest { code, message, .. }) => {
                    tracing::warn!(tenant = %self.tenant, incident, code, message, "alerts_v2 refused the incident filter: delivered without alerts");
                    return Ok(alerts);
                }
                Err(error) => return Err(error),
            };
            alerts.extend(page.value);
            let Some(link) = page.next_link else {
                return Ok(alerts);
            };
            url = next_page(&url, &link)?;
        }
        tracing::warn!(tenant = %self.tenant, incident, "alert pages capped");
        Ok(alerts)
    }
}

/// A page's `@odata.nextLink`, followed only on the API's own host (the token goes nowhere else).
fn next_page(page: &Url, link: &str) -> Result<Url, ApiError> {
    crate::http::same_origin_link(page, link).map_err(|message| ApiError::BadRequest {
        status: 200,
        code: "next_link".into(),
        message,
    })
}

fn malformed(message: String) -> ApiError {
    ApiError::BadRequest {
        status: 200,
        code: "malformed".into(),
        message,
    }
}

/// The record with `"alerts": [...]` set, every other byte of the object unchanged in content.
fn with_alerts(raw: &RawValue, alerts: &[Box<RawValue>]) -> Result<Box<RawValue>, ApiError> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw.get()).map_err(|error| malformed(error.to_string()))?;
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|alert| serde_json::from_str(alert.get()))
        .collect::<Result<_, _>>()
        .map_err(|error| malformed(error.to_string()))?;
    object.insert("alerts".into(), serde_json::Value::Array(alerts));
    let text = serde_json::to_string(&object).map_err(|error| malformed(error.to_string()))?;
    RawValue::from_string(text).map_err(|error| malformed(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn attaches_alerts_and_keeps_the_rest() {
        let record = raw(r#"{"id":"7","displayName":"x\u200b","customTags":[]}"#);
        let alert = raw(r#"{"id":"a1","incidentId":"7"}"#);
        let merged = with_alerts(&record, &[alert]).unwrap();
        let value: serde_json::Value = serde_json::from_str(merged.get()).unwrap();
        assert_eq!(value["alerts"][0]["id"], "a1");
        assert_eq!(value["displayName"], "x\u{200b}");
        assert_eq!(value["customTags"], serde_json::json!([]));
    }

    #[test]
    fn keeps_each_alert_once_under_its_incident() {
        let mut fallback = AlertsFallback::default();
        fallback
            .keep(vec![
                raw(r#"{"id":"a1","incidentId":"7"}"#),
                raw(r#"{"id":"a2","incidentId":8}"#),
                raw(r#"{"id":"a3","incidentId":null}"#),
                raw(r#"{"id":"a4"}"#),
            ])
            .unwrap();
        // The same alert read again where two ranges meet.
        fallback
            .keep(vec![raw(r#"{"id":"a1","incidentId":"7"}"#)])
            .unwrap();
        assert_eq!(fallback.by_incident["7"].len(), 1);
        assert_eq!(fallback.by_incident["8"].len(), 1);
        assert_eq!(fallback.by_incident.len(), 2);
        assert!(fallback.kept_bytes > 0);
        assert!(fallback.keep(vec![raw("[1]")]).is_err());
    }

    #[test]
    fn old_incidents_and_a_full_memory_go_per_incident() {
        // To the API's precision, so that times survive being written.
        let now = parse_api_time(&odata_literal(&Utc::now())).unwrap();
        let record = |id: &str, created: DateTime<Utc>| FetchedRecord {
            id: id.to_owned(),
            last_update: odata_literal(&now),
            last_update_at: now,
            redirected_to: None,
            mde_alert_id: None,
            raw: raw(&format!(
                r#"{{"id":"{id}","createdDateTime":"{}"}}"#,
                odata_literal(&created)
            )),
        };
        let records = vec![
            record("recent", now - chrono::Duration::hours(5)),
            record("old", now - chrono::Duration::days(90)),
            FetchedRecord {
                raw: raw(r#"{"id":"undated"}"#),
                ..record("undated", now)
            },
        ];
        let mut fallback = AlertsFallback::default();
        let (by_time, per_incident) = fallback.split_by_age(&records, now);
        assert_eq!(
            by_time,
            vec![(0, now - chrono::Duration::hours(5)), (2, now)]
        );
        assert_eq!(per_incident, vec![1]);
        fallback.per_incident_only = true;
        let (by_time, per_incident) = fallback.split_by_age(&records, now);
        assert!(by_time.is_empty());
        assert_eq!(per_incident, vec![0, 1, 2]);
    }
}

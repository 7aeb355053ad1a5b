//! Graph's `$expand=alerts` is known to fail with 500 on large tenants. Instead of stalling the
//! cursor, a failed page is fetched again without expansion and each incident's alerts are read
//! from `alerts_v2`, then attached under `alerts` as the expansion would have.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::client::{ApiError, DefenderClient};
use super::records::FetchedRecord;
use super::sources::SourceSpec;
use crate::tenant_id::TenantId;

const ALERTS_PATH: &str = "v1.0/security/alerts_v2";
/// A client-side bound on one incident's alert pages (an incident with more is still delivered,
/// with the alerts read so far and a warning).
const MAX_ALERT_PAGES: usize = 50;

#[derive(Deserialize)]
struct AlertPage {
    value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// Adds `alerts` to every record of the page.
pub async fn attach_alerts(
    client: &DefenderClient,
    tenant: &TenantId,
    spec: &SourceSpec,
    records: &mut [FetchedRecord],
    max_wait: Duration,
) -> Result<usize, ApiError> {
    let mut calls = 0;
    for record in records.iter_mut() {
        let escaped = record.id.replace('\'', "''");
        let mut url = client.url(
            spec,
            ALERTS_PATH,
            &[("$filter", format!("incidentId eq '{escaped}'"))],
        );
        let mut alerts: Vec<Box<RawValue>> = Vec::new();
        for page_number in 0.. {
            let body = client.get(tenant, spec, &url, max_wait).await?;
            calls += 1;
            let page: AlertPage =
                serde_json::from_slice(&body).map_err(|error| ApiError::BadRequest {
                    status: 200,
                    code: "malformed".into(),
                    message: format!("alerts_v2 page: {error}"),
                })?;
            alerts.extend(page.value);
            let next = match page.next_link {
                Some(link) => Some(crate::http::same_origin_link(&url, &link).map_err(
                    |message| ApiError::BadRequest {
                        status: 200,
                        code: "next_link".into(),
                        message,
                    },
                )?),
                None => None,
            };
            match next {
                Some(next) if page_number + 1 < MAX_ALERT_PAGES => url = next,
                Some(_) => {
                    tracing::warn!(tenant = %tenant, incident = %record.id, "alert pages capped");
                    break;
                }
                None => break,
            }
        }
        record.raw = with_alerts(&record.raw, &alerts)?;
    }
    Ok(calls)
}

/// The record with `"alerts": [...]` set, every other byte of the object unchanged in content.
fn with_alerts(raw: &RawValue, alerts: &[Box<RawValue>]) -> Result<Box<RawValue>, ApiError> {
    let malformed = |problem: String| ApiError::BadRequest {
        status: 200,
        code: "malformed".into(),
        message: problem,
    };
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

    #[test]
    fn attaches_alerts_and_keeps_the_rest() {
        let raw =
            RawValue::from_string(r#"{"id":"7","displayName":"x\u200b","customTags":[]}"#.into())
                .unwrap();
        let alert = RawValue::from_string(r#"{"id":"a1","incidentId":"7"}"#.into()).unwrap();
        let merged = with_alerts(&raw, &[alert]).unwrap();
        let value: serde_json::Value = serde_json::from_str(merged.get()).unwrap();
        assert_eq!(value["alerts"][0]["id"], "a1");
        assert_eq!(value["displayName"], "x\u{200b}");
        assert_eq!(value["customTags"], serde_json::json!([]));
    }
}

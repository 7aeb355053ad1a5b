//! A page of records: each kept byte for byte as the API sent it, with the few fields the
//! pipeline needs (id, last-update time, merge target) read beside it. Unknown fields and enum
//! values are never interpreted, so they can never fail a run.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::time::parse_api_time;
use crate::defender::Source;

#[derive(Debug)]
pub struct FetchedRecord {
    pub id: String,
    /// As the API wrote it (kept exact for filters and keys).
    pub last_update: String,
    pub last_update_at: DateTime<Utc>,
    pub redirected_to: Option<String>,
    /// For a Graph alert raised by Defender for Endpoint: the MDE alert id it carries
    /// (`providerAlertId`), which `mde-alerts` delivered under that id.
    pub mde_alert_id: Option<String>,
    pub raw: Box<RawValue>,
}

#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<FetchedRecord>,
    /// Records that had no id or no readable last-update time (logged, not delivered).
    pub unreadable: usize,
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    value: Vec<Box<RawValue>>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Text(String),
    Number(i64),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Text(text) => text,
            IdValue::Number(number) => number.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct M365dKeys {
    incident_id: Option<IdValue>,
    last_update_time: Option<String>,
    redirect_incident_id: Option<IdValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphKeys {
    id: Option<IdValue>,
    last_update_date_time: Option<String>,
    redirect_incident_id: Option<IdValue>,
    #[serde(default)]
    provider_alert_id: Option<IdValue>,
    #[serde(default)]
    service_source: Option<String>,
}

/// Graph's `serviceSource` of alerts raised by Defender for Endpoint.
const MDE_SERVICE_SOURCE: &str = "microsoftDefenderForEndpoint";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MdeKeys {
    id: Option<IdValue>,
    last_update_time: Option<String>,
    alert_creation_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the API answered a page that is not an OData collection: {0}")]
pub struct MalformedPage(pub String);

pub fn parse_page(source: Source, body: &[u8]) -> Result<Page, MalformedPage> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|error| MalformedPage(error.to_string()))?;
    let mut page = Page {
        records: Vec::with_capacity(envelope.value.len()),
        unreadable: 0,
        next_link: envelope.next_link,
    };
    for raw in envelope.value {
        match keys(source, &raw) {
            Some((id, last_update, redirected_to, mde_alert_id)) => {
                match parse_api_time(&last_update) {
                    Some(last_update_at) => page.records.push(FetchedRecord {
                        id,
                        last_update,
                        last_update_at,
                        redirected_to,
                        mde_alert_id,
                        raw,
                    }),
                    None => page.unreadable += 1,
                }
            }
            None => page.unreadable += 1,
        }
    }
    Ok(page)
}

type Keys = (String, String, Option<String>, Option<String>);

fn keys(source: Source, raw: &RawValue) -> Option<Keys> {
    match source {
        Source::M365dIncidents => {
            let keys: M365dKeys = serde_json::from_str(raw.get()).ok()?;
            Some((
                keys.incident_id?.into_string(),
                keys.last_update_time?,
                keys.redirect_incident_id.map(IdValue::into_string),
                None,
            ))
        }
        Source::GraphIncidents | Source::GraphAlerts => {
            let keys: GraphKeys = serde_json::from_str(raw.get()).ok()?;
            let from_mde = source == Source::GraphAlerts
                && keys
                    .service_source
                    .as_deref()
                    .is_some_and(|service| service.eq_ignore_ascii_case(MDE_SERVICE_SOURCE));
            Some((
                keys.id?.into_string(),
                keys.last_update_date_time?,
                keys.redirect_incident_id.map(IdValue::into_string),
                keys.provider_alert_id
                    .filter(|_| from_mde)
                    .map(IdValue::into_string),
            ))
        }
        Source::MdeAlerts => {
            let keys: MdeKeys = serde_json::from_str(raw.get()).ok()?;
            Some((
                keys.id?.into_string(),
                keys.last_update_time.or(keys.alert_creation_time)?,
                None,
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_alert_from_defender_for_endpoint_names_its_mde_alert() {
        let body = br#"{"value":[
            {"id":"ea1","lastUpdateDateTime":"2026-12-01T00:00:00Z","serviceSource":"microsoftDefenderForEndpoint","providerAlertId":"da637"},
            {"id":"ea2","lastUpdateDateTime":"2026-12-01T00:00:00Z","serviceSource":"microsoftDefenderForIdentity","providerAlertId":"x9"},
            {"id":"ea3","lastUpdateDateTime":"2026-12-01T00:00:00Z","serviceSource":"unknownFutureValue"}
        ]}"#;
        let page = parse_page(Source::GraphAlerts, body).unwrap();
        let continued: Vec<Option<&str>> = page
            .records
            .iter()
            .map(|record| record.mde_alert_id.as_deref())
            .collect();
        assert_eq!(continued, [Some("da637"), None, None]);
        // Incidents never carry one.
        let incidents = parse_page(Source::GraphIncidents, body).unwrap();
        assert!(incidents.records.iter().all(|r| r.mde_alert_id.is_none()));
    }

    #[test]
    fn a_body_that_is_not_a_collection_is_an_error_not_an_empty_page() {
        for body in [&b"{}"[..], b"[]", b"{\"value\":null}", b"<html>", b""] {
            assert!(parse_page(Source::GraphAlerts, body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn reads_the_keys_and_keeps_the_raw_record() {
        let body = br#"{"@odata.context":"x","value":[
            {"incidentId":924,"redirectIncidentId":null,"lastUpdateTime":"2026-01-01T00:00:59.29Z","status":"SomeFutureStatus","extra":{"a":[1,2]},"title":"x\u200b"},
            {"incidentId":925,"redirectIncidentId":924,"lastUpdateTime":"2026-01-01T00:00:58Z","status":"Redirected"},
            {"lastUpdateTime":"2026-01-01T00:00:58Z"},
            {"incidentId":926,"lastUpdateTime":"not a time"}
        ]}"#;
        let page = parse_page(Source::M365dIncidents, body).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.unreadable, 2);
        assert_eq!(page.records[0].id, "924");
        assert_eq!(page.records[0].last_update, "2026-01-01T00:00:59.29Z");
        assert!(page.records[0].raw.get().contains(r#""extra":{"a":[1,2]}"#));
        assert!(
            page.records[0].raw.get().contains(r#""title":"x\u200b""#),
            "escapes kept byte for byte"
        );
        assert_eq!(page.records[1].redirected_to.as_deref(), Some("924"));
        assert!(page.next_link.is_none());
    }

    #[test]
    fn reads_graph_and_mde_shapes() {
        let graph = br#"{"value":[{"id":"2972395","lastUpdateDateTime":"2026-01-01T00:00:00.9089383Z","redirectIncidentId":"77"}],"@odata.nextLink":"https://graph/next"}"#;
        let page = parse_page(Source::GraphIncidents, graph).unwrap();
        assert_eq!(page.records[0].id, "2972395");
        assert_eq!(page.records[0].redirected_to.as_deref(), Some("77"));
        assert_eq!(page.next_link.as_deref(), Some("https://graph/next"));
        let mde = br#"{"value":[{"id":"da637472900382838869_1364969609","lastUpdateTime":null,"alertCreationTime":"2021-01-26T20:33:57.7220239Z"}]}"#;
        let page = parse_page(Source::MdeAlerts, mde).unwrap();
        assert_eq!(page.records[0].last_update, "2021-01-26T20:33:57.7220239Z");
    }

    #[test]
    fn the_reference_samples_parse() {
        // Synthetic pages from the project brief (shared/reference/samples).
        for (source, file, body) in [
            (
                Source::M365dIncidents,
                "m365d",
                &include_bytes!("../../tests/fixtures/m365d-incidents-page.json")[..],
            ),
            (
                Source::GraphIncidents,
                "graph",
                &include_bytes!("../../tests/fixtures/graph-security-incidents-page.json")[..],
            ),
            (
                Source::MdeAlerts,
                "mde",
                &include_bytes!("../../tests/fixtures/mde-alerts-page.json")[..],
            ),
        ] {
            let page = parse_page(source, body).unwrap();
            assert!(!page.records.is_empty(), "{file}");
            assert_eq!(page.unreadable, 0, "{file}");
        }
    }

    #[test]
    fn a_non_collection_is_malformed() {
        assert!(parse_page(Source::MdeAlerts, b"{\"error\":{}}").is_err());
        assert!(parse_page(Source::MdeAlerts, b"<html>").is_err());
    }
}

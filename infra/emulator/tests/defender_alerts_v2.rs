//! Graph `GET /v1.0/security/alerts_v2` as a data API: every product's alerts linked to the
//! incidents, `providerAlertId` naming the Defender for Endpoint alert, evolvable enums behind
//! `Prefer`, `$top` clamped at 1,000, large tenants paged by time window.

mod common;
mod defender_common;

use std::collections::{HashMap, HashSet};

use common::*;
use defender_common::*;
use defender_emulator::DataConfig;
use serde_json::Value;

const ALERTS: &str = "/v1.0/security/alerts_v2";

/// Every serviceSource value Graph documents (the last two only with the Prefer header).
const SERVICE_SOURCES: [&str; 10] = [
    "microsoftDefenderForEndpoint",
    "microsoftDefenderForIdentity",
    "microsoftDefenderForCloudApps",
    "microsoftDefenderForOffice365",
    "microsoft365Defender",
    "azureAdIdentityProtection",
    "microsoftAppGovernance",
    "dataLossPrevention",
    "microsoftDefenderForCloud",
    "microsoftSentinel",
];

fn with_graph_alerts(incidents: u32, mde_alerts: u32, graph_alerts: u32) -> DataConfig {
    DataConfig {
        graph_alerts,
        ..data(incidents, mde_alerts)
    }
}

/// GET with `Prefer: include-unknown-enum-members`.
async fn get_preferring(url: &str, token: &str) -> Answer {
    let response = client()
        .get(url)
        .bearer_auth(token)
        .header("Prefer", "include-unknown-enum-members")
        .send()
        .await
        .expect("request");
    answer(response).await
}

#[tokio::test]
async fn every_product_is_listed_and_linked_to_its_incident() {
    let emulator = start_with_data(with_graph_alerts(40, 60, 90)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let url = format!("{}{ALERTS}?$top=1000&$count=true", emulator.base_url());
    let page = get_preferring(&url, &token).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let alerts = values(&page);
    assert_eq!(page.body["@odata.count"], alerts.len());
    assert!(alerts.len() >= 150, "{}", alerts.len());
    let sources: HashSet<&str> = alerts
        .iter()
        .map(|a| a["serviceSource"].as_str().unwrap())
        .collect();
    for source in SERVICE_SOURCES {
        assert!(
            sources.contains(source),
            "{source} missing from {sources:?}"
        );
    }
    let incident_ids: HashSet<String> = (1..=40).map(|id| id.to_string()).collect();
    for alert in alerts {
        let incident = alert["incidentId"].as_str().expect("linked to an incident");
        assert!(incident_ids.contains(incident), "{incident}");
    }
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len(), "ids are unique");

    // Without the Prefer header the members after unknownFutureValue are hidden, as Graph does.
    let plain = api(&emulator, Some(&token), &format!("{ALERTS}?$top=1000")).await;
    let plain_sources: HashSet<&str> = values(&plain)
        .iter()
        .map(|a| a["serviceSource"].as_str().unwrap())
        .collect();
    assert!(plain_sources.contains("unknownFutureValue"));
    assert!(!plain_sources.contains("microsoftSentinel"));
    assert!(!plain_sources.contains("microsoftDefenderForCloud"));

    // $filter on serviceSource.
    let identity = api(
        &emulator,
        Some(&token),
        &format!("{ALERTS}?$filter=serviceSource eq 'microsoftDefenderForIdentity'"),
    )
    .await;
    assert!(!values(&identity).is_empty());
    assert!(
        values(&identity)
            .iter()
            .all(|a| a["serviceSource"] == "microsoftDefenderForIdentity")
    );

    // Each incident's $expand=alerts holds the same alerts as alerts_v2 names for it.
    let expanded = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$expand=alerts&$top=50",
    )
    .await;
    let mut from_incidents: Vec<String> = values(&expanded)
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let mut listed: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    from_incidents.sort();
    listed.sort();
    assert_eq!(from_incidents, listed);
    emulator.shutdown().await;
}

#[tokio::test]
async fn endpoint_alerts_name_their_mde_alert_in_provider_alert_id() {
    let emulator = start_with_data(with_graph_alerts(30, 80, 20)).await;
    let graph = contoso_token(&emulator, GRAPH).await;
    let mde = contoso_token(&emulator, MDE).await;
    let mde_page = api(&emulator, Some(&mde), "/api/alerts").await;
    assert_eq!(mde_page.status, 200, "{}", mde_page.text);
    let mde_alerts: HashMap<String, Value> = values(&mde_page)
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_owned(), a.clone()))
        .collect();
    assert_eq!(mde_alerts.len(), 80);

    let page = api(
        &emulator,
        Some(&graph),
        &format!("{ALERTS}?$filter=serviceSource eq 'microsoftDefenderForEndpoint'"),
    )
    .await;
    let endpoint = values(&page);
    assert_eq!(endpoint.len(), 80);
    let mut linked = HashSet::new();
    for alert in endpoint {
        let id = alert["id"].as_str().unwrap();
        let provider = alert["providerAlertId"].as_str().unwrap();
        assert_ne!(id, provider, "a Graph alert id is not the MDE id");
        assert!(!mde_alerts.contains_key(id), "{id}");
        let matching = mde_alerts
            .get(provider)
            .unwrap_or_else(|| panic!("{provider} is an MDE alert"));
        assert_eq!(
            matching["incidentId"].as_u64().unwrap().to_string(),
            alert["incidentId"].as_str().unwrap()
        );
        assert_eq!(matching["title"], alert["title"]);
        assert_eq!(
            time(&matching["lastUpdateTime"]),
            time(&alert["lastUpdateDateTime"])
        );
        linked.insert(provider.to_owned());
    }
    assert_eq!(linked.len(), 80, "one Graph alert per MDE alert");
    emulator.shutdown().await;
}

#[tokio::test]
async fn top_is_clamped_at_1000() {
    let emulator = start_with_data(with_graph_alerts(100, 700, 800)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    for top in ["1001", "5000"] {
        let page = api(&emulator, Some(&token), &format!("{ALERTS}?$top={top}")).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert_eq!(values(&page).len(), 1000);
        assert!(page.body["@odata.nextLink"].is_string());
    }
    let default = api(&emulator, Some(&token), ALERTS).await;
    assert_eq!(values(&default).len(), 1000);
    let small = api(&emulator, Some(&token), &format!("{ALERTS}?$top=7")).await;
    assert_eq!(values(&small).len(), 7);
    // Incidents keep refusing more than 50.
    let incidents = api(&emulator, Some(&token), "/v1.0/security/incidents?$top=51").await;
    assert_graph_error(&incidents, 400, "");
    emulator.shutdown().await;
}

//! Graph `GET /v1.0/security/incidents` and `GET /v1.0/security/alerts_v2`: auth, nextLink
//! paging, `$top` limits, `$expand=alerts` and its failure mode, alerts by incident, limits.

mod common;
mod defender_common;

use std::collections::HashSet;

use common::*;
use defender_common::*;
use defender_emulator::{DataModes, DefenderSettings};
use serde_json::Value;

#[tokio::test]
async fn refuses_calls_without_a_valid_token_or_role() {
    let emulator = start_with_data(data(10, 10)).await;
    let none = api(&emulator, None, "/v1.0/security/incidents").await;
    assert_graph_error(&none, 401, "InvalidAuthenticationToken");
    assert_eq!(none.body["error"]["message"], "Access token is empty.");

    let token = contoso_token(&emulator, GRAPH).await;
    let forged = api(
        &emulator,
        Some(&tampered(&token)),
        "/v1.0/security/incidents",
    )
    .await;
    assert_graph_error(&forged, 401, "InvalidAuthenticationToken");

    let m365d = contoso_token(&emulator, M365D).await;
    let wrong = api(&emulator, Some(&m365d), "/v1.0/security/incidents").await;
    assert_graph_error(&wrong, 401, "InvalidAuthenticationToken");
    assert!(
        wrong.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audience")
    );

    // Fabrikam consented to M365 Defender only: its Graph token has no roles.
    let fabrikam = access_token(&emulator, FABRIKAM, GRAPH).await;
    let forbidden = api(&emulator, Some(&fabrikam), "/v1.0/security/incidents").await;
    assert_graph_error(&forbidden, 403, "Forbidden");

    // alerts_v2 wants SecurityAlert.*: the incident role alone is not enough.
    let demo = start_demo().await;
    let incident_only = contoso_token(&demo, GRAPH).await;
    let alerts = api(&demo, Some(&incident_only), "/v1.0/security/alerts_v2").await;
    assert_graph_error(&alerts, 403, "Forbidden");
    assert!(
        alerts.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SecurityAlert.Read.All")
    );
    let incidents = api(&demo, Some(&incident_only), "/v1.0/security/incidents").await;
    assert_eq!(incidents.status, 200, "{}", incidents.text);
    demo.shutdown().await;
    emulator.shutdown().await;
}

async fn follow(
    emulator: &defender_emulator::RunningEmulator,
    token: &str,
    first: &str,
) -> (Vec<Value>, usize) {
    let mut url = format!("{}{first}", emulator.base_url());
    let mut records = Vec::new();
    let mut pages = 0;
    loop {
        let page = get_url(&url, Some(token)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        pages += 1;
        records.extend(values(&page).iter().cloned());
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("$skiptoken="), "{next}");
                assert!(!values(&page).is_empty());
                url = next.to_owned();
            }
            None => break,
        }
    }
    (records, pages)
}

#[tokio::test]
async fn next_link_paging_lists_every_incident_once_newest_first() {
    let emulator = start_with_data(data(230, 100)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let (incidents, pages) = follow(&emulator, &token, "/v1.0/security/incidents?$top=50").await;
    assert_eq!(pages, 5);
    let ids: HashSet<&str> = incidents
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 230);
    assert!(ids.contains("1") && ids.contains("230"));
    for pair in incidents.windows(2) {
        assert!(time(&pair[0]["lastUpdateDateTime"]) > time(&pair[1]["lastUpdateDateTime"]));
    }
    let first = &incidents[0];
    for field in [
        "id",
        "tenantId",
        "status",
        "incidentWebUrl",
        "redirectIncidentId",
        "displayName",
        "createdDateTime",
        "lastUpdateDateTime",
        "assignedTo",
        "classification",
        "determination",
        "severity",
        "customTags",
        "systemTags",
        "comments",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert!(first.get("alerts").is_none(), "alerts only with $expand");
    assert_eq!(first["tenantId"], CONTOSO);
    let statuses: HashSet<&str> = incidents
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| ["active", "inProgress", "resolved", "redirected"].contains(s))
    );

    // Ascending order, and a filter carried through the next links.
    let (ascending, _) = follow(
        &emulator,
        &token,
        "/v1.0/security/incidents?$orderby=lastUpdateDateTime asc&$filter=lastUpdateDateTime ge 2026-01-01T01:00:00Z&$top=40",
    )
    .await;
    assert_eq!(ascending.len(), 230 - 60);
    for pair in ascending.windows(2) {
        assert!(time(&pair[0]["lastUpdateDateTime"]) < time(&pair[1]["lastUpdateDateTime"]));
    }

    // A skip token only works with the query it came from.
    let page = api(&emulator, Some(&token), "/v1.0/security/incidents?$top=10").await;
    let next = page.body["@odata.nextLink"].as_str().unwrap();
    let token_part = next.split("$skiptoken=").nth(1).unwrap();
    let tampered_query = api(
        &emulator,
        Some(&token),
        &format!("/v1.0/security/incidents?$top=20&$skiptoken={token_part}"),
    )
    .await;
    assert_graph_error(&tampered_query, 400, "BadRequest");
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_page_cut_below_top_links_the_rest() {
    let emulator = start_with_data(data(30, 10)).await;
    emulator
        .handle()
        .set_defender_settings(DefenderSettings {
            graph_page_cut: Some(7),
            ..DefenderSettings::default()
        })
        .unwrap();
    let token = contoso_token(&emulator, GRAPH).await;
    let first = api(&emulator, Some(&token), "/v1.0/security/incidents?$top=50").await;
    assert_eq!(values(&first).len(), 7, "cut below the $top asked");
    assert!(first.body["@odata.nextLink"].is_string());
    let (incidents, pages) = follow(&emulator, &token, "/v1.0/security/incidents?$top=50").await;
    assert_eq!(pages, 5, "7 + 7 + 7 + 7 + 2");
    let ids: HashSet<&str> = incidents
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 30);
    emulator.shutdown().await;
}

#[tokio::test]
async fn top_and_skip_limits() {
    let emulator = start_with_data(data(10, 0)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let over = api(&emulator, Some(&token), "/v1.0/security/incidents?$top=51").await;
    assert_graph_error(&over, 400, "");
    assert_eq!(over.body["error"]["details"], serde_json::json!([]));
    let message = over.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("The limit of '50' for Top query has been exceeded"),
        "{message}"
    );

    // $skip above 500 is a 400 on both lists (page by time window instead).
    for path in ["/v1.0/security/incidents", "/v1.0/security/alerts_v2"] {
        let deep = api(
            &emulator,
            Some(&token),
            &format!("{path}?$top=10&$skip=501"),
        )
        .await;
        assert_graph_error(&deep, 400, "BadRequest");
        assert!(
            deep.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("500"),
            "{}",
            deep.text
        );
        let edge = api(
            &emulator,
            Some(&token),
            &format!("{path}?$top=10&$skip=500"),
        )
        .await;
        assert_eq!(edge.status, 200, "{}", edge.text);
    }

    let legacy = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$filter=lastUpdateTime ge 2026-01-01T00:00:00Z",
    )
    .await;
    assert_graph_error(&legacy, 400, "BadRequest");
    assert!(
        legacy.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Could not find a property named 'lastUpdateTime'")
    );

    emulator.shutdown().await;
}

#[tokio::test]
async fn expand_alerts_and_alerts_by_incident_agree() {
    let emulator = start_with_data(data(40, 60)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let page = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$expand=alerts&$top=50&$count=true",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.body["@odata.count"], 40);
    assert!(
        page.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#security/incidents(alerts())")
    );
    let incident = values(&page)
        .iter()
        .find(|i| i["alerts"].as_array().is_some_and(|a| a.len() >= 2))
        .expect("an incident with several alerts")
        .clone();
    let id = incident["id"].as_str().unwrap();
    for alert in incident["alerts"].as_array().unwrap() {
        assert_eq!(alert["incidentId"], id);
        assert!(alert["evidence"].as_array().is_some_and(|e| !e.is_empty()));
        assert!(
            alert["evidence"][0]["@odata.type"]
                .as_str()
                .unwrap()
                .starts_with("#microsoft.graph.security.")
        );
    }
    let by_incident = api(
        &emulator,
        Some(&token),
        &format!("/v1.0/security/alerts_v2?$filter=incidentId eq '{id}'"),
    )
    .await;
    assert_eq!(by_incident.status, 200, "{}", by_incident.text);
    let mut expanded: Vec<&str> = incident["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let mut listed: Vec<&str> = values(&by_incident)
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    expanded.sort();
    listed.sort();
    assert_eq!(expanded, listed);

    // Every alert, by nextLink.
    let (alerts, _) = follow(&emulator, &token, "/v1.0/security/alerts_v2?$top=25").await;
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len());
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a["serviceSource"] == "microsoftDefenderForEndpoint")
            .count(),
        60
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn expand_alerts_fails_on_large_tenants_when_told() {
    let mut config = data(30, 30);
    config.expand_alerts_fails_above = Some(20);
    let emulator = start_with_data(config).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let failed = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$expand=alerts",
    )
    .await;
    assert_graph_error(&failed, 500, "UnknownError");
    let plain = api(&emulator, Some(&token), "/v1.0/security/incidents").await;
    assert_eq!(plain.status, 200);

    // The mode can be lifted (or set) at run time, over HTTP too.
    let lifted = client()
        .put(format!(
            "{}/_emulator/tenants/contoso.com/data/modes",
            emulator.base_url()
        ))
        .json(&serde_json::json!({"expand_alerts_fails_above": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 204);
    let ok = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$expand=alerts",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    emulator
        .handle()
        .set_data_modes(
            CONTOSO,
            DataModes {
                expand_alerts_fails_above: Some(0),
                ..DataModes::default()
            },
        )
        .unwrap();
    let again = api(
        &emulator,
        Some(&token),
        "/v1.0/security/incidents?$expand=alerts",
    )
    .await;
    assert_eq!(again.status, 500);
    emulator.shutdown().await;
}

#[tokio::test]
async fn throttling_has_retry_after() {
    let emulator = start_demo().await;
    emulator
        .handle()
        .set_defender_settings(DefenderSettings {
            rate_limit_scale: 0.02,
            ..DefenderSettings::default()
        })
        .unwrap();
    let token = contoso_token(&emulator, GRAPH).await;
    for _ in 0..3 {
        assert_eq!(
            api(&emulator, Some(&token), "/v1.0/security/incidents")
                .await
                .status,
            200
        );
    }
    let throttled = api(&emulator, Some(&token), "/v1.0/security/incidents").await;
    assert_graph_error(&throttled, 429, "TooManyRequests");
    assert_eq!(throttled.body["error"]["innerError"]["status"], "429");
    let wait: f64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.0..=60.0).contains(&wait), "{wait}");
    emulator.shutdown().await;
}

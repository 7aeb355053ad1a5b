//! M365 Defender `GET /api/incidents`: auth, `$filter`, `$skip` paging, order, `$top`, limits.

mod common;
mod defender_common;

use std::collections::HashSet;

use common::*;
use defender_common::*;
use defender_emulator::{DefenderSettings, GrantConfig, RateLimitMode};
use serde_json::Value;

#[tokio::test]
async fn refuses_calls_without_a_valid_token_or_role() {
    let emulator = start_with_data(data(20, 20)).await;
    let handle = emulator.handle();

    let none = api(&emulator, None, "/api/incidents").await;
    assert_defender_error(&none, 401, "Unauthorized");
    assert_eq!(none.headers["www-authenticate"], "Bearer");

    let token = contoso_token(&emulator, M365D).await;
    let forged = api(&emulator, Some(&tampered(&token)), "/api/incidents").await;
    assert_defender_error(&forged, 401, "Unauthorized");
    let garbage = api(&emulator, Some("not-a-jwt"), "/api/incidents").await;
    assert_defender_error(&garbage, 401, "Unauthorized");

    // A token for Defender for Endpoint is not one for M365 Defender.
    let mde = contoso_token(&emulator, MDE).await;
    assert_defender_error(
        &api(&emulator, Some(&mde), "/api/incidents").await,
        401,
        "Unauthorized",
    );

    // Consented without the incident role: 403.
    handle
        .set_grant(
            CONTOSO,
            &GrantConfig {
                client_id: CLIENT_ID.to_owned(),
                resource: M365D.to_owned(),
                roles: Vec::new(),
            },
        )
        .unwrap();
    let roleless = contoso_token(&emulator, M365D).await;
    let forbidden = api(&emulator, Some(&roleless), "/api/incidents").await;
    assert_defender_error(&forbidden, 403, "Forbidden");
    let message = forbidden.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Incident.Read.All"), "{message}");

    // The earlier token still carries its role and still works.
    let ok = api(&emulator, Some(&token), "/api/incidents").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    emulator.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_are_refused_by_every_api() {
    let emulator = start_with_data(data(5, 5)).await;
    emulator.handle().set_token_lifetime(1).unwrap();
    let m365d = contoso_token(&emulator, M365D).await;
    let mde = contoso_token(&emulator, MDE).await;
    let graph = contoso_token(&emulator, GRAPH).await;
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_defender_error(
        &api(&emulator, Some(&m365d), "/api/incidents").await,
        401,
        "Unauthorized",
    );
    assert_defender_error(
        &api(&emulator, Some(&mde), "/api/alerts").await,
        401,
        "Unauthorized",
    );
    let expired = api(&emulator, Some(&graph), "/v1.0/security/incidents").await;
    assert_graph_error(&expired, 401, "InvalidAuthenticationToken");
    assert!(
        expired.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn skip_paging_lists_every_incident_once_newest_first() {
    let emulator = start_with_data(data(250, 300)).await;
    let token = contoso_token(&emulator, M365D).await;
    let mut seen = Vec::new();
    let mut skip = 0;
    loop {
        let page = api(
            &emulator,
            Some(&token),
            &format!("/api/incidents?$top=100&$skip={skip}"),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(
            page.body.get("@odata.nextLink").is_none(),
            "no nextLink by default"
        );
        assert!(
            page.body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/api/$metadata#Incidents")
        );
        let content_type = page.headers["content-type"].to_str().unwrap();
        assert!(
            content_type.contains("odata.metadata=minimal"),
            "{content_type}"
        );
        let value = values(&page).clone();
        skip += value.len();
        seen.extend(value.iter().cloned());
        if value.len() < 100 {
            break;
        }
    }
    assert_eq!(seen.len(), 250);
    let ids: HashSet<u64> = seen
        .iter()
        .map(|i| i["incidentId"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=250).collect());
    for pair in seen.windows(2) {
        assert!(time(&pair[0]["lastUpdateTime"]) > time(&pair[1]["lastUpdateTime"]));
    }

    // The shape of the sample.
    let first = &seen[0];
    for field in [
        "incidentId",
        "incidentUri",
        "redirectIncidentId",
        "incidentName",
        "createdTime",
        "lastUpdateTime",
        "assignedTo",
        "classification",
        "determination",
        "status",
        "severity",
        "tags",
        "comments",
        "alerts",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    let alerts: Vec<&Value> = seen
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap())
        .collect();
    assert!(alerts.len() >= 300, "every MDE alert is in an incident");
    for alert in &alerts {
        assert!(alert["lastUpdatedTime"].is_string(), "{alert}");
        assert!(alert["incidentId"].is_u64());
        assert!(alert["entities"].is_array());
    }
    let mde_alerts = alerts
        .iter()
        .filter(|a| a["serviceSource"] == "MicrosoftDefenderForEndpoint")
        .count();
    assert_eq!(mde_alerts, 300);

    // A few are merged into the next incident, and keep no alerts.
    let redirected: Vec<&Value> = seen
        .iter()
        .filter(|i| i["status"] == "Redirected")
        .collect();
    assert!(!redirected.is_empty());
    for incident in redirected {
        let id = incident["incidentId"].as_u64().unwrap();
        assert_eq!(incident["redirectIncidentId"].as_u64(), Some(id + 1));
        assert_eq!(incident["alerts"], serde_json::json!([]));
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn time_and_status_filters() {
    let emulator = start_with_data(data(120, 0)).await;
    let token = contoso_token(&emulator, M365D).await;
    let all = values(&api(&emulator, Some(&token), "/api/incidents").await).clone();
    assert_eq!(all.len(), 100, "the default page is the maximum");
    let pivot = all[40]["lastUpdateTime"].as_str().unwrap().to_owned();

    let ge = api(
        &emulator,
        Some(&token),
        &format!("/api/incidents?$filter=lastUpdateTime ge {pivot}"),
    )
    .await;
    assert_eq!(ge.status, 200, "{}", ge.text);
    assert_eq!(values(&ge).len(), 41);
    let gt = api(
        &emulator,
        Some(&token),
        &format!("/api/incidents?$filter=lastUpdateTime gt {pivot}"),
    )
    .await;
    assert_eq!(values(&gt).len(), 40);

    let window = api(
        &emulator,
        Some(&token),
        "/api/incidents?$filter=createdTime ge 2026-01-01T00:10:00Z and createdTime lt 2026-01-01T00:20:00Z",
    )
    .await;
    let created: Vec<u64> = values(&window)
        .iter()
        .map(|i| i["incidentId"].as_u64().unwrap())
        .collect();
    assert_eq!(created, (11..=20).rev().collect::<Vec<_>>());

    let active = api(
        &emulator,
        Some(&token),
        "/api/incidents?$filter=status eq 'Active'",
    )
    .await;
    assert!(!values(&active).is_empty());
    assert!(values(&active).iter().all(|i| i["status"] == "Active"));

    let quoted = api(
        &emulator,
        Some(&token),
        "/api/incidents?$filter=lastUpdateTime ge '2026-01-01T00:00:00Z'",
    )
    .await;
    assert_defender_error(&quoted, 400, "ODataError");
    emulator.shutdown().await;
}

#[tokio::test]
async fn top_above_100_is_refused() {
    let emulator = start_with_data(data(10, 0)).await;
    let token = contoso_token(&emulator, M365D).await;
    let answer = api(&emulator, Some(&token), "/api/incidents?$top=101").await;
    assert_defender_error(&answer, 400, "ODataError");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("The limit of '100' for Top query has been exceeded"),
        "{message}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_51st_call_in_a_minute_is_throttled() {
    let emulator = start_demo().await;
    let handle = emulator.handle();
    let token = contoso_token(&emulator, M365D).await;
    for _ in 0..50 {
        let answer = api(&emulator, Some(&token), "/api/incidents?$top=1").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let throttled = api(&emulator, Some(&token), "/api/incidents?$top=1").await;
    assert_defender_error(&throttled, 429, "TooManyRequests");
    let header: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&header), "{header}");
    let message = throttled.body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!("Rate limit is exceeded. Try again in {header} seconds.")
    );

    // Another tenant has its own budget.
    let fabrikam = access_token(&emulator, FABRIKAM, M365D).await;
    assert_eq!(
        api(&emulator, Some(&fabrikam), "/api/incidents")
            .await
            .status,
        200
    );

    // The wait only in the message.
    handle
        .set_defender_settings(DefenderSettings {
            m365d_retry_after_in_body_only: true,
            ..DefenderSettings::default()
        })
        .unwrap();
    let body_only = api(&emulator, Some(&token), "/api/incidents?$top=1").await;
    assert_eq!(body_only.status, 429);
    assert!(body_only.headers.get("retry-after").is_none());
    assert!(
        body_only.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Try again in ")
    );

    // Off, or reset, lets calls through again.
    handle
        .set_defender_settings(DefenderSettings {
            rate_limits: RateLimitMode::Off,
            ..DefenderSettings::default()
        })
        .unwrap();
    assert_eq!(
        api(&emulator, Some(&token), "/api/incidents").await.status,
        200
    );
    handle
        .set_defender_settings(DefenderSettings::default())
        .unwrap();
    assert_eq!(
        api(&emulator, Some(&token), "/api/incidents").await.status,
        429
    );
    handle.reset_rate_limits();
    assert_eq!(
        api(&emulator, Some(&token), "/api/incidents").await.status,
        200
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn next_link_only_when_the_setting_says_so() {
    let emulator = start_with_data(data(130, 0)).await;
    let control = client()
        .put(format!("{}/_emulator/settings", emulator.base_url()))
        .json(&serde_json::json!({"m365d_next_link": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(control.status(), 204);
    let token = contoso_token(&emulator, M365D).await;
    let mut url = format!(
        "{}/api/incidents?$top=50&$filter=lastUpdateTime ge 2026-01-01T00:00:00Z",
        emulator.base_url()
    );
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = get_url(&url, Some(&token)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        pages += 1;
        ids.extend(
            values(&page)
                .iter()
                .map(|i| i["incidentId"].as_u64().unwrap()),
        );
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, (1..=130).rev().collect::<Vec<_>>());
    emulator.shutdown().await;
}

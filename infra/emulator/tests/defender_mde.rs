//! Defender for Endpoint `GET /api/alerts`: auth, `$skip` paging, `$expand=evidence`, `$top`,
//! filters, limits.

mod common;
mod defender_common;

use std::collections::HashSet;

use common::*;
use defender_common::*;

#[tokio::test]
async fn refuses_calls_without_a_valid_token_or_role() {
    let emulator = start_with_data(data(10, 10)).await;
    assert_defender_error(
        &api(&emulator, None, "/api/alerts").await,
        401,
        "Unauthorized",
    );
    let token = contoso_token(&emulator, MDE).await;
    assert_defender_error(
        &api(&emulator, Some(&tampered(&token)), "/api/alerts").await,
        401,
        "Unauthorized",
    );
    let graph = contoso_token(&emulator, GRAPH).await;
    assert_defender_error(
        &api(&emulator, Some(&graph), "/api/alerts").await,
        401,
        "Unauthorized",
    );

    // Fabrikam's MDE token carries no roles.
    let fabrikam = access_token(&emulator, FABRIKAM, MDE).await;
    let forbidden = api(&emulator, Some(&fabrikam), "/api/alerts").await;
    assert_defender_error(&forbidden, 403, "Forbidden");
    assert_eq!(
        forbidden.body["error"]["message"],
        "The application does not have any of the required application permissions (Alert.ReadWrite.All, Alert.Read.All) to access the resource."
    );

    // The old audience name of the same API is accepted, from a v1 token too.
    let alias = access_token_v1(&emulator, CONTOSO, MDE_ALIAS).await;
    let ok = api(&emulator, Some(&alias), "/api/alerts").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    emulator.shutdown().await;
}

#[tokio::test]
async fn skip_paging_lists_every_alert_once_newest_first() {
    let emulator = start_with_data(data(250, 300)).await;
    let token = contoso_token(&emulator, MDE).await;
    let mut alerts = Vec::new();
    let mut skip = 0;
    loop {
        let page = api(
            &emulator,
            Some(&token),
            &format!("/api/alerts?$top=100&$skip={skip}&$expand=evidence"),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(page.body.get("@odata.nextLink").is_none());
        assert!(
            page.body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/api/$metadata#Alerts")
        );
        let value = values(&page).clone();
        skip += value.len();
        alerts.extend(value.iter().cloned());
        if value.len() < 100 {
            break;
        }
    }
    assert_eq!(alerts.len(), 300);
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 300);
    for pair in alerts.windows(2) {
        assert!(time(&pair[0]["lastUpdateTime"]) >= time(&pair[1]["lastUpdateTime"]));
    }
    for alert in &alerts {
        let id = alert["id"].as_str().unwrap();
        let (ticks, number) = id.strip_prefix("da").unwrap().split_once('_').unwrap();
        assert_eq!(ticks.len(), 18, "{id}");
        assert!(number.parse::<i32>().is_ok(), "{id}");
        assert!(alert["incidentId"].is_u64());
        assert_eq!(alert["aadTenantId"], CONTOSO);
        assert_eq!(alert["machineId"].as_str().unwrap().len(), 40);
        let evidence = alert["evidence"].as_array().unwrap();
        assert!(!evidence.is_empty());
        for item in evidence {
            assert!(item["entityType"].is_string());
            assert!(item.get("sha1").is_some() && item.get("detectionStatus").is_some());
        }
    }

    // Without $expand there is no evidence.
    let plain = api(&emulator, Some(&token), "/api/alerts?$top=5").await;
    assert!(values(&plain).iter().all(|a| a.get("evidence").is_none()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn filters_order_and_top() {
    let emulator = start_with_data(data(50, 80)).await;
    let token = contoso_token(&emulator, MDE).await;
    let over = api(&emulator, Some(&token), "/api/alerts?$top=10001").await;
    assert_defender_error(&over, 400, "ODataError");
    assert!(
        over.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The limit of '10000' for Top query has been exceeded")
    );

    let ascending = api(
        &emulator,
        Some(&token),
        "/api/alerts?$orderby=alertCreationTime asc&$filter=alertCreationTime gt 2018-11-22",
    )
    .await;
    let list = values(&ascending);
    assert_eq!(list.len(), 80);
    for pair in list.windows(2) {
        assert!(time(&pair[0]["alertCreationTime"]) <= time(&pair[1]["alertCreationTime"]));
    }

    let incident = list[10]["incidentId"].as_u64().unwrap();
    let of_incident = api(
        &emulator,
        Some(&token),
        &format!("/api/alerts?$filter=incidentId eq {incident}"),
    )
    .await;
    assert!(!values(&of_incident).is_empty());
    assert!(
        values(&of_incident)
            .iter()
            .all(|a| a["incidentId"] == incident)
    );

    let recent = api(
        &emulator,
        Some(&token),
        "/api/alerts?$filter=lastUpdateTime ge 2026-01-01T00:40:00Z and lastUpdateTime lt 2026-01-01T00:45:00Z",
    )
    .await;
    for alert in values(&recent) {
        let updated = time(&alert["lastUpdateTime"]);
        assert!(updated >= time(&serde_json::json!("2026-01-01T00:40:00Z")));
        assert!(updated < time(&serde_json::json!("2026-01-01T00:45:00Z")));
    }
    assert!(!values(&recent).is_empty());
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_101st_call_in_a_minute_is_throttled() {
    let emulator = start_demo().await;
    let token = contoso_token(&emulator, MDE).await;
    for _ in 0..100 {
        assert_eq!(
            api(&emulator, Some(&token), "/api/alerts?$top=1")
                .await
                .status,
            200
        );
    }
    let throttled = api(&emulator, Some(&token), "/api/alerts?$top=1").await;
    assert_defender_error(&throttled, 429, "TooManyRequests");
    let wait: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    emulator.shutdown().await;
}

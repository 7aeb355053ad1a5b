//! Graph `GET /v1.0/security/alerts_v2` as a data API: every product's alerts linked to the
//! incidents, `providerAlertId` naming the Defender for Endpoint alert, evolvable enums behind
//! `Prefer`, `$top` clamped at 1,000, large tenants paged by time window.

mod common;
mod defender_common;

use std::collections::{HashMap, HashSet};

use common::*;
use defender_common::*;
use defender_emulator::{DEFAULT_PARTIAL_WARNING, DataConfig, Fault, FaultMatch, Retirement};
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

fn odata_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn utc(value: &Value) -> chrono::DateTime<chrono::Utc> {
    time(value).with_timezone(&chrono::Utc)
}

/// Reads every alert whose last update is in `[lo, hi)` with `$top=1000` pages and no
/// nextLink: a full page splits the window in two.
async fn read_by_windows(
    emulator: &defender_emulator::RunningEmulator,
    token: &str,
    lo: chrono::DateTime<chrono::Utc>,
    hi: chrono::DateTime<chrono::Utc>,
) -> (Vec<Value>, usize) {
    let mut pending = vec![(lo, hi)];
    let mut records = Vec::new();
    let mut calls = 0;
    while let Some((lo, hi)) = pending.pop() {
        let query = format!(
            "{ALERTS}?$top=1000&$filter=lastUpdateDateTime ge {} and lastUpdateDateTime lt {}",
            odata_time(lo),
            odata_time(hi)
        )
        .replace(' ', "%20");
        let page = api(emulator, Some(token), &query).await;
        calls += 1;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(page.body.get("@odata.nextLink").is_none(), "{}", page.text);
        let found = values(&page);
        if found.len() == 1000 {
            let middle = lo + (hi - lo) / 2;
            assert!(middle > lo && middle < hi, "a window that cannot be split");
            pending.push((lo, middle));
            pending.push((middle, hi));
        } else {
            records.extend(found.iter().cloned());
        }
    }
    (records, calls)
}

#[tokio::test]
async fn ten_thousand_alerts_without_next_links_page_by_time_window() {
    let mut config = with_graph_alerts(2_000, 6_000, 4_000);
    config.omit_alerts_v2_next_link = true;
    let emulator = start_with_data(config).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let started = std::time::Instant::now();

    let first = api(&emulator, Some(&token), &format!("{ALERTS}?$count=true")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let total = first.body["@odata.count"].as_u64().unwrap() as usize;
    assert!(total > 10_000, "{total}");
    assert_eq!(values(&first).len(), 1000, "a full page…");
    assert!(
        first.body.get("@odata.nextLink").is_none(),
        "…and no nextLink although {total} records exist"
    );
    let newest = utc(&values(&first)[0]["lastUpdateDateTime"]);
    let oldest_page = api(
        &emulator,
        Some(&token),
        &format!("{ALERTS}?$orderby=lastUpdateDateTime%20asc&$top=1"),
    )
    .await;
    let oldest = utc(&values(&oldest_page)[0]["lastUpdateDateTime"]);

    // Windows of about 800 records each (the data are spread evenly in time); a full page
    // would split its window.
    let end = newest + chrono::Duration::milliseconds(1);
    let parts = (total / 800 + 1) as i32;
    let mut records = Vec::new();
    let mut calls = 0;
    for part in 0..parts {
        let lo = oldest + (end - oldest) * part / parts;
        let hi = oldest + (end - oldest) * (part + 1) / parts;
        let (found, used) = read_by_windows(&emulator, &token, lo, hi).await;
        records.extend(found);
        calls += used;
    }
    let ids: HashSet<&str> = records.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "no record twice");
    assert_eq!(records.len(), total, "every record once");
    let calls_counted = emulator.handle().data_api_calls(CONTOSO).graph_alerts;
    assert_eq!(calls_counted.requests as usize, calls + 2);
    assert_eq!(calls_counted.ok, calls_counted.requests);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );

    // The mode is a switch: off again, the nextLink is back.
    let handle = emulator.handle();
    let mut modes = handle.data_modes(CONTOSO).unwrap();
    assert!(modes.omit_alerts_v2_next_link);
    modes.omit_alerts_v2_next_link = false;
    handle.set_data_modes(CONTOSO, modes).unwrap();
    let linked = api(&emulator, Some(&token), ALERTS).await;
    assert!(linked.body["@odata.nextLink"].is_string());
    // Incidents are never affected.
    let over_http = client()
        .put(format!(
            "{}/_emulator/tenants/contoso.com/data/modes",
            emulator.base_url()
        ))
        .json(&serde_json::json!({"omit_alerts_v2_next_link": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(over_http.status(), 204);
    let incidents = api(&emulator, Some(&token), "/v1.0/security/incidents").await;
    assert!(incidents.body["@odata.nextLink"].is_string());
    let alerts = api(&emulator, Some(&token), ALERTS).await;
    assert!(alerts.body.get("@odata.nextLink").is_none());
    emulator.shutdown().await;
}

#[tokio::test]
async fn alerts_move_while_a_client_pages() {
    let mut config = with_graph_alerts(60, 100, 100);
    config.touch_while_paging = Some(defender_emulator::TouchWhilePaging {
        every_pages: 1,
        count: 3,
    });
    let emulator = start_with_data(config).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let read_all = || async {
        let page = api(&emulator, Some(&token), &format!("{ALERTS}?$top=1000")).await;
        assert_eq!(page.status, 200, "{}", page.text);
        values(&page)
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_owned(),
                    utc(&a["lastUpdateDateTime"]),
                )
            })
            .collect::<Vec<_>>()
    };
    // Serving a page touches 3 incidents and all their alerts.
    let before: HashMap<String, chrono::DateTime<chrono::Utc>> =
        read_all().await.into_iter().collect();
    let after = read_all().await;
    assert_eq!(before.len(), after.len());
    let moved: Vec<&(String, chrono::DateTime<chrono::Utc>)> =
        after.iter().filter(|(id, at)| before[id] < *at).collect();
    assert!(!moved.is_empty(), "some alerts' lastUpdateDateTime moved");
    // They are now the newest, at the head of the list.
    for (position, (id, _)) in after.iter().take(moved.len()).enumerate() {
        assert!(moved.iter().any(|(m, _)| m == id), "{position}: {id}");
    }

    // Graph-only alerts can be touched directly too, and become the newest.
    let touched = emulator.handle().touch_graph_alerts(CONTOSO, 2).unwrap();
    let newest = api(&emulator, Some(&token), &format!("{ALERTS}?$top=2")).await;
    let newest_ids: HashSet<&str> = values(&newest)
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let touched_ids: HashSet<&str> = touched.iter().map(String::as_str).collect();
    assert_eq!(newest_ids, touched_ids);
    emulator.shutdown().await;
}

#[tokio::test]
async fn injected_partial_content_carries_a_warning() {
    let emulator = start_with_data(with_graph_alerts(30, 40, 40)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let handle = emulator.handle();
    handle
        .push_fault(
            Fault::partial(
                FaultMatch::GraphAlerts,
                "Microsoft/MicrosoftDefenderForIdentity/503/1200",
                1,
            )
            .for_tenant("contoso.com"),
        )
        .unwrap();
    // The incidents list is not matched by a graph_alerts fault.
    let incidents = api(&emulator, Some(&token), "/v1.0/security/incidents?$top=10").await;
    assert_eq!(incidents.status, 200);
    let partial = api(&emulator, Some(&token), &format!("{ALERTS}?$top=20")).await;
    assert_eq!(partial.status.as_u16(), 206, "{}", partial.text);
    assert_eq!(
        partial.headers["warning"],
        "199 - \"Microsoft/MicrosoftDefenderForIdentity/503/1200\""
    );
    assert_eq!(values(&partial).len(), 10, "half of the page");
    assert!(partial.headers.contains_key("request-id"));
    let full = api(&emulator, Some(&token), &format!("{ALERTS}?$top=20")).await;
    assert_eq!(full.status, 200);
    assert!(full.headers.get("warning").is_none());
    assert_eq!(values(&full).len(), 20);
    assert_eq!(values(&partial)[..], values(&full)[..10]);

    // Over HTTP, on both Graph lists, with the default warning.
    let posted = client()
        .post(format!("{}/_emulator/faults", emulator.base_url()))
        .json(&serde_json::json!({"match": "graph", "status": 206, "count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    for path in ["/v1.0/security/incidents", ALERTS] {
        let page = api(&emulator, Some(&token), path).await;
        assert_eq!(page.status.as_u16(), 206, "{path}");
        assert_eq!(
            page.headers["warning"],
            format!("199 - \"{DEFAULT_PARTIAL_WARNING}\"")
        );
    }
    let calls = handle.data_api_calls(CONTOSO);
    assert_eq!((calls.graph_alerts.requests, calls.graph_alerts.ok), (3, 3));
    // A 206 needs a data route.
    assert!(
        handle
            .push_fault(Fault::status(FaultMatch::Token, 206, 1))
            .is_err()
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn injected_throttling_has_graphs_body_and_retry_after() {
    let emulator = start_with_data(with_graph_alerts(10, 10, 10)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    let handle = emulator.handle();
    handle
        .push_fault(Fault::throttle(FaultMatch::GraphAlerts, 17, 2).for_tenant(CONTOSO))
        .unwrap();
    for _ in 0..2 {
        let throttled = api(&emulator, Some(&token), ALERTS).await;
        assert_graph_error(&throttled, 429, "TooManyRequests");
        assert_eq!(throttled.headers["retry-after"], "17");
        let inner = &throttled.body["error"]["innerError"];
        assert_eq!(inner["code"], "429");
        assert!(inner["date"].is_string() && inner["request-id"].is_string());
    }
    assert_eq!(api(&emulator, Some(&token), ALERTS).await.status, 200);
    let calls = handle.data_api_calls(CONTOSO).graph_alerts;
    assert_eq!((calls.requests, calls.throttled, calls.ok), (3, 2, 1));
    emulator.shutdown().await;
}

#[tokio::test]
async fn graph_allows_150_calls_a_minute_per_app_and_tenant() {
    let emulator = start_with_data(with_graph_alerts(5, 5, 5)).await;
    let token = contoso_token(&emulator, GRAPH).await;
    // Incidents and alerts share Graph's security budget.
    for n in 0..150 {
        let path = if n % 2 == 0 {
            ALERTS
        } else {
            "/v1.0/security/incidents"
        };
        let page = api(&emulator, Some(&token), path).await;
        assert_eq!(page.status, 200, "call {n}: {}", page.text);
    }
    let over = api(&emulator, Some(&token), ALERTS).await;
    assert_graph_error(&over, 429, "TooManyRequests");
    let wait: u64 = over.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn retired_legacy_apis_answer_gone_and_graph_keeps_working() {
    let emulator = start_with_data(with_graph_alerts(20, 20, 20)).await;
    let handle = emulator.handle();
    let m365d = contoso_token(&emulator, M365D).await;
    let mde = contoso_token(&emulator, MDE).await;
    let graph = contoso_token(&emulator, GRAPH).await;
    assert_eq!(
        api(&emulator, Some(&m365d), "/api/incidents").await.status,
        200
    );

    handle.set_retirement(Retirement::Gone);
    for (token, path) in [(&m365d, "/api/incidents"), (&mde, "/api/alerts")] {
        let gone = api(&emulator, Some(token), path).await;
        assert_defender_error(&gone, 410, "Gone");
        let message = gone.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("retired"), "{message}");
        assert!(message.contains("MC1220762"), "{message}");
        assert!(
            message.contains("Microsoft Graph security API"),
            "{message}"
        );
        // Without a token too, and for updates.
        assert_eq!(api(&emulator, None, path).await.status.as_u16(), 410);
        let patched = client()
            .patch(format!("{}{path}/1", emulator.base_url()))
            .bearer_auth(token)
            .json(&serde_json::json!({"status": "Resolved"}))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status().as_u16(), 410);
    }
    for path in ["/v1.0/security/incidents", ALERTS] {
        assert_eq!(
            api(&emulator, Some(&graph), path).await.status,
            200,
            "{path}"
        );
    }
    let calls = handle.data_api_calls(CONTOSO);
    assert_eq!(
        calls.m365d_incidents.failed, 1,
        "the token-less call names no tenant"
    );

    // The second shape: 404 (or 400) whose message names the retirement.
    handle.set_retirement(Retirement::NotFound);
    let not_found = api(&emulator, Some(&mde), "/api/alerts").await;
    assert_defender_error(&not_found, 404, "NotFound");
    assert!(not_found.text.contains("retired"));
    let switched = client()
        .put(format!("{}/_emulator/settings", emulator.base_url()))
        .json(&serde_json::json!({"retirement": "bad_request"}))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 204);
    let bad = api(&emulator, Some(&m365d), "/api/incidents").await;
    assert_defender_error(&bad, 400, "BadRequest");
    assert!(bad.text.contains("MC1220762"));
    handle.set_retirement(Retirement::Off);
    assert_eq!(
        api(&emulator, Some(&m365d), "/api/incidents").await.status,
        200
    );
    emulator.shutdown().await;

    // In the scenario.
    let mut scenario = scenario(data(3, 3));
    scenario.retirement = Retirement::Gone;
    let json = serde_json::to_string(&scenario).unwrap();
    assert!(json.contains(r#""retirement":"gone""#));
    let retired = start_with(defender_emulator::Scenario::from_json(&json).unwrap()).await;
    let token = contoso_token(&retired, M365D).await;
    assert_eq!(
        api(&retired, Some(&token), "/api/incidents")
            .await
            .status
            .as_u16(),
        410
    );
    assert_eq!(
        retired.handle().defender_settings().retirement,
        Retirement::Gone
    );
    retired.shutdown().await;
}

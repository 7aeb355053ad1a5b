//! The data side shared by the three APIs: touching records, changing data while clients page,
//! a 100,000-incident tenant, call counters, injected faults, control calls.

mod common;
mod defender_common;

use std::collections::HashSet;

use common::*;
use defender_common::*;
use defender_emulator::{
    DataModes, DefenderSettings, Fault, FaultMatch, RateLimitMode, Scenario, TouchWhilePaging,
};
use serde_json::{Value, json};

async fn control(
    emulator: &defender_emulator::RunningEmulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = client().request(method, format!("{}/_emulator/{path}", emulator.base_url()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    answer(request.send().await.expect("control request")).await
}

fn incident_ids(answer: &Answer) -> Vec<u64> {
    values(answer)
        .iter()
        .map(|i| i["incidentId"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn touched_incidents_move_to_the_newest_position() {
    let emulator = start_with_data(data(200, 250)).await;
    let m365d = contoso_token(&emulator, M365D).await;
    let graph = contoso_token(&emulator, GRAPH).await;
    let before = api(&emulator, Some(&m365d), "/api/incidents?$top=5").await;
    let newest_before = time(&values(&before)[0]["lastUpdateTime"]);

    let touched = control(
        &emulator,
        reqwest::Method::POST,
        "tenants/contoso.onmicrosoft.com/touch",
        Some(json!({"count": 3})),
    )
    .await;
    assert_eq!(touched.status, 200, "{}", touched.text);
    let touched: Vec<u64> = touched.body["touched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect();
    assert_eq!(touched.len(), 3);

    let after = api(&emulator, Some(&m365d), "/api/incidents?$top=5").await;
    let mut expected = touched.clone();
    expected.reverse();
    assert_eq!(incident_ids(&after)[..3], expected[..]);
    for incident in &values(&after)[..3] {
        let updated = time(&incident["lastUpdateTime"]);
        assert!(updated > newest_before);
        for alert in incident["alerts"].as_array().unwrap() {
            assert_eq!(time(&alert["lastUpdatedTime"]), updated);
        }
    }
    // A watermark client sees exactly the touched ones.
    let since = api(
        &emulator,
        Some(&m365d),
        &format!(
            "/api/incidents?$filter=lastUpdateTime gt {}",
            before.body["value"][0]["lastUpdateTime"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(incident_ids(&since), expected);

    // Graph shows the same incidents, ids as strings.
    let graph_page = api(&emulator, Some(&graph), "/v1.0/security/incidents?$top=3").await;
    let graph_ids: Vec<String> = values(&graph_page)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        graph_ids,
        expected.iter().map(u64::to_string).collect::<Vec<_>>()
    );

    // MDE alerts can be touched too; they and their incident become the newest.
    let alerts = emulator.handle().touch_mde_alerts(CONTOSO, 1).unwrap();
    let mde = contoso_token(&emulator, MDE).await;
    let newest = api(&emulator, Some(&mde), "/api/alerts?$top=1").await;
    assert_eq!(values(&newest)[0]["id"], alerts[0].as_str());
    let incident = values(&newest)[0]["incidentId"].as_u64().unwrap();
    let first = api(&emulator, Some(&m365d), "/api/incidents?$top=1").await;
    assert_eq!(incident_ids(&first), [incident]);
    emulator.shutdown().await;
}

#[tokio::test]
async fn data_changes_while_a_client_pages() {
    let mut config = data(300, 0);
    config.touch_while_paging = Some(TouchWhilePaging {
        every_pages: 1,
        count: 2,
    });
    let emulator = start_with_data(config).await;
    let token = contoso_token(&emulator, M365D).await;
    let mut seen = Vec::new();
    let mut newest_seen = None;
    let mut skip = 0;
    loop {
        let page = api(
            &emulator,
            Some(&token),
            &format!("/api/incidents?$top=100&$skip={skip}"),
        )
        .await;
        assert_eq!(page.status, 200);
        if skip == 0 {
            newest_seen = Some(
                values(&page)[0]["lastUpdateTime"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let ids = incident_ids(&page);
        skip += ids.len();
        let done = ids.len() < 100;
        seen.extend(ids);
        if done {
            break;
        }
    }
    // Touched records moved to the front behind the client's back: $skip paging sees some twice
    // or misses them, and the next poll by time finds them.
    let (config, touched) = emulator.handle().tenant_data(CONTOSO).unwrap();
    assert!(touched >= 6, "{touched}");
    assert_eq!(config.incidents, 300);
    let distinct: HashSet<u64> = seen.iter().copied().collect();
    assert!(seen.len() == 300, "{}", seen.len());
    assert!(distinct.len() < 300, "shifted records were seen twice");
    let since = api(
        &emulator,
        Some(&token),
        &format!(
            "/api/incidents?$filter=lastUpdateTime gt {}",
            newest_seen.unwrap()
        ),
    )
    .await;
    assert!(incident_ids(&since).len() >= 6);

    // The mode can be turned off.
    emulator
        .handle()
        .set_data_modes(CONTOSO, DataModes::default())
        .unwrap();
    let (_, before) = emulator.handle().tenant_data(CONTOSO).unwrap();
    api(&emulator, Some(&token), "/api/incidents").await;
    assert_eq!(emulator.handle().tenant_data(CONTOSO).unwrap().1, before);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_tenant_of_100000_incidents_answers_pages() {
    let emulator = start_with_data(data(100_000, 100_000)).await;
    emulator
        .handle()
        .set_defender_settings(DefenderSettings {
            rate_limits: RateLimitMode::Off,
            ..DefenderSettings::default()
        })
        .unwrap();
    let m365d = contoso_token(&emulator, M365D).await;
    let first = api(&emulator, Some(&m365d), "/api/incidents?$top=100").await;
    assert_eq!(incident_ids(&first)[0], 100_000);
    let deep = api(
        &emulator,
        Some(&m365d),
        "/api/incidents?$top=100&$skip=99950",
    )
    .await;
    assert_eq!(incident_ids(&deep).len(), 50);
    assert_eq!(*incident_ids(&deep).last().unwrap(), 1);
    let window = api(
        &emulator,
        Some(&m365d),
        "/api/incidents?$filter=lastUpdateTime ge 2026-02-01T00:00:00Z and lastUpdateTime lt 2026-02-01T01:00:00Z",
    )
    .await;
    assert_eq!(incident_ids(&window).len(), 60);

    let graph = contoso_token(&emulator, GRAPH).await;
    let page = api(
        &emulator,
        Some(&graph),
        "/v1.0/security/incidents?$expand=alerts",
    )
    .await;
    assert_eq!(values(&page).len(), 50);
    assert!(page.body["@odata.nextLink"].is_string());
    let mde = contoso_token(&emulator, MDE).await;
    let alerts = api(
        &emulator,
        Some(&mde),
        "/api/alerts?$top=1000&$expand=evidence",
    )
    .await;
    assert_eq!(values(&alerts).len(), 1000);
    emulator.handle().touch_incidents(CONTOSO, 1000).unwrap();
    let after = api(&emulator, Some(&m365d), "/api/incidents?$top=100&$skip=900").await;
    assert_eq!(incident_ids(&after).len(), 100);
    emulator.shutdown().await;
}

#[tokio::test]
async fn calls_are_counted_per_tenant_and_api() {
    let emulator = start_with_data(data(5, 5)).await;
    let handle = emulator.handle();
    let m365d = contoso_token(&emulator, M365D).await;
    let mde = contoso_token(&emulator, MDE).await;
    api(&emulator, Some(&m365d), "/api/incidents").await;
    api(&emulator, Some(&m365d), "/api/incidents?$top=500").await;
    api(&emulator, Some(&mde), "/api/alerts").await;
    api(&emulator, Some(&mde), "/api/incidents").await;
    api(&emulator, None, "/api/incidents").await;

    let calls = handle.data_api_calls("contoso.com");
    assert_eq!(calls.m365d_incidents.requests, 3);
    assert_eq!(calls.m365d_incidents.ok, 1);
    assert_eq!(calls.m365d_incidents.failed, 2);
    assert_eq!(calls.mde_alerts.ok, 1);
    assert_eq!(calls.graph_incidents.requests, 0);
    assert_eq!(calls.total(), 4);

    let over_http = control(
        &emulator,
        reqwest::Method::GET,
        "data/calls?tenant=contoso.com",
        None,
    )
    .await;
    assert_eq!(over_http.status, 200, "{}", over_http.text);
    assert_eq!(over_http.body["tenant_id"], CONTOSO);
    assert_eq!(over_http.body["calls"]["m365d_incidents"]["requests"], 3);
    let all = control(&emulator, reqwest::Method::GET, "data/calls", None).await;
    assert_eq!(all.body["tenants"][CONTOSO]["mde_alerts"]["ok"], 1);

    assert_eq!(
        control(&emulator, reqwest::Method::DELETE, "data/calls", None)
            .await
            .status,
        204
    );
    assert_eq!(handle.data_api_calls(CONTOSO).total(), 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_apply_to_the_data_apis_in_their_shape() {
    let emulator = start_with_data(data(5, 5)).await;
    let handle = emulator.handle();
    let m365d = contoso_token(&emulator, M365D).await;
    let graph = contoso_token(&emulator, GRAPH).await;

    // Token faults leave the data APIs alone.
    handle
        .push_fault(Fault::status(FaultMatch::Token, 500, 1))
        .unwrap();
    assert_eq!(
        api(&emulator, Some(&m365d), "/api/incidents").await.status,
        200
    );
    handle.clear_faults();

    // "data" faults match the token's tenant, named by domain.
    let mut fault = Fault::status(FaultMatch::Data, 503, 1);
    fault.tenant = Some("fabrikam.onmicrosoft.com".to_owned());
    handle.push_fault(fault).unwrap();
    let mut fault = Fault::status(FaultMatch::Data, 429, 2);
    fault.tenant = Some("contoso.com".to_owned());
    fault.retry_after = Some(7);
    handle.push_fault(fault).unwrap();

    let throttled = api(&emulator, Some(&m365d), "/api/incidents").await;
    assert_defender_error(&throttled, 429, "TooManyRequests");
    assert_eq!(throttled.headers["retry-after"], "7");
    assert_eq!(
        throttled.body["error"]["message"],
        "Rate limit is exceeded. Try again in 7 seconds."
    );
    let graph_throttled = api(&emulator, Some(&graph), "/v1.0/security/incidents").await;
    assert_graph_error(&graph_throttled, 429, "TooManyRequests");
    assert_eq!(graph_throttled.headers["retry-after"], "7");
    assert_eq!(
        api(&emulator, Some(&m365d), "/api/incidents").await.status,
        200
    );

    let fabrikam = access_token(&emulator, FABRIKAM, M365D).await;
    let unavailable = api(&emulator, Some(&fabrikam), "/api/incidents").await;
    assert_defender_error(&unavailable, 503, "ServiceUnavailable");

    // "any" faults reach the data APIs too; the call counters see faulted calls.
    handle
        .push_fault(Fault::status(FaultMatch::Any, 500, 1))
        .unwrap();
    let failed = api(&emulator, Some(&m365d), "/api/incidents").await;
    assert_defender_error(&failed, 500, "InternalServerError");
    let calls = handle.data_api_calls(CONTOSO);
    assert_eq!(calls.m365d_incidents.throttled, 1);
    assert_eq!(calls.m365d_incidents.failed, 1);
    assert_eq!(calls.graph_incidents.throttled, 1);

    let queued = control(
        &emulator,
        reqwest::Method::POST,
        "faults",
        Some(json!({"match": "data", "status": 500})),
    )
    .await;
    assert_eq!(queued.status, 200, "{}", queued.text);
    assert_eq!(queued.body["pending"][0]["match"], "data");
    emulator.shutdown().await;
}

#[tokio::test]
async fn tenant_data_comes_from_the_scenario_and_the_control_api() {
    let scenario = Scenario::from_json(
        r#"{"apps":[{"client_id":"11111111-1111-4111-8111-111111111111",
                     "secrets":[{"value":"demo-secret-not-for-production"}]}],
            "tenants":[{"id":"22222222-2222-4222-8222-222222222222","domains":["contoso.com"],
                        "grants":[{"client_id":"11111111-1111-4111-8111-111111111111",
                                   "resource":"https://api.security.microsoft.com",
                                   "roles":["Incident.Read.All"]}],
                        "data":{"incidents":7,"seed":3,"first_incident_id":1000}}]}"#,
    )
    .unwrap();
    assert!(
        Scenario::from_json(
            r#"{"tenants":[{"id":"22222222-2222-4222-8222-222222222222","data":{"incident":1}}]}"#
        )
        .is_err()
    );
    let emulator = start_with(scenario).await;
    let token = contoso_token(&emulator, M365D).await;
    let page = api(&emulator, Some(&token), "/api/incidents").await;
    assert_eq!(incident_ids(&page), (1000..1007).rev().collect::<Vec<_>>());
    // Without a start the newest record is about now.
    let newest = time(&values(&page)[0]["lastUpdateTime"]);
    let age = chrono::Utc::now().signed_duration_since(newest);
    assert!(age.num_seconds() >= 0 && age.num_seconds() < 120, "{age}");

    // Replaced over HTTP.
    let replaced = control(
        &emulator,
        reqwest::Method::PUT,
        "tenants/contoso.com/data",
        Some(json!({"incidents": 3, "start": "2026-03-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(replaced.status, 204, "{}", replaced.text);
    let page = api(&emulator, Some(&token), "/api/incidents").await;
    assert_eq!(incident_ids(&page), [3, 2, 1]);
    let shown = control(
        &emulator,
        reqwest::Method::GET,
        "tenants/contoso.com/data",
        None,
    )
    .await;
    assert_eq!(shown.body["data"]["incidents"], 3);
    assert_eq!(shown.body["data"]["start"], "2026-03-01T00:00:00Z");
    let bad = control(
        &emulator,
        reqwest::Method::PUT,
        "tenants/contoso.com/data",
        Some(json!({"spacing_seconds": 0})),
    )
    .await;
    assert_eq!(bad.status, 400);
    let unknown = control(
        &emulator,
        reqwest::Method::POST,
        "tenants/unknown.example/touch",
        Some(json!({"count": 1})),
    )
    .await;
    assert_eq!(unknown.status, 404);

    // A tenant added at run time brings its data.
    let added = control(
        &emulator,
        reqwest::Method::POST,
        "tenants",
        Some(json!({
            "id": "66666666-6666-4666-8666-666666666666",
            "domains": ["tailspin.example"],
            "grants": [{"client_id": CLIENT_ID, "resource": M365D, "roles": ["Incident.Read.All"]}],
            "data": {"incidents": 4}
        })),
    )
    .await;
    assert_eq!(added.status, 204, "{}", added.text);
    let tailspin = access_token(&emulator, "tailspin.example", M365D).await;
    let page = api(&emulator, Some(&tailspin), "/api/incidents").await;
    assert_eq!(incident_ids(&page), [4, 3, 2, 1]);

    // Settings over HTTP, read back.
    let set = control(
        &emulator,
        reqwest::Method::PUT,
        "settings",
        Some(json!({"rate_limits": "off", "rate_limit_scale": 2.5})),
    )
    .await;
    assert_eq!(set.status, 204, "{}", set.text);
    let settings = control(&emulator, reqwest::Method::GET, "data/settings", None).await;
    assert_eq!(settings.body["rate_limits"], "off");
    assert_eq!(settings.body["rate_limit_scale"], 2.5);
    let refused = control(
        &emulator,
        reqwest::Method::PUT,
        "data/settings",
        Some(json!({"rate_limit_scale": 0})),
    )
    .await;
    assert_eq!(refused.status, 400);
    emulator.shutdown().await;
}

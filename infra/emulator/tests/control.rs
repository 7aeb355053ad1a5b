//! The `/_emulator` control API: faults, request log, rotation, consent, settings.

mod common;

use common::*;
use reqwest::StatusCode;
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

async fn token_requests(emulator: &defender_emulator::RunningEmulator) -> Vec<Value> {
    let answer = control(emulator, reqwest::Method::GET, "requests", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.body["token_requests"].as_array().unwrap().clone()
}

#[tokio::test]
async fn health_answers_ok() {
    let emulator = start_demo().await;
    let answer = control(&emulator, reqwest::Method::GET, "health", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"status": "ok"}));
    emulator.shutdown().await;
}

#[tokio::test]
async fn throttling_fault_then_recovery() {
    let emulator = start_demo().await;
    let queued = control(
        &emulator,
        reqwest::Method::POST,
        "faults",
        Some(json!({"match": "token", "status": 429, "retry_after": 7, "count": 2})),
    )
    .await;
    assert_eq!(queued.status, StatusCode::OK, "{}", queued.text);
    assert_eq!(queued.body["pending"][0]["count"], 2);

    for _ in 0..2 {
        let answer = token_v2(&emulator, CONTOSO, M365D).await;
        assert_entra_error(&answer, 429, "temporarily_unavailable", 90055);
        assert_eq!(answer.headers["retry-after"].to_str().unwrap(), "7");
    }
    let answer = token_v2(&emulator, CONTOSO, M365D).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    let log = token_requests(&emulator).await;
    let statuses: Vec<u64> = log.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [429, 429, 200]);
    assert_eq!(log[0]["injected"], true);
    assert_eq!(log[0]["client_id"], CLIENT_ID);
    assert_eq!(log[0]["resource"], M365D);
    assert_eq!(log[2]["injected"], false);
    emulator.shutdown().await;
}

#[tokio::test]
async fn faults_queue_in_order_and_respect_tenant_and_kind() {
    let emulator = start_demo().await;
    let base = emulator.base_url().to_owned();
    for fault in [
        json!({"match": "token", "tenant": "fabrikam.onmicrosoft.com", "status": 503}),
        json!({"match": "any", "status": 500, "count": 1}),
    ] {
        let queued = control(&emulator, reqwest::Method::POST, "faults", Some(fault)).await;
        assert_eq!(queued.status, StatusCode::OK, "{}", queued.text);
    }
    // The first fault is for Fabrikam only: a key request takes the second one.
    let keys = get(&format!("{base}/common/discovery/v2.0/keys")).await;
    assert_entra_error(&keys, 500, "server_error", 90024);
    // A Contoso token passes; Fabrikam named by id still matches the domain of the fault.
    assert_eq!(
        token_v2(&emulator, CONTOSO, M365D).await.status,
        StatusCode::OK
    );
    let fabrikam = token_v2(&emulator, FABRIKAM, M365D).await;
    assert_entra_error(&fabrikam, 503, "temporarily_unavailable", 90024);
    assert!(fabrikam.headers.get("retry-after").is_none());
    assert_eq!(
        token_v2(&emulator, FABRIKAM, M365D).await.status,
        StatusCode::OK
    );

    // Queued faults can be listed and cleared.
    control(
        &emulator,
        reqwest::Method::POST,
        "faults",
        Some(json!({"status": 429, "count": 5})),
    )
    .await;
    let pending = control(&emulator, reqwest::Method::GET, "faults", None).await;
    assert_eq!(pending.body["pending"].as_array().unwrap().len(), 1);
    let cleared = control(&emulator, reqwest::Method::DELETE, "faults", None).await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert_eq!(
        token_v2(&emulator, CONTOSO, M365D).await.status,
        StatusCode::OK
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_delay_only_fault_still_serves_the_request() {
    let emulator = start_demo().await;
    let queued = control(
        &emulator,
        reqwest::Method::POST,
        "faults",
        Some(json!({"match": "token", "delay_ms": 20})),
    )
    .await;
    assert_eq!(queued.status, StatusCode::OK, "{}", queued.text);
    assert_eq!(
        token_v2(&emulator, CONTOSO, M365D).await.status,
        StatusCode::OK
    );
    assert!(emulator.handle().pending_faults().is_empty());
    emulator.shutdown().await;
}

#[tokio::test]
async fn bad_control_requests_are_refused_clearly() {
    let emulator = start_demo().await;
    let cases = [
        (reqwest::Method::POST, "faults", json!({"status": 200}), 400),
        (
            reqwest::Method::POST,
            "faults",
            json!({"match": "everything", "status": 429}),
            400,
        ),
        (
            reqwest::Method::POST,
            "faults",
            json!({"match": "token"}),
            400,
        ),
        (
            reqwest::Method::PUT,
            "apps/99999999-9999-4999-8999-999999999999/secrets",
            json!({"secrets": []}),
            404,
        ),
        (
            reqwest::Method::PUT,
            &format!("apps/{CLIENT_ID}/secrets"),
            json!({"secret": []}),
            400,
        ),
        (
            reqwest::Method::PUT,
            &format!("apps/{CLIENT_ID}/certificates"),
            json!({"certificates": [{"pem": "x"}]}),
            400,
        ),
        (
            reqwest::Method::PUT,
            "tenants/unknown.example/grants",
            json!({"client_id": CLIENT_ID, "resource": M365D}),
            404,
        ),
        (
            reqwest::Method::PUT,
            &format!("tenants/{CONTOSO}/grants"),
            json!({"client_id": CLIENT_ID, "resource": "https://example.com"}),
            400,
        ),
        (
            reqwest::Method::PUT,
            "settings",
            json!({"token_lifetime_seconds": 0}),
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        let answer = control(&emulator, method, path, Some(body)).await;
        assert_eq!(answer.status.as_u16(), status, "{path}: {}", answer.text);
        assert!(answer.body["error"].is_string(), "{path}: {}", answer.text);
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn secret_rotation_takes_effect_at_once() {
    let emulator = start_demo().await;
    let rotated = control(
        &emulator,
        reqwest::Method::PUT,
        &format!("apps/{CLIENT_ID}/secrets"),
        Some(json!({"secrets": [
            {"value": "second-secret", "expires": "2099-01-01T00:00:00Z"},
            {"value": "old-expired-secret", "expires": "2001-01-01T00:00:00Z"},
        ]})),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::NO_CONTENT, "{}", rotated.text);

    let old = token_v2(&emulator, CONTOSO, M365D).await;
    assert_entra_error(&old, 401, "invalid_client", 7000215);

    let with_secret = |secret: &'static str| {
        let url = format!("{}/{CONTOSO}/oauth2/v2.0/token", emulator.base_url());
        async move {
            post_form(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT_ID),
                    ("client_secret", secret),
                    ("scope", "https://api.security.microsoft.com/.default"),
                ],
            )
            .await
        }
    };
    assert_eq!(with_secret("second-secret").await.status, StatusCode::OK);
    let expired = with_secret("old-expired-secret").await;
    assert_entra_error(&expired, 401, "invalid_client", 7000222);
    emulator.shutdown().await;
}

#[tokio::test]
async fn consent_can_be_granted_changed_and_revoked() {
    let emulator = start_demo().await;
    let grant = |roles: Value| json!({"client_id": CLIENT_ID, "resource": MDE, "roles": roles});

    let granted = control(
        &emulator,
        reqwest::Method::PUT,
        "tenants/northwind.onmicrosoft.com/grants",
        Some(grant(json!(["Alert.Read.All", "Machine.Read.All"]))),
    )
    .await;
    assert_eq!(granted.status, StatusCode::NO_CONTENT, "{}", granted.text);
    let answer = token_v2(&emulator, NORTHWIND, MDE).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        claims(&answer)["roles"],
        json!(["Alert.Read.All", "Machine.Read.All"])
    );

    // Replacing the grant with no roles keeps the app consented, without roles.
    control(
        &emulator,
        reqwest::Method::PUT,
        &format!("tenants/{NORTHWIND}/grants"),
        Some(grant(json!([]))),
    )
    .await;
    let answer = token_v2(&emulator, NORTHWIND, MDE).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(claims(&answer).get("roles").is_none());

    let revoked = control(
        &emulator,
        reqwest::Method::DELETE,
        &format!("tenants/{NORTHWIND}/grants/{CLIENT_ID}"),
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    let answer = token_v2(&emulator, NORTHWIND, MDE).await;
    assert_entra_error(&answer, 400, "unauthorized_client", 700016);
    emulator.shutdown().await;
}

fn claims(answer: &Answer) -> Value {
    use base64::Engine;
    let token = answer.body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn settings_change_the_token_lifetime() {
    let emulator = start_demo().await;
    let changed = control(
        &emulator,
        reqwest::Method::PUT,
        "settings",
        Some(json!({"token_lifetime_seconds": 120})),
    )
    .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    let answer = token_v2(&emulator, CONTOSO, M365D).await;
    assert_eq!(answer.body["expires_in"], 120);
    let claims = claims(&answer);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn tenants_can_be_added() {
    let emulator = start_demo().await;
    let tenant = json!({
        "id": "66666666-6666-4666-8666-666666666666",
        "display_name": "Tailspin",
        "domains": ["tailspin.onmicrosoft.com"],
        "region_scope": "EU",
        "grants": [{"client_id": CLIENT_ID, "resource": GRAPH, "roles": ["SecurityAlert.Read.All"]}]
    });
    let added = control(
        &emulator,
        reqwest::Method::POST,
        "tenants",
        Some(tenant.clone()),
    )
    .await;
    assert_eq!(added.status, StatusCode::NO_CONTENT, "{}", added.text);
    let again = control(&emulator, reqwest::Method::POST, "tenants", Some(tenant)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let answer = token_v2(&emulator, "tailspin.onmicrosoft.com", GRAPH).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        claims(&answer)["tid"],
        "66666666-6666-4666-8666-666666666666"
    );
    let metadata = get(&format!(
        "{}/tailspin.onmicrosoft.com/v2.0/.well-known/openid-configuration",
        emulator.base_url()
    ))
    .await;
    assert_eq!(metadata.body["tenant_region_scope"], "EU");
    emulator.shutdown().await;
}

#[tokio::test]
async fn the_request_log_counts_token_requests_without_credentials() {
    let emulator = start_demo().await;
    token_v2(&emulator, "contoso.com", M365D).await;
    token_v1(&emulator, FABRIKAM, GRAPH).await;
    token_v2(&emulator, NORTHWIND, M365D).await;
    // Key and metadata requests are not token requests.
    get(&format!(
        "{}/common/discovery/v2.0/keys",
        emulator.base_url()
    ))
    .await;

    let answer = control(&emulator, reqwest::Method::GET, "requests", None).await;
    assert!(!answer.text.contains(SECRET));
    let log = answer.body["token_requests"].as_array().unwrap().clone();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["tenant"], "contoso.com");
    assert_eq!(log[0]["tenant_id"], CONTOSO);
    assert_eq!(log[0]["endpoint"], "v2");
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["client_id"], CLIENT_ID);
    assert_eq!(log[0]["credential"], "secret");
    assert_eq!(log[0]["resource"], M365D);
    assert!(chrono::DateTime::parse_from_rfc3339(log[0]["at"].as_str().unwrap()).is_ok());
    assert_eq!(log[1]["endpoint"], "v1");
    assert_eq!(log[1]["resource"], GRAPH);
    assert_eq!(log[2]["status"], 400);
    assert_eq!(log[2]["error_code"], 700016);

    // The in-process handle sees the same log.
    assert_eq!(emulator.handle().token_requests().len(), 3);

    let cleared = control(&emulator, reqwest::Method::DELETE, "requests", None).await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(token_requests(&emulator).await.is_empty());
    emulator.shutdown().await;
}

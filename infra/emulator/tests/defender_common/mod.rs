//! Helpers of the data API tests (`defender_*.rs`): an emulator whose Contoso tenant has data,
//! tokens, and GETs with a bearer token.

#![allow(dead_code)]

use chrono::{DateTime, FixedOffset};
use defender_emulator::{DataConfig, RunningEmulator, Scenario};
use serde_json::Value;

use crate::common::{Answer, CONTOSO, GRAPH, answer, client, start_with, token_v1, token_v2};

pub const MDE_ALIAS: &str = "https://securitycenter.onmicrosoft.com/windowsatpservice";

/// Deterministic data: `incidents` incidents and `mde_alerts` alerts a minute apart from
/// 2026-01-01.
pub fn data(incidents: u32, mde_alerts: u32) -> DataConfig {
    DataConfig {
        incidents,
        mde_alerts,
        seed: 7,
        start: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        spacing_seconds: 60,
        ..DataConfig::default()
    }
}

/// The demo scenario with `data` on Contoso, which may also read Graph alerts.
pub fn scenario(data: DataConfig) -> Scenario {
    let mut scenario = Scenario::demo();
    let contoso = &mut scenario.tenants[0];
    contoso.data = Some(data);
    for grant in &mut contoso.grants {
        if grant.resource == GRAPH {
            grant.roles.push("SecurityAlert.Read.All".to_owned());
        }
    }
    scenario
}

/// Never consented anywhere: no token, so no data call either.
pub fn never_consented() -> &'static str {
    crate::common::NORTHWIND
}

pub async fn start_with_data(data: DataConfig) -> RunningEmulator {
    start_with(scenario(data)).await
}

pub async fn access_token(emulator: &RunningEmulator, tenant: &str, resource: &str) -> String {
    let answer = token_v2(emulator, tenant, resource).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

pub async fn access_token_v1(emulator: &RunningEmulator, tenant: &str, resource: &str) -> String {
    let answer = token_v1(emulator, tenant, resource).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

pub async fn contoso_token(emulator: &RunningEmulator, resource: &str) -> String {
    access_token(emulator, CONTOSO, resource).await
}

/// GET of an absolute URL, with the token as bearer when given.
pub async fn get_url(url: &str, token: Option<&str>) -> Answer {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request.send().await.expect("request")).await
}

/// GET of `path_and_query` on the emulator.
pub async fn api(emulator: &RunningEmulator, token: Option<&str>, path_and_query: &str) -> Answer {
    get_url(&format!("{}{path_and_query}", emulator.base_url()), token).await
}

/// The same token with one character of its signature changed.
pub fn tampered(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes.len() - 10;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

pub fn time(value: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time string")).expect("an RFC 3339 time")
}

pub fn values(answer: &Answer) -> &Vec<Value> {
    answer.body["value"]
        .as_array()
        .unwrap_or_else(|| panic!("a value array in {}", answer.text))
}

/// Checks `{"error":{"code","message","target"}}` (M365 Defender and Defender for Endpoint).
pub fn assert_defender_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{}", answer.text);
    assert!(error["message"].is_string(), "{}", answer.text);
    let target = error["target"].as_str().expect("a target");
    assert!(uuid::Uuid::parse_str(target).is_ok(), "{target}");
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
    );
}

/// Checks Graph's `{"error":{"code","message","innerError":{…}}}`.
pub fn assert_graph_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{}", answer.text);
    assert!(error["message"].is_string(), "{}", answer.text);
    let inner = &error["innerError"];
    assert!(inner["request-id"].is_string(), "{}", answer.text);
    assert!(inner["client-request-id"].is_string(), "{}", answer.text);
    let date = inner["date"].as_str().unwrap();
    assert_eq!(date.len(), 19, "no fraction, no zone: {date}");
    assert!(answer.headers.contains_key("request-id"));
}

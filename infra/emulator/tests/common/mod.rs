//! Helpers shared by the integration tests: the demo scenario's ids, a started emulator, form
//! posts, and token verification against the published keys.

#![allow(dead_code)]

use std::net::SocketAddr;

use defender_emulator::{RunningEmulator, Scenario};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

#[allow(unused_imports)]
pub use defender_emulator::demo::{
    CLIENT_ID, CLIENT_SECRET as SECRET, CONTOSO_TENANT_ID as CONTOSO,
    FABRIKAM_TENANT_ID as FABRIKAM, NORTHWIND_TENANT_ID as NORTHWIND,
};
pub const M365D: &str = "https://api.security.microsoft.com";
pub const MDE: &str = "https://api.securitycenter.microsoft.com";
pub const GRAPH: &str = "https://graph.microsoft.com";

pub async fn start_demo() -> RunningEmulator {
    start_with(Scenario::demo()).await
}

pub async fn start_with(scenario: Scenario) -> RunningEmulator {
    defender_emulator::start(scenario, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

pub async fn post_form(url: &str, form: &[(&str, &str)]) -> Answer {
    answer(client().post(url).form(form).send().await.expect("request")).await
}

pub async fn get(url: &str) -> Answer {
    answer(client().get(url).send().await.expect("request")).await
}

/// A v2 client-credentials request with the demo secret.
pub async fn token_v2(emulator: &RunningEmulator, tenant: &str, resource: &str) -> Answer {
    post_form(
        &format!("{}/{tenant}/oauth2/v2.0/token", emulator.base_url()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", &format!("{resource}/.default")),
        ],
    )
    .await
}

/// A v1 client-credentials request with the demo secret.
pub async fn token_v1(emulator: &RunningEmulator, tenant: &str, resource: &str) -> Answer {
    post_form(
        &format!("{}/{tenant}/oauth2/token", emulator.base_url()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("resource", resource),
        ],
    )
    .await
}

/// Verifies the token's RS256 signature with the tenant's published keys (and `aud`, `iss`,
/// `exp`), and returns its claims.
pub async fn verify_token(
    emulator: &RunningEmulator,
    token: &str,
    audience: &str,
    issuer: &str,
) -> Value {
    let keys = get(&format!(
        "{}/{CONTOSO}/discovery/v2.0/keys",
        emulator.base_url()
    ))
    .await;
    assert_eq!(keys.status, StatusCode::OK);
    let set: JwkSet = serde_json::from_value(keys.body).expect("a JWKS");
    let header = decode_header(token).expect("a JWT");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid in the header");
    let jwk = set.find(&kid).expect("the kid is published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("the token verifies")
        .claims
}

/// Checks the Entra error shape and its status, `error` and `error_codes`.
pub fn assert_entra_error(answer: &Answer, status: u16, error: &str, code: u64) {
    assert_eq!(answer.status.as_u16(), status, "status of {}", answer.text);
    assert_eq!(answer.body["error"], error, "error of {}", answer.text);
    assert_eq!(
        answer.body["error_codes"],
        serde_json::json!([code]),
        "{}",
        answer.text
    );
    let description = answer.body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(answer.body[field].is_string(), "{field} in {}", answer.text);
    }
}

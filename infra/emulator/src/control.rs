//! `/_emulator/...`: the HTTP control API used by tests that run the emulator as a process.
//!
//! Bodies are parsed whatever their `Content-Type`, so that a bare `curl -d` works; every
//! refusal is `{"error": "..."}` with 400, 404 or 409.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::handle::{ControlError, EmulatorHandle};
use crate::scenario::{
    AppConfig, CertificateConfig, FederatedCredentialConfig, GrantConfig, SecretConfig,
    TenantConfig,
};
use crate::state::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_emulator/health", get(health))
        .route(
            "/_emulator/faults",
            post(push_fault).get(list_faults).delete(clear_faults),
        )
        .route(
            "/_emulator/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/_emulator/apps", post(add_app))
        .route("/_emulator/apps/{client_id}/secrets", put(set_secrets))
        .route(
            "/_emulator/apps/{client_id}/certificates",
            put(set_certificates),
        )
        .route("/_emulator/apps/{client_id}/disabled", put(set_disabled))
        .route(
            "/_emulator/apps/{client_id}/federated-credentials",
            put(set_federated_credentials),
        )
        .route("/_emulator/tenants", post(add_tenant))
        .route("/_emulator/tenants/{tenant}/grants", put(set_grant))
        .route(
            "/_emulator/tenants/{tenant}/grants/{client_id}",
            axum::routing::delete(revoke_consent),
        )
        .route("/_emulator/settings", put(set_settings))
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self {
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

pub(crate) fn handle(shared: Arc<Shared>) -> EmulatorHandle {
    EmulatorHandle { shared }
}

pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|error| ControlError::Invalid(format!("invalid body: {error}")))
}

pub(crate) fn done(result: Result<(), ControlError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn push_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let handle = handle(shared);
    let pushed = crate::faults::parse_posted(&body)
        .map_err(ControlError::Invalid)
        .and_then(|(fault, after_apply)| match after_apply {
            Some(after_apply) => handle.push_fault_after_apply(fault, after_apply),
            None => handle.push_fault(fault),
        });
    match pushed {
        Ok(()) => Json(json!({ "pending": handle.pending_faults_json() })).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn list_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "pending": handle(shared).pending_faults_json() })).into_response()
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "token_requests": handle(shared).token_requests() })).into_response()
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).clear_token_requests();
    StatusCode::NO_CONTENT.into_response()
}

async fn add_app(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(parse::<AppConfig>(&body).and_then(|app| handle(shared).add_app(&app)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Secrets {
    secrets: Vec<SecretConfig>,
}

async fn set_secrets(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    done(
        parse::<Secrets>(&body)
            .and_then(|body| handle(shared).set_secrets(&client_id, body.secrets)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Certificates {
    certificates: Vec<CertificateConfig>,
}

async fn set_certificates(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    done(
        parse::<Certificates>(&body)
            .and_then(|body| handle(shared).set_certificates(&client_id, &body.certificates)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedCredentials {
    federated_credentials: Vec<FederatedCredentialConfig>,
}

async fn set_federated_credentials(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    done(parse::<FederatedCredentials>(&body).and_then(|body| {
        handle(shared).set_federated_credentials(&client_id, &body.federated_credentials)
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disabled {
    disabled: bool,
}

async fn set_disabled(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    done(
        parse::<Disabled>(&body)
            .and_then(|body| handle(shared).set_app_disabled(&client_id, body.disabled)),
    )
}

async fn add_tenant(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(parse::<TenantConfig>(&body).and_then(|tenant| handle(shared).add_tenant(&tenant)))
}

async fn set_grant(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    done(parse::<GrantConfig>(&body).and_then(|grant| handle(shared).set_grant(&tenant, &grant)))
}

async fn revoke_consent(
    State(shared): State<Arc<Shared>>,
    Path((tenant, client_id)): Path<(String, String)>,
) -> Response {
    done(handle(shared).revoke_consent(&tenant, &client_id))
}

/// The Entra and delegated settings of `PUT /_emulator/settings`; the data APIs' own fields
/// ([`crate::defender::DefenderSettingsPatch::FIELDS`]) are split off before parsing this.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    token_lifetime_seconds: Option<u64>,
    consent_propagation_ms: Option<u64>,
    // The delegated flows' lifetimes (see `crate::scenario::DelegatedSettings`).
    authorization_code_lifetime_seconds: Option<u64>,
    refresh_token_lifetime_seconds: Option<u64>,
    device_code_lifetime_seconds: Option<u64>,
    device_code_interval_seconds: Option<u64>,
    /// Microsoft's time per call, `"200-400"` ms (`"0"`: none); see `crate::latency`.
    api_latency_ms: Option<crate::latency::LatencyRange>,
    token_latency_ms: Option<crate::latency::LatencyRange>,
}

/// Splits a settings body into the data APIs' patch and the rest.
fn split_settings(
    body: &Bytes,
) -> Result<(Settings, crate::defender::DefenderSettingsPatch), ControlError> {
    let mut object: serde_json::Map<String, serde_json::Value> = parse(body)?;
    let mut data = serde_json::Map::new();
    for field in crate::defender::DefenderSettingsPatch::FIELDS {
        if let Some(value) = object.remove(*field) {
            data.insert((*field).to_owned(), value);
        }
    }
    let invalid =
        |error: serde_json::Error| ControlError::Invalid(format!("invalid body: {error}"));
    let settings = serde_json::from_value(serde_json::Value::Object(object)).map_err(invalid)?;
    let patch = serde_json::from_value(serde_json::Value::Object(data)).map_err(invalid)?;
    Ok((settings, patch))
}

async fn set_settings(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(split_settings(&body).and_then(|(settings, patch)| {
        let handle = handle(shared);
        if let Some(ms) = settings.consent_propagation_ms {
            handle.set_consent_propagation(ms)?;
        }
        handle.patch_defender_settings(&patch)?;
        let mut delegated = handle.delegated_settings();
        for (slot, value) in [
            (
                &mut delegated.authorization_code_lifetime_seconds,
                settings.authorization_code_lifetime_seconds,
            ),
            (
                &mut delegated.refresh_token_lifetime_seconds,
                settings.refresh_token_lifetime_seconds,
            ),
            (
                &mut delegated.device_code_lifetime_seconds,
                settings.device_code_lifetime_seconds,
            ),
            (
                &mut delegated.device_code_interval_seconds,
                settings.device_code_interval_seconds,
            ),
        ] {
            if let Some(value) = value {
                *slot = value;
            }
        }
        handle.set_delegated_settings(delegated);
        let mut latency = handle.latency();
        latency.api = settings.api_latency_ms.or(latency.api);
        latency.token = settings.token_latency_ms.or(latency.token);
        handle.set_latency(latency);
        match settings.token_lifetime_seconds {
            Some(seconds) => handle.set_token_lifetime(seconds),
            None => Ok(()),
        }
    }))
}

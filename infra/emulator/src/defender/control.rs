//! Control of the data APIs, over HTTP (`/_emulator/...`) and in-process ([`EmulatorHandle`]
//! methods): touching records, replacing a tenant's data or modes, settings, call counters.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::json;

use super::config::{DataConfig, DataModes, DefenderSettings, DefenderSettingsPatch, Retirement};
use super::data::{Rec, Space};
use super::store::{DataApiCalls, lock};
use super::{facts, time};
use crate::directory::TenantLookup;
use crate::handle::{ControlError, EmulatorHandle};
use crate::state::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_emulator/tenants/{tenant}/touch", post(touch))
        .route(
            "/_emulator/tenants/{tenant}/data",
            put(set_data).get(get_data),
        )
        .route(
            "/_emulator/tenants/{tenant}/data/modes",
            put(set_modes).get(get_modes),
        )
        .route("/_emulator/data/calls", get(calls).delete(clear_calls))
        .route("/_emulator/data/rate-limits", delete(reset_rate_limits))
        .route(
            "/_emulator/data/settings",
            get(get_settings).put(patch_settings),
        )
        .merge(super::record_control::router())
        .merge(super::hunting::control_router())
}

/// What `POST /_emulator/tenants/{tenant}/touch` touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TouchTarget {
    #[default]
    Incidents,
    MdeAlerts,
    GraphAlerts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Touch {
    count: u32,
    #[serde(default)]
    target: TouchTarget,
}

fn handle(shared: Arc<Shared>) -> EmulatorHandle {
    EmulatorHandle { shared }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|error| ControlError::Invalid(format!("invalid body: {error}")))
}

fn answer(result: Result<serde_json::Value, ControlError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

fn done(result: Result<(), ControlError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn touch(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let handle = handle(shared);
    answer(parse::<Touch>(&body).and_then(|touch| {
        match touch.target {
            TouchTarget::Incidents => handle
                .touch_incidents(&tenant, touch.count)
                .map(|ids| json!({ "touched": ids })),
            TouchTarget::MdeAlerts => handle
                .touch_mde_alerts(&tenant, touch.count)
                .map(|ids| json!({ "touched": ids })),
            TouchTarget::GraphAlerts => handle
                .touch_graph_alerts(&tenant, touch.count)
                .map(|ids| json!({ "touched": ids })),
        }
    }))
}

async fn set_data(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    done(parse::<DataConfig>(&body).and_then(|data| handle(shared).set_tenant_data(&tenant, data)))
}

async fn get_data(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    let handle = handle(shared);
    let edited = handle.edited_records(&tenant).unwrap_or_default();
    answer(handle.tenant_data(&tenant).map(|(config, touched)| {
        json!({ "data": config, "touched_records": touched, "edited_records": edited })
    }))
}

async fn set_modes(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    done(parse::<DataModes>(&body).and_then(|modes| handle(shared).set_data_modes(&tenant, modes)))
}

async fn get_modes(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    answer(handle(shared).data_modes(&tenant).map(|modes| json!(modes)))
}

#[derive(Deserialize)]
struct CallsQuery {
    tenant: Option<String>,
}

async fn calls(State(shared): State<Arc<Shared>>, Query(query): Query<CallsQuery>) -> Response {
    let handle = handle(shared);
    match query.tenant {
        Some(tenant) => match handle.tenant_id(&tenant) {
            Ok(id) => Json(json!({ "tenant_id": id, "calls": handle.data_api_calls(&id) }))
                .into_response(),
            Err(error) => error.into_response(),
        },
        None => Json(json!({ "tenants": handle.shared.defender.all_calls() })).into_response(),
    }
}

async fn clear_calls(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).clear_data_api_calls();
    StatusCode::NO_CONTENT.into_response()
}

async fn reset_rate_limits(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).reset_rate_limits();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_settings(State(shared): State<Arc<Shared>>) -> Response {
    Json(handle(shared).defender_settings()).into_response()
}

async fn patch_settings(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    done(
        parse::<DefenderSettingsPatch>(&body)
            .and_then(|patch| handle(shared).patch_defender_settings(&patch)),
    )
}

impl EmulatorHandle {
    /// The tenant GUID a segment (GUID or domain) names.
    fn tenant_id(&self, tenant: &str) -> Result<String, ControlError> {
        self.shared
            .directory()
            .tenant_id_of(tenant)
            .ok_or_else(|| ControlError::NotFound(format!("no tenant {tenant}")))
    }

    /// Gives `count` random incidents of the tenant (and all their alerts) a last-update time
    /// of now, so that they become the newest. Returns their incident ids.
    pub fn touch_incidents(&self, tenant: &str, count: u32) -> Result<Vec<u64>, ControlError> {
        let id = self.tenant_id(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let mut data = lock(&data);
        let touched = data.touch_incidents(count, time::now());
        Ok(touched
            .into_iter()
            .map(|index| data.incident_id(index))
            .collect())
    }

    /// Gives `count` random Defender for Endpoint alerts of the tenant (and their incidents) a
    /// last-update time of now. Returns the alert ids.
    pub fn touch_mde_alerts(&self, tenant: &str, count: u32) -> Result<Vec<String>, ControlError> {
        let id = self.tenant_id(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let mut data = lock(&data);
        let touched = data.touch_mde_alerts(count, time::now());
        Ok(touched
            .into_iter()
            .map(|index| facts::alert(&data, Rec::Mde(index)).id)
            .collect())
    }

    /// Gives `count` random Graph-only alerts of the tenant (`graph_alerts`, and their
    /// incidents) a last-update time of now. Returns their Graph `alerts_v2` ids.
    pub fn touch_graph_alerts(
        &self,
        tenant: &str,
        count: u32,
    ) -> Result<Vec<String>, ControlError> {
        let id = self.tenant_id(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let mut data = lock(&data);
        let touched = data.touch_alerts(Space::Graph, count, time::now());
        Ok(touched
            .into_iter()
            .map(|index| facts::alert(&data, Rec::Graph(index)).graph_id)
            .collect())
    }

    /// The tenant's current failure modes.
    pub fn data_modes(&self, tenant: &str) -> Result<DataModes, ControlError> {
        let id = self.tenant_id(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let data = lock(&data);
        Ok(data.config.modes())
    }

    /// Replaces the tenant's generated data; earlier touches are forgotten.
    pub fn set_tenant_data(&self, tenant: &str, data: DataConfig) -> Result<(), ControlError> {
        data.validate().map_err(ControlError::invalid)?;
        let id = self.tenant_id(tenant)?;
        let domain = match self.shared.directory().lookup_tenant(&id) {
            TenantLookup::Found(found) => found.domains.first().cloned(),
            _ => None,
        }
        .unwrap_or_else(|| format!("tenant-{}.onmicrosoft.com", &id[..8]));
        self.shared.defender.set_data(&id, domain, data);
        Ok(())
    }

    /// How many records of the tenant carry written values (updates, comments, portal edits).
    pub fn edited_records(&self, tenant: &str) -> Result<usize, ControlError> {
        let id = self.tenant_id(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let data = lock(&data);
        Ok(data.edited_count())
    }

    /// The tenant's data settings (with `start` resolved) and how many records were touched.
    pub fn tenant_data(&self, tenant: &str) -> Result<(DataConfig, usize), ControlError> {
        let id = self.tenant_id(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let data = lock(&data);
        Ok((data.config.clone(), data.touched_count()))
    }

    /// Sets the tenant's failure modes (`expand_alerts_fails_above`, `touch_while_paging`,
    /// `omit_alerts_v2_next_link`; all replaced), keeping its records.
    pub fn set_data_modes(&self, tenant: &str, modes: DataModes) -> Result<(), ControlError> {
        modes.validate().map_err(ControlError::invalid)?;
        let id = self.tenant_id(tenant)?;
        self.shared.defender.set_modes(&id, modes);
        Ok(())
    }

    /// Turns the retirement of the legacy APIs (`/api/incidents`, `/api/alerts`) on or off.
    pub fn set_retirement(&self, retirement: Retirement) {
        let mut settings = self.defender_settings();
        settings.retirement = retirement;
        self.shared.defender.set_settings(settings);
    }

    pub fn defender_settings(&self) -> DefenderSettings {
        self.shared.defender.settings()
    }

    pub fn set_defender_settings(&self, settings: DefenderSettings) -> Result<(), ControlError> {
        settings.validate().map_err(ControlError::Invalid)?;
        self.shared.defender.set_settings(settings);
        Ok(())
    }

    /// Changes the settings the patch names.
    pub fn patch_defender_settings(
        &self,
        patch: &DefenderSettingsPatch,
    ) -> Result<(), ControlError> {
        let mut settings = self.defender_settings();
        patch.apply(&mut settings);
        self.set_defender_settings(settings)
    }

    /// Calls of each data API for the tenant (GUID or domain) since start or the last clear;
    /// all zero for a tenant never called (or unknown).
    pub fn data_api_calls(&self, tenant: &str) -> DataApiCalls {
        match self.tenant_id(tenant) {
            Ok(id) => self.shared.defender.calls(&id),
            Err(_) => DataApiCalls::default(),
        }
    }

    pub fn clear_data_api_calls(&self) {
        self.shared.defender.clear_calls();
    }

    /// Forgets every call counted against the rate limits.
    pub fn reset_rate_limits(&self) {
        self.shared.defender.reset_rate_limits();
    }
}

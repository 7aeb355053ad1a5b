//! Control of advanced hunting: a tenant's tables (`PUT`/`GET /_emulator/tenants/{tenant}/hunting`),
//! the truth of a query (`POST …/hunting/truth`: the rows `runHuntingQuery` must answer, for
//! end-to-end tests to compare) and the CPU quota's reset (`DELETE /_emulator/data/hunting-quota`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::{HuntingTruth, resolve_end, truth};
use crate::defender::config::HuntingConfig;
use crate::defender::store::lock;
use crate::defender::time;
use crate::handle::{ControlError, EmulatorHandle};
use crate::state::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/_emulator/tenants/{tenant}/hunting",
            get(get_hunting).put(set_hunting),
        )
        .route(
            "/_emulator/tenants/{tenant}/hunting/truth",
            post(post_truth),
        )
        .route("/_emulator/data/hunting-quota", delete(reset_quota))
}

/// The body of a truth request: the same as `runHuntingQuery`'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TruthRequest {
    #[serde(alias = "query")]
    #[serde(rename = "Query")]
    query: String,
    #[serde(alias = "timespan")]
    #[serde(rename = "Timespan", default)]
    timespan: Option<String>,
}

impl EmulatorHandle {
    fn hunting_tenant(&self, tenant: &str) -> Result<String, ControlError> {
        self.shared
            .directory()
            .tenant_id_of(tenant)
            .ok_or_else(|| ControlError::NotFound(format!("no tenant {tenant}")))
    }

    /// Replaces the tenant's advanced hunting tables (its incidents and alerts are kept); an
    /// absent `end` becomes now.
    pub fn set_hunting(&self, tenant: &str, mut config: HuntingConfig) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::invalid)?;
        resolve_end(&mut config, time::now());
        let id = self.hunting_tenant(tenant)?;
        let data = self.shared.defender.tenant(&id);
        lock(&data).config.hunting = Some(config);
        Ok(())
    }

    /// The tenant's hunting tables (`end` resolved); `None` when it has none.
    pub fn hunting(&self, tenant: &str) -> Result<Option<HuntingConfig>, ControlError> {
        let id = self.hunting_tenant(tenant)?;
        let data = self.shared.defender.tenant(&id);
        let config = lock(&data).config.hunting.clone();
        Ok(config)
    }

    /// What `runHuntingQuery` must answer for the tenant now (same clock, `Timespan`, row cut
    /// and refusals of bad queries), without a token, limits, the quota or faults.
    pub fn hunting_truth(
        &self,
        tenant: &str,
        query: &str,
        timespan: Option<&str>,
    ) -> Result<HuntingTruth, ControlError> {
        let id = self.hunting_tenant(tenant)?;
        truth(&self.shared, &id, query, timespan).map_err(ControlError::Invalid)
    }

    /// Queries the tenant ran in its current CPU cycle, and the seconds until the cycle ends.
    pub fn hunting_cpu_cycle(&self, tenant: &str) -> Result<(u32, u64), ControlError> {
        let id = self.hunting_tenant(tenant)?;
        let length = u64::from(self.shared.defender.settings().hunting_cpu_cycle_seconds);
        Ok(self
            .shared
            .defender
            .hunting_cycle(&id, Duration::from_secs(length)))
    }

    /// Starts a new CPU cycle for every tenant: spent quotas are available again.
    pub fn reset_hunting_quota(&self) {
        self.shared.defender.reset_hunting_quota();
    }
}

fn handle(shared: Arc<Shared>) -> EmulatorHandle {
    EmulatorHandle { shared }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|error| ControlError::Invalid(format!("invalid body: {error}")))
}

async fn get_hunting(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    let handle = handle(shared);
    let result = handle.hunting(&tenant).and_then(|config| {
        let (queries, left) = handle.hunting_cpu_cycle(&tenant)?;
        Ok(json!({
            "hunting": config,
            "cpu_cycle": { "queries": queries, "ends_in_seconds": left },
        }))
    });
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn set_hunting(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<HuntingConfig>(&body)
        .and_then(|config| handle(shared).set_hunting(&tenant, config))
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn post_truth(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let result = parse::<TruthRequest>(&body).and_then(|request| {
        handle(shared).hunting_truth(&tenant, &request.query, request.timespan.as_deref())
    });
    match result {
        Ok(truth) => Json(truth).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn reset_quota(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).reset_hunting_quota();
    StatusCode::NO_CONTENT.into_response()
}

//! The data APIs' share of the emulator state: each tenant's data, the settings, the rate
//! limiter and the call counters. Locks are held for in-memory work only, never across an
//! `.await`; a poisoned lock is taken over (see `state.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

use super::config::{DataConfig, DataModes, DefenderSettings, RateLimitMode};
use super::data::TenantData;
use super::hunting::HuntingUsage;
use super::limits::{self, Key, Limiter};
use super::time;
use super::{Api, Endpoint};
use crate::scenario::{Scenario, TenantConfig};

/// Calls of one endpoint for one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCalls {
    /// Every request that reached the endpoint with a token naming the tenant (verified or not),
    /// faulted and refused ones included.
    pub requests: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered 429 (rate limit or injected fault).
    pub throttled: u64,
    /// Answered any other error status.
    pub failed: u64,
}

/// Calls per data endpoint for one tenant (`GET /_emulator/data/calls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataApiCalls {
    /// `GET /api/incidents`
    pub m365d_incidents: ApiCalls,
    /// `GET /api/alerts`
    pub mde_alerts: ApiCalls,
    /// `GET /v1.0/security/incidents`
    pub graph_incidents: ApiCalls,
    /// `GET /v1.0/security/alerts_v2`
    pub graph_alerts: ApiCalls,
    /// `GET /v1.0/security/incidents/{id}`
    #[serde(default)]
    pub graph_incident_get: ApiCalls,
    /// `PATCH /v1.0/security/incidents/{id}`
    #[serde(default)]
    pub graph_incident_update: ApiCalls,
    /// `POST /v1.0/security/incidents/{id}/comments`
    #[serde(default)]
    pub graph_incident_comments: ApiCalls,
    /// `GET /v1.0/security/alerts_v2/{id}`
    #[serde(default)]
    pub graph_alert_get: ApiCalls,
    /// `PATCH /v1.0/security/alerts_v2/{id}`
    #[serde(default)]
    pub graph_alert_update: ApiCalls,
    /// `POST /v1.0/security/alerts_v2/{id}/comments`
    #[serde(default)]
    pub graph_alert_comments: ApiCalls,
    /// `POST /v1.0/security/runHuntingQuery`
    #[serde(default)]
    pub graph_hunting: ApiCalls,
}

impl DataApiCalls {
    fn of(&mut self, endpoint: Endpoint) -> &mut ApiCalls {
        match endpoint {
            Endpoint::M365dIncidents => &mut self.m365d_incidents,
            Endpoint::MdeAlerts => &mut self.mde_alerts,
            Endpoint::GraphIncidents => &mut self.graph_incidents,
            Endpoint::GraphAlerts => &mut self.graph_alerts,
            Endpoint::GraphIncident => &mut self.graph_incident_get,
            Endpoint::GraphIncidentUpdate => &mut self.graph_incident_update,
            Endpoint::GraphIncidentComment => &mut self.graph_incident_comments,
            Endpoint::GraphAlert => &mut self.graph_alert_get,
            Endpoint::GraphAlertUpdate => &mut self.graph_alert_update,
            Endpoint::GraphAlertComment => &mut self.graph_alert_comments,
            Endpoint::GraphHunting => &mut self.graph_hunting,
        }
    }

    /// Requests of every endpoint.
    pub fn total(&self) -> u64 {
        self.all().iter().map(|calls| calls.requests).sum()
    }

    /// Writes that reached the emulator (updates and comments of incidents and alerts).
    pub fn writes(&self) -> u64 {
        self.graph_incident_update.requests
            + self.graph_incident_comments.requests
            + self.graph_alert_update.requests
            + self.graph_alert_comments.requests
    }

    fn all(&self) -> [ApiCalls; 11] {
        [
            self.m365d_incidents,
            self.mde_alerts,
            self.graph_incidents,
            self.graph_alerts,
            self.graph_incident_get,
            self.graph_incident_update,
            self.graph_incident_comments,
            self.graph_alert_get,
            self.graph_alert_update,
            self.graph_alert_comments,
            self.graph_hunting,
        ]
    }
}

pub(crate) type SharedTenant = Arc<Mutex<TenantData>>;

#[derive(Default)]
pub(crate) struct DataStore {
    tenants: RwLock<HashMap<String, SharedTenant>>,
    settings: RwLock<DefenderSettings>,
    limiter: Mutex<Limiter>,
    calls: Mutex<BTreeMap<String, DataApiCalls>>,
    decoding_key: OnceLock<Option<DecodingKey>>,
    /// Advanced hunting's per-tenant call rate and CPU quota.
    hunting: Mutex<HuntingUsage>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn domain_of(tenant_id: &str, domains: &[String]) -> String {
    domains.first().map_or_else(
        || {
            format!(
                "tenant-{}.onmicrosoft.com",
                &tenant_id[..8.min(tenant_id.len())]
            )
        },
        |domain| domain.to_ascii_lowercase(),
    )
}

impl DataStore {
    pub(crate) fn decoding_key(
        &self,
        make: impl FnOnce() -> Option<DecodingKey>,
    ) -> Option<&DecodingKey> {
        self.decoding_key.get_or_init(make).as_ref()
    }

    /// Loads the `data` of every tenant of the scenario.
    pub(crate) fn load_scenario(&self, scenario: &Scenario) {
        self.settings
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retirement = scenario.retirement;
        for tenant in &scenario.tenants {
            self.register(tenant);
        }
    }

    /// Takes the `data` of a tenant added to the directory.
    pub(crate) fn register(&self, tenant: &TenantConfig) {
        let id = tenant.id.to_ascii_lowercase();
        let data = tenant.data.clone().unwrap_or_default();
        self.set_data(&id, domain_of(&id, &tenant.domains), data);
    }

    /// Replaces a tenant's data (touches are forgotten).
    pub(crate) fn set_data(&self, tenant_id: &str, domain: String, config: DataConfig) {
        let data = TenantData::new(tenant_id.to_owned(), domain, config, time::now());
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant_id.to_owned(), Arc::new(Mutex::new(data)));
    }

    /// The tenant's data; an empty set for a tenant the store has not seen.
    pub(crate) fn tenant(&self, tenant_id: &str) -> SharedTenant {
        if let Some(data) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant_id)
        {
            return Arc::clone(data);
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(tenants.entry(tenant_id.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(TenantData::new(
                tenant_id.to_owned(),
                domain_of(tenant_id, &[]),
                DataConfig::default(),
                time::now(),
            )))
        }))
    }

    pub(crate) fn set_modes(&self, tenant_id: &str, modes: DataModes) {
        let tenant = self.tenant(tenant_id);
        lock(&tenant).config.set_modes(modes);
    }

    pub(crate) fn settings(&self) -> DefenderSettings {
        *self.settings.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_settings(&self, settings: DefenderSettings) {
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// Counts an authenticated call against the limits: `Some(seconds)` to wait when over.
    pub(crate) fn throttle(&self, client_id: &str, tenant_id: &str, api: Api) -> Option<u64> {
        let settings = self.settings();
        if settings.rate_limits == RateLimitMode::Off {
            return None;
        }
        let windows = limits::scaled(api, settings.rate_limit_scale);
        let key = Key {
            client_id: client_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            api,
        };
        lock(&self.limiter).call(key, &windows, Instant::now())
    }

    pub(crate) fn reset_rate_limits(&self) {
        lock(&self.limiter).clear();
        lock(&self.hunting).reset_calls();
    }

    /// Counts an advanced hunting call of the tenant: `Some(seconds)` when over the limit.
    pub(crate) fn hunting_call(&self, tenant_id: &str, per_minute: u32) -> Option<u64> {
        lock(&self.hunting).call(tenant_id, per_minute, Instant::now())
    }

    /// Spends one query of the tenant's CPU quota: `Err(seconds)` until its cycle ends.
    pub(crate) fn hunting_spend(
        &self,
        tenant_id: &str,
        quota: Option<u32>,
        cycle: std::time::Duration,
    ) -> Result<(), u64> {
        lock(&self.hunting).spend(tenant_id, quota, cycle, Instant::now())
    }

    /// Queries of the tenant's current CPU cycle and the seconds until it ends.
    pub(crate) fn hunting_cycle(&self, tenant_id: &str, cycle: std::time::Duration) -> (u32, u64) {
        lock(&self.hunting).state(tenant_id, cycle, Instant::now())
    }

    pub(crate) fn reset_hunting_quota(&self) {
        lock(&self.hunting).reset_quota();
    }

    pub(crate) fn record_call(&self, tenant_id: &str, endpoint: Endpoint, status: u16) {
        let mut calls = lock(&self.calls);
        let counts = calls.entry(tenant_id.to_owned()).or_default().of(endpoint);
        counts.requests += 1;
        match status {
            200..=299 => counts.ok += 1,
            429 => counts.throttled += 1,
            _ => counts.failed += 1,
        }
    }

    pub(crate) fn calls(&self, tenant_id: &str) -> DataApiCalls {
        lock(&self.calls)
            .get(tenant_id)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn all_calls(&self) -> BTreeMap<String, DataApiCalls> {
        lock(&self.calls).clone()
    }

    pub(crate) fn clear_calls(&self) {
        lock(&self.calls).clear();
    }
}

//! The data APIs: M365 Defender incidents (`GET /api/incidents`), Defender for Endpoint alerts
//! (`GET /api/alerts`) and Microsoft Graph security incidents and alerts
//! (`GET /v1.0/security/incidents`, `GET /v1.0/security/alerts_v2`), served on the emulator's
//! root so that a client sets every API base to the emulator's base URL.
//!
//! Every call: bearer token verified with the emulator's own key (`auth.rs`), role checked,
//! counted against the per (app, tenant, API) limits (`limits.rs`), query parsed (`odata.rs`),
//! then a page cut from the tenant's generated records (`data.rs`, `facts.rs`) and rendered in
//! the API's shape (`m365d.rs`, `mde.rs`, `graph.rs`). The control side (touching records,
//! modes, settings, call counters) is in `control.rs`.

mod auth;
mod config;
mod control;
mod data;
mod edits;
mod errors;
mod facts;
mod graph;
mod hunting;
mod limits;
mod lost;
mod m365d;
mod mde;
mod odata;
mod record_control;
mod store;
mod time;
mod write;

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::Value;

pub use config::{
    DataConfig, DataModes, DefenderSettings, DefenderSettingsPatch, HuntingConfig,
    MAX_HUNTING_ROWS, RateLimitMode, Retirement, TouchWhilePaging,
};
pub(crate) use control::router as control_router;
pub use hunting::{HuntingColumn, HuntingTruth};
pub(crate) use lost::dropped_connection;
pub(crate) use store::DataStore;
pub use store::{ApiCalls, DataApiCalls};

use crate::state::Shared;
use data::{Rec, Scan};
use errors::ApiError;
use odata::ApiSpec;

/// One of the three APIs: the token audience, the rate-limit bucket and the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Api {
    M365d,
    Mde,
    Graph,
}

/// One data endpoint: the lists, Graph's single records, updates, comments and advanced
/// hunting. It picks the call counter, the roles and the fault matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    M365dIncidents,
    MdeAlerts,
    GraphIncidents,
    GraphAlerts,
    /// `GET /v1.0/security/incidents/{id}`
    GraphIncident,
    /// `PATCH /v1.0/security/incidents/{id}`
    GraphIncidentUpdate,
    /// `POST /v1.0/security/incidents/{id}/comments`
    GraphIncidentComment,
    /// `GET /v1.0/security/alerts_v2/{id}`
    GraphAlert,
    /// `PATCH /v1.0/security/alerts_v2/{id}`
    GraphAlertUpdate,
    /// `POST /v1.0/security/alerts_v2/{id}/comments`
    GraphAlertComment,
    /// `POST /v1.0/security/runHuntingQuery`
    GraphHunting,
}

impl Endpoint {
    /// The endpoint a request is for. The lists are recognised whatever the method (their
    /// other methods are answered by the list routes too).
    fn of_request(method: &Method, path: &str) -> Option<Endpoint> {
        match path {
            "/api/incidents" => return Some(Endpoint::M365dIncidents),
            "/api/alerts" => return Some(Endpoint::MdeAlerts),
            "/v1.0/security/incidents" => return Some(Endpoint::GraphIncidents),
            "/v1.0/security/alerts_v2" => return Some(Endpoint::GraphAlerts),
            _ => {}
        }
        let rest = path.strip_prefix("/v1.0/security/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        let endpoint = match (segments.as_slice(), method.as_str()) {
            (["incidents", id], "GET") if !id.is_empty() => Endpoint::GraphIncident,
            (["incidents", id], "PATCH") if !id.is_empty() => Endpoint::GraphIncidentUpdate,
            (["incidents", id, "comments"], "POST") if !id.is_empty() => {
                Endpoint::GraphIncidentComment
            }
            (["alerts_v2", id], "GET") if !id.is_empty() => Endpoint::GraphAlert,
            (["alerts_v2", id], "PATCH") if !id.is_empty() => Endpoint::GraphAlertUpdate,
            (["alerts_v2", id, "comments"], "POST") if !id.is_empty() => {
                Endpoint::GraphAlertComment
            }
            (["runHuntingQuery"], "POST") => Endpoint::GraphHunting,
            _ => return None,
        };
        Some(endpoint)
    }

    fn api(self) -> Api {
        match self {
            Endpoint::M365dIncidents => Api::M365d,
            Endpoint::MdeAlerts => Api::Mde,
            _ => Api::Graph,
        }
    }

    /// Application roles, any of which allows the call.
    fn roles(self) -> &'static [&'static str] {
        match self {
            Endpoint::M365dIncidents => &["Incident.Read.All", "Incident.ReadWrite.All"],
            Endpoint::MdeAlerts => &["Alert.Read.All", "Alert.ReadWrite.All"],
            Endpoint::GraphIncidents | Endpoint::GraphIncident => &[
                "SecurityIncident.Read.All",
                "SecurityIncident.ReadWrite.All",
            ],
            // As documented: the incident roles do not open alerts_v2.
            Endpoint::GraphAlerts | Endpoint::GraphAlert => {
                &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"]
            }
            // Writing needs the ReadWrite role (reference §10, §11).
            Endpoint::GraphIncidentUpdate | Endpoint::GraphIncidentComment => {
                &["SecurityIncident.ReadWrite.All"]
            }
            Endpoint::GraphAlertUpdate | Endpoint::GraphAlertComment => {
                &["SecurityAlert.ReadWrite.All"]
            }
            Endpoint::GraphHunting => &["ThreatHunting.Read.All"],
        }
    }

    /// Delegated permissions (`scp`), any of which allows the call (reference §8).
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Endpoint::M365dIncidents => &["Incident.Read", "Incident.ReadWrite"],
            Endpoint::MdeAlerts => &["Alert.Read", "Alert.ReadWrite"],
            // Graph's delegated permissions carry the same names as its application ones.
            graph => graph.roles(),
        }
    }

    /// Whether the call changes data: a delegated caller's user then needs a portal role that
    /// may write, not only read.
    fn writes(self) -> bool {
        matches!(
            self,
            Endpoint::GraphIncidentUpdate
                | Endpoint::GraphIncidentComment
                | Endpoint::GraphAlertUpdate
                | Endpoint::GraphAlertComment
        )
    }

    /// The query options of a list endpoint.
    fn spec(self) -> Option<&'static ApiSpec> {
        match self {
            Endpoint::M365dIncidents => Some(&m365d::SPEC),
            Endpoint::MdeAlerts => Some(&mde::SPEC),
            Endpoint::GraphIncidents => Some(&graph::INCIDENTS_SPEC),
            Endpoint::GraphAlerts => Some(&graph::ALERTS_SPEC),
            _ => None,
        }
    }
}

/// The data endpoint of a request, for the fault middleware.
pub(crate) fn endpoint_of_request(method: &Method, path: &str) -> Option<Endpoint> {
    Endpoint::of_request(method, path)
}

/// A served page turned into `206 Partial Content`: half of `value` (rounded down) and
/// `Warning: 199 - "{warning}"`; any other answer (an error) is passed on as it is.
pub(crate) async fn partial_response(response: Response, warning: &str) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal(Api::Graph).render(&HeaderMap::new());
    };
    let mut page: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(records) = page.get_mut("value").and_then(Value::as_array_mut) {
        let keep = records.len() / 2;
        records.truncate(keep);
    }
    parts.status = StatusCode::PARTIAL_CONTENT;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("199 - \"{warning}\"")) {
        parts.headers.insert(axum::http::header::WARNING, value);
    }
    let bytes = serde_json::to_vec(&page).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The API whose path this is, for the fault middleware: the list routes and every Graph
/// security route.
pub(crate) fn api_of_path(path: &str) -> Option<Api> {
    match path {
        "/api/incidents" => Some(Api::M365d),
        "/api/alerts" => Some(Api::Mde),
        _ if path.starts_with("/v1.0/security/") || path == "/v1.0/security" => Some(Api::Graph),
        _ => None,
    }
}

/// The (unverified) tenant of a data request's token, for fault matching.
pub(crate) fn token_tenant(headers: &HeaderMap) -> Option<String> {
    auth::unverified_tenant(headers)
}

/// An injected fault's answer in the API's error shape.
pub(crate) fn fault_response(
    api: Api,
    status: StatusCode,
    retry_after: Option<u64>,
    code: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    ApiError::fault(api, status, retry_after, code).render(headers)
}

/// What a page renderer needs besides the data and the query.
pub(crate) struct Context<'a> {
    pub base_url: &'a str,
    pub tenant_id: &'a str,
    pub settings: DefenderSettings,
    /// `Prefer: include-unknown-enum-members` was sent (Graph evolvable enums).
    pub unknown_enum_members: bool,
}

/// The routes of the data APIs, with the fault queue and the call counters in front.
pub(crate) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/api/incidents",
            get(m365d_incidents).fallback(legacy_other_method),
        )
        .route("/api/alerts", get(mde_alerts).fallback(legacy_other_method))
        .route("/api/incidents/{*rest}", any(legacy_record))
        .route("/api/alerts/{*rest}", any(legacy_record))
        .route("/v1.0/security/incidents", get(graph_incidents))
        .route("/v1.0/security/alerts_v2", get(graph_alerts))
        .merge(write::routes())
        .merge(hunting::routes())
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            crate::faults::inject,
        ))
        .layer(middleware::from_fn_with_state(shared, count_calls))
}

async fn count_calls(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let endpoint = Endpoint::of_request(request.method(), request.uri().path());
    let tenant = auth::unverified_tenant(request.headers());
    let response = next.run(request).await;
    if let (Some(endpoint), Some(tenant)) = (endpoint, tenant) {
        shared
            .defender
            .record_call(&tenant, endpoint, response.status().as_u16());
    }
    response
}

async fn m365d_incidents(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    serve(
        &shared,
        Endpoint::M365dIncidents,
        &headers,
        query.as_deref(),
    )
}

async fn mde_alerts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&shared, Endpoint::MdeAlerts, &headers, query.as_deref())
}

async fn graph_incidents(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    serve(
        &shared,
        Endpoint::GraphIncidents,
        &headers,
        query.as_deref(),
    )
}

async fn graph_alerts(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    serve(&shared, Endpoint::GraphAlerts, &headers, query.as_deref())
}

/// The retired answer of a legacy route, when the retirement switch is on.
fn retired(shared: &Shared, api: Api, headers: &HeaderMap) -> Option<Response> {
    let retirement = shared.defender.settings().retirement;
    ApiError::retired(api, retirement).map(|error| {
        tracing::info!(?api, ?retirement, "legacy API retired");
        error.render(headers)
    })
}

fn legacy_api(uri: &axum::http::Uri) -> Api {
    if uri.path().starts_with("/api/alerts") {
        Api::Mde
    } else {
        Api::M365d
    }
}

/// `PATCH /api/incidents` and other methods of the list routes.
async fn legacy_other_method(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let api = legacy_api(request.uri());
    retired(&shared, api, request.headers())
        .unwrap_or_else(|| StatusCode::METHOD_NOT_ALLOWED.into_response())
}

/// `GET`/`PATCH /api/incidents/{id}`, `/api/alerts/{id}`: not emulated, but retired too.
async fn legacy_record(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let api = legacy_api(request.uri());
    retired(&shared, api, request.headers()).unwrap_or_else(|| {
        ApiError::new(
            api,
            StatusCode::NOT_FOUND,
            "NotFound",
            "The emulator serves the lists only.",
        )
        .render(request.headers())
    })
}

/// The token, role and (delegated calls) scope and portal-role checks of a data call, in that
/// order: the caller, or the refusal to answer.
pub(crate) fn authorize(
    shared: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
) -> Result<auth::Caller, ApiError> {
    let api = endpoint.api();
    let Some(key) = shared.defender.decoding_key(|| auth::decoding_key(shared)) else {
        return Err(ApiError::internal(api));
    };
    let caller = match auth::authenticate(shared, key, api, headers) {
        Ok(caller) => caller,
        Err(failure) => {
            tracing::info!(
                ?endpoint,
                reason = failure.reason(),
                "data API refused the token"
            );
            return Err(ApiError::unauthorized(api, failure));
        }
    };
    if let Some(user_oid) = &caller.user_oid {
        let scopes = endpoint.scopes();
        if !caller.has_any_scope(scopes) {
            tracing::info!(?endpoint, tenant = %caller.tenant_id, "data API: scope missing");
            return Err(ApiError::forbidden_scopes(api, scopes, &caller.scopes));
        }
        let held: Vec<String> = shared
            .directory()
            .tenants()
            .iter()
            .find(|tenant| tenant.id == caller.tenant_id)
            .and_then(|tenant| tenant.user(user_oid))
            .map(|user| user.portal_roles.clone())
            .unwrap_or_default();
        let needed: &[&str] = if endpoint.writes() {
            &WRITE_PORTAL_ROLES
        } else {
            &READ_PORTAL_ROLES
        };
        if !portal_role_allows(&held, needed) {
            tracing::info!(?endpoint, tenant = %caller.tenant_id, "data API: portal role missing");
            let error = if endpoint.writes() {
                ApiError::forbidden_user_role(api, needed, &held)
            } else {
                ApiError::forbidden_user(api)
            };
            return Err(error);
        }
    } else {
        let roles = endpoint.roles();
        if !caller.has_any(roles) {
            tracing::info!(?endpoint, tenant = %caller.tenant_id, "data API: role missing");
            return Err(ApiError::forbidden(api, roles, &caller.roles));
        }
    }
    Ok(caller)
}

/// Counts a Graph call against the per-app, per-tenant limit: the 429 when over it.
pub(crate) fn throttle_graph(shared: &Shared, caller: &auth::Caller) -> Option<ApiError> {
    let wait = shared
        .defender
        .throttle(&caller.client_id, &caller.tenant_id, Api::Graph)?;
    tracing::info!(tenant = %caller.tenant_id, wait, "Graph throttled");
    Some(ApiError::throttled(Api::Graph, wait, true))
}

fn serve(shared: &Shared, endpoint: Endpoint, headers: &HeaderMap, raw: Option<&str>) -> Response {
    let api = endpoint.api();
    if api != Api::Graph
        && let Some(answer) = retired(shared, api, headers)
    {
        return answer;
    }
    let caller = match authorize(shared, endpoint, headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.render(headers),
    };
    let settings = shared.defender.settings();
    if let Some(wait) = shared
        .defender
        .throttle(&caller.client_id, &caller.tenant_id, api)
    {
        let header = !(api == Api::M365d && settings.m365d_retry_after_in_body_only);
        tracing::info!(?endpoint, tenant = %caller.tenant_id, wait, "data API throttled");
        return ApiError::throttled(api, wait, header).render(headers);
    }
    let Some(spec) = endpoint.spec() else {
        return ApiError::internal(api).render(headers);
    };
    let query = match odata::parse(spec, raw) {
        Ok(query) => query,
        Err(error) => return ApiError::bad_query(api, error).render(headers),
    };
    let context = Context {
        base_url: &shared.base_url,
        tenant_id: &caller.tenant_id,
        settings,
        unknown_enum_members: prefers_unknown_enum_members(headers),
    };
    let tenant = shared.defender.tenant(&caller.tenant_id);
    let result = {
        let mut data = store::lock(&tenant);
        let result = match endpoint {
            Endpoint::M365dIncidents => m365d::page(&data, &query, &context),
            Endpoint::MdeAlerts => mde::page(&data, &query, &context),
            Endpoint::GraphIncidents => graph::incidents_page(&data, &query, &context),
            Endpoint::GraphAlerts => graph::alerts_page(&data, &query, &context),
            _ => Err(ApiError::internal(api)),
        };
        if result.is_ok() {
            data.page_served(time::now());
        }
        result
    };
    match result {
        Ok(body) => errors::page_response(api, &body, headers),
        Err(error) => error.render(headers),
    }
}

/// Whether a `Prefer` header asks for `include-unknown-enum-members`.
fn prefers_unknown_enum_members(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            item.trim()
                .eq_ignore_ascii_case("include-unknown-enum-members")
        })
}

/// Portal (Entra / Defender) roles that may read incidents and alerts.
pub(crate) const READ_PORTAL_ROLES: [&str; 5] = [
    "Security Reader",
    "Security Operator",
    "Security Administrator",
    "Global Reader",
    "Global Administrator",
];

/// Portal roles that may change incidents and alerts (reference §11: Security Operator or
/// Security Administrator; a Global Administrator holds every role).
pub(crate) const WRITE_PORTAL_ROLES: [&str; 3] = [
    "Security Operator",
    "Security Administrator",
    "Global Administrator",
];

fn portal_role_allows(held: &[String], needed: &[&str]) -> bool {
    held.iter()
        .any(|role| needed.iter().any(|r| r.eq_ignore_ascii_case(role.trim())))
}

/// A page of a scan: `skip` records passed over, then up to `top` taken; whether more remain.
pub(crate) fn cut(
    scan: Scan<'_>,
    keep: impl Fn(Rec) -> bool,
    skip: u64,
    top: u64,
) -> (Vec<Rec>, bool) {
    let mut records = scan
        .map(|(_, record)| record)
        .filter(|record| keep(*record))
        .skip(usize::try_from(skip).unwrap_or(usize::MAX));
    let page: Vec<Rec> = records
        .by_ref()
        .take(usize::try_from(top).unwrap_or(usize::MAX))
        .collect();
    let more = records.next().is_some();
    (page, more)
}

/// `$count=true`: how many records the filter selects.
pub(crate) fn count(scan: Scan<'_>, keep: impl Fn(Rec) -> bool) -> u64 {
    scan.filter(|(_, record)| keep(*record)).count() as u64
}

/// `{base}{path}?{options}`: option names kept literal (`$top`), values form-encoded.
pub(crate) fn link(base_url: &str, path: &str, options: &[(String, String)]) -> String {
    let query: Vec<String> = options
        .iter()
        .map(|(name, value)| {
            format!(
                "{name}={}",
                url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
            )
        })
        .collect();
    if query.is_empty() {
        format!("{base_url}{path}")
    } else {
        format!("{base_url}{path}?{}", query.join("&"))
    }
}

/// A rendered page, or the API's error.
pub(crate) type Page = Result<Value, ApiError>;

//! Injected faults: the next N matching requests are answered with an error (or delayed)
//! instead of being served, so that tests can drive a client's retry, throttling and
//! single-flight paths deterministically.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::defender::Endpoint as DataEndpoint;
use crate::errors::EntraError;
use crate::request_log::Endpoint;
use crate::state::Shared;
use crate::token_endpoint::{self, TokenForm};

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultMatch {
    /// `POST` to a v1 or v2 token endpoint.
    #[default]
    Token,
    /// Every emulated Microsoft endpoint (not the `/_emulator` control API).
    Any,
    /// The Defender and Graph data APIs only (`/api/...`, `/v1.0/security/...`); `tenant`
    /// then matches the `tid` of the request's bearer token.
    Data,
    /// Both Graph security lists (`/v1.0/security/incidents`, `/v1.0/security/alerts_v2`).
    Graph,
    /// `GET /v1.0/security/incidents` only.
    #[serde(rename = "graph_incidents")]
    GraphIncidents,
    /// `GET /v1.0/security/alerts_v2` only.
    #[serde(rename = "graph_alerts")]
    GraphAlerts,
    /// `GET /api/incidents` (M365 Defender) only.
    #[serde(rename = "m365d_incidents")]
    M365dIncidents,
    /// `GET /api/alerts` (Defender for Endpoint) only.
    #[serde(rename = "mde_alerts")]
    MdeAlerts,
    /// `GET /v1.0/security/incidents/{id}` and `GET /v1.0/security/alerts_v2/{id}`.
    #[serde(rename = "graph_records")]
    GraphRecords,
    /// `PATCH /v1.0/security/incidents/{id}`.
    #[serde(rename = "graph_incident_write")]
    GraphIncidentWrite,
    /// `PATCH /v1.0/security/alerts_v2/{id}`.
    #[serde(rename = "graph_alert_write")]
    GraphAlertWrite,
    /// `POST /v1.0/security/incidents/{id}/comments` and `POST /v1.0/security/alerts_v2/{id}/comments`.
    #[serde(rename = "graph_comments")]
    GraphComments,
    /// Every Graph write: both `PATCH`es and both comment `POST`s.
    #[serde(rename = "graph_writes")]
    GraphWrites,
    /// `POST /v1.0/security/runHuntingQuery`.
    #[serde(rename = "graph_hunting")]
    GraphHunting,
}

impl FaultMatch {
    /// Matches data API routes only.
    fn data_only(self) -> bool {
        !matches!(self, FaultMatch::Token | FaultMatch::Any)
    }

    /// Matches write routes only (those an [`AfterApply`] fault may take).
    fn writes_only(self) -> bool {
        matches!(
            self,
            FaultMatch::GraphIncidentWrite
                | FaultMatch::GraphAlertWrite
                | FaultMatch::GraphComments
                | FaultMatch::GraphWrites
        )
    }

    fn matches(self, route: &Route) -> bool {
        let endpoint = route.data_endpoint;
        match self {
            FaultMatch::Any => true,
            FaultMatch::Token => route.token_endpoint.is_some(),
            FaultMatch::Data => route.data_api.is_some(),
            FaultMatch::Graph => matches!(
                endpoint,
                Some(DataEndpoint::GraphIncidents | DataEndpoint::GraphAlerts)
            ),
            FaultMatch::GraphIncidents => endpoint == Some(DataEndpoint::GraphIncidents),
            FaultMatch::GraphAlerts => endpoint == Some(DataEndpoint::GraphAlerts),
            FaultMatch::M365dIncidents => endpoint == Some(DataEndpoint::M365dIncidents),
            FaultMatch::MdeAlerts => endpoint == Some(DataEndpoint::MdeAlerts),
            FaultMatch::GraphRecords => matches!(
                endpoint,
                Some(DataEndpoint::GraphIncident | DataEndpoint::GraphAlert)
            ),
            FaultMatch::GraphIncidentWrite => endpoint == Some(DataEndpoint::GraphIncidentUpdate),
            FaultMatch::GraphAlertWrite => endpoint == Some(DataEndpoint::GraphAlertUpdate),
            FaultMatch::GraphComments => matches!(
                endpoint,
                Some(DataEndpoint::GraphIncidentComment | DataEndpoint::GraphAlertComment)
            ),
            FaultMatch::GraphWrites => matches!(
                endpoint,
                Some(
                    DataEndpoint::GraphIncidentUpdate
                        | DataEndpoint::GraphAlertUpdate
                        | DataEndpoint::GraphIncidentComment
                        | DataEndpoint::GraphAlertComment
                )
            ),
            FaultMatch::GraphHunting => endpoint == Some(DataEndpoint::GraphHunting),
        }
    }
}

/// How a write's answer is lost after the write was applied ("answer lost": the change is made,
/// the client never learns it). Sent as `"after_apply"` beside a fault's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterApply {
    /// The connection is closed without an answer.
    Drop,
    /// The answer is held for the fault's `delay_ms` (longer than the client's timeout), then
    /// sent.
    Delay,
}

/// The `Warning` of an injected 206 when the fault's `error` does not name one.
pub const DEFAULT_PARTIAL_WARNING: &str = "Microsoft/MicrosoftDefenderForIdentity/503/1200";

/// One queued fault, as posted to `/_emulator/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[serde(rename = "match", default)]
    pub matches: FaultMatch,
    /// Only requests for this tenant (GUID or any of its domains, as in the URL); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Status to answer (400-599). Absent: the request is only delayed, then served. 206 (data
    /// API matches only): the request is served, then answered `206 Partial Content` with half
    /// of the page's records and a `Warning: 199 - "{error}"` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Seconds, sent as `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// How many matching requests this fault takes.
    #[serde(default = "one")]
    pub count: u32,
    /// Wait this long before answering, e.g. to make concurrent callers overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Override of the `error` field of the answer (data APIs: the error `code`). With status
    /// 206: the `{vendor}/{provider}/{status}/{latency}` of the `Warning` header
    /// ([`DEFAULT_PARTIAL_WARNING`] when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Override of the AADSTS code of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
}

fn one() -> u32 {
    1
}

impl Fault {
    /// `count` requests of a data API route answered `206 Partial Content` with half of the
    /// page and `Warning: 199 - "{warning}"` (e.g. `Microsoft/MicrosoftDefenderForIdentity/503/1200`).
    pub fn partial(matches: FaultMatch, warning: &str, count: u32) -> Fault {
        Fault {
            error: Some(warning.to_owned()),
            ..Fault::status(matches, 206, count)
        }
    }

    /// `count` requests answered 429 with `Retry-After: {retry_after}`.
    pub fn throttle(matches: FaultMatch, retry_after: u64, count: u32) -> Fault {
        Fault {
            retry_after: Some(retry_after),
            ..Fault::status(matches, 429, count)
        }
    }

    /// `count` matching requests served as usual: with [`EmulatorHandle::push_fault_after_apply`]
    /// their answers are then lost, with [`Fault::with_delay_ms`] they are delayed.
    ///
    /// [`EmulatorHandle::push_fault_after_apply`]: crate::EmulatorHandle::push_fault_after_apply
    pub fn served(matches: FaultMatch, count: u32) -> Fault {
        Fault {
            status: None,
            ..Fault::status(matches, 500, count)
        }
    }

    /// Waits `delay_ms` before answering (with [`AfterApply::Delay`]: after serving).
    pub fn with_delay_ms(mut self, delay_ms: u64) -> Fault {
        self.delay_ms = Some(delay_ms);
        self
    }

    /// Only requests for this tenant (GUID or domain).
    pub fn for_tenant(mut self, tenant: &str) -> Fault {
        self.tenant = Some(tenant.to_owned());
        self
    }

    /// `count` requests answered `status`.
    pub fn status(matches: FaultMatch, status: u16, count: u32) -> Fault {
        Fault {
            matches,
            tenant: None,
            status: Some(status),
            retry_after: None,
            count,
            delay_ms: None,
            error: None,
            error_code: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("count must be at least 1".to_owned());
        }
        match self.status {
            Some(206) if self.matches.data_only() => {
                let warning = self.error.as_deref().unwrap_or(DEFAULT_PARTIAL_WARNING);
                if warning.is_empty()
                    || warning.len() > 200
                    || !warning.chars().all(|c| c.is_ascii_graphic() && c != '"')
                {
                    return Err(
                        "a 206 fault's error must be printable ASCII without quotes or spaces, e.g. Microsoft/MicrosoftDefenderForIdentity/503/1200".to_owned(),
                    );
                }
                Ok(())
            }
            Some(206) => Err(
                "status 206 needs a data API match (data, graph, graph_incidents, graph_alerts, m365d_incidents, mde_alerts)".to_owned(),
            ),
            Some(status) if !(400..=599).contains(&status) => {
                Err(format!("status {status} is not an error status (400-599)"))
            }
            None if self.delay_ms.is_none() => {
                Err("a fault needs a status, a delay_ms, or both".to_owned())
            }
            _ => Ok(()),
        }
    }

    /// Validation of a fault that loses the answer of an applied write.
    pub(crate) fn validate_after_apply(&self, after: AfterApply) -> Result<(), String> {
        if self.count == 0 {
            return Err("count must be at least 1".to_owned());
        }
        if !self.matches.writes_only() {
            return Err("after_apply needs a write match (graph_incident_write, graph_alert_write, graph_comments, graph_writes)".to_owned());
        }
        if self.status.is_some() {
            return Err("after_apply serves the request: it takes no status".to_owned());
        }
        match (after, self.delay_ms) {
            (AfterApply::Drop, Some(_)) => Err(
                "after_apply drop takes no delay_ms (the connection is closed at once)".to_owned(),
            ),
            (AfterApply::Delay, None) => {
                Err("after_apply delay needs delay_ms: how long the answer is held".to_owned())
            }
            _ => Ok(()),
        }
    }

    fn entra_error(&self, status: StatusCode) -> EntraError {
        let mut error = EntraError::transient(status);
        if let Some(name) = &self.error {
            error.error.clone_from(name);
        }
        if let Some(code) = self.error_code {
            error.code = code;
        }
        error.retry_after = self.retry_after;
        error
    }
}

/// One queued fault: a [`Fault`], and for a write whose answer is lost, how.
#[derive(Debug, Clone)]
struct Queued {
    fault: Fault,
    after_apply: Option<AfterApply>,
}

/// Pending faults, consumed in the order they were queued.
#[derive(Default)]
pub(crate) struct FaultQueue {
    pending: VecDeque<Queued>,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault) {
        self.pending.push_back(Queued {
            fault,
            after_apply: None,
        });
    }

    pub(crate) fn push_after_apply(&mut self, fault: Fault, after_apply: AfterApply) {
        self.pending.push_back(Queued {
            fault,
            after_apply: Some(after_apply),
        });
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    pub(crate) fn pending(&self) -> Vec<Fault> {
        self.pending
            .iter()
            .map(|queued| queued.fault.clone())
            .collect()
    }

    /// The pending faults as the control API shows them (`after_apply` beside the fields).
    pub(crate) fn pending_json(&self) -> Vec<serde_json::Value> {
        self.pending
            .iter()
            .map(|queued| {
                let mut value = serde_json::to_value(&queued.fault).unwrap_or_default();
                if let (Some(after), Some(object)) = (queued.after_apply, value.as_object_mut()) {
                    object.insert("after_apply".to_owned(), serde_json::json!(after));
                }
                value
            })
            .collect()
    }

    /// Takes one use of the first fault that matches; the fault goes once its count is spent.
    fn take(
        &mut self,
        route: &Route,
        same_tenant: impl Fn(&str) -> bool,
    ) -> Option<(Fault, Option<AfterApply>)> {
        let index = self.pending.iter().position(|queued| {
            queued.fault.matches.matches(route)
                && queued.fault.tenant.as_deref().is_none_or(&same_tenant)
        })?;
        let queued = &mut self.pending[index];
        queued.fault.count -= 1;
        let taken = (queued.fault.clone(), queued.after_apply);
        if queued.fault.count == 0 {
            self.pending.remove(index);
        }
        Some(taken)
    }
}

/// What the fault matcher needs to know about a request.
struct Route {
    tenant: String,
    token_endpoint: Option<Endpoint>,
    data_api: Option<crate::defender::Api>,
    data_endpoint: Option<DataEndpoint>,
}

impl Route {
    fn of(method: &Method, path: &str) -> Route {
        let mut segments = path.trim_start_matches('/').split('/');
        let tenant = segments.next().unwrap_or_default().to_owned();
        let rest: Vec<&str> = segments.collect();
        let token_endpoint = match (method == Method::POST, rest.as_slice()) {
            (true, ["oauth2", "token"]) => Some(Endpoint::V1),
            (true, ["oauth2", "v2.0", "token"]) => Some(Endpoint::V2),
            _ => None,
        };
        Route {
            tenant,
            token_endpoint,
            data_api: crate::defender::api_of_path(path),
            data_endpoint: crate::defender::endpoint_of_request(method, path),
        }
    }
}

impl crate::handle::EmulatorHandle {
    /// Queues a fault that serves a write and then loses its answer ([`AfterApply`]): the
    /// change is made, the client sees a dropped connection or no answer before its timeout.
    pub fn push_fault_after_apply(
        &self,
        fault: Fault,
        after_apply: AfterApply,
    ) -> Result<(), crate::handle::ControlError> {
        fault
            .validate_after_apply(after_apply)
            .map_err(crate::handle::ControlError::Invalid)?;
        self.shared.faults().push_after_apply(fault, after_apply);
        Ok(())
    }

    /// The pending faults as JSON, `after_apply` included (`GET /_emulator/faults`).
    pub(crate) fn pending_faults_json(&self) -> Vec<serde_json::Value> {
        self.shared.faults().pending_json()
    }
}

/// Parses the body of `POST /_emulator/faults`: a [`Fault`], optionally with `after_apply`.
pub(crate) fn parse_posted(body: &[u8]) -> Result<(Fault, Option<AfterApply>), String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("invalid body: {error}"))?;
    let after_apply = match value.as_object_mut().and_then(|o| o.remove("after_apply")) {
        None | Some(serde_json::Value::Null) => None,
        Some(after) => Some(
            serde_json::from_value(after)
                .map_err(|error| format!("invalid body: after_apply: {error}"))?,
        ),
    };
    let fault = serde_json::from_value(value).map_err(|error| format!("invalid body: {error}"))?;
    Ok((fault, after_apply))
}

/// Token request bodies are small; anything larger is not a token request worth recording.
const BODY_LIMIT: usize = 1 << 20;

/// Middleware in front of every emulated Microsoft endpoint.
pub(crate) async fn inject(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let mut route = Route::of(request.method(), request.uri().path());
    if route.data_api.is_some() {
        // A data API names its tenant in the token, not in the path.
        route.tenant = crate::defender::token_tenant(request.headers()).unwrap_or_default();
    }
    let fault = {
        let directory = shared.directory();
        let request_tenant = directory.tenant_id_of(&route.tenant);
        shared.faults().take(&route, |fault_tenant| {
            fault_tenant.eq_ignore_ascii_case(&route.tenant)
                || (request_tenant.is_some()
                    && directory.tenant_id_of(fault_tenant) == request_tenant)
        })
    };
    let Some((fault, after_apply)) = fault else {
        return next.run(request).await;
    };
    if let Some(after_apply) = after_apply {
        // Served first: the write is applied, then its answer lost.
        let response = next.run(request).await;
        tracing::info!(
            ?after_apply,
            status = response.status().as_u16(),
            "answer lost after the write"
        );
        return match after_apply {
            AfterApply::Drop => crate::defender::dropped_connection(response),
            AfterApply::Delay => {
                tokio::time::sleep(Duration::from_millis(fault.delay_ms.unwrap_or_default())).await;
                response
            }
        };
    }
    if let Some(delay) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let Some(status) = fault.status.and_then(|s| StatusCode::from_u16(s).ok()) else {
        return next.run(request).await;
    };
    if status == StatusCode::PARTIAL_CONTENT {
        let warning = fault
            .error
            .clone()
            .unwrap_or_else(|| DEFAULT_PARTIAL_WARNING.to_owned());
        tracing::info!(path = request.uri().path(), %warning, "injected partial content");
        let response = next.run(request).await;
        return crate::defender::partial_response(response, &warning).await;
    }
    tracing::info!(
        path = request.uri().path(),
        status = status.as_u16(),
        "injected fault"
    );
    let (parts, body) = request.into_parts();
    if let Some(api) = route.data_api {
        return crate::defender::fault_response(
            api,
            status,
            fault.retry_after,
            fault.error.as_deref(),
            &parts.headers,
        );
    }
    let error = fault.entra_error(status).with_correlation(&parts.headers);
    if let Some(endpoint) = route.token_endpoint {
        let body = to_bytes(body, BODY_LIMIT).await.unwrap_or_default();
        let form = TokenForm::parse(&body);
        let mut record = token_endpoint::describe(&shared, &route.tenant, endpoint, &form);
        record.status = status.as_u16();
        record.error = Some(error.error.clone());
        record.error_code = Some(error.code);
        record.injected = true;
        shared.log().push(record);
    }
    error.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_route(tenant: &str) -> Route {
        Route::of(&Method::POST, &format!("/{tenant}/oauth2/v2.0/token"))
    }

    #[test]
    fn routes_are_recognised() {
        let v1 = Route::of(&Method::POST, "/contoso.com/oauth2/token");
        assert_eq!(
            (v1.tenant.as_str(), v1.token_endpoint),
            ("contoso.com", Some(Endpoint::V1))
        );
        let keys = Route::of(&Method::GET, "/common/discovery/v2.0/keys");
        assert_eq!(keys.token_endpoint, None);
        let get_token = Route::of(&Method::GET, "/x.com/oauth2/v2.0/token");
        assert_eq!(get_token.token_endpoint, None);
    }

    #[test]
    fn faults_are_taken_in_order_and_counted() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::status(FaultMatch::Token, 429, 2));
        queue.push(Fault::status(FaultMatch::Any, 503, 1));
        let route = token_route("a.com");
        let taken: Vec<Option<u16>> = (0..4)
            .map(|_| queue.take(&route, |_| true).and_then(|(f, _)| f.status))
            .collect();
        assert_eq!(taken, [Some(429), Some(429), Some(503), None]);
    }

    #[test]
    fn token_faults_skip_other_endpoints_and_other_tenants() {
        let mut queue = FaultQueue::default();
        let mut fault = Fault::status(FaultMatch::Token, 429, 1);
        fault.tenant = Some("b.com".to_owned());
        queue.push(fault);
        let keys = Route::of(&Method::GET, "/b.com/discovery/v2.0/keys");
        assert!(queue.take(&keys, |_| true).is_none());
        assert!(
            queue
                .take(&token_route("a.com"), |t| t == "a.com")
                .is_none()
        );
        assert!(
            queue
                .take(&token_route("b.com"), |t| t == "b.com")
                .is_some()
        );
        assert!(queue.pending().is_empty());
    }

    #[test]
    fn validation_rejects_useless_faults() {
        let mut fault = Fault::status(FaultMatch::Token, 200, 1);
        assert!(fault.validate().is_err());
        fault.status = None;
        assert!(fault.validate().is_err());
        fault.delay_ms = Some(10);
        assert!(fault.validate().is_ok());
        fault.count = 0;
        assert!(fault.validate().is_err());
    }

    #[test]
    fn route_matches_pick_one_endpoint() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::status(FaultMatch::GraphAlerts, 503, 1));
        let incidents = Route::of(&Method::GET, "/v1.0/security/incidents");
        let alerts = Route::of(&Method::GET, "/v1.0/security/alerts_v2");
        assert!(queue.take(&incidents, |_| true).is_none());
        assert!(queue.take(&token_route("a.com"), |_| true).is_none());
        assert!(queue.take(&alerts, |_| true).is_some());
        queue.push(Fault::status(FaultMatch::Graph, 503, 2));
        assert!(queue.take(&incidents, |_| true).is_some());
        assert!(queue.take(&alerts, |_| true).is_some());
        let fault: Fault =
            serde_json::from_str(r#"{"match":"graph_incidents","status":206}"#).unwrap();
        assert_eq!(fault.matches, FaultMatch::GraphIncidents);
        assert!(fault.validate().is_ok());
        assert!(Fault::status(FaultMatch::Token, 206, 1).validate().is_err());
        assert!(
            Fault::partial(FaultMatch::Data, "has \"quotes\"", 1)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn parses_the_documented_shape() {
        let fault: Fault = serde_json::from_str(
            r#"{"match":"any","tenant":"contoso.com","status":429,"retry_after":7,"count":3}"#,
        )
        .unwrap();
        assert_eq!(fault.matches, FaultMatch::Any);
        assert_eq!(fault.retry_after, Some(7));
        assert_eq!(fault.count, 3);
        let error = fault.entra_error(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((error.code, error.retry_after), (90055, Some(7)));
    }
}

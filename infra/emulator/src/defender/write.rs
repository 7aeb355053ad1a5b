//! Graph's single records and writes (reference §11):
//!
//! - `GET /v1.0/security/incidents/{id}` (`$expand=alerts` optional), `GET …/alerts_v2/{id}`;
//! - `PATCH /v1.0/security/incidents/{id}` and `PATCH …/alerts_v2/{id}`: 200 with the updated
//!   record;
//! - `POST …/incidents/{id}/comments` and `POST …/alerts_v2/{id}/comments`: 200 with the record's
//!   whole comment list. Not idempotent: a retried POST adds a second copy, as at Microsoft.
//!
//! Every change gives the record (an alert: and its incident) a new last-update time, strictly
//! later than any before, so the next list filtered on `lastUpdateDateTime` sees it. Checks run
//! in the lists' order: token, role (writes: the ReadWrite role; delegated: the scope and a portal
//! role that may write), rate limit, body, record.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::auth::Caller;
use super::data::{Rec, TenantData};
use super::edits::{self, Target, Update};
use super::errors::{self, ApiError};
use super::facts::{self, Comment};
use super::store::lock;
use super::{
    Api, Context, Endpoint, authorize, graph, prefers_unknown_enum_members, throttle_graph, time,
};
use crate::entra::directory::TenantLookup;
use crate::state::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v1.0/security/incidents/{id}",
            get(get_incident).patch(update_incident),
        )
        .route(
            "/v1.0/security/incidents/{id}/comments",
            post(comment_incident),
        )
        .route(
            "/v1.0/security/alerts_v2/{id}",
            get(get_alert).patch(update_alert),
        )
        .route(
            "/v1.0/security/alerts_v2/{id}/comments",
            post(comment_alert),
        )
}

/// Who made a change, as the records show it.
pub(crate) struct Author {
    /// M365 Defender `createdBy` of a comment.
    pub by: String,
    /// Graph `createdByDisplayName` of a comment.
    pub display: String,
    /// Graph `lastModifiedBy` of an incident.
    pub last_modified_by: String,
}

impl Author {
    /// An app (its display name) or a delegated user (their upn, as Graph's examples show).
    fn of(shared: &Shared, caller: &Caller) -> Author {
        let directory = shared.directory();
        match &caller.user_oid {
            Some(oid) => {
                let upn = match directory.lookup_tenant(&caller.tenant_id) {
                    TenantLookup::Found(tenant) => tenant.user(oid).map(|user| user.upn.clone()),
                    _ => None,
                }
                .unwrap_or_else(|| oid.clone());
                Author {
                    by: upn.clone(),
                    display: upn.clone(),
                    last_modified_by: format!("User-{upn}"),
                }
            }
            None => {
                let display = directory
                    .app(&caller.client_id)
                    .map(|app| app.display_name.clone())
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| caller.client_id.clone());
                Author {
                    by: display.clone(),
                    display,
                    last_modified_by: format!("API-App:{}", caller.client_id),
                }
            }
        }
    }

    /// Someone working in the Defender portal (a simulated portal edit).
    pub(crate) fn portal(name: &str) -> Author {
        Author {
            by: name.to_owned(),
            display: name.to_owned(),
            last_modified_by: format!("User-{name}"),
        }
    }
}

/// What a record renderer needs, for a tenant.
fn context<'a>(shared: &'a Shared, tenant_id: &'a str, headers: &HeaderMap) -> Context<'a> {
    Context {
        base_url: &shared.base_url,
        tenant_id,
        settings: shared.defender.settings(),
        unknown_enum_members: prefers_unknown_enum_members(headers),
    }
}

/// Authorization and the rate limit of a record call.
fn admit(shared: &Shared, endpoint: Endpoint, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let caller = authorize(shared, endpoint, headers)?;
    match throttle_graph(shared, &caller) {
        Some(refusal) => Err(refusal),
        None => Ok(caller),
    }
}

/// The JSON body of a write, or Graph's 400.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::graph_bad_request(
            "Empty Payload. JSON content expected.",
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        ApiError::graph_bad_request(format!("Invalid JSON in the request body: {error}"))
    })
}

/// The index of an incident id (a string of digits), or Graph's 404.
pub(crate) fn incident_index(data: &TenantData, id: &str) -> Result<u32, ApiError> {
    id.trim()
        .parse::<u64>()
        .ok()
        .and_then(|number| data.incident_index(number))
        .ok_or_else(|| ApiError::graph_not_found(format!("Incident '{id}' was not found.")))
}

/// The record of an `alerts_v2` id, or Graph's 404. Ids are computed from records, so this
/// scans the tenant's alerts of the id's kind once and remembers what it found.
pub(crate) fn alert_record(data: &mut TenantData, id: &str) -> Result<Rec, ApiError> {
    if let Some(rec) = data.alert_ids.get(id) {
        return Ok(*rec);
    }
    let not_found = || ApiError::graph_not_found(format!("Alert '{id}' was not found."));
    let prefix = id.get(..2).ok_or_else(not_found)?;
    let found = data
        .alerts_with_prefix(prefix)
        .find(|rec| facts::graph_alert_id(data, *rec) == id)
        .ok_or_else(not_found)?;
    data.alert_ids.insert(id.to_owned(), found);
    Ok(found)
}

/// `$expand=alerts` (and `$select`, ignored) on a single incident; anything else is a 400.
fn expand_alerts(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut expand = false;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match name.to_ascii_lowercase().as_str() {
            "$expand" if value.eq_ignore_ascii_case("alerts") => expand = true,
            "$expand" => {
                return Err(ApiError::graph_bad_request(format!(
                    "The query specified in the URI is not valid. Could not find a property named '{value}' on type 'microsoft.graph.security.incident'."
                )));
            }
            "$select" => {}
            other if other.starts_with('$') => {
                return Err(ApiError::graph_bad_request(format!(
                    "The query specified in the URI is not valid. The query option '{name}' is not supported on a single incident."
                )));
            }
            _ => {}
        }
    }
    Ok(expand)
}

fn answer(result: Result<Value, ApiError>, headers: &HeaderMap) -> Response {
    match result {
        Ok(body) => errors::page_response(Api::Graph, &body, headers),
        Err(error) => error.render(headers),
    }
}

/// A single incident in Graph's shape, with its `@odata.context`.
pub(crate) fn incident_json(
    data: &TenantData,
    index: u32,
    context: &Context<'_>,
    expand: bool,
) -> Value {
    let mut value = graph::incident(data, index, context, expand);
    if let Some(object) = value.as_object_mut() {
        let mut with_context = serde_json::Map::new();
        with_context.insert(
            "@odata.context".to_owned(),
            json!(format!(
                "{}/v1.0/$metadata#security/incidents/$entity",
                context.base_url
            )),
        );
        with_context.append(object);
        return Value::Object(with_context);
    }
    value
}

/// A single alert in Graph's shape, with its `@odata.context`.
pub(crate) fn alert_json(data: &TenantData, rec: Rec, context: &Context<'_>) -> Value {
    let mut value = graph::alert(data, &facts::alert(data, rec), context);
    if let Some(object) = value.as_object_mut() {
        let mut with_context = serde_json::Map::new();
        with_context.insert(
            "@odata.context".to_owned(),
            json!(format!(
                "{}/v1.0/$metadata#security/alerts_v2/$entity",
                context.base_url
            )),
        );
        with_context.append(object);
        return Value::Object(with_context);
    }
    value
}

async fn get_incident(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = match admit(&shared, Endpoint::GraphIncident, &headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.render(&headers),
    };
    let result = expand_alerts(raw.as_deref()).and_then(|expand| {
        let tenant = shared.defender.tenant(&caller.tenant_id);
        let data = lock(&tenant);
        let index = incident_index(&data, &id)?;
        let context = context(&shared, &caller.tenant_id, &headers);
        Ok(incident_json(&data, index, &context, expand))
    });
    answer(result, &headers)
}

async fn get_alert(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match admit(&shared, Endpoint::GraphAlert, &headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.render(&headers),
    };
    let tenant = shared.defender.tenant(&caller.tenant_id);
    let mut data = lock(&tenant);
    let result = alert_record(&mut data, &id).map(|rec| {
        let context = context(&shared, &caller.tenant_id, &headers);
        alert_json(&data, rec, &context)
    });
    answer(result, &headers)
}

/// Applies an incident update: validation, the determination rule (when on), the written
/// values, a new last-update time (none for an empty update). The caller holds the lock.
pub(crate) fn apply_incident_update(
    data: &mut TenantData,
    index: u32,
    update: &Update,
    author: &Author,
    enforce_rule: bool,
) -> Result<(), ApiError> {
    if let Some(determination) = update.determination
        && enforce_rule
    {
        let classification = match update.classification {
            Some(classification) => classification,
            None => facts::incident(data, index).classification,
        };
        edits::check_determination_rule(determination, classification)
            .map_err(ApiError::graph_bad_request)?;
    }
    if update.is_empty() {
        return Ok(());
    }
    let edit = data.edits.incidents.entry(index).or_default();
    edits::apply_to_incident(edit, update, &author.last_modified_by);
    data.stamp(&[Rec::Incident(index)], time::now());
    Ok(())
}

/// Applies an alert update; the alert and its incident get a new last-update time.
pub(crate) fn apply_alert_update(data: &mut TenantData, rec: Rec, update: &Update) {
    if update.is_empty() {
        return;
    }
    let at = data.stamp(&records_of_alert(data, rec), time::now());
    let edit = data.edits.alerts.entry(rec).or_default();
    edits::apply_to_alert(edit, update, at);
}

/// An alert and the incident that owns it (if any): both move when the alert changes.
fn records_of_alert(data: &TenantData, rec: Rec) -> Vec<Rec> {
    let mut records = vec![rec];
    if let Some(incident) = data.incident_of(rec) {
        records.push(Rec::Incident(incident));
    }
    records
}

/// One write (a PATCH or a comment) to a target of the caller's tenant: admitted, the JSON body
/// read, `apply` run under the tenant's lock, its result answered as Graph would.
fn write(
    shared: &Shared,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &Bytes,
    apply: impl FnOnce(Value, &Caller, &mut TenantData) -> Result<Value, ApiError>,
) -> Response {
    let caller = match admit(shared, endpoint, headers) {
        Ok(caller) => caller,
        Err(refusal) => return refusal.render(headers),
    };
    let result = json_body(body).and_then(|body| {
        let tenant = shared.defender.tenant(&caller.tenant_id);
        let mut data = lock(&tenant);
        apply(body, &caller, &mut data)
    });
    answer(result, headers)
}

async fn update_incident(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let enforce_rule = shared.defender.settings().incident_determination_rule;
    write(
        &shared,
        Endpoint::GraphIncidentUpdate,
        &headers,
        &body,
        |body, caller, data| {
            let update = edits::parse_update(Target::Incident, &body)
                .map_err(ApiError::graph_bad_request)?;
            let index = incident_index(data, &id)?;
            let author = Author::of(&shared, caller);
            apply_incident_update(data, index, &update, &author, enforce_rule)?;
            tracing::info!(tenant = %caller.tenant_id, incident = %id, "incident updated");
            let context = context(&shared, &caller.tenant_id, &headers);
            Ok(incident_json(data, index, &context, false))
        },
    )
}

async fn update_alert(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(
        &shared,
        Endpoint::GraphAlertUpdate,
        &headers,
        &body,
        |body, caller, data| {
            let update =
                edits::parse_update(Target::Alert, &body).map_err(ApiError::graph_bad_request)?;
            let rec = alert_record(data, &id)?;
            apply_alert_update(data, rec, &update);
            tracing::info!(tenant = %caller.tenant_id, alert = %id, "alert updated");
            let context = context(&shared, &caller.tenant_id, &headers);
            Ok(alert_json(data, rec, &context))
        },
    )
}

/// The text of a comment body: `{"@odata.type": "microsoft.graph.security.alertComment",
/// "comment": "…"}` (`@odata.type` optional), or the message of Graph's 400.
fn comment_text(body: &Value) -> Result<String, String> {
    let object = body
        .as_object()
        .ok_or("The request body must be a JSON object.")?;
    let mut text = None;
    for (name, value) in object {
        match name.as_str() {
            "@odata.type" => {
                if value.as_str().map(|t| t.trim_start_matches('#'))
                    != Some("microsoft.graph.security.alertComment")
                {
                    return Err("The @odata.type of a comment must be 'microsoft.graph.security.alertComment'.".to_owned());
                }
            }
            "comment" => {
                text = Some(
                    value
                        .as_str()
                        .ok_or("The property 'comment' must be a string.")?
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "The property '{other}' does not exist on type 'microsoft.graph.security.alertComment'."
                ));
            }
        }
    }
    match text {
        Some(text) if !text.trim().is_empty() => Ok(text),
        Some(_) => Err("The property 'comment' must not be empty.".to_owned()),
        None => Err("The property 'comment' is required.".to_owned()),
    }
}

/// Adds a comment to an incident (moving its last-update time); returns the whole list.
pub(crate) fn add_incident_comment(
    data: &mut TenantData,
    index: u32,
    text: String,
    author: &Author,
) -> Vec<Comment> {
    let at = data.stamp(&[Rec::Incident(index)], time::now());
    let edit = data.edits.incidents.entry(index).or_default();
    edit.comments.push(Comment {
        text,
        by: author.by.clone(),
        by_display: author.display.clone(),
        at,
    });
    edit.last_modified_by = Some(author.last_modified_by.clone());
    facts::incident(data, index).comments
}

/// Adds a comment to an alert (moving it and its incident); returns the alert's whole list.
pub(crate) fn add_alert_comment(
    data: &mut TenantData,
    rec: Rec,
    text: String,
    author: &Author,
) -> Vec<Comment> {
    let at = data.stamp(&records_of_alert(data, rec), time::now());
    data.edits
        .alerts
        .entry(rec)
        .or_default()
        .comments
        .push(Comment {
            text,
            by: author.by.clone(),
            by_display: author.display.clone(),
            at,
        });
    facts::alert(data, rec).comments
}

fn comment_list(base_url: &str, owner: &str, comments: &[Comment]) -> Value {
    json!({
        "@odata.context": format!("{base_url}/v1.0/$metadata#security/{owner}/comments"),
        "value": graph::comments(comments),
    })
}

async fn comment_incident(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    comment(&shared, Target::Incident, &id, &headers, &body)
}

async fn comment_alert(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    comment(&shared, Target::Alert, &id, &headers, &body)
}

/// `POST …/comments`: the comment added, the target's whole comment list answered.
fn comment(
    shared: &Shared,
    target: Target,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let endpoint = match target {
        Target::Incident => Endpoint::GraphIncidentComment,
        Target::Alert => Endpoint::GraphAlertComment,
    };
    write(shared, endpoint, headers, body, |body, caller, data| {
        let text = comment_text(&body).map_err(ApiError::graph_bad_request)?;
        let author = Author::of(shared, caller);
        let (owner, comments) = match target {
            Target::Incident => {
                let index = incident_index(data, id)?;
                let comments = add_incident_comment(data, index, text, &author);
                (format!("incidents('{id}')"), comments)
            }
            Target::Alert => {
                let rec = alert_record(data, id)?;
                let comments = add_alert_comment(data, rec, text, &author);
                (format!("alerts_v2('{id}')"), comments)
            }
        };
        tracing::info!(tenant = %caller.tenant_id, target = ?target, id, "comment added");
        Ok(comment_list(&shared.base_url, &owner, &comments))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_bodies_follow_the_documented_shape() {
        assert_eq!(
            comment_text(
                &json!({"@odata.type": "microsoft.graph.security.alertComment",
                                 "comment": "hi"})
            )
            .unwrap(),
            "hi"
        );
        assert_eq!(comment_text(&json!({"comment": "hi"})).unwrap(), "hi");
        for body in [
            json!({}),
            json!({"comment": ""}),
            json!({"comment": 3}),
            json!({"comment": "x", "author": "me"}),
            json!({"@odata.type": "#microsoft.graph.security.incident", "comment": "x"}),
            json!("x"),
        ] {
            assert!(comment_text(&body).is_err(), "{body}");
        }
    }

    #[test]
    fn single_incidents_take_expand_and_select_only() {
        assert!(!expand_alerts(None).unwrap());
        assert!(expand_alerts(Some("$expand=alerts&$select=id")).unwrap());
        assert!(expand_alerts(Some("$expand=comments")).is_err());
        assert!(expand_alerts(Some("$top=1")).is_err());
    }
}

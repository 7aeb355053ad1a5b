//! Control of single records, for two-way sync tests: read what an incident or alert really
//! holds (its Graph JSON, comments and tags included) without a token, a rate limit or a fault,
//! and simulate an analyst changing it in the Defender portal (which moves its last-update
//! time, as any change does).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::data::{Rec, TenantData};
use super::edits::{self, Target};
use super::errors::ApiError;
use super::store::lock;
use super::write::{self, Author};
use super::{Context, time};
use crate::handle::{ControlError, EmulatorHandle};
use crate::state::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/_emulator/tenants/{tenant}/incidents/{id}",
            get(incident_truth),
        )
        .route(
            "/_emulator/tenants/{tenant}/incidents/{id}/portal-edit",
            post(portal_edit_incident),
        )
        .route("/_emulator/tenants/{tenant}/alerts/{id}", get(alert_truth))
        .route(
            "/_emulator/tenants/{tenant}/alerts/{id}/portal-edit",
            post(portal_edit_alert),
        )
}

fn control_error(error: ApiError) -> ControlError {
    if error.status == StatusCode::NOT_FOUND {
        ControlError::NotFound(error.message)
    } else {
        ControlError::Invalid(error.message)
    }
}

/// A portal edit's body: the update properties of the record, plus `comment` (added as a
/// comment) and `by` (the analyst's name).
struct PortalEdit {
    update: edits::Update,
    comment: Option<String>,
    by: Option<String>,
}

fn portal_edit(target: Target, body: &Value) -> Result<PortalEdit, ControlError> {
    let mut object = body
        .as_object()
        .cloned()
        .ok_or_else(|| ControlError::Invalid("the body must be a JSON object".to_owned()))?;
    let text = |name: &str, value: Value| match value {
        Value::String(text) if !text.trim().is_empty() => Ok(text),
        _ => Err(ControlError::Invalid(format!(
            "{name} must be a non-empty string"
        ))),
    };
    let comment = object
        .remove("comment")
        .map(|value| text("comment", value))
        .transpose()?;
    let by = object
        .remove("by")
        .map(|value| text("by", value))
        .transpose()?;
    let update =
        edits::parse_update(target, &Value::Object(object)).map_err(ControlError::Invalid)?;
    Ok(PortalEdit {
        update,
        comment,
        by,
    })
}

impl EmulatorHandle {
    fn with_tenant<T>(
        &self,
        tenant: &str,
        work: impl FnOnce(&mut TenantData, &Context<'_>) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let tenant_id = self
            .shared
            .directory()
            .tenant_id_of(tenant)
            .ok_or_else(|| ControlError::NotFound(format!("no tenant {tenant}")))?;
        let context = Context {
            base_url: &self.shared.base_url,
            tenant_id: &tenant_id,
            settings: self.shared.defender.settings(),
            unknown_enum_members: true,
        };
        let data = self.shared.defender.tenant(&tenant_id);
        let mut data = lock(&data);
        work(&mut data, &context)
    }

    /// An incident as Graph shows it (comments, tags, last update), read without a token.
    pub fn incident_truth(&self, tenant: &str, id: &str) -> Result<Value, ControlError> {
        self.with_tenant(tenant, |data, context| {
            let index = write::incident_index(data, id).map_err(control_error)?;
            Ok(write::incident_json(data, index, context, false))
        })
    }

    /// An `alerts_v2` record as Graph shows it, read without a token.
    pub fn alert_truth(&self, tenant: &str, id: &str) -> Result<Value, ControlError> {
        self.with_tenant(tenant, |data, context| {
            let rec = write::alert_record(data, id).map_err(control_error)?;
            Ok(write::alert_json(data, rec, context))
        })
    }

    /// An analyst's change in the portal: the update properties of a Graph PATCH (validated the
    /// same way, without the determination rule), `comment` and `by`. The incident's last-update
    /// time moves even for an empty edit. Returns the incident as Graph shows it.
    pub fn portal_edit_incident(
        &self,
        tenant: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ControlError> {
        let edit = portal_edit(Target::Incident, body)?;
        self.with_tenant(tenant, |data, context| {
            let index = write::incident_index(data, id).map_err(control_error)?;
            let author = Author::portal(&edit.by.clone().unwrap_or_else(|| analyst(data)));
            write::apply_incident_update(data, index, &edit.update, &author, false)
                .map_err(control_error)?;
            match edit.comment {
                Some(text) => {
                    write::add_incident_comment(data, index, text, &author);
                }
                None if edit.update.is_empty() => {
                    data.stamp(&[Rec::Incident(index)], time::now());
                    data.edits
                        .incidents
                        .entry(index)
                        .or_default()
                        .last_modified_by = Some(author.last_modified_by.clone());
                }
                None => {}
            }
            tracing::info!(incident = %id, "portal edit of an incident");
            Ok(write::incident_json(data, index, context, false))
        })
    }

    /// An analyst's change of an alert in the portal (`status`, `assignedTo`, `classification`,
    /// `determination`, `customDetails`, `comment`, `by`); the alert and its incident move.
    pub fn portal_edit_alert(
        &self,
        tenant: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ControlError> {
        let edit = portal_edit(Target::Alert, body)?;
        self.with_tenant(tenant, |data, context| {
            let rec = write::alert_record(data, id).map_err(control_error)?;
            let author = Author::portal(&edit.by.clone().unwrap_or_else(|| analyst(data)));
            write::apply_alert_update(data, rec, &edit.update);
            match edit.comment {
                Some(text) => {
                    write::add_alert_comment(data, rec, text, &author);
                }
                None if edit.update.is_empty() => {
                    let mut records = vec![rec];
                    if let Some(incident) = data.incident_of(rec) {
                        records.push(Rec::Incident(incident));
                    }
                    data.stamp(&records, time::now());
                }
                None => {}
            }
            tracing::info!(alert = %id, "portal edit of an alert");
            Ok(write::alert_json(data, rec, context))
        })
    }
}

/// The analyst a portal edit is made by when the body names none.
fn analyst(data: &TenantData) -> String {
    format!("portal.analyst@{}", data.domain)
}

fn answer(result: Result<Value, ControlError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

fn json(body: &Bytes) -> Result<Value, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(body)
        .map_err(|error| ControlError::Invalid(format!("invalid body: {error}")))
}

async fn incident_truth(
    State(shared): State<Arc<Shared>>,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    answer(EmulatorHandle { shared }.incident_truth(&tenant, &id))
}

async fn alert_truth(
    State(shared): State<Arc<Shared>>,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    answer(EmulatorHandle { shared }.alert_truth(&tenant, &id))
}

async fn portal_edit_incident(
    State(shared): State<Arc<Shared>>,
    Path((tenant, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(
        json(&body)
            .and_then(|body| EmulatorHandle { shared }.portal_edit_incident(&tenant, &id, &body)),
    )
}

async fn portal_edit_alert(
    State(shared): State<Arc<Shared>>,
    Path((tenant, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    answer(
        json(&body)
            .and_then(|body| EmulatorHandle { shared }.portal_edit_alert(&tenant, &id, &body)),
    )
}

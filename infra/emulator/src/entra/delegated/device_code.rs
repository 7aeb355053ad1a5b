//! Device code: `POST /{tenant}/oauth2/v2.0/devicecode` starts a flow; the user approves or
//! declines it on `GET /devicelogin` (or through the control API); the client polls the token
//! endpoint (`grants.rs`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use serde_json::json;

use super::{DeviceRecord, DeviceState, Target, opaque, parse_scope};
use crate::entra::consent::page::{BASE_CSP, STYLE, escape, with_headers};
use crate::entra::directory::TenantLookup;
use crate::entra::errors::EntraError;
use crate::handle::ControlError;
use crate::state::Shared;

/// The device login page's form posts here.
pub(crate) const DECISION_PATH: &str = "/_emulator/device/decision";

/// Letters and digits that cannot be mistaken for one another.
const USER_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn user_code() -> String {
    let bytes = uuid::Uuid::new_v4();
    bytes
        .as_bytes()
        .iter()
        .take(9)
        .map(|b| char::from(USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()]))
        .collect()
}

fn normalize_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

pub(crate) async fn start(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match start_flow(&shared, &segment, &body) {
        Ok(body) => {
            let mut response = Json(body).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, no-cache"),
            );
            response
        }
        Err(error) => {
            tracing::info!(code = error.code, "device code request refused");
            error.with_correlation(&headers).into_response()
        }
    }
}

fn start_flow(
    shared: &Shared,
    segment: &str,
    body: &[u8],
) -> Result<serde_json::Value, EntraError> {
    let values = crate::entra::consent::request_values(body);
    let directory = shared.directory();
    let tenant = match directory.lookup_tenant(segment) {
        TenantLookup::Found(tenant) => tenant,
        TenantLookup::MultiTenant => return Err(EntraError::multi_tenant_endpoint()),
        TenantLookup::Unknown => return Err(EntraError::tenant_not_found(segment)),
        TenantLookup::Malformed => return Err(EntraError::malformed_tenant(segment)),
    };
    let client_id = values
        .get("client_id")
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    let app = directory
        .app(client_id)
        .ok_or_else(|| EntraError::app_not_in_tenant(client_id, segment))?;
    if app.disabled {
        return Err(EntraError::app_disabled(&app.client_id, &app.display_name));
    }
    let scope = values
        .get("scope")
        .ok_or_else(|| EntraError::missing_parameter("scope"))?;
    parse_scope(scope, &app.client_id)?;
    let settings = directory.delegated;
    let device_code = opaque("DAQABAAEAAA", 6);
    let code = user_code();
    let expires_in = settings.device_code_lifetime_seconds;
    let verification_uri = format!("{}/devicelogin", shared.base_url);
    shared.delegated().lock().devices.insert(
        device_code.clone(),
        DeviceRecord {
            tenant_id: tenant.id.clone(),
            client_id: app.client_id.clone(),
            scope: scope.clone(),
            user_code: code.clone(),
            expires: Utc::now() + Duration::seconds(i64::try_from(expires_in).unwrap_or(900)),
            interval: settings.device_code_interval_seconds,
            last_poll: None,
            state: DeviceState::Pending,
        },
    );
    tracing::info!(tenant = %tenant.id, client_id = %app.client_id, "device code issued");
    Ok(json!({
        "user_code": code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": expires_in,
        "interval": settings.device_code_interval_seconds,
        "message": format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {code} to authenticate."
        ),
    }))
}

/// What a pending device code is for, by its user code.
struct PendingFlow {
    tenant_id: String,
    client_id: String,
    scope: String,
}

fn pending_flow(shared: &Shared, user_code: &str) -> Result<PendingFlow, ControlError> {
    let wanted = normalize_user_code(user_code);
    let inner = shared.delegated().lock();
    let record = inner
        .devices
        .values()
        .find(|record| record.user_code == wanted)
        .ok_or_else(|| ControlError::NotFound(format!("no device code with user code {wanted}")))?;
    if Utc::now() >= record.expires {
        return Err(ControlError::Invalid(format!(
            "the code {wanted} has expired"
        )));
    }
    if record.state != DeviceState::Pending {
        return Err(ControlError::Conflict(format!(
            "the code {wanted} was already approved or declined"
        )));
    }
    Ok(PendingFlow {
        tenant_id: record.tenant_id.clone(),
        client_id: record.client_id.clone(),
        scope: record.scope.clone(),
    })
}

/// Approves (as `user`, with or without MFA) or declines the device code with this user code.
pub(crate) fn decide_code(
    shared: &Shared,
    user_code: &str,
    approve: bool,
    user: Option<&str>,
    mfa: bool,
) -> Result<(), ControlError> {
    let flow = pending_flow(shared, user_code)?;
    let state = if approve {
        let user =
            user.ok_or_else(|| ControlError::Invalid("approving needs a user".to_owned()))?;
        let mut directory = shared.directory_mut();
        let tenant = directory.tenant_mut(&flow.tenant_id)?;
        let oid = tenant
            .user(user)
            .ok_or_else(|| {
                ControlError::NotFound(format!("no user {user} in tenant {}", flow.tenant_id))
            })?
            .oid
            .clone();
        if let Ok(request) = parse_scope(&flow.scope, &flow.client_id)
            && let Target::Api(resource) = request.target
            && !request.scopes.is_empty()
        {
            tenant.add_user_consent(&flow.client_id, resource, &oid, &request.scopes);
        }
        DeviceState::Approved { user_oid: oid, mfa }
    } else {
        DeviceState::Declined
    };
    let wanted = normalize_user_code(user_code);
    let mut inner = shared.delegated().lock();
    if let Some(record) = inner
        .devices
        .values_mut()
        .find(|record| record.user_code == wanted && record.state == DeviceState::Pending)
    {
        record.state = state;
    }
    Ok(())
}

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><main>\n\
         <p class=\"brand\">Microsoft (emulated sign-in)</p>\n<h1>{title}</h1>\n{body}</main></body></html>\n"
    );
    with_headers(status, html, BASE_CSP)
}

/// `GET /devicelogin[?user_code=…]`: enter the code, then sign in and accept or decline.
pub(crate) async fn page(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let values = crate::entra::consent::request_values(query.unwrap_or_default().as_bytes());
    let Some(code) = values.get("user_code") else {
        return html_page(
            StatusCode::OK,
            "Enter code",
            "<form method=\"get\" action=\"/devicelogin\">\n\
             <label for=\"user-code\">Enter the code displayed on your app or device.</label>\n\
             <input id=\"user-code\" name=\"user_code\" autocomplete=\"off\">\n\
             <button id=\"next\" type=\"submit\">Next</button>\n</form>\n",
        );
    };
    let flow = match pending_flow(&shared, code) {
        Ok(flow) => flow,
        Err(error) => {
            return html_page(
                StatusCode::BAD_REQUEST,
                "Enter code",
                &format!("<p id=\"error\">{}</p>\n", escape(&error.to_string())),
            );
        }
    };
    let directory = shared.directory();
    let app_name = directory
        .app(&flow.client_id)
        .map(|app| app.display_name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| flow.client_id.clone());
    let mut body = format!(
        "<p>Sign in to <strong id=\"app-name\">{}</strong>, which asks for \
         <code id=\"scope\">{}</code>.</p>\n\
         <form method=\"post\" action=\"{DECISION_PATH}\">\n\
         <input type=\"hidden\" name=\"user_code\" value=\"{}\">\n\
         <label for=\"user\">Sign in as</label>\n<select id=\"user\" name=\"user\">\n",
        escape(&app_name),
        escape(&flow.scope),
        escape(&normalize_user_code(code))
    );
    if let Some(tenant) = directory.tenants().iter().find(|t| t.id == flow.tenant_id) {
        for user in &tenant.users {
            body.push_str(&format!(
                "<option value=\"{}\" data-oid=\"{}\">{}{}</option>\n",
                escape(&user.upn),
                escape(&user.oid),
                escape(&user.upn),
                if user.mfa_required {
                    " · MFA required"
                } else {
                    ""
                }
            ));
        }
    }
    body.push_str(
        "</select>\n<p><label><input type=\"checkbox\" id=\"mfa\" name=\"mfa\" value=\"true\"> \
         I completed multi-factor authentication</label></p>\n\
         <button id=\"accept\" type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>\
         <button id=\"decline\" type=\"submit\" name=\"decision\" value=\"decline\">Decline</button>\n\
         </form>\n",
    );
    html_page(StatusCode::OK, "Sign in", &body)
}

/// `POST /_emulator/device/decision`: the device login page's form.
pub(crate) async fn decide(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let values = crate::entra::consent::request_values(&body);
    let code = values
        .get("user_code")
        .map(String::as_str)
        .unwrap_or_default();
    let approve = match values.get("decision").map(String::as_str) {
        Some("accept") => true,
        Some("decline") => false,
        _ => {
            return html_page(
                StatusCode::BAD_REQUEST,
                "Sign in",
                "<p id=\"error\">The decision must be 'accept' or 'decline'.</p>\n",
            );
        }
    };
    let mfa = values.get("mfa").is_some_and(|v| v == "true");
    match decide_code(
        &shared,
        code,
        approve,
        values.get("user").map(String::as_str),
        mfa,
    ) {
        Ok(()) if approve => html_page(
            StatusCode::OK,
            "You're signed in",
            "<p id=\"result\" data-decision=\"accept\">You have signed in to the application on \
             your device. You may now close this window.</p>\n",
        ),
        Ok(()) => html_page(
            StatusCode::OK,
            "Sign-in canceled",
            "<p id=\"result\" data-decision=\"decline\">You have declined to sign in to the \
             application on your device. You may now close this window.</p>\n",
        ),
        Err(error) => html_page(
            StatusCode::BAD_REQUEST,
            "Sign in",
            &format!("<p id=\"error\">{}</p>\n", escape(&error.to_string())),
        ),
    }
}

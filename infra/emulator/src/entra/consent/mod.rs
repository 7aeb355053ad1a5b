//! Admin consent: the three consent links a partner hands to a customer's admin, the consent
//! page the admin sees, and the redirect back to the partner with Entra's parameters.
//!
//! - `GET /{tenant}/v2.0/adminconsent?client_id&scope&redirect_uri&state` (`organizations` or a
//!   tenant; not `common`)
//! - `GET /{tenant}/adminconsent?client_id&redirect_uri&state` (`common`, `organizations` or a
//!   tenant)
//! - `GET /{tenant}/oauth2/authorize?client_id&response_type=code&redirect_uri&state&prompt=consent`
//!   (legacy; also `prompt=admin_consent`)
//!
//! Each answers a plain HTML page (no script) whose form posts the decision to
//! `POST /_emulator/consent/decision`, answered by a 302 to the redirect URI. Invalid links get
//! Entra's error screen (400), never a redirect. See `README.md`, "Admin consent".

mod grants;
pub(crate) mod page;
pub(crate) mod redirect;
mod request;

use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

pub(crate) use grants::ConsentState;
pub use grants::{ConsentDecision, ConsentDecisionRecord, ConsentKind};

use crate::entra::directory::{Directory, TenantLookup};
use crate::entra::resources;
use crate::handle::{ControlError, EmulatorHandle};
use crate::scenario::AppConfig;
use crate::state::Shared;
use page::{ConsentError, ConsentPage, TenantOption};
use request::{ConsentLink, ValidLink};

/// Longest propagation delay a scenario or the control API may set: one day.
pub(crate) const MAX_PROPAGATION_MS: u64 = 86_400_000;

/// The consent links: emulated Microsoft endpoints (faults apply to them).
pub(crate) fn pages() -> Router<Arc<Shared>> {
    Router::new()
        .route("/{tenant}/v2.0/adminconsent", get(v2_page))
        .route("/{tenant}/adminconsent", get(admin_consent_page))
        .route("/{tenant}/oauth2/authorize", get(legacy_page))
}

/// The decision the page posts and the decision log: emulator paths (no faults).
pub(crate) fn control_router() -> Router<Arc<Shared>> {
    Router::new()
        .route(page::DECISION_PATH, post(decide))
        .route(
            "/_emulator/consent/log",
            get(list_decisions).delete(clear_decisions),
        )
}

/// Scenario check of an app's `redirect_uris` and `required_permissions`.
pub(crate) fn validate_app(app: &AppConfig) -> anyhow::Result<()> {
    for uri in &app.redirect_uris {
        redirect::validate_registered(uri).with_context(|| format!("app {}", app.client_id))?;
    }
    for required in &app.required_permissions {
        if resources::find(&required.resource).is_none() {
            bail!(
                "app {}: required permission resource {:?} is not a resource the emulator knows ({})",
                app.client_id,
                required.resource,
                resources::known_uris().join(", ")
            );
        }
        if required.roles.iter().any(|role| role.trim().is_empty()) {
            bail!("app {}: a required role is empty", app.client_id);
        }
    }
    Ok(())
}

/// Form or query values by name: the first non-blank value of each name wins.
pub(crate) fn request_values(encoded: &[u8]) -> std::collections::HashMap<String, String> {
    request::first_values(encoded)
}

/// Scenario check of `consent_propagation_ms`.
pub(crate) fn validate_propagation(ms: u64) -> anyhow::Result<()> {
    if ms > MAX_PROPAGATION_MS {
        bail!("consent_propagation_ms must be at most {MAX_PROPAGATION_MS} (one day)");
    }
    Ok(())
}

impl EmulatorHandle {
    /// Delay between an accepted consent and its grants taking effect (0: before the redirect
    /// is answered). Counted from each decision; a change applies to consents still pending.
    pub fn set_consent_propagation(&self, ms: u64) -> Result<(), ControlError> {
        validate_propagation(ms).map_err(ControlError::invalid)?;
        self.shared.directory_mut().consent_propagation_ms = ms;
        self.shared.consent().delay_changed();
        Ok(())
    }

    /// Every decision made on a consent page since start or the last clear, oldest first.
    pub fn consent_decisions(&self) -> Vec<ConsentDecisionRecord> {
        self.shared.consent().decisions()
    }

    pub fn clear_consent_decisions(&self) {
        self.shared.consent().clear();
    }
}

async fn v2_page(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    show(&shared, ConsentKind::V2, &tenant, query.as_deref())
}

async fn admin_consent_page(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    show(
        &shared,
        ConsentKind::AdminConsent,
        &tenant,
        query.as_deref(),
    )
}

async fn legacy_page(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    show(&shared, ConsentKind::Legacy, &tenant, query.as_deref())
}

fn show(shared: &Shared, kind: ConsentKind, tenant: &str, query: Option<&str>) -> Response {
    let values = request::first_values(query.unwrap_or_default().as_bytes());
    let link = ConsentLink::from_values(kind, tenant, &values);
    let directory = shared.directory();
    let valid = match request::validate(&directory, &link) {
        Ok(valid) => valid,
        Err(error) => {
            tracing::info!(
                kind = kind.as_str(),
                code = error.code,
                "consent link refused"
            );
            return error.into_response();
        }
    };
    let tenants = tenant_options(&directory, &valid);
    page::consent_page(&ConsentPage {
        app_name: &valid.app_name,
        client_id: &valid.client_id,
        permissions: &valid.grants,
        tenants: &tenants,
        hidden: &link.hidden_fields(),
        redirect_origin: redirect::origin(&valid.redirect_uri),
    })
}

/// The tenants the emulated admin may be signed in to: the link's tenant when it names one,
/// every tenant of the scenario otherwise (the first one selected).
fn tenant_options(directory: &Directory, valid: &ValidLink) -> Vec<TenantOption> {
    directory
        .tenants()
        .iter()
        .filter(|tenant| {
            valid
                .fixed_tenant
                .as_ref()
                .is_none_or(|id| id == &tenant.id)
        })
        .enumerate()
        .map(|(index, tenant)| {
            let name = if tenant.display_name.is_empty() {
                tenant.id.as_str()
            } else {
                tenant.display_name.as_str()
            };
            let label = match tenant.domains.first() {
                Some(domain) => format!("{name} ({domain})"),
                None => name.to_owned(),
            };
            TenantOption {
                id: tenant.id.clone(),
                label,
                selected: index == 0,
            }
        })
        .collect()
}

async fn decide(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match decision(&shared, &body) {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(code = error.code, "consent decision refused");
            error.into_response()
        }
    }
}

fn decision(shared: &Arc<Shared>, body: &[u8]) -> Result<Response, ConsentError> {
    let values = request::first_values(body);
    let kind = values
        .get("kind")
        .and_then(|kind| ConsentKind::parse(kind))
        .ok_or_else(|| request::missing("kind"))?;
    let authority = values
        .get("authority_tenant")
        .ok_or_else(|| request::missing("authority_tenant"))?;
    let link = ConsentLink::from_values(kind, authority, &values);
    let (valid, tenant_id) = {
        let directory = shared.directory();
        let valid = request::validate(&directory, &link)?;
        let tenant_id = chosen_tenant(&directory, &valid, values.get("tenant"))?;
        (valid, tenant_id)
    };
    let decision = match values.get("decision").map(String::as_str) {
        Some("accept") => ConsentDecision::Accept,
        Some("decline") => ConsentDecision::Decline,
        Some(other) => {
            return Err(ConsentError::new(
                90023,
                format!("The decision must be 'accept' or 'decline', not '{other}'."),
            ));
        }
        None => return Err(request::missing("decision")),
    };
    shared.consent().record(ConsentDecisionRecord {
        tenant: tenant_id.clone(),
        client_id: valid.client_id.clone(),
        kind,
        decision,
        at: Utc::now(),
    });
    tracing::info!(
        tenant = %tenant_id,
        client_id = %valid.client_id,
        kind = kind.as_str(),
        ?decision,
        "consent decision"
    );
    let state = link.state.as_deref();
    let location = match decision {
        ConsentDecision::Accept => {
            grants::grant(shared, &tenant_id, &valid.client_id, valid.grants.clone());
            accepted_location(kind, &valid.redirect_uri, &tenant_id, &link)
        }
        ConsentDecision::Decline => declined_location(kind, &valid.redirect_uri, state),
    };
    let location = HeaderValue::from_str(&location).map_err(|_| {
        ConsentError::new(
            90023,
            "The redirect URI cannot be sent in a Location header.",
        )
    })?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    Ok(response)
}

/// The tenant the emulated admin signed in to: the form's `tenant` (GUID or domain); it must
/// be the link's tenant when the link names one.
fn chosen_tenant(
    directory: &Directory,
    valid: &ValidLink,
    chosen: Option<&String>,
) -> Result<String, ConsentError> {
    let chosen = chosen.ok_or_else(|| request::missing("tenant"))?;
    let tenant = match directory.lookup_tenant(chosen) {
        TenantLookup::Found(tenant) => tenant,
        _ => {
            return Err(ConsentError::new(
                90002,
                format!(
                    "Tenant '{chosen}' not found. The signed-in admin's tenant must be one of the scenario's tenants."
                ),
            ));
        }
    };
    if let Some(fixed) = &valid.fixed_tenant
        && fixed != &tenant.id
    {
        return Err(ConsentError::new(
            50020,
            format!(
                "User account from identity provider 'https://sts.windows.net/{}/' does not \
                 exist in tenant '{fixed}' and cannot access the application '{}' in that tenant.",
                tenant.id, valid.client_id
            ),
        ));
    }
    Ok(tenant.id.clone())
}

fn accepted_location(
    kind: ConsentKind,
    redirect_uri: &str,
    tenant_id: &str,
    link: &ConsentLink,
) -> String {
    let mut params: Vec<(&str, &str)> = Vec::new();
    let code;
    let session_state;
    match kind {
        ConsentKind::V2 => {
            params.push(("tenant", tenant_id));
            if let Some(scope) = &link.scope {
                params.push(("scope", scope));
            }
        }
        ConsentKind::AdminConsent => params.push(("tenant", tenant_id)),
        ConsentKind::Legacy => {
            code = authorization_code();
            session_state = Uuid::new_v4().to_string();
            params.push(("code", &code));
            params.push(("session_state", &session_state));
        }
    }
    if let Some(state) = &link.state {
        params.push(("state", state));
    }
    params.push(("admin_consent", "True"));
    redirect::with_params(redirect_uri, &params)
}

fn declined_location(kind: ConsentKind, redirect_uri: &str, state: Option<&str>) -> String {
    let description = match kind {
        ConsentKind::AdminConsent => "The admin canceled the request".to_owned(),
        ConsentKind::V2 | ConsentKind::Legacy => format!(
            "AADSTS65004: User declined to consent to access the app.\r\nTrace ID: {}\r\n\
             Correlation ID: {}\r\nTimestamp: {}",
            Uuid::new_v4(),
            Uuid::new_v4(),
            Utc::now().format("%Y-%m-%d %H:%M:%SZ")
        ),
    };
    const ERROR_URI: &str = "https://login.microsoftonline.com/error?code=65004";
    let mut params: Vec<(&str, &str)> = Vec::new();
    match kind {
        ConsentKind::V2 => {
            params.push(("error", "access_denied"));
            params.push(("error_subcode", "cancel"));
            params.push(("error_description", &description));
            params.push(("error_uri", ERROR_URI));
        }
        ConsentKind::AdminConsent => {
            params.push(("error", "permission_denied"));
            params.push(("error_description", &description));
        }
        ConsentKind::Legacy => {
            params.push(("error", "access_denied"));
            params.push(("error_description", &description));
            params.push(("error_uri", ERROR_URI));
        }
    }
    if let Some(state) = state {
        params.push(("state", state));
    }
    // The v2 endpoint says admin_consent=True on a refusal too: clients must check `error`.
    if kind == ConsentKind::V2 {
        params.push(("admin_consent", "True"));
    }
    redirect::with_params(redirect_uri, &params)
}

/// An opaque authorization code. It cannot be redeemed: the token endpoint only serves client
/// credentials.
fn authorization_code() -> String {
    let mut bytes = Vec::with_capacity(48);
    for _ in 0..3 {
        bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    format!("0.A{}", URL_SAFE_NO_PAD.encode(bytes))
}

async fn list_decisions(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "consent_decisions": shared.consent().decisions() })).into_response()
}

async fn clear_decisions(State(shared): State<Arc<Shared>>) -> Response {
    shared.consent().clear();
    StatusCode::NO_CONTENT.into_response()
}

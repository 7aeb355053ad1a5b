//! `GET /{tenant}/oauth2/v2.0/authorize` (authorization code + PKCE): a plain sign-in +
//! consent page listing the tenant's test users; its form posts to
//! `POST /_emulator/signin/decision`, answered by a 302 to the `redirect_uri` with `code` +
//! `state`, or `error` + `error_description` + `state`.
//!
//! Link errors found before the `redirect_uri` is known to be registered are shown as Entra's
//! error page (400); later ones are redirected, as Entra does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use uuid::Uuid;

use super::{CodeRecord, ScopeRequest, SignIn, Target, amr, mfa_check, opaque, parse_scope};
use crate::entra::consent::page::{BASE_CSP, ConsentError, STYLE, escape, with_headers};
use crate::entra::consent::redirect;
use crate::entra::directory::{Directory, TenantLookup};
use crate::entra::errors::EntraError;
use crate::state::Shared;

/// The sign-in page's form posts here.
pub(crate) const DECISION_PATH: &str = "/_emulator/signin/decision";

/// The link parameters carried by the page's hidden fields.
const LINK_FIELDS: [&str; 9] = [
    "authority_tenant",
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];

/// A link that may be shown.
struct ValidLink {
    /// `None` for `organizations` / `common`: the tenant is the one of the user who signs in.
    tenant_id: Option<String>,
    client_id: String,
    app_name: String,
    redirect_uri: String,
    scope: String,
    request: ScopeRequest,
    state: Option<String>,
    challenge: String,
    nonce: Option<String>,
}

enum Refusal {
    /// Entra's error page: the redirect URI cannot be trusted yet.
    Page(ConsentError),
    /// Redirected to the (registered) redirect URI: the `Location`.
    Redirect(String),
}

impl From<ConsentError> for Refusal {
    fn from(error: ConsentError) -> Self {
        Refusal::Page(error)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Page(error) => error.into_response(),
            Refusal::Redirect(location) => found(&location),
        }
    }
}

fn values_of(encoded: &[u8]) -> HashMap<String, String> {
    crate::entra::consent::request_values(encoded)
}

/// A 302 to `location`.
pub(crate) fn found(location: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        return ConsentError::new(
            90023,
            "The redirect URI cannot be sent in a Location header.",
        )
        .into_response();
    };
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
}

/// The redirect of an error: `error`, `error_description` (`AADSTSnnnn: …`), `error_uri`,
/// `state`.
fn redirect_error(
    redirect_uri: &str,
    state: Option<&str>,
    error: &EntraError,
    subcode: Option<&str>,
) -> String {
    let body = error.body();
    let description = body["error_description"].as_str().unwrap_or_default();
    let error_uri = body["error_uri"].as_str().unwrap_or_default();
    let mut params: Vec<(&str, &str)> = vec![("error", &error.error)];
    if let Some(subcode) = subcode {
        params.push(("error_subcode", subcode));
    }
    params.push(("error_description", description));
    params.push(("error_uri", error_uri));
    if let Some(state) = state {
        params.push(("state", state));
    }
    redirect::with_params(redirect_uri, &params)
}

fn missing(name: &str) -> ConsentError {
    ConsentError::new(
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn validate(
    directory: &Directory,
    segment: &str,
    values: &HashMap<String, String>,
) -> Result<ValidLink, Refusal> {
    let tenant_id = match directory.lookup_tenant(segment) {
        TenantLookup::Found(tenant) => Some(tenant.id.clone()),
        // `organizations`/`common`: any work account signs in, in its own tenant.
        TenantLookup::MultiTenant if segment.eq_ignore_ascii_case("consumers") => {
            return Err(ConsentError::new(
                90130,
                "The emulator has no personal Microsoft accounts: use a tenant, organizations or common.",
            )
            .into());
        }
        TenantLookup::MultiTenant => None,
        TenantLookup::Unknown => {
            return Err(ConsentError::new(
                90002,
                format!(
                    "Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            )
            .into());
        }
        TenantLookup::Malformed => {
            return Err(ConsentError::new(
                900023,
                format!(
                    "Specified tenant identifier '{segment}' is neither a valid DNS name, nor a valid external domain."
                ),
            )
            .into());
        }
    };
    let get = |name: &str| values.get(name).cloned();
    let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
    let app = directory.app(&client_id).ok_or_else(|| {
        ConsentError::new(
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{segment}'."
            ),
        )
    })?;
    let redirect_uri = get("redirect_uri").ok_or_else(|| missing("redirect_uri"))?;
    if !app
        .redirect_uris
        .iter()
        .any(|registered| redirect::matches(registered, &redirect_uri))
    {
        return Err(ConsentError::new(
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{}'.",
                app.client_id
            ),
        )
        .into());
    }
    if app.disabled {
        return Err(ConsentError::new(
            7000112,
            format!(
                "Application '{}'({}) is disabled.",
                app.client_id, app.display_name
            ),
        )
        .into());
    }
    let state = get("state");
    let refuse = |error: EntraError| {
        Refusal::Redirect(redirect_error(
            &redirect_uri,
            state.as_deref(),
            &error,
            None,
        ))
    };
    let bad_request = |code: u32, message: &str| {
        EntraError::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    };
    match get("response_type").as_deref() {
        Some("code") => {}
        Some(_) => {
            return Err(refuse(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                700054,
                "The emulator's authorize endpoint supports response_type 'code' only.",
            )));
        }
        None => return Err(refuse(EntraError::missing_parameter("response_type"))),
    }
    let scope = get("scope").ok_or_else(|| refuse(EntraError::missing_parameter("scope")))?;
    let request = parse_scope(&scope, &app.client_id).map_err(refuse)?;
    let challenge = get("code_challenge").ok_or_else(|| {
        refuse(bad_request(
            9002325,
            "Proof Key for Code Exchange is required: send code_challenge and code_challenge_method=S256.",
        ))
    })?;
    if get("code_challenge_method").as_deref() != Some("S256") {
        return Err(refuse(bad_request(
            900144,
            "The request body must contain the following parameter: 'code_challenge_method' with the value 'S256'.",
        )));
    }
    if !(43..=128).contains(&challenge.len()) {
        return Err(refuse(bad_request(
            501491,
            "Invalid size of Code_Challenge parameter.",
        )));
    }
    Ok(ValidLink {
        tenant_id,
        client_id: app.client_id.clone(),
        app_name: if app.display_name.is_empty() {
            app.client_id.clone()
        } else {
            app.display_name.clone()
        },
        redirect_uri,
        scope,
        request,
        state,
        challenge,
        nonce: get("nonce"),
    })
}

pub(crate) async fn page(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut values = values_of(query.unwrap_or_default().as_bytes());
    let directory = shared.directory();
    let link = match validate(&directory, &tenant, &values) {
        Ok(link) => link,
        Err(refusal) => return refusal.into_response(),
    };
    values.insert("authority_tenant".to_owned(), tenant.clone());
    // A tenant's own authority lists its users; `organizations` lists every tenant's.
    let tenants: Vec<&crate::entra::directory::Tenant> = directory
        .tenants()
        .iter()
        .filter(|t| link.tenant_id.as_ref().is_none_or(|id| *id == t.id))
        .collect();
    if tenants.is_empty() {
        return ConsentError::new(90002, "Tenant not found.").into_response();
    }
    let hint = values
        .get("login_hint")
        .map(|hint| hint.to_ascii_lowercase());
    let mut html = String::with_capacity(4096);
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<title>Sign in to your account</title><style>");
    html.push_str(STYLE);
    html.push_str("</style></head><body><main>\n");
    html.push_str("<p class=\"brand\">Microsoft (emulated sign-in)</p>\n<h1>Sign in</h1>\n");
    html.push_str(&format!(
        "<p><strong id=\"app-name\">{}</strong><br><span class=\"muted\">App ID: \
         <code id=\"client-id\">{}</code> · Tenant: <code id=\"tenant-id\">{}</code></span></p>\n",
        escape(&link.app_name),
        escape(&link.client_id),
        escape(link.tenant_id.as_deref().unwrap_or("organizations"))
    ));
    html.push_str("<p>This app would like to, on your behalf:</p>\n<ul id=\"scopes\">\n");
    let mut names: Vec<String> = link.request.scopes.clone();
    if link.request.default {
        names.push(".default".to_owned());
    }
    for name in names.iter().chain(link.request.oidc.iter()) {
        html.push_str(&format!(
            "<li class=\"scope\" data-scope=\"{}\"><strong>{}</strong> <span class=\"muted\">({})</span></li>\n",
            escape(name),
            escape(name),
            escape(if link.request.oidc.contains(name) { "sign-in" } else { &link.request.named }),
        ));
    }
    html.push_str("</ul>\n");
    html.push_str(&format!(
        "<form method=\"post\" action=\"{DECISION_PATH}\">\n"
    ));
    for name in LINK_FIELDS {
        if let Some(value) = values.get(name) {
            html.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            ));
        }
    }
    html.push_str("<label for=\"user\">Sign in as</label>\n<select id=\"user\" name=\"user\">\n");
    let users = tenants
        .iter()
        .flat_map(|tenant| tenant.users.iter().map(move |user| (tenant, user)));
    for (index, (tenant, user)) in users.enumerate() {
        let selected = match &hint {
            Some(hint) => user.upn.eq_ignore_ascii_case(hint),
            None => index == 0,
        };
        let mut label = if user.display_name.is_empty() {
            user.upn.clone()
        } else {
            format!("{} ({})", user.display_name, user.upn)
        };
        if user.mfa_required {
            label.push_str(" · MFA required");
        }
        html.push_str(&format!(
            "<option value=\"{}\" data-oid=\"{}\" data-tenant=\"{}\"{}>{}</option>\n",
            escape(&user.upn),
            escape(&user.oid),
            escape(&tenant.id),
            if selected { " selected" } else { "" },
            escape(&label)
        ));
    }
    html.push_str("</select>\n");
    html.push_str(
        "<p><label><input type=\"checkbox\" id=\"mfa\" name=\"mfa\" value=\"true\"> \
         I completed multi-factor authentication</label></p>\n\
         <p class=\"muted\">Accepting consents for you to these permissions and sends the app \
         an authorization code.</p>\n\
         <button id=\"accept\" type=\"submit\" name=\"decision\" value=\"accept\">Accept</button>\
         <button id=\"decline\" type=\"submit\" name=\"decision\" value=\"decline\">Decline</button>\n\
         </form>\n</main></body></html>\n",
    );
    let csp = match redirect::origin(&link.redirect_uri) {
        Some(origin) => format!("{BASE_CSP} {origin}"),
        None => BASE_CSP.to_owned(),
    };
    with_headers(StatusCode::OK, html, &csp)
}

/// `POST /_emulator/signin/decision`: the page's form.
pub(crate) async fn decide(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match decision(&shared, &body) {
        Ok(response) => response,
        Err(Refusal::Redirect(location)) => found(&location),
        Err(Refusal::Page(error)) => {
            tracing::info!(code = error.code, "sign-in decision refused");
            error.into_response()
        }
    }
}

fn decision(shared: &Shared, body: &[u8]) -> Result<Response, Refusal> {
    let values = values_of(body);
    let segment = values
        .get("authority_tenant")
        .cloned()
        .ok_or_else(|| missing("authority_tenant"))?;
    let (link, user_oid, mfa_error) = {
        let directory = shared.directory();
        let mut link = validate(&directory, &segment, &values)?;
        let name = values.get("user").ok_or_else(|| missing("user"))?;
        let (tenant, user) = directory
            .tenants()
            .iter()
            .filter(|t| link.tenant_id.as_ref().is_none_or(|id| *id == t.id))
            .find_map(|tenant| tenant.user(name).map(|user| (tenant, user)))
            .ok_or_else(|| {
                ConsentError::new(
                    50034,
                    format!(
                        "The user account {name} does not exist in the '{}' directory.",
                        link.tenant_id.as_deref().unwrap_or(&segment)
                    ),
                )
            })?;
        link.tenant_id = Some(tenant.id.clone());
        let mfa = values.get("mfa").is_some_and(|v| v == "true");
        let mfa_error = mfa_check(tenant, user, &amr(mfa), &link.request.named).err();
        (link, user.oid.clone(), mfa_error)
    };
    let state = link.state.as_deref();
    let tenant_id = link.tenant_id.clone().unwrap_or_default();
    match values.get("decision").map(String::as_str) {
        Some("accept") => {}
        Some("decline") => {
            let error = EntraError::new(
                StatusCode::BAD_REQUEST,
                "access_denied",
                65004,
                "User declined to consent to access the app.",
            );
            return Ok(found(&redirect_error(
                &link.redirect_uri,
                state,
                &error,
                Some("cancel"),
            )));
        }
        Some(other) => {
            return Err(ConsentError::new(
                90023,
                format!("The decision must be 'accept' or 'decline', not '{other}'."),
            )
            .into());
        }
        None => return Err(missing("decision").into()),
    }
    if let Some(error) = mfa_error {
        return Ok(found(&redirect_error(
            &link.redirect_uri,
            state,
            &error,
            None,
        )));
    }
    let granted = {
        let mut directory = shared.directory_mut();
        let tenant = directory
            .tenant_mut(&tenant_id)
            .map_err(|_| ConsentError::new(90002, "Tenant not found."))?;
        if let Target::Api(resource) = link.request.target
            && !link.request.scopes.is_empty()
        {
            tenant.add_user_consent(&link.client_id, resource, &user_oid, &link.request.scopes);
        }
        link.request.granted(tenant, &link.client_id, &user_oid)
    };
    if granted.is_empty() && !link.request.identity_only {
        let error = EntraError::new(
            StatusCode::BAD_REQUEST,
            "consent_required",
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID '{}'. Ask for the permissions by name, or have an administrator consent for the tenant.",
                link.client_id
            ),
        );
        return Ok(found(&redirect_error(
            &link.redirect_uri,
            state,
            &error,
            None,
        )));
    }
    let mfa = values.get("mfa").is_some_and(|v| v == "true");
    let code = opaque("0.A", 4);
    let lifetime = shared
        .directory()
        .delegated
        .authorization_code_lifetime_seconds;
    shared.delegated().lock().codes.insert(
        code.clone(),
        CodeRecord {
            sign_in: SignIn {
                tenant_id: tenant_id.clone(),
                client_id: link.client_id.clone(),
                user_oid: user_oid.clone(),
                scope: link.scope.clone(),
                amr: amr(mfa),
                nonce: link.nonce.clone(),
                public: false,
            },
            redirect_uri: link.redirect_uri.clone(),
            challenge: link.challenge.clone(),
            expires: Utc::now() + Duration::seconds(i64::try_from(lifetime).unwrap_or(600)),
            redeemed: false,
        },
    );
    tracing::info!(tenant = %tenant_id, client_id = %link.client_id, user = %user_oid, "signed in");
    let session_state = Uuid::new_v4().to_string();
    let mut params: Vec<(&str, &str)> = vec![("code", &code)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("session_state", &session_state));
    Ok(found(&redirect::with_params(&link.redirect_uri, &params)))
}

//! `POST /{tenant}/oauth2/v2.0/token` and `POST /{tenant}/oauth2/token`: client credentials.
//!
//! Checks run in the order that decides which AADSTS error a real client sees first: tenant
//! shape, grant type, tenant, parameters, app presence in the tenant, app state, credential,
//! resource.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use crate::entra::access_token::{self, TokenOrder};
use crate::entra::assertion;
use crate::entra::directory::{RegisteredApp, SecretCheck, Tenant, TenantLookup};
use crate::entra::errors::EntraError;
use crate::entra::request_log::{CredentialKind, Endpoint, TokenRequestRecord};
use crate::entra::resources;
use crate::state::Shared;

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The form fields of a token request. Deliberately not `Debug`: it holds the credential.
#[derive(Default)]
pub(crate) struct TokenForm {
    pub(crate) grant_type: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_assertion_type: Option<String>,
    pub(crate) client_assertion: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) resource: Option<String>,
    // Delegated grants.
    pub(crate) code: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) code_verifier: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) assertion: Option<String>,
    pub(crate) requested_token_use: Option<String>,
    pub(crate) device_code: Option<String>,
    /// Keys of a federated assertion's issuer, read before the synchronous checks run.
    pub(crate) issuer_keys: Option<crate::entra::federated::IssuerKeys>,
}

impl TokenForm {
    /// Reads an `application/x-www-form-urlencoded` body; the first of repeated fields wins and
    /// blank fields count as absent.
    pub(crate) fn parse(body: &[u8]) -> TokenForm {
        let mut form = TokenForm::default();
        for (name, value) in url::form_urlencoded::parse(body) {
            let slot = match name.as_ref() {
                "grant_type" => &mut form.grant_type,
                "client_id" => &mut form.client_id,
                "client_secret" => &mut form.client_secret,
                "client_assertion_type" => &mut form.client_assertion_type,
                "client_assertion" => &mut form.client_assertion,
                "scope" => &mut form.scope,
                "resource" => &mut form.resource,
                "code" => &mut form.code,
                "redirect_uri" => &mut form.redirect_uri,
                "code_verifier" => &mut form.code_verifier,
                "refresh_token" => &mut form.refresh_token,
                "assertion" => &mut form.assertion,
                "requested_token_use" => &mut form.requested_token_use,
                "device_code" => &mut form.device_code,
                _ => continue,
            };
            // Values are kept byte for byte: a secret read from a file with its trailing
            // newline must fail here as it fails at Entra.
            if slot.is_none() && !value.trim().is_empty() {
                *slot = Some(value.into_owned());
            }
        }
        form
    }

    pub(crate) fn uses_assertion(&self) -> bool {
        self.client_assertion.is_some() || self.client_assertion_type.is_some()
    }
}

pub(crate) async fn token_v2(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, Endpoint::V2, &tenant, &headers, &body).await
}

pub(crate) async fn token_v1(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&shared, Endpoint::V1, &tenant, &headers, &body).await
}

pub(crate) async fn wrong_method(method: Method, headers: HeaderMap) -> Response {
    EntraError::post_required(method.as_str())
        .with_correlation(&headers)
        .into_response()
}

/// The log entry of a request, with what is known before any check.
pub(crate) fn describe(
    shared: &Shared,
    tenant: &str,
    endpoint: Endpoint,
    form: &TokenForm,
) -> TokenRequestRecord {
    let credential = if form.uses_assertion() {
        Some(CredentialKind::Assertion)
    } else {
        form.client_secret.as_ref().map(|_| CredentialKind::Secret)
    };
    let resource = match endpoint {
        Endpoint::V1 => form.resource.clone(),
        Endpoint::V2 => form.scope.as_deref().and_then(|scope| {
            resource_from_scope(scope).ok().or_else(|| {
                crate::entra::delegated::parse_scope(scope, "")
                    .ok()
                    .map(|request| request.named)
            })
        }),
    };
    TokenRequestRecord {
        tenant: tenant.to_owned(),
        tenant_id: shared.directory().tenant_id_of(tenant),
        endpoint,
        status: 0,
        client_id: form.client_id.clone(),
        credential,
        resource,
        error: None,
        error_code: None,
        injected: false,
        at: Utc::now(),
    }
}

async fn serve(
    shared: &Shared,
    endpoint: Endpoint,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let mut form = TokenForm::parse(body);
    form.issuer_keys = crate::entra::federated::prefetch(shared, &form).await;
    let mut record = describe(shared, tenant, endpoint, &form);
    let response = match mint(shared, endpoint, tenant, &form) {
        Ok(body) => {
            record.status = StatusCode::OK.as_u16();
            let mut response = Json(body).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, no-cache"),
            );
            response
        }
        Err(error) => {
            record.status = error.status.as_u16();
            record.error = Some(error.error.clone());
            record.error_code = Some(error.code);
            error.with_correlation(headers).into_response()
        }
    };
    tracing::info!(
        tenant,
        endpoint = ?record.endpoint,
        status = record.status,
        client_id = record.client_id.as_deref().unwrap_or(""),
        resource = record.resource.as_deref().unwrap_or(""),
        error_code = record.error_code.unwrap_or(0),
        "token request"
    );
    shared.log().push(record);
    response
}

fn mint(
    shared: &Shared,
    endpoint: Endpoint,
    segment: &str,
    form: &TokenForm,
) -> Result<Value, EntraError> {
    let directory = shared.directory();
    let lookup = directory.lookup_tenant(segment);
    if matches!(lookup, TenantLookup::Malformed) {
        return Err(EntraError::malformed_tenant(segment));
    }
    let delegated = match form.grant_type.as_deref() {
        None => return Err(EntraError::missing_parameter("grant_type")),
        Some("client_credentials") => None,
        Some(other) if endpoint == Endpoint::V2 => Some(
            crate::entra::delegated::grants::Grant::parse(other)
                .ok_or_else(EntraError::unsupported_grant_type)?,
        ),
        Some(_) => return Err(EntraError::unsupported_grant_type()),
    };
    let code_tenant = match (&lookup, &delegated) {
        (
            TenantLookup::MultiTenant,
            Some(crate::entra::delegated::grants::Grant::AuthorizationCode),
        ) if !segment.eq_ignore_ascii_case("consumers") => form
            .code
            .as_deref()
            .and_then(|code| shared.delegated().code_tenant(code)),
        _ => None,
    };
    let tenant = match lookup {
        TenantLookup::Found(tenant) => tenant,
        // A code asked for at `organizations`/`common` is redeemed in the user's own tenant.
        TenantLookup::MultiTenant if code_tenant.is_some() => {
            let id = code_tenant.unwrap_or_default();
            match directory.lookup_tenant(&id) {
                TenantLookup::Found(tenant) => tenant,
                _ => return Err(EntraError::tenant_not_found(&id)),
            }
        }
        TenantLookup::MultiTenant => return Err(EntraError::multi_tenant_endpoint()),
        TenantLookup::Unknown => return Err(EntraError::tenant_not_found(segment)),
        TenantLookup::Malformed => return Err(EntraError::malformed_tenant(segment)),
    };
    if let Some(grant) = delegated {
        return crate::entra::delegated::grants::mint(
            shared, &directory, grant, tenant, segment, form,
        );
    }
    let client_id = form
        .client_id
        .as_deref()
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    let requested = match endpoint {
        Endpoint::V1 => form
            .resource
            .clone()
            .ok_or_else(|| EntraError::missing_parameter("resource"))?,
        Endpoint::V2 if form.resource.is_some() => {
            return Err(EntraError::resource_parameter_on_v2());
        }
        Endpoint::V2 => resource_from_scope(
            form.scope
                .as_deref()
                .ok_or_else(|| EntraError::missing_parameter("scope"))?,
        )?,
    };
    let app = directory
        .app(client_id)
        .filter(|app| tenant.has_consented(&app.client_id))
        .ok_or_else(|| EntraError::app_not_in_tenant(client_id, segment))?;
    if app.disabled {
        return Err(EntraError::app_disabled(&app.client_id, &app.display_name));
    }
    let now = Utc::now();
    let credential = check_credential(shared, tenant, segment, app, form, now)?;
    let resource = resources::find(&requested).ok_or_else(|| {
        let tenant_name = if tenant.display_name.is_empty() {
            &tenant.id
        } else {
            &tenant.display_name
        };
        EntraError::resource_not_found(&requested, tenant_name)
    })?;
    let order = TokenOrder {
        endpoint,
        tenant,
        app,
        audience: &requested,
        roles: tenant.roles(&app.client_id, resource),
        credential,
        lifetime_seconds: directory.token_lifetime_seconds,
        now,
    };
    let issued = access_token::issue(&shared.key, &shared.base_url, &order).map_err(|error| {
        tracing::error!(%error, "cannot sign a token");
        EntraError::transient(StatusCode::INTERNAL_SERVER_ERROR)
    })?;
    Ok(success_body(endpoint, &requested, &issued))
}

fn success_body(endpoint: Endpoint, requested: &str, issued: &access_token::Issued) -> Value {
    match endpoint {
        Endpoint::V2 => json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.access_token,
        }),
        // v1 sends its numbers as strings, as Microsoft does.
        Endpoint::V1 => json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in.to_string(),
            "ext_expires_in": issued.expires_in.to_string(),
            "expires_on": issued.expires_on.to_string(),
            "not_before": issued.not_before.to_string(),
            "resource": requested,
            "access_token": issued.access_token,
        }),
    }
}

pub(crate) fn check_credential(
    shared: &Shared,
    tenant: &Tenant,
    segment: &str,
    app: &RegisteredApp,
    form: &TokenForm,
    now: chrono::DateTime<Utc>,
) -> Result<CredentialKind, EntraError> {
    match (form.uses_assertion(), form.client_secret.as_deref()) {
        (true, Some(_)) => Err(EntraError::two_credentials()),
        (false, None) => Err(EntraError::missing_credential()),
        (false, Some(secret)) => match app.check_secret(secret, now) {
            SecretCheck::Valid => Ok(CredentialKind::Secret),
            SecretCheck::Expired => Err(EntraError::expired_secret(&app.client_id)),
            SecretCheck::Wrong => Err(EntraError::wrong_secret(&app.client_id)),
        },
        (true, None) => {
            if form.client_assertion_type.as_deref() != Some(JWT_BEARER) {
                return Err(EntraError::unsupported_assertion_type());
            }
            let assertion = form
                .client_assertion
                .as_deref()
                .ok_or_else(|| EntraError::missing_parameter("client_assertion"))?;
            if let Some(jwt) = crate::entra::federated::UnverifiedJwt::read(assertion)
                .filter(|jwt| jwt.is_federated(&app.client_id))
            {
                crate::entra::federated::verify(
                    assertion,
                    &jwt,
                    app,
                    form.issuer_keys.as_ref(),
                    now,
                )?;
                return Ok(CredentialKind::Assertion);
            }
            let audiences = assertion_audiences(&shared.base_url, tenant, segment);
            assertion::verify(assertion, app, &audiences, now)?;
            Ok(CredentialKind::Assertion)
        }
    }
}

/// The token endpoint URLs (v2 and v1) of the tenant under each of its names.
fn assertion_audiences(base_url: &str, tenant: &Tenant, segment: &str) -> Vec<String> {
    let mut names = vec![tenant.id.clone(), segment.to_ascii_lowercase()];
    names.extend(tenant.domains.iter().cloned());
    names
        .iter()
        .flat_map(|name| {
            [
                format!("{base_url}/{name}/oauth2/v2.0/token"),
                format!("{base_url}/{name}/oauth2/token"),
            ]
        })
        .collect()
}

/// The one resource of a v2 `scope` made of `{resource}/.default` items.
pub(crate) fn resource_from_scope(scope: &str) -> Result<String, EntraError> {
    const DEFAULT: &str = "/.default";
    let mut found: Vec<&str> = Vec::new();
    for item in scope.split_whitespace() {
        let resource = item
            .len()
            .checked_sub(DEFAULT.len())
            .and_then(|cut| {
                let suffix = item.get(cut..)?;
                suffix.eq_ignore_ascii_case(DEFAULT).then(|| &item[..cut])
            })
            .map(|resource| resource.trim_end_matches('/'))
            .filter(|resource| !resource.is_empty())
            .ok_or_else(|| EntraError::invalid_scope(scope))?;
        if !found
            .iter()
            .any(|known| known.eq_ignore_ascii_case(resource))
        {
            found.push(resource);
        }
    }
    match found.as_slice() {
        [] => Err(EntraError::missing_parameter("scope")),
        [resource] => Ok((*resource).to_owned()),
        _ => Err(EntraError::scope_with_several_resources(scope)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_one_resource() {
        let ok = |scope: &str| resource_from_scope(scope).unwrap();
        assert_eq!(
            ok("https://api.security.microsoft.com/.default"),
            "https://api.security.microsoft.com"
        );
        assert_eq!(
            ok("https://graph.microsoft.com//.default"),
            "https://graph.microsoft.com"
        );
        assert_eq!(
            ok("https://graph.microsoft.com/.default https://graph.microsoft.com/.DEFAULT"),
            "https://graph.microsoft.com"
        );
        let code = |scope: &str| resource_from_scope(scope).unwrap_err().code;
        assert_eq!(code("https://api.security.microsoft.com.default"), 70011);
        assert_eq!(code("https://graph.microsoft.com/User.Read"), 70011);
        assert_eq!(code("/.default"), 70011);
        assert_eq!(code("é"), 70011);
        assert_eq!(code("ééééééééé"), 70011);
        assert_eq!(
            code(
                "https://graph.microsoft.com/.default https://api.security.microsoft.com/.default"
            ),
            700022
        );
        assert_eq!(code("  "), 900144);
    }

    #[test]
    fn form_takes_first_non_empty_values() {
        let form = TokenForm::parse(
            b"grant_type=client_credentials&client_id=&client_id=abc&scope=a%2F.default&scope=b",
        );
        assert_eq!(form.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(form.client_id.as_deref(), Some("abc"));
        assert_eq!(form.scope.as_deref(), Some("a/.default"));
        assert!(!form.uses_assertion());

        let form = TokenForm::parse(b"client_secret=abc%0A&client_assertion_type=%20");
        assert_eq!(form.client_secret.as_deref(), Some("abc\n"));
        assert!(!form.uses_assertion());
    }
}

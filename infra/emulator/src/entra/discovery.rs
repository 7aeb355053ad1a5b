//! Signing keys and OpenID metadata. Clients use the metadata to turn a tenant domain into the
//! tenant id (from `issuer`/`token_endpoint`), and the keys to check token signatures.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::entra::directory::TenantLookup;
use crate::entra::errors::EntraError;
use crate::state::Shared;

/// The id a metadata document speaks for: a tenant's GUID, or Entra's `{tenantid}` placeholder
/// for `common` and friends.
fn tenant_in_documents(shared: &Shared, segment: &str) -> Result<String, EntraError> {
    match shared.directory().lookup_tenant(segment) {
        TenantLookup::Found(tenant) => Ok(tenant.id.clone()),
        TenantLookup::MultiTenant => Ok("{tenantid}".to_owned()),
        TenantLookup::Unknown => Err(EntraError::tenant_not_found(segment)),
        TenantLookup::Malformed => Err(EntraError::malformed_tenant(segment)),
    }
}

fn respond(result: Result<Value, EntraError>, headers: &HeaderMap) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.with_correlation(headers).into_response(),
    }
}

/// `GET /{tenant}/discovery/v2.0/keys`
pub(crate) async fn keys_v2(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = tenant_in_documents(&shared, &segment).map(|tid| {
        shared
            .key
            .jwks(Some(&format!("{}/{tid}/v2.0", shared.base_url)))
    });
    respond(result, &headers)
}

/// `GET /{tenant}/discovery/keys`
pub(crate) async fn keys_v1(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = tenant_in_documents(&shared, &segment).map(|_| shared.key.jwks(None));
    respond(result, &headers)
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub(crate) async fn openid_configuration_v2(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = tenant_in_documents(&shared, &segment)
        .map(|tid| metadata_v2(&shared.base_url, &tid, &region_scope(&shared, &segment)));
    respond(result, &headers)
}

/// `GET /{tenant}/.well-known/openid-configuration`
pub(crate) async fn openid_configuration_v1(
    State(shared): State<Arc<Shared>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = tenant_in_documents(&shared, &segment)
        .map(|tid| metadata_v1(&shared.base_url, &tid, &region_scope(&shared, &segment)));
    respond(result, &headers)
}

fn region_scope(shared: &Shared, segment: &str) -> String {
    match shared.directory().lookup_tenant(segment) {
        TenantLookup::Found(tenant) => tenant.region_scope.clone(),
        _ => "WW".to_owned(),
    }
}

fn metadata_v2(base: &str, tid: &str, region_scope: &str) -> Value {
    json!({
        "issuer": format!("{base}/{tid}/v2.0"),
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "request_uri_parameter_supported": false,
        "tenant_region_scope": region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

fn metadata_v1(base: &str, tid: &str, region_scope: &str) -> Value {
    json!({
        "issuer": format!("https://sts.windows.net/{tid}/"),
        "token_endpoint": format!("{base}/{tid}/oauth2/token"),
        "jwks_uri": format!("{base}/{tid}/discovery/keys"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/authorize"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": region_scope,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

//! The bearer-token check of the data APIs: an RS256 JWT signed by this emulator's key, not
//! expired, with an `aud` naming the API (any of its URIs or its app id), and a `tid` of a known
//! tenant, whose data the call then reads. Roles are checked by the caller of [`authenticate`].

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Api;
use super::errors::AuthFailure;
use crate::entra::directory::{TenantLookup, normalize_guid};
use crate::entra::resources::{self, Resource};
use crate::state::Shared;

/// Who called, from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub tenant_id: String,
    pub client_id: String,
    pub roles: Vec<String>,
    /// Delegated token: its `scp` items (empty for an app token).
    pub scopes: Vec<String>,
    /// Delegated token: the user's `oid`.
    pub user_oid: Option<String>,
}

impl Caller {
    pub(crate) fn has_any_scope(&self, scopes: &[&str]) -> bool {
        self.scopes.iter().any(|scope| {
            scopes
                .iter()
                .any(|wanted| scope.eq_ignore_ascii_case(wanted))
        })
    }

    pub(crate) fn has_any(&self, roles: &[&str]) -> bool {
        self.roles
            .iter()
            .any(|role| roles.iter().any(|wanted| role.eq_ignore_ascii_case(wanted)))
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    oid: Option<String>,
}

pub(crate) fn resource_of(api: Api) -> &'static Resource {
    match api {
        Api::M365d => &resources::M365_DEFENDER,
        Api::Mde => &resources::DEFENDER_FOR_ENDPOINT,
        Api::Graph => &resources::GRAPH,
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The `tid` of the bearer token, without verifying anything: for fault matching and the call
/// counters, which must also see refused calls.
pub(crate) fn unverified_tenant(headers: &HeaderMap) -> Option<String> {
    let token = bearer(headers)?;
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    normalize_guid(&claims.get("tid")?.as_str()?.to_ascii_lowercase())
}

/// The verification key: the public half of the emulator's signing key.
pub(crate) fn decoding_key(shared: &Shared) -> Option<DecodingKey> {
    let jwks = shared.key.jwks(None);
    let key = jwks.get("keys")?.get(0)?;
    DecodingKey::from_rsa_components(key.get("n")?.as_str()?, key.get("e")?.as_str()?).ok()
}

pub(crate) fn authenticate(
    shared: &Shared,
    key: &DecodingKey,
    api: Api,
    headers: &HeaderMap,
) -> Result<Caller, AuthFailure> {
    let token = bearer(headers).ok_or(AuthFailure::Missing)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => AuthFailure::Expired,
            ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthFailure::BadSignature,
            _ => AuthFailure::Malformed,
        })?
        .claims;
    let audience = claims.aud.as_deref().unwrap_or_default();
    if resources::find(audience) != Some(resource_of(api)) {
        return Err(AuthFailure::WrongAudience);
    }
    let tid = claims.tid.as_deref().ok_or(AuthFailure::UnknownTenant)?;
    let tenant_id = match shared.directory().lookup_tenant(tid) {
        TenantLookup::Found(tenant) if normalize_guid(tid).is_some() => tenant.id.clone(),
        _ => return Err(AuthFailure::UnknownTenant),
    };
    let client_id = claims
        .appid
        .or(claims.azp)
        .and_then(|id| normalize_guid(&id.to_ascii_lowercase()))
        .unwrap_or_default();
    let scopes: Vec<String> = claims
        .scp
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // A token with `scp` acts for its user (`oid`); without a user it is not a valid one.
    let user_oid = match (&claims.scp, claims.oid) {
        (Some(_), Some(oid)) => {
            Some(normalize_guid(&oid.to_ascii_lowercase()).ok_or(AuthFailure::Malformed)?)
        }
        (Some(_), None) => return Err(AuthFailure::Malformed),
        (None, _) => None,
    };
    Ok(Caller {
        tenant_id,
        client_id,
        roles: claims.roles,
        scopes,
        user_oid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reads_the_bearer_scheme_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn the_unverified_tenant_comes_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"tid":"22222222-2222-4222-8222-22222222222A"}"#);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer x.{payload}.y")).unwrap(),
        );
        assert_eq!(
            unverified_tenant(&headers).as_deref(),
            Some("22222222-2222-4222-8222-22222222222a")
        );
    }
}

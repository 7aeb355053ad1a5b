//! Control calls of the delegated flows (HTTP under `/_emulator/`, and [`EmulatorHandle`]):
//! test users, delegated consent, device code decisions, refresh token revocation, minting a
//! user token directly, and the log of issued delegated tokens.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{DelegatedTokenRecord, amr, authorize, device_code};
use crate::entra::access_token::{self, UserTokenOrder};
use crate::entra::directory::TenantLookup;
use crate::handle::{ControlError, EmulatorHandle};
use crate::scenario::{DelegatedGrantConfig, DelegatedSettings, UserConfig};
use crate::state::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(authorize::DECISION_PATH, post(authorize::decide))
        .route(device_code::DECISION_PATH, post(device_code::decide))
        .route("/_emulator/device/{user_code}", post(decide_device))
        .route("/_emulator/tenants/{tenant}/users", post(add_user))
        .route("/_emulator/tenants/{tenant}/users/{user}/mfa", put(set_mfa))
        .route(
            "/_emulator/tenants/{tenant}/users/{user}/portal_roles",
            put(set_portal_roles),
        )
        .route(
            "/_emulator/tenants/{tenant}/users/{user}/refresh_tokens",
            get(refresh_counts).delete(revoke_refresh_tokens),
        )
        .route(
            "/_emulator/tenants/{tenant}/delegated_grants",
            put(set_delegated_grant),
        )
        .route(
            "/_emulator/tenants/{tenant}/delegated_grants/{client_id}",
            delete(revoke_delegated_grants),
        )
        .route("/_emulator/delegated/tokens", post(mint_user_token))
        .route(
            "/_emulator/delegated/log",
            get(list_issued).delete(clear_issued),
        )
}

/// A device code decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDecision {
    /// `approve` or `decline`.
    pub decision: DeviceVerdict,
    /// The approving user's upn or oid (required to approve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether the user completed MFA.
    #[serde(default)]
    pub mfa: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceVerdict {
    Approve,
    Decline,
}

/// A user token minted by the control API, e.g. the assertion of an OBO test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTokenRequest {
    /// Tenant GUID or domain.
    pub tenant: String,
    pub client_id: String,
    /// The user's upn or oid.
    pub user: String,
    /// `aud`; default `api://{client_id}` (a token for the app itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `scp`; default `["access_as_user"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Adds `mfa` to `amr`.
    #[serde(default)]
    pub mfa: bool,
    /// Lifetime; zero or negative mints an already expired token. Default: the token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedUserToken {
    pub access_token: String,
    pub expires_on: i64,
}

/// A user's refresh tokens by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenCounts {
    pub active: usize,
    /// Rotated (replaced by a newer one).
    pub used: usize,
    pub revoked: usize,
}

impl EmulatorHandle {
    fn user_oid(&self, tenant: &str, user: &str) -> Result<(String, String), ControlError> {
        let directory = self.shared.directory();
        match directory.lookup_tenant(tenant) {
            TenantLookup::Found(found) => found
                .user(user)
                .map(|u| (found.id.clone(), u.oid.clone()))
                .ok_or_else(|| ControlError::NotFound(format!("no user {user} in {tenant}"))),
            _ => Err(ControlError::NotFound(format!("no tenant {tenant}"))),
        }
    }

    /// Adds a test user to the tenant.
    pub fn add_user(&self, tenant: &str, user: &UserConfig) -> Result<(), ControlError> {
        self.shared
            .directory_mut()
            .tenant_mut(tenant)?
            .add_user(user)
    }

    /// Sets whether Conditional Access requires MFA of the user (and whether it is registered).
    pub fn set_user_mfa(
        &self,
        tenant: &str,
        user: &str,
        mfa_required: bool,
        mfa_registered: Option<bool>,
    ) -> Result<(), ControlError> {
        let mut directory = self.shared.directory_mut();
        let user = directory.tenant_mut(tenant)?.user_mut(user)?;
        user.mfa_required = mfa_required;
        if let Some(registered) = mfa_registered {
            user.mfa_registered = registered;
        }
        Ok(())
    }

    /// Replaces the user's portal roles.
    pub fn set_user_portal_roles(
        &self,
        tenant: &str,
        user: &str,
        portal_roles: Vec<String>,
    ) -> Result<(), ControlError> {
        let mut directory = self.shared.directory_mut();
        directory.tenant_mut(tenant)?.user_mut(user)?.portal_roles = portal_roles;
        Ok(())
    }

    /// Revokes every active refresh token of the user (as a password reset does): using one
    /// then answers AADSTS50173. Returns how many were revoked.
    pub fn revoke_refresh_tokens(&self, tenant: &str, user: &str) -> Result<usize, ControlError> {
        let (tenant_id, oid) = self.user_oid(tenant, user)?;
        Ok(self.shared.delegated().revoke_user(&tenant_id, &oid))
    }

    pub fn refresh_token_counts(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<RefreshTokenCounts, ControlError> {
        let (tenant_id, oid) = self.user_oid(tenant, user)?;
        let (active, used, revoked) = self.shared.delegated().refresh_counts(&tenant_id, &oid);
        Ok(RefreshTokenCounts {
            active,
            used,
            revoked,
        })
    }

    /// Sets or replaces a delegated grant (tenant-wide without `user`).
    pub fn set_delegated_grant(
        &self,
        tenant: &str,
        grant: &DelegatedGrantConfig,
    ) -> Result<(), ControlError> {
        self.shared
            .directory_mut()
            .tenant_mut(tenant)?
            .set_delegated_grant(grant)
    }

    /// Removes the app's delegated grants in the tenant: all, or those of one user.
    pub fn revoke_delegated_grants(
        &self,
        tenant: &str,
        client_id: &str,
        user: Option<&str>,
    ) -> Result<(), ControlError> {
        let client_id = crate::entra::directory::normalize_guid(&client_id.to_ascii_lowercase())
            .ok_or_else(|| ControlError::Invalid(format!("{client_id} is not a GUID")))?;
        let oid = match user {
            Some(user) => Some(self.user_oid(tenant, user)?.1),
            None => None,
        };
        self.shared
            .directory_mut()
            .tenant_mut(tenant)?
            .revoke_delegated_grants(&client_id, oid.as_deref());
        Ok(())
    }

    /// Approves or declines a pending device code by its user code.
    pub fn decide_device_code(
        &self,
        user_code: &str,
        decision: &DeviceDecision,
    ) -> Result<(), ControlError> {
        device_code::decide_code(
            &self.shared,
            user_code,
            decision.decision == DeviceVerdict::Approve,
            decision.user.as_deref(),
            decision.mfa,
        )
    }

    /// Mints a delegated token directly, signed like every other token (no consent checked).
    pub fn mint_user_token(
        &self,
        request: &UserTokenRequest,
    ) -> Result<MintedUserToken, ControlError> {
        let directory = self.shared.directory();
        let TenantLookup::Found(tenant) = directory.lookup_tenant(&request.tenant) else {
            return Err(ControlError::NotFound(format!(
                "no tenant {}",
                request.tenant
            )));
        };
        let app = directory
            .app(&request.client_id)
            .ok_or_else(|| ControlError::NotFound(format!("no app {}", request.client_id)))?;
        let user = tenant.user(&request.user).ok_or_else(|| {
            ControlError::NotFound(format!("no user {} in {}", request.user, request.tenant))
        })?;
        let audience = request
            .audience
            .clone()
            .unwrap_or_else(|| format!("api://{}", app.client_id));
        let scopes = if request.scopes.is_empty() {
            vec!["access_as_user".to_owned()]
        } else {
            request.scopes.clone()
        };
        let now = Utc::now();
        let issued = access_token::issue_user_token(
            &self.shared.key,
            &self.shared.base_url,
            &UserTokenOrder {
                tenant,
                app,
                user,
                audience: &audience,
                scopes: &scopes,
                amr: &amr(request.mfa),
                acr: "1",
                lifetime_seconds: request
                    .expires_in_seconds
                    .unwrap_or(i64::try_from(directory.token_lifetime_seconds).unwrap_or(3599)),
                now,
            },
        )
        .map_err(ControlError::invalid)?;
        self.shared.delegated().record(DelegatedTokenRecord {
            grant: "control".to_owned(),
            tenant_id: tenant.id.clone(),
            client_id: app.client_id.clone(),
            user_oid: user.oid.clone(),
            upn: user.upn.clone(),
            audience,
            scp: scopes,
            refresh_token_issued: false,
            at: now,
        });
        Ok(MintedUserToken {
            access_token: issued.access_token,
            expires_on: issued.expires_on,
        })
    }

    pub fn delegated_settings(&self) -> DelegatedSettings {
        self.shared.directory().delegated
    }

    /// Lifetimes of codes and refresh tokens issued from now on (0: expired at once).
    pub fn set_delegated_settings(&self, settings: DelegatedSettings) {
        self.shared.directory_mut().delegated = settings;
    }

    /// Every delegated token issued since start or the last clear, oldest first.
    pub fn delegated_tokens(&self) -> Vec<DelegatedTokenRecord> {
        self.shared.delegated().issued()
    }

    pub fn clear_delegated_tokens(&self) {
        self.shared.delegated().clear_issued();
    }
}

fn handle(shared: Arc<Shared>) -> EmulatorHandle {
    EmulatorHandle { shared }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|error| ControlError::Invalid(format!("invalid body: {error}")))
}

fn done(result: Result<(), ControlError>) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn decide_device(
    State(shared): State<Arc<Shared>>,
    Path(user_code): Path<String>,
    body: Bytes,
) -> Response {
    done(
        parse::<DeviceDecision>(&body)
            .and_then(|decision| handle(shared).decide_device_code(&user_code, &decision)),
    )
}

async fn add_user(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    done(parse::<UserConfig>(&body).and_then(|user| handle(shared).add_user(&tenant, &user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mfa {
    mfa_required: bool,
    mfa_registered: Option<bool>,
}

async fn set_mfa(
    State(shared): State<Arc<Shared>>,
    Path((tenant, user)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    done(parse::<Mfa>(&body).and_then(|mfa| {
        handle(shared).set_user_mfa(&tenant, &user, mfa.mfa_required, mfa.mfa_registered)
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalRoles {
    portal_roles: Vec<String>,
}

async fn set_portal_roles(
    State(shared): State<Arc<Shared>>,
    Path((tenant, user)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    done(
        parse::<PortalRoles>(&body).and_then(|roles| {
            handle(shared).set_user_portal_roles(&tenant, &user, roles.portal_roles)
        }),
    )
}

async fn revoke_refresh_tokens(
    State(shared): State<Arc<Shared>>,
    Path((tenant, user)): Path<(String, String)>,
) -> Response {
    match handle(shared).revoke_refresh_tokens(&tenant, &user) {
        Ok(revoked) => Json(json!({ "revoked": revoked })).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn refresh_counts(
    State(shared): State<Arc<Shared>>,
    Path((tenant, user)): Path<(String, String)>,
) -> Response {
    match handle(shared).refresh_token_counts(&tenant, &user) {
        Ok(counts) => Json(counts).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn set_delegated_grant(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    done(
        parse::<DelegatedGrantConfig>(&body)
            .and_then(|grant| handle(shared).set_delegated_grant(&tenant, &grant)),
    )
}

async fn revoke_delegated_grants(
    State(shared): State<Arc<Shared>>,
    Path((tenant, client_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let values = crate::entra::consent::request_values(query.unwrap_or_default().as_bytes());
    done(handle(shared).revoke_delegated_grants(
        &tenant,
        &client_id,
        values.get("user").map(String::as_str),
    ))
}

async fn mint_user_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<UserTokenRequest>(&body)
        .and_then(|request| handle(shared).mint_user_token(&request))
    {
        Ok(minted) => Json(minted).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn list_issued(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "delegated_tokens": handle(shared).delegated_tokens() })).into_response()
}

async fn clear_issued(State(shared): State<Arc<Shared>>) -> Response {
    handle(shared).clear_delegated_tokens();
    StatusCode::NO_CONTENT.into_response()
}

//! Delegated access: tokens that act for a signed-in test user (reference §8).
//!
//! - `GET /{tenant}/oauth2/v2.0/authorize` and its sign-in + consent page (`authorize.rs`);
//! - the token endpoint's `authorization_code`, `refresh_token`, on-behalf-of and device code
//!   grants (`grants.rs`);
//! - `POST /{tenant}/oauth2/v2.0/devicecode` and the `/devicelogin` page (`device_code.rs`);
//! - the control calls (`control.rs`).
//!
//! Codes, refresh tokens and device codes live in [`DelegatedState`], in memory. Lock order:
//! the directory first, then this state.

mod authorize;
mod control;
mod device_code;
pub(crate) mod grants;
mod scopes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(crate) use control::router as control_router;
pub use control::{
    DeviceDecision, DeviceVerdict, MintedUserToken, RefreshTokenCounts, UserTokenRequest,
};
pub(crate) use scopes::{ScopeRequest, Target, parse_scope};

use crate::entra::directory::{Tenant, User};
use crate::entra::errors::EntraError;
use crate::state::Shared;

/// Longest-kept history of issued delegated tokens.
const LOG_CAPACITY: usize = 10_000;

/// The emulated Microsoft endpoints of the delegated flows (faults apply to them).
pub(crate) fn pages() -> Router<Arc<Shared>> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize::page))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(device_code::start).fallback(crate::entra::token_endpoint::wrong_method),
        )
        .route("/devicelogin", get(device_code::page))
}

/// Who signed in, to which app, for what: carried by codes, refresh tokens and approved
/// device codes.
#[derive(Debug, Clone)]
pub(crate) struct SignIn {
    pub tenant_id: String,
    pub client_id: String,
    pub user_oid: String,
    /// The `scope` of the request, as sent.
    pub scope: String,
    /// Authentication methods: `pwd`, plus `mfa` when MFA was completed.
    pub amr: Vec<String>,
    pub nonce: Option<String>,
    /// Obtained through a public client flow (device code): refreshing needs no credential.
    pub public: bool,
}

struct CodeRecord {
    sign_in: SignIn,
    redirect_uri: String,
    challenge: String,
    expires: DateTime<Utc>,
    redeemed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshStatus {
    Active,
    /// Rotated: replaced by a newer refresh token.
    Used,
    Revoked,
}

struct RefreshRecord {
    sign_in: SignIn,
    expires: DateTime<Utc>,
    status: RefreshStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DeviceState {
    Pending,
    Approved { user_oid: String, mfa: bool },
    Declined,
    Redeemed,
}

struct DeviceRecord {
    tenant_id: String,
    client_id: String,
    scope: String,
    user_code: String,
    expires: DateTime<Utc>,
    interval: u64,
    last_poll: Option<DateTime<Utc>>,
    state: DeviceState,
}

/// One delegated access token the emulator issued (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegatedTokenRecord {
    /// `authorization_code`, `refresh_token`, `on_behalf_of`, `device_code` or `control`.
    pub grant: String,
    pub tenant_id: String,
    pub client_id: String,
    pub user_oid: String,
    pub upn: String,
    pub audience: String,
    pub scp: Vec<String>,
    pub refresh_token_issued: bool,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<String, CodeRecord>,
    refresh: HashMap<String, RefreshRecord>,
    devices: HashMap<String, DeviceRecord>,
    log: std::collections::VecDeque<DelegatedTokenRecord>,
}

/// Codes, refresh tokens, device codes and the issue log.
#[derive(Default)]
pub(crate) struct DelegatedState {
    inner: Mutex<Inner>,
}

impl DelegatedState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, record: DelegatedTokenRecord) {
        let mut inner = self.lock();
        if inner.log.len() == LOG_CAPACITY {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
    }

    /// The tenant an authorization code was issued in: `organizations` and `common` redeem a
    /// code there, as Entra does.
    pub(crate) fn code_tenant(&self, code: &str) -> Option<String> {
        self.lock()
            .codes
            .get(code)
            .map(|record| record.sign_in.tenant_id.clone())
    }

    pub(crate) fn issued(&self) -> Vec<DelegatedTokenRecord> {
        self.lock().log.iter().cloned().collect()
    }

    pub(crate) fn clear_issued(&self) {
        self.lock().log.clear();
    }

    /// Revokes every active refresh token of the user in the tenant; how many.
    pub(crate) fn revoke_user(&self, tenant_id: &str, user_oid: &str) -> usize {
        let mut inner = self.lock();
        let mut count = 0;
        for record in inner.refresh.values_mut() {
            if record.sign_in.tenant_id == tenant_id
                && record.sign_in.user_oid == user_oid
                && record.status == RefreshStatus::Active
            {
                record.status = RefreshStatus::Revoked;
                count += 1;
            }
        }
        count
    }

    /// Counts of the user's refresh tokens: (active, used, revoked).
    pub(crate) fn refresh_counts(&self, tenant_id: &str, user_oid: &str) -> (usize, usize, usize) {
        let inner = self.lock();
        let mut counts = (0, 0, 0);
        for record in inner
            .refresh
            .values()
            .filter(|r| r.sign_in.tenant_id == tenant_id && r.sign_in.user_oid == user_oid)
        {
            match record.status {
                RefreshStatus::Active => counts.0 += 1,
                RefreshStatus::Used => counts.1 += 1,
                RefreshStatus::Revoked => counts.2 += 1,
            }
        }
        counts
    }
}

/// An opaque random value: `prefix` then base64url of `blocks` × 16 random bytes.
fn opaque(prefix: &str, blocks: usize) -> String {
    let mut bytes = Vec::with_capacity(16 * blocks);
    for _ in 0..blocks {
        bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    }
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The Conditional Access claims challenge of the tenant's MFA policy (stable per tenant).
pub(crate) fn claims_challenge(tenant_id: &str) -> String {
    let policy =
        crate::entra::access_token::service_principal_id(tenant_id, "mfa-conditional-access");
    format!(r#"{{"access_token":{{"capolids":{{"essential":true,"values":["{policy}"]}}}}}}"#)
}

/// `interaction_required` when the user's Conditional Access needs MFA that the sign-in did
/// not perform.
pub(crate) fn mfa_check(
    tenant: &Tenant,
    user: &User,
    amr: &[String],
    resource: &str,
) -> Result<(), EntraError> {
    if !user.mfa_required || amr.iter().any(|method| method == "mfa") {
        return Ok(());
    }
    let claims = claims_challenge(&tenant.id);
    let resource = crate::entra::errors::clip(resource);
    Err(if user.mfa_registered {
        EntraError::interaction_required(
            50076,
            format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'."
            ),
            claims,
        )
    } else {
        EntraError::interaction_required(
            50079,
            format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multi-factor authentication to access '{resource}'."
            ),
            claims,
        )
    })
}

/// The authentication methods of a sign-in.
pub(crate) fn amr(mfa: bool) -> Vec<String> {
    if mfa {
        vec!["pwd".to_owned(), "mfa".to_owned()]
    } else {
        vec!["pwd".to_owned()]
    }
}

//! Users who signed in interactively with `offline_access`: their refresh token, sealed (see
//! `signin::sealing`), per tenant and user. Rotation replaces it conditionally on the version
//! read, so two instances redeeming at once cannot store a token that was already superseded,
//! and a revoked token is deleted only if nobody rotated it meanwhile.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::RegistryError;
use crate::tenant_id::TenantId;

#[derive(Clone, PartialEq, Eq)]
pub struct SignedInUser {
    pub tenant_id: TenantId,
    /// Lower-case object id.
    pub user_oid: String,
    pub user_name: Option<String>,
    /// Delegated scopes granted at sign-in, as Entra named them.
    pub scopes: Vec<String>,
    /// The refresh token, encrypted; opaque here.
    pub sealed_refresh_token: Vec<u8>,
    pub signed_in_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; rotation and deletion are conditional on it.
    pub version: u64,
}

impl std::fmt::Debug for SignedInUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedInUser")
            .field("tenant_id", &self.tenant_id)
            .field("user_oid", &self.user_oid)
            .field("user_name", &self.user_name)
            .field("scopes", &self.scopes)
            .field(
                "sealed_refresh_token",
                &format_args!("<{} bytes>", self.sealed_refresh_token.len()),
            )
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The version a sign-in starts at: the time in microseconds, so a sign-in deleted and made
/// again never repeats a version an instance may still hold (its conditional delete or rotation
/// then fails instead of touching the new sign-in).
pub(crate) fn first_version() -> u64 {
    u64::try_from(Utc::now().timestamp_micros()).unwrap_or(1)
}

/// A sign-in unused this long is removed by the table's TTL: Entra ID's refresh tokens expire
/// after 90 days of inactivity, and every use rotates the token and pushes this back.
pub const SIGN_IN_RETENTION_DAYS: i64 = 90;

#[async_trait]
pub trait SignedInUsers: Send + Sync {
    async fn signed_in_user(
        &self,
        tenant: &TenantId,
        user_oid: &str,
    ) -> Result<Option<SignedInUser>, RegistryError>;

    /// Stores a fresh sign-in over whatever was there; answers the stored version.
    async fn save_sign_in(&self, user: &SignedInUser) -> Result<u64, RegistryError>;

    /// Stores `sealed` as the user's refresh token if the stored version is still
    /// `user.version`; `Conflict` otherwise. Answers the new version.
    async fn rotate_refresh_token(
        &self,
        user: &SignedInUser,
        sealed: &[u8],
    ) -> Result<u64, RegistryError>;

    /// Deletes the sign-in if its version is still `version`; `false` if it had changed (or was
    /// already gone).
    async fn forget_sign_in(
        &self,
        tenant: &TenantId,
        user_oid: &str,
        version: u64,
    ) -> Result<bool, RegistryError>;
}

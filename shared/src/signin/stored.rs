//! Delegated tokens for a user who signed in earlier, from their sealed refresh token: opened,
//! redeemed, and replaced by the rotated one Entra returns. Concurrent mints for one user and
//! API share one redemption (the token cache); a token another instance rotated meanwhile is
//! re-read instead of being taken for revoked; a revoked one is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use secrecy::SecretString;

use super::grants::{UserTokens, is_dead_refresh_token, redeem_refresh_token, user_scope};
use super::sealing::{SealContext, SealError, Sealer};
use crate::api::DefenderApi;
use crate::config::TokenSettings;
use crate::entra::delegated::verify_delegated;
use crate::entra::retry::with_retries;
use crate::entra::roles::RoleRequirement;
use crate::entra::{AccessToken, DelegatedToken, EntraError, OboError, TokenCache, TokenClient};
use crate::secrets::{CredentialError, CredentialStore};
use crate::store::{RegistryError, SignedInUser, SignedInUsers};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// Rounds of re-reading a sign-in that another instance rotated while we redeemed it.
const ROTATION_ROUNDS: usize = 3;

/// How long a refused refresh token waits before its sign-in is deleted: another instance that
/// redeemed the same token a moment earlier is still sealing and writing the rotated one, and
/// the version it writes is what shows the refusal meant "already rotated", not "revoked".
const ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredSignInError {
    #[error(
        "user {user} has no stored sign-in for tenant {tenant}: the user must sign in once (GET /signin/start?tenant={tenant}) with offline access"
    )]
    NotSignedIn { tenant: String, user: String },
    #[error(
        "the stored sign-in of user {user} in tenant {tenant} is no longer accepted by Entra ID (revoked, password changed, or unused too long) and was deleted: the user must sign in again"
    )]
    SignInRevoked { tenant: String, user: String },
    #[error(
        "the stored sign-in of user {user} in tenant {tenant} cannot be opened with this deployment's key ({reason}); it is kept, and the user's next sign-in replaces it"
    )]
    Unreadable {
        tenant: String,
        user: String,
        reason: &'static str,
    },
    #[error("the stored sign-in cannot be opened: {0}")]
    Seal(#[from] SealError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Delegated(#[from] OboError),
}

impl From<EntraError> for StoredSignInError {
    fn from(error: EntraError) -> Self {
        StoredSignInError::Delegated(OboError::Entra(error))
    }
}

impl CallerError for StoredSignInError {
    fn code(&self) -> ErrorCode {
        match self {
            StoredSignInError::NotSignedIn { .. }
            | StoredSignInError::SignInRevoked { .. }
            | StoredSignInError::Unreadable { .. } => ErrorCode::SignInRequired,
            StoredSignInError::Seal(error) => error.code(),
            StoredSignInError::Registry(error) => error.code(),
            StoredSignInError::Credential(error) => error.code(),
            StoredSignInError::Delegated(error) => error.code(),
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            StoredSignInError::Delegated(error) => error.retry_after(),
            _ => None,
        }
    }

    fn claims_challenge(&self) -> Option<&str> {
        match self {
            StoredSignInError::Delegated(error) => error.claims_challenge(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    tenant: TenantId,
    api: DefenderApi,
    user_oid: String,
}

/// Held while one of a user's refresh tokens is redeemed and its successor stored.
type RedemptionLock = Arc<tokio::sync::Mutex<()>>;

pub struct StoredSignIns {
    users: Arc<dyn SignedInUsers>,
    sealer: Arc<Sealer>,
    client: TokenClient,
    credentials: Arc<CredentialStore>,
    cache: TokenCache<CacheKey>,
    redemptions: std::sync::Mutex<HashMap<(TenantId, String), RedemptionLock>>,
    settings: TokenSettings,
}

impl StoredSignIns {
    /// Reads the sealing keys and wires the shared clients; once per cold start.
    pub async fn build(
        services: &crate::runtime::Services,
    ) -> Result<StoredSignIns, CredentialError> {
        let sealer = super::keys::load_sealer(services, None).await?;
        Ok(StoredSignIns::new(
            services.signed_in.clone(),
            Arc::new(sealer),
            TokenClient::new(services.http.clone(), services.settings.endpoints.clone()),
            services.credentials.clone(),
            services.settings.token.clone(),
        ))
    }

    pub fn new(
        users: Arc<dyn SignedInUsers>,
        sealer: Arc<Sealer>,
        client: TokenClient,
        credentials: Arc<CredentialStore>,
        settings: TokenSettings,
    ) -> StoredSignIns {
        StoredSignIns {
            users,
            sealer,
            client,
            credentials,
            cache: TokenCache::new(settings.refresh_ahead),
            redemptions: std::sync::Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// A delegated token for `api` in `tenant` acting for the signed-in user `user_oid`.
    pub async fn token(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        user_oid: &str,
        required: &RoleRequirement,
    ) -> Result<DelegatedToken, StoredSignInError> {
        let user_oid = user_oid.trim().to_ascii_lowercase();
        let key = CacheKey {
            tenant: tenant.clone(),
            api,
            user_oid: user_oid.clone(),
        };
        let token = self
            .cache
            .get_or_fetch_keeping(
                key,
                || async {
                    let token = {
                        // One redemption per user at a time in this instance, whatever the
                        // API: each one spends the refresh token the next would need.
                        let user_lock = self.redemption_lock(tenant, &user_oid);
                        let _redeeming = user_lock.lock().await;
                        self.redeem(tenant, api, &user_oid).await?
                    };
                    verify_delegated(Arc::new(token.clone()), tenant, api, &user_oid, required)?;
                    Ok::<_, StoredSignInError>(token)
                },
                // A revoked sign-in is answered as revoked at once, not served on from the cache.
                |error: &StoredSignInError| error.code().is_transient(),
            )
            .await?;
        let delegated = verify_delegated(token, tenant, api, &user_oid, required)?;
        tracing::info!(tenant = %tenant, api = %api, user_oid = %user_oid, expires_at = %delegated.expires_at(), "delegated token from a stored sign-in");
        Ok(delegated)
    }

    fn redemption_lock(&self, tenant: &TenantId, user_oid: &str) -> RedemptionLock {
        self.redemptions
            .lock()
            .expect("redemption locks poisoned")
            .entry((tenant.clone(), user_oid.to_owned()))
            .or_default()
            .clone()
    }

    async fn redeem(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        user_oid: &str,
    ) -> Result<AccessToken, StoredSignInError> {
        let context = SealContext {
            tenant: tenant.to_string(),
            user_oid: user_oid.to_owned(),
        };
        let scope = user_scope(self.client.endpoints().resource(api));
        let not_signed_in = || StoredSignInError::NotSignedIn {
            tenant: tenant.to_string(),
            user: user_oid.to_owned(),
        };
        let mut last_version = None;
        for _ in 0..ROTATION_ROUNDS {
            let stored = self
                .users
                .signed_in_user(tenant, user_oid)
                .await?
                .ok_or_else(not_signed_in)?;
            if last_version == Some(stored.version) {
                break;
            }
            last_version = Some(stored.version);
            let refresh_token = match self
                .sealer
                .open(&stored.sealed_refresh_token, &context)
                .await
            {
                Ok(token) => token,
                Err(SealError::Unreadable(reason)) => {
                    // Not deleted: a wrong key is a deployment mistake that would otherwise
                    // erase every user's sign-in on first use.
                    tracing::warn!(tenant = %tenant, user_oid, reason, "stored sign-in unreadable; kept");
                    return Err(StoredSignInError::Unreadable {
                        tenant: tenant.to_string(),
                        user: user_oid.to_owned(),
                        reason,
                    });
                }
                Err(error) => return Err(error.into()),
            };
            match self.exchange(tenant, &refresh_token, &scope).await {
                Ok(tokens) => {
                    self.keep_rotated(&stored, &tokens, &context).await;
                    return Ok(tokens.access);
                }
                Err(error) if is_dead_refresh_token(&error) => {
                    // Dead for us, or already rotated by another instance: only the stored
                    // version tells which, once that instance has had time to write it.
                    tokio::time::sleep(ROTATION_GRACE).await;
                    if self
                        .users
                        .forget_sign_in(tenant, user_oid, stored.version)
                        .await?
                    {
                        tracing::warn!(tenant = %tenant, user_oid, code = ?error.code(), "stored sign-in refused by Entra ID; deleted");
                        return Err(StoredSignInError::SignInRevoked {
                            tenant: tenant.to_string(),
                            user: user_oid.to_owned(),
                        });
                    }
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(not_signed_in())
    }

    async fn exchange(
        &self,
        tenant: &TenantId,
        refresh_token: &SecretString,
        scope: &str,
    ) -> Result<UserTokens, EntraError> {
        let credential = self.credentials.current().await.map_err(|error| {
            EntraError::Transport(format!("app credential unavailable: {error}"))
        })?;
        with_retries(self.settings.deadline, || {
            let credential = credential.clone();
            async move {
                redeem_refresh_token(
                    &self.client,
                    tenant.as_str(),
                    refresh_token,
                    scope,
                    &credential,
                )
                .await
            }
        })
        .await
    }

    /// After a lost rotation race: the sign-in was deleted meanwhile (an instance took our
    /// spent token for revoked), so the token just issued, the only live one, is stored again;
    /// a sign-in made meanwhile is newer than ours and stays.
    async fn restore_if_deleted(
        &self,
        stored: &SignedInUser,
        sealed: Vec<u8>,
    ) -> Result<(), String> {
        match self
            .users
            .signed_in_user(&stored.tenant_id, &stored.user_oid)
            .await
        {
            Ok(Some(_)) => Err("a newer sign-in was stored meanwhile; it is kept".into()),
            Ok(None) => {
                let mut restored = stored.clone();
                restored.sealed_refresh_token = sealed;
                self.users
                    .save_sign_in(&restored)
                    .await
                    .map(|_| tracing::warn!(tenant = %stored.tenant_id, user_oid = %stored.user_oid, "stored sign-in deleted during rotation; restored with the rotated token"))
                    .map_err(|error| error.to_string())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Stores the rotated refresh token. Losing the race to a newer sign-in keeps the newer one.
    async fn keep_rotated(
        &self,
        stored: &SignedInUser,
        tokens: &UserTokens,
        context: &SealContext,
    ) {
        let Some(rotated) = &tokens.refresh_token else {
            return;
        };
        let outcome = match self.sealer.seal(rotated, context).await {
            Ok(sealed) => match self.users.rotate_refresh_token(stored, &sealed).await {
                Ok(_) => Ok(()),
                Err(RegistryError::Conflict(_)) => self.restore_if_deleted(stored, sealed).await,
                Err(error) => Err(error.to_string()),
            },
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => {
                tracing::debug!(tenant = %context.tenant, user_oid = %context.user_oid, at = %Utc::now(), "refresh token rotated")
            }
            Err(problem) => {
                tracing::warn!(tenant = %context.tenant, user_oid = %context.user_oid, problem, "rotated refresh token not stored")
            }
        }
    }
}

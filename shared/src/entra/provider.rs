//! App-only tokens for customer tenants, ready to use: the credential from its store, the token
//! endpoint with retries, the cache, a re-read of a rotated credential, and the check that the
//! token is for the tenant asked and carries the roles required.

use std::sync::Arc;

use super::cache::TokenCache;
use super::client::{AccessToken, TokenClient, TokenRequest};
use super::errors::EntraError;
use super::retry::with_credential_retries;
use super::roles::RoleRequirement;
use crate::api::DefenderApi;
use crate::config::{TokenEndpointVersion, TokenSettings};
use crate::secrets::{AppCredential, CredentialError, CredentialStore};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppTokenError {
    #[error(transparent)]
    Entra(#[from] EntraError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("Entra ID issued a token for tenant {got} when tenant {asked} was asked: refusing it")]
    TenantMismatch { asked: String, got: String },
    #[error(
        "tenant {tenant} has not granted the roles {} requires ({}): it granted [{}]; ask the customer's administrator to consent again with the current permissions",
        api.display_name(), missing.join(", "), granted.join(", ")
    )]
    RolesMissing {
        tenant: String,
        api: DefenderApi,
        missing: Vec<String>,
        granted: Vec<String>,
    },
}

impl CallerError for AppTokenError {
    fn code(&self) -> ErrorCode {
        match self {
            AppTokenError::Entra(error) => error.code(),
            AppTokenError::Credential(error) => error.code(),
            AppTokenError::TenantMismatch { .. } => ErrorCode::TokenTenantMismatch,
            AppTokenError::RolesMissing { .. } => ErrorCode::RolesMissing,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AppTokenError::Entra(error) => error.retry_after(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    tenant: TenantId,
    api: DefenderApi,
    version: TokenEndpointVersion,
}

pub struct AppTokenProvider {
    client: TokenClient,
    credentials: Arc<CredentialStore>,
    cache: TokenCache<CacheKey>,
    settings: TokenSettings,
}

impl AppTokenProvider {
    pub fn new(
        client: TokenClient,
        credentials: Arc<CredentialStore>,
        settings: TokenSettings,
    ) -> AppTokenProvider {
        AppTokenProvider {
            client,
            credentials,
            cache: TokenCache::new(settings.refresh_ahead),
            settings,
        }
    }

    pub fn client(&self) -> &TokenClient {
        &self.client
    }

    /// A token for `api` in `tenant`, from the cache when it has life left, verified against
    /// `required`. A token that fails verification is never cached, so a new consent takes
    /// effect on the next call.
    pub async fn token(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        version: Option<TokenEndpointVersion>,
        required: &RoleRequirement,
    ) -> Result<Arc<AccessToken>, AppTokenError> {
        let version = version.unwrap_or(self.settings.endpoint_version);
        let key = CacheKey {
            tenant: tenant.clone(),
            api,
            version,
        };
        let token = self
            .cache
            .get_or_fetch(key, || async {
                let token = self.fetch(tenant, api, version).await?;
                verify(&token, tenant, api, required)?;
                Ok::<_, AppTokenError>(token)
            })
            .await?;
        // A cached token was verified when fetched, but the requirement may differ per caller.
        verify(&token, tenant, api, required)?;
        Ok(token)
    }

    /// Forgets the cached token (an API refused it with 401).
    pub async fn invalidate(&self, tenant: &TenantId, api: DefenderApi) {
        for version in [TokenEndpointVersion::V2, TokenEndpointVersion::V1] {
            self.cache
                .invalidate(&CacheKey {
                    tenant: tenant.clone(),
                    api,
                    version,
                })
                .await;
        }
    }

    /// A fresh token from Entra ID, bypassing the cache; a refused credential is re-read once.
    pub async fn fetch(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        version: TokenEndpointVersion,
    ) -> Result<AccessToken, AppTokenError> {
        let request = TokenRequest {
            tenant: tenant.as_str(),
            resource: self.client.endpoints().resource(api),
            version,
        };
        let attempt = |credential: Arc<AppCredential>| {
            let client = &self.client;
            move || {
                let credential = Arc::clone(&credential);
                async move { client.request_once(request, &credential).await }
            }
        };
        with_credential_retries(&self.credentials, self.settings.deadline, attempt).await
    }
}

/// The token is for `tenant` and carries what `required` asks for.
pub fn verify(
    token: &AccessToken,
    tenant: &TenantId,
    api: DefenderApi,
    required: &RoleRequirement,
) -> Result<(), AppTokenError> {
    if !token.claims.tid.eq_ignore_ascii_case(tenant.as_str()) {
        return Err(AppTokenError::TenantMismatch {
            asked: tenant.to_string(),
            got: token.claims.tid.chars().take(64).collect(),
        });
    }
    if let Some(missing) = required.missing(&token.claims.roles) {
        return Err(AppTokenError::RolesMissing {
            tenant: tenant.to_string(),
            api,
            missing,
            granted: token.claims.roles.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use secrecy::SecretString;
    use serde_json::json;

    use super::*;
    use crate::entra::claims::{decode_payload, fake_jwt};

    fn token(claims: serde_json::Value) -> AccessToken {
        let jwt = fake_jwt(&claims);
        AccessToken {
            claims: decode_payload(&jwt).unwrap(),
            token: SecretString::from(jwt),
            token_type: "Bearer".into(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        }
    }

    const ASKED: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn a_token_for_another_tenant_is_refused() {
        let tenant = TenantId::parse(ASKED).unwrap();
        let other = token(
            json!({"tid": "0e3e2e88-8caf-41ca-b4da-e3b33b6c52ec", "roles": ["Incident.Read.All"]}),
        );
        let error = verify(
            &other,
            &tenant,
            DefenderApi::M365d,
            &RoleRequirement::default_for(DefenderApi::M365d),
        )
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::TokenTenantMismatch);
        assert!(
            error
                .to_string()
                .contains("0e3e2e88-8caf-41ca-b4da-e3b33b6c52ec")
        );
    }

    #[test]
    fn roles_are_checked_against_the_requirement() {
        let tenant = TenantId::parse(ASKED).unwrap();
        let requirement = RoleRequirement::default_for(DefenderApi::Graph);
        let granted = token(json!({"tid": ASKED, "roles": ["SecurityIncident.ReadWrite.All"]}));
        assert!(verify(&granted, &tenant, DefenderApi::Graph, &requirement).is_ok());
        let nothing = token(json!({"tid": ASKED}));
        let error = verify(&nothing, &tenant, DefenderApi::Graph, &requirement).unwrap_err();
        assert_eq!(error.code(), ErrorCode::RolesMissing);
        assert!(error.to_string().contains("Microsoft Graph"));
        // Upper-case tid in the token still matches.
        let upper =
            token(json!({"tid": ASKED.to_uppercase(), "roles": ["SecurityIncident.Read.All"]}));
        assert!(verify(&upper, &tenant, DefenderApi::Graph, &requirement).is_ok());
    }
}

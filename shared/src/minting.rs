//! The `mint-token` service: validate a request, check the registry, hand out a verified token.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::ErrorCode;
use crate::api::{DefenderApi, UnknownApi};
use crate::config::{Settings, TokenEndpointVersion};
use crate::entra::discovery::TenantResolver;
use crate::entra::{AppTokenError, AppTokenProvider, EntraError};
use crate::runtime::Services;
use crate::tenant_id::{TenantIdError, TenantRef};
use crate::tenants::{RegistryError, TenantRegistry, TenantStatus};

/// What a calling workflow sends. Every field is checked; unknown fields are refused so that a
/// typo (`"tenantId"`) fails loudly instead of being ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub tenant: Option<String>,
    pub api: Option<String>,
    pub endpoint_version: Option<String>,
}

/// The answer: the one place a token leaves the system.
#[derive(Debug, Clone, Serialize)]
pub struct MintedToken {
    #[serde(serialize_with = "expose")]
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_on: DateTime<Utc>,
    pub expires_in: u64,
    pub tenant_id: String,
    pub api: DefenderApi,
    pub resource: String,
    pub roles: Vec<String>,
}

fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    InvalidTenantId(#[from] TenantIdError),
    #[error(transparent)]
    UnknownApi(#[from] UnknownApi),
    #[error(
        "tenant {0} is not registered: onboard it through the consent link before minting tokens"
    )]
    TenantNotRegistered(String),
    #[error("tenant {tenant} is {status}, not active: tokens are minted only for active tenants")]
    TenantNotActive {
        tenant: String,
        status: TenantStatus,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Token(#[from] AppTokenError),
    #[error(transparent)]
    Discovery(#[from] EntraError),
}

impl MintError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MintError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            MintError::InvalidTenantId(_) => ErrorCode::InvalidTenantId,
            MintError::UnknownApi(_) => ErrorCode::UnknownApi,
            MintError::TenantNotRegistered(_) => ErrorCode::TenantNotRegistered,
            MintError::TenantNotActive { .. } => ErrorCode::TenantNotActive,
            MintError::Registry(error) => error.code(),
            MintError::Token(error) => error.code(),
            MintError::Discovery(error) => error.code(),
        }
    }

    /// How long a throttled caller should wait, when Microsoft said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MintError::Token(error) => error.retry_after(),
            MintError::Discovery(error) => error.retry_after(),
            _ => None,
        }
    }
}

pub struct TokenService {
    settings: Settings,
    registry: Arc<dyn TenantRegistry>,
    tokens: Arc<AppTokenProvider>,
    resolver: TenantResolver,
}

impl TokenService {
    pub fn new(services: &Services) -> TokenService {
        TokenService {
            settings: services.settings.clone(),
            registry: services.registry.clone(),
            tokens: services.tokens.clone(),
            resolver: TenantResolver::new(
                services.http.clone(),
                services.settings.endpoints.clone(),
            ),
        }
    }

    /// Parses a raw JSON payload and mints.
    pub async fn mint_json(&self, payload: serde_json::Value) -> Result<MintedToken, MintError> {
        let request: MintRequest = serde_json::from_value(payload).map_err(|error| {
            MintError::InvalidRequest(format!(
                "{error}; expected {{\"tenant\": \"<tenant id or domain>\", \"api\": \"m365d|mde|graph\"}}"
            ))
        })?;
        self.mint(&request).await
    }

    pub async fn mint(&self, request: &MintRequest) -> Result<MintedToken, MintError> {
        let tenant_text = request
            .tenant
            .as_deref()
            .ok_or_else(|| MintError::InvalidRequest("tenant is missing".into()))?;
        let api_text = request
            .api
            .as_deref()
            .ok_or_else(|| MintError::InvalidRequest("api is missing".into()))?;
        let tenant = TenantRef::parse(tenant_text)?;
        let api: DefenderApi = api_text.parse()?;
        let version = request
            .endpoint_version
            .as_deref()
            .map(|text| text.parse::<TokenEndpointVersion>())
            .transpose()
            .map_err(MintError::InvalidRequest)?;

        let tenant_id = self.resolver.resolve(&tenant).await?;
        let record = self
            .registry
            .get(&tenant_id)
            .await?
            .ok_or_else(|| MintError::TenantNotRegistered(tenant_id.to_string()))?;
        if record.status != TenantStatus::Active {
            return Err(MintError::TenantNotActive {
                tenant: tenant_id.to_string(),
                status: record.status,
            });
        }

        let token = self
            .tokens
            .token(&tenant_id, api, version, self.settings.required_roles(api))
            .await?;
        let expires_in = token.remaining().as_secs();
        tracing::info!(
            tenant = %tenant_id,
            api = %api,
            expires_in,
            roles = ?token.claims.roles,
            "token handed out"
        );
        Ok(MintedToken {
            access_token: token.token.clone(),
            token_type: token.token_type.clone(),
            expires_on: token.expires_at,
            expires_in,
            tenant_id: tenant_id.to_string(),
            api,
            resource: self.settings.endpoints.resource(api).to_owned(),
            roles: token.claims.roles.clone(),
        })
    }
}

impl From<&MintError> for crate::edge::EdgeError {
    fn from(error: &MintError) -> Self {
        crate::edge::EdgeError {
            code: error.code(),
            message: error.to_string(),
            retry_after: error.retry_after(),
        }
    }
}

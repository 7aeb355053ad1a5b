//! The `mint-token` service: validate a request, check the registry, hand out a verified token.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::api::{DefenderApi, UnknownApi};
use crate::callers::{Admission, Caller, CallerScoping, ScopeError};
use crate::config::{ApiAccessSettings, TokenEndpointVersion};
use crate::entra::discovery::TenantResolver;
use crate::entra::{
    AccessToken, AppTokenError, AppTokenProvider, EntraError, OboError, OboProvider, TokenClient,
};
use crate::runtime::Services;
use crate::store::{RegistryError, TenantRegistry, TenantStatus};
use crate::tenant_id::{TenantId, TenantIdError, TenantRef};
use crate::{CallerError, ErrorCode};

/// What a calling workflow sends. Every field is checked; unknown fields are refused so that a
/// typo (`"tenantId"`) fails loudly instead of being ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub tenant: Option<String>,
    pub api: Option<String>,
    pub endpoint_version: Option<String>,
    /// A user's access token issued for our app: the answer is then a delegated token for that
    /// user (on-behalf-of), not an app-only one.
    pub user_token: Option<SecretString>,
    /// The object id of a user who signed in interactively with offline access: the answer is a
    /// delegated token for that user from their stored sign-in (only where enabled).
    pub user_oid: Option<String>,
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
    /// App-only tokens: the application roles granted.
    pub roles: Vec<String>,
    /// Delegated tokens: the user's object id, name and granted scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_oid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_upn: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// Who asked for a token: checked against its mapping, and logged with every token handed out
/// together with the request id (API Gateway's `requestContext.requestId`, which the API's access
/// log carries too, or Lambda's for a direct invocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintCaller {
    pub caller: Caller,
    pub request_id: Option<String>,
}

impl MintCaller {
    /// The function minting for its own use.
    pub fn internal() -> MintCaller {
        MintCaller {
            caller: Caller::Internal,
            request_id: None,
        }
    }
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
    #[error(transparent)]
    Delegated(#[from] OboError),
    #[error(
        "this function does not mint from stored sign-ins: invoke mint-user-token (the MintUserTokenFunctionArn output, deployed with StoredSignInMinting=enabled), which only the callers IAM allows may invoke"
    )]
    StoredSignInDisabled,
    #[error(transparent)]
    StoredSignIn(#[from] crate::signin::StoredSignInError),
    #[error(transparent)]
    Caller(#[from] ScopeError),
}

impl CallerError for MintError {
    fn code(&self) -> ErrorCode {
        match self {
            MintError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            MintError::InvalidTenantId(_) => ErrorCode::InvalidTenantId,
            MintError::UnknownApi(_) => ErrorCode::UnknownApi,
            MintError::TenantNotRegistered(_) => ErrorCode::TenantNotRegistered,
            MintError::TenantNotActive { .. } => ErrorCode::TenantNotActive,
            MintError::Registry(error) => error.code(),
            MintError::Token(error) => error.code(),
            MintError::Discovery(error) => error.code(),
            MintError::Delegated(error) => error.code(),
            MintError::StoredSignInDisabled => ErrorCode::StoredSignInDisabled,
            MintError::StoredSignIn(error) => error.code(),
            MintError::Caller(error) => error.code(),
        }
    }

    /// How long a throttled caller should wait, when Microsoft said.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            MintError::Token(error) => error.retry_after(),
            MintError::Discovery(error) => error.retry_after(),
            MintError::Delegated(error) => error.retry_after(),
            MintError::StoredSignIn(error) => error.retry_after(),
            _ => None,
        }
    }

    /// Microsoft's `claims` challenge, for the calling app to re-prompt its user.
    fn claims_challenge(&self) -> Option<&str> {
        match self {
            MintError::Delegated(error) => error.claims_challenge(),
            MintError::StoredSignIn(error) => error.claims_challenge(),
            _ => None,
        }
    }
}

pub struct TokenService {
    settings: ApiAccessSettings,
    registry: Arc<dyn TenantRegistry>,
    tokens: Arc<AppTokenProvider>,
    delegated: OboProvider,
    stored: Option<crate::signin::StoredSignIns>,
    resolver: TenantResolver,
    /// Which tenants each caller may mint for (`mint-token`); none for a function minting for
    /// its own use.
    scoping: Option<CallerScoping>,
}

impl TokenService {
    pub fn new(services: &Services) -> TokenService {
        TokenService {
            settings: services.settings.api_access(),
            registry: services.registry.clone(),
            tokens: services.tokens.clone(),
            delegated: OboProvider::new(
                TokenClient::new(services.http.clone(), services.settings.endpoints.clone()),
                services.credentials.clone(),
                services.settings.token.clone(),
            ),
            stored: None,
            resolver: TenantResolver::new(
                services.http.clone(),
                services.settings.endpoints.clone(),
            ),
            scoping: None,
        }
    }

    /// Holds every caller to its mapping in the store (`mint-token`).
    pub fn with_caller_scoping(mut self, scoping: CallerScoping) -> TokenService {
        self.scoping = Some(scoping);
        self
    }

    /// Lets this service mint for users from their stored sign-ins (`user_oid` requests).
    pub fn with_stored_sign_ins(mut self, stored: crate::signin::StoredSignIns) -> TokenService {
        self.stored = Some(stored);
        self
    }

    /// Parses a raw JSON payload and mints for the function's own use.
    pub async fn mint_json(&self, payload: serde_json::Value) -> Result<MintedToken, MintError> {
        self.mint_json_for(&MintCaller::internal(), payload).await
    }

    /// Parses a raw JSON payload and mints for `caller`.
    pub async fn mint_json_for(
        &self,
        caller: &MintCaller,
        payload: serde_json::Value,
    ) -> Result<MintedToken, MintError> {
        let request: MintRequest = serde_json::from_value(payload).map_err(|error| {
            MintError::InvalidRequest(format!(
                "{error}; expected {{\"tenant\": \"<tenant id or domain>\", \"api\": \"m365d|mde|graph\"}}"
            ))
        })?;
        self.mint_for(caller, &request).await
    }

    /// Mints for the function's own use (no caller to scope).
    pub async fn mint(&self, request: &MintRequest) -> Result<MintedToken, MintError> {
        self.mint_for(&MintCaller::internal(), request).await
    }

    /// Mints for `caller`: the caller's mapping is checked before the registry's verdict and
    /// before any token is requested from Entra.
    pub async fn mint_for(
        &self,
        caller: &MintCaller,
        request: &MintRequest,
    ) -> Result<MintedToken, MintError> {
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
        let record = self.registry.get(&tenant_id).await?;
        let admission = match &self.scoping {
            Some(scoping) => {
                let customer_ref = record
                    .as_ref()
                    .and_then(|record| record.customer_ref.as_deref());
                scoping
                    .check(&caller.caller, &tenant_id, customer_ref)
                    .await
                    .inspect_err(|error| {
                        tracing::warn!(caller = %caller.caller, request_id = caller.request_id.as_deref(), tenant = %tenant_id, code = %error.code(), "caller refused")
                    })?
            }
            None => Admission::ScopingOff,
        };
        let record = record.ok_or_else(|| MintError::TenantNotRegistered(tenant_id.to_string()))?;
        if record.status != TenantStatus::Active {
            return Err(MintError::TenantNotActive {
                tenant: tenant_id.to_string(),
                status: record.status,
            });
        }

        let delegated = if let Some(user_oid) = &request.user_oid {
            if TenantId::parse(user_oid).is_err() {
                return Err(MintError::InvalidRequest(
                    "user_oid must be the user's object id (a GUID, the token's oid claim)".into(),
                ));
            }
            if request.user_token.is_some() {
                return Err(MintError::InvalidRequest(
                    "send either user_token (on-behalf-of) or user_oid (stored sign-in), not both"
                        .into(),
                ));
            }
            delegated_on_v2_only(version, "user_oid")?;
            let stored = self
                .stored
                .as_ref()
                .ok_or(MintError::StoredSignInDisabled)?;
            let scopes = self.settings.access.required_scopes(api);
            Some((
                stored.token(&tenant_id, api, user_oid, scopes).await?,
                "stored_sign_in",
            ))
        } else if let Some(user_token) = &request.user_token {
            delegated_on_v2_only(version, "user_token")?;
            let scopes = self.settings.access.required_scopes(api);
            Some((
                self.delegated
                    .token(&tenant_id, api, user_token, scopes)
                    .await?,
                "on_behalf_of",
            ))
        } else {
            None
        };
        if let Some((delegated, kind)) = delegated {
            let answer = MintedToken {
                user_oid: Some(delegated.user_oid.clone()),
                user_upn: delegated.upn.clone(),
                scopes: delegated.scopes.clone(),
                ..self.answer(&delegated.token, &tenant_id, api)
            };
            handed_out(&answer, kind, caller, admission);
            return Ok(answer);
        }

        let token = self
            .tokens
            .token(
                &tenant_id,
                api,
                version,
                self.settings.access.required_roles(api),
            )
            .await?;
        let answer = MintedToken {
            roles: token.claims.roles.clone(),
            ..self.answer(&token, &tenant_id, api)
        };
        handed_out(&answer, "app", caller, admission);
        Ok(answer)
    }

    /// What every answer says of its token; app-only and delegated answers add their own part.
    fn answer(&self, token: &AccessToken, tenant_id: &TenantId, api: DefenderApi) -> MintedToken {
        MintedToken {
            access_token: token.token.clone(),
            token_type: token.token_type.clone(),
            expires_on: token.expires_at,
            expires_in: token.remaining().as_secs(),
            tenant_id: tenant_id.to_string(),
            api,
            resource: self.settings.endpoints.resource(api).to_owned(),
            roles: Vec::new(),
            user_oid: None,
            user_upn: None,
            scopes: Vec::new(),
        }
    }
}

/// Delegated tokens (on-behalf-of, stored sign-in) come from the v2 endpoint only: a request
/// that asks for v1 with one is refused rather than silently answered from v2.
fn delegated_on_v2_only(
    version: Option<TokenEndpointVersion>,
    field: &str,
) -> Result<(), MintError> {
    if version == Some(TokenEndpointVersion::V1) {
        return Err(MintError::InvalidRequest(format!(
            "delegated ({field}) requests use the v2 endpoint only; drop endpoint_version"
        )));
    }
    Ok(())
}

/// The audit line of every token handed out (never the token): what for, for whom, to which
/// caller under which request id (the join with the API's access log), and why it was allowed.
fn handed_out(answer: &MintedToken, kind: &'static str, caller: &MintCaller, admission: Admission) {
    tracing::info!(
        tenant = %answer.tenant_id,
        api = %answer.api,
        kind,
        user = answer.user_oid.as_deref(),
        caller = %caller.caller,
        request_id = caller.request_id.as_deref(),
        admission = admission.as_str(),
        expires_in = answer.expires_in,
        roles = ?answer.roles,
        scopes = ?answer.scopes,
        "token handed out"
    );
}

//! Interactive sign-in (authorization code + PKCE), made serverless: `start` sends the user to
//! Microsoft with a signed single-use `state` and a PKCE challenge; `callback` redeems the code,
//! checks who signed in where, keeps the refresh token sealed when `offline_access` was granted,
//! and answers a plain page. Tokens, codes and verifiers never reach a page or a log.

use std::sync::Arc;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretSlice};
use url::Url;
use uuid::Uuid;

use super::callback::{SignInOutcome, parse_signin_callback};
use super::grants::{redeem_code, user_scope};
use super::pages;
use super::sealing::{SealContext, Sealer};
use super::state::{SignInClaims, SignInState};
use crate::api::DefenderApi;
use crate::config::{ENV_SIGNIN_REDIRECT_URI, SignInServiceSettings};
use crate::entra::id_token::{Expected, IdTokenError, IdTokenVerifier};
use crate::entra::{EntraError, TokenClient};
use crate::redirect::key::load_state_key;
use crate::redirect::pkce::{NonceDeriver, PkceDeriver};
use crate::redirect::{
    Page, Purpose, Refusal, SignedState, StateError, StateSigner, answer_callback,
};
use crate::secrets::{CredentialError, CredentialStore};
use crate::store::{
    AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, ConsumeError, RegistryError,
    SignedInUser, SignedInUsers, TenantRegistry, TenantStatus, stored_now,
};
use crate::telemetry::metrics::{self, TokenPath};
use crate::tenant_id::{TenantId, TenantIdError};
use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error(
        "{ENV_SIGNIN_REDIRECT_URI} is not set: sign-in needs the callback URL registered on the app as a Web redirect URI"
    )]
    RedirectUriMissing,
    #[error(transparent)]
    InvalidTenant(#[from] TenantIdError),
    #[error("unknown api {0:?}: use m365d, mde or graph")]
    UnknownApi(String),
    #[error("tenant {0} is not registered: onboard it (admin consent) before users sign in")]
    NotRegistered(String),
    #[error("tenant {tenant} is {status}, not active: users sign in only to active tenants")]
    NotActive {
        tenant: String,
        status: TenantStatus,
    },
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl CallerError for SignInError {
    fn code(&self) -> ErrorCode {
        match self {
            SignInError::RedirectUriMissing => ErrorCode::ConfigInvalid,
            SignInError::InvalidTenant(_) => ErrorCode::InvalidTenantId,
            SignInError::UnknownApi(_) => ErrorCode::UnknownApi,
            SignInError::NotRegistered(_) => ErrorCode::TenantNotRegistered,
            SignInError::NotActive { .. } => ErrorCode::TenantNotActive,
            SignInError::Credential(error) => error.code(),
            SignInError::Registry(error) => error.code(),
        }
    }
}

/// A sign-in link for one user's browser.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignInLink {
    pub url: String,
    pub tenant_id: String,
    pub api: DefenderApi,
    pub expires_at: chrono::DateTime<Utc>,
}

pub struct SignInService {
    settings: SignInServiceSettings,
    signer: StateSigner,
    pkce: PkceDeriver,
    nonces: NonceDeriver,
    id_tokens: IdTokenVerifier,
    attempts: Arc<dyn ConsentAttempts>,
    registry: Arc<dyn TenantRegistry>,
    users: Arc<dyn SignedInUsers>,
    sealer: Arc<Sealer>,
    client: TokenClient,
    credentials: Arc<CredentialStore>,
}

/// The parts a sign-in service is built from (built once per cold start).
pub struct SignInParts {
    pub settings: SignInServiceSettings,
    /// The service's signing key (the consent state key); sign-in derives its own keys from it.
    pub service_key: SecretSlice<u8>,
    pub attempts: Arc<dyn ConsentAttempts>,
    pub registry: Arc<dyn TenantRegistry>,
    pub users: Arc<dyn SignedInUsers>,
    pub sealer: Arc<Sealer>,
    pub client: TokenClient,
    /// For reading the issuers' signing keys (ID tokens).
    pub http: reqwest::Client,
    pub credentials: Arc<CredentialStore>,
}

impl SignInService {
    /// Reads the keys and wires the shared clients; once per cold start.
    pub async fn build(
        services: &crate::runtime::Services,
    ) -> Result<SignInService, CredentialError> {
        let service_key =
            load_state_key(&services.settings.consent.state_key, services.aws.as_ref()).await?;
        let sealer = super::keys::load_sealer(services, Some(&service_key)).await?;
        Ok(SignInService::new(SignInParts {
            settings: services.settings.signin_service(),
            service_key,
            attempts: services.attempts.clone(),
            registry: services.registry.clone(),
            users: services.signed_in.clone(),
            sealer: Arc::new(sealer),
            client: TokenClient::new(services.http.clone(), services.settings.endpoints.clone()),
            http: services.http.clone(),
            credentials: services.credentials.clone(),
        }))
    }

    pub fn new(parts: SignInParts) -> SignInService {
        SignInService {
            // Its own purpose: a consent `state` is never accepted as a sign-in one, nor back.
            signer: StateSigner::new(&parts.service_key, Purpose::UserSignIn),
            pkce: PkceDeriver::new(&parts.service_key),
            nonces: NonceDeriver::new(
                &parts.service_key,
                b"defender-partner sign-in oidc nonce key v1",
            ),
            id_tokens: IdTokenVerifier::new(parts.http.clone(), parts.settings.endpoints.clone()),
            settings: parts.settings,
            attempts: parts.attempts,
            registry: parts.registry,
            users: parts.users,
            sealer: parts.sealer,
            client: parts.client,
            credentials: parts.credentials,
        }
    }

    /// The OIDC `nonce` of the sign-in attempt `attempt_nonce`: derived, so nothing is stored.
    fn oidc_nonce(&self, attempt_nonce: &str) -> String {
        self.nonces.nonce(attempt_nonce)
    }

    fn redirect_uri(&self) -> Result<&Url, SignInError> {
        self.settings
            .signin
            .redirect_uri
            .as_ref()
            .ok_or(SignInError::RedirectUriMissing)
    }

    /// A new single-use sign-in link to `tenant` for `api` (default M365 Defender).
    pub async fn start(
        &self,
        tenant: &str,
        api: Option<&str>,
        login_hint: Option<&str>,
    ) -> Result<SignInLink, SignInError> {
        let tenant = TenantId::parse(tenant)?;
        let api: DefenderApi = match api {
            Some(text) => text
                .parse()
                .map_err(|_| SignInError::UnknownApi(text.chars().take(32).collect()))?,
            None => DefenderApi::M365d,
        };
        let redirect_uri = self.redirect_uri()?.clone();
        let record = self
            .registry
            .get(&tenant)
            .await?
            .ok_or_else(|| SignInError::NotRegistered(tenant.to_string()))?;
        if record.status != TenantStatus::Active {
            return Err(SignInError::NotActive {
                tenant: tenant.to_string(),
                status: record.status,
            });
        }
        let credential = self.credentials.current().await?;
        let now = stored_now();
        let expires_at = now
            + chrono::Duration::from_std(self.settings.signin.state_ttl)
                .expect("bounded by configuration");
        let attempt = ConsentAttempt {
            nonce: Uuid::new_v4().simple().to_string(),
            flow: AttemptFlow::SignIn { api },
            status: AttemptStatus::Issued,
            tenant_id: Some(tenant.clone()),
            detail: None,
            created_at: now,
            expires_at,
            updated_at: now,
        };
        self.attempts.issue(&attempt).await?;
        let state = self.signer.sign(&SignedState {
            nonce: attempt.nonce.clone(),
            expires: expires_at.timestamp(),
            claims: SignInClaims {
                tenant: tenant.clone(),
                api,
            },
        });
        let mut url = Url::parse(
            &self
                .settings
                .endpoints
                .authority_url(tenant.as_str(), "oauth2/v2.0/authorize"),
        )
        .expect("authority URLs are valid");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &credential.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri.as_str())
                .append_pair("response_mode", "query")
                .append_pair("scope", &user_scope(self.settings.endpoints.resource(api)))
                .append_pair("state", &state)
                .append_pair("nonce", &self.oidc_nonce(&attempt.nonce))
                .append_pair("code_challenge", &self.pkce.challenge(&attempt.nonce))
                .append_pair("code_challenge_method", "S256");
            if let Some(hint) = login_hint.filter(|hint| hint.len() <= 256) {
                query.append_pair("login_hint", hint);
            }
        }
        tracing::info!(tenant = %tenant, api = %api, expires_at = %expires_at, "sign-in link issued");
        Ok(SignInLink {
            url: url.to_string(),
            tenant_id: tenant.to_string(),
            api,
            expires_at,
        })
    }

    /// Handles Microsoft's redirect. Always answers a page; never fails.
    pub async fn callback(&self, raw_query: &str) -> Page {
        answer_callback("sign-in", async |support_ref| {
            self.handle_callback(raw_query, support_ref).await
        })
        .await
    }

    async fn handle_callback(&self, raw_query: &str, support_ref: &str) -> Page {
        let callback = match parse_signin_callback(raw_query) {
            Ok(callback) => callback,
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "malformed sign-in callback");
                return pages::invalid();
            }
        };
        let state: SignInState = match self.signer.verify(callback.state.as_deref(), Utc::now()) {
            Ok(state) => state,
            Err(StateError::Expired) => return pages::expired(),
            Err(error) => {
                tracing::warn!(support_ref, error = %error, "sign-in callback with a state we did not issue");
                return pages::invalid();
            }
        };
        let SignInClaims { tenant, api } = state.claims;
        let attempt = match self.attempts.consume(&state.nonce, Utc::now()).await {
            Ok(attempt) => attempt,
            Err(ConsumeError::AlreadyUsed) => {
                tracing::warn!(support_ref, tenant = %tenant, "sign-in callback replayed");
                return pages::replayed();
            }
            Err(ConsumeError::Expired) => return pages::expired(),
            Err(ConsumeError::Unknown) => return pages::invalid(),
            Err(ConsumeError::Store(error)) => {
                tracing::error!(support_ref, error = %error, "sign-in attempt could not be read");
                return pages::error(support_ref);
            }
        };
        let code = match callback.outcome {
            SignInOutcome::Refused(Refusal { error, description }) => {
                tracing::info!(support_ref, tenant = %tenant, error = %error, "sign-in refused");
                self.finish(
                    &attempt.nonce,
                    AttemptStatus::Declined,
                    &tenant,
                    Some(&error),
                )
                .await;
                return pages::refused(&error, description.as_deref());
            }
            SignInOutcome::Code(code) => code,
        };
        let (page, status, detail) = self
            .redeem(&tenant, api, &attempt.nonce, &code, support_ref)
            .await;
        self.finish(&attempt.nonce, status, &tenant, detail.as_deref())
            .await;
        page
    }

    async fn redeem(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        nonce: &str,
        code: &secrecy::SecretString,
        support_ref: &str,
    ) -> (Page, AttemptStatus, Option<String>) {
        let failed = |detail: &str| {
            (
                pages::error(support_ref),
                AttemptStatus::Declined,
                Some(detail.to_owned()),
            )
        };
        let Ok(redirect_uri) = self.redirect_uri() else {
            return failed("redirect uri not configured");
        };
        let credential = match self.credentials.current().await {
            Ok(credential) => credential,
            Err(error) => {
                tracing::error!(support_ref, error = %error, "app credential unavailable");
                return failed("app credential unavailable");
            }
        };
        let tokens = match redeem_code(
            &self.client,
            tenant.as_str(),
            code,
            &self.pkce.verifier(nonce),
            redirect_uri.as_str(),
            &user_scope(self.settings.endpoints.resource(api)),
            &credential,
        )
        .await
        {
            Ok(tokens) => tokens,
            Err(error) => return self.refusal(&error, tenant, support_ref),
        };
        // Who signed in, and where, comes from the verified ID token only.
        let Some(id_token) = tokens.id_token.as_ref() else {
            return failed("no ID token in Microsoft's answer");
        };
        let nonce = self.oidc_nonce(nonce);
        let identity = match self
            .id_tokens
            .verify(
                id_token.expose_secret(),
                &Expected {
                    client_id: &credential.client_id,
                    nonce: &nonce,
                    tenant: Some(tenant),
                    consent_admin: false,
                },
            )
            .await
        {
            Ok(identity) => identity,
            Err(IdTokenError::WrongTenant { .. }) => {
                tracing::warn!(support_ref, tenant = %tenant, "user signed in to another tenant than asked");
                return (
                    pages::wrong_tenant(tenant),
                    AttemptStatus::Declined,
                    Some("signed in to another tenant".into()),
                );
            }
            Err(error) => {
                tracing::warn!(support_ref, tenant = %tenant, code = %error.code(), error = %error, "sign-in ID token refused");
                return failed(error.code().as_str());
            }
        };
        let user_oid = identity.oid.clone();
        let scopes = tokens.granted_scopes();
        let user_name = identity.username.clone().or(identity.name.clone());
        let kept = match (
            &tokens.refresh_token,
            self.settings.signin.keep_refresh_tokens,
        ) {
            (Some(refresh_token), true) => {
                let context = SealContext {
                    tenant: tenant.to_string(),
                    user_oid: user_oid.clone(),
                };
                let sealed = match self.sealer.seal(refresh_token, &context).await {
                    Ok(sealed) => sealed,
                    Err(error) => {
                        tracing::error!(support_ref, error = %error, "refresh token could not be sealed");
                        return failed("refresh token could not be sealed");
                    }
                };
                let record = SignedInUser {
                    tenant_id: tenant.clone(),
                    user_oid: user_oid.clone(),
                    user_name: user_name.clone(),
                    scopes: scopes.clone(),
                    sealed_refresh_token: sealed,
                    signed_in_at: stored_now(),
                    updated_at: stored_now(),
                    version: 0,
                };
                if let Err(error) = self.users.save_sign_in(&record).await {
                    tracing::error!(support_ref, error = %error, "sign-in could not be stored");
                    return failed("sign-in could not be stored");
                }
                true
            }
            _ => false,
        };
        // Said at once rather than at the first mint (`scopes_missing`): the user is here and can
        // ask an administrator now. The sign-in is still kept; its refresh token may serve the
        // other APIs.
        let lacking = self
            .settings
            .access
            .required_scopes(api)
            .missing(&scopes)
            .map(|missing| pages::MissingScopes {
                api_name: api.display_name(),
                missing,
            });
        tracing::info!(support_ref, tenant = %tenant, api = %api, user_oid = %user_oid, scopes = ?scopes, kept, scopes_missing = lacking.is_some(), "user signed in");
        (
            pages::signed_in(tenant, user_name.as_deref(), &scopes, kept, lacking),
            AttemptStatus::Completed,
            Some(format!("user {user_oid}")),
        )
    }

    fn refusal(
        &self,
        error: &EntraError,
        tenant: &TenantId,
        support_ref: &str,
    ) -> (Page, AttemptStatus, Option<String>) {
        tracing::warn!(support_ref, tenant = %tenant, code = %error.code(), error = %error, "authorization code not redeemed");
        metrics::token_error(TokenPath::ConsentSignin, error.code());
        let page = match error {
            EntraError::InteractionRequired { .. } => pages::needs_more(
                "Your organisation requires an extra verification (multi-factor authentication or a Conditional Access policy) that this sign-in did not satisfy.",
            ),
            EntraError::ConsentRequired { .. } => pages::needs_more(
                "The delegated permissions have not been consented for you or your organisation: ask your administrator to grant them.",
            ),
            EntraError::Rejected { error, .. } if error == "invalid_grant" => pages::needs_more(
                "Microsoft did not accept this sign-in's code (it may have expired or been used): start a new sign-in.",
            ),
            _ => pages::error(support_ref),
        };
        (
            page,
            AttemptStatus::Declined,
            Some(error.code().as_str().to_owned()),
        )
    }

    async fn finish(
        &self,
        nonce: &str,
        status: AttemptStatus,
        tenant: &TenantId,
        detail: Option<&str>,
    ) {
        if let Err(error) = self
            .attempts
            .finish(nonce, status, Some(tenant), detail)
            .await
        {
            tracing::warn!(error = %error, "sign-in attempt outcome not recorded");
        }
    }
}

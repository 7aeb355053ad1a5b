//! Delegated tokens through the on-behalf-of (OBO) grant: a calling workflow hands us a user's
//! token issued *for our app*; we check it, exchange it with the app's credential for a token for
//! a Defender API that acts as that user, and check what came back.
//!
//! Before calling Entra ID the user's token is decoded (its signature is Entra ID's business) and
//! refused when it is malformed, expired, not for this app (`aud`) or for another tenant (`tid`).
//! After the exchange the delegated token must be for the tenant asked, the same user (`oid`) and
//! carry one of the scopes the API needs (`scp`). Delegated tokens are cached per
//! (tenant, API, user) with the same refresh-ahead as app tokens; users never share an entry.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Deserialize;

use super::cache::TokenCache;
use super::claims::decode_payload_as;
use super::client::{AccessToken, TokenClient};
use super::errors::EntraError;
use super::retry::with_credential_retries;
use super::roles::RoleRequirement;
use crate::api::DefenderApi;
use crate::config::TokenSettings;
use crate::secrets::{CredentialError, CredentialStore};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// The claims of a user's (delegated) token that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UserClaims {
    pub tid: String,
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
    /// Space-separated delegated scopes.
    #[serde(default)]
    pub scp: Option<String>,
}

impl UserClaims {
    /// Decodes a user token's payload; never logs or returns the token.
    pub fn decode(token: &str) -> Result<UserClaims, OboError> {
        decode_payload_as(token).map_err(|error| OboError::UserTokenMalformed {
            reason: error.to_string(),
        })
    }

    /// The granted delegated scopes.
    pub fn scopes(&self) -> Vec<String> {
        self.scp
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// `upn`, else `preferred_username`.
    pub fn user_name(&self) -> Option<&str> {
        self.upn.as_deref().or(self.preferred_username.as_deref())
    }
}

/// Why no delegated token could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OboError {
    #[error(
        "the user token is not a readable JWT ({reason}): pass the user's access token for this app as it was issued"
    )]
    UserTokenMalformed { reason: String },
    #[error(
        "the user token has no {claim} claim: pass a user's access token for this app (not an app-only or ID token)"
    )]
    UserTokenIncomplete { claim: &'static str },
    #[error(
        "the user token expired at {expired_at} (Unix time): the calling app must get a fresh token for the user and retry"
    )]
    UserTokenExpired { expired_at: i64 },
    #[error(
        "the user token was issued for {got:?}, not for this app: the calling app must request a token with the scope api://{expected}/.default (or {expected}/.default)"
    )]
    UserTokenWrongAudience { expected: String, got: String },
    #[error(
        "the user token is for tenant {got}, not for tenant {asked}: the user must sign in to tenant {asked} (authority .../{asked})"
    )]
    UserTokenWrongTenant { asked: String, got: String },
    #[error(transparent)]
    Entra(#[from] EntraError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(
        "Entra ID issued a delegated token for tenant {got} when tenant {asked} was asked: refusing it"
    )]
    TenantMismatch { asked: String, got: String },
    #[error(
        "the user's delegated token for {} in tenant {tenant} lacks the scopes it needs ({}): it granted [{}]; have the user (or the customer's administrator) consent to the delegated permissions",
        api.display_name(), missing.join(", "), granted.join(", ")
    )]
    ScopesMissing {
        tenant: String,
        api: DefenderApi,
        missing: Vec<String>,
        granted: Vec<String>,
    },
    #[error(
        "Entra ID issued a delegated token for another user than the one whose token was exchanged in tenant {tenant}: refusing it; retry, and report it if it persists"
    )]
    UserMismatch { tenant: String },
}

impl CallerError for OboError {
    fn code(&self) -> ErrorCode {
        match self {
            OboError::UserTokenMalformed { .. } | OboError::UserTokenIncomplete { .. } => {
                ErrorCode::UserTokenInvalid
            }
            OboError::UserTokenExpired { .. } => ErrorCode::UserTokenExpired,
            OboError::UserTokenWrongAudience { .. } => ErrorCode::UserTokenWrongAudience,
            OboError::UserTokenWrongTenant { .. } => ErrorCode::UserTokenWrongTenant,
            OboError::Entra(error) => error.code(),
            OboError::Credential(error) => error.code(),
            OboError::TenantMismatch { .. } => ErrorCode::TokenTenantMismatch,
            OboError::ScopesMissing { .. } => ErrorCode::ScopesMissing,
            OboError::UserMismatch { .. } => ErrorCode::UserMismatch,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            OboError::Entra(error) => error.retry_after(),
            _ => None,
        }
    }

    /// Microsoft's `claims` challenge (MFA / Conditional Access), unchanged, for the calling app.
    fn claims_challenge(&self) -> Option<&str> {
        match self {
            OboError::Entra(error) => error.claims_challenge(),
            _ => None,
        }
    }
}

/// A delegated token for a Defender API, acting for one user. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct DelegatedToken {
    pub token: Arc<AccessToken>,
    pub tenant: TenantId,
    pub api: DefenderApi,
    /// The user's object id.
    pub user_oid: String,
    /// The user's `upn` (or `preferred_username`).
    pub upn: Option<String>,
    /// The granted delegated scopes (`scp`).
    pub scopes: Vec<String>,
}

impl DelegatedToken {
    pub fn access_token(&self) -> &SecretString {
        &self.token.token
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        self.token.expires_at
    }
}

/// What a user token was found to be, before any call to Entra ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUser {
    pub oid: String,
    pub upn: Option<String>,
}

/// Refuses a user token that cannot be exchanged for `tenant` by the app `client_id`: malformed,
/// expired at `now`, issued for another app, or for another tenant.
pub fn check_user_token(
    user_token: &str,
    tenant: &TenantId,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<CheckedUser, OboError> {
    let claims = UserClaims::decode(user_token)?;
    let exp = claims
        .exp
        .ok_or(OboError::UserTokenIncomplete { claim: "exp" })?;
    if exp <= now.timestamp() {
        return Err(OboError::UserTokenExpired { expired_at: exp });
    }
    let audience = claims
        .aud
        .as_deref()
        .ok_or(OboError::UserTokenIncomplete { claim: "aud" })?;
    let app_uri = format!("api://{client_id}");
    let audience_trimmed = audience.trim_end_matches('/');
    if !audience_trimmed.eq_ignore_ascii_case(client_id)
        && !audience_trimmed.eq_ignore_ascii_case(&app_uri)
    {
        return Err(OboError::UserTokenWrongAudience {
            expected: client_id.to_owned(),
            got: audience.chars().take(128).collect(),
        });
    }
    if !claims.tid.eq_ignore_ascii_case(tenant.as_str()) {
        return Err(OboError::UserTokenWrongTenant {
            asked: tenant.to_string(),
            got: claims.tid.chars().take(64).collect(),
        });
    }
    let oid = claims
        .oid
        .clone()
        .filter(|oid| !oid.trim().is_empty())
        .ok_or(OboError::UserTokenIncomplete { claim: "oid" })?;
    Ok(CheckedUser {
        oid: oid.to_ascii_lowercase(),
        upn: claims.user_name().map(str::to_owned),
    })
}

/// The delegated token is for `tenant`, for `user_oid` and carries one of the scopes `required`
/// asks for.
pub fn verify_delegated(
    token: Arc<AccessToken>,
    tenant: &TenantId,
    api: DefenderApi,
    user_oid: &str,
    required: &RoleRequirement,
) -> Result<DelegatedToken, OboError> {
    let (upn, scopes) = check_delegated(&token, tenant, api, user_oid, required)?;
    Ok(DelegatedToken {
        upn,
        token,
        tenant: tenant.clone(),
        api,
        user_oid: user_oid.to_owned(),
        scopes,
    })
}

/// The checks of [`verify_delegated`]; answers the user's name and the granted scopes.
fn check_delegated(
    token: &AccessToken,
    tenant: &TenantId,
    api: DefenderApi,
    user_oid: &str,
    required: &RoleRequirement,
) -> Result<(Option<String>, Vec<String>), OboError> {
    let claims = {
        use secrecy::ExposeSecret;
        decode_payload_as::<UserClaims>(token.token.expose_secret()).map_err(|error| {
            EntraError::MalformedResponse(format!("delegated token unreadable: {error}"))
        })?
    };
    if !claims.tid.eq_ignore_ascii_case(tenant.as_str()) {
        return Err(OboError::TenantMismatch {
            asked: tenant.to_string(),
            got: claims.tid.chars().take(64).collect(),
        });
    }
    if !claims
        .oid
        .as_deref()
        .is_some_and(|oid| oid.eq_ignore_ascii_case(user_oid))
    {
        return Err(OboError::UserMismatch {
            tenant: tenant.to_string(),
        });
    }
    let scopes = claims.scopes();
    if let Some(missing) = required.missing(&scopes) {
        return Err(OboError::ScopesMissing {
            tenant: tenant.to_string(),
            api,
            missing,
            granted: scopes,
        });
    }
    Ok((claims.user_name().map(str::to_owned), scopes))
}

/// The user token's digest is part of the key: the user token is only decoded here (Entra checks
/// its signature when it exchanges it), so a cache hit must need the very token that was
/// exchanged, or a forged token naming a user would get that user's cached token. MSAL keys its
/// on-behalf-of cache the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    tenant: TenantId,
    api: DefenderApi,
    user_oid: String,
    user_token_digest: [u8; 32],
}

fn digest_of(user_token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_token.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Delegated tokens through the on-behalf-of grant, with the app's credential, retries and a
/// per-user cache.
pub struct OboProvider {
    client: TokenClient,
    credentials: Arc<CredentialStore>,
    cache: TokenCache<CacheKey>,
    settings: TokenSettings,
}

impl OboProvider {
    pub fn new(
        client: TokenClient,
        credentials: Arc<CredentialStore>,
        settings: TokenSettings,
    ) -> OboProvider {
        OboProvider {
            client,
            credentials,
            cache: TokenCache::new(settings.refresh_ahead),
            settings,
        }
    }

    /// A delegated token for `api` in `tenant` acting for the user of `user_token` (an access
    /// token issued for this app), from the cache when that user's token has life left, verified
    /// against `required` (delegated scopes, any-of groups). A token that fails verification is
    /// never cached.
    pub async fn token(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        user_token: &SecretString,
        required: &RoleRequirement,
    ) -> Result<DelegatedToken, OboError> {
        use secrecy::ExposeSecret;
        let credential = self.credentials.current().await?;
        let user = check_user_token(
            user_token.expose_secret(),
            tenant,
            &credential.client_id,
            Utc::now(),
        )?;
        let key = CacheKey {
            tenant: tenant.clone(),
            api,
            user_oid: user.oid.clone(),
            user_token_digest: digest_of(user_token.expose_secret()),
        };
        let token = self
            .cache
            .get_or_fetch_keeping(
                key,
                || async {
                    let token = self.fetch(tenant, api, user_token).await?;
                    check_delegated(&token, tenant, api, &user.oid, required)?;
                    Ok::<_, OboError>(token)
                },
                // Consent withdrawn or MFA now required: the user's answer, not an outage.
                |error: &OboError| error.code().is_transient(),
            )
            .await?;
        // A cached token was verified when fetched, but the requirement may differ per caller.
        let delegated = verify_delegated(token, tenant, api, &user.oid, required)?;
        tracing::info!(
            tenant = %tenant,
            api = %api,
            user_oid = %delegated.user_oid,
            expires_at = %delegated.expires_at(),
            "delegated token handed out"
        );
        Ok(delegated)
    }

    /// Forgets the user's cached tokens for `api` (an API refused one with 401).
    pub async fn invalidate(&self, tenant: &TenantId, api: DefenderApi, user_oid: &str) {
        let user_oid = user_oid.to_ascii_lowercase();
        self.cache
            .invalidate_matching(|key| {
                key.tenant == *tenant && key.api == api && key.user_oid == user_oid
            })
            .await;
    }

    /// One exchange with retries, bypassing the cache; a refused credential is re-read once.
    async fn fetch(
        &self,
        tenant: &TenantId,
        api: DefenderApi,
        user_token: &SecretString,
    ) -> Result<AccessToken, OboError> {
        let resource = self.client.endpoints().resource(api);
        let attempt = |credential: Arc<crate::secrets::AppCredential>| {
            let client = &self.client;
            move || {
                let credential = Arc::clone(&credential);
                async move {
                    client
                        .request_on_behalf_of_once(
                            tenant.as_str(),
                            resource,
                            user_token,
                            &credential,
                        )
                        .await
                }
            }
        };
        with_credential_retries(&self.credentials, self.settings.deadline, attempt).await
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;
    use crate::entra::claims::{decode_payload, fake_jwt};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER_TENANT: &str = "0e3e2e88-8caf-41ca-b4da-e3b33b6c52ec";
    const APP: &str = "11111111-1111-4111-8111-111111111111";
    const OID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

    fn tenant() -> TenantId {
        TenantId::parse(TENANT).unwrap()
    }

    fn user_token(overrides: serde_json::Value) -> String {
        let mut claims = json!({
            "tid": TENANT, "aud": format!("api://{APP}"), "exp": Utc::now().timestamp() + 600,
            "oid": OID, "upn": "analyst@contoso.example", "scp": "access_as_user",
        });
        for (name, value) in overrides.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        fake_jwt(&claims)
    }

    fn check(token: &str) -> Result<CheckedUser, OboError> {
        check_user_token(token, &tenant(), APP, Utc::now())
    }

    #[test]
    fn a_user_token_for_this_app_and_tenant_passes() {
        let user = check(&user_token(json!({}))).unwrap();
        assert_eq!(user.oid, OID);
        assert_eq!(user.upn.as_deref(), Some("analyst@contoso.example"));
        // The bare client id is an accepted audience, and preferred_username stands in for upn.
        let bare =
            user_token(json!({"aud": APP, "upn": null, "preferred_username": "p@c.example"}));
        assert_eq!(check(&bare).unwrap().upn.as_deref(), Some("p@c.example"));
        let upper = user_token(
            json!({"tid": TENANT.to_uppercase(), "aud": format!("API://{}", APP.to_uppercase())}),
        );
        assert!(check(&upper).is_ok());
    }

    #[test]
    fn refusals_before_entra_are_typed() {
        let expired = check(&user_token(json!({"exp": Utc::now().timestamp() - 1}))).unwrap_err();
        assert_eq!(expired.code(), ErrorCode::UserTokenExpired);
        let other_app = check(&user_token(
            json!({"aud": "https://api.security.microsoft.com"}),
        ))
        .unwrap_err();
        assert_eq!(other_app.code(), ErrorCode::UserTokenWrongAudience);
        assert!(
            other_app
                .to_string()
                .contains(&format!("api://{APP}/.default"))
        );
        let other_tenant = check(&user_token(json!({"tid": OTHER_TENANT}))).unwrap_err();
        assert_eq!(other_tenant.code(), ErrorCode::UserTokenWrongTenant);
        assert_eq!(other_tenant.code().http_status(), 403);
        for missing in ["exp", "aud", "oid"] {
            let error = check(&user_token(json!({ missing: null }))).unwrap_err();
            assert_eq!(error.code(), ErrorCode::UserTokenInvalid, "{missing}");
            assert!(error.to_string().contains(missing));
        }
        for garbage in ["", "abc", "a.!!!.c", &fake_jwt(&json!({"aud": "x"}))] {
            let error = check(garbage).unwrap_err();
            assert_eq!(error.code(), ErrorCode::UserTokenInvalid);
        }
    }

    #[test]
    fn refusal_messages_never_carry_the_token() {
        let tokens = [
            user_token(json!({"exp": 5})),
            user_token(json!({"aud": "someone-else"})),
            user_token(json!({"tid": OTHER_TENANT})),
            user_token(json!({"oid": null})),
        ];
        for token in &tokens {
            let error = check(token).unwrap_err();
            let message = format!("{error} {error:?}");
            assert!(!message.contains(token.as_str()));
            assert!(!message.contains(token.split('.').nth(1).unwrap()));
        }
    }

    fn delegated(claims: serde_json::Value) -> Arc<AccessToken> {
        let jwt = fake_jwt(&claims);
        Arc::new(AccessToken {
            claims: decode_payload(&jwt).unwrap(),
            token: SecretString::from(jwt),
            token_type: "Bearer".into(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
        })
    }

    #[test]
    fn the_delegated_token_is_checked_after_the_exchange() {
        let required = RoleRequirement::default_scopes_for(DefenderApi::M365d);
        let good = delegated(
            json!({"tid": TENANT, "oid": OID, "upn": "a@c", "scp": "Incident.Read AdvancedHunting.Read"}),
        );
        let token = verify_delegated(good, &tenant(), DefenderApi::M365d, OID, &required).unwrap();
        assert_eq!(token.scopes, vec!["Incident.Read", "AdvancedHunting.Read"]);
        assert_eq!(token.upn.as_deref(), Some("a@c"));
        assert!(format!("{token:?}").contains("REDACTED"));
        assert!(!format!("{token:?}").contains(token.access_token().expose_secret()));

        let other_tenant =
            delegated(json!({"tid": OTHER_TENANT, "oid": OID, "scp": "Incident.Read"}));
        let error = verify_delegated(other_tenant, &tenant(), DefenderApi::M365d, OID, &required)
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::TokenTenantMismatch);

        let other_user = delegated(
            json!({"tid": TENANT, "oid": "bbbbbbbb-0000-4000-8000-000000000009", "scp": "Incident.Read"}),
        );
        let error = verify_delegated(other_user, &tenant(), DefenderApi::M365d, OID, &required)
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::UserMismatch);
        assert_eq!(error.code().http_status(), 502);

        let no_scope = delegated(json!({"tid": TENANT, "oid": OID, "scp": "User.Read"}));
        let error =
            verify_delegated(no_scope, &tenant(), DefenderApi::M365d, OID, &required).unwrap_err();
        assert_eq!(error.code(), ErrorCode::ScopesMissing);
        assert!(
            error
                .to_string()
                .contains("Incident.Read|Incident.ReadWrite")
        );
        let roles_only =
            delegated(json!({"tid": TENANT, "oid": OID, "roles": ["Incident.Read.All"]}));
        assert_eq!(
            verify_delegated(roles_only, &tenant(), DefenderApi::M365d, OID, &required)
                .unwrap_err()
                .code(),
            ErrorCode::ScopesMissing
        );
    }

    #[test]
    fn entra_errors_keep_their_code_and_challenge() {
        let body = json!({
            "error": "interaction_required", "error_codes": [50079],
            "claims": "{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"x\"]}}}",
        });
        let error: OboError =
            EntraError::from_response(TENANT, 400, None, body.to_string().as_bytes()).into();
        assert_eq!(error.code(), ErrorCode::InteractionRequired);
        assert_eq!(error.code().http_status(), 401);
        assert_eq!(
            error.claims_challenge(),
            Some("{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"x\"]}}}")
        );
        let consent: OboError = EntraError::from_response(
            TENANT,
            400,
            None,
            json!({"error": "invalid_grant", "error_codes": [65001]})
                .to_string()
                .as_bytes(),
        )
        .into();
        assert_eq!(consent.code(), ErrorCode::UserConsentMissing);
        assert_eq!(consent.code().http_status(), 403);
        assert_eq!(consent.claims_challenge(), None);
        let throttled: OboError =
            EntraError::from_response(TENANT, 429, Some(std::time::Duration::from_secs(3)), b"")
                .into();
        assert_eq!(throttled.code(), ErrorCode::Throttled);
        assert_eq!(
            throttled.retry_after(),
            Some(std::time::Duration::from_secs(3))
        );
    }
}

//! The token endpoint's delegated grants: `authorization_code` (+ PKCE), `refresh_token`
//! (rotating), on-behalf-of (`urn:ietf:params:oauth:grant-type:jwt-bearer`) and device code
//! (`urn:ietf:params:oauth:grant-type:device_code`). The tenant, `grant_type` and endpoint
//! checks have run already (`token_endpoint.rs`).

use aws_lc_rs::digest;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::{
    DelegatedTokenRecord, DeviceState, RefreshRecord, RefreshStatus, SignIn, amr, mfa_check,
    opaque, parse_scope,
};
use crate::entra::access_token::{self, UserTokenOrder};
use crate::entra::directory::{Directory, RegisteredApp, Tenant, normalize_guid};
use crate::entra::errors::{EntraError, clip};
use crate::entra::request_log::CredentialKind;
use crate::entra::token_endpoint::{TokenForm, check_credential};
use crate::state::Shared;

/// A delegated `grant_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    AuthorizationCode,
    RefreshToken,
    OnBehalfOf,
    DeviceCode,
}

impl Grant {
    pub(crate) fn parse(grant_type: &str) -> Option<Grant> {
        match grant_type {
            "authorization_code" => Some(Grant::AuthorizationCode),
            "refresh_token" => Some(Grant::RefreshToken),
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => Some(Grant::OnBehalfOf),
            "urn:ietf:params:oauth:grant-type:device_code"
            | "device_code"
            | "urn:ietf:params:oauth:grant-type:device_flow" => Some(Grant::DeviceCode),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => "authorization_code",
            Grant::RefreshToken => "refresh_token",
            Grant::OnBehalfOf => "on_behalf_of",
            Grant::DeviceCode => "device_code",
        }
    }
}

/// What a grant handler needs.
struct Call<'a> {
    shared: &'a Shared,
    directory: &'a Directory,
    tenant: &'a Tenant,
    segment: &'a str,
    app: &'a RegisteredApp,
    form: &'a TokenForm,
    now: DateTime<Utc>,
}

pub(crate) fn mint(
    shared: &Shared,
    directory: &Directory,
    grant: Grant,
    tenant: &Tenant,
    segment: &str,
    form: &TokenForm,
) -> Result<Value, EntraError> {
    let client_id = form
        .client_id
        .as_deref()
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    let app = directory
        .app(client_id)
        .ok_or_else(|| EntraError::app_not_in_tenant(client_id, segment))?;
    if app.disabled {
        return Err(EntraError::app_disabled(&app.client_id, &app.display_name));
    }
    let call = Call {
        shared,
        directory,
        tenant,
        segment,
        app,
        form,
        now: Utc::now(),
    };
    match grant {
        Grant::AuthorizationCode => authorization_code(&call),
        Grant::RefreshToken => refresh_token(&call),
        Grant::OnBehalfOf => on_behalf_of(&call),
        Grant::DeviceCode => device_code(&call),
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, EntraError> {
    value
        .as_deref()
        .ok_or_else(|| EntraError::missing_parameter(name))
}

/// The client credential: `"0"` (public client, when allowed), `"1"` secret, `"2"` certificate.
fn credential(call: &Call<'_>, public_allowed: bool) -> Result<&'static str, EntraError> {
    if public_allowed && !call.form.uses_assertion() && call.form.client_secret.is_none() {
        return Ok("0");
    }
    let kind = check_credential(
        call.shared,
        call.tenant,
        call.segment,
        call.app,
        call.form,
        call.now,
    )?;
    Ok(match kind {
        CredentialKind::Secret => "1",
        CredentialKind::Assertion => "2",
    })
}

/// `base64url(SHA-256(verifier))`, the S256 code challenge.
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

fn authorization_code(call: &Call<'_>) -> Result<Value, EntraError> {
    let code = required(&call.form.code, "code")?;
    let redirect_uri = required(&call.form.redirect_uri, "redirect_uri")?;
    let verifier = required(&call.form.code_verifier, "code_verifier")?;
    let acr = credential(call, false)?;
    let sign_in = {
        let mut inner = call.shared.delegated().lock();
        let record = inner
            .codes
            .get_mut(code)
            .filter(|record| {
                record.sign_in.client_id == call.app.client_id
                    && record.sign_in.tenant_id == call.tenant.id
            })
            .ok_or_else(|| {
                EntraError::invalid_grant(
                    70000,
                    "The provided value for the 'code' parameter is not valid: it was not issued to this application in this tenant.",
                )
            })?;
        if record.redeemed {
            return Err(EntraError::invalid_grant(
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            ));
        }
        if call.now >= record.expires {
            return Err(EntraError::invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            ));
        }
        if record.redirect_uri != redirect_uri {
            return Err(EntraError::invalid_grant(
                70000,
                "The provided value for the 'redirect_uri' parameter does not match the one the authorization code was issued for.",
            ));
        }
        if s256(verifier) != record.challenge {
            return Err(EntraError::invalid_grant(
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
        record.redeemed = true;
        record.sign_in.clone()
    };
    redeem(call, &sign_in, None, acr, Grant::AuthorizationCode)
}

fn refresh_token(call: &Call<'_>) -> Result<Value, EntraError> {
    let token = required(&call.form.refresh_token, "refresh_token")?;
    let invalid = || {
        EntraError::invalid_grant(
            70000,
            "The provided value for the 'refresh_token' parameter is not valid for this application and tenant.",
        )
    };
    let public = {
        let inner = call.shared.delegated().lock();
        let record = inner
            .refresh
            .get(token)
            .filter(|record| {
                record.sign_in.client_id == call.app.client_id
                    && record.sign_in.tenant_id == call.tenant.id
            })
            .ok_or_else(invalid)?;
        record.sign_in.public && call.app.allow_public_client_flows
    };
    let acr = credential(call, public)?;
    let sign_in = {
        let mut inner = call.shared.delegated().lock();
        let record = inner.refresh.get_mut(token).ok_or_else(invalid)?;
        match record.status {
            RefreshStatus::Used => {
                return Err(EntraError::invalid_grant(
                    70000,
                    "The provided refresh token has already been used. Refresh tokens rotate: use the one returned with the last token.",
                ));
            }
            RefreshStatus::Revoked => {
                return Err(EntraError::invalid_grant(
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
                ));
            }
            RefreshStatus::Active if call.now >= record.expires => {
                return Err(EntraError::invalid_grant(
                    700082,
                    "The refresh token has expired due to inactivity. The token was issued and was inactive for longer than the allowed lifetime.",
                ));
            }
            RefreshStatus::Active => {}
        }
        record.status = RefreshStatus::Used;
        record.sign_in.clone()
    };
    redeem(
        call,
        &sign_in,
        call.form.scope.as_deref(),
        acr,
        Grant::RefreshToken,
    )
}

fn on_behalf_of(call: &Call<'_>) -> Result<Value, EntraError> {
    match call.form.requested_token_use.as_deref() {
        Some("on_behalf_of") => {}
        Some(_) => {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'requested_token_use' with the value 'on_behalf_of'.",
            ));
        }
        None => return Err(EntraError::missing_parameter("requested_token_use")),
    }
    let assertion = required(&call.form.assertion, "assertion")?;
    let scope = required(&call.form.scope, "scope")?;
    parse_scope(scope, &call.app.client_id)?;
    let acr = credential(call, false)?;
    let claims = verify_assertion(call, assertion)?;
    let user_oid = claims
        .get("oid")
        .and_then(Value::as_str)
        .and_then(|oid| normalize_guid(&oid.to_ascii_lowercase()))
        .unwrap_or_default();
    let amr: Vec<String> = claims
        .get("amr")
        .and_then(Value::as_array)
        .map(|methods| {
            methods
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let sign_in = SignIn {
        tenant_id: call.tenant.id.clone(),
        client_id: call.app.client_id.clone(),
        user_oid,
        scope: scope.to_owned(),
        amr,
        nonce: None,
        public: false,
    };
    redeem(call, &sign_in, None, acr, Grant::OnBehalfOf)
}

/// The OBO assertion: a user token this emulator signed, for the calling app, in this tenant,
/// not expired.
fn verify_assertion(call: &Call<'_>, assertion: &str) -> Result<Value, EntraError> {
    let signature = |reason: &str| {
        EntraError::invalid_grant(
            50013,
            format!("Assertion failed signature validation. [Reason - {reason}]"),
        )
    };
    let key = decoding_key(call.shared).ok_or_else(|| signature("no key"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|_| {
            signature("The key was not found, or the token is not a JWT signed by this authority.")
        })?
        .claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let audience = text("aud");
    let client_id = call.app.client_id.as_str();
    let bare = audience
        .strip_prefix("api://")
        .unwrap_or(audience)
        .to_ascii_lowercase();
    if normalize_guid(&bare).as_deref() != Some(client_id) {
        return Err(EntraError::invalid_grant(
            50013,
            format!(
                "Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '{}' and the expected audience is '{client_id}' or one of the Application Id URIs of this application.",
                clip(audience)
            ),
        ));
    }
    if normalize_guid(&text("tid").to_ascii_lowercase()).as_deref() != Some(call.tenant.id.as_str())
    {
        return Err(EntraError::invalid_grant(
            50013,
            format!(
                "Assertion is not valid for tenant '{}': it was issued by another tenant.",
                call.tenant.id
            ),
        ));
    }
    if text("scp").is_empty() || text("oid").is_empty() {
        return Err(EntraError::invalid_grant(
            50013,
            "Assertion is not a user token: it carries no 'scp' and 'oid'.",
        ));
    }
    let expires = claims.get("exp").and_then(Value::as_i64);
    if expires.is_none_or(|exp| exp <= call.now.timestamp()) {
        return Err(EntraError::invalid_grant(
            500133,
            format!(
                "Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: {}, expiry time of assertion {}.",
                call.now.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                expires
                    .and_then(|exp| DateTime::<Utc>::from_timestamp(exp, 0))
                    .map(|exp| exp.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(claims)
}

fn decoding_key(shared: &Shared) -> Option<DecodingKey> {
    let jwks = shared.key.jwks(None);
    let key = jwks.get("keys")?.get(0)?;
    DecodingKey::from_rsa_components(key.get("n")?.as_str()?, key.get("e")?.as_str()?).ok()
}

fn device_code(call: &Call<'_>) -> Result<Value, EntraError> {
    let device_code = required(&call.form.device_code, "device_code")?;
    let acr = credential(call, call.app.allow_public_client_flows)?;
    let sign_in = {
        let mut inner = call.shared.delegated().lock();
        let record = inner
            .devices
            .get_mut(device_code)
            .filter(|record| {
                record.client_id == call.app.client_id && record.tenant_id == call.tenant.id
            })
            .ok_or_else(|| {
                EntraError::device_flow(
                    "bad_verification_code",
                    70000,
                    "The provided value for the 'device_code' parameter is not valid for this application and tenant.",
                )
            })?;
        let too_soon = record
            .last_poll
            .is_some_and(|last| call.now < last + Duration::seconds(record.interval as i64));
        record.last_poll = Some(call.now);
        if record.state != DeviceState::Redeemed && call.now >= record.expires {
            return Err(EntraError::device_flow(
                "expired_token",
                70019,
                "Verification code expired. Start a new device code flow.",
            ));
        }
        match record.state.clone() {
            DeviceState::Declined => {
                return Err(EntraError::device_flow(
                    "authorization_declined",
                    70000,
                    "The end user denied the authorization request.",
                ));
            }
            DeviceState::Redeemed => {
                return Err(EntraError::invalid_grant(
                    54005,
                    "The device code was already redeemed. Start a new device code flow.",
                ));
            }
            DeviceState::Pending if too_soon => {
                record.interval += 5;
                return Err(EntraError::device_flow(
                    "slow_down",
                    70016,
                    format!(
                        "OAuth 2.0 device flow error. Polling too fast: wait {} seconds between requests.",
                        record.interval
                    ),
                ));
            }
            DeviceState::Pending => {
                return Err(EntraError::device_flow(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                ));
            }
            DeviceState::Approved { user_oid, mfa } => {
                record.state = DeviceState::Redeemed;
                SignIn {
                    tenant_id: record.tenant_id.clone(),
                    client_id: record.client_id.clone(),
                    user_oid,
                    scope: record.scope.clone(),
                    amr: amr(mfa),
                    nonce: None,
                    public: acr == "0",
                }
            }
        }
    };
    redeem(call, &sign_in, None, acr, Grant::DeviceCode)
}

/// The scope of a refresh: the new `scope`, keeping the sign-in's OpenID scopes.
fn merged_scope(asked: &str, original: &str) -> String {
    let mut items: Vec<&str> = asked.split_whitespace().collect();
    for oidc in ["openid", "profile", "email", "offline_access"] {
        let had = original
            .split_whitespace()
            .any(|item| item.eq_ignore_ascii_case(oidc));
        if had && !items.iter().any(|item| item.eq_ignore_ascii_case(oidc)) {
            items.push(oidc);
        }
    }
    items.join(" ")
}

/// Issues the access token (plus refresh and ID tokens when `offline_access` and `openid`
/// were asked) for a checked sign-in.
fn redeem(
    call: &Call<'_>,
    sign_in: &SignIn,
    scope: Option<&str>,
    acr: &str,
    grant: Grant,
) -> Result<Value, EntraError> {
    let tenant = call.tenant;
    let app = call.app;
    let user = tenant.user(&sign_in.user_oid).ok_or_else(|| {
        EntraError::invalid_grant(
            50034,
            format!(
                "The user account {} does not exist in the '{}' directory. To sign into this application, the account must be added to the directory.",
                sign_in.user_oid, tenant.id
            ),
        )
    })?;
    let scope = match scope {
        Some(asked) => merged_scope(asked, &sign_in.scope),
        None => sign_in.scope.clone(),
    };
    let request = parse_scope(&scope, &app.client_id)?;
    let granted = request.granted(tenant, &app.client_id, &user.oid);
    if granted.is_empty() || !request.missing(&granted).is_empty() {
        return Err(consent_missing(app, &request.named));
    }
    mfa_check(tenant, user, &sign_in.amr, &request.named)?;
    let order = UserTokenOrder {
        tenant,
        app,
        user,
        audience: &request.named,
        scopes: &granted,
        amr: &sign_in.amr,
        acr,
        lifetime_seconds: i64::try_from(call.directory.token_lifetime_seconds).unwrap_or(3599),
        now: call.now,
    };
    let signing_failed = |error: anyhow::Error| {
        tracing::error!(%error, "cannot sign a token");
        EntraError::transient(StatusCode::INTERNAL_SERVER_ERROR)
    };
    let issued = access_token::issue_user_token(&call.shared.key, &call.shared.base_url, &order)
        .map_err(signing_failed)?;
    let mut body = json!({
        "token_type": "Bearer",
        "scope": request.answer_scope(&granted),
        "expires_in": issued.expires_in,
        "ext_expires_in": issued.expires_in,
        "access_token": issued.access_token,
    });
    let refresh = request.wants("offline_access");
    if refresh {
        let token = opaque("1.A", 4);
        let lifetime = call.directory.delegated.refresh_token_lifetime_seconds;
        let mut next = sign_in.clone();
        next.scope = scope.clone();
        call.shared.delegated().lock().refresh.insert(
            token.clone(),
            RefreshRecord {
                sign_in: next,
                expires: call.now
                    + Duration::seconds(i64::try_from(lifetime).unwrap_or(i64::MAX / 4_000_000)),
                status: RefreshStatus::Active,
            },
        );
        body["refresh_token"] = json!(token);
    }
    if request.wants("openid") {
        let id_token = access_token::issue_id_token(
            &call.shared.key,
            &call.shared.base_url,
            &order,
            sign_in.nonce.as_deref(),
        )
        .map_err(signing_failed)?;
        body["id_token"] = json!(id_token);
    }
    call.shared.delegated().record(DelegatedTokenRecord {
        grant: grant.name().to_owned(),
        tenant_id: tenant.id.clone(),
        client_id: app.client_id.clone(),
        user_oid: user.oid.clone(),
        upn: user.upn.clone(),
        audience: request.named.clone(),
        scp: granted,
        refresh_token_issued: refresh,
        at: call.now,
    });
    tracing::info!(
        grant = grant.name(),
        tenant = %tenant.id,
        client_id = %app.client_id,
        user = %user.oid,
        "delegated token issued"
    );
    Ok(body)
}

pub(crate) fn consent_missing(app: &RegisteredApp, resource: &str) -> EntraError {
    EntraError::invalid_grant(
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{}' named '{}'. Send an interactive authorization request for this user and resource ({}).",
            app.client_id,
            app.display_name,
            clip(resource)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc7636() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn refresh_keeps_openid_scopes() {
        assert_eq!(
            merged_scope(
                "https://graph.microsoft.com/.default",
                "openid offline_access x/y"
            ),
            "https://graph.microsoft.com/.default openid offline_access"
        );
    }
}

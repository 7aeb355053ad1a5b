//! The access tokens the emulator issues: Entra's app-only claims, signed with the run's key.

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::{Builder, Uuid};

use crate::entra::directory::{RegisteredApp, Tenant, User};
use crate::entra::keys::SigningKey;
use crate::entra::request_log::{CredentialKind, Endpoint};

/// Everything that decides the content of one token.
pub(crate) struct TokenOrder<'a> {
    pub endpoint: Endpoint,
    pub tenant: &'a Tenant,
    pub app: &'a RegisteredApp,
    /// The resource exactly as the client named it: it becomes `aud`.
    pub audience: &'a str,
    pub roles: Vec<String>,
    pub credential: CredentialKind,
    pub lifetime_seconds: u64,
    pub now: DateTime<Utc>,
}

pub(crate) struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub expires_on: i64,
    pub not_before: i64,
}

pub(crate) fn issue(
    key: &SigningKey,
    base_url: &str,
    order: &TokenOrder<'_>,
) -> anyhow::Result<Issued> {
    let tid = order.tenant.id.as_str();
    let client_id = order.app.client_id.as_str();
    let issued_at = order.now.timestamp();
    let lifetime = i64::try_from(order.lifetime_seconds)?;
    let expires_on = issued_at + lifetime;
    let service_principal = service_principal_id(tid, client_id).to_string();
    // "1": authenticated with a secret, "2": with a certificate, as in appidacr/azpacr.
    let acr = match order.credential {
        CredentialKind::Secret => "1",
        CredentialKind::Assertion => "2",
    };
    let v1_issuer = format!("https://sts.windows.net/{tid}/");

    let mut claims = Map::new();
    claims.insert("aud".into(), json!(order.audience));
    let (issuer, version) = match order.endpoint {
        Endpoint::V1 => (v1_issuer.clone(), "1.0"),
        Endpoint::V2 => (format!("{base_url}/{tid}/v2.0"), "2.0"),
    };
    claims.insert("iss".into(), json!(issuer));
    claims.insert("iat".into(), json!(issued_at));
    claims.insert("nbf".into(), json!(issued_at));
    claims.insert("exp".into(), json!(expires_on));
    match order.endpoint {
        Endpoint::V1 => {
            claims.insert("appid".into(), json!(client_id));
            claims.insert("appidacr".into(), json!(acr));
        }
        Endpoint::V2 => {
            claims.insert("azp".into(), json!(client_id));
            claims.insert("azpacr".into(), json!(acr));
        }
    }
    if !order.app.display_name.is_empty() {
        claims.insert("app_displayname".into(), json!(order.app.display_name));
    }
    claims.insert("idp".into(), json!(v1_issuer));
    claims.insert("idtyp".into(), json!("app"));
    claims.insert("oid".into(), json!(service_principal));
    // Absent, not empty, when nothing is granted: what clients must detect.
    if !order.roles.is_empty() {
        claims.insert("roles".into(), json!(order.roles));
    }
    claims.insert("sub".into(), json!(service_principal));
    claims.insert("tid".into(), json!(tid));
    claims.insert("uti".into(), json!(random_token_id()));
    claims.insert("jti".into(), json!(Uuid::new_v4().to_string()));
    claims.insert("ver".into(), json!(version));

    Ok(Issued {
        access_token: key.sign(&Value::Object(claims))?,
        expires_in: order.lifetime_seconds,
        expires_on,
        not_before: issued_at,
    })
}

/// Everything that decides the content of a delegated (user) token.
pub(crate) struct UserTokenOrder<'a> {
    pub tenant: &'a Tenant,
    pub app: &'a RegisteredApp,
    pub user: &'a User,
    /// The resource exactly as the client named it: it becomes `aud`.
    pub audience: &'a str,
    pub scopes: &'a [String],
    pub amr: &'a [String],
    /// `"0"` public client, `"1"` secret, `"2"` certificate.
    pub acr: &'a str,
    /// May be zero or negative (the control API mints expired tokens for tests).
    pub lifetime_seconds: i64,
    pub now: DateTime<Utc>,
}

/// A v2 delegated access token: `scp` instead of `roles`, and the user's `oid`, `upn`,
/// `preferred_username`, `name`.
pub(crate) fn issue_user_token(
    key: &SigningKey,
    base_url: &str,
    order: &UserTokenOrder<'_>,
) -> anyhow::Result<Issued> {
    let tid = order.tenant.id.as_str();
    let client_id = order.app.client_id.as_str();
    let issued_at = order.now.timestamp();
    let expires_on = issued_at + order.lifetime_seconds;
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(order.audience));
    claims.insert("iss".into(), json!(format!("{base_url}/{tid}/v2.0")));
    claims.insert("iat".into(), json!(issued_at));
    claims.insert("nbf".into(), json!(issued_at));
    claims.insert("exp".into(), json!(expires_on));
    claims.insert("amr".into(), json!(order.amr));
    claims.insert("azp".into(), json!(client_id));
    claims.insert("azpacr".into(), json!(order.acr));
    claims.insert("appid".into(), json!(client_id));
    if !order.app.display_name.is_empty() {
        claims.insert("app_displayname".into(), json!(order.app.display_name));
    }
    claims.insert("idtyp".into(), json!("user"));
    if !order.user.display_name.is_empty() {
        claims.insert("name".into(), json!(order.user.display_name));
    }
    claims.insert("oid".into(), json!(order.user.oid));
    claims.insert("preferred_username".into(), json!(order.user.upn));
    claims.insert("scp".into(), json!(order.scopes.join(" ")));
    claims.insert(
        "sub".into(),
        json!(pairwise_subject(&order.user.oid, client_id)),
    );
    claims.insert("tid".into(), json!(tid));
    claims.insert("upn".into(), json!(order.user.upn));
    claims.insert("uti".into(), json!(random_token_id()));
    claims.insert("jti".into(), json!(Uuid::new_v4().to_string()));
    claims.insert("ver".into(), json!("2.0"));
    Ok(Issued {
        access_token: key.sign(&Value::Object(claims))?,
        expires_in: u64::try_from(order.lifetime_seconds.max(0))?,
        expires_on,
        not_before: issued_at,
    })
}

/// A v2 ID token for the app (`openid` asked).
pub(crate) fn issue_id_token(
    key: &SigningKey,
    base_url: &str,
    order: &UserTokenOrder<'_>,
    nonce: Option<&str>,
) -> anyhow::Result<String> {
    let tid = order.tenant.id.as_str();
    let client_id = order.app.client_id.as_str();
    let issued_at = order.now.timestamp();
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(client_id));
    claims.insert("iss".into(), json!(format!("{base_url}/{tid}/v2.0")));
    claims.insert("iat".into(), json!(issued_at));
    claims.insert("nbf".into(), json!(issued_at));
    claims.insert("exp".into(), json!(issued_at + order.lifetime_seconds));
    if !order.user.display_name.is_empty() {
        claims.insert("name".into(), json!(order.user.display_name));
    }
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    claims.insert("oid".into(), json!(order.user.oid));
    claims.insert("preferred_username".into(), json!(order.user.upn));
    claims.insert(
        "sub".into(),
        json!(pairwise_subject(&order.user.oid, client_id)),
    );
    claims.insert("tid".into(), json!(tid));
    claims.insert("ver".into(), json!("2.0"));
    // Entra's `wids` (directory role template ids), as an app that asks for directory roles in
    // its tokens receives them: every member holds the default user role.
    let mut wids = vec![json!(DEFAULT_USER_ROLE)];
    wids.extend(
        order
            .user
            .portal_roles
            .iter()
            .filter_map(|name| directory_role_id(name))
            .map(|id| json!(id)),
    );
    claims.insert("wids".into(), Value::Array(wids));
    key.sign(&Value::Object(claims))
}

/// The template id of Entra's default "User" role, present in every member's `wids`.
const DEFAULT_USER_ROLE: &str = "b79fbf4d-3ef9-4689-8143-76b194e85509";

/// The role template ids of the directory roles the scenario's `portal_roles` name.
fn directory_role_id(name: &str) -> Option<&'static str> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "global administrator" => "62e90394-69f5-4237-9190-012177145e10",
        "privileged role administrator" => "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "cloud application administrator" => "158c047a-c907-4556-b7ef-446551a6b5f7",
        "application administrator" => "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "security administrator" => "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "security operator" => "5f2222b1-57c3-48ba-8ad5-d4759f1fde6f",
        "security reader" => "5d6b6bb7-de71-4623-b4af-96380a352509",
        "global reader" => "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
        _ => return None,
    })
}

/// Entra's `sub` of a user token: pairwise per user and app.
fn pairwise_subject(user_oid: &str, client_id: &str) -> String {
    use base64::Engine;
    let hash = digest::digest(
        &digest::SHA256,
        format!("defender-emulator subject {user_oid} {client_id}").as_bytes(),
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.as_ref()[..32])
}

/// The app's service principal in a tenant: a different object in every tenant, always the same
/// for one tenant and app (across runs too), like a real one.
pub(crate) fn service_principal_id(tenant_id: &str, client_id: &str) -> Uuid {
    let hash = digest::digest(
        &digest::SHA256,
        format!("defender-emulator service principal {tenant_id} {client_id}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    Builder::from_sha1_bytes(bytes).into_uuid()
}

/// Entra's `uti` is 22 characters of base64url.
fn random_token_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_principal_ids_are_stable_and_per_tenant() {
        let app = "11111111-1111-4111-8111-111111111111";
        let a = service_principal_id("22222222-2222-4222-8222-222222222222", app);
        let b = service_principal_id("33333333-3333-4333-8333-333333333333", app);
        assert_eq!(
            a,
            service_principal_id("22222222-2222-4222-8222-222222222222", app)
        );
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn token_ids_look_like_entra_ones() {
        assert_eq!(random_token_id().len(), 22);
    }
}

//! OpenID Connect ID tokens: the only place a person's identity is read from. An ID token is
//! checked in full before any claim is believed: its RS256 signature against the keys the
//! issuer publishes (`{authority}/{tid}/discovery/v2.0/keys`), `iss` equal to the issuer of the
//! tenant it names, `aud` equal to our client id, the `nonce` we sent, and its validity window.
//! Access tokens are never read for identity: their format is their API's business.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use crate::cloud::CloudEndpoints;
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// Clock skew tolerated on `exp`, `nbf` and `iat` (Microsoft's libraries use five minutes).
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// How long a published key set is reused before it is read again.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// A token naming a key we do not know re-reads the set, at most this often per issuer.
const KEYS_REFRESH_FLOOR: Duration = Duration::from_secs(60);
/// Issuers whose keys are kept at once; older ones are dropped first.
const KEYS_KEPT: usize = 256;
/// ID tokens are a few KB; anything much larger is not one.
const MAX_TOKEN_LENGTH: usize = 16 * 1024;

/// Directory roles able to grant tenant-wide admin consent (role template ids): Global
/// Administrator, Privileged Role Administrator, Cloud Application Administrator, Application
/// Administrator. Checked against the `wids` claim when the token carries it.
pub const CONSENT_ADMIN_ROLES: [&str; 4] = [
    "62e90394-69f5-4237-9190-012177145e10",
    "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "158c047a-c907-4556-b7ef-446551a6b5f7",
    "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("Microsoft's answer held no ID token")]
    Missing,
    #[error("the ID token is malformed: {0}")]
    Malformed(String),
    #[error("the ID token is signed with {0}, not RS256")]
    UnsupportedAlgorithm(String),
    #[error("the ID token names no signing key (kid)")]
    NoKeyId,
    #[error("the ID token's signing key {0:?} is not among the issuer's published keys")]
    UnknownKey(String),
    #[error("the issuer's signing keys could not be read: {0}")]
    KeysUnavailable(String),
    #[error("the ID token's signature is invalid")]
    BadSignature,
    #[error("the ID token's issuer {actual:?} is not {expected:?}")]
    WrongIssuer { expected: String, actual: String },
    #[error("the ID token was issued to another application")]
    WrongAudience,
    #[error("the ID token's nonce does not match this sign-in")]
    WrongNonce,
    #[error("the ID token has expired (check this machine's clock if this repeats)")]
    Expired,
    #[error("the ID token is not valid yet (check this machine's clock)")]
    NotYetValid,
    #[error("the user signed in to tenant {actual}, not {expected}")]
    WrongTenant { expected: String, actual: String },
    #[error(
        "the user who signed in holds no directory role that can grant admin consent (Global, Privileged Role, Cloud Application or Application Administrator)"
    )]
    NotAnAdministrator,
}

impl CallerError for IdTokenError {
    fn code(&self) -> ErrorCode {
        match self {
            IdTokenError::KeysUnavailable(_) => ErrorCode::MicrosoftUnavailable,
            IdTokenError::WrongTenant { .. } => ErrorCode::TenantMismatch,
            IdTokenError::NotAnAdministrator => ErrorCode::AdminRoleMissing,
            _ => ErrorCode::IdTokenInvalid,
        }
    }
}

/// What the ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// The tenant the user must have signed in to; `None` accepts any (the token's own `tid`
    /// is then the answer).
    pub tenant: Option<&'a TenantId>,
    /// Refuse a token whose `wids` claim lists no role able to grant admin consent. A token
    /// without `wids` (the app is not configured to emit it) passes.
    pub consent_admin: bool,
}

/// Who signed in, from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub tenant: TenantId,
    /// The user's object id in that tenant (lower case).
    pub oid: String,
    pub name: Option<String>,
    pub username: Option<String>,
    /// Directory role template ids, when the token carries them.
    pub directory_roles: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct IdClaims {
    iss: String,
    tid: String,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    upn: Option<String>,
    #[serde(default)]
    wids: Option<Vec<String>>,
}

/// The issuer Entra writes into a v2 token of `tenant`: `{authority}/{tid}/v2.0`.
pub fn issuer_of(endpoints: &CloudEndpoints, tenant: &str) -> String {
    endpoints.authority_url(tenant, "v2.0")
}

/// Checks `token` against `key` (already chosen by its `kid`) and `expected`. Pure: the caller
/// fetches the key. `now` is seconds since the epoch.
pub fn validate(
    token: &str,
    key: &DecodingKey,
    endpoints: &CloudEndpoints,
    expected: &Expected<'_>,
    now: i64,
) -> Result<VerifiedIdentity, IdTokenError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    // Times are checked below against the caller's `now`, so that this stays a pure function.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    // The issuer depends on the tenant the token names: checked below, against its own `tid`.
    validation.iss = None;
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => IdTokenError::UnsupportedAlgorithm("another".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    IdTokenError::Malformed(format!("no {claim} claim"))
                }
                // jsonwebtoken's other messages describe the shape, never the content.
                other => IdTokenError::Malformed(format!("{other:?}")),
            }
        })?;
    let skew = CLOCK_SKEW.as_secs() as i64;
    let time = |name: &str| data.claims.get(name).and_then(serde_json::Value::as_i64);
    match time("exp") {
        Some(exp) if exp + skew < now => return Err(IdTokenError::Expired),
        Some(_) => {}
        None => return Err(IdTokenError::Malformed("exp is not a number".into())),
    }
    // `iat` far in the future is as suspect as `nbf` there.
    if time("nbf").is_some_and(|nbf| nbf > now + skew)
        || time("iat").is_some_and(|iat| iat > now + skew)
    {
        return Err(IdTokenError::NotYetValid);
    }
    let claims: IdClaims = serde_json::from_value(data.claims)
        .map_err(|error| IdTokenError::Malformed(error.to_string()))?;
    let tenant = TenantId::parse(&claims.tid)
        .map_err(|_| IdTokenError::Malformed("tid is not a tenant id".into()))?;
    let issuer = issuer_of(endpoints, tenant.as_str());
    if claims.iss != issuer {
        return Err(IdTokenError::WrongIssuer {
            expected: issuer,
            actual: claims.iss.chars().take(200).collect(),
        });
    }
    // Constant-time is not needed: the nonce is not a secret, it binds the token to the flow.
    if claims.nonce.as_deref() != Some(expected.nonce) {
        return Err(IdTokenError::WrongNonce);
    }
    if let Some(wanted) = expected.tenant
        && wanted != &tenant
    {
        return Err(IdTokenError::WrongTenant {
            expected: wanted.to_string(),
            actual: tenant.to_string(),
        });
    }
    if expected.consent_admin
        && let Some(roles) = &claims.wids
        && !roles.iter().any(|role| {
            CONSENT_ADMIN_ROLES
                .iter()
                .any(|admin| admin.eq_ignore_ascii_case(role))
        })
    {
        return Err(IdTokenError::NotAnAdministrator);
    }
    let oid = claims
        .oid
        .map(|oid| oid.to_ascii_lowercase())
        .filter(|oid| !oid.is_empty())
        .ok_or_else(|| IdTokenError::Malformed("no oid claim".into()))?;
    Ok(VerifiedIdentity {
        tenant,
        oid,
        name: claims.name,
        username: claims.preferred_username.or(claims.upn),
        directory_roles: claims.wids,
    })
}

/// The header fields that choose the key; anything but RS256 is refused before a key is read.
fn key_id_of(token: &str) -> Result<(String, String), IdTokenError> {
    if token.len() > MAX_TOKEN_LENGTH {
        return Err(IdTokenError::Malformed("too long".into()));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| IdTokenError::Malformed("unreadable header".into()))?;
    if header.alg != Algorithm::RS256 {
        return Err(IdTokenError::UnsupportedAlgorithm(format!(
            "{:?}",
            header.alg
        )));
    }
    let kid = header.kid.ok_or(IdTokenError::NoKeyId)?;
    // The tenant named by the unverified payload only chooses which keys to read, from our own
    // authority host: the signature and issuer checks decide.
    #[derive(Deserialize)]
    struct TenantOnly {
        tid: String,
    }
    let TenantOnly { tid } = super::claims::decode_payload_as::<TenantOnly>(token)
        .map_err(|_| IdTokenError::Malformed("no tid claim".into()))?;
    let tenant = TenantId::parse(&tid)
        .map_err(|_| IdTokenError::Malformed("tid is not a tenant id".into()))?;
    Ok((kid, tenant.to_string()))
}

struct KeySet {
    read_at: Instant,
    keys: HashMap<String, Jwk>,
}

/// Verifies ID tokens, reading and caching each issuer's published keys. Built once per cold
/// start.
pub struct IdTokenVerifier {
    http: reqwest::Client,
    endpoints: CloudEndpoints,
    sets: Mutex<HashMap<String, KeySet>>,
}

impl IdTokenVerifier {
    pub fn new(http: reqwest::Client, endpoints: CloudEndpoints) -> IdTokenVerifier {
        IdTokenVerifier {
            http,
            endpoints,
            sets: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoints(&self) -> &CloudEndpoints {
        &self.endpoints
    }

    pub async fn verify(
        &self,
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<VerifiedIdentity, IdTokenError> {
        let (kid, tenant) = key_id_of(token)?;
        let jwk = self.key(&tenant, &kid).await?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| IdTokenError::KeysUnavailable(format!("key {kid:?} is unusable")))?;
        validate(
            token,
            &key,
            &self.endpoints,
            expected,
            chrono::Utc::now().timestamp(),
        )
    }

    async fn key(&self, tenant: &str, kid: &str) -> Result<Jwk, IdTokenError> {
        let url = self.endpoints.authority_url(tenant, "discovery/v2.0/keys");
        let (cached, refresh_allowed) = {
            let sets = self.sets.lock().expect("key cache poisoned");
            match sets.get(&url) {
                Some(set) => (
                    (set.read_at.elapsed() < KEYS_TTL)
                        .then(|| set.keys.get(kid).cloned())
                        .flatten(),
                    set.read_at.elapsed() >= KEYS_REFRESH_FLOOR,
                ),
                None => (None, true),
            }
        };
        if let Some(jwk) = cached {
            return Ok(jwk);
        }
        if !refresh_allowed {
            return Err(IdTokenError::UnknownKey(kid.to_owned()));
        }
        let keys = self.read_keys(&url).await?;
        let found = keys.get(kid).cloned();
        {
            let mut sets = self.sets.lock().expect("key cache poisoned");
            if sets.len() >= KEYS_KEPT
                && let Some(oldest) = sets
                    .iter()
                    .min_by_key(|(_, set)| set.read_at)
                    .map(|(url, _)| url.clone())
            {
                sets.remove(&oldest);
            }
            sets.insert(
                url,
                KeySet {
                    read_at: Instant::now(),
                    keys,
                },
            );
        }
        found.ok_or_else(|| IdTokenError::UnknownKey(kid.to_owned()))
    }

    async fn read_keys(&self, url: &str) -> Result<HashMap<String, Jwk>, IdTokenError> {
        let unavailable = |why: String| IdTokenError::KeysUnavailable(why);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| unavailable(format!("request failed: {error}")))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(unavailable(format!("the key endpoint answered {status}")));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| unavailable("the key endpoint answered no JSON".into()))?;
        // Each key on its own: one entry this library cannot read must not hide the others.
        let keys: HashMap<String, Jwk> = body
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
            .filter_map(|jwk| jwk.common.key_id.clone().map(|kid| (kid, jwk)))
            .collect();
        if keys.is_empty() {
            return Err(unavailable(
                "the key endpoint published no usable key".into(),
            ));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const CLIENT: &str = "11111111-1111-4111-8111-111111111111";
    const TENANT: &str = "22222222-2222-4222-8222-222222222222";
    const OTHER: &str = "33333333-3333-4333-8333-333333333333";
    const NOW: i64 = 1_800_000_000;

    struct Keys {
        signing: EncodingKey,
        verifying: DecodingKey,
    }

    fn keys() -> Keys {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        Keys {
            signing: EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap(),
            verifying: DecodingKey::from_rsa_pem(pair.public_key_pem().as_bytes()).unwrap(),
        }
    }

    fn endpoints() -> CloudEndpoints {
        CloudEndpoints::for_cloud(Cloud::Public)
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "aud": CLIENT,
            "tid": TENANT,
            "oid": "AAAAAAAA-0000-4000-8000-000000000001",
            "nonce": "n-1",
            "iat": NOW - 10,
            "nbf": NOW - 10,
            "exp": NOW + 3600,
            "name": "Ada Admin",
            "preferred_username": "ada@contoso.example",
        })
    }

    fn sign(keys: &Keys, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, &keys.signing).unwrap()
    }

    fn expected<'a>(tenant: Option<&'a TenantId>) -> Expected<'a> {
        Expected {
            client_id: CLIENT,
            nonce: "n-1",
            tenant,
            consent_admin: true,
        }
    }

    fn check(keys: &Keys, claims: &serde_json::Value) -> Result<VerifiedIdentity, IdTokenError> {
        let tenant = TenantId::parse(TENANT).unwrap();
        validate(
            &sign(keys, claims),
            &keys.verifying,
            &endpoints(),
            &expected(Some(&tenant)),
            NOW,
        )
    }

    #[test]
    fn a_genuine_token_names_its_tenant_and_user() {
        let keys = keys();
        let identity = check(&keys, &claims()).unwrap();
        assert_eq!(identity.tenant.as_str(), TENANT);
        assert_eq!(identity.oid, "aaaaaaaa-0000-4000-8000-000000000001");
        assert_eq!(identity.username.as_deref(), Some("ada@contoso.example"));
    }

    #[test]
    fn another_key_is_a_bad_signature() {
        let keys = keys();
        let forger = self::keys();
        let token = sign(&forger, &claims());
        let tenant = TenantId::parse(TENANT).unwrap();
        assert_eq!(
            validate(
                &token,
                &keys.verifying,
                &endpoints(),
                &expected(Some(&tenant)),
                NOW
            ),
            Err(IdTokenError::BadSignature)
        );
        // A payload changed after signing.
        let genuine = sign(&keys, &claims());
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let mut changed = claims();
        changed["tid"] = json!(OTHER);
        let payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&changed).unwrap(),
        );
        parts[1] = &payload;
        assert_eq!(
            validate(
                &parts.join("."),
                &keys.verifying,
                &endpoints(),
                &expected(Some(&tenant)),
                NOW
            ),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused_before_any_key_is_read() {
        let none = crate::entra::claims::fake_jwt(&claims());
        assert!(matches!(
            key_id_of(&none),
            Err(IdTokenError::UnsupportedAlgorithm(_)) | Err(IdTokenError::Malformed(_))
        ));
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hs = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(b"x")).unwrap();
        assert!(matches!(
            key_id_of(&hs),
            Err(IdTokenError::UnsupportedAlgorithm(_))
        ));
        let keys = keys();
        assert_eq!(key_id_of(&sign(&keys, &claims())).unwrap().0, "k1");
    }

    #[test]
    fn the_audience_must_be_our_app() {
        let keys = keys();
        let mut other = claims();
        other["aud"] = json!("44444444-4444-4444-8444-444444444444");
        assert_eq!(check(&keys, &other), Err(IdTokenError::WrongAudience));
    }

    #[test]
    fn the_issuer_must_be_the_named_tenants() {
        let keys = keys();
        for issuer in [
            format!("https://login.microsoftonline.com/{OTHER}/v2.0"),
            format!("https://sts.windows.net/{TENANT}/"),
            format!("https://evil.example/{TENANT}/v2.0"),
        ] {
            let mut other = claims();
            other["iss"] = json!(issuer);
            assert!(
                matches!(check(&keys, &other), Err(IdTokenError::WrongIssuer { .. })),
                "{issuer}"
            );
        }
    }

    #[test]
    fn the_nonce_must_be_this_flows() {
        let keys = keys();
        let mut other = claims();
        other["nonce"] = json!("n-2");
        assert_eq!(check(&keys, &other), Err(IdTokenError::WrongNonce));
        other.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(&keys, &other), Err(IdTokenError::WrongNonce));
    }

    #[test]
    fn expired_and_future_tokens_are_refused_beyond_the_skew() {
        let keys = keys();
        let mut old = claims();
        old["exp"] = json!(NOW - CLOCK_SKEW.as_secs() as i64 - 1);
        assert_eq!(check(&keys, &old), Err(IdTokenError::Expired));
        let mut within = claims();
        within["exp"] = json!(NOW - 60);
        assert!(check(&keys, &within).is_ok(), "within the skew");
        let mut future = claims();
        future["nbf"] = json!(NOW + 3600);
        assert_eq!(check(&keys, &future), Err(IdTokenError::NotYetValid));
        let mut issued_later = claims();
        issued_later["iat"] = json!(NOW + 3600);
        assert_eq!(check(&keys, &issued_later), Err(IdTokenError::NotYetValid));
    }

    #[test]
    fn a_sign_in_at_another_tenant_is_refused_when_one_is_expected() {
        let keys = keys();
        let mut other = claims();
        other["tid"] = json!(OTHER);
        other["iss"] = json!(format!("https://login.microsoftonline.com/{OTHER}/v2.0"));
        let refused = check(&keys, &other).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::TenantMismatch);
        // Without an expectation the token's own tenant is the answer.
        let token = sign(&keys, &other);
        let identity =
            validate(&token, &keys.verifying, &endpoints(), &expected(None), NOW).unwrap();
        assert_eq!(identity.tenant.as_str(), OTHER);
    }

    #[test]
    fn directory_roles_when_present_must_include_a_consent_admin() {
        let keys = keys();
        let mut user = claims();
        user["wids"] = json!(["b79fbf4d-3ef9-4689-8143-76b194e85509"]);
        assert_eq!(check(&keys, &user), Err(IdTokenError::NotAnAdministrator));
        let mut admin = claims();
        admin["wids"] = json!([
            "b79fbf4d-3ef9-4689-8143-76b194e85509",
            "62E90394-69F5-4237-9190-012177145E10"
        ]);
        assert!(check(&keys, &admin).is_ok());
    }

    #[test]
    fn a_token_without_oid_or_tid_is_malformed() {
        let keys = keys();
        let mut no_oid = claims();
        no_oid.as_object_mut().unwrap().remove("oid");
        assert!(matches!(
            check(&keys, &no_oid),
            Err(IdTokenError::Malformed(_))
        ));
        let mut bad_tid = claims();
        bad_tid["tid"] = json!("common");
        assert!(matches!(
            check(&keys, &bad_tid),
            Err(IdTokenError::Malformed(_))
        ));
    }
}

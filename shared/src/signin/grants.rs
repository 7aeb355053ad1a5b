//! The user grants of the token endpoint (v2): redeeming an authorization code (with its PKCE
//! verifier) and a refresh token. Both answer an access token and, with `offline_access`, a new
//! refresh token that replaces the one used.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::TokenEndpointVersion;
use crate::entra::{AccessToken, EntraError, TokenClient};
use crate::secrets::AppCredential;

/// What the token endpoint gave for a user. `Debug` never shows a token.
#[derive(Debug)]
pub struct UserTokens {
    pub access: AccessToken,
    pub refresh_token: Option<SecretString>,
    /// The answer's `scope`: what was granted.
    pub scope: String,
    /// The OpenID Connect ID token (`openid` asked): who signed in, once verified.
    pub id_token: Option<SecretString>,
}

impl UserTokens {
    /// The delegated permissions granted, by name (`Incident.Read`), from the answer's `scope`
    /// (`{resource}/{name}` items and OpenID scopes).
    pub fn granted_scopes(&self) -> Vec<String> {
        const OPENID: [&str; 4] = ["openid", "profile", "email", "offline_access"];
        self.scope
            .split_whitespace()
            .map(|item| item.rsplit('/').next().unwrap_or(item))
            .filter(|name| !name.is_empty() && !OPENID.iter().any(|o| o.eq_ignore_ascii_case(name)))
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id_token: Option<SecretString>,
}

/// The `scope` of a user grant for `resource`: its delegated permissions (`.default`, what was
/// consented), a refresh token, and the user's identity.
pub fn user_scope(resource: &str) -> String {
    format!(
        "{}/.default offline_access openid profile",
        resource.trim_end_matches('/')
    )
}

pub async fn redeem_code(
    client: &TokenClient,
    tenant: &str,
    code: &SecretString,
    verifier: &SecretString,
    redirect_uri: &str,
    scope: &str,
    credential: &AppCredential,
) -> Result<UserTokens, EntraError> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.expose_secret()),
        ("code_verifier", verifier.expose_secret()),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
    ];
    let body = client
        .post_grant(tenant, TokenEndpointVersion::V2, form, credential)
        .await?;
    parse(&body)
}

pub async fn redeem_refresh_token(
    client: &TokenClient,
    tenant: &str,
    refresh_token: &SecretString,
    scope: &str,
    credential: &AppCredential,
) -> Result<UserTokens, EntraError> {
    let form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose_secret()),
        ("scope", scope),
    ];
    let body = client
        .post_grant(tenant, TokenEndpointVersion::V2, form, credential)
        .await?;
    parse(&body)
}

fn parse(body: &[u8]) -> Result<UserTokens, EntraError> {
    let access = crate::entra::client::parse_token_response(body)?;
    let extra: Extra = serde_json::from_slice(body)
        .map_err(|_| EntraError::MalformedResponse("token response is not JSON".into()))?;
    Ok(UserTokens {
        access,
        refresh_token: extra
            .refresh_token
            .filter(|token| !token.expose_secret().trim().is_empty()),
        scope: extra.scope.unwrap_or_default(),
        id_token: extra.id_token,
    })
}

/// A refresh token Entra will never accept again (`invalid_grant`: used, revoked by a password
/// change or an administrator, expired by inactivity): the user must sign in again.
pub fn is_dead_refresh_token(error: &EntraError) -> bool {
    matches!(error, EntraError::Rejected { error, .. } if error == "invalid_grant")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::entra::claims::fake_jwt;
    use crate::entra::errors::Trace;

    #[test]
    fn parses_the_refresh_token_and_scope_and_hides_them_from_debug() {
        let jwt = fake_jwt(&json!({"tid": "t", "scp": "Incident.Read", "oid": "o"}));
        let body = json!({
            "token_type": "Bearer", "expires_in": 3599, "access_token": jwt,
            "refresh_token": "0.AR-refresh-secret", "scope": "https://api.security.microsoft.com/Incident.Read openid"
        });
        let tokens = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            tokens.refresh_token.as_ref().unwrap().expose_secret(),
            "0.AR-refresh-secret"
        );
        assert!(tokens.scope.contains("Incident.Read"));
        let debug = format!("{tokens:?}");
        assert!(
            !debug.contains("0.AR-refresh-secret") && !debug.contains(&jwt),
            "{debug}"
        );

        let without = json!({"expires_in": 10, "access_token": jwt, "refresh_token": " "});
        assert!(
            parse(without.to_string().as_bytes())
                .unwrap()
                .refresh_token
                .is_none()
        );
    }

    #[test]
    fn invalid_grant_is_a_dead_refresh_token_and_nothing_else_is() {
        for (status, error, code) in [
            (400, "invalid_grant", 70000),
            (400, "invalid_grant", 50173),
            (400, "invalid_grant", 700082),
        ] {
            let body = json!({"error": error, "error_codes": [code]});
            let typed = EntraError::from_response("t", status, None, body.to_string().as_bytes());
            assert!(is_dead_refresh_token(&typed), "{code}");
        }
        let throttled = EntraError::Throttled {
            retry_after: None,
            trace: Trace::default(),
        };
        assert!(!is_dead_refresh_token(&throttled));
        let consent = json!({"error": "invalid_grant", "error_codes": [65001]});
        let typed = EntraError::from_response("t", 400, None, consent.to_string().as_bytes());
        assert!(
            !is_dead_refresh_token(&typed),
            "consent missing is not a dead token"
        );
    }
}

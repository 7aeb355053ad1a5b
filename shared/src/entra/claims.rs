//! The claims of an access token, read from its payload. The signature is the API's business
//! (Microsoft-owned APIs use their own token format): we decode only to check that the token is
//! for the tenant asked and carries the roles needed, and for telemetry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenClaims {
    pub tid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub appid: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub ver: Option<String>,
}

impl TokenClaims {
    /// The client id the token was issued to (`appid` in v1 tokens, `azp` in v2).
    pub fn client_id(&self) -> Option<&str> {
        self.appid.as_deref().or(self.azp.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the token is not a JWT (expected three dot-separated parts)")]
    NotAJwt,
    #[error("the token payload is not base64url")]
    NotBase64,
    #[error("the token payload is not the expected JSON: {0}")]
    NotJson(String),
}

/// Decodes the payload of a compact JWT. Never logs or returns the token.
pub fn decode_payload(token: &str) -> Result<TokenClaims, ClaimsError> {
    decode_payload_as(token)
}

/// Decodes the payload of a compact JWT into `T` (e.g. a user token's claims). Never logs or
/// returns the token.
pub fn decode_payload_as<T: serde::de::DeserializeOwned>(token: &str) -> Result<T, ClaimsError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotAJwt);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotBase64)?;
    serde_json::from_slice(&bytes).map_err(|error| {
        // serde's message names the field, never the token's content.
        ClaimsError::NotJson(error.to_string())
    })
}

#[cfg(test)]
pub(crate) fn fake_jwt(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.c2ln")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decodes_v1_and_v2_claims() {
        let v1 = decode_payload(&fake_jwt(&json!({
            "tid": "t", "roles": ["Incident.Read.All"], "appid": "app", "aud": "https://api.security.microsoft.com", "exp": 10
        })))
        .unwrap();
        assert_eq!(v1.client_id(), Some("app"));
        assert_eq!(v1.roles, vec!["Incident.Read.All"]);
        let v2 = decode_payload(&fake_jwt(&json!({"tid": "t", "azp": "app2"}))).unwrap();
        assert_eq!(v2.client_id(), Some("app2"));
        assert!(
            v2.roles.is_empty(),
            "roles are absent when nothing is granted"
        );
    }

    #[test]
    fn refuses_non_jwts() {
        assert_eq!(decode_payload("abc").unwrap_err(), ClaimsError::NotAJwt);
        assert_eq!(decode_payload("a.b.c.d").unwrap_err(), ClaimsError::NotAJwt);
        assert_eq!(
            decode_payload("a.!!!.c").unwrap_err(),
            ClaimsError::NotBase64
        );
        let no_tid = fake_jwt(&json!({"roles": []}));
        assert!(matches!(
            decode_payload(&no_tid),
            Err(ClaimsError::NotJson(_))
        ));
    }
}

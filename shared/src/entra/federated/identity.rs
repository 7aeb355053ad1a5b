//! Who an AWS token says the function is: its issuer and subject, read from the payload without
//! verifying it. They are what the FIC on the Entra app must match, and they are not secret, so
//! they go into messages and into `dp-operator federation`'s output.

use serde::Deserialize;

use crate::entra::claims::{ClaimsError, decode_payload_as};

/// The `iss`, `sub` and `aud` of an AWS web identity token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FederatedIdentity {
    /// The account's issuer URL (`https://{id}.tokens.sts.global.api.aws`).
    pub iss: String,
    /// The role ARN the token was issued to.
    pub sub: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
}

impl FederatedIdentity {
    /// Reads the payload of `jwt`. The error names what is wrong, never the token.
    pub fn from_jwt(jwt: &str) -> Result<FederatedIdentity, ClaimsError> {
        decode_payload_as(jwt)
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// What a federated token request presented, for messages about Entra's refusals: the values
/// the FIC is compared with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationContext {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub audience: Option<String>,
}

impl FederationContext {
    pub fn issuer_text(&self) -> &str {
        self.issuer.as_deref().unwrap_or("(unknown)")
    }

    pub fn subject_text(&self) -> &str {
        self.subject.as_deref().unwrap_or("(unknown)")
    }

    pub fn audience_text(&self) -> &str {
        self.audience.as_deref().unwrap_or("(unknown)")
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn reads_issuer_subject_and_audience() {
        let identity = FederatedIdentity::from_jwt(&jwt(json!({
            "iss": "https://abc.tokens.sts.global.api.aws",
            "sub": "arn:aws:iam::123456789012:role/MintToken",
            "aud": "api://AzureADTokenExchange",
            "exp": 1
        })))
        .unwrap();
        assert_eq!(identity.iss, "https://abc.tokens.sts.global.api.aws");
        assert_eq!(identity.sub, "arn:aws:iam::123456789012:role/MintToken");
        assert_eq!(identity.aud, vec!["api://AzureADTokenExchange"]);
        let many =
            FederatedIdentity::from_jwt(&jwt(json!({"iss": "i", "sub": "s", "aud": ["a", "b"]})))
                .unwrap();
        assert_eq!(many.aud, vec!["a", "b"]);
    }

    #[test]
    fn a_token_without_issuer_is_an_error_without_the_token() {
        let token = jwt(json!({"sub": "s"}));
        let error = FederatedIdentity::from_jwt(&token).unwrap_err();
        assert!(!error.to_string().contains(&token));
        assert!(FederatedIdentity::from_jwt("not-a-jwt").is_err());
    }
}

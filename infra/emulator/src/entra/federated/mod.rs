//! Federated identity credentials (workload identity federation): a client assertion issued
//! by an outside OIDC issuer (AWS STS here) instead of one signed with the app's certificate.
//!
//! The token endpoint is synchronous and holds the directory lock; the issuer's keys come over
//! HTTP. So [`prefetch`] reads them first (cached, only for issuers the app trusts), and
//! [`verify`] then checks the assertion against them with no I/O.

mod issuer_keys;
mod matching;
mod verify;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, decode_header};

use crate::entra::assertion::AssertionClaims;

pub(crate) use issuer_keys::{IssuerKeyCache, IssuerKeys, prefetch};
pub(crate) use verify::verify;

/// Replaces the [`crate::demo::EMULATOR_URL_PLACEHOLDER`] prefix of credential issuers with
/// the running emulator's base URL.
pub(crate) fn resolve_placeholder(
    credentials: &mut [crate::scenario::FederatedCredentialConfig],
    base_url: &str,
) {
    for credential in credentials {
        if let Some(rest) = credential
            .issuer
            .strip_prefix(crate::demo::EMULATOR_URL_PLACEHOLDER)
        {
            credential.issuer = format!("{base_url}{rest}");
        }
    }
}

/// The header and claims of a JWT, read without checking its signature.
pub(crate) struct UnverifiedJwt {
    pub header: Header,
    pub claims: AssertionClaims,
}

impl UnverifiedJwt {
    pub(crate) fn read(token: &str) -> Option<UnverifiedJwt> {
        let header = decode_header(token).ok()?;
        let payload = token.split('.').nth(1)?;
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        Some(UnverifiedJwt { header, claims })
    }

    /// Not a certificate assertion: no thumbprint in the header, and issued by someone other
    /// than the app itself. A self-issued assertion without thumbprint stays on the certificate
    /// path, which explains what it lacks.
    pub(crate) fn is_federated(&self, client_id: &str) -> bool {
        self.header.x5t.is_none()
            && self.header.x5t_s256.is_none()
            && self
                .claims
                .iss
                .as_deref()
                .is_some_and(|iss| !iss.eq_ignore_ascii_case(client_id))
    }

    /// `aud` as a list, whether the JWT sent a string or an array.
    pub(crate) fn audiences(&self) -> Vec<String> {
        match &self.claims.aud {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(many)) => many
                .iter()
                .filter_map(|value| value.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, encode};
    use serde_json::json;

    fn token(header: Header, claims: serde_json::Value) -> String {
        encode(&header, &claims, &EncodingKey::from_secret(b"k")).unwrap()
    }

    #[test]
    fn tells_federated_from_certificate_assertions() {
        let client_id = "11111111-1111-4111-8111-111111111111";
        let federated = token(
            Header::new(Algorithm::HS256),
            json!({"iss": "https://issuer", "aud": ["a", "b"]}),
        );
        let jwt = UnverifiedJwt::read(&federated).unwrap();
        assert!(jwt.is_federated(client_id));
        assert_eq!(jwt.audiences(), ["a", "b"]);

        let mut with_thumbprint = Header::new(Algorithm::HS256);
        with_thumbprint.x5t = Some("abc".to_owned());
        let certificate = token(with_thumbprint, json!({"iss": "https://issuer"}));
        assert!(
            !UnverifiedJwt::read(&certificate)
                .unwrap()
                .is_federated(client_id)
        );

        let self_issued = token(Header::new(Algorithm::HS256), json!({"iss": client_id}));
        assert!(
            !UnverifiedJwt::read(&self_issued)
                .unwrap()
                .is_federated(client_id)
        );

        assert!(UnverifiedJwt::read("not-a-jwt").is_none());
    }
}

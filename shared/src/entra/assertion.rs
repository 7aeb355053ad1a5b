//! The certificate credential's client assertion (`private_key_jwt`): a short-lived JWT signed
//! with the app's private key, sent instead of a secret.

use chrono::Utc;
use jsonwebtoken::{Algorithm, Header};
use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

use super::errors::EntraError;
use crate::secrets::CertificateCredential;

/// How long an assertion is valid: long enough for clock skew, short enough to be useless if
/// intercepted.
pub const ASSERTION_LIFETIME_SECONDS: i64 = 300;

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// Signs an assertion for `audience` (the tenant's v2 token endpoint URL).
pub fn sign_assertion(
    certificate: &CertificateCredential,
    client_id: &str,
    audience: &str,
) -> Result<SecretString, EntraError> {
    let now = Utc::now().timestamp();
    let mut header = Header::new(certificate.algorithm);
    if certificate.algorithm == Algorithm::RS256 {
        header.x5t = Some(certificate.thumbprint_sha1.clone());
    } else {
        header.x5t_s256 = Some(certificate.thumbprint_sha256.clone());
    }
    let claims = AssertionClaims {
        aud: audience,
        iss: client_id,
        sub: client_id,
        jti: Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECONDS,
    };
    jsonwebtoken::encode(&header, &claims, certificate.key())
        .map(SecretString::from)
        .map_err(|error| {
            EntraError::MalformedResponse(format!("could not sign the client assertion: {error}"))
        })
}

//! Checks a federated client assertion: a matching credential, the issuer's signature, the
//! time range. Error texts quote issuer, subject and audience (as Entra does), never the JWT.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

use super::{IssuerKeys, UnverifiedJwt, matching};
use crate::entra::assertion::{AssertionClaims, check_times};
use crate::entra::directory::RegisteredApp;
use crate::entra::errors::EntraError;

/// Algorithms an OIDC issuer may sign with; symmetric ones and `none` are never accepted.
const ACCEPTED: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

pub(crate) fn verify(
    assertion: &str,
    jwt: &UnverifiedJwt,
    app: &RegisteredApp,
    keys: Option<&IssuerKeys>,
    now: DateTime<Utc>,
) -> Result<(), EntraError> {
    let issuer = jwt.claims.iss.as_deref().unwrap_or_default();
    let subject = jwt.claims.sub.as_deref().unwrap_or_default();
    matching::find(
        &app.federated_credentials,
        issuer,
        subject,
        &jwt.audiences(),
    )?;
    if !ACCEPTED.contains(&jwt.header.alg) {
        return Err(EntraError::invalid_assertion(
            "The client assertion must be signed with an asymmetric algorithm (RS256, ES384, ...).",
        ));
    }
    let set = match keys {
        Some(IssuerKeys {
            issuer: fetched_for,
            keys: Ok(set),
        }) if fetched_for == issuer => set,
        _ => return Err(EntraError::external_oidc_failed(issuer)),
    };
    let jwk = match jwt.header.kid.as_deref() {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .ok_or_else(|| {
        EntraError::invalid_assertion(&format!(
            "The key was not found. Key id used by client: '{}'",
            crate::entra::errors::clip(jwt.header.kid.as_deref().unwrap_or(""))
        ))
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| {
        EntraError::invalid_assertion("The issuer's key cannot be used to check the signature.")
    })?;
    // Only the signature is checked here; claims were matched above and times are below.
    let mut validation = Validation::new(jwt.header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    decode::<AssertionClaims>(assertion, &key, &validation).map_err(|error| {
        match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                EntraError::invalid_assertion("The signature of the client assertion is invalid.")
            }
            _ => EntraError::invalid_assertion("The client assertion is not a well-formed JWT."),
        }
    })?;
    check_times(&jwt.claims, now.timestamp())
}

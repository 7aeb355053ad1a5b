//! Client assertions (`private_key_jwt`): a JWT signed with the key of one of the app's
//! certificates, naming that certificate by thumbprint.
//!
//! Error texts never quote the assertion; the thumbprint from its header is public data.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;

use crate::entra::directory::RegisteredApp;
use crate::entra::errors::EntraError;

/// Clock skew tolerated on `exp` and `nbf`.
const SKEW_SECONDS: i64 = 300;
/// Entra refuses assertions that stay valid longer than this.
const MAX_LIFETIME_SECONDS: i64 = 3600;

/// The claims Entra checks in a client assertion, certificate or federated.
#[derive(Deserialize)]
pub(crate) struct AssertionClaims {
    pub(crate) aud: Option<Value>,
    pub(crate) iss: Option<String>,
    pub(crate) sub: Option<String>,
    pub(crate) exp: Option<f64>,
    pub(crate) nbf: Option<f64>,
    pub(crate) iat: Option<f64>,
}

/// Checks `assertion` for `app`; `audiences` are the token endpoint URLs it may be addressed to.
pub(crate) fn verify(
    assertion: &str,
    app: &RegisteredApp,
    audiences: &[String],
    now: DateTime<Utc>,
) -> Result<(), EntraError> {
    let header = decode_header(assertion).map_err(|_| {
        EntraError::invalid_assertion("The client assertion is not a well-formed JWT.")
    })?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(EntraError::invalid_assertion(
            "The client assertion must be signed with PS256 or RS256.",
        ));
    }
    if header.x5t_s256.is_none() && header.x5t.is_none() {
        return Err(EntraError::invalid_assertion(
            "No certificate thumbprint (x5t#S256 or x5t) specified in token header.",
        ));
    }
    let certificate = app
        .certificates
        .iter()
        .find(|certificate| {
            header.x5t_s256.as_deref() == Some(certificate.x5t_s256.as_str())
                || header.x5t.as_deref() == Some(certificate.x5t.as_str())
        })
        .ok_or_else(|| {
            let thumbprint = header
                .x5t_s256
                .as_deref()
                .or(header.x5t.as_deref())
                .unwrap_or("");
            EntraError::invalid_assertion(&format!(
                "The key was not found. Thumbprint of key used by client: '{}'",
                thumbprint.chars().take(64).collect::<String>()
            ))
        })?;

    // Only the signature is checked here; every claim is checked below, where each failure
    // gets the AADSTS code Entra gives it.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = decode::<AssertionClaims>(assertion, &certificate.key, &validation)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                EntraError::invalid_assertion("The signature of the client assertion is invalid.")
            }
            _ => EntraError::invalid_assertion("The client assertion is not a well-formed JWT."),
        })?
        .claims;

    let client_id = app.client_id.as_str();
    let names_app = |claim: &Option<String>| {
        claim
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case(client_id))
    };
    if !names_app(&claims.iss) || !names_app(&claims.sub) {
        return Err(EntraError::invalid_assertion(
            "The 'iss' and 'sub' claims of the client assertion must both be the client id.",
        ));
    }
    if !audience_matches(claims.aud.as_ref(), audiences) {
        return Err(EntraError::invalid_assertion(
            "The 'aud' claim of the client assertion must be the token endpoint URL of this tenant.",
        ));
    }
    check_times(&claims, now.timestamp())
}

fn audience_matches(aud: Option<&Value>, accepted: &[String]) -> bool {
    let matches = |value: &Value| {
        value.as_str().is_some_and(|aud| {
            let aud = aud.trim_end_matches('/');
            accepted.iter().any(|ok| ok.eq_ignore_ascii_case(aud))
        })
    };
    match aud {
        Some(Value::Array(values)) => values.iter().any(matches),
        Some(value) => matches(value),
        None => false,
    }
}

pub(crate) fn check_times(claims: &AssertionClaims, now: i64) -> Result<(), EntraError> {
    let Some(exp) = claims.exp.map(seconds) else {
        return Err(EntraError::invalid_assertion(
            "The client assertion has no 'exp' claim.",
        ));
    };
    let starts = claims.nbf.or(claims.iat).map(seconds);
    let out_of_range = |why: &str| {
        EntraError::assertion_out_of_time_range(&format!(
            "{why} Current time: {}, assertion valid from {}, expiry time of assertion {}.",
            display_time(now),
            starts.map_or_else(|| "(not given)".to_owned(), display_time),
            display_time(exp)
        ))
    };
    if exp + SKEW_SECONDS < now {
        return Err(out_of_range("The assertion has expired."));
    }
    if claims
        .nbf
        .map(seconds)
        .is_some_and(|nbf| nbf - SKEW_SECONDS > now)
    {
        return Err(out_of_range("The assertion is not valid yet."));
    }
    if exp - starts.unwrap_or(now) > MAX_LIFETIME_SECONDS {
        return Err(out_of_range(
            "The assertion's lifetime is longer than one hour.",
        ));
    }
    Ok(())
}

// JWT times may be fractional; whole seconds are enough here and the cast saturates.
#[allow(clippy::cast_possible_truncation)]
fn seconds(value: f64) -> i64 {
    value as i64
}

fn display_time(timestamp: i64) -> String {
    DateTime::<Utc>::from_timestamp(timestamp, 0).map_or_else(
        || timestamp.to_string(),
        |time| time.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(nbf: Option<f64>, exp: Option<f64>) -> AssertionClaims {
        AssertionClaims {
            aud: None,
            iss: None,
            sub: None,
            exp,
            nbf,
            iat: None,
        }
    }

    #[test]
    fn time_checks_allow_five_minutes_of_skew() {
        let now = 1_700_000_000;
        let at = |offset: i64| Some((now + offset) as f64);
        assert!(check_times(&claims(at(-60), at(540)), now).is_ok());
        assert!(check_times(&claims(at(-900), at(-200)), now).is_ok());
        assert!(check_times(&claims(at(200), at(800)), now).is_ok());
        let expired = check_times(&claims(at(-1200), at(-600)), now).unwrap_err();
        assert_eq!(expired.code, 700024);
        let early = check_times(&claims(at(600), at(900)), now).unwrap_err();
        assert_eq!(early.code, 700024);
        let too_long = check_times(&claims(at(0), at(7200)), now).unwrap_err();
        assert_eq!(too_long.code, 700024);
        let no_exp = check_times(&claims(at(0), None), now).unwrap_err();
        assert_eq!(no_exp.code, 700027);
    }

    #[test]
    fn audience_may_be_a_string_or_a_list() {
        let accepted = vec!["http://127.0.0.1:1/t/oauth2/v2.0/token".to_owned()];
        assert!(audience_matches(
            Some(&json!("http://127.0.0.1:1/T/oauth2/v2.0/token")),
            &accepted
        ));
        assert!(audience_matches(
            Some(&json!(["x", "http://127.0.0.1:1/t/oauth2/v2.0/token/"])),
            &accepted
        ));
        assert!(!audience_matches(
            Some(&json!("http://127.0.0.1:1/other/oauth2/v2.0/token")),
            &accepted
        ));
        assert!(!audience_matches(None, &accepted));
    }
}

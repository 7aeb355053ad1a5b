//! Reading the claims of an access token (the payload only: the signature is the API's
//! business, as with real Microsoft tokens).

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The decoded payload (claims) of a compact JWT.
pub fn claims(token: &str) -> Result<Value> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        bail!("not a compact JWT: {} parts", parts.len());
    }
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .context("JWT payload is not base64url")?;
    serde_json::from_slice(&payload).context("JWT payload is not JSON")
}

/// The `roles` claim as strings (empty when absent).
pub fn roles(claims: &Value) -> Vec<String> {
    claims["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .filter_map(|role| role.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

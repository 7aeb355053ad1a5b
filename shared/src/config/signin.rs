//! Interactive sign-in (delegated access): the callback registered on the app as a Web redirect
//! URI, how long a sign-in link lives, where refresh tokens are sealed, and whether they are kept.

use std::time::Duration;

use url::Url;

use super::env::{ConfigError, Env};

pub const ENV_SIGNIN_REDIRECT_URI: &str = "DP_SIGNIN_REDIRECT_URI";
pub const ENV_SIGNIN_STATE_TTL_SECONDS: &str = "DP_SIGNIN_STATE_TTL_SECONDS";
pub const ENV_SIGNIN_KMS_KEY_ID: &str = "DP_SIGNIN_KMS_KEY_ID";
pub const ENV_SIGNIN_KEEP_REFRESH_TOKENS: &str = "DP_SIGNIN_KEEP_REFRESH_TOKENS";
/// `mint-token` may mint for a stored sign-in (only the function deployed for that).
pub const ENV_MINT_FROM_SIGNIN: &str = "DP_MINT_FROM_SIGNIN";

#[derive(Debug, Clone)]
pub struct SignInSettings {
    pub redirect_uri: Option<Url>,
    pub state_ttl: Duration,
    /// KMS key that seals refresh tokens; without one they are sealed with a key derived from
    /// the state signing key (the embedded default).
    pub kms_key_id: Option<String>,
    /// Keep the refresh token of a sign-in that granted `offline_access`.
    pub keep_refresh_tokens: bool,
    pub mint_from_signin: bool,
}

pub(super) fn read(env: &Env) -> Result<SignInSettings, ConfigError> {
    Ok(SignInSettings {
        redirect_uri: env.redirect_uri(ENV_SIGNIN_REDIRECT_URI)?,
        state_ttl: env.seconds(ENV_SIGNIN_STATE_TTL_SECONDS, 600, 60..=3600)?,
        kms_key_id: env.trimmed(ENV_SIGNIN_KMS_KEY_ID),
        keep_refresh_tokens: env.flag(ENV_SIGNIN_KEEP_REFRESH_TOKENS, true)?,
        mint_from_signin: env.flag(ENV_MINT_FROM_SIGNIN, false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let defaults = with(&[], |env| read(&env)).unwrap();
        assert_eq!(defaults.redirect_uri, None);
        assert_eq!(defaults.state_ttl, Duration::from_secs(600));
        assert!(defaults.keep_refresh_tokens);
        assert!(!defaults.mint_from_signin);
        for (variable, value) in [
            (ENV_SIGNIN_REDIRECT_URI, "http://partner.example.com/signin"),
            (ENV_SIGNIN_STATE_TTL_SECONDS, "10"),
            (ENV_MINT_FROM_SIGNIN, "sometimes"),
        ] {
            let error = with(&[(variable, value)], |env| read(&env)).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }
}

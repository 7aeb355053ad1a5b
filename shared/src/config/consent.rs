//! Onboarding: the consent link (its kind, the APIs it asks for, how long it lives), the
//! callback Microsoft redirects to, how long the proof may wait for the consent to propagate,
//! and where the key that signs `state`s comes from.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::env::{ConfigError, Env};
use crate::api::DefenderApi;
use crate::consent::LinkKind;

pub const ENV_CONSENT_REDIRECT_URI: &str = "DP_CONSENT_REDIRECT_URI";
pub const ENV_CONSENT_LINK: &str = "DP_CONSENT_LINK";
pub const ENV_CONSENT_APIS: &str = "DP_CONSENT_APIS";
pub const ENV_CONSENT_STATE_TTL_SECONDS: &str = "DP_CONSENT_STATE_TTL_SECONDS";
pub const ENV_CONSENT_PROOF_SECONDS: &str = "DP_CONSENT_PROOF_SECONDS";
pub const ENV_STATE_KEY_SECRET_ID: &str = "DP_STATE_KEY_SECRET_ID";
pub const ENV_STATE_KEY: &str = "DP_STATE_KEY";
pub const ENV_STATE_KEY_FILE: &str = "DP_STATE_KEY_FILE";

pub const DEFAULT_STATE_KEY_FILE: &str = ".local/state-key";

/// Where the key that signs consent `state`s comes from.
#[derive(Debug, Clone)]
pub enum StateKeyLocation {
    SecretsManager {
        secret_id: String,
    },
    /// Local only: the key material given inline.
    Inline(SecretString),
    /// Local only: a file; created with a random key if absent.
    File(PathBuf),
}

impl StateKeyLocation {
    /// Whether reading the key needs the AWS configuration.
    pub fn needs_aws(&self) -> bool {
        matches!(self, StateKeyLocation::SecretsManager { .. })
    }
}

/// Onboarding settings. The redirect URI is needed only by what builds links or handles the
/// callback, so its absence is reported there, not at every function's start.
#[derive(Debug, Clone)]
pub struct ConsentSettings {
    pub redirect_uri: Option<Url>,
    pub link: LinkKind,
    /// The APIs a consent asks for (v2 link) and must prove.
    pub apis: Vec<DefenderApi>,
    pub state_ttl: Duration,
    /// How long a callback keeps retrying the proof while consent propagates.
    pub proof_window: Duration,
    pub state_key: StateKeyLocation,
}

pub(super) fn read(env: &Env) -> Result<ConsentSettings, ConfigError> {
    Ok(ConsentSettings {
        redirect_uri: env.redirect_uri(ENV_CONSENT_REDIRECT_URI)?,
        link: env.parse_or(ENV_CONSENT_LINK, LinkKind::V2)?,
        apis: match env.get(ENV_CONSENT_APIS) {
            Some(text) => parse_apis(&text)?,
            None => vec![DefenderApi::Graph],
        },
        state_ttl: env.seconds(ENV_CONSENT_STATE_TTL_SECONDS, 3600, 60..=7 * 86_400)?,
        proof_window: env.seconds(ENV_CONSENT_PROOF_SECONDS, 20, 0..=25)?,
        state_key: state_key(env)?,
    })
}

fn state_key(env: &Env) -> Result<StateKeyLocation, ConfigError> {
    match env.one_of(&[ENV_STATE_KEY_SECRET_ID, ENV_STATE_KEY, ENV_STATE_KEY_FILE])? {
        Some((ENV_STATE_KEY_SECRET_ID, secret_id)) => {
            Ok(StateKeyLocation::SecretsManager { secret_id })
        }
        Some((ENV_STATE_KEY, key)) if key.len() < 32 => Err(ConfigError::new(
            ENV_STATE_KEY,
            "must be at least 32 characters of random text",
        )),
        Some((ENV_STATE_KEY, key)) => Ok(StateKeyLocation::Inline(SecretString::from(key))),
        Some((_, path)) => Ok(StateKeyLocation::File(PathBuf::from(path))),
        None => Ok(StateKeyLocation::File(PathBuf::from(
            DEFAULT_STATE_KEY_FILE,
        ))),
    }
}

/// A `DP_CONSENT_APIS` value: comma-separated API names, repeats dropped, at least one.
fn parse_apis(text: &str) -> Result<Vec<DefenderApi>, ConfigError> {
    let mut apis = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let api: DefenderApi = name.parse().map_err(|error: crate::api::UnknownApi| {
            ConfigError::new(ENV_CONSENT_APIS, error.to_string())
        })?;
        if !apis.contains(&api) {
            apis.push(api);
        }
    }
    if apis.is_empty() {
        return Err(ConfigError::new(
            ENV_CONSENT_APIS,
            "names no API: use m365d, mde, graph (comma-separated)",
        ));
    }
    Ok(apis)
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    fn consent(pairs: &[(&str, &str)]) -> Result<ConsentSettings, ConfigError> {
        with(pairs, |env| read(&env))
    }

    #[test]
    fn consent_settings_default_and_parse() {
        let defaults = consent(&[]).unwrap();
        assert_eq!(defaults.redirect_uri, None);
        assert_eq!(defaults.link, LinkKind::V2);
        assert_eq!(defaults.apis, vec![DefenderApi::Graph]);
        assert_eq!(defaults.proof_window, Duration::from_secs(20));
        assert!(matches!(defaults.state_key, StateKeyLocation::File(_)));
        let chosen = consent(&[
            (
                ENV_CONSENT_REDIRECT_URI,
                "https://abc.execute-api.eu-west-1.amazonaws.com/consent/callback",
            ),
            (ENV_CONSENT_LINK, "legacy"),
            (ENV_CONSENT_APIS, "mde, graph, mde"),
            (ENV_STATE_KEY_SECRET_ID, "state-key"),
        ])
        .unwrap();
        assert_eq!(chosen.link, LinkKind::Legacy);
        assert_eq!(chosen.apis, vec![DefenderApi::Mde, DefenderApi::Graph]);
        assert!(chosen.state_key.needs_aws());
    }

    #[test]
    fn the_state_key_comes_from_one_place_and_is_long_enough() {
        let inline = consent(&[(ENV_STATE_KEY, &"k".repeat(32))]).unwrap();
        assert!(matches!(inline.state_key, StateKeyLocation::Inline(_)));
        let error = consent(&[(ENV_STATE_KEY, "short")]).unwrap_err();
        assert_eq!(error.variable, ENV_STATE_KEY);
        let error =
            consent(&[(ENV_STATE_KEY, "short"), (ENV_STATE_KEY_FILE, "/tmp/key")]).unwrap_err();
        assert_eq!(error.variable, ENV_STATE_KEY_SECRET_ID);
    }
}

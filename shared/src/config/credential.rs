//! How the app proves itself to Entra ID: where its credential (client id + secret or
//! certificate) is read from, or, secretless, the AWS token asked for in its place.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::env::{ConfigError, Env};

pub const ENV_CREDENTIAL_SECRET_ID: &str = "DP_CREDENTIAL_SECRET_ID";
pub const ENV_CREDENTIAL_JSON: &str = "DP_CREDENTIAL_JSON";
pub const ENV_CREDENTIAL_FILE: &str = "DP_CREDENTIAL_FILE";
pub const ENV_CREDENTIAL_CACHE_SECONDS: &str = "DP_CREDENTIAL_CACHE_SECONDS";
/// `aws_federated` makes the function's AWS identity the app credential (no secret is read);
/// `client_secret` or `certificate` (the default) read the credential JSON from its location.
pub const ENV_CREDENTIAL_MODE: &str = "DP_CREDENTIAL_MODE";
/// The app's client id, for `DP_CREDENTIAL_MODE=aws_federated`.
pub const ENV_CLIENT_ID: &str = "DP_CLIENT_ID";
/// The audience of the AWS token: one of the FIC's audiences.
pub const ENV_FEDERATION_AUDIENCE: &str = "DP_FEDERATION_AUDIENCE";
/// The lifetime of the AWS token asked from STS.
pub const ENV_FEDERATION_DURATION_SECONDS: &str = "DP_FEDERATION_DURATION_SECONDS";

/// Where a stored credential may be, in the order `set only one of` names them.
const STORED: [&str; 3] = [
    ENV_CREDENTIAL_SECRET_ID,
    ENV_CREDENTIAL_JSON,
    ENV_CREDENTIAL_FILE,
];

/// Where the app credential (client id + secret or certificate) comes from.
#[derive(Debug, Clone)]
pub enum CredentialLocation {
    SecretsManager {
        secret_id: String,
    },
    /// Local only: the credential JSON given inline.
    Inline(SecretString),
    /// Local only: a file holding the credential JSON.
    File(PathBuf),
    /// Secretless: no credential is stored anywhere; the function's AWS identity is the proof.
    AwsFederated {
        client_id: String,
    },
}

impl CredentialLocation {
    /// Whether reading the credential needs the AWS configuration.
    pub fn needs_aws(&self) -> bool {
        matches!(
            self,
            CredentialLocation::SecretsManager { .. } | CredentialLocation::AwsFederated { .. }
        )
    }
}

/// What the AWS token for an `aws_federated` credential is asked for with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationSettings {
    pub audience: String,
    pub duration: Duration,
}

impl FederationSettings {
    pub fn token_request(&self) -> crate::entra::federated::WebIdentityTokenRequest {
        crate::entra::federated::WebIdentityTokenRequest {
            audience: self.audience.clone(),
            duration: self.duration,
        }
    }
}

/// How the app proves itself, as the settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialMode {
    /// A client secret or certificate in the credential JSON, wherever that is stored.
    Stored,
    AwsFederated,
}

pub(super) fn location(env: &Env) -> Result<CredentialLocation, ConfigError> {
    match mode(env)? {
        CredentialMode::AwsFederated => federated_location(env),
        CredentialMode::Stored => stored_location(env),
    }
}

/// How long the credential read from its location is kept before it is read again.
pub(super) fn cache_ttl(env: &Env) -> Result<Duration, ConfigError> {
    env.seconds(ENV_CREDENTIAL_CACHE_SECONDS, 300, 0..=86_400)
}

fn mode(env: &Env) -> Result<CredentialMode, ConfigError> {
    match env
        .get(ENV_CREDENTIAL_MODE)
        .map(|text| text.trim().to_ascii_lowercase().replace('-', "_"))
        .as_deref()
    {
        None | Some("client_secret" | "certificate" | "stored") => Ok(CredentialMode::Stored),
        Some("aws_federated") => Ok(CredentialMode::AwsFederated),
        Some(other) => Err(ConfigError::new(
            ENV_CREDENTIAL_MODE,
            format!("unknown mode {other:?}: use client_secret, certificate or aws_federated"),
        )),
    }
}

fn stored_location(env: &Env) -> Result<CredentialLocation, ConfigError> {
    match env.one_of(&STORED)? {
        Some((ENV_CREDENTIAL_SECRET_ID, secret_id)) => {
            Ok(CredentialLocation::SecretsManager { secret_id })
        }
        Some((ENV_CREDENTIAL_JSON, json)) => {
            Ok(CredentialLocation::Inline(SecretString::from(json)))
        }
        Some((_, path)) => Ok(CredentialLocation::File(PathBuf::from(path))),
        None => Err(ConfigError::new(
            ENV_CREDENTIAL_SECRET_ID,
            format!(
                "no app credential configured: set {ENV_CREDENTIAL_SECRET_ID} (Secrets Manager), \
                     or locally {ENV_CREDENTIAL_JSON} or {ENV_CREDENTIAL_FILE}"
            ),
        )),
    }
}

/// Secretless: only the client id, and no stored credential besides (which one would win
/// would be a guess).
fn federated_location(env: &Env) -> Result<CredentialLocation, ConfigError> {
    if let Some(stored) = STORED.into_iter().find(|stored| env.is_set(stored)) {
        return Err(ConfigError::new(
            stored,
            format!(
                "must not be set with {ENV_CREDENTIAL_MODE}=aws_federated: no stored credential is used"
            ),
        ));
    }
    let client_id = env.get(ENV_CLIENT_ID).ok_or_else(|| {
        ConfigError::new(
            ENV_CLIENT_ID,
            format!("is required with {ENV_CREDENTIAL_MODE}=aws_federated: the app registration's Application (client) ID"),
        )
    })?;
    let client_id = crate::tenant_id::TenantId::parse(client_id.trim()).map_err(|_| {
        ConfigError::new(
            ENV_CLIENT_ID,
            "is not a GUID: use the app registration's Application (client) ID",
        )
    })?;
    Ok(CredentialLocation::AwsFederated {
        client_id: client_id.to_string(),
    })
}

pub(super) fn federation(env: &Env) -> Result<FederationSettings, ConfigError> {
    use crate::entra::federated::{
        DEFAULT_AUDIENCE, DEFAULT_DURATION_SECONDS, MAX_DURATION_SECONDS, MIN_DURATION_SECONDS,
    };
    let audience = env
        .trimmed(ENV_FEDERATION_AUDIENCE)
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
    if audience.len() > 1000
        || audience
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::new(
            ENV_FEDERATION_AUDIENCE,
            "must be one audience value without spaces (e.g. api://AzureADTokenExchange)",
        ));
    }
    Ok(FederationSettings {
        audience,
        duration: env.seconds(
            ENV_FEDERATION_DURATION_SECONDS,
            DEFAULT_DURATION_SECONDS,
            MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    const APP_ID: &str = "11111111-1111-4111-8111-111111111111";

    fn location_of(pairs: &[(&str, &str)]) -> Result<CredentialLocation, ConfigError> {
        with(pairs, |env| location(&env))
    }

    #[test]
    fn a_stored_credential_is_read_from_exactly_one_place() {
        assert!(matches!(
            location_of(&[(ENV_CREDENTIAL_SECRET_ID, "app-cred")]).unwrap(),
            CredentialLocation::SecretsManager { ref secret_id } if secret_id == "app-cred"
        ));
        assert!(matches!(
            location_of(&[(ENV_CREDENTIAL_FILE, "/tmp/cred.json")]).unwrap(),
            CredentialLocation::File(_)
        ));
        let error = location_of(&[]).unwrap_err();
        assert_eq!(error.variable, ENV_CREDENTIAL_SECRET_ID);
        assert!(error.problem.contains(ENV_CREDENTIAL_JSON));
        let error = location_of(&[(ENV_CREDENTIAL_SECRET_ID, "x"), (ENV_CREDENTIAL_JSON, "{}")])
            .unwrap_err();
        assert!(error.problem.contains("only one"));
    }

    #[test]
    fn aws_federated_mode_needs_only_the_client_id() {
        let location = location_of(&[
            (ENV_CREDENTIAL_MODE, "aws_federated"),
            (ENV_CLIENT_ID, APP_ID),
        ])
        .unwrap();
        assert!(matches!(
            location,
            CredentialLocation::AwsFederated { ref client_id } if client_id == APP_ID
        ));
        assert!(location.needs_aws());
        let federation = with(&[], |env| federation(&env)).unwrap();
        assert_eq!(federation.audience, "api://AzureADTokenExchange");
        assert_eq!(federation.duration, Duration::from_secs(300));
        let request = federation.token_request();
        assert_eq!(request.audience, "api://AzureADTokenExchange");
    }

    #[test]
    fn aws_federated_mode_refuses_a_stored_credential_and_a_bad_client_id() {
        let error = location_of(&[(ENV_CREDENTIAL_MODE, "aws_federated")]).unwrap_err();
        assert_eq!(error.variable, ENV_CLIENT_ID);
        let error = location_of(&[
            (ENV_CREDENTIAL_MODE, "aws_federated"),
            (ENV_CLIENT_ID, "my-app"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, ENV_CLIENT_ID);
        let error = location_of(&[
            (ENV_CREDENTIAL_MODE, "aws_federated"),
            (ENV_CLIENT_ID, APP_ID),
            (ENV_CREDENTIAL_SECRET_ID, "app-cred"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, ENV_CREDENTIAL_SECRET_ID);
        let error = location_of(&[(ENV_CREDENTIAL_MODE, "kerberos")]).unwrap_err();
        assert_eq!(error.variable, ENV_CREDENTIAL_MODE);
    }

    #[test]
    fn stored_modes_read_the_credential_json_as_before() {
        for mode in ["client_secret", "certificate", "Client-Secret"] {
            let location = location_of(&[
                (ENV_CREDENTIAL_MODE, mode),
                (ENV_CREDENTIAL_SECRET_ID, "app-cred"),
            ])
            .unwrap();
            assert!(matches!(
                location,
                CredentialLocation::SecretsManager { .. }
            ));
        }
    }

    #[test]
    fn federation_audience_and_duration_are_validated() {
        let custom = with(
            &[
                (ENV_FEDERATION_AUDIENCE, "api://AzureADTokenExchangeUSGov"),
                (ENV_FEDERATION_DURATION_SECONDS, "900"),
            ],
            |env| federation(&env),
        )
        .unwrap();
        assert_eq!(custom.audience, "api://AzureADTokenExchangeUSGov");
        assert_eq!(custom.duration, Duration::from_secs(900));
        for (variable, value) in [
            (ENV_FEDERATION_DURATION_SECONDS, "59"),
            (ENV_FEDERATION_DURATION_SECONDS, "3601"),
            (ENV_FEDERATION_DURATION_SECONDS, "five minutes"),
            (ENV_FEDERATION_AUDIENCE, "two audiences"),
        ] {
            let error = with(&[(variable, value)], |env| federation(&env)).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }
}

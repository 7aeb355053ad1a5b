//! Every setting, read and validated once at start. A bad or missing value is reported with the
//! variable's name, so a misconfigured deployment fails on its first cold start, loudly.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::api::DefenderApi;
use crate::cloud::{Cloud, CloudEndpoints};
use crate::consent::LinkKind;
use crate::entra::roles::RoleRequirement;
use crate::telemetry::LogFormat;

pub const ENV_CLOUD: &str = "DP_CLOUD";
pub const ENV_AUTHORITY_HOST: &str = "DP_AUTHORITY_HOST";
pub const ENV_API_BASE_PREFIX: &str = "DP_API_BASE_";
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
pub const ENV_TABLE_NAME: &str = "DP_TABLE_NAME";
pub const ENV_SQLITE_PATH: &str = "DP_SQLITE_PATH";
pub const ENV_TOKEN_ENDPOINT: &str = "DP_TOKEN_ENDPOINT";
pub const ENV_TOKEN_REFRESH_AHEAD_SECONDS: &str = "DP_TOKEN_REFRESH_AHEAD_SECONDS";
pub const ENV_TOKEN_DEADLINE_SECONDS: &str = "DP_TOKEN_DEADLINE_SECONDS";
pub const ENV_HTTP_TIMEOUT_SECONDS: &str = "DP_HTTP_TIMEOUT_SECONDS";
pub const ENV_REQUIRED_ROLES_PREFIX: &str = "DP_REQUIRED_ROLES_";
/// Delegated scopes (`scp`) a user's token must carry, per API (`DP_REQUIRED_SCOPES_M365D`, ...).
pub const ENV_REQUIRED_SCOPES_PREFIX: &str = "DP_REQUIRED_SCOPES_";
pub const ENV_LOG_FORMAT: &str = "DP_LOG_FORMAT";
pub const ENV_CONSENT_REDIRECT_URI: &str = "DP_CONSENT_REDIRECT_URI";
pub const ENV_CONSENT_LINK: &str = "DP_CONSENT_LINK";
pub const ENV_CONSENT_APIS: &str = "DP_CONSENT_APIS";
pub const ENV_CONSENT_STATE_TTL_SECONDS: &str = "DP_CONSENT_STATE_TTL_SECONDS";
pub const ENV_CONSENT_PROOF_SECONDS: &str = "DP_CONSENT_PROOF_SECONDS";
pub const ENV_STATE_KEY_SECRET_ID: &str = "DP_STATE_KEY_SECRET_ID";
pub const ENV_STATE_KEY: &str = "DP_STATE_KEY";
pub const ENV_STATE_KEY_FILE: &str = "DP_STATE_KEY_FILE";

/// Interactive sign-in (delegated access): the callback registered on the app as a Web redirect
/// URI, how long a sign-in link lives, where refresh tokens are sealed, and whether they are kept.
pub const ENV_SIGNIN_REDIRECT_URI: &str = "DP_SIGNIN_REDIRECT_URI";
pub const ENV_SIGNIN_STATE_TTL_SECONDS: &str = "DP_SIGNIN_STATE_TTL_SECONDS";
pub const ENV_SIGNIN_KMS_KEY_ID: &str = "DP_SIGNIN_KMS_KEY_ID";
pub const ENV_SIGNIN_KEEP_REFRESH_TOKENS: &str = "DP_SIGNIN_KEEP_REFRESH_TOKENS";
/// `mint-token` may mint for a stored sign-in (only the function deployed for that).
pub const ENV_MINT_FROM_SIGNIN: &str = "DP_MINT_FROM_SIGNIN";

pub const DEFAULT_STATE_KEY_FILE: &str = ".local/state-key";

pub const DEFAULT_SQLITE_PATH: &str = ".local/defender-partner.sqlite";

/// `true`/`false` (also `1`/`0`, `yes`/`no`), `default` when unset.
fn flag(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(variable).map(|text| text.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(text) => match text.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError::new(variable, "must be true or false")),
        },
    }
}

/// A setting that is missing or invalid, named so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// Which token endpoint of Entra ID to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenEndpointVersion {
    /// `/oauth2/v2.0/token` with `scope={resource}/.default` (the default).
    V2,
    /// `/oauth2/token` with `resource={resource}`.
    V1,
}

impl FromStr for TokenEndpointVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v2" | "2" | "v2.0" => Ok(TokenEndpointVersion::V2),
            "v1" | "1" | "v1.0" => Ok(TokenEndpointVersion::V1),
            other => Err(format!("unknown token endpoint {other:?}: use v2 or v1")),
        }
    }
}

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

/// Where the tenant registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    DynamoDb { table: String },
    Sqlite { path: PathBuf },
}

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

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub endpoint_version: TokenEndpointVersion,
    /// A cached token is replaced once it has less than this left.
    pub refresh_ahead: Duration,
    /// The most one token request may take, retries and throttling waits included.
    pub deadline: Duration,
    /// The most one HTTP exchange may take.
    pub http_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: CloudEndpoints,
    pub credential: CredentialLocation,
    pub credential_cache_ttl: Duration,
    pub federation: FederationSettings,
    pub store: StoreLocation,
    pub token: TokenSettings,
    required_roles: [RoleRequirement; 3],
    /// Whether each API's requirement was set (`DP_REQUIRED_ROLES_*`) rather than derived.
    required_roles_explicit: [bool; 3],
    required_scopes: [RoleRequirement; 3],
    pub consent: ConsentSettings,
    pub signin: SignInSettings,
    pub log_format: LogFormat,
}

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

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let cloud: Cloud = parse_or(&get, ENV_CLOUD, Cloud::Public)?;
        let mut endpoints = CloudEndpoints::for_cloud(cloud);
        if let Some(authority) = get(ENV_AUTHORITY_HOST) {
            endpoints = endpoints.with_authority(parse_url(ENV_AUTHORITY_HOST, &authority)?);
        }
        for api in DefenderApi::ALL {
            let variable = format!("{ENV_API_BASE_PREFIX}{}", api.env_suffix());
            if let Some(base) = get(&variable) {
                endpoints = endpoints.with_api_base(api, parse_url(&variable, &base)?);
            }
        }

        let credential = match credential_mode(&get)? {
            CredentialMode::AwsFederated => federated_location(&get)?,
            CredentialMode::Stored => stored_location(&get)?,
        };
        let federation = federation_settings(&get)?;

        let in_lambda = lookup("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let store = match get(ENV_TABLE_NAME) {
            Some(table) => StoreLocation::DynamoDb { table },
            // Lambda's file system is read-only and per instance: an implicit SQLite file there
            // would be a registry nobody else sees.
            None if in_lambda && get(ENV_SQLITE_PATH).is_none() => {
                return Err(ConfigError::new(
                    ENV_TABLE_NAME,
                    format!(
                        "is required in Lambda (set {ENV_SQLITE_PATH} to use an embedded registry on purpose)"
                    ),
                ));
            }
            None => StoreLocation::Sqlite {
                path: PathBuf::from(
                    get(ENV_SQLITE_PATH).unwrap_or_else(|| DEFAULT_SQLITE_PATH.to_owned()),
                ),
            },
        };

        let token = TokenSettings {
            endpoint_version: parse_or(&get, ENV_TOKEN_ENDPOINT, TokenEndpointVersion::V2)?,
            refresh_ahead: seconds(&get, ENV_TOKEN_REFRESH_AHEAD_SECONDS, 300, 0..=1800)?,
            deadline: seconds(&get, ENV_TOKEN_DEADLINE_SECONDS, 20, 1..=900)?,
            http_timeout: seconds(&get, ENV_HTTP_TIMEOUT_SECONDS, 10, 1..=300)?,
        };

        // Unset, an API's requirement follows the configured sources (Graph: the roles of
        // incidents or of alerts_v2); an explicit setting wins.
        let sources = crate::fetch::settings::sources_from_lookup(get)?;
        let required_roles_explicit = DefenderApi::ALL
            .map(|api| get(&format!("{ENV_REQUIRED_ROLES_PREFIX}{}", api.env_suffix())).is_some());
        let required_roles = DefenderApi::ALL.map(|api| {
            let variable = format!("{ENV_REQUIRED_ROLES_PREFIX}{}", api.env_suffix());
            match get(&variable) {
                Some(text) => RoleRequirement::parse(&text)
                    .map_err(|problem| ConfigError::new(variable, problem)),
                None => Ok(RoleRequirement::for_sources(api, &sources)),
            }
        });
        let [m365d, mde, graph] = required_roles;
        let required_scopes = DefenderApi::ALL.map(|api| {
            let variable = format!("{ENV_REQUIRED_SCOPES_PREFIX}{}", api.env_suffix());
            match get(&variable) {
                Some(text) => RoleRequirement::parse(&text)
                    .map_err(|problem| ConfigError::new(variable, problem)),
                None => Ok(RoleRequirement::default_scopes_for(api)),
            }
        });
        let [scopes_m365d, scopes_mde, scopes_graph] = required_scopes;

        let log_format = match get(ENV_LOG_FORMAT) {
            Some(text) => text
                .parse()
                .map_err(|problem: String| ConfigError::new(ENV_LOG_FORMAT, problem))?,
            None if in_lambda => LogFormat::Json,
            None => LogFormat::Text,
        };

        let consent = ConsentSettings {
            redirect_uri: get(ENV_CONSENT_REDIRECT_URI)
                .map(|text| parse_redirect_uri(&text))
                .transpose()?,
            link: match get(ENV_CONSENT_LINK) {
                Some(text) => text
                    .parse()
                    .map_err(|problem: String| ConfigError::new(ENV_CONSENT_LINK, problem))?,
                None => LinkKind::V2,
            },
            apis: match get(ENV_CONSENT_APIS) {
                Some(text) => parse_apis(&text)?,
                None => vec![DefenderApi::Graph],
            },
            state_ttl: seconds(&get, ENV_CONSENT_STATE_TTL_SECONDS, 3600, 60..=7 * 86_400)?,
            proof_window: seconds(&get, ENV_CONSENT_PROOF_SECONDS, 20, 0..=25)?,
            state_key: match (
                get(ENV_STATE_KEY_SECRET_ID),
                get(ENV_STATE_KEY),
                get(ENV_STATE_KEY_FILE),
            ) {
                (Some(secret_id), None, None) => StateKeyLocation::SecretsManager { secret_id },
                (None, Some(key), None) => {
                    if key.len() < 32 {
                        return Err(ConfigError::new(
                            ENV_STATE_KEY,
                            "must be at least 32 characters of random text",
                        ));
                    }
                    StateKeyLocation::Inline(SecretString::from(key))
                }
                (None, None, Some(path)) => StateKeyLocation::File(PathBuf::from(path)),
                (None, None, None) => StateKeyLocation::File(PathBuf::from(DEFAULT_STATE_KEY_FILE)),
                _ => {
                    return Err(ConfigError::new(
                        ENV_STATE_KEY_SECRET_ID,
                        format!(
                            "set only one of {ENV_STATE_KEY_SECRET_ID}, {ENV_STATE_KEY}, {ENV_STATE_KEY_FILE}"
                        ),
                    ));
                }
            },
        };

        let signin = SignInSettings {
            redirect_uri: get(ENV_SIGNIN_REDIRECT_URI)
                .map(|text| parse_redirect_uri(&text))
                .transpose()
                .map_err(|error| ConfigError::new(ENV_SIGNIN_REDIRECT_URI, error.problem))?,
            state_ttl: seconds(&get, ENV_SIGNIN_STATE_TTL_SECONDS, 600, 60..=3600)?,
            kms_key_id: get(ENV_SIGNIN_KMS_KEY_ID).map(|text| text.trim().to_owned()),
            keep_refresh_tokens: flag(&get, ENV_SIGNIN_KEEP_REFRESH_TOKENS, true)?,
            mint_from_signin: flag(&get, ENV_MINT_FROM_SIGNIN, false)?,
        };

        Ok(Settings {
            endpoints,
            credential,
            credential_cache_ttl: seconds(&get, ENV_CREDENTIAL_CACHE_SECONDS, 300, 0..=86_400)?,
            federation,
            store,
            token,
            required_roles: [m365d?, mde?, graph?],
            required_roles_explicit,
            required_scopes: [scopes_m365d?, scopes_mde?, scopes_graph?],
            consent,
            signin,
            log_format,
        })
    }

    /// The roles a token for `api` must carry.
    pub fn required_roles(&self, api: DefenderApi) -> &RoleRequirement {
        &self.required_roles[DefenderApi::ALL
            .iter()
            .position(|candidate| *candidate == api)
            .expect("every API is listed")]
    }

    /// The roles a tenant must have granted for `source` to be fetched: the source's own roles,
    /// unless `DP_REQUIRED_ROLES_*` sets its API's requirement, which then applies to every
    /// source of that API.
    pub fn source_roles(&self, source: crate::defender::Source) -> RoleRequirement {
        let api = crate::defender::spec(source).api;
        let index = DefenderApi::ALL
            .iter()
            .position(|candidate| *candidate == api)
            .expect("every API is listed");
        if self.required_roles_explicit[index] {
            self.required_roles[index].clone()
        } else {
            RoleRequirement::default_for_source(source)
        }
    }
}

impl Settings {
    /// The delegated scopes a user's (on-behalf-of) token for `api` must carry.
    pub fn required_scopes(&self, api: DefenderApi) -> &RoleRequirement {
        &self.required_scopes[DefenderApi::ALL
            .iter()
            .position(|candidate| *candidate == api)
            .expect("every API is listed")]
    }
}

/// How the app proves itself, as the settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialMode {
    /// A client secret or certificate in the credential JSON, wherever that is stored.
    Stored,
    AwsFederated,
}

fn credential_mode(get: &impl Fn(&str) -> Option<String>) -> Result<CredentialMode, ConfigError> {
    match get(ENV_CREDENTIAL_MODE)
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

fn stored_location(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<CredentialLocation, ConfigError> {
    match (
        get(ENV_CREDENTIAL_SECRET_ID),
        get(ENV_CREDENTIAL_JSON),
        get(ENV_CREDENTIAL_FILE),
    ) {
        (Some(secret_id), None, None) => Ok(CredentialLocation::SecretsManager { secret_id }),
        (None, Some(json), None) => Ok(CredentialLocation::Inline(SecretString::from(json))),
        (None, None, Some(path)) => Ok(CredentialLocation::File(PathBuf::from(path))),
        (None, None, None) => Err(ConfigError::new(
            ENV_CREDENTIAL_SECRET_ID,
            format!(
                "no app credential configured: set {ENV_CREDENTIAL_SECRET_ID} (Secrets Manager), \
                     or locally {ENV_CREDENTIAL_JSON} or {ENV_CREDENTIAL_FILE}"
            ),
        )),
        _ => Err(ConfigError::new(
            ENV_CREDENTIAL_SECRET_ID,
            format!(
                "set only one of {ENV_CREDENTIAL_SECRET_ID}, {ENV_CREDENTIAL_JSON}, {ENV_CREDENTIAL_FILE}"
            ),
        )),
    }
}

/// Secretless: only the client id, and no stored credential besides (which one would win
/// would be a guess).
fn federated_location(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<CredentialLocation, ConfigError> {
    for stored in [
        ENV_CREDENTIAL_SECRET_ID,
        ENV_CREDENTIAL_JSON,
        ENV_CREDENTIAL_FILE,
    ] {
        if get(stored).is_some() {
            return Err(ConfigError::new(
                stored,
                format!(
                    "must not be set with {ENV_CREDENTIAL_MODE}=aws_federated: no stored credential is used"
                ),
            ));
        }
    }
    let client_id = get(ENV_CLIENT_ID).ok_or_else(|| {
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

fn federation_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<FederationSettings, ConfigError> {
    use crate::entra::federated::{
        DEFAULT_AUDIENCE, DEFAULT_DURATION_SECONDS, MAX_DURATION_SECONDS, MIN_DURATION_SECONDS,
    };
    let audience = get(ENV_FEDERATION_AUDIENCE)
        .map(|text| text.trim().to_owned())
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
        duration: seconds(
            get,
            ENV_FEDERATION_DURATION_SECONDS,
            DEFAULT_DURATION_SECONDS,
            MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS,
        )?,
    })
}

fn parse_or<T: FromStr<Err = String>>(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: T,
) -> Result<T, ConfigError> {
    match get(variable) {
        Some(text) => text
            .parse()
            .map_err(|problem: String| ConfigError::new(variable, problem)),
        None => Ok(default),
    }
}

fn parse_url(variable: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim())
        .map_err(|error| ConfigError::new(variable, format!("not a URL ({error})")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::new(variable, "must be an http(s) URL"));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(ConfigError::new(
            variable,
            "plain http is allowed only for loopback (a local emulator); use https",
        ));
    }
    Ok(url)
}

/// Microsoft's rules for redirect URIs: https (http only for loopback), at most 256 characters,
/// none of `! $ ' ( ) , ;`.
fn parse_redirect_uri(text: &str) -> Result<Url, ConfigError> {
    let url = parse_url(ENV_CONSENT_REDIRECT_URI, text)?;
    if url.as_str().len() > 256 {
        return Err(ConfigError::new(
            ENV_CONSENT_REDIRECT_URI,
            "is longer than Entra's 256 characters",
        ));
    }
    if url.as_str().chars().any(|c| "!$'(),;".contains(c)) {
        return Err(ConfigError::new(
            ENV_CONSENT_REDIRECT_URI,
            "contains a character Entra refuses (! $ ' ( ) , ;)",
        ));
    }
    Ok(url)
}

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

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    variable: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let value = match get(variable) {
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            ConfigError::new(
                variable,
                format!("{text:?} is not a whole number of seconds"),
            )
        })?,
        None => default,
    };
    if !range.contains(&value) {
        return Err(ConfigError::new(
            variable,
            format!(
                "{value} is out of range ({}..={} seconds)",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(Duration::from_secs(value))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_with_a_secret_id() {
        let settings = settings(&[(ENV_CREDENTIAL_SECRET_ID, "app-cred")]).unwrap();
        assert_eq!(settings.endpoints.cloud, Cloud::Public);
        assert_eq!(settings.token.endpoint_version, TokenEndpointVersion::V2);
        assert_eq!(settings.token.refresh_ahead, Duration::from_secs(300));
        assert_eq!(
            settings.store,
            StoreLocation::Sqlite {
                path: PathBuf::from(DEFAULT_SQLITE_PATH)
            }
        );
        assert!(matches!(
            settings.credential,
            CredentialLocation::SecretsManager { ref secret_id } if secret_id == "app-cred"
        ));
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn lambda_defaults_to_json_logs_and_table() {
        let settings = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            (ENV_TABLE_NAME, "registry"),
            ("AWS_LAMBDA_FUNCTION_NAME", "mint-token"),
        ])
        .unwrap();
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(
            settings.store,
            StoreLocation::DynamoDb {
                table: "registry".into()
            }
        );
    }

    #[test]
    fn lambda_needs_a_table_unless_sqlite_is_chosen() {
        let error = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            ("AWS_LAMBDA_FUNCTION_NAME", "mint-token"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, ENV_TABLE_NAME);
        let chosen = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            ("AWS_LAMBDA_FUNCTION_NAME", "mint-token"),
            (ENV_SQLITE_PATH, "/tmp/registry.sqlite"),
        ])
        .unwrap();
        assert!(matches!(chosen.store, StoreLocation::Sqlite { .. }));
    }

    #[test]
    fn missing_credential_names_the_variable() {
        let error = settings(&[]).unwrap_err();
        assert_eq!(error.variable, ENV_CREDENTIAL_SECRET_ID);
        assert!(error.problem.contains(ENV_CREDENTIAL_JSON));
    }

    #[test]
    fn two_credential_sources_are_refused() {
        let error =
            settings(&[(ENV_CREDENTIAL_SECRET_ID, "x"), (ENV_CREDENTIAL_JSON, "{}")]).unwrap_err();
        assert!(error.problem.contains("only one"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let base = (ENV_CREDENTIAL_SECRET_ID, "x");
        for (variable, value) in [
            (ENV_CLOUD, "mars"),
            (ENV_AUTHORITY_HOST, "not a url"),
            (ENV_AUTHORITY_HOST, "http://login.example.com"),
            ("DP_API_BASE_MDE", "ftp://x"),
            (ENV_TOKEN_ENDPOINT, "v3"),
            (ENV_TOKEN_DEADLINE_SECONDS, "soon"),
            (ENV_TOKEN_DEADLINE_SECONDS, "0"),
            (ENV_TOKEN_REFRESH_AHEAD_SECONDS, "99999"),
            ("DP_REQUIRED_ROLES_GRAPH", " , "),
            (ENV_LOG_FORMAT, "xml"),
            (
                ENV_CONSENT_REDIRECT_URI,
                "http://partner.example.com/consent/callback",
            ),
            (
                ENV_CONSENT_REDIRECT_URI,
                "https://partner.example.com/consent/callback;x",
            ),
            (ENV_CONSENT_LINK, "implicit"),
            (ENV_CONSENT_APIS, "sentinel"),
            (ENV_CONSENT_APIS, ","),
            (ENV_CONSENT_PROOF_SECONDS, "60"),
            (ENV_STATE_KEY, "short"),
        ] {
            let error = settings(&[base, (variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{variable}={value}");
        }
    }

    #[test]
    fn overrides_apply() {
        let settings = settings(&[
            (ENV_CREDENTIAL_JSON, "{}"),
            (ENV_CLOUD, "gcc-high"),
            (ENV_AUTHORITY_HOST, "http://127.0.0.1:8080"),
            ("DP_API_BASE_GRAPH", "http://localhost:9999/graph"),
            (ENV_TOKEN_ENDPOINT, "v1"),
            ("DP_REQUIRED_ROLES_M365D", "Incident.ReadWrite.All"),
        ])
        .unwrap();
        assert_eq!(settings.endpoints.cloud, Cloud::GccHigh);
        assert_eq!(
            settings.endpoints.authority.as_str(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            settings.endpoints.api_base(DefenderApi::Graph).as_str(),
            "http://localhost:9999/graph"
        );
        assert_eq!(
            settings.endpoints.resource(DefenderApi::Graph),
            "https://graph.microsoft.us"
        );
        assert_eq!(settings.token.endpoint_version, TokenEndpointVersion::V1);
        assert!(
            settings
                .required_roles(DefenderApi::M365d)
                .missing(&["Incident.Read.All".to_owned()])
                .is_some()
        );
    }

    #[test]
    fn required_scopes_default_and_override() {
        let defaults = settings(&[(ENV_CREDENTIAL_SECRET_ID, "x")]).unwrap();
        assert_eq!(
            defaults.required_scopes(DefenderApi::Mde).to_string(),
            "Alert.Read|Alert.ReadWrite"
        );
        let overridden = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            ("DP_REQUIRED_SCOPES_M365D", "Incident.ReadWrite"),
        ])
        .unwrap();
        assert!(
            overridden
                .required_scopes(DefenderApi::M365d)
                .missing(&["Incident.Read".to_owned()])
                .is_some()
        );
        let error = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            ("DP_REQUIRED_SCOPES_GRAPH", " | "),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "DP_REQUIRED_SCOPES_GRAPH");
    }

    #[test]
    fn consent_settings_default_and_parse() {
        let defaults = settings(&[(ENV_CREDENTIAL_SECRET_ID, "x")])
            .unwrap()
            .consent;
        assert_eq!(defaults.redirect_uri, None);
        assert_eq!(defaults.link, LinkKind::V2);
        assert_eq!(defaults.apis, vec![DefenderApi::Graph]);
        assert_eq!(defaults.proof_window, Duration::from_secs(20));
        assert!(matches!(defaults.state_key, StateKeyLocation::File(_)));
        let chosen = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            (
                ENV_CONSENT_REDIRECT_URI,
                "https://abc.execute-api.eu-west-1.amazonaws.com/consent/callback",
            ),
            (ENV_CONSENT_LINK, "legacy"),
            (ENV_CONSENT_APIS, "mde, graph, mde"),
            (ENV_STATE_KEY_SECRET_ID, "state-key"),
        ])
        .unwrap()
        .consent;
        assert_eq!(chosen.link, LinkKind::Legacy);
        assert_eq!(chosen.apis, vec![DefenderApi::Mde, DefenderApi::Graph]);
        assert!(matches!(
            chosen.state_key,
            StateKeyLocation::SecretsManager { .. }
        ));
    }

    #[test]
    fn graph_roles_follow_the_sources_unless_set() {
        use crate::defender::Source;
        let graph_roles = |granted: &[&str], pairs: &[(&str, &str)]| {
            let mut pairs = pairs.to_vec();
            pairs.push((ENV_CREDENTIAL_SECRET_ID, "x"));
            let granted: Vec<String> = granted.iter().map(|role| role.to_string()).collect();
            settings(&pairs)
                .unwrap()
                .required_roles(DefenderApi::Graph)
                .missing(&granted)
        };
        // Default sources (graph-incidents, graph-alerts): either source's roles make a usable
        // Graph token; the sources are then planned one by one.
        assert_eq!(graph_roles(&["SecurityIncident.Read.All"], &[]), None);
        assert_eq!(graph_roles(&["SecurityAlert.ReadWrite.All"], &[]), None);
        assert!(graph_roles(&["Incident.Read.All"], &[]).is_some());
        // Only alerts_v2 configured: the incident role is not enough.
        assert!(
            graph_roles(
                &["SecurityIncident.Read.All"],
                &[("DP_SOURCES", "graph-alerts")]
            )
            .is_some()
        );
        // An explicit setting wins.
        let explicit = [(
            "DP_REQUIRED_ROLES_GRAPH",
            "SecurityIncident.Read.All,SecurityAlert.Read.All",
        )];
        assert!(graph_roles(&["SecurityIncident.Read.All"], &explicit).is_some());
        assert_eq!(
            graph_roles(
                &["SecurityIncident.Read.All", "SecurityAlert.Read.All"],
                &explicit
            ),
            None
        );
        let derived = settings(&[(ENV_CREDENTIAL_SECRET_ID, "x")]).unwrap();
        assert_eq!(
            derived.source_roles(Source::GraphAlerts).to_string(),
            "SecurityAlert.Read.All|SecurityAlert.ReadWrite.All"
        );
        let mut pairs = explicit.to_vec();
        pairs.push((ENV_CREDENTIAL_SECRET_ID, "x"));
        assert_eq!(
            settings(&pairs)
                .unwrap()
                .source_roles(Source::GraphIncidents)
                .to_string(),
            "SecurityIncident.Read.All,SecurityAlert.Read.All"
        );
        let error =
            settings(&[(ENV_CREDENTIAL_SECRET_ID, "x"), ("DP_SOURCES", "sentinel")]).unwrap_err();
        assert_eq!(error.variable, "DP_SOURCES");
    }

    const APP_ID: &str = "11111111-1111-4111-8111-111111111111";

    #[test]
    fn aws_federated_mode_needs_only_the_client_id() {
        let settings = settings(&[
            (ENV_CREDENTIAL_MODE, "aws_federated"),
            (ENV_CLIENT_ID, APP_ID),
        ])
        .unwrap();
        assert!(matches!(
            settings.credential,
            CredentialLocation::AwsFederated { ref client_id } if client_id == APP_ID
        ));
        assert_eq!(settings.federation.audience, "api://AzureADTokenExchange");
        assert_eq!(settings.federation.duration, Duration::from_secs(300));
        let request = settings.federation.token_request();
        assert_eq!(request.audience, "api://AzureADTokenExchange");
    }

    #[test]
    fn aws_federated_mode_refuses_a_stored_credential_and_a_bad_client_id() {
        let error = settings(&[(ENV_CREDENTIAL_MODE, "aws_federated")]).unwrap_err();
        assert_eq!(error.variable, ENV_CLIENT_ID);
        let error = settings(&[
            (ENV_CREDENTIAL_MODE, "aws_federated"),
            (ENV_CLIENT_ID, "my-app"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, ENV_CLIENT_ID);
        let error = settings(&[
            (ENV_CREDENTIAL_MODE, "aws_federated"),
            (ENV_CLIENT_ID, APP_ID),
            (ENV_CREDENTIAL_SECRET_ID, "app-cred"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, ENV_CREDENTIAL_SECRET_ID);
        let error = settings(&[(ENV_CREDENTIAL_MODE, "kerberos")]).unwrap_err();
        assert_eq!(error.variable, ENV_CREDENTIAL_MODE);
    }

    #[test]
    fn stored_modes_read_the_credential_json_as_before() {
        for mode in ["client_secret", "certificate", "Client-Secret"] {
            let settings = settings(&[
                (ENV_CREDENTIAL_MODE, mode),
                (ENV_CREDENTIAL_SECRET_ID, "app-cred"),
            ])
            .unwrap();
            assert!(matches!(
                settings.credential,
                CredentialLocation::SecretsManager { .. }
            ));
        }
    }

    #[test]
    fn federation_audience_and_duration_are_validated() {
        let base = (ENV_CREDENTIAL_SECRET_ID, "x");
        let custom = settings(&[
            base,
            (ENV_FEDERATION_AUDIENCE, "api://AzureADTokenExchangeUSGov"),
            (ENV_FEDERATION_DURATION_SECONDS, "900"),
        ])
        .unwrap();
        assert_eq!(
            custom.federation.audience,
            "api://AzureADTokenExchangeUSGov"
        );
        assert_eq!(custom.federation.duration, Duration::from_secs(900));
        for (variable, value) in [
            (ENV_FEDERATION_DURATION_SECONDS, "59"),
            (ENV_FEDERATION_DURATION_SECONDS, "3601"),
            (ENV_FEDERATION_DURATION_SECONDS, "five minutes"),
            (ENV_FEDERATION_AUDIENCE, "two audiences"),
        ] {
            let error = settings(&[base, (variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }
}

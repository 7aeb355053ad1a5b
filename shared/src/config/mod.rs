//! Every setting, read and validated once at start. A bad or missing value is reported with the
//! variable's name, so a misconfigured deployment fails on its first cold start, loudly.
//!
//! One file per concern reads its variables through [`env::Env`], the only place that parses
//! text: `cloud`, `credential`, `registry`, `token`, `access` (roles and scopes), `consent`,
//! `signin`, `callers`, `logging`, and the ingestion job's `fetch` and `sink`. This file holds
//! [`Settings`], the rules between the concerns (the required roles follow the configured
//! sources; whether anything lives in AWS), and the slice of the settings each component is
//! handed.

pub mod access;
pub mod callers;
pub mod cloud;
pub mod consent;
pub mod credential;
pub mod env;
pub mod fetch;
pub mod logging;
pub mod registry;
pub mod signin;
pub mod sink;
pub mod token;

use std::time::Duration;

pub use access::{ENV_REQUIRED_ROLES_PREFIX, ENV_REQUIRED_SCOPES_PREFIX, RequiredAccess};
pub use callers::{
    CallerScopingMode, CallerScopingSettings, ENV_CALLER_HTTP_QUALIFIER,
    ENV_CALLER_SCOPE_CACHE_SECONDS, ENV_CALLER_SCOPING,
};
pub use cloud::{ENV_API_BASE_PREFIX, ENV_AUTHORITY_HOST, ENV_CLOUD};
pub use consent::{
    ConsentSettings, DEFAULT_STATE_KEY_FILE, ENV_CONSENT_APIS, ENV_CONSENT_LINK,
    ENV_CONSENT_PROOF_SECONDS, ENV_CONSENT_REDIRECT_URI, ENV_CONSENT_STATE_TTL_SECONDS,
    ENV_STATE_KEY, ENV_STATE_KEY_FILE, ENV_STATE_KEY_SECRET_ID, StateKeyLocation,
};
pub use credential::{
    CredentialLocation, ENV_CLIENT_ID, ENV_CREDENTIAL_CACHE_SECONDS, ENV_CREDENTIAL_FILE,
    ENV_CREDENTIAL_JSON, ENV_CREDENTIAL_MODE, ENV_CREDENTIAL_SECRET_ID, ENV_FEDERATION_AUDIENCE,
    ENV_FEDERATION_DURATION_SECONDS, FederationSettings,
};
pub use env::{ConfigError, ENV_LAMBDA_FUNCTION_NAME, Env, process_env};
pub use fetch::{
    DEFAULT_CONCURRENCY, DEFAULT_SOURCES, ENV_CONCURRENCY, ENV_DEADLINE_MARGIN_SECONDS,
    ENV_FANOUT_THRESHOLD, ENV_GRAPH_EXPAND_ALERTS, ENV_LOOKBACK_HOURS, ENV_MDE_EXPAND_EVIDENCE,
    ENV_OVERLAP_SECONDS, ENV_PAGE_SIZE_PREFIX, ENV_QUEUE_URL, ENV_SOURCES, FetchSettings,
    RETIREMENT_DATE, parse_sources, retiring_warning, sources_from_lookup,
};
pub use logging::{ENV_LOG_FORMAT, log_format_or_default};
pub use registry::{DEFAULT_SQLITE_PATH, ENV_SQLITE_PATH, ENV_TABLE_NAME, StoreLocation};
pub use signin::{
    ENV_MINT_FROM_SIGNIN, ENV_SIGNIN_KEEP_REFRESH_TOKENS, ENV_SIGNIN_KMS_KEY_ID,
    ENV_SIGNIN_REDIRECT_URI, ENV_SIGNIN_STATE_TTL_SECONDS, SignInSettings,
};
pub use sink::{
    DEFAULT_SINK_DIR, ENV_EVENT_BUS, ENV_SINK_BUCKET, ENV_SINK_DIR, ENV_SINK_PREFIX, SinkSettings,
};
pub use token::{
    ENV_HTTP_TIMEOUT_SECONDS, ENV_TOKEN_DEADLINE_SECONDS, ENV_TOKEN_ENDPOINT,
    ENV_TOKEN_REFRESH_AHEAD_SECONDS, TokenEndpointVersion, TokenSettings,
};

use crate::api::DefenderApi;
use crate::cloud::CloudEndpoints;
use crate::defender::Source;
use crate::entra::roles::RoleRequirement;
use crate::telemetry::LogFormat;

#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoints: CloudEndpoints,
    pub credential: CredentialLocation,
    pub credential_cache_ttl: Duration,
    pub federation: FederationSettings,
    pub store: StoreLocation,
    pub token: TokenSettings,
    /// The roles and scopes tokens must carry.
    pub access: RequiredAccess,
    pub consent: ConsentSettings,
    pub signin: SignInSettings,
    /// Which tenants each caller of `mint-token` may mint for.
    pub callers: CallerScopingSettings,
    pub log_format: LogFormat,
    /// The ingestion job's own settings, on the function that runs it
    /// ([`Settings::with_fetch_job`]); `None` elsewhere.
    pub fetch_job: Option<FetchJobSettings>,
}

/// The ingestion job's own settings: what it pulls and where the records go. Only the function
/// that runs the job reads them (a Lambda without a sink bucket is no error for `mint-token`).
#[derive(Debug, Clone)]
pub struct FetchJobSettings {
    pub fetch: FetchSettings,
    pub sink: SinkSettings,
}

impl FetchJobSettings {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<FetchJobSettings, ConfigError> {
        let env = Env::new(&lookup);
        Ok(FetchJobSettings {
            fetch: FetchSettings::read(&env)?,
            sink: SinkSettings::read(&env)?,
        })
    }

    /// Whether the job reaches AWS: an S3 sink, an EventBridge bus, the fan-out queue.
    pub fn needs_aws(&self) -> bool {
        self.sink.needs_aws() || self.fetch.needs_aws()
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(process_env)
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let env = Env::new(&lookup);
        let endpoints = cloud::endpoints(&env)?;
        let credential = credential::location(&env)?;
        let federation = credential::federation(&env)?;
        let store = registry::location(&env)?;
        let token = token::read(&env)?;
        // The rule between the concerns: unset, an API's required roles follow the configured
        // sources (Graph: the roles of incidents or of alerts_v2).
        let sources = fetch::sources(&env)?;
        let log_format = logging::read(&env)?;
        let consent = consent::read(&env)?;
        let signin = signin::read(&env)?;
        Ok(Settings {
            endpoints,
            credential,
            credential_cache_ttl: credential::cache_ttl(&env)?,
            federation,
            store,
            token,
            access: access::read(&env, &sources)?,
            consent,
            signin,
            callers: callers::read(&env)?,
            log_format,
            fetch_job: None,
        })
    }

    /// These settings with the ingestion job's own, read through `lookup`: the fetch function's
    /// settings, so that its start decides at once whether AWS is needed.
    pub fn with_fetch_job(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Ok(Settings {
            fetch_job: Some(FetchJobSettings::from_lookup(lookup)?),
            ..self
        })
    }

    /// Whether anything configured lives in AWS (a secret, the table, a KMS key, the job's sink
    /// or queue): the AWS configuration is then loaded once, at start.
    pub fn needs_aws(&self) -> bool {
        self.credential.needs_aws()
            || self.store.needs_aws()
            || self.consent.state_key.needs_aws()
            || self.signin.kms_key_id.is_some()
            || self
                .fetch_job
                .as_ref()
                .is_some_and(FetchJobSettings::needs_aws)
    }

    /// The roles a token for `api` must carry.
    pub fn required_roles(&self, api: DefenderApi) -> &RoleRequirement {
        self.access.required_roles(api)
    }

    /// The roles a tenant must have granted for `source` to be fetched (see
    /// [`RequiredAccess::source_roles`]).
    pub fn source_roles(&self, source: Source) -> RoleRequirement {
        self.access.source_roles(source)
    }

    /// The delegated scopes a user's (on-behalf-of) token for `api` must carry.
    pub fn required_scopes(&self, api: DefenderApi) -> &RoleRequirement {
        self.access.required_scopes(api)
    }
}

// What each component is handed: the part of the settings it reads, not all of them.

/// What proving a consent reads: the token endpoint, the APIs a consent must cover and the roles
/// their tokens must carry (the consent callback, the operator, the fetch cycle's
/// re-verification).
#[derive(Debug, Clone)]
pub struct ProofSettings {
    pub endpoint_version: TokenEndpointVersion,
    pub apis: Vec<DefenderApi>,
    pub access: RequiredAccess,
}

/// What the consent service reads.
#[derive(Debug, Clone)]
pub struct ConsentServiceSettings {
    pub endpoints: CloudEndpoints,
    pub consent: ConsentSettings,
    pub proof: ProofSettings,
}

/// What the sign-in service reads.
#[derive(Debug, Clone)]
pub struct SignInServiceSettings {
    pub endpoints: CloudEndpoints,
    pub signin: SignInSettings,
    pub access: RequiredAccess,
}

/// What minting and the Defender API client read: where the APIs are (bases, token resources)
/// and what their tokens must carry.
#[derive(Debug, Clone)]
pub struct ApiAccessSettings {
    pub endpoints: CloudEndpoints,
    pub access: RequiredAccess,
}

impl Settings {
    pub fn proof(&self) -> ProofSettings {
        ProofSettings {
            endpoint_version: self.token.endpoint_version,
            apis: self.consent.apis.clone(),
            access: self.access.clone(),
        }
    }

    pub fn consent_service(&self) -> ConsentServiceSettings {
        ConsentServiceSettings {
            endpoints: self.endpoints.clone(),
            consent: self.consent.clone(),
            proof: self.proof(),
        }
    }

    pub fn signin_service(&self) -> SignInServiceSettings {
        SignInServiceSettings {
            endpoints: self.endpoints.clone(),
            signin: self.signin.clone(),
            access: self.access.clone(),
        }
    }

    pub fn api_access(&self) -> ApiAccessSettings {
        ApiAccessSettings {
            endpoints: self.endpoints.clone(),
            access: self.access.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use std::path::PathBuf;

    use super::*;
    use crate::cloud::Cloud;

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
    fn graph_roles_follow_the_sources_unless_set() {
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

    #[test]
    fn aws_is_needed_when_anything_lives_there() {
        let local = [(ENV_CREDENTIAL_JSON, "{}")];
        assert!(!settings(&local).unwrap().needs_aws());
        for aws in [
            (ENV_TABLE_NAME, "registry"),
            (ENV_STATE_KEY_SECRET_ID, "state-key"),
            (ENV_SIGNIN_KMS_KEY_ID, "alias/signin"),
        ] {
            assert!(settings(&[local[0], aws]).unwrap().needs_aws(), "{aws:?}");
        }
        assert!(
            settings(&[(ENV_CREDENTIAL_SECRET_ID, "x")])
                .unwrap()
                .needs_aws()
        );
    }

    #[test]
    fn the_fetch_jobs_sink_and_queue_count_only_on_the_function_that_runs_it() {
        let pairs = [
            (ENV_CREDENTIAL_JSON, "{}"),
            (ENV_SINK_BUCKET, "records"),
            ("AWS_LAMBDA_FUNCTION_NAME", "fetch-incidents"),
            (ENV_SQLITE_PATH, "/tmp/registry.sqlite"),
        ];
        let map: HashMap<&str, &str> = pairs.into_iter().collect();
        let lookup = |name: &str| map.get(name).map(|value| (*value).to_owned());
        let common = Settings::from_lookup(lookup).unwrap();
        assert!(common.fetch_job.is_none());
        assert!(!common.needs_aws());
        let fetching = common.with_fetch_job(lookup).unwrap();
        assert!(fetching.needs_aws());
        let job = fetching.fetch_job.as_ref().unwrap();
        assert_eq!(job.sink.bucket.as_deref(), Some("records"));
        assert_eq!(job.fetch.sources, DEFAULT_SOURCES.to_vec());
        // A queue alone needs AWS too; a Lambda without a bucket is refused only here.
        let queued = FetchJobSettings::from_lookup(|name| match name {
            ENV_QUEUE_URL => Some("https://sqs.us-east-1.amazonaws.com/1/q".into()),
            ENV_SINK_DIR => Some("/tmp/sink".into()),
            _ => None,
        })
        .unwrap();
        assert!(queued.needs_aws());
        let error = FetchJobSettings::from_lookup(|name| {
            (name == "AWS_LAMBDA_FUNCTION_NAME").then(|| "fetch-incidents".to_owned())
        })
        .unwrap_err();
        assert_eq!(error.variable, ENV_SINK_BUCKET);
    }

    #[test]
    fn each_component_is_handed_its_slice() {
        let settings = settings(&[
            (ENV_CREDENTIAL_SECRET_ID, "x"),
            (ENV_TOKEN_ENDPOINT, "v1"),
            (ENV_CONSENT_APIS, "mde,graph"),
            ("DP_REQUIRED_ROLES_MDE", "Alert.ReadWrite.All"),
        ])
        .unwrap();
        let proof = settings.proof();
        assert_eq!(proof.endpoint_version, TokenEndpointVersion::V1);
        assert_eq!(proof.apis, vec![DefenderApi::Mde, DefenderApi::Graph]);
        assert_eq!(
            proof.access.required_roles(DefenderApi::Mde).to_string(),
            "Alert.ReadWrite.All"
        );
        let consent = settings.consent_service();
        assert_eq!(consent.endpoints, settings.endpoints);
        assert_eq!(consent.consent.apis, proof.apis);
        let signin = settings.signin_service();
        assert_eq!(signin.signin.state_ttl, settings.signin.state_ttl);
        let api = settings.api_access();
        assert_eq!(api.endpoints, settings.endpoints);
        assert_eq!(
            api.access.required_roles(DefenderApi::Mde).to_string(),
            "Alert.ReadWrite.All"
        );
    }
}

//! Building the long-lived parts once per cold start: HTTP client, the AWS configuration (loaded
//! once, and only when the settings name something in AWS), credential store, registry and token
//! provider. Each part is built from its own slice of the settings; handlers borrow them.

use std::sync::Arc;

use crate::cloud::CloudEndpoints;
use crate::config::{
    ConfigError, CredentialLocation, FederationSettings, Settings, StoreLocation, TokenSettings,
    process_env,
};
use crate::entra::federated::{FederatedAssertions, StsWebIdentitySource};
use crate::entra::{AppTokenProvider, TokenClient};
use crate::secrets::{
    CredentialSource, CredentialStore, FederatedSettingSource, FileSource, InlineSource,
    SecretsManagerSource,
};
use crate::store::{
    CallerScopes, Checkpoints, ConsentAttempts, DynamoRegistry, HuntRecords, RegistryError,
    RunLeases, SignedInUsers, SqliteRegistry, Store, TenantRegistry, UpdateRecords,
};

pub struct Services {
    pub settings: Settings,
    /// The AWS SDK configuration, loaded once at start when any setting needs AWS
    /// ([`Settings::needs_aws`]); every AWS client of the process is built from it.
    pub aws: Option<aws_config::SdkConfig>,
    pub http: reqwest::Client,
    pub credentials: Arc<CredentialStore>,
    pub registry: Arc<dyn TenantRegistry>,
    /// The same store as `registry`, seen through its consent-attempt port.
    pub attempts: Arc<dyn ConsentAttempts>,
    /// And through its fetch-progress port.
    pub checkpoints: Arc<dyn Checkpoints>,
    /// And through its signed-in-user port.
    pub signed_in: Arc<dyn SignedInUsers>,
    /// And through its write-back port.
    pub updates: Arc<dyn UpdateRecords>,
    /// And through its fleet-hunting port.
    pub hunts: Arc<dyn HuntRecords>,
    /// And through its callers' scopes (who may mint for, or change, which tenant).
    pub callers: Arc<dyn CallerScopes>,
    /// And through its run leases (one scheduled fleet run at a time).
    pub run_leases: Arc<dyn RunLeases>,
    pub tokens: Arc<AppTokenProvider>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
    #[error(
        "the settings name an AWS service (credential secret, DynamoDB table) but no AWS configuration was given"
    )]
    AwsMissing,
}

impl Services {
    pub async fn from_env() -> Result<Services, StartupError> {
        Services::build(Settings::from_env()?).await
    }

    /// The fetch function's services: the settings with the ingestion job's own, so that a sink
    /// or queue in AWS is known when the AWS configuration is (or is not) loaded.
    pub async fn from_env_for_fetch() -> Result<Services, StartupError> {
        Services::build(Settings::from_env()?.with_fetch_job(process_env)?).await
    }

    /// Decides once whether the AWS configuration (region, credentials, endpoints) is needed,
    /// and loads it then.
    pub async fn build(settings: Settings) -> Result<Services, StartupError> {
        let aws = if settings.needs_aws() {
            Some(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
        } else {
            None
        };
        Services::build_with_aws(settings, aws).await
    }

    /// As [`Services::build`] with the AWS configuration given: the local demo hands in one
    /// pointed at the emulator's STS, as a Lambda's comes from its role and region.
    pub async fn build_with_aws(
        settings: Settings,
        aws: Option<aws_config::SdkConfig>,
    ) -> Result<Services, StartupError> {
        let http = http_client(&settings.token)?;
        let credentials = credential_store(
            &settings.credential,
            settings.credential_cache_ttl,
            &settings.federation,
            aws.as_ref(),
        )?;
        let store = open_store(&settings.store, aws.as_ref())?;
        let tokens = token_provider(
            &http,
            &settings.endpoints,
            &settings.token,
            credentials.clone(),
        );
        Ok(Services {
            settings,
            aws,
            http,
            credentials,
            registry: store.clone(),
            attempts: store.clone(),
            checkpoints: store.clone(),
            signed_in: store.clone(),
            updates: store.clone(),
            hunts: store.clone(),
            callers: store.clone(),
            run_leases: store,
            tokens,
        })
    }
}

/// The app credential, cached for `cache_ttl`, from where the settings say.
fn credential_store(
    location: &CredentialLocation,
    cache_ttl: std::time::Duration,
    federation: &FederationSettings,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<Arc<CredentialStore>, StartupError> {
    let source: Arc<dyn CredentialSource> = match location {
        CredentialLocation::SecretsManager { secret_id } => Arc::new(SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(aws.ok_or(StartupError::AwsMissing)?),
            secret_id.clone(),
        )),
        CredentialLocation::Inline(json) => Arc::new(InlineSource(json.clone())),
        CredentialLocation::File(path) => Arc::new(FileSource(path.clone())),
        CredentialLocation::AwsFederated { client_id } => {
            Arc::new(FederatedSettingSource::new(client_id.clone()))
        }
    };
    // Any credential JSON may say `aws_federated`, so the token source is always there; it
    // reaches AWS only when such a credential asks it for a token. Without a loaded AWS
    // configuration (nothing configured needed one), it loads its own on that first request.
    let sts = match aws {
        Some(config) => StsWebIdentitySource::from_sdk_config(config),
        None => StsWebIdentitySource::from_env_when_needed(),
    };
    let federation = Arc::new(FederatedAssertions::new(
        Arc::new(sts),
        federation.token_request(),
    ));
    Ok(Arc::new(
        CredentialStore::new(source, cache_ttl).with_federation(federation),
    ))
}

/// The tenant registry, with its consent-attempt, checkpoint and signed-in-user ports.
fn open_store(
    location: &StoreLocation,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<Arc<dyn Store>, StartupError> {
    Ok(match location {
        StoreLocation::DynamoDb { table } => Arc::new(DynamoRegistry::new(
            aws_sdk_dynamodb::Client::new(aws.ok_or(StartupError::AwsMissing)?),
            table.clone(),
        )),
        StoreLocation::Sqlite { path } => Arc::new(SqliteRegistry::open(path)?),
    })
}

fn token_provider(
    http: &reqwest::Client,
    endpoints: &CloudEndpoints,
    token: &TokenSettings,
    credentials: Arc<CredentialStore>,
) -> Arc<AppTokenProvider> {
    Arc::new(AppTokenProvider::new(
        TokenClient::new(http.clone(), endpoints.clone()),
        credentials,
        token.clone(),
    ))
}

fn http_client(token: &TokenSettings) -> Result<reqwest::Client, StartupError> {
    reqwest::Client::builder()
        .user_agent(concat!("defender-partner/", env!("CARGO_PKG_VERSION")))
        .timeout(token.http_timeout)
        .connect_timeout(token.http_timeout.min(std::time::Duration::from_secs(5)))
        .https_only(false)
        .build()
        .map_err(|error| StartupError::Http(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(table: bool) -> Settings {
        Settings::from_lookup(|name| match name {
            "DP_CREDENTIAL_JSON" => Some(
                r#"{"client_id": "11111111-1111-4111-8111-111111111111", "client_secret": "x"}"#
                    .into(),
            ),
            "DP_TABLE_NAME" if table => Some("registry".into()),
            "DP_SQLITE_PATH" if !table => Some(":memory:".into()),
            _ => None,
        })
        .expect("valid settings")
    }

    #[tokio::test]
    async fn a_dynamodb_store_without_aws_configuration_is_a_startup_error_not_a_panic() {
        let result = Services::build_with_aws(settings(true), None).await;
        assert!(matches!(result, Err(StartupError::AwsMissing)));
    }

    #[tokio::test]
    async fn the_embedded_store_needs_no_aws_configuration() {
        let services = Services::build_with_aws(settings(false), None)
            .await
            .expect("builds");
        assert!(services.aws.is_none());
    }
}

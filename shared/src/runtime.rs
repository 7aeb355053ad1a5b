//! Building the long-lived parts once per cold start: HTTP client, AWS clients (only those the
//! settings need), credential store, registry and token provider. Handlers borrow them.

use std::sync::Arc;

use crate::config::{ConfigError, CredentialLocation, Settings, StateKeyLocation, StoreLocation};
use crate::entra::federated::{FederatedAssertions, StsWebIdentitySource};
use crate::entra::{AppTokenProvider, TokenClient};
use crate::secrets::{
    CredentialSource, CredentialStore, FederatedSettingSource, FileSource, InlineSource,
    SecretsManagerSource,
};
use crate::tenants::{
    Checkpoints, ConsentAttempts, DynamoRegistry, HuntRecords, RegistryError, SignedInUsers,
    SqliteRegistry, Store, TenantRegistry, UpdateRecords,
};

pub struct Services {
    pub settings: Settings,
    /// The AWS SDK configuration, loaded when any setting needs AWS.
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

    /// Loads the AWS configuration (region, credentials, endpoints) only when the settings name
    /// an AWS service.
    pub async fn build(settings: Settings) -> Result<Services, StartupError> {
        let needs_aws = matches!(
            settings.credential,
            CredentialLocation::SecretsManager { .. } | CredentialLocation::AwsFederated { .. }
        ) || matches!(settings.store, StoreLocation::DynamoDb { .. })
            || matches!(
                settings.consent.state_key,
                StateKeyLocation::SecretsManager { .. }
            )
            || settings.signin.kms_key_id.is_some();
        let aws = if needs_aws {
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
        let http = http_client(&settings)?;
        let missing_aws = || StartupError::AwsMissing;

        let source: Arc<dyn CredentialSource> = match &settings.credential {
            CredentialLocation::SecretsManager { secret_id } => {
                Arc::new(SecretsManagerSource::new(
                    aws_sdk_secretsmanager::Client::new(aws.as_ref().ok_or_else(missing_aws)?),
                    secret_id.clone(),
                ))
            }
            CredentialLocation::Inline(json) => Arc::new(InlineSource(json.clone())),
            CredentialLocation::File(path) => Arc::new(FileSource(path.clone())),
            CredentialLocation::AwsFederated { client_id } => {
                Arc::new(FederatedSettingSource::new(client_id.clone()))
            }
        };
        // Any credential JSON may say `aws_federated`, so the token source is always there; it
        // reaches AWS only when such a credential asks it for a token.
        let sts = match &aws {
            Some(config) => StsWebIdentitySource::from_sdk_config(config),
            None => StsWebIdentitySource::from_env_when_needed(),
        };
        let federation = Arc::new(FederatedAssertions::new(
            Arc::new(sts),
            settings.federation.token_request(),
        ));
        let credentials = Arc::new(
            CredentialStore::new(source, settings.credential_cache_ttl).with_federation(federation),
        );

        let store: Arc<dyn Store> = match &settings.store {
            StoreLocation::DynamoDb { table } => Arc::new(DynamoRegistry::new(
                aws_sdk_dynamodb::Client::new(aws.as_ref().ok_or_else(missing_aws)?),
                table.clone(),
            )),
            StoreLocation::Sqlite { path } => Arc::new(SqliteRegistry::open(path)?),
        };

        let tokens = Arc::new(AppTokenProvider::new(
            TokenClient::new(http.clone(), settings.endpoints.clone()),
            credentials.clone(),
            settings.token.clone(),
        ));
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
            hunts: store,
            tokens,
        })
    }
}

fn http_client(settings: &Settings) -> Result<reqwest::Client, StartupError> {
    reqwest::Client::builder()
        .user_agent(concat!("defender-partner/", env!("CARGO_PKG_VERSION")))
        .timeout(settings.token.http_timeout)
        .connect_timeout(
            settings
                .token
                .http_timeout
                .min(std::time::Duration::from_secs(5)),
        )
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

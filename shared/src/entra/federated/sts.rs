//! The AWS adapter: STS `GetWebIdentityToken` on the regional endpoint of the function's region
//! (the SDK's default; `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` override it when the SDK
//! configuration is loaded from the environment).

use async_trait::async_trait;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::OnceCell;

use super::{
    FederationError, SIGNING_ALGORITHM, WebIdentityToken, WebIdentityTokenRequest,
    WebIdentityTokenSource,
};

pub struct StsWebIdentitySource {
    client: OnceCell<aws_sdk_sts::Client>,
}

impl StsWebIdentitySource {
    pub fn new(client: aws_sdk_sts::Client) -> StsWebIdentitySource {
        StsWebIdentitySource {
            client: OnceCell::new_with(Some(client)),
        }
    }

    pub fn from_sdk_config(config: &aws_config::SdkConfig) -> StsWebIdentitySource {
        StsWebIdentitySource::new(sts_client(config))
    }

    /// Loads the AWS configuration from the environment on first use: a process that never
    /// meets an `aws_federated` credential never pays for it.
    pub fn from_env_when_needed() -> StsWebIdentitySource {
        StsWebIdentitySource {
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_sts::Client {
        self.client
            .get_or_init(|| async {
                let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                sts_client(&config)
            })
            .await
    }
}

/// Every token request of the fleet waits on this call while the AWS token is renewed, so a
/// hung STS connection must fail fast rather than hold them all for the SDK's default.
const STS_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn sts_client(config: &aws_config::SdkConfig) -> aws_sdk_sts::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(STS_OPERATION_TIMEOUT)
        .build();
    aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(config)
            .timeout_config(timeouts)
            .build(),
    )
}

#[async_trait]
impl WebIdentityTokenSource for StsWebIdentitySource {
    async fn web_identity_token(
        &self,
        request: &WebIdentityTokenRequest,
    ) -> Result<WebIdentityToken, FederationError> {
        let duration = i32::try_from(request.duration.as_secs()).unwrap_or(i32::MAX);
        let client = self.client().await;
        let answer = client
            .get_web_identity_token()
            .audience(&request.audience)
            .signing_algorithm(SIGNING_ALGORITHM)
            .duration_seconds(duration)
            .send()
            .await
            .map_err(|error| match &error {
                SdkError::ServiceError(_) => {
                    FederationError::from_sts(error.code(), error.message(), request)
                }
                SdkError::ConstructionFailure(_) => FederationError::Unavailable(
                    "the STS request could not be built (is AWS_REGION set?)".into(),
                ),
                SdkError::TimeoutError(_) => FederationError::Unavailable("STS timed out".into()),
                SdkError::DispatchFailure(_) => {
                    FederationError::Unavailable("STS could not be reached".into())
                }
                _ => FederationError::Unavailable("STS answered unreadably".into()),
            })?;
        let jwt = answer
            .web_identity_token
            .filter(|jwt| !jwt.trim().is_empty())
            .ok_or_else(|| {
                FederationError::Malformed("no WebIdentityToken in the answer".into())
            })?;
        let expiration = answer
            .expiration
            .ok_or_else(|| FederationError::Malformed("no Expiration in the answer".into()))?;
        let expires_at: DateTime<Utc> =
            DateTime::from_timestamp(expiration.secs(), expiration.subsec_nanos())
                .ok_or_else(|| FederationError::Malformed("Expiration is out of range".into()))?;
        Ok(WebIdentityToken {
            jwt: SecretString::from(jwt),
            expires_at,
        })
    }
}

//! Where the credential JSON is read from: the port and its adapters.

use std::path::PathBuf;

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use secrecy::SecretString;

use super::CredentialError;

#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// The credential JSON, as stored.
    async fn read(&self) -> Result<SecretString, CredentialError>;
    /// For messages: where the credential lives (never its content).
    fn describe(&self) -> String;
}

pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerSource {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        SecretsManagerSource {
            client,
            secret_id: secret_id.into(),
        }
    }
}

#[async_trait]
impl CredentialSource for SecretsManagerSource {
    async fn read(&self) -> Result<SecretString, CredentialError> {
        let answer = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|error| {
                let code = error.code().unwrap_or("no error code");
                let hint = match code {
                    "ResourceNotFoundException" => "the secret does not exist: check DP_CREDENTIAL_SECRET_ID",
                    "AccessDeniedException" => {
                        "the function's role may not read it: grant secretsmanager:GetSecretValue on this secret"
                    }
                    "DecryptionFailure" => "the function's role may not use the secret's KMS key",
                    _ => "Secrets Manager could not be reached or refused the request",
                };
                CredentialError::Unavailable(format!("{} ({code}): {hint}", self.describe()))
            })?;
        answer.secret_string.map(SecretString::from).ok_or_else(|| {
            CredentialError::Malformed(format!(
                "{} holds binary data; store the credential JSON as the secret string",
                self.describe()
            ))
        })
    }

    fn describe(&self) -> String {
        format!("Secrets Manager secret {:?}", self.secret_id)
    }
}

/// The credential JSON given directly (local runs and tests).
pub struct InlineSource(pub SecretString);

#[async_trait]
impl CredentialSource for InlineSource {
    async fn read(&self) -> Result<SecretString, CredentialError> {
        Ok(self.0.clone())
    }

    fn describe(&self) -> String {
        format!("the {} variable", crate::config::ENV_CREDENTIAL_JSON)
    }
}

/// The credential JSON in a file (local runs); re-read on every load, so editing it rotates.
pub struct FileSource(pub PathBuf);

#[async_trait]
impl CredentialSource for FileSource {
    async fn read(&self) -> Result<SecretString, CredentialError> {
        tokio::fs::read_to_string(&self.0)
            .await
            .map(SecretString::from)
            .map_err(|error| {
                CredentialError::Unavailable(format!("{}: {}", self.describe(), error.kind()))
            })
    }

    fn describe(&self) -> String {
        format!("file {}", self.0.display())
    }
}

/// The secretless mode chosen by settings (`DP_CREDENTIAL_MODE=aws_federated` + `DP_CLIENT_ID`):
/// nothing is read from anywhere; the credential is the client id and the federated kind.
pub struct FederatedSettingSource {
    client_id: String,
}

impl FederatedSettingSource {
    pub fn new(client_id: impl Into<String>) -> FederatedSettingSource {
        FederatedSettingSource {
            client_id: client_id.into(),
        }
    }
}

#[async_trait]
impl CredentialSource for FederatedSettingSource {
    async fn read(&self) -> Result<SecretString, CredentialError> {
        let document = serde_json::json!({
            "client_id": self.client_id,
            "credential": super::credential::AWS_FEDERATED,
        });
        Ok(SecretString::from(document.to_string()))
    }

    fn describe(&self) -> String {
        format!(
            "the {} setting ({}={})",
            crate::config::ENV_CLIENT_ID,
            crate::config::ENV_CREDENTIAL_MODE,
            super::credential::AWS_FEDERATED
        )
    }
}

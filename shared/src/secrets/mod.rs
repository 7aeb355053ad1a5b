//! The app credential: which client id, and how it proves itself (a client secret, a
//! certificate, or no secret at all: the function's AWS identity, `aws_federated`). Read from
//! Secrets Manager in AWS, from an environment variable or file locally, or (secretless) from
//! settings alone; cached in memory for a TTL and re-read once when Entra refuses it, so a
//! rotation heals without a redeploy.

mod credential;
pub mod expiry;
mod sources;
mod store;

pub use credential::{
    AWS_FEDERATED, AppCredential, CertificateCredential, CredentialKind, FederatedCredential,
};
pub use expiry::{
    CredentialEnd, EXPIRY_WARNING_DAYS, credential_days_left, credential_expiry, days_left,
};
pub use sources::{
    CredentialSource, FederatedSettingSource, FileSource, InlineSource, SecretsManagerSource,
};
pub use store::CredentialStore;

use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the app credential could not be read: {0}")]
    Unavailable(String),
    #[error("the app credential is malformed: {0}")]
    Malformed(String),
}

impl CallerError for CredentialError {
    fn code(&self) -> ErrorCode {
        ErrorCode::CredentialUnavailable
    }
}

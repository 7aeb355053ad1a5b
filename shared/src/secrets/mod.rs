//! The app credential: which client id, and how it proves itself (a client secret or a
//! certificate). Read from Secrets Manager in AWS, from an environment variable or file locally;
//! cached in memory for a TTL and re-read once when Entra refuses it, so a rotation heals
//! without a redeploy.

mod credential;
mod sources;
mod store;

pub use credential::{AppCredential, CertificateCredential, CredentialKind};
pub use sources::{CredentialSource, FileSource, InlineSource, SecretsManagerSource};
pub use store::CredentialStore;

use crate::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the app credential could not be read: {0}")]
    Unavailable(String),
    #[error("the app credential is malformed: {0}")]
    Malformed(String),
}

impl CredentialError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::CredentialUnavailable
    }
}

//! The service key, from which every `state`, PKCE verifier and OIDC nonce of both browser flows
//! is keyed: from Secrets Manager in AWS (the template generates a random one), from a variable or
//! a local file otherwise. A missing local file is created with a fresh random key, so a laptop
//! needs no setup.

use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretSlice};

use crate::config::StateKeyLocation;
use crate::secrets::{CredentialError, CredentialSource, SecretsManagerSource};

/// A key for one purpose, derived from the service key: a value made with one (a `state`, a
/// PKCE verifier, a nonce) is never accepted for another.
pub fn derive_key(service_key: &SecretSlice<u8>, purpose: &[u8]) -> SecretSlice<u8> {
    let base = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, service_key.expose_secret());
    SecretSlice::from(aws_lc_rs::hmac::sign(&base, purpose).as_ref().to_vec())
}

pub async fn load_state_key(
    location: &StateKeyLocation,
    aws: Option<&aws_config::SdkConfig>,
) -> Result<SecretSlice<u8>, CredentialError> {
    let text = match location {
        StateKeyLocation::SecretsManager { secret_id } => {
            let aws = aws.ok_or_else(|| {
                CredentialError::Unavailable("no AWS configuration loaded".into())
            })?;
            SecretsManagerSource::new(aws_sdk_secretsmanager::Client::new(aws), secret_id.clone())
                .read()
                .await?
        }
        StateKeyLocation::Inline(key) => key.clone(),
        StateKeyLocation::File(path) => read_or_create(path)?,
    };
    let bytes = text.expose_secret().trim().as_bytes().to_vec();
    if bytes.len() < 32 {
        return Err(CredentialError::Malformed(
            "the state signing key is shorter than 32 characters".into(),
        ));
    }
    Ok(SecretSlice::from(bytes))
}

fn read_or_create(path: &Path) -> Result<secrecy::SecretString, CredentialError> {
    let unavailable = |error: std::io::Error| {
        CredentialError::Unavailable(format!(
            "state key file {}: {}",
            path.display(),
            error.kind()
        ))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.into()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut random = [0u8; 32];
            SystemRandom::new()
                .fill(&mut random)
                .map_err(|_| CredentialError::Unavailable("no random source".into()))?;
            let key: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(unavailable)?;
            }
            write_private(path, &key).map_err(unavailable)?;
            Ok(key.into())
        }
        Err(error) => Err(unavailable(error)),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_local_key_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("dp-state-key-{}", uuid::Uuid::new_v4()));
        let location = StateKeyLocation::File(dir.join("state-key"));
        let first = load_state_key(&location, None).await.unwrap();
        let second = load_state_key(&location, None).await.unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_short_key_is_refused() {
        let location = StateKeyLocation::Inline("short".to_owned().into());
        assert!(load_state_key(&location, None).await.is_err());
    }
}

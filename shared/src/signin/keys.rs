//! Building the refresh-token sealer once per cold start: KMS when a key is configured (the
//! function then needs no other key), else the embedded key derived from the state signing key.

use secrecy::SecretSlice;

use super::sealing::{KmsDataKeys, LocalDataKeys, Sealer};
use crate::redirect::key::load_state_key;
use crate::runtime::Services;
use crate::secrets::CredentialError;

/// `service_key`: the state signing key when the caller already holds it.
pub async fn load_sealer(
    services: &Services,
    service_key: Option<&SecretSlice<u8>>,
) -> Result<Sealer, CredentialError> {
    if let Some(key_id) = &services.settings.signin.kms_key_id {
        let aws = services.aws.as_ref().ok_or_else(|| {
            CredentialError::Unavailable("no AWS configuration loaded for KMS".into())
        })?;
        return Ok(Sealer::new(Box::new(KmsDataKeys::new(
            aws_sdk_kms::Client::new(aws),
            key_id.clone(),
        ))));
    }
    let local = match service_key {
        Some(key) => LocalDataKeys::from_service_key(key),
        None => LocalDataKeys::from_service_key(
            &load_state_key(&services.settings.consent.state_key, services.aws.as_ref()).await?,
        ),
    };
    Ok(Sealer::new(Box::new(local)))
}

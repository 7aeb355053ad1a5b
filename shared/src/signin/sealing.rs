//! Refresh tokens at rest: envelope encryption. Each seal asks for a fresh data key (from KMS in
//! AWS, from a local key-encryption key otherwise), encrypts with AES-256-GCM, and keeps only the
//! wrapped data key beside the ciphertext. The tenant and user are bound in as associated data
//! (and as the KMS encryption context), so a sealed token copied to another user's item does not
//! open.
//!
//! Layout: `DPS1` | wrapped key length (u16, big-endian) | wrapped key | nonce (12) | ciphertext+tag.

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::{CallerError, ErrorCode};

const MAGIC: &[u8; 4] = b"DPS1";
const DATA_KEY_LEN: usize = 32;

/// Whose token a sealed blob holds: bound into the encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext {
    pub tenant: String,
    pub user_oid: String,
}

impl SealContext {
    fn associated_data(&self) -> Vec<u8> {
        format!("refresh-token|{}|{}", self.tenant, self.user_oid).into_bytes()
    }

    fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("purpose", "refresh-token"),
            ("tenant", self.tenant.as_str()),
            ("user", self.user_oid.as_str()),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the key service is unavailable: {0}")]
    KeysUnavailable(String),
    #[error("the key service refused: {0}")]
    KeysRefused(String),
    #[error("a stored refresh token cannot be opened (wrong key, or not this user's): {0}")]
    Unreadable(&'static str),
}

impl CallerError for SealError {
    fn code(&self) -> ErrorCode {
        match self {
            SealError::KeysUnavailable(_) => ErrorCode::KeyServiceUnavailable,
            SealError::KeysRefused(_) => ErrorCode::ConfigInvalid,
            SealError::Unreadable(_) => ErrorCode::SignInRequired,
        }
    }
}

/// Where data keys come from.
#[async_trait]
pub trait DataKeys: Send + Sync {
    /// A fresh data key and its wrapped form.
    async fn generate(
        &self,
        context: &SealContext,
    ) -> Result<(SecretSlice<u8>, Vec<u8>), SealError>;

    /// The data key inside `wrapped`.
    async fn unwrap(
        &self,
        wrapped: &[u8],
        context: &SealContext,
    ) -> Result<SecretSlice<u8>, SealError>;
}

pub struct Sealer {
    keys: Box<dyn DataKeys>,
}

impl Sealer {
    pub fn new(keys: Box<dyn DataKeys>) -> Sealer {
        Sealer { keys }
    }

    pub async fn seal(
        &self,
        plaintext: &SecretString,
        context: &SealContext,
    ) -> Result<Vec<u8>, SealError> {
        let (data_key, wrapped) = self.keys.generate(context).await?;
        let wrapped_len = u16::try_from(wrapped.len())
            .map_err(|_| SealError::KeysRefused("wrapped data key too long".into()))?;
        let nonce = random_nonce()?;
        let mut sealed = plaintext.expose_secret().as_bytes().to_vec();
        aead_key(&data_key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.associated_data()),
                &mut sealed,
            )
            .map_err(|_| SealError::KeysRefused("encryption failed".into()))?;
        let mut out =
            Vec::with_capacity(MAGIC.len() + 2 + wrapped.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&wrapped_len.to_be_bytes());
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub async fn open(
        &self,
        sealed: &[u8],
        context: &SealContext,
    ) -> Result<SecretString, SealError> {
        let rest = sealed
            .strip_prefix(MAGIC.as_slice())
            .ok_or(SealError::Unreadable("unknown format"))?;
        let (length, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(SealError::Unreadable("truncated"))?;
        let wrapped_len = usize::from(u16::from_be_bytes(*length));
        if rest.len() < wrapped_len + NONCE_LEN {
            return Err(SealError::Unreadable("truncated"));
        }
        let (wrapped, rest) = rest.split_at(wrapped_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let data_key = self.keys.unwrap(wrapped, context).await?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let mut buffer = ciphertext.to_vec();
        let plaintext = aead_key(&data_key)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.associated_data()),
                &mut buffer,
            )
            .map_err(|_| SealError::Unreadable("authentication failed"))?;
        let text =
            String::from_utf8(plaintext.to_vec()).map_err(|_| SealError::Unreadable("not text"))?;
        Ok(SecretString::from(text))
    }
}

fn aead_key(data_key: &SecretSlice<u8>) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, data_key.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Unreadable("bad data key length"))
}

fn random_nonce() -> Result<[u8; NONCE_LEN], SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::KeysUnavailable("no random source".into()))?;
    Ok(nonce)
}

/// Data keys wrapped with a local key-encryption key derived (HKDF-SHA256) from the service's
/// signing key: the embedded default, where no KMS exists.
pub struct LocalDataKeys {
    key_encryption_key: LessSafeKey,
}

impl LocalDataKeys {
    pub fn from_service_key(secret: &SecretSlice<u8>) -> LocalDataKeys {
        let okm_key: UnboundKey = hkdf::Salt::new(hkdf::HKDF_SHA256, b"defender-partner")
            .extract(secret.expose_secret())
            .expand(&[b"refresh-token key-encryption key v1"], &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length")
            .into();
        LocalDataKeys {
            key_encryption_key: LessSafeKey::new(okm_key),
        }
    }
}

#[async_trait]
impl DataKeys for LocalDataKeys {
    async fn generate(
        &self,
        context: &SealContext,
    ) -> Result<(SecretSlice<u8>, Vec<u8>), SealError> {
        let mut data_key = vec![0u8; DATA_KEY_LEN];
        SystemRandom::new()
            .fill(&mut data_key)
            .map_err(|_| SealError::KeysUnavailable("no random source".into()))?;
        let nonce = random_nonce()?;
        let mut wrapped = data_key.clone();
        self.key_encryption_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.associated_data()),
                &mut wrapped,
            )
            .map_err(|_| SealError::KeysRefused("wrapping failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&wrapped);
        Ok((SecretSlice::from(data_key), out))
    }

    async fn unwrap(
        &self,
        wrapped: &[u8],
        context: &SealContext,
    ) -> Result<SecretSlice<u8>, SealError> {
        if wrapped.len() < NONCE_LEN {
            return Err(SealError::Unreadable("truncated data key"));
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let mut buffer = sealed.to_vec();
        let key = self
            .key_encryption_key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.associated_data()),
                &mut buffer,
            )
            .map_err(|_| SealError::Unreadable("data key does not open with this key"))?;
        Ok(SecretSlice::from(key.to_vec()))
    }
}

/// Data keys from AWS KMS (`GenerateDataKey` / `Decrypt`), with the tenant and user as the
/// encryption context, so CloudTrail shows whose token was opened and a key policy can pin it.
pub struct KmsDataKeys {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsDataKeys {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> KmsDataKeys {
        KmsDataKeys {
            client,
            key_id: key_id.into(),
        }
    }
}

fn kms_error<E, R>(error: aws_sdk_kms::error::SdkError<E, R>) -> SealError
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::fmt::Debug,
{
    match &error {
        aws_sdk_kms::error::SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown").to_owned();
            let message = service
                .err()
                .message()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            match code.as_str() {
                "InvalidCiphertextException" => {
                    SealError::Unreadable("KMS refused the wrapped data key")
                }
                // Sealed under another key than the one configured: a deployment problem, not
                // the user's; the sign-in is kept for when the key is put right.
                "IncorrectKeyException" => SealError::KeysRefused(format!(
                    "{code}: the sign-in was sealed with another KMS key than DP_SIGNIN_KMS_KEY_ID"
                )),
                "KMSInternalException" | "DependencyTimeoutException" | "ThrottlingException" => {
                    SealError::KeysUnavailable(format!("{code}: {message}"))
                }
                _ => SealError::KeysRefused(format!("{code}: {message}")),
            }
        }
        aws_sdk_kms::error::SdkError::TimeoutError(_) => {
            SealError::KeysUnavailable("KMS did not answer in time".into())
        }
        _ => SealError::KeysUnavailable("KMS could not be reached".into()),
    }
}

#[async_trait]
impl DataKeys for KmsDataKeys {
    async fn generate(
        &self,
        context: &SealContext,
    ) -> Result<(SecretSlice<u8>, Vec<u8>), SealError> {
        let mut request = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256);
        for (key, value) in context.pairs() {
            request = request.encryption_context(key, value);
        }
        let answer = request.send().await.map_err(kms_error)?;
        let plaintext = answer
            .plaintext
            .ok_or_else(|| SealError::KeysRefused("GenerateDataKey returned no key".into()))?;
        let wrapped = answer
            .ciphertext_blob
            .ok_or_else(|| SealError::KeysRefused("GenerateDataKey returned no blob".into()))?;
        Ok((
            SecretSlice::from(plaintext.into_inner()),
            wrapped.into_inner(),
        ))
    }

    async fn unwrap(
        &self,
        wrapped: &[u8],
        context: &SealContext,
    ) -> Result<SecretSlice<u8>, SealError> {
        let mut request = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped));
        for (key, value) in context.pairs() {
            request = request.encryption_context(key, value);
        }
        let answer = request.send().await.map_err(kms_error)?;
        let plaintext = answer
            .plaintext
            .ok_or_else(|| SealError::KeysRefused("Decrypt returned no key".into()))?;
        Ok(SecretSlice::from(plaintext.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Sealer {
        Sealer::new(Box::new(LocalDataKeys::from_service_key(
            &SecretSlice::from(b"0123456789abcdef0123456789abcdef".to_vec()),
        )))
    }

    fn context(user: &str) -> SealContext {
        SealContext {
            tenant: "22222222-2222-4222-8222-222222222222".into(),
            user_oid: user.into(),
        }
    }

    #[tokio::test]
    async fn seals_and_opens_and_never_holds_the_plaintext() {
        let sealer = local();
        let token = SecretString::from("0.AXoA-refresh-token-value-".repeat(80));
        let sealed = sealer.seal(&token, &context("u1")).await.unwrap();
        let needle = b"refresh-token-value";
        assert!(!sealed.windows(needle.len()).any(|window| window == needle));
        let opened = sealer.open(&sealed, &context("u1")).await.unwrap();
        assert_eq!(opened.expose_secret(), token.expose_secret());
        // Two seals of the same token differ (fresh data key and nonce).
        assert_ne!(sealed, sealer.seal(&token, &context("u1")).await.unwrap());
    }

    #[tokio::test]
    async fn another_user_another_key_or_a_changed_byte_does_not_open() {
        let sealer = local();
        let token = SecretString::from("rt");
        let sealed = sealer.seal(&token, &context("u1")).await.unwrap();
        assert!(matches!(
            sealer.open(&sealed, &context("u2")).await,
            Err(SealError::Unreadable(_))
        ));
        let other = Sealer::new(Box::new(LocalDataKeys::from_service_key(
            &SecretSlice::from(b"another key of the same length!!".to_vec()),
        )));
        assert!(other.open(&sealed, &context("u1")).await.is_err());
        for index in [0, 5, sealed.len() / 2, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[index] ^= 0x01;
            assert!(
                sealer.open(&changed, &context("u1")).await.is_err(),
                "{index}"
            );
        }
        for cut in [0, 3, 6, 20, sealed.len() - 1] {
            assert!(
                sealer.open(&sealed[..cut], &context("u1")).await.is_err(),
                "{cut}"
            );
        }
    }
}

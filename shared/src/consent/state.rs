//! The consent `state`: what the partner asked for (customer reference, which link), a nonce that
//! is accepted once, and an expiry, signed with HMAC-SHA256 so nobody else can mint one.
//! Format: `v1.<base64url JSON>.<base64url MAC>` — only characters Entra passes through unchanged.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};

const VERSION: &str = "v1";
/// Entra echoes `state` back; anything longer than this is not ours.
pub const MAX_STATE_LENGTH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    /// The nonce: the key of the consent attempt, accepted once.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The partner's reference for the customer.
    #[serde(rename = "c")]
    pub customer_ref: String,
    /// Which link was handed out.
    #[serde(rename = "k")]
    pub link: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
    /// The tenant this state is bound to: the one a tenant-bound link was issued for, or (in
    /// the administrator's sign-in after a consent) the one the administrator must prove.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl ConsentState {
    pub fn expires_at(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.expires, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the consent link carried no state")]
    Missing,
    #[error("the state is not one this service issued")]
    Malformed,
    #[error("the state's signature is invalid")]
    BadSignature,
    #[error("the consent link has expired")]
    Expired,
}

pub struct StateSigner {
    key: hmac::Key,
}

impl StateSigner {
    /// `secret` is the signing key material (any length; 32+ random bytes recommended).
    pub fn new(secret: &SecretSlice<u8>) -> StateSigner {
        StateSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret()),
        }
    }

    pub fn sign(&self, state: &ConsentState) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).expect("state serialises"));
        let signed = format!("{VERSION}.{payload}");
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks signature and expiry; the nonce's single use is the store's business.
    pub fn verify(
        &self,
        text: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ConsentState, StateError> {
        let text = text
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .ok_or(StateError::Missing)?;
        if text.len() > MAX_STATE_LENGTH {
            return Err(StateError::Malformed);
        }
        let (signed, tag) = text.rsplit_once('.').ok_or(StateError::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(StateError::Malformed)?;
        if version != VERSION {
            return Err(StateError::Malformed);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| StateError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| StateError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| StateError::Malformed)?;
        let state: ConsentState =
            serde_json::from_slice(&bytes).map_err(|_| StateError::Malformed)?;
        if state.expires_at() <= now {
            return Err(StateError::Expired);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(key: &[u8]) -> StateSigner {
        StateSigner::new(&SecretSlice::from(key.to_vec()))
    }

    fn state(expires_in: i64) -> ConsentState {
        ConsentState {
            nonce: "n0nce".into(),
            customer_ref: "CRM-1".into(),
            link: "v2".into(),
            expires: Utc::now().timestamp() + expires_in,
            tenant: None,
        }
    }

    #[test]
    fn round_trips_and_uses_only_url_safe_characters() {
        let signer = signer(b"0123456789abcdef0123456789abcdef");
        let signed = signer.sign(&state(600));
        assert!(
            signed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{signed}"
        );
        assert_eq!(
            signer.verify(Some(&signed), Utc::now()).unwrap(),
            state(600)
        );
    }

    #[test]
    fn a_bound_tenant_is_signed_too() {
        let signer = signer(b"0123456789abcdef0123456789abcdef");
        let mut bound = state(600);
        bound.tenant = Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into());
        let signed = signer.sign(&bound);
        assert_eq!(signer.verify(Some(&signed), Utc::now()).unwrap(), bound);
        // A state of an older release (no tenant) still reads.
        let unbound = signer.sign(&state(600));
        assert_eq!(
            signer.verify(Some(&unbound), Utc::now()).unwrap().tenant,
            None
        );
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let signer = signer(b"0123456789abcdef0123456789abcdef");
        let good = signer.sign(&state(600));
        assert_eq!(signer.verify(None, Utc::now()), Err(StateError::Missing));
        assert_eq!(
            signer.verify(Some("  "), Utc::now()),
            Err(StateError::Missing)
        );
        for malformed in [
            "x",
            "v1.abc",
            "v2.abc.def",
            "v1.!!!.AAAA",
            &"a".repeat(2000),
        ] {
            assert!(
                matches!(
                    signer.verify(Some(malformed), Utc::now()),
                    Err(StateError::Malformed | StateError::BadSignature)
                ),
                "{malformed}"
            );
        }
        // Another key: forged.
        let forged = self::signer(b"another key of the same length!!").sign(&state(600));
        assert_eq!(
            signer.verify(Some(&forged), Utc::now()),
            Err(StateError::BadSignature)
        );
        // Tampered payload with the original tag.
        let (_, tag) = good.rsplit_once('.').unwrap();
        let mut changed = state(600);
        changed.customer_ref = "CRM-2".into();
        let tampered_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&changed).unwrap());
        let tampered = format!("v1.{tampered_payload}.{tag}");
        assert_eq!(
            signer.verify(Some(&tampered), Utc::now()),
            Err(StateError::BadSignature)
        );
        // Expired.
        let old = signer.sign(&state(-1));
        assert_eq!(
            signer.verify(Some(&old), Utc::now()),
            Err(StateError::Expired)
        );
        // Valid signature over a payload that is not a state.
        let payload = URL_SAFE_NO_PAD.encode(b"{\"x\":1}");
        let body = format!("v1.{payload}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&key, body.as_bytes()).as_ref());
        assert_eq!(
            signer.verify(Some(&format!("{body}.{tag}")), Utc::now()),
            Err(StateError::Malformed)
        );
    }
}

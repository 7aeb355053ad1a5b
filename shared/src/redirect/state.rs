//! The signed single-use `state` a browser carries to Microsoft and back: a nonce (the key of the
//! attempt, accepted once by the attempt store), an expiry, and what the flow asked for (its
//! claims), signed with HMAC-SHA256 under a key of its own [`Purpose`], so that nobody else can
//! mint one and a `state` made for one step is never accepted by another.
//! Format: `v1.<base64url JSON>.<base64url MAC>` — only characters Entra passes through unchanged.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretSlice};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::key::derive_key;

const VERSION: &str = "v1";
/// Entra echoes `state` back; anything longer than this is not ours.
pub const MAX_STATE_LENGTH: usize = 1024;

/// What a `state` is for. Each purpose signs with its own key derived from the service key, so
/// the key that verifies a `state` also says which step it belongs to. The labels are part of
/// the deployed keys: changing one invalidates the links in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The admin-consent link handed out for a customer. Signed with the service key itself (it
    /// came first).
    ConsentLink,
    /// The administrator's sign-in that follows a consent and proves the tenant.
    AdminSignIn,
    /// A user's delegated sign-in.
    UserSignIn,
}

impl Purpose {
    fn key(self, service_key: &SecretSlice<u8>) -> SecretSlice<u8> {
        match self {
            Purpose::ConsentLink => service_key.clone(),
            Purpose::AdminSignIn => derive_key(
                service_key,
                b"defender-partner consent sign-in state key v1",
            ),
            Purpose::UserSignIn => {
                derive_key(service_key, b"defender-partner sign-in state key v1")
            }
        }
    }
}

/// A `state`'s content: what every flow needs (`nonce`, `expires`) and what its own flow asked
/// for (`claims`, flattened into the same JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedState<C> {
    /// The key of the attempt in the store, accepted once.
    #[serde(rename = "n")]
    pub nonce: String,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires: i64,
    #[serde(flatten)]
    pub claims: C,
}

impl<C> SignedState<C> {
    pub fn expires_at(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.expires, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the link carried no state")]
    Missing,
    #[error("the state is not one this service issued")]
    Malformed,
    #[error("the state's signature is invalid")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

/// Signs and verifies the `state`s of one purpose.
pub struct StateSigner {
    key: hmac::Key,
}

impl StateSigner {
    /// `service_key` is the service's signing key (see [`super::key::load_state_key`]).
    pub fn new(service_key: &SecretSlice<u8>, purpose: Purpose) -> StateSigner {
        StateSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, purpose.key(service_key).expose_secret()),
        }
    }

    pub fn sign<C: Serialize>(&self, state: &SignedState<C>) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).expect("state serialises"));
        let signed = format!("{VERSION}.{payload}");
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks signature, form and expiry; the nonce's single use is the attempt store's business.
    pub fn verify<C: DeserializeOwned>(
        &self,
        text: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<SignedState<C>, StateError> {
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
        let state: SignedState<C> =
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

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Claims {
        #[serde(rename = "c")]
        customer: String,
        #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    }

    fn signer(key: &[u8], purpose: Purpose) -> StateSigner {
        StateSigner::new(&SecretSlice::from(key.to_vec()), purpose)
    }

    fn state(expires_in: i64) -> SignedState<Claims> {
        SignedState {
            nonce: "n0nce".into(),
            expires: Utc::now().timestamp() + expires_in,
            claims: Claims {
                customer: "CRM-1".into(),
                tenant: None,
            },
        }
    }

    #[test]
    fn round_trips_and_uses_only_url_safe_characters() {
        let signer = signer(KEY, Purpose::ConsentLink);
        let signed = signer.sign(&state(600));
        assert!(
            signed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{signed}"
        );
        assert_eq!(
            signer.verify::<Claims>(Some(&signed), Utc::now()).unwrap(),
            state(600)
        );
    }

    #[test]
    fn the_claims_sit_beside_nonce_and_expiry_in_one_object() {
        let mut bound = state(600);
        bound.claims.tenant = Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into());
        let json = serde_json::to_value(&bound).unwrap();
        assert_eq!(json["n"], "n0nce");
        assert_eq!(json["c"], "CRM-1");
        assert_eq!(json["t"], "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert!(json["e"].is_i64());
        // An optional claim left out still reads.
        let signer = signer(KEY, Purpose::ConsentLink);
        let unbound = signer.sign(&state(600));
        let read: SignedState<Claims> = signer.verify(Some(&unbound), Utc::now()).unwrap();
        assert_eq!(read.claims.tenant, None);
    }

    #[test]
    fn a_state_of_one_purpose_is_refused_by_every_other() {
        let purposes = [
            Purpose::ConsentLink,
            Purpose::AdminSignIn,
            Purpose::UserSignIn,
        ];
        for made_for in purposes {
            let signed = signer(KEY, made_for).sign(&state(600));
            for checked_by in purposes {
                let verdict = signer(KEY, checked_by).verify::<Claims>(Some(&signed), Utc::now());
                if made_for == checked_by {
                    assert!(verdict.is_ok(), "{made_for:?}");
                } else {
                    assert_eq!(
                        verdict,
                        Err(StateError::BadSignature),
                        "{made_for:?} by {checked_by:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_consent_link_signs_with_the_service_key_itself() {
        // Links handed out before purposes existed stay valid: the key is unchanged.
        let raw = hmac::Key::new(hmac::HMAC_SHA256, KEY);
        let signed = signer(KEY, Purpose::ConsentLink).sign(&state(600));
        let (body, tag) = signed.rsplit_once('.').unwrap();
        let expected = URL_SAFE_NO_PAD.encode(hmac::sign(&raw, body.as_bytes()).as_ref());
        assert_eq!(tag, expected);
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let signer = signer(KEY, Purpose::ConsentLink);
        let verify = |text: Option<&str>| signer.verify::<Claims>(text, Utc::now());
        let good = signer.sign(&state(600));
        assert_eq!(verify(None), Err(StateError::Missing));
        assert_eq!(verify(Some("  ")), Err(StateError::Missing));
        for malformed in [
            "x",
            "v1.abc",
            "v2.abc.def",
            "v1.!!!.AAAA",
            &"a".repeat(2000),
        ] {
            assert!(
                matches!(
                    verify(Some(malformed)),
                    Err(StateError::Malformed | StateError::BadSignature)
                ),
                "{malformed}"
            );
        }
        // Another key: forged.
        let forged = self::signer(b"another key of the same length!!", Purpose::ConsentLink)
            .sign(&state(600));
        assert_eq!(verify(Some(&forged)), Err(StateError::BadSignature));
        // Tampered payload with the original tag.
        let (_, tag) = good.rsplit_once('.').unwrap();
        let mut changed = state(600);
        changed.claims.customer = "CRM-2".into();
        let tampered_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&changed).unwrap());
        let tampered = format!("v1.{tampered_payload}.{tag}");
        assert_eq!(verify(Some(&tampered)), Err(StateError::BadSignature));
        // Expired.
        let old = signer.sign(&state(-1));
        assert_eq!(verify(Some(&old)), Err(StateError::Expired));
        // Valid signature over a payload that is not a state.
        let payload = URL_SAFE_NO_PAD.encode(b"{\"x\":1}");
        let body = format!("v1.{payload}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, KEY);
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&key, body.as_bytes()).as_ref());
        assert_eq!(
            verify(Some(&format!("{body}.{tag}"))),
            Err(StateError::Malformed)
        );
    }
}

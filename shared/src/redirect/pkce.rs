//! PKCE (RFC 7636, S256) without storing the verifier: it is derived from the sign-in's
//! single-use nonce with a key only the service holds, so the callback can recompute it and
//! nothing secret waits in the table between the redirect and the callback.

use aws_lc_rs::{digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

pub struct PkceDeriver {
    key: hmac::Key,
}

impl PkceDeriver {
    /// `secret`: the service's signing key; the derivation is domain-separated from its other uses.
    pub fn new(secret: &SecretSlice<u8>) -> PkceDeriver {
        let base = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret());
        let derived = hmac::sign(&base, b"defender-partner pkce verifier key v1");
        PkceDeriver {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The verifier of the sign-in `nonce`: 43 base64url characters (256 bits).
    pub fn verifier(&self, nonce: &str) -> SecretString {
        let tag = hmac::sign(&self.key, nonce.as_bytes());
        SecretString::from(URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The `code_challenge` sent with the authorize link.
    pub fn challenge(&self, nonce: &str) -> String {
        challenge_of(&self.verifier(nonce))
    }
}

/// OpenID Connect `nonce`s derived, like the PKCE verifiers, from a sign-in's single-use
/// attempt nonce with a key only the service holds: nothing waits in the store, and the ID
/// token that comes back must carry exactly this value.
pub struct NonceDeriver {
    key: hmac::Key,
}

impl NonceDeriver {
    /// `secret`: the service's signing key; `purpose` separates the flows that use it.
    pub fn new(secret: &SecretSlice<u8>, purpose: &[u8]) -> NonceDeriver {
        let base = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret());
        let derived = hmac::sign(&base, purpose);
        NonceDeriver {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The `nonce` of the attempt `attempt_nonce`: 43 base64url characters.
    pub fn nonce(&self, attempt_nonce: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, attempt_nonce.as_bytes()).as_ref())
    }
}

pub fn challenge_of(verifier: &SecretString) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(
        &digest::SHA256,
        verifier.expose_secret().as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deriver(key: &[u8]) -> PkceDeriver {
        PkceDeriver::new(&SecretSlice::from(key.to_vec()))
    }

    #[test]
    fn s256_matches_rfc7636_appendix_b() {
        let verifier = SecretString::from("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            challenge_of(&verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_stable_per_nonce_and_differ_by_nonce_and_key() {
        let a = deriver(b"0123456789abcdef0123456789abcdef");
        let b = deriver(b"another key of the same length!!");
        let first = a.verifier("nonce-1");
        assert_eq!(first.expose_secret(), a.verifier("nonce-1").expose_secret());
        assert_eq!(first.expose_secret().len(), 43);
        assert!(
            first
                .expose_secret()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(first.expose_secret(), a.verifier("nonce-2").expose_secret());
        assert_ne!(first.expose_secret(), b.verifier("nonce-1").expose_secret());
        assert_eq!(a.challenge("nonce-1"), challenge_of(&first));
    }
}

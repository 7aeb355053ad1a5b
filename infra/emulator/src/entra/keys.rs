//! The emulator's token-signing key: generated at start, published as a JWKS.
//!
//! A fresh key per run means a token from an earlier run never validates, as after a real key
//! rollover; clients must fetch the keys from the emulator they talk to.

use anyhow::Context;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::json;

pub(crate) struct SigningKey {
    key_pair: KeyPair,
    kid: String,
    n: String,
    e: String,
}

impl SigningKey {
    /// Takes tens of milliseconds: call it off the async executor.
    pub(crate) fn generate() -> anyhow::Result<SigningKey> {
        let key_pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
        let public_key = key_pair.public_key();
        // Entra's kid is a certificate thumbprint; a hash of the public key is as stable.
        let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, public_key.as_ref()));
        let n = URL_SAFE_NO_PAD.encode(public_key.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public_key.exponent().big_endian_without_leading_zero());
        Ok(SigningKey {
            key_pair,
            kid,
            n,
            e,
        })
    }

    /// An RS256 JWT over `claims`, with `kid` in the header.
    pub(crate) fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).context("claims do not serialize")?)
        );
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// The key set in Entra's format; `issuer` is added as in the v2 key documents.
    pub(crate) fn jwks(&self, issuer: Option<&str>) -> serde_json::Value {
        let mut key = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        });
        if let Some(issuer) = issuer {
            key["issuer"] = json!(issuer);
        }
        json!({ "keys": [key] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    #[test]
    fn signed_tokens_verify_with_the_published_key() {
        let key = SigningKey::generate().unwrap();
        let token = key
            .sign(&json!({"aud": "a", "exp": 4_000_000_000u64}))
            .unwrap();
        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));

        let set: JwkSet = serde_json::from_value(key.jwks(None)).unwrap();
        let jwk = set.find(key.kid.as_str()).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["a"]);
        let decoded =
            decode::<serde_json::Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
                .unwrap();
        assert_eq!(decoded.claims["aud"], "a");
    }
}

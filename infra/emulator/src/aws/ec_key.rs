//! The issuer's ES384 key (P-384): STS signs with it when a caller asks for `ES384`.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::json;

/// Bytes of one P-384 coordinate.
const COORDINATE_LENGTH: usize = 48;

pub(crate) struct EcSigningKey {
    key_pair: EcdsaKeyPair,
    kid: String,
    x: String,
    y: String,
}

impl EcSigningKey {
    pub(crate) fn generate() -> anyhow::Result<EcSigningKey> {
        let key_pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .map_err(|_| anyhow::anyhow!("P-384 key generation failed"))?;
        // An uncompressed point: 0x04, then x, then y.
        let point = key_pair.public_key().as_ref();
        let coordinates = point
            .strip_prefix(&[0x04])
            .filter(|rest| rest.len() == 2 * COORDINATE_LENGTH)
            .ok_or_else(|| anyhow::anyhow!("unexpected P-384 public key encoding"))?;
        let (x, y) = coordinates.split_at(COORDINATE_LENGTH);
        Ok(EcSigningKey {
            kid: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, point)),
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
            key_pair,
        })
    }

    /// An ES384 JWT over `claims` (JWS signature: `r || s`, 48 bytes each).
    pub(crate) fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let header = json!({"typ": "JWT", "alg": "ES384", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let signature = self
            .key_pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("P-384 signing failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    pub(crate) fn jwk(&self) -> serde_json::Value {
        json!({
            "kty": "EC",
            "use": "sig",
            "alg": "ES384",
            "crv": "P-384",
            "kid": self.kid,
            "x": self.x,
            "y": self.y,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    #[test]
    fn signed_tokens_verify_with_the_published_key() {
        let key = EcSigningKey::generate().unwrap();
        let token = key
            .sign(&json!({"sub": "s", "exp": 4_000_000_000u64}))
            .unwrap();
        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES384);
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
        let jwk: Jwk = serde_json::from_value(key.jwk()).unwrap();
        let decoded = decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &Validation::new(Algorithm::ES384),
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "s");
    }
}

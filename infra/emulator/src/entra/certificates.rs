//! Certificate credentials: thumbprints and public key of an app's certificate.
//!
//! Only the few DER fields needed are read (the certificate bytes for the thumbprints and the
//! subject public key), which a small walker does without an X.509 dependency.

use anyhow::{Context, bail};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;

/// A parsed certificate credential.
#[derive(Clone)]
pub(crate) struct Certificate {
    /// base64url SHA-1 of the DER: what a client puts in the `x5t` header.
    pub x5t: String,
    /// base64url SHA-256 of the DER: what a client puts in the `x5t#S256` header.
    pub x5t_s256: String,
    /// The certificate's RSA public key.
    pub key: DecodingKey,
}

impl Certificate {
    pub(crate) fn from_pem(pem: &str) -> anyhow::Result<Certificate> {
        let der = pem_certificate_der(pem)?;
        let spki = subject_public_key_info(&der).context("not an X.509 certificate")?;
        if !spki_is_rsa(spki) {
            bail!("the certificate's key is not an RSA key");
        }
        let public_key = aws_lc_rs::rsa::PublicKey::from_der(spki)
            .map_err(|error| anyhow::anyhow!("the certificate's RSA key is unusable: {error}"))?;
        let key = DecodingKey::from_rsa_raw_components(
            public_key.modulus().big_endian_without_leading_zero(),
            public_key.exponent().big_endian_without_leading_zero(),
        );
        Ok(Certificate {
            x5t: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &der)),
            key,
        })
    }
}

/// The DER of the first `CERTIFICATE` block; other blocks (a chain, a key) are ignored.
fn pem_certificate_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem
        .find(BEGIN)
        .context("no -----BEGIN CERTIFICATE----- block")?
        + BEGIN.len();
    let length = pem[start..]
        .find(END)
        .context("no -----END CERTIFICATE----- line")?;
    let body: String = pem[start..start + length]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .context("the certificate block is not base64")
}

const SEQUENCE: u8 = 0x30;
const EXPLICIT_VERSION: u8 = 0xa0;
/// DER of the OBJECT IDENTIFIER rsaEncryption (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];

/// One DER element: its tag, its content, the whole encoding, and what follows it.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
    rest: &'a [u8],
}

fn read_element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    let (&first, after_length_byte) = after_tag.split_first()?;
    let (length, content_start) = if first < 0x80 {
        (usize::from(first), after_length_byte)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_length_byte.len() < count {
            return None;
        }
        let length = after_length_byte[..count]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (length, &after_length_byte[count..])
    };
    if content_start.len() < length {
        return None;
    }
    let header_length = input.len() - content_start.len();
    Some(Element {
        tag,
        content: &content_start[..length],
        whole: &input[..header_length + length],
        rest: &content_start[length..],
    })
}

/// Certificate → tbsCertificate → the seventh field (after the optional version): the
/// SubjectPublicKeyInfo, returned whole (its DER is what key parsers take).
fn subject_public_key_info(der: &[u8]) -> Option<&[u8]> {
    let certificate = read_element(der).filter(|e| e.tag == SEQUENCE)?;
    let tbs = read_element(certificate.content).filter(|e| e.tag == SEQUENCE)?;
    let mut field = read_element(tbs.content)?;
    if field.tag == EXPLICIT_VERSION {
        field = read_element(field.rest)?;
    }
    // serialNumber, signature, issuer, validity, subject come before the key.
    for _ in 0..5 {
        field = read_element(field.rest)?;
    }
    (field.tag == SEQUENCE).then_some(field.whole)
}

fn spki_is_rsa(spki: &[u8]) -> bool {
    read_element(spki)
        .and_then(|spki| read_element(spki.content))
        .and_then(|algorithm| read_element(algorithm.content))
        .is_some_and(|oid| oid.whole == RSA_ENCRYPTION_OID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_text_that_is_not_a_certificate() {
        for pem in [
            "",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
            "-----BEGIN CERTIFICATE-----\nMAA=\n",
        ] {
            assert!(Certificate::from_pem(pem).is_err(), "{pem:?}");
        }
    }

    #[test]
    fn reads_long_form_lengths() {
        let mut der = vec![0x04, 0x82, 0x01, 0x00];
        der.extend(std::iter::repeat_n(7u8, 256));
        der.push(0x05);
        let element = read_element(&der).unwrap();
        assert_eq!(element.tag, 0x04);
        assert_eq!(element.content.len(), 256);
        assert_eq!(element.rest, [0x05]);
    }

    #[test]
    fn refuses_truncated_elements() {
        assert!(read_element(&[0x30, 0x05, 0x00]).is_none());
        assert!(read_element(&[0x30, 0x82, 0x01]).is_none());
        assert!(read_element(&[0x30]).is_none());
    }
}

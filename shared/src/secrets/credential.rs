//! Parsing the credential JSON into a usable credential.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::CredentialError;
use super::expiry::{CredentialEnd, certificate_not_after, end_of};
use crate::entra::federated::FederatedAssertions;
use crate::tenant_id::TenantId;
use chrono::{DateTime, Utc};

/// The partner app's identity and proof.
pub struct AppCredential {
    pub client_id: String,
    pub kind: CredentialKind,
    /// SHA-256 of the stored material: tells a rotated credential from the one refused, without
    /// keeping a second copy of the secret.
    fingerprint: [u8; 32],
    /// When it stops working (`secrets::expiry`).
    end: CredentialEnd,
}

pub enum CredentialKind {
    ClientSecret(SecretString),
    Certificate(CertificateCredential),
    /// No secret at all: the function's AWS identity, as a token from STS, is the assertion.
    AwsFederated(FederatedCredential),
}

/// The value of the credential JSON's `credential` field that selects the federated kind.
pub const AWS_FEDERATED: &str = "aws_federated";

/// The federated credential: where its AWS tokens come from (shared, cached).
#[derive(Clone)]
pub struct FederatedCredential {
    assertions: Arc<FederatedAssertions>,
}

impl FederatedCredential {
    pub fn new(assertions: Arc<FederatedAssertions>) -> FederatedCredential {
        FederatedCredential { assertions }
    }

    pub fn assertions(&self) -> &Arc<FederatedAssertions> {
        &self.assertions
    }
}

pub struct CertificateCredential {
    key: EncodingKey,
    pub algorithm: Algorithm,
    /// `x5t#S256`: base64url SHA-256 of the certificate (DER).
    pub thumbprint_sha256: String,
    /// `x5t`: base64url SHA-1 of the certificate, what RS256 assertions carry.
    pub thumbprint_sha1: String,
    /// The certificate's `notAfter`, or why it could not be read.
    pub(super) not_after: Result<DateTime<Utc>, String>,
}

impl CertificateCredential {
    pub(crate) fn key(&self) -> &EncodingKey {
        &self.key
    }
}

impl fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            CredentialKind::ClientSecret(_) => "client_secret",
            CredentialKind::Certificate(_) => "certificate",
            CredentialKind::AwsFederated(_) => AWS_FEDERATED,
        };
        f.debug_struct("AppCredential")
            .field("client_id", &self.client_id)
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct CredentialDocument {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    certificate_pem: Option<String>,
    private_key_pem: Option<SecretString>,
    signing_algorithm: Option<String>,
    /// `aws_federated` for the secretless kind; absent (or `client_secret` / `certificate`)
    /// for the kinds the other fields describe.
    credential: Option<String>,
    /// The credential's end date (RFC 3339), as the operator recorded it.
    expires_at: Option<serde_json::Value>,
    /// The same, named as Graph names it in the app's `passwordCredentials` / `keyCredentials`.
    #[serde(rename = "endDateTime")]
    end_date_time: Option<serde_json::Value>,
}

impl AppCredential {
    /// Parses the credential JSON. Error messages name fields, never values.
    pub fn from_json(text: &SecretString) -> Result<AppCredential, CredentialError> {
        AppCredential::from_json_with_federation(text, None)
    }

    /// Parses the credential JSON; an `aws_federated` credential gets its AWS tokens from
    /// `federation`.
    pub fn from_json_with_federation(
        text: &SecretString,
        federation: Option<&Arc<FederatedAssertions>>,
    ) -> Result<AppCredential, CredentialError> {
        let document: CredentialDocument = serde_json::from_str(text.expose_secret())
            .map_err(|error| {
                // serde's message has a line/column and a field name, never the input.
                CredentialError::Malformed(format!(
                    "not the expected JSON object ({}:{}); expected {{\"client_id\", \"client_secret\"}}, {{\"client_id\", \"certificate_pem\", \"private_key_pem\"}} or {{\"client_id\", \"credential\": \"aws_federated\"}}",
                    error.line(),
                    error.column()
                ))
            })?;
        let client_id = document
            .client_id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| CredentialError::Malformed("client_id is missing".into()))?;
        let client_id = TenantId::parse(&client_id)
            .map_err(|_| {
                CredentialError::Malformed(
                    "client_id is not a GUID: use the app registration's Application (client) ID"
                        .into(),
                )
            })?
            .to_string();
        let fingerprint = sha256(text.expose_secret().as_bytes());

        let federated = match document.credential.as_deref().map(str::trim) {
            Some(AWS_FEDERATED) => true,
            None | Some("client_secret" | "certificate") => false,
            Some(_) => {
                return Err(CredentialError::Malformed(format!(
                    "credential names an unknown kind: use \"{AWS_FEDERATED}\", or leave it out for a client secret or certificate"
                )));
            }
        };
        if federated {
            if document.client_secret.is_some()
                || document.certificate_pem.is_some()
                || document.private_key_pem.is_some()
            {
                return Err(CredentialError::Malformed(format!(
                    "an {AWS_FEDERATED} credential has no client_secret or certificate: remove them"
                )));
            }
            let assertions = federation.ok_or_else(|| {
                CredentialError::Malformed(format!(
                    "the credential is {AWS_FEDERATED} but this process has no AWS token source for it"
                ))
            })?;
            return Ok(AppCredential {
                client_id,
                kind: CredentialKind::AwsFederated(FederatedCredential::new(assertions.clone())),
                fingerprint,
                end: CredentialEnd::Never,
            });
        }

        let kind = match (
            document.client_secret,
            document.certificate_pem,
            document.private_key_pem,
        ) {
            (Some(secret), None, None) => {
                if secret.expose_secret().trim().is_empty() {
                    return Err(CredentialError::Malformed("client_secret is empty".into()));
                }
                CredentialKind::ClientSecret(secret)
            }
            (None, Some(certificate), Some(key)) => {
                CredentialKind::Certificate(CertificateCredential::from_pem(
                    &certificate,
                    &key,
                    document.signing_algorithm.as_deref(),
                )?)
            }
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(CredentialError::Malformed(
                    "a certificate credential needs both certificate_pem and private_key_pem"
                        .into(),
                ));
            }
            (None, None, None) => {
                return Err(CredentialError::Malformed(
                    "neither client_secret nor certificate_pem + private_key_pem is present".into(),
                ));
            }
            (Some(_), _, _) => {
                return Err(CredentialError::Malformed(
                    "give either client_secret or a certificate, not both".into(),
                ));
            }
        };
        let declared = document
            .expires_at
            .as_ref()
            .or(document.end_date_time.as_ref());
        Ok(AppCredential {
            end: end_of(&kind, declared),
            client_id,
            kind,
            fingerprint,
        })
    }

    /// When the credential stops working, as far as it says.
    pub fn end(&self) -> &CredentialEnd {
        &self.end
    }

    pub fn same_material_as(&self, other: &AppCredential) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl CertificateCredential {
    fn from_pem(
        certificate_pem: &str,
        private_key_pem: &SecretString,
        algorithm: Option<&str>,
    ) -> Result<CertificateCredential, CredentialError> {
        let certificate = pem::parse(certificate_pem.trim()).map_err(|_| {
            CredentialError::Malformed("certificate_pem is not a PEM certificate".into())
        })?;
        if certificate.tag() != "CERTIFICATE" {
            return Err(CredentialError::Malformed(format!(
                "certificate_pem holds a {:?} block; expected CERTIFICATE",
                certificate.tag()
            )));
        }
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().trim().as_bytes())
            .map_err(|_| {
                CredentialError::Malformed(
                    "private_key_pem is not an RSA private key in PEM (PKCS#1 or PKCS#8)".into(),
                )
            })?;
        let algorithm = match algorithm
            .map(|text| text.trim().to_ascii_uppercase())
            .as_deref()
        {
            None | Some("PS256") => Algorithm::PS256,
            Some("RS256") => Algorithm::RS256,
            Some(other) => {
                return Err(CredentialError::Malformed(format!(
                    "signing_algorithm {other:?} is not supported: use PS256 or RS256"
                )));
            }
        };
        let der = certificate.contents();
        Ok(CertificateCredential {
            key,
            algorithm,
            thumbprint_sha256: URL_SAFE_NO_PAD.encode(sha256(der)),
            thumbprint_sha1: URL_SAFE_NO_PAD
                .encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
            not_after: certificate_not_after(der),
        })
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const CLIENT_ID: &str = "11111111-1111-4111-8111-111111111111";

    pub fn secret_json(secret: &str) -> SecretString {
        SecretString::from(format!(
            r#"{{"client_id":"{CLIENT_ID}","client_secret":"{secret}"}}"#
        ))
    }

    #[test]
    fn parses_a_client_secret() {
        let credential = AppCredential::from_json(&secret_json("s3cr3t-value")).unwrap();
        assert_eq!(credential.client_id, CLIENT_ID);
        assert!(matches!(credential.kind, CredentialKind::ClientSecret(_)));
        let debug = format!("{credential:?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
    }

    #[test]
    fn fingerprint_tells_rotations_apart() {
        let a = AppCredential::from_json(&secret_json("one")).unwrap();
        let b = AppCredential::from_json(&secret_json("two")).unwrap();
        let a2 = AppCredential::from_json(&secret_json("one")).unwrap();
        assert!(!a.same_material_as(&b));
        assert!(a.same_material_as(&a2));
    }

    #[test]
    fn malformed_documents_never_echo_the_secret() {
        let cases = [
            r#"{"client_secret":"leak-me-1"}"#,
            r#"{"client_id":"not-a-guid","client_secret":"leak-me-2"}"#,
            r#"{"client_id":"11111111-1111-4111-8111-111111111111"}"#,
            r#"{"client_id":"11111111-1111-4111-8111-111111111111","client_secret":"leak-me-3","certificate_pem":"x","private_key_pem":"y"}"#,
            r#"{"client_id":"11111111-1111-4111-8111-111111111111","certificate_pem":"leak-me-4"}"#,
            r#"{"client_id":"11111111-1111-4111-8111-111111111111","certificate_pem":"leak-me-5","private_key_pem":"leak-me-6"}"#,
            r#"{"client_id": "11111111-1111-4111-8111-111111111111", "client_secret": leak-me-7}"#,
            "leak-me-8",
        ];
        for case in cases {
            let error = AppCredential::from_json(&SecretString::from(case)).unwrap_err();
            let message = error.to_string();
            assert!(!message.contains("leak-me"), "{message}");
            assert!(matches!(error, CredentialError::Malformed(_)));
        }
    }

    #[test]
    fn parses_an_aws_federated_credential_without_any_secret() {
        use crate::entra::federated::assertions_for_tests;
        let json = SecretString::from(format!(
            r#"{{"client_id":"{CLIENT_ID}","credential":"aws_federated"}}"#
        ));
        let federation = assertions_for_tests();
        let credential =
            AppCredential::from_json_with_federation(&json, Some(&federation)).unwrap();
        assert_eq!(credential.client_id, CLIENT_ID);
        assert!(matches!(credential.kind, CredentialKind::AwsFederated(_)));
        assert!(format!("{credential:?}").contains("aws_federated"));
        // Without a token source it is refused, with a message that says why.
        let error = AppCredential::from_json(&json).unwrap_err();
        assert!(error.to_string().contains("no AWS token source"), "{error}");
    }

    #[test]
    fn a_federated_credential_carrying_a_secret_or_an_unknown_kind_is_refused() {
        use crate::entra::federated::assertions_for_tests;
        let federation = assertions_for_tests();
        for case in [
            format!(
                r#"{{"client_id":"{CLIENT_ID}","credential":"aws_federated","client_secret":"leak-me-1"}}"#
            ),
            format!(
                r#"{{"client_id":"{CLIENT_ID}","credential":"aws_federated","private_key_pem":"leak-me-2"}}"#
            ),
            format!(r#"{{"client_id":"{CLIENT_ID}","credential":"leak-me-3"}}"#),
            r#"{"credential":"aws_federated"}"#.to_owned(),
        ] {
            let error = AppCredential::from_json_with_federation(
                &SecretString::from(case),
                Some(&federation),
            )
            .unwrap_err();
            assert!(matches!(error, CredentialError::Malformed(_)));
            assert!(!error.to_string().contains("leak-me"), "{error}");
        }
    }
}

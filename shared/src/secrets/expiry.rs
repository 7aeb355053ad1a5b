//! When the app's credential stops working: a client secret's end date as the credential JSON
//! declares it (`expires_at`, or Graph's `endDateTime` copied from the app's
//! `passwordCredentials`), a certificate's `notAfter` (or the earlier declared end, for a key
//! credential registered to end before its certificate does). The secretless `aws_federated`
//! credential has nothing that expires.
//!
//! An end date that cannot be read never stops the credential from being used (a typo in an
//! informational field must not stop token minting); it is reported as unreadable instead.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;

use super::{AppCredential, CredentialKind};

/// `dp-operator status` and the `CredentialDaysLeft` alarm warn this many days ahead.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The credential JSON's field names for the end date, in the order they are looked at.
pub const END_DATE_FIELDS: [&str; 2] = ["expires_at", "endDateTime"];

/// What is known of the credential's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum CredentialEnd {
    /// Secretless (`aws_federated`): nothing expires.
    Never,
    /// A client secret whose JSON declares no end date.
    Undeclared,
    At {
        at: DateTime<Utc>,
    },
    /// Declared, or in the certificate, but not readable as a time.
    Unreadable {
        problem: String,
    },
}

/// The instant the credential stops working, when it is known.
pub fn credential_expiry(credential: &AppCredential) -> Option<DateTime<Utc>> {
    match credential.end() {
        CredentialEnd::At { at } => Some(*at),
        _ => None,
    }
}

/// Whole days from `now` to `end`, rounded down; negative once it has passed.
pub fn days_left(end: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (end - now).num_seconds().div_euclid(86_400)
}

/// The `CredentialDaysLeft` figure: days until the credential expires, `None` when it has no
/// known end (secretless, or undeclared).
pub fn credential_days_left(credential: &AppCredential, now: DateTime<Utc>) -> Option<i64> {
    credential_expiry(credential).map(|end| days_left(end, now))
}

/// The end of a credential of `kind`: `declared` is the first of [`END_DATE_FIELDS`] present in
/// its JSON.
pub(super) fn end_of(kind: &CredentialKind, declared: Option<&serde_json::Value>) -> CredentialEnd {
    let not_after = match kind {
        CredentialKind::AwsFederated(_) => return CredentialEnd::Never,
        CredentialKind::ClientSecret(_) => None,
        CredentialKind::Certificate(certificate) => match &certificate.not_after {
            Ok(not_after) => Some(*not_after),
            Err(problem) => {
                return CredentialEnd::Unreadable {
                    problem: problem.clone(),
                };
            }
        },
    };
    let declared = match declared.map(parse_declared).transpose() {
        Ok(declared) => declared,
        Err(problem) => return CredentialEnd::Unreadable { problem },
    };
    match (declared, not_after) {
        (Some(declared), Some(not_after)) => CredentialEnd::At {
            at: declared.min(not_after),
        },
        (Some(at), None) | (None, Some(at)) => CredentialEnd::At { at },
        (None, None) => CredentialEnd::Undeclared,
    }
}

/// RFC 3339 (`2027-06-30T00:00:00Z`, any fraction: Graph writes seven digits); tolerated too: no
/// offset (taken as UTC, as Graph means it) and a bare date (its start, UTC: the earlier reading).
fn parse_declared(value: &serde_json::Value) -> Result<DateTime<Utc>, String> {
    let unreadable = || {
        format!(
            "the credential's end date ({}) is not an RFC 3339 time such as 2027-06-30T00:00:00Z",
            END_DATE_FIELDS.join(" / ")
        )
    };
    let text = value.as_str().map(str::trim).ok_or_else(unreadable)?;
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.to_utc());
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(at.and_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|day| day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| unreadable())
}

/// A certificate's `notAfter` (DER).
pub(super) fn certificate_not_after(der: &[u8]) -> Result<DateTime<Utc>, String> {
    let unreadable = || "certificate_pem's notAfter could not be read".to_owned();
    let (_, certificate) = x509_parser::parse_x509_certificate(der).map_err(|_| unreadable())?;
    DateTime::from_timestamp(certificate.validity().not_after.timestamp(), 0).ok_or_else(unreadable)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use secrecy::SecretString;

    use super::*;
    use crate::secrets::credential::tests::CLIENT_ID;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn parse(json: String) -> AppCredential {
        AppCredential::from_json(&SecretString::from(json)).unwrap()
    }

    /// A self-signed RSA certificate valid until `not_after`, and its key (PKCS#8 PEM).
    fn certificate(not_after: (i32, u8, u8)) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["partner.example".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let certificate = params.self_signed(&key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    fn certificate_json(not_after: (i32, u8, u8), extra: &str) -> String {
        let (certificate, key) = certificate(not_after);
        serde_json::json!({
            "client_id": CLIENT_ID,
            "certificate_pem": certificate,
            "private_key_pem": key,
        })
        .to_string()
        .replacen('{', &format!("{{{extra}"), 1)
    }

    #[test]
    fn a_client_secret_ends_when_its_json_says() {
        for (field, value, expected) in [
            ("expires_at", "2027-06-30T12:00:00Z", "2027-06-30T12:00:00Z"),
            (
                "endDateTime",
                "2027-06-30T12:00:00.1234567Z",
                "2027-06-30T12:00:00.1234567Z",
            ),
            (
                "expires_at",
                "2027-06-30T14:00:00+02:00",
                "2027-06-30T12:00:00Z",
            ),
            ("endDateTime", "2027-06-30T12:00:00", "2027-06-30T12:00:00Z"),
            ("expires_at", "2027-06-30", "2027-06-30T00:00:00Z"),
        ] {
            let credential = parse(format!(
                r#"{{"client_id":"{CLIENT_ID}","client_secret":"s","{field}":"{value}"}}"#
            ));
            assert_eq!(
                credential_expiry(&credential),
                Some(at(expected)),
                "{value}"
            );
        }
    }

    #[test]
    fn a_client_secret_without_an_end_date_has_none_and_a_bad_one_is_reported_not_refused() {
        let credential = parse(format!(
            r#"{{"client_id":"{CLIENT_ID}","client_secret":"s"}}"#
        ));
        assert_eq!(credential.end(), &CredentialEnd::Undeclared);
        assert_eq!(credential_expiry(&credential), None);
        for value in [r#""next summer""#, "20270630", "[]"] {
            let credential = parse(format!(
                r#"{{"client_id":"{CLIENT_ID}","client_secret":"s","expires_at":{value}}}"#
            ));
            assert!(
                matches!(credential.end(), CredentialEnd::Unreadable { problem } if problem.contains("RFC 3339")),
                "{value}: {:?}",
                credential.end()
            );
            assert!(matches!(credential.kind, CredentialKind::ClientSecret(_)));
        }
    }

    #[test]
    fn a_certificate_ends_at_its_not_after_or_the_earlier_declared_end() {
        let credential = parse(certificate_json((2027, 3, 15), ""));
        assert!(matches!(credential.kind, CredentialKind::Certificate(_)));
        let not_after = credential_expiry(&credential).unwrap();
        assert_eq!(not_after.date_naive().to_string(), "2027-03-15");
        let earlier = parse(certificate_json(
            (2027, 3, 15),
            r#""endDateTime":"2027-01-01T00:00:00Z","#,
        ));
        assert_eq!(
            credential_expiry(&earlier),
            Some(at("2027-01-01T00:00:00Z"))
        );
        let later = parse(certificate_json(
            (2027, 3, 15),
            r#""expires_at":"2030-01-01","#,
        ));
        assert_eq!(credential_expiry(&later), Some(not_after));
    }

    #[test]
    fn a_federated_credential_never_expires() {
        use crate::entra::federated::assertions_for_tests;
        let json = SecretString::from(format!(
            r#"{{"client_id":"{CLIENT_ID}","credential":"aws_federated"}}"#
        ));
        let credential =
            AppCredential::from_json_with_federation(&json, Some(&assertions_for_tests())).unwrap();
        assert_eq!(credential.end(), &CredentialEnd::Never);
        assert_eq!(credential_days_left(&credential, Utc::now()), None);
    }

    #[test]
    fn days_left_round_down_and_go_negative_once_passed() {
        let end = at("2027-01-31T00:00:00Z");
        assert_eq!(days_left(end, end - Duration::days(30)), 30);
        assert_eq!(
            days_left(end, end - Duration::days(30) + Duration::seconds(1)),
            29
        );
        assert_eq!(days_left(end, end - Duration::hours(1)), 0);
        assert_eq!(days_left(end, end + Duration::hours(1)), -1);
    }
}

//! Which federated credential an assertion answers to, and Entra's code when none does.
//!
//! Credentials are narrowed by issuer, then subject, then audience, so that the error names
//! the first part that differs: the most specific code Entra has for the mismatch.

use crate::entra::errors::EntraError;
use crate::scenario::FederatedCredentialConfig;

pub(super) fn find<'a>(
    credentials: &'a [FederatedCredentialConfig],
    issuer: &str,
    subject: &str,
    audiences: &[String],
) -> Result<&'a FederatedCredentialConfig, EntraError> {
    let audience_matches = |credential: &FederatedCredentialConfig| {
        credential
            .audiences
            .iter()
            .any(|accepted| audiences.iter().any(|aud| aud == accepted))
    };
    let by_issuer: Vec<&FederatedCredentialConfig> = credentials
        .iter()
        .filter(|credential| credential.issuer == issuer)
        .collect();
    if by_issuer.is_empty() {
        let shares_anything = credentials
            .iter()
            .any(|credential| credential.subject == subject || audience_matches(credential));
        return Err(if shares_anything {
            EntraError::federated_issuer_not_matched(issuer)
        } else {
            EntraError::no_federated_credential_matches(issuer, subject, &audiences.join(","))
        });
    }
    let by_subject: Vec<&FederatedCredentialConfig> = by_issuer
        .iter()
        .copied()
        .filter(|credential| credential.subject == subject)
        .collect();
    if by_subject.is_empty() {
        let differs_in_case_only = by_issuer
            .iter()
            .any(|credential| credential.subject.eq_ignore_ascii_case(subject));
        return Err(if differs_in_case_only {
            EntraError::federated_subject_case_mismatch(subject)
        } else {
            EntraError::federated_subject_not_matched(subject)
        });
    }
    by_subject
        .into_iter()
        .find(|credential| audience_matches(credential))
        .ok_or_else(|| EntraError::federated_audience_not_matched(&audiences.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://issuer.example/aws";
    const ROLE: &str = "arn:aws:iam::123456789012:role/Minter";
    const AUDIENCE: &str = "api://AzureADTokenExchange";

    fn credentials() -> Vec<FederatedCredentialConfig> {
        vec![FederatedCredentialConfig {
            issuer: ISSUER.to_owned(),
            subject: ROLE.to_owned(),
            audiences: vec![AUDIENCE.to_owned()],
        }]
    }

    fn code(issuer: &str, subject: &str, audience: &str) -> Option<u32> {
        find(&credentials(), issuer, subject, &[audience.to_owned()])
            .err()
            .map(|error| error.code)
    }

    #[test]
    fn the_most_specific_code_wins() {
        assert_eq!(code(ISSUER, ROLE, AUDIENCE), None);
        assert_eq!(code("https://other", "other", "other"), Some(70021));
        assert_eq!(code("https://other", ROLE, AUDIENCE), Some(700211));
        assert_eq!(code("https://other", "other", AUDIENCE), Some(700211));
        assert_eq!(code(ISSUER, "other", AUDIENCE), Some(700213));
        assert_eq!(
            code(ISSUER, &ROLE.to_ascii_uppercase(), AUDIENCE),
            Some(7002138)
        );
        assert_eq!(code(ISSUER, ROLE, "api://other"), Some(700212));
        assert_eq!(
            find(&[], ISSUER, ROLE, &[AUDIENCE.to_owned()])
                .unwrap_err()
                .code,
            70021
        );
    }

    #[test]
    fn any_listed_audience_may_match() {
        let audiences = ["x".to_owned(), AUDIENCE.to_owned()];
        assert!(find(&credentials(), ISSUER, ROLE, &audiences).is_ok());
    }
}

//! What can go wrong getting the AWS token, typed, each with what the operator should do. No
//! message ever holds the JWT; AWS's own error messages are not repeated either (only the ARN of
//! the principal they name, which is not secret and is what the operator must fix).

use crate::{CallerError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    #[error(
        "outbound web identity federation is not enabled in AWS account {}: run `aws iam enable-outbound-web-identity-federation` in that account once, then register the issuer URL it prints on the Entra app (`dp-operator federation`) ({aws_code})",
        account.as_deref().unwrap_or("the function runs in")
    )]
    Disabled {
        account: Option<String>,
        aws_code: String,
    },
    #[error(
        "STS refused GetWebIdentityToken: the role {} lacks sts:GetWebIdentityToken, or its sts:IdentityTokenAudience / sts:DurationSeconds conditions refuse audience {audience:?} / duration {duration_seconds} s (DP_FEDERATION_AUDIENCE, DP_FEDERATION_DURATION_SECONDS) ({aws_code})",
        principal.as_deref().unwrap_or("the function runs as")
    )]
    Denied {
        principal: Option<String>,
        audience: String,
        duration_seconds: u64,
        aws_code: String,
    },
    #[error("STS refused the token request as asked: {hint} ({aws_code})")]
    Refused { aws_code: String, hint: String },
    #[error("AWS STS could not be reached or is busy: {0}; retry later")]
    Unavailable(String),
    #[error("AWS STS answered something that is not a web identity token: {0}")]
    Malformed(String),
    #[error(
        "the AWS token STS issued had already expired when it arrived (expiry {expires_at}, this machine's clock {now}): check the function's clock and DP_FEDERATION_DURATION_SECONDS (60-3600 s)"
    )]
    ArrivedExpired { expires_at: String, now: String },
}

impl FederationError {
    /// Worth asking STS again.
    pub fn is_transient(&self) -> bool {
        matches!(self, FederationError::Unavailable(_))
    }

    /// Types an STS error by its code (never by its message text).
    pub fn from_sts(
        aws_code: Option<&str>,
        aws_message: Option<&str>,
        request: &super::WebIdentityTokenRequest,
    ) -> FederationError {
        let principal = aws_message.and_then(principal_arn);
        let aws_code_text = aws_code.unwrap_or("no error code").to_owned();
        match aws_code {
            Some("OutboundWebIdentityFederationDisabledException") => FederationError::Disabled {
                account: principal.as_deref().and_then(account_of),
                aws_code: aws_code_text,
            },
            Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation") => {
                FederationError::Denied {
                    principal,
                    audience: request.audience.clone(),
                    duration_seconds: request.duration.as_secs(),
                    aws_code: aws_code_text,
                }
            }
            Some("SessionDurationEscalationException") => FederationError::Refused {
                hint: format!(
                    "a token of {} s would outlive the function's own session: lower DP_FEDERATION_DURATION_SECONDS",
                    request.duration.as_secs()
                ),
                aws_code: aws_code_text,
            },
            Some("JWTPayloadSizeExceededException") => FederationError::Refused {
                hint: "the token's claims are too large: the role or its session carries too many tags".into(),
                aws_code: aws_code_text,
            },
            Some("ValidationError" | "InvalidParameterValue" | "InvalidAction") => {
                FederationError::Refused {
                    hint: format!(
                        "check DP_FEDERATION_AUDIENCE ({:?}) and DP_FEDERATION_DURATION_SECONDS ({} s, 60–3600), and that this region's STS offers GetWebIdentityToken",
                        request.audience,
                        request.duration.as_secs()
                    ),
                    aws_code: aws_code_text,
                }
            }
            Some(
                "ExpiredToken" | "ExpiredTokenException" | "InvalidClientTokenId"
                | "SignatureDoesNotMatch" | "UnrecognizedClientException",
            ) => FederationError::Unavailable(format!(
                "the function's own AWS credentials were refused ({aws_code_text})"
            )),
            _ => FederationError::Unavailable(format!("STS error {aws_code_text}")),
        }
    }
}

impl CallerError for FederationError {
    fn code(&self) -> ErrorCode {
        match self {
            FederationError::Disabled { .. } => ErrorCode::FederationDisabled,
            FederationError::Denied { .. } => ErrorCode::FederationDenied,
            FederationError::Refused { .. } => ErrorCode::FederationRefused,
            FederationError::Unavailable(_) | FederationError::Malformed(_) => {
                ErrorCode::CredentialUnavailable
            }
            FederationError::ArrivedExpired { .. } => ErrorCode::ClientAssertionExpired,
        }
    }
}

/// The first IAM/STS ARN an AWS error message names (the caller or the role), if any.
fn principal_arn(message: &str) -> Option<String> {
    message
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '(' | ')'))
        .find(|word| {
            word.starts_with("arn:aws") && (word.contains(":iam::") || word.contains(":sts::"))
        })
        .map(|word| {
            word.trim_end_matches(['.', ':'])
                .chars()
                .take(256)
                .collect()
        })
}

/// `arn:aws:iam::123456789012:role/x` → `123456789012`.
fn account_of(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then(|| account.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::entra::federated::WebIdentityTokenRequest;

    fn request() -> WebIdentityTokenRequest {
        WebIdentityTokenRequest {
            audience: "api://AzureADTokenExchange".into(),
            duration: Duration::from_secs(300),
        }
    }

    #[test]
    fn disabled_federation_says_which_command_to_run() {
        let error = FederationError::from_sts(
            Some("OutboundWebIdentityFederationDisabledException"),
            Some(
                "Outbound federation is disabled for arn:aws:sts::123456789012:assumed-role/mint/fn.",
            ),
            &request(),
        );
        assert_eq!(error.code(), ErrorCode::FederationDisabled);
        assert_eq!(error.code().as_str(), "federation_disabled");
        let message = error.to_string();
        assert!(
            message.contains("aws iam enable-outbound-web-identity-federation"),
            "{message}"
        );
        assert!(message.contains("123456789012"), "{message}");
        assert!(!error.is_transient());
    }

    #[test]
    fn access_denied_names_the_role_the_audience_and_the_duration() {
        let error = FederationError::from_sts(
            Some("AccessDenied"),
            Some(
                "User: arn:aws:sts::123456789012:assumed-role/MintRole/session is not authorized to perform: sts:GetWebIdentityToken",
            ),
            &request(),
        );
        assert_eq!(error.code().as_str(), "federation_denied");
        let message = error.to_string();
        for expected in [
            "arn:aws:sts::123456789012:assumed-role/MintRole/session",
            "sts:GetWebIdentityToken",
            "sts:IdentityTokenAudience",
            "api://AzureADTokenExchange",
            "300 s",
        ] {
            assert!(message.contains(expected), "{expected} missing: {message}");
        }
        // Without an ARN in AWS's message the role is described, not invented.
        let anonymous = FederationError::from_sts(Some("AccessDenied"), None, &request());
        assert!(anonymous.to_string().contains("the function runs as"));
    }

    #[test]
    fn refusals_and_outages_are_told_apart() {
        for code in [
            "SessionDurationEscalationException",
            "JWTPayloadSizeExceededException",
            "ValidationError",
        ] {
            let error = FederationError::from_sts(Some(code), Some("text"), &request());
            assert_eq!(error.code(), ErrorCode::FederationRefused, "{code}");
            assert!(!error.is_transient());
        }
        for code in [
            Some("Throttling"),
            Some("InternalFailure"),
            Some("ExpiredToken"),
            None,
        ] {
            let error = FederationError::from_sts(code, None, &request());
            assert!(error.is_transient(), "{code:?}");
            assert_eq!(error.code(), ErrorCode::CredentialUnavailable);
        }
    }

    #[test]
    fn aws_message_text_is_not_repeated() {
        let error = FederationError::from_sts(
            Some("AccessDenied"),
            Some("secret-looking text eyJhbGciOi.payload.sig"),
            &request(),
        );
        assert!(!error.to_string().contains("eyJhbGciOi"));
    }
}

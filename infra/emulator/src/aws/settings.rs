//! The emulated AWS account's state: its configuration, the test switches and the call counts.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::ec_key::EcSigningKey;
use crate::entra::keys::SigningKey;
use crate::handle::ControlError;
use crate::scenario::AwsConfig;

/// How many `GetWebIdentityToken` requests arrived and how many got a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsCallCounts {
    pub get_web_identity_token: u64,
    pub tokens_issued: u64,
}

/// The next `count` tokens live `lifetime_seconds` whatever `DurationSeconds` asked for. Zero or
/// negative lifetimes issue tokens that are already expired, so that a test sees Entra refuse
/// one (AADSTS700024) without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShortLivedTokens {
    pub count: u32,
    pub lifetime_seconds: i64,
}

impl ShortLivedTokens {
    /// Below this, `exp` would be over an hour before `iat`: no test needs it.
    const MIN_LIFETIME_SECONDS: i64 = -3600;
    const MAX_LIFETIME_SECONDS: i64 = 3600;

    pub(crate) fn validate(&self) -> Result<(), ControlError> {
        if self.count == 0 {
            return Err(ControlError::Invalid("count must be at least 1".to_owned()));
        }
        if !(Self::MIN_LIFETIME_SECONDS..=Self::MAX_LIFETIME_SECONDS)
            .contains(&self.lifetime_seconds)
        {
            return Err(ControlError::Invalid(format!(
                "lifetime_seconds must be within {}..={}",
                Self::MIN_LIFETIME_SECONDS,
                Self::MAX_LIFETIME_SECONDS
            )));
        }
        Ok(())
    }
}

/// The next `count` STS calls fail with `status` and error `code` (e.g. 400 `Throttling`,
/// 503 `ServiceUnavailable`), before any other check: what a client's retries must survive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsFailure {
    pub count: u32,
    pub status: u16,
    pub code: String,
}

impl StsFailure {
    pub(crate) fn validate(&self) -> Result<(), ControlError> {
        if self.count == 0 {
            return Err(ControlError::Invalid("count must be at least 1".to_owned()));
        }
        if !(400..=599).contains(&self.status) {
            return Err(ControlError::Invalid(format!(
                "status {} is not an error status (400-599)",
                self.status
            )));
        }
        if self.code.is_empty()
            || self.code.len() > 64
            || !self.code.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(ControlError::Invalid(
                "code must be 1-64 ASCII letters or digits".to_owned(),
            ));
        }
        Ok(())
    }
}

pub(crate) struct AwsState {
    /// Sign the account's web identity tokens (`RS256`, `ES384`); both published at the
    /// issuer's `jwks.json`.
    pub rsa_key: SigningKey,
    pub ec_key: EcSigningKey,
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    pub config: AwsConfig,
    /// Every role lacks `sts:GetWebIdentityToken`: `AccessDenied`.
    pub role_denied: bool,
    /// The caller's session ends this many seconds from now: a longer `DurationSeconds` gets
    /// `SessionDurationEscalationException`. `None`: long-term credentials, no limit.
    pub session_remaining_seconds: Option<u64>,
    pub short_lived: Option<ShortLivedTokens>,
    pub failures: Option<StsFailure>,
    pub calls: StsCallCounts,
}

impl AwsState {
    pub(crate) fn new(config: AwsConfig, rsa_key: SigningKey, ec_key: EcSigningKey) -> AwsState {
        AwsState {
            rsa_key,
            ec_key,
            inner: Mutex::new(Inner {
                config,
                role_denied: false,
                session_remaining_seconds: None,
                short_lived: None,
                failures: None,
                calls: StsCallCounts::default(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// The lifetime override of the next token, consuming one use of it.
    pub(crate) fn take_short_lifetime(&mut self) -> Option<i64> {
        let short = self.short_lived.as_mut()?;
        let lifetime = short.lifetime_seconds;
        short.count -= 1;
        if short.count == 0 {
            self.short_lived = None;
        }
        Some(lifetime)
    }

    /// The injected failure of this call, consuming one use of it.
    pub(crate) fn take_failure(&mut self) -> Option<StsFailure> {
        let failure = self.failures.as_mut()?;
        failure.count -= 1;
        let taken = failure.clone();
        if failure.count == 0 {
            self.failures = None;
        }
        Some(taken)
    }

    pub(crate) fn role_of(&self, access_key_id: &str) -> &str {
        self.config
            .roles
            .get(access_key_id)
            .unwrap_or(&self.config.default_role_arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lifetimes_are_used_up() {
        let mut inner = Inner {
            config: AwsConfig::default(),
            role_denied: false,
            session_remaining_seconds: None,
            short_lived: Some(ShortLivedTokens {
                count: 2,
                lifetime_seconds: -600,
            }),
            failures: None,
            calls: StsCallCounts::default(),
        };
        assert_eq!(inner.take_short_lifetime(), Some(-600));
        assert_eq!(inner.take_short_lifetime(), Some(-600));
        assert_eq!(inner.take_short_lifetime(), None);
    }

    #[test]
    fn failures_are_checked() {
        let failure = |count, status, code: &str| StsFailure {
            count,
            status,
            code: code.to_owned(),
        };
        assert!(failure(1, 400, "Throttling").validate().is_ok());
        assert!(failure(0, 400, "Throttling").validate().is_err());
        assert!(failure(1, 200, "Throttling").validate().is_err());
        assert!(failure(1, 503, "").validate().is_err());
        assert!(failure(1, 503, "<x>").validate().is_err());
    }

    #[test]
    fn overrides_are_bounded() {
        let valid = |count, lifetime_seconds| {
            ShortLivedTokens {
                count,
                lifetime_seconds,
            }
            .validate()
            .is_ok()
        };
        assert!(valid(1, 1));
        assert!(valid(3, -600));
        assert!(!valid(0, 1));
        assert!(!valid(1, 3601));
        assert!(!valid(1, -3601));
    }

    #[test]
    fn unknown_keys_get_the_default_role() {
        let mut config = AwsConfig::default();
        config.roles.insert(
            "AKIDOTHER".to_owned(),
            "arn:aws:iam::123456789012:role/other".to_owned(),
        );
        let inner = Inner {
            config,
            role_denied: false,
            session_remaining_seconds: None,
            short_lived: None,
            failures: None,
            calls: StsCallCounts::default(),
        };
        assert_eq!(
            inner.role_of("AKIDOTHER"),
            "arn:aws:iam::123456789012:role/other"
        );
        assert_eq!(inner.role_of("AKIDANY"), crate::demo::AWS_ROLE_ARN);
    }
}

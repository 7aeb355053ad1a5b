//! Caller scoping of `mint-token` and `update-incident`: whether a caller's mapping
//! (`dp-operator callers`) limits the tenants it may act for, and how long a warm instance keeps
//! a mapping it read.

use std::str::FromStr;
use std::time::Duration;

use super::env::{ConfigError, Env};

pub const ENV_CALLER_SCOPING: &str = "DP_CALLER_SCOPING";
pub const ENV_CALLER_SCOPE_CACHE_SECONDS: &str = "DP_CALLER_SCOPE_CACHE_SECONDS";
pub const ENV_CALLER_HTTP_QUALIFIER: &str = "DP_CALLER_HTTP_QUALIFIER";

/// What a caller without a mapping may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerScopingMode {
    /// No check: every caller mints for every tenant.
    Off,
    /// A mapped caller is held to its mapping. Until the first mapping exists every caller mints
    /// for every tenant (what deployments before scoping did); from then on an unmapped caller
    /// is refused, so that scoping one caller never leaves the others unscoped.
    Mapped,
    /// An unmapped caller is always refused, even before any mapping exists.
    Enforced,
}

impl CallerScopingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerScopingMode::Off => "off",
            CallerScopingMode::Mapped => "mapped",
            CallerScopingMode::Enforced => "enforced",
        }
    }
}

impl FromStr for CallerScopingMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(CallerScopingMode::Off),
            "mapped" => Ok(CallerScopingMode::Mapped),
            "enforced" => Ok(CallerScopingMode::Enforced),
            other => Err(format!("{other:?} is not off, mapped or enforced")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerScopingSettings {
    pub mode: CallerScopingMode,
    /// How long a warm instance keeps a caller's mapping: a revocation reaches every instance
    /// within this time.
    pub cache_ttl: Duration,
    /// The alias through which API Gateway invokes `mint-token` (or `update-incident`): an HTTP event's caller is
    /// believed only when the function was invoked through it (a principal allowed to invoke the
    /// unqualified function cannot invoke the alias, so cannot pose as an HTTP caller). Unset,
    /// every HTTP-shaped event's caller is believed.
    pub http_qualifier: Option<String>,
}

pub(super) fn read(env: &Env) -> Result<CallerScopingSettings, ConfigError> {
    Ok(CallerScopingSettings {
        mode: env.parse_or(ENV_CALLER_SCOPING, CallerScopingMode::Mapped)?,
        cache_ttl: env.seconds(ENV_CALLER_SCOPE_CACHE_SECONDS, 60, 0..=300)?,
        http_qualifier: env
            .trimmed(ENV_CALLER_HTTP_QUALIFIER)
            .map(|alias| {
                is_alias_name(&alias).then_some(alias).ok_or_else(|| {
                    ConfigError::new(
                        ENV_CALLER_HTTP_QUALIFIER,
                        "is not a Lambda alias name (letters, digits, - and _, not all digits)",
                    )
                })
            })
            .transpose()?,
    })
}

/// Lambda's alias names: up to 128 of `[A-Za-z0-9_-]`, not only digits (that is a version).
fn is_alias_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        && !name.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::super::env::with;
    use super::*;

    #[test]
    fn mapped_for_a_minute_by_default_and_bad_values_named() {
        let defaults = with(&[], |env| read(&env)).unwrap();
        assert_eq!(defaults.mode, CallerScopingMode::Mapped);
        assert_eq!(defaults.cache_ttl, Duration::from_secs(60));
        assert_eq!(defaults.http_qualifier, None);
        let aliased = with(&[(ENV_CALLER_HTTP_QUALIFIER, " api ")], |env| read(&env)).unwrap();
        assert_eq!(aliased.http_qualifier.as_deref(), Some("api"));
        let set = with(
            &[
                (ENV_CALLER_SCOPING, " Enforced "),
                (ENV_CALLER_SCOPE_CACHE_SECONDS, "0"),
            ],
            |env| read(&env),
        )
        .unwrap();
        assert_eq!(set.mode, CallerScopingMode::Enforced);
        assert_eq!(set.cache_ttl, Duration::ZERO);
        for (variable, value) in [
            (ENV_CALLER_SCOPING, "all"),
            (ENV_CALLER_SCOPE_CACHE_SECONDS, "3600"),
            (ENV_CALLER_HTTP_QUALIFIER, "7"),
            (ENV_CALLER_HTTP_QUALIFIER, "api:live"),
        ] {
            let error = with(&[(variable, value)], |env| read(&env)).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }
}

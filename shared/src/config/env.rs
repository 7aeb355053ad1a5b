//! Reading the environment: the one place where a variable's text becomes a value. Every
//! settings type reads through an [`Env`], so that blank-means-unset, the syntax of numbers,
//! durations, flags and URLs, and an error that names the variable are the same for all of them.

use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

/// Set by Lambda in every function's environment: the settings apply Lambda's rules then (no
/// implicit local files, JSON logs).
pub const ENV_LAMBDA_FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";

/// A setting that is missing or invalid, named so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// The variables of one process (or a test's map), seen through a lookup function.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { lookup }
    }

    /// The value as set; a blank one counts as unset.
    pub fn get(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable).filter(|value| !value.trim().is_empty())
    }

    /// The value without its surrounding blanks; a blank one counts as unset.
    pub fn trimmed(&self, variable: &str) -> Option<String> {
        self.get(variable).map(|value| value.trim().to_owned())
    }

    pub fn is_set(&self, variable: &str) -> bool {
        self.get(variable).is_some()
    }

    /// Whether this process is a Lambda function.
    pub fn in_lambda(&self) -> bool {
        (self.lookup)(ENV_LAMBDA_FUNCTION_NAME).is_some()
    }

    /// The value parsed by its type's `FromStr`, or `default` when unset.
    pub fn parse_or<T: FromStr<Err = String>>(
        &self,
        variable: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(variable) {
            Some(text) => text
                .parse()
                .map_err(|problem: String| ConfigError::new(variable, problem)),
            None => Ok(default),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, any case), `default` when unset.
    pub fn flag(&self, variable: &str, default: bool) -> Result<bool, ConfigError> {
        match self.trimmed(variable).map(|text| text.to_ascii_lowercase()) {
            None => Ok(default),
            Some(text) => match text.as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(ConfigError::new(
                    variable,
                    format!("{text:?} is not true or false"),
                )),
            },
        }
    }

    /// A whole number within `range`, `default` when unset.
    pub fn number(
        &self,
        variable: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        self.whole(variable, default, range, None)
    }

    /// A whole number of seconds within `range`, `default` when unset.
    pub fn seconds(
        &self,
        variable: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.whole(variable, default, range, Some("seconds"))
            .map(Duration::from_secs)
    }

    fn whole(
        &self,
        variable: &str,
        default: u64,
        range: RangeInclusive<u64>,
        unit: Option<&str>,
    ) -> Result<u64, ConfigError> {
        let value = match self.get(variable) {
            Some(text) => text.trim().parse::<u64>().map_err(|_| {
                let of_unit = unit.map(|unit| format!(" of {unit}")).unwrap_or_default();
                ConfigError::new(variable, format!("{text:?} is not a whole number{of_unit}"))
            })?,
            None => default,
        };
        if !range.contains(&value) {
            let unit = unit.map(|unit| format!(" {unit}")).unwrap_or_default();
            return Err(ConfigError::new(
                variable,
                format!(
                    "{value} is out of range ({}..={}{unit})",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }

    /// An http(s) URL (plain http only for loopback), `None` when unset.
    pub fn url(&self, variable: &str) -> Result<Option<Url>, ConfigError> {
        self.get(variable)
            .map(|text| parse_url(variable, &text))
            .transpose()
    }

    /// A redirect URI as Entra accepts one, `None` when unset.
    pub fn redirect_uri(&self, variable: &str) -> Result<Option<Url>, ConfigError> {
        self.get(variable)
            .map(|text| parse_redirect_uri(variable, &text))
            .transpose()
    }

    /// The one of `variables` that is set, with its value; more than one set is an error named
    /// after the first, since which one wins would be a guess.
    pub fn one_of<'v>(
        &self,
        variables: &[&'v str],
    ) -> Result<Option<(&'v str, String)>, ConfigError> {
        let mut set = variables
            .iter()
            .filter_map(|variable| self.get(variable).map(|value| (*variable, value)));
        let first = set.next();
        if first.is_some() && set.next().is_some() {
            return Err(ConfigError::new(
                variables[0],
                format!("set only one of {}", variables.join(", ")),
            ));
        }
        Ok(first)
    }
}

/// The variables of this process.
pub fn process_env(variable: &str) -> Option<String> {
    std::env::var(variable).ok()
}

fn parse_url(variable: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim())
        .map_err(|error| ConfigError::new(variable, format!("not a URL ({error})")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::new(variable, "must be an http(s) URL"));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(ConfigError::new(
            variable,
            "plain http is allowed only for loopback (a local emulator); use https",
        ));
    }
    Ok(url)
}

/// Microsoft's rules for redirect URIs: https (http only for loopback), at most 256 characters,
/// none of `! $ ' ( ) , ;`.
fn parse_redirect_uri(variable: &str, text: &str) -> Result<Url, ConfigError> {
    let url = parse_url(variable, text)?;
    if url.as_str().len() > 256 {
        return Err(ConfigError::new(
            variable,
            "is longer than Entra's 256 characters",
        ));
    }
    if url.as_str().chars().any(|c| "!$'(),;".contains(c)) {
        return Err(ConfigError::new(
            variable,
            "contains a character Entra refuses (! $ ' ( ) , ;)",
        ));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Runs `read` on an environment holding only `pairs`: the concern files' tests.
#[cfg(test)]
pub(crate) fn with<T>(pairs: &[(&str, &str)], read: impl FnOnce(Env) -> T) -> T {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let lookup = |name: &str| map.get(name).cloned();
    read(Env::new(&lookup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_unset_and_trimmed_drops_the_blanks() {
        with(&[("A", "  "), ("B", " x ")], |env| {
            assert_eq!(env.get("A"), None);
            assert!(!env.is_set("A"));
            assert_eq!(env.get("B").as_deref(), Some(" x "));
            assert_eq!(env.trimmed("B").as_deref(), Some("x"));
            assert!(!env.in_lambda());
        });
        with(&[(ENV_LAMBDA_FUNCTION_NAME, "")], |env| {
            assert!(env.in_lambda())
        });
    }

    #[test]
    fn flags_numbers_and_seconds() {
        with(
            &[("F", " Yes "), ("G", "0"), ("N", "7"), ("S", "30")],
            |env| {
                assert!(env.flag("F", false).unwrap());
                assert!(!env.flag("G", true).unwrap());
                assert!(env.flag("UNSET", true).unwrap());
                assert_eq!(env.number("N", 1, 1..=10).unwrap(), 7);
                assert_eq!(env.number("UNSET", 4, 1..=10).unwrap(), 4);
                assert_eq!(
                    env.seconds("S", 1, 0..=60).unwrap(),
                    Duration::from_secs(30)
                );
            },
        );
        with(&[("F", "maybe"), ("N", "lots"), ("S", "61")], |env| {
            assert_eq!(env.flag("F", false).unwrap_err().variable, "F");
            let error = env.number("N", 1, 1..=10).unwrap_err();
            assert_eq!(error.problem, "\"lots\" is not a whole number");
            let error = env.seconds("S", 1, 0..=60).unwrap_err();
            assert_eq!(error.problem, "61 is out of range (0..=60 seconds)");
        });
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        with(
            &[
                ("LOCAL", "http://127.0.0.1:8080"),
                ("REMOTE", "http://login.example.com"),
                ("FTP", "ftp://x"),
                ("REDIRECT", "https://partner.example.com/callback;x"),
            ],
            |env| {
                assert!(env.url("LOCAL").unwrap().is_some());
                assert_eq!(env.url("UNSET").unwrap(), None);
                assert_eq!(env.url("REMOTE").unwrap_err().variable, "REMOTE");
                assert_eq!(env.url("FTP").unwrap_err().variable, "FTP");
                assert_eq!(
                    env.redirect_uri("REDIRECT").unwrap_err().variable,
                    "REDIRECT"
                );
            },
        );
    }

    #[test]
    fn one_of_refuses_two() {
        with(&[("B", "b")], |env| {
            assert_eq!(
                env.one_of(&["A", "B", "C"]).unwrap(),
                Some(("B", "b".to_owned()))
            );
            assert_eq!(env.one_of(&["A", "C"]).unwrap(), None);
        });
        with(&[("B", "b"), ("C", "c")], |env| {
            let error = env.one_of(&["A", "B", "C"]).unwrap_err();
            assert_eq!(error.variable, "A");
            assert_eq!(error.problem, "set only one of A, B, C");
        });
    }
}

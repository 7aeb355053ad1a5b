//! Microsoft's redirect back to us, read from the query string. Every value comes from the
//! browser, so the whole string and each value are bounded, each parameter a flow knows may appear
//! once (no second `tenant` or `error` can be smuggled past a check), and parameters it does not
//! know are ignored (Microsoft may add some).

use std::collections::HashMap;

use secrecy::SecretString;

/// Longest query string read.
pub const MAX_QUERY: usize = 16 * 1024;
/// Longest value read: Entra's authorization codes run to about 1–2 KB.
pub const MAX_VALUE: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback's query string is too long")]
    TooLong,
    #[error("the callback repeats the parameter {0:?}")]
    Repeated(&'static str),
    #[error("the callback's parameter {0:?} is too long")]
    ValueTooLong(&'static str),
    #[error("the callback says neither what was granted nor why it failed")]
    Incomplete,
}

/// Microsoft's refusal: its `error` code and `error_description`, reduced to what a page may
/// show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short snake_case word.
    pub error: String,
    pub description: Option<String>,
}

/// The parameters a flow knows, each read at most once. Its values may hold an authorization
/// code, so it has no `Debug`.
pub struct CallbackQuery {
    values: HashMap<&'static str, String>,
}

impl CallbackQuery {
    /// Reads `raw_query` (with or without its leading `?`), keeping the `known` parameters.
    pub fn parse(raw_query: &str, known: &[&'static str]) -> Result<CallbackQuery, CallbackError> {
        if raw_query.len() > MAX_QUERY {
            return Err(CallbackError::TooLong);
        }
        let mut values = HashMap::new();
        for (key, value) in
            url::form_urlencoded::parse(raw_query.trim_start_matches('?').as_bytes())
        {
            let Some(known) = known.iter().find(|name| **name == key) else {
                continue;
            };
            if value.len() > MAX_VALUE {
                return Err(CallbackError::ValueTooLong(known));
            }
            if values.insert(*known, value.into_owned()).is_some() {
                return Err(CallbackError::Repeated(known));
            }
        }
        Ok(CallbackQuery { values })
    }

    /// The value of `name`, unless absent or blank.
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.values
            .remove(name)
            .filter(|text| !text.trim().is_empty())
    }

    /// Whether `name` says `true` (in any case, as Microsoft's `admin_consent=True`).
    pub fn says_true(&self, name: &str) -> bool {
        self.values
            .get(name)
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
    }

    /// The authorization `code`, kept secret from here on.
    pub fn take_code(&mut self) -> Option<SecretString> {
        self.take("code").map(SecretString::from)
    }

    /// Microsoft's `error` and `error_description`, when it sent an error.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        let error = self.take("error")?;
        Some(Refusal {
            error: sanitize_code(&error),
            description: self
                .take("error_description")
                .map(|text| without_controls(&text, 400)),
        })
    }
}

/// Microsoft's error codes are short snake_case words; anything else is reduced to that shape.
fn sanitize_code(text: &str) -> String {
    let code: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code.is_empty() {
        "unknown_error".into()
    } else {
        code
    }
}

fn without_controls(text: &str, limit: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const KNOWN: [&str; 5] = ["state", "code", "error", "error_description", "tenant"];

    fn parse(query: &str) -> Result<CallbackQuery, CallbackError> {
        CallbackQuery::parse(query, &KNOWN)
    }

    #[test]
    fn reads_known_parameters_once_and_ignores_the_rest() {
        let mut query = parse("?code=abc&state=s1&session_state=x&tenant=%20").unwrap();
        assert_eq!(query.take("state").as_deref(), Some("s1"));
        assert_eq!(query.take("state"), None, "a value is taken once");
        assert_eq!(query.take("session_state"), None, "unknown to this flow");
        assert_eq!(query.take("tenant"), None, "blank is absent");
        assert_eq!(query.take_code().unwrap().expose_secret(), "abc");
        assert!(query.take_refusal().is_none());
    }

    #[test]
    fn a_refusal_is_reduced_to_what_a_page_may_show() {
        let mut query =
            parse("error=access_denied&error_description=AADSTS65004%3A+User%0Adeclined").unwrap();
        assert_eq!(
            query.take_refusal(),
            Some(Refusal {
                error: "access_denied".into(),
                description: Some("AADSTS65004: Userdeclined".into()),
            })
        );
        let mut hostile = parse("error=%3Cscript%3Ealert(1)%3C%2Fscript%3E").unwrap();
        assert_eq!(hostile.take_refusal().unwrap().error, "scriptalert1script");
        let mut nothing_left = parse("error=%3C%3E").unwrap();
        assert_eq!(nothing_left.take_refusal().unwrap().error, "unknown_error");
        let long = format!("error=x&error_description={}", "d".repeat(1000));
        let description = parse(&long).unwrap().take_refusal().unwrap().description;
        assert_eq!(description.unwrap().len(), 400);
    }

    #[test]
    fn says_true_in_any_case() {
        let query = CallbackQuery::parse("admin_consent=True", &["admin_consent"]).unwrap();
        assert!(query.says_true("admin_consent"));
        let query = CallbackQuery::parse("admin_consent=False", &["admin_consent"]).unwrap();
        assert!(!query.says_true("admin_consent"));
    }

    #[test]
    fn refuses_what_could_smuggle_or_flood() {
        let refused = |query: &str| parse(query).err().expect("refused");
        assert_eq!(
            refused("tenant=a&tenant=b"),
            CallbackError::Repeated("tenant")
        );
        assert_eq!(refused("code=a&code=b"), CallbackError::Repeated("code"));
        assert_eq!(refused(&"a".repeat(17_000)), CallbackError::TooLong);
        assert_eq!(
            refused(&format!("state={}", "x".repeat(9000))),
            CallbackError::ValueTooLong("state")
        );
        // An unknown parameter may repeat and be long: it is never read.
        assert!(parse(&format!("x=1&x={}", "y".repeat(9000))).is_ok());
    }

    #[test]
    fn never_panics_on_noise() {
        for noise in [
            "%",
            "%%%",
            "=&=&",
            "tenant",
            "&&&&&",
            "admin_consent=%FF%FE&tenant=%00",
            "?state=%E2%82&error=",
        ] {
            if let Ok(mut query) = parse(noise) {
                let _ = query.take_refusal();
                let _ = query.take("tenant");
            }
        }
    }
}

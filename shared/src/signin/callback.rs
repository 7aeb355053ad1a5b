//! Microsoft's redirect back after a user signed in: `code` + `state`, or `error` +
//! `error_description` + `state`. Every value comes from the browser, so each is bounded and
//! may appear once.

use std::collections::HashMap;

use secrecy::SecretString;

#[derive(Debug)]
pub enum SignInOutcome {
    Code(SecretString),
    Refused {
        error: String,
        description: Option<String>,
    },
}

#[derive(Debug)]
pub struct SignInCallback {
    pub state: Option<String>,
    pub outcome: SignInOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInCallbackError {
    #[error("the query string is too long")]
    TooLong,
    #[error("the parameter {0:?} appears more than once")]
    Repeated(&'static str),
    #[error("the parameter {0:?} is too long")]
    ValueTooLong(&'static str),
    #[error("neither a code nor an error")]
    Incomplete,
}

const MAX_QUERY: usize = 16 * 1024;
/// Entra's authorization codes run to about 1–2 KB.
const MAX_VALUE: usize = 8 * 1024;
const KNOWN: [&str; 5] = [
    "state",
    "code",
    "error",
    "error_description",
    "session_state",
];

pub fn parse_signin_callback(raw_query: &str) -> Result<SignInCallback, SignInCallbackError> {
    if raw_query.len() > MAX_QUERY {
        return Err(SignInCallbackError::TooLong);
    }
    let mut values: HashMap<&'static str, String> = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(raw_query.trim_start_matches('?').as_bytes()) {
        let Some(known) = KNOWN.iter().find(|name| **name == key) else {
            continue;
        };
        if value.len() > MAX_VALUE {
            return Err(SignInCallbackError::ValueTooLong(known));
        }
        if values.insert(known, value.into_owned()).is_some() {
            return Err(SignInCallbackError::Repeated(known));
        }
    }
    let present = |value: Option<String>| value.filter(|text| !text.trim().is_empty());
    let state = present(values.remove("state"));
    if let Some(error) = present(values.remove("error")) {
        return Ok(SignInCallback {
            state,
            outcome: SignInOutcome::Refused {
                error: error
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(64)
                    .collect(),
                description: present(values.remove("error_description"))
                    .map(|text| text.chars().take(400).collect()),
            },
        });
    }
    match present(values.remove("code")) {
        Some(code) => Ok(SignInCallback {
            state,
            outcome: SignInOutcome::Code(SecretString::from(code)),
        }),
        None => Err(SignInCallbackError::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn reads_a_code_or_an_error() {
        let parsed = parse_signin_callback("code=abc&state=s1&session_state=x").unwrap();
        assert_eq!(parsed.state.as_deref(), Some("s1"));
        assert!(
            matches!(parsed.outcome, SignInOutcome::Code(ref code) if code.expose_secret() == "abc")
        );
        let parsed = parse_signin_callback(
            "error=access_denied&error_description=AADSTS65004%3A+declined&state=s1",
        )
        .unwrap();
        match parsed.outcome {
            SignInOutcome::Refused { error, description } => {
                assert_eq!(error, "access_denied");
                assert_eq!(description.as_deref(), Some("AADSTS65004: declined"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_could_smuggle_or_flood() {
        assert_eq!(
            parse_signin_callback("code=a&code=b&state=s").unwrap_err(),
            SignInCallbackError::Repeated("code")
        );
        assert_eq!(
            parse_signin_callback("state=s").unwrap_err(),
            SignInCallbackError::Incomplete
        );
        assert_eq!(
            parse_signin_callback(&format!("code={}", "a".repeat(9000))).unwrap_err(),
            SignInCallbackError::ValueTooLong("code")
        );
        assert_eq!(
            parse_signin_callback(&"a".repeat(20_000)).unwrap_err(),
            SignInCallbackError::TooLong
        );
        // The error code is reduced to a safe word.
        let parsed = parse_signin_callback("error=%3Cscript%3E&state=s").unwrap();
        assert!(
            matches!(parsed.outcome, SignInOutcome::Refused { ref error, .. } if error == "script")
        );
        // The code never shows in Debug.
        let parsed = parse_signin_callback("code=secret-code-value&state=s").unwrap();
        assert!(!format!("{parsed:?}").contains("secret-code-value"));
    }
}

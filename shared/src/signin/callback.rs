//! Microsoft's redirect back after a user signed in, interpreted: `code` + `state`, or `error` +
//! `error_description` + `state`.

use secrecy::SecretString;

use crate::redirect::{CallbackError, CallbackQuery, Refusal};

#[derive(Debug)]
pub enum SignInOutcome {
    Code(SecretString),
    Refused(Refusal),
}

#[derive(Debug)]
pub struct SignInCallback {
    pub state: Option<String>,
    pub outcome: SignInOutcome,
}

const KNOWN: [&str; 5] = [
    "state",
    "code",
    "error",
    "error_description",
    "session_state",
];

pub fn parse_signin_callback(raw_query: &str) -> Result<SignInCallback, CallbackError> {
    let mut query = CallbackQuery::parse(raw_query, &KNOWN)?;
    let state = query.take("state");
    if let Some(refusal) = query.take_refusal() {
        return Ok(SignInCallback {
            state,
            outcome: SignInOutcome::Refused(refusal),
        });
    }
    match query.take_code() {
        Some(code) => Ok(SignInCallback {
            state,
            outcome: SignInOutcome::Code(code),
        }),
        None => Err(CallbackError::Incomplete),
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
            SignInOutcome::Refused(Refusal { error, description }) => {
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
            CallbackError::Repeated("code")
        );
        assert_eq!(
            parse_signin_callback("state=s").unwrap_err(),
            CallbackError::Incomplete
        );
        // A parameter only the consent flow reads is not this flow's business.
        assert!(parse_signin_callback("code=a&tenant=x&tenant=y").is_ok());
        // The code never shows in Debug.
        let parsed = parse_signin_callback("code=secret-code-value&state=s").unwrap();
        assert!(!format!("{parsed:?}").contains("secret-code-value"));
    }
}

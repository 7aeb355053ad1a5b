//! Microsoft's redirects back to us during onboarding, interpreted: the admin-consent answer, and
//! the answer to the administrator's sign-in that follows it. Nothing here trusts the `tenant` it
//! reads: the administrator's ID token proves the tenant.

use secrecy::SecretString;

use crate::redirect::{CallbackError, CallbackQuery, Refusal};

/// What the query string says happened.
#[derive(Debug)]
pub enum CallbackOutcome {
    /// Consent given. `tenant` is what the URL claims (absent on the legacy link).
    Granted { tenant: Option<String> },
    /// An authorization code without `admin_consent`: the answer to the administrator's
    /// sign-in.
    Code(SecretString),
    /// Declined or failed: Microsoft's `error` (a short code) and its description.
    Declined(Refusal),
}

#[derive(Debug)]
pub struct Callback {
    pub state: Option<String>,
    pub outcome: CallbackOutcome,
}

const KNOWN: [&str; 9] = [
    "state",
    "tenant",
    "admin_consent",
    "error",
    "error_description",
    "error_subcode",
    "code",
    "session_state",
    "scope",
];

/// Parses the raw query string of the callback.
pub fn parse_callback(raw_query: &str) -> Result<Callback, CallbackError> {
    let mut query = CallbackQuery::parse(raw_query, &KNOWN)?;
    let state = query.take("state");
    // `error` first: the v2 endpoint sends admin_consent=True on failures too.
    if let Some(refusal) = query.take_refusal() {
        return Ok(Callback {
            state,
            outcome: CallbackOutcome::Declined(refusal),
        });
    }
    let consented = query.says_true("admin_consent");
    let tenant = query.take("tenant");
    let code = query.take_code();
    if consented && (tenant.is_some() || code.is_some()) {
        return Ok(Callback {
            state,
            outcome: CallbackOutcome::Granted { tenant },
        });
    }
    match code {
        Some(code) if !consented && tenant.is_none() => Ok(Callback {
            state,
            outcome: CallbackOutcome::Code(code),
        }),
        _ => Err(CallbackError::Incomplete),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_success_shapes() {
        let v2 = parse_callback("tenant=72f988bf-86f1-41af-91ab-2d7cd011db47&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default&state=abc&admin_consent=True").unwrap();
        assert_eq!(v2.state.as_deref(), Some("abc"));
        assert!(matches!(
            v2.outcome,
            CallbackOutcome::Granted { tenant: Some(ref t) } if t == "72f988bf-86f1-41af-91ab-2d7cd011db47"
        ));
        let legacy =
            parse_callback("code=0.AXYA-secret-code&session_state=s&state=abc&admin_consent=True")
                .unwrap();
        assert!(matches!(
            legacy.outcome,
            CallbackOutcome::Granted { tenant: None }
        ));
        let sign_in = parse_callback("code=0.AXYA-code&state=abc&session_state=s").unwrap();
        let CallbackOutcome::Code(code) = sign_in.outcome else {
            panic!("a code")
        };
        assert_eq!(secrecy::ExposeSecret::expose_secret(&code), "0.AXYA-code");
        assert_eq!(
            parse_callback("code=c&tenant=x&state=abc").unwrap_err(),
            CallbackError::Incomplete
        );
    }

    #[test]
    fn error_wins_over_admin_consent() {
        let declined = parse_callback(
            "error=access_denied&error_subcode=cancel&error_description=AADSTS65004%3A+User+declined&state=abc&admin_consent=True",
        )
        .unwrap();
        assert!(matches!(
            declined.outcome,
            CallbackOutcome::Declined(Refusal { ref error, ref description })
                if error == "access_denied" && description.as_deref() == Some("AADSTS65004: User declined")
        ));
    }

    #[test]
    fn refuses_incomplete_repeated_and_oversized_queries() {
        let refused = |query: &str| parse_callback(query).unwrap_err();
        assert_eq!(refused(""), CallbackError::Incomplete);
        assert_eq!(refused("state=abc"), CallbackError::Incomplete);
        assert_eq!(
            refused("tenant=x&state=abc&admin_consent=False"),
            CallbackError::Incomplete
        );
        assert_eq!(
            refused("admin_consent=True&state=abc"),
            CallbackError::Incomplete
        );
        assert_eq!(
            refused("tenant=a&tenant=b&admin_consent=True&state=s"),
            CallbackError::Repeated("tenant")
        );
        assert_eq!(
            refused("admin_consent=True&admin_consent=True&tenant=a&state=s"),
            CallbackError::Repeated("admin_consent")
        );
    }
}

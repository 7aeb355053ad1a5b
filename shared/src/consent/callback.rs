//! Microsoft's redirects back to us during onboarding, parsed: the admin-consent answer, and
//! the answer to the administrator's sign-in that follows it. Every value comes from the
//! browser, so every value is bounded, and nothing here trusts the `tenant` it reads: the
//! administrator's ID token proves the tenant.

use std::collections::HashMap;

use secrecy::SecretString;

/// What the query string says happened.
#[derive(Debug)]
pub enum CallbackOutcome {
    /// Consent given. `tenant` is what the URL claims (absent on the legacy link).
    Granted { tenant: Option<String> },
    /// An authorization code without `admin_consent`: the answer to the administrator's
    /// sign-in.
    Code(SecretString),
    /// Declined or failed: Microsoft's `error` (a short code) and its description.
    Declined {
        error: String,
        description: Option<String>,
    },
}

#[derive(Debug)]
pub struct Callback {
    pub state: Option<String>,
    pub outcome: CallbackOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("the callback's query string is too long")]
    TooLong,
    #[error("the callback repeats the parameter {0:?}")]
    Repeated(&'static str),
    #[error("the callback's parameter {0:?} is too long")]
    ValueTooLong(&'static str),
    #[error("the callback says neither that consent was given nor why it failed")]
    Incomplete,
}

const MAX_QUERY: usize = 16 * 1024;
/// Entra's authorization codes run to about 1–2 KB.
const MAX_VALUE: usize = 8 * 1024;
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
    if raw_query.len() > MAX_QUERY {
        return Err(CallbackError::TooLong);
    }
    let mut values: HashMap<&'static str, String> = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(raw_query.trim_start_matches('?').as_bytes()) {
        // Unknown parameters are ignored, as Microsoft may add some; known ones must be unique
        // so that no second `tenant` or `error` can be smuggled past a check.
        let Some(known) = KNOWN.iter().find(|name| **name == key) else {
            continue;
        };
        if value.len() > MAX_VALUE {
            return Err(CallbackError::ValueTooLong(known));
        }
        if values.insert(known, value.into_owned()).is_some() {
            return Err(CallbackError::Repeated(known));
        }
    }
    let state = values.remove("state");
    let present = |value: Option<String>| value.filter(|text| !text.trim().is_empty());

    // `error` first: the v2 endpoint sends admin_consent=True on failures too.
    if let Some(error) = present(values.remove("error")) {
        return Ok(Callback {
            state,
            outcome: CallbackOutcome::Declined {
                error: sanitize_code(&error),
                description: present(values.remove("error_description"))
                    .map(|text| truncate(&text, 400)),
            },
        });
    }
    let consented = values
        .get("admin_consent")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));
    let tenant = present(values.remove("tenant"));
    let code = present(values.remove("code"));
    if consented && (tenant.is_some() || code.is_some()) {
        return Ok(Callback {
            state,
            outcome: CallbackOutcome::Granted { tenant },
        });
    }
    match code {
        Some(code) if !consented && tenant.is_none() => Ok(Callback {
            state,
            outcome: CallbackOutcome::Code(SecretString::from(code)),
        }),
        _ => Err(CallbackError::Incomplete),
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

fn truncate(text: &str, limit: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(limit)
        .collect()
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
            CallbackOutcome::Declined { ref error, ref description }
                if error == "access_denied" && description.as_deref() == Some("AADSTS65004: User declined")
        ));
        let hostile = parse_callback("error=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state=x").unwrap();
        let CallbackOutcome::Declined { error, .. } = hostile.outcome else {
            panic!()
        };
        assert_eq!(error, "scriptalert1script");
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
            refused("code=a&code=b&state=s"),
            CallbackError::Repeated("code")
        );
        assert_eq!(refused(&"a".repeat(17000)), CallbackError::TooLong);
        let long = format!("state={}", "x".repeat(9000));
        assert_eq!(refused(&long), CallbackError::ValueTooLong("state"));
    }

    #[test]
    fn never_panics_on_noise() {
        let noise = [
            "%",
            "%%%",
            "=&=&",
            "tenant",
            "&&&&&",
            "admin_consent=%FF%FE&tenant=%00",
            "?state=%E2%82&error=",
        ];
        for query in noise {
            let _ = parse_callback(query);
        }
    }
}

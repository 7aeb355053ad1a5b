//! The functions' entry layer: what each Lambda binary does between the runtime's event and the
//! services. It recognises which kind of event arrived, routes it, answers before the
//! invocation's deadline, and hands every refusal back in the caller's form: an HTTP answer
//! (`edge::error_response`) or a Lambda function error ([`lambda_error`]). A binary's `main`
//! only builds its function once and gives it the runtime's events.

pub mod callback;
pub mod fetch;
pub mod hunt;
pub mod mint;
pub mod update;
pub mod update_request;

use std::fmt::Display;

use lambda_runtime::Diagnostic;

use crate::CallerError;

pub use callback::{CallbackFunction, CallbackRoute};
pub use fetch::{FetchEvent, FetchFunction};
pub use hunt::HuntFunction;
pub use mint::MintFunction;
pub use update::UpdateFunction;

/// A refusal as a direct invoker (Step Functions, another Lambda) sees it: the stable code as
/// `errorType`, so that a `Catch` can branch on it, and the message as `errorMessage`;
/// Microsoft's claims challenge, when there is one, ends the message after `claims: `
/// unchanged.
pub fn lambda_error(error: &(impl CallerError + ?Sized)) -> Diagnostic {
    let error_message = match error.claims_challenge() {
        Some(claims) => format!("{error} claims: {claims}"),
        None => error.to_string(),
    };
    Diagnostic {
        error_type: error.code().as_str().to_owned(),
        error_message,
    }
}

/// `outcome` of a cold start's step, with a failure logged as the reason `function` cannot
/// start (the runtime then reports the init error).
pub fn started<T, E: Display>(function: &str, outcome: Result<T, E>) -> Result<T, E> {
    outcome.inspect_err(|error| tracing::error!(error = %error, "{function} cannot start"))
}

/// A response the runtime sends back as JSON.
fn json_of(value: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("a response serialises")
}

#[cfg(test)]
pub(crate) mod samples {
    //! The sample events of `infra/events/`: what a developer feeds to
    //! `cargo lambda invoke --data-file`, here decoded as the functions decode them.

    use serde_json::Value;

    pub fn event(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../infra/events")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ErrorCode;
    use crate::edge::EdgeError;

    #[test]
    fn a_direct_invoker_reads_the_code_and_any_claims_challenge() {
        let plain = lambda_error(&EdgeError::new(
            ErrorCode::TenantNotActive,
            "tenant x is pending",
        ));
        assert_eq!(plain.error_type, "tenant_not_active");
        assert_eq!(plain.error_message, "tenant x is pending");
        let mut challenged = EdgeError::new(ErrorCode::InteractionRequired, "MFA needed");
        challenged.claims = Some(r#"{"access_token":{"acrs":{"essential":true}}}"#.into());
        challenged.retry_after = Some(Duration::from_secs(5));
        let diagnostic = lambda_error(&challenged);
        assert_eq!(diagnostic.error_type, "interaction_required");
        assert_eq!(
            diagnostic.error_message,
            r#"MFA needed claims: {"access_token":{"acrs":{"essential":true}}}"#
        );
    }

    #[test]
    fn every_sample_event_is_json() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/events");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".json") {
                assert!(samples::event(&name).is_object(), "{name}");
                seen += 1;
            }
        }
        assert!(seen >= 10, "{seen} sample events");
    }
}

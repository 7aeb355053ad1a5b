//! `mint-token`: a bearer token for one consented customer tenant and one Defender API.
//! Invoked directly (payload `{"tenant", "api"}`; errors carry the code as `errorType`) or through
//! the IAM-protected HTTP API route `POST /tokens` (errors as `{"error": {"code", "message"}}`).

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use defender_partner::edge::{self, EdgeError, Invocation};
use defender_partner::minting::{MintedToken, TokenService};
use defender_partner::runtime::Services;
use defender_partner::signin::StoredSignIns;
use defender_partner::telemetry;
use defender_partner::{ErrorCode, deadline};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = Services::from_env().await.inspect_err(|error| {
        tracing::error!(error = %error, "mint-token cannot start");
    })?;
    let mut service = TokenService::new(&services);
    // Only the deployment allowed to act for stored sign-ins reads their sealing keys.
    if services.settings.signin.mint_from_signin {
        let stored = StoredSignIns::build(&services).await.inspect_err(|error| {
            tracing::error!(error = %error, "mint-token cannot read the sign-in sealing keys");
        })?;
        service = service.with_stored_sign_ins(stored);
    }
    let service = Arc::new(service);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let service = service.clone();
        async move { handle(&service, event.payload, event.context.deadline).await }
    }))
    .await
}

/// Mints within the invocation: token requests, `Retry-After` waits and retries end before the
/// invocation's deadline, which then answers `microsoft_unavailable` (retry later) instead of
/// Lambda's timeout.
async fn mint_in_time(
    service: &TokenService,
    request: Value,
    deadline_ms: u64,
) -> Result<MintedToken, EdgeError> {
    deadline::answer_before(
        deadline_ms,
        async {
            service
                .mint_json(request)
                .await
                .map_err(|error| EdgeError::from(&error))
        },
        || {
            Err(EdgeError::new(
                ErrorCode::MicrosoftUnavailable,
                "no token could be minted before this invocation's deadline; retry",
            ))
        },
    )
    .await
}

async fn handle(
    service: &TokenService,
    payload: Value,
    deadline_ms: u64,
) -> Result<Value, Diagnostic> {
    match Invocation::classify(payload).map_err(diagnostic)? {
        Invocation::Direct(request) => match mint_in_time(service, request, deadline_ms).await {
            Ok(token) => Ok(serde_json::to_value(token).expect("a token serialises")),
            Err(error) => Err(diagnostic(logged(error))),
        },
        Invocation::Http(request) => {
            let response: ApiGatewayV2httpResponse = match edge::json_body(&request) {
                Ok(body) => match mint_in_time(service, body, deadline_ms).await {
                    Ok(token) => edge::json_response(
                        200,
                        &serde_json::to_value(token).expect("a token serialises"),
                    ),
                    Err(error) => edge::error_response(&logged(error)),
                },
                Err(error) => edge::error_response(&logged(error)),
            };
            Ok(serde_json::to_value(response).expect("a response serialises"))
        }
    }
}

fn logged(error: EdgeError) -> EdgeError {
    tracing::warn!(code = %error.code, error = %error.message, "request refused");
    error
}

/// A direct caller reads the code from `errorType`; Microsoft's claims challenge, when there is
/// one, ends the message after `claims: ` unchanged.
fn diagnostic(error: EdgeError) -> Diagnostic {
    let error_message = match &error.claims {
        Some(claims) => format!("{} claims: {claims}", error.message),
        None => error.message,
    };
    Diagnostic {
        error_type: error.code.as_str().to_owned(),
        error_message,
    }
}

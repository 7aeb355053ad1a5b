//! `consent-callback`: onboards a customer tenant.
//! `GET /consent/start?customer=REF[&tenant=ID][&link=v2|adminconsent|legacy]` (IAM-protected)
//! redirects to Microsoft's admin-consent page with a signed single-use `state`;
//! `GET /consent/callback` (public: the app's redirect URI) receives the consent, sends the
//! administrator through a sign-in that proves the tenant, then proves the consent and answers a
//! page. Every answer comes before the invocation's deadline.
//! `GET /signin/start?tenant=ID[&api=m365d|mde|graph][&login_hint=UPN]` (public: opened in the
//! user's browser) sends a user to Microsoft's sign-in with a signed single-use `state` and PKCE;
//! `GET /signin/callback` redeems the code and answers who signed in, never a token.

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use defender_partner::ErrorCode;
use defender_partner::consent::{ConsentService, LinkKind, pages};
use defender_partner::deadline;
use defender_partner::edge::{self, EdgeError, Invocation};
use defender_partner::runtime::Services;
use defender_partner::signin::SignInService;
use defender_partner::telemetry;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = Services::from_env().await.inspect_err(|error| {
        tracing::error!(error = %error, "consent-callback cannot start");
    })?;
    let consent = ConsentService::build(&services)
        .await
        .inspect_err(|error| {
            tracing::error!(error = %error, "consent-callback cannot read its state signing key");
        })?;
    let signin = SignInService::build(&services).await.inspect_err(|error| {
        tracing::error!(error = %error, "consent-callback cannot read its sign-in keys");
    })?;
    let services = Arc::new(Routes { consent, signin });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let services = services.clone();
        async move {
            deadline::answer_before(
                event.context.deadline,
                handle(&services, event.payload),
                out_of_time,
            )
            .await
        }
    }))
    .await
}

struct Routes {
    consent: ConsentService,
    signin: SignInService,
}

/// What a browser sees when the work could not finish in time: nothing was spent that cannot
/// be retried (the consent's nonce is spent only once the tenant is proven).
fn out_of_time() -> Result<Value, Diagnostic> {
    Ok(serde_json::to_value(pages::error("timeout").response()).expect("a response serialises"))
}

async fn handle(routes: &Routes, payload: Value) -> Result<Value, Diagnostic> {
    let response = match Invocation::classify(payload) {
        Ok(Invocation::Http(request)) => route(routes, &request).await,
        Ok(Invocation::Direct(_)) => {
            return Err(Diagnostic {
                error_type: ErrorCode::InvalidRequest.as_str().to_owned(),
                error_message: "consent-callback answers HTTP API requests only".to_owned(),
            });
        }
        Err(error) => edge::error_response(&error),
    };
    Ok(serde_json::to_value(response).expect("a response serialises"))
}

async fn route(routes: &Routes, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
    let (method, path) = edge::route_of(request);
    let query = request.raw_query_string.as_deref().unwrap_or("");
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", path) if path.ends_with("/consent/callback") => {
            routes.consent.callback(query).await.response()
        }
        ("GET", path) if path.ends_with("/consent/start") => start(&routes.consent, request).await,
        ("GET", path) if path.ends_with("/signin/callback") => {
            routes.signin.callback(query).await.response()
        }
        ("GET", path) if path.ends_with("/signin/start") => {
            signin_start(&routes.signin, request).await
        }
        _ => edge::error_response(&EdgeError::new(
            ErrorCode::InvalidRequest,
            format!("no route for {method} {path}"),
        )),
    }
}

async fn start(
    service: &ConsentService,
    request: &ApiGatewayV2httpRequest,
) -> ApiGatewayV2httpResponse {
    let parameters = &request.query_string_parameters;
    let link = match parameters
        .first("link")
        .map(str::parse::<LinkKind>)
        .transpose()
    {
        Ok(link) => link,
        Err(problem) => {
            return edge::error_response(&EdgeError::new(ErrorCode::InvalidRequest, problem));
        }
    };
    let Some(customer) = parameters.first("customer") else {
        return edge::error_response(&EdgeError::new(
            ErrorCode::InvalidRequest,
            "customer is missing: /consent/start?customer=<your reference for the customer>",
        ));
    };
    match service
        .start(customer, link, parameters.first("tenant"))
        .await
    {
        Ok(link) => edge::redirect_response(&link.url, &json!(link)),
        Err(error) => {
            tracing::warn!(code = %error.code(), error = %error, "consent link refused");
            edge::error_response(&EdgeError::new(error.code(), error.to_string()))
        }
    }
}

async fn signin_start(
    service: &SignInService,
    request: &ApiGatewayV2httpRequest,
) -> ApiGatewayV2httpResponse {
    let parameters = &request.query_string_parameters;
    let Some(tenant) = parameters.first("tenant") else {
        return edge::error_response(&EdgeError::new(
            ErrorCode::InvalidRequest,
            "tenant is missing: /signin/start?tenant=<customer tenant id>[&api=m365d|mde|graph]",
        ));
    };
    match service
        .start(
            tenant,
            parameters.first("api"),
            parameters.first("login_hint"),
        )
        .await
    {
        Ok(link) => edge::redirect_response(&link.url, &json!(link)),
        Err(error) => {
            tracing::warn!(code = %error.code(), error = %error, "sign-in link refused");
            edge::error_response(&EdgeError::new(error.code(), error.to_string()))
        }
    }
}

//! `consent-callback`: onboards a customer tenant.
//! `GET /consent/start?customer=REF[&link=v2|adminconsent|legacy]` (IAM-protected) redirects to
//! Microsoft's admin-consent page with a signed single-use `state`;
//! `GET /consent/callback` (public: the app's redirect URI) proves the consent and answers a page.

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use defender_partner::ErrorCode;
use defender_partner::consent::{ConsentService, LinkKind};
use defender_partner::edge::{self, EdgeError, Invocation};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = Services::from_env().await.inspect_err(|error| {
        tracing::error!(error = %error, "consent-callback cannot start");
    })?;
    let service = Arc::new(ConsentService::build(&services).await.inspect_err(|error| {
        tracing::error!(error = %error, "consent-callback cannot read its state signing key");
    })?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let service = service.clone();
        async move { handle(&service, event.payload).await }
    }))
    .await
}

async fn handle(service: &ConsentService, payload: Value) -> Result<Value, Diagnostic> {
    let response = match Invocation::classify(payload) {
        Ok(Invocation::Http(request)) => route(service, &request).await,
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

async fn route(
    service: &ConsentService,
    request: &ApiGatewayV2httpRequest,
) -> ApiGatewayV2httpResponse {
    let (method, path) = edge::route_of(request);
    let query = request.raw_query_string.as_deref().unwrap_or("");
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", path) if path.ends_with("/consent/callback") => {
            let page = service.callback(query).await;
            edge::html_response(page.status, page.render())
        }
        ("GET", path) if path.ends_with("/consent/start") => start(service, request).await,
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
    match service.start(customer, link).await {
        Ok(link) => edge::redirect_response(&link.url, &json!(link)),
        Err(error) => {
            tracing::warn!(code = %error.code(), error = %error, "consent link refused");
            edge::error_response(&EdgeError::new(error.code(), error.to_string()))
        }
    }
}

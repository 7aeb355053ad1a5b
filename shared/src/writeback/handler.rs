//! `update-incident`'s work between the Lambda runtime and the service: build once per cold
//! start, then per invocation decode, apply within the deadline, and shape the answer for the way
//! the request came.

use std::sync::Arc;

use serde_json::Value;

use super::entry::{self, Arrival};
use super::error::UpdateError;
use super::events::{EventBridgeEvents, NoEvents, UpdateEvents};
use super::graph::GraphWriter;
use super::service::UpdateService;
use crate::ErrorCode;
use crate::api::DefenderApi;
use crate::deadline;
use crate::defender::limiter::Limiter;
use crate::edge::{self, EdgeError};
use crate::minting::TokenService;
use crate::runtime::Services;
use crate::signin::StoredSignIns;
use crate::sink::ENV_EVENT_BUS;

impl From<&UpdateError> for EdgeError {
    fn from(error: &UpdateError) -> Self {
        EdgeError {
            code: error.code(),
            message: error.to_string(),
            retry_after: error.retry_after(),
            claims: error.claims_challenge().map(str::to_owned),
        }
    }
}

/// The service with the clients `services` holds; `event_bus` (`DP_EVENT_BUS`) receives
/// `IncidentUpdated` for every request.
pub async fn build(
    services: &Services,
    event_bus: Option<String>,
) -> Result<UpdateService, Box<dyn std::error::Error + Send + Sync>> {
    let mut tokens = TokenService::new(services);
    // Acting for analysts from their stored sign-ins needs the sealing keys: only where enabled.
    if services.settings.signin.mint_from_signin {
        tokens = tokens.with_stored_sign_ins(StoredSignIns::build(services).await?);
    }
    let events: Arc<dyn UpdateEvents> = match event_bus {
        Some(bus) => {
            let aws = match &services.aws {
                Some(config) => config.clone(),
                None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
            };
            Arc::new(EventBridgeEvents::new(
                aws_sdk_eventbridge::Client::new(&aws),
                bus,
            ))
        }
        None => Arc::new(NoEvents),
    };
    let writer = GraphWriter::new(
        services.http.clone(),
        services
            .settings
            .endpoints
            .api_base(DefenderApi::Graph)
            .clone(),
        Arc::new(Limiter::new()),
    );
    Ok(UpdateService::new(
        Arc::new(tokens),
        writer,
        services.updates.clone(),
        services.registry.clone(),
        events,
    ))
}

/// The bus named by the environment, if any.
pub fn event_bus_from_env() -> Option<String> {
    std::env::var(ENV_EVENT_BUS)
        .ok()
        .filter(|bus| !bus.trim().is_empty())
}

/// One invocation. `Err` is for the Lambda runtime (a direct caller reads the code from
/// `errorType`; an event whose failure may pass is retried by Lambda, under the event's own
/// idempotency key); HTTP answers are always `Ok`.
pub async fn handle(
    service: &UpdateService,
    payload: Value,
    deadline_ms: u64,
) -> Result<Value, EdgeError> {
    let decoded = match entry::decode(payload.clone()) {
        Ok(decoded) => decoded,
        Err(error) => {
            let error = logged(EdgeError::from(&error));
            return if is_http(&payload) {
                Ok(http_value(edge::error_response(&error)))
            } else {
                Err(error)
            };
        }
    };
    let arrival = decoded.arrival;
    // Boxed: the update's future is deep (token, store, Graph), and the runtime's own is built
    // around it.
    let work = Box::pin(async {
        service
            .apply_json(decoded.payload, &decoded.caller)
            .await
            .map_err(|error| EdgeError::from(&error))
    });
    let result = deadline::answer_before(
        deadline_ms,
        work,
        || {
            Err(EdgeError::new(
                ErrorCode::MicrosoftUnavailable,
                "the change was not finished before this invocation's deadline (it may be partly applied); retry with the same idempotency key",
            ))
        },
    )
    .await
    .map(|outcome| serde_json::to_value(outcome).expect("an outcome serialises"));
    match (arrival, result) {
        (Arrival::Http, Ok(outcome)) => Ok(http_value(edge::json_response(200, &outcome))),
        (Arrival::Http, Err(error)) => Ok(http_value(edge::error_response(&logged(error)))),
        (_, Ok(outcome)) => Ok(outcome),
        (Arrival::Direct, Err(error)) => Err(logged(error)),
        // A passing failure is retried by Lambda's asynchronous retries; a verdict is final (it
        // is audited and announced), so retrying it would only repeat the refusal.
        (Arrival::Event, Err(error)) if error.code.is_transient() => Err(logged(error)),
        (Arrival::Event, Err(error)) => Ok(logged(error).body()),
    }
}

fn is_http(payload: &Value) -> bool {
    payload
        .get("requestContext")
        .and_then(|context| context.get("http"))
        .is_some()
}

fn http_value(response: aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> Value {
    serde_json::to_value(response).expect("a response serialises")
}

fn logged(error: EdgeError) -> EdgeError {
    tracing::warn!(code = %error.code, error = %error.message, "change request refused");
    error
}

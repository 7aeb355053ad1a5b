//! `update-incident`: one change to a customer's incident or alert, from a direct invocation,
//! the IAM-signed `/tenants/…` routes or an `IncidentUpdateRequested` event (decoded in
//! [`super::update_request`]); applied within the deadline by `writeback`, answered in the form
//! of the way it came.

use std::sync::Arc;

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use super::update_request::{self, Arrival};
use super::{json_of, lambda_error};
use crate::CallerError;
use crate::ErrorCode;
use crate::api::DefenderApi;
use crate::callers::{Caller, CallerScoping, http_event_trusted};
use crate::deadline;
use crate::defender::limiter::Limiter;
use crate::edge::{self, EdgeError};
use crate::minting::TokenService;
use crate::runtime::Services;
use crate::signin::StoredSignIns;
use crate::sink::ENV_EVENT_BUS;
use crate::telemetry::metrics::{self, Finished};
use crate::writeback::{EventBridgeEvents, GraphWriter, NoEvents, UpdateEvents, UpdateService};

pub struct UpdateFunction {
    service: UpdateService,
    /// The alias API Gateway invokes (`DP_CALLER_HTTP_QUALIFIER`), if set: an HTTP-shaped event
    /// that came any other way is a direct invocation, and scoped as one.
    http_qualifier: Option<String>,
}

impl UpdateFunction {
    /// The function as the settings deploy it, with the clients `services` holds; once per cold
    /// start. `DP_EVENT_BUS` receives `IncidentUpdated` for every request.
    pub async fn build(
        services: &Services,
    ) -> Result<UpdateFunction, Box<dyn std::error::Error + Send + Sync>> {
        let mut tokens = TokenService::new(services);
        // Acting for analysts from their stored sign-ins needs the sealing keys: only where
        // enabled.
        if services.settings.signin.mint_from_signin {
            tokens = tokens.with_stored_sign_ins(StoredSignIns::build(services).await?);
        }
        let events: Arc<dyn UpdateEvents> = match event_bus_from_env() {
            Some(bus) => {
                // The deployed function always has AWS (its table); a local run with the embedded
                // store and a bus loads the configuration here.
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
        let service = UpdateService::new(
            Arc::new(tokens),
            writer,
            services.updates.clone(),
            services.registry.clone(),
            events,
        )
        .with_caller_scoping(CallerScoping::new(
            services.settings.callers.clone(),
            services.callers.clone(),
        ));
        Ok(UpdateFunction::new(service)
            .with_http_qualifier(services.settings.callers.http_qualifier.clone()))
    }

    pub fn new(service: UpdateService) -> UpdateFunction {
        UpdateFunction {
            service,
            http_qualifier: None,
        }
    }

    /// Believes an HTTP event's caller only when invoked through the alias `qualifier`.
    pub fn with_http_qualifier(mut self, qualifier: Option<String>) -> UpdateFunction {
        self.http_qualifier = qualifier;
        self
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
        self.answer_invoked(
            event.payload,
            event.context.deadline,
            &event.context.invoked_function_arn,
        )
        .await
    }

    /// Answers `payload`, an invocation whose deadline is `deadline_ms`. `Err` is for the Lambda
    /// runtime: a direct caller reads the code from `errorType`, and an event whose failure may
    /// pass is retried by Lambda under the event's own idempotency key. HTTP answers are `Ok`.
    pub async fn answer(&self, payload: Value, deadline_ms: u64) -> Result<Value, Diagnostic> {
        self.answer_invoked(payload, deadline_ms, "").await
    }

    /// As [`UpdateFunction::answer`], invoked through `function_arn` (with its alias, if any).
    pub async fn answer_invoked(
        &self,
        payload: Value,
        deadline_ms: u64,
        function_arn: &str,
    ) -> Result<Value, Diagnostic> {
        let mut decoded = match update_request::decode(payload.clone()) {
            Ok(decoded) => decoded,
            Err(error) => {
                let error = refused(EdgeError::from(&error));
                return if is_http(&payload) {
                    Ok(json_of(edge::error_response(&error)))
                } else {
                    Err(lambda_error(&error))
                };
            }
        };
        let arrival = decoded.arrival;
        if arrival == Arrival::Http
            && !http_event_trusted(self.http_qualifier.as_deref(), function_arn)
        {
            decoded.principal = Caller::DirectInvoke;
            decoded.caller = update_request::DIRECT_CALLER.to_owned();
        }
        // Boxed: the update's future is deep (token, store, Graph), and the runtime's own is
        // built around it.
        let work = Box::pin(async {
            self.service
                .apply_json(decoded.payload, &decoded.caller, &decoded.principal)
                .await
                .map(json_of)
                .map_err(|error| EdgeError::from(&error))
        });
        let result = deadline::answer_before(deadline_ms, work, || {
            Err(EdgeError::new(
                ErrorCode::MicrosoftUnavailable,
                "the change was not finished before this invocation's deadline (it may be partly applied); retry with the same idempotency key",
            ))
        })
        .await;
        if result.is_ok() {
            metrics::write_back(Finished::Done);
        }
        match (arrival, result) {
            (Arrival::Http, Ok(outcome)) => Ok(json_of(edge::json_response(200, &outcome))),
            (Arrival::Http, Err(error)) => Ok(json_of(edge::error_response(&refused(error)))),
            (_, Ok(outcome)) => Ok(outcome),
            (Arrival::Direct, Err(error)) => Err(lambda_error(&refused(error))),
            // A passing failure is retried by Lambda's asynchronous retries; a verdict is final
            // (audited and announced), so retrying it would only repeat the refusal.
            (Arrival::Event, Err(error)) if error.code().is_transient() => {
                Err(lambda_error(&refused(error)))
            }
            (Arrival::Event, Err(error)) => Ok(refused(error).body()),
        }
    }
}

/// The bus named by the environment, if any.
fn event_bus_from_env() -> Option<String> {
    std::env::var(ENV_EVENT_BUS)
        .ok()
        .filter(|bus| !bus.trim().is_empty())
}

fn is_http(payload: &Value) -> bool {
    payload
        .get("requestContext")
        .and_then(|context| context.get("http"))
        .is_some()
}

fn refused(error: EdgeError) -> EdgeError {
    tracing::warn!(code = %error.code, error = %error.message, "change request refused");
    metrics::write_back(Finished::Failed);
    error
}

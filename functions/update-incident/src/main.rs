//! `update-incident`: applies one change to a customer's Defender incident or alert through
//! Graph. Reached by direct invocation, the `AWS_IAM` HTTP routes under `/tenants/{tenant}/…`, and
//! `IncidentUpdateRequested` events on the partner's bus; the logic is `writeback` in the library.

use std::sync::Arc;

use defender_partner::runtime::Services;
use defender_partner::telemetry;
use defender_partner::writeback::handler;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = Services::from_env().await.inspect_err(|error| {
        tracing::error!(error = %error, "update-incident cannot start");
    })?;
    let service = handler::build(&services, handler::event_bus_from_env())
        .await
        .inspect_err(|error| tracing::error!(error = %error, "update-incident cannot start"))?;
    let service = Arc::new(service);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let service = service.clone();
        async move {
            handler::handle(&service, event.payload, event.context.deadline)
                .await
                .map_err(|error| Diagnostic {
                    error_type: error.code.as_str().to_owned(),
                    error_message: error.message,
                })
        }
    }))
    .await
}

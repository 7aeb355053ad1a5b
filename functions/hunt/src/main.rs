//! `hunt`: fleet hunting. Submissions arrive by direct invocation and the `AWS_IAM` route
//! `POST /hunts` (answered at once with the hunt's id); each tenant's query arrives as an SQS
//! message; the EventBridge schedule starts the saved hunts that are due. The logic is
//! `hunting` in the library.

use std::sync::Arc;

use defender_partner::hunting::{HuntService, handler};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = Services::from_env().await.inspect_err(|error| {
        tracing::error!(error = %error, "hunt cannot start");
    })?;
    let service = HuntService::build(&services, |name| std::env::var(name).ok())
        .await
        .inspect_err(|error| tracing::error!(error = %error, "hunt cannot start"))?;
    let service = Arc::new(service);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let service = service.clone();
        async move {
            handler::handle(&service, event.payload)
                .await
                .map_err(|error| Diagnostic {
                    error_type: error.code.as_str().to_owned(),
                    error_message: error.message,
                })
        }
    }))
    .await
}

//! `hunt`: fleet hunting. Submissions arrive by direct invocation and the `AWS_IAM` route
//! `POST /hunts` (answered at once with the hunt's id); each tenant's query arrives as an SQS
//! message; the EventBridge schedule starts the saved hunts that are due. What it does is
//! `defender_partner::entry::hunt`; this binary builds it once and serves the runtime.

use std::sync::Arc;

use defender_partner::entry::{HuntFunction, started};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

const NAME: &str = "hunt";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = started(NAME, Services::from_env().await)?;
    let function = Arc::new(started(NAME, HuntFunction::build(&services).await)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { function.handle(event).await }
    }))
    .await
}

//! `update-incident`: applies one change to a customer's Defender incident or alert through
//! Graph, from a direct invocation, the `AWS_IAM` routes under `/tenants/{tenant}/…` or an
//! `IncidentUpdateRequested` event. What it does is `defender_partner::entry::update`; this binary
//! builds it once and serves the runtime.

use std::sync::Arc;

use defender_partner::entry::{UpdateFunction, started};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

const NAME: &str = "update-incident";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = started(NAME, Services::from_env().await)?;
    let function = Arc::new(started(NAME, UpdateFunction::build(&services).await)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { function.handle(event).await }
    }))
    .await
}

//! `consent-signin`: onboards customer tenants (`/consent/start`, `/consent/callback`) and
//! signs users in (`/signin/start`, `/signin/callback`) over the HTTP API. What it does is
//! `defender_partner::entry::callback`; this binary builds it once and serves the runtime.

use std::sync::Arc;

use defender_partner::entry::{CallbackFunction, started};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

const NAME: &str = "consent-signin";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = started(NAME, Services::from_env().await)?;
    let function = Arc::new(started(NAME, CallbackFunction::build(&services).await)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { function.handle(event).await }
    }))
    .await
}

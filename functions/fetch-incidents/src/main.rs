//! `fetch-incidents`: pulls what changed for every active tenant into the sink, on the schedule,
//! from the fan-out queue's messages, or for one pair invoked directly. What it does is
//! `defender_partner::entry::fetch`; this binary builds it once and serves the runtime.

use std::sync::Arc;

use defender_partner::entry::{FetchFunction, started};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

const NAME: &str = "fetch-incidents";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = started(NAME, Services::from_env_for_fetch().await)?;
    let function = Arc::new(started(NAME, FetchFunction::build(&services).await)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { function.handle(event).await }
    }))
    .await
}

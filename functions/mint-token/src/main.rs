//! `mint-token`: a bearer token for one consented customer tenant and one Defender API, for a
//! direct invoke (`{"tenant", "api"}`) or the IAM-protected route `POST /tokens`. What it does
//! is `defender_partner::entry::mint`; this binary builds it once and serves the runtime.

use std::sync::Arc;

use defender_partner::entry::{MintFunction, started};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

const NAME: &str = "mint-token";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = started(NAME, Services::from_env().await)?;
    let function = Arc::new(started(NAME, MintFunction::build(&services).await)?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = function.clone();
        async move { function.handle(event).await }
    }))
    .await
}

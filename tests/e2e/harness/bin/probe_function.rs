//! A tiny Lambda function that checks the harness's handling of `cargo lambda watch`:
//! it echoes its payload and its `PROBE_*` environment, logs on request, and fails with a
//! chosen function error on request.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let payload = event.payload;
    if let Some(text) = payload["log"].as_str() {
        tracing::info!(text, "probe log line");
        eprintln!("probe stderr: {text}");
    }
    if let Some(error_type) = payload["fail"].as_str() {
        return Err(Diagnostic {
            error_type: error_type.to_owned(),
            error_message: format!("probe failed as asked ({error_type})"),
        });
    }
    let env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(key, _)| key.starts_with("PROBE_") || key == "AWS_ENDPOINT_URL")
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    Ok(json!({ "echo": payload, "env": env }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(handle)).await
}

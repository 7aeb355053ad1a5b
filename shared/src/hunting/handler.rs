//! The `hunt` function's work between the Lambda runtime and the service. It is reached four
//! ways, told apart by the payload:
//!
//! - SQS: one message per tenant of a hunt; only failed messages go back (partial batch
//!   failures);
//! - the EventBridge schedule: the saved hunts that are due start;
//! - HTTP (`AWS_IAM`): `POST /hunts` submits, `GET /hunts/{id}` answers the manifest;
//! - direct invocation: a hunt request submits; `{"hunt_id"}` answers the manifest;
//!   `{"saved": name}` runs a saved hunt.
//!
//! Without a queue (locally), a submission runs the hunt to its end before answering.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{Value, json};

use super::error::HuntError;
use super::queue::HuntTask;
use super::service::{HuntService, Submitted};
use crate::CallerError;
use crate::ErrorCode;
use crate::edge::{self, EdgeError, Invocation};

fn edge_error(error: HuntError) -> EdgeError {
    let error = EdgeError::from(&error);
    tracing::warn!(code = %error.code, error = %error.message, "hunt request refused");
    error
}

/// One invocation. `Err` goes to the Lambda runtime (a direct caller reads the code from
/// `errorType`); HTTP answers are always `Ok`.
pub async fn handle(service: &HuntService, payload: Value) -> Result<Value, EdgeError> {
    if is_sqs(&payload) {
        return batch(service, payload).await;
    }
    if payload.get("detail-type").is_some() {
        let started = service
            .scheduled(chrono::Utc::now())
            .await
            .map_err(edge_error)?;
        finish_locally(service).await;
        return Ok(json!({ "started": started }));
    }
    match Invocation::classify(payload)? {
        Invocation::Http(request) => {
            Ok(serde_json::to_value(http(service, &request).await).expect("a response serialises"))
        }
        Invocation::Direct(body) => direct(service, body).await.map_err(edge_error),
    }
}

fn is_sqs(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(|record| record.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:sqs")
}

/// The fields of an SQS event this function reads.
#[derive(serde::Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records")]
    records: Vec<SqsRecord>,
}

#[derive(serde::Deserialize)]
struct SqsRecord {
    #[serde(rename = "messageId", default)]
    message_id: String,
    #[serde(default)]
    body: String,
}

async fn batch(service: &HuntService, payload: Value) -> Result<Value, EdgeError> {
    let event: SqsEvent = serde_json::from_value(payload).map_err(|error| {
        EdgeError::new(
            ErrorCode::InvalidRequest,
            format!("malformed SQS event: {error}"),
        )
    })?;
    let mut failures = Vec::new();
    // One after another: tenants of one batch share this instance's outbound connections,
    // and concurrency across tenants comes from the function's instances.
    for record in event.records {
        let id = record.message_id;
        let task: HuntTask = match serde_json::from_str(&record.body) {
            Ok(task) => task,
            Err(error) => {
                // Never valid, however often delivered: dropped, not retried.
                tracing::error!(message = %id, %error, "an unreadable hunt message is dropped");
                continue;
            }
        };
        if let Err(error) = service.run_task(task).await {
            tracing::warn!(message = %id, code = %error.code(), %error, "hunt message failed; it comes back");
            failures.push(json!({ "itemIdentifier": id }));
        }
    }
    // Lambda's partial batch response: only these messages come back.
    Ok(json!({ "batchItemFailures": failures }))
}

async fn submitted(service: &HuntService, submitted: Submitted) -> Result<Value, HuntError> {
    if service.is_local() {
        finish_locally(service).await;
        return Ok(
            serde_json::to_value(service.manifest(&submitted.hunt_id).await?)
                .expect("a manifest serialises"),
        );
    }
    Ok(serde_json::to_value(submitted).expect("a submission serialises"))
}

async fn finish_locally(service: &HuntService) {
    if service.is_local() {
        service.drain_local().await;
    }
}

async fn direct(service: &HuntService, body: Value) -> Result<Value, HuntError> {
    if let Some(id) = body.get("hunt_id").and_then(Value::as_str) {
        return Ok(
            serde_json::to_value(service.manifest(id).await?).expect("a manifest serialises")
        );
    }
    if let Some(name) = body.get("saved").and_then(Value::as_str) {
        let started = service.run_saved(name, "direct").await?;
        return submitted(service, started).await;
    }
    let started = service.submit_json(&body, "direct").await?;
    submitted(service, started).await
}

async fn http(
    service: &HuntService,
    request: &ApiGatewayV2httpRequest,
) -> aws_lambda_events::apigw::ApiGatewayV2httpResponse {
    let (method, path) = edge::route_of(request);
    let caller = request
        .request_context
        .authorizer
        .as_ref()
        .and_then(|authorizer| authorizer.iam.as_ref())
        .and_then(|iam| iam.user_arn.clone())
        .unwrap_or_else(|| "http:unauthenticated".to_owned());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (method.as_str(), segments.as_slice()) {
        ("POST", [.., "hunts"]) => match edge::json_body(request) {
            Ok(body) => match service.submit_json(&body, &caller).await {
                Ok(started) => submitted(service, started).await.map(|body| (202, body)),
                Err(error) => Err(error),
            },
            Err(error) => return edge::error_response(&error),
        },
        ("GET", [.., "hunts", id]) => service.manifest(id).await.map(|manifest| {
            (
                200,
                serde_json::to_value(manifest).expect("a manifest serialises"),
            )
        }),
        _ => {
            return edge::error_response(&EdgeError::new(
                ErrorCode::InvalidRequest,
                format!("no route {method} {path}: POST /hunts or GET /hunts/{{id}}"),
            ));
        }
    };
    match answer {
        Ok((status, body)) => edge::json_response(status, &body),
        Err(error) => edge::error_response(&edge_error(error)),
    }
}

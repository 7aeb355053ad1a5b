//! `fetch-incidents`: on the EventBridge schedule, every active tenant and source (processed here
//! or fanned out to the queue); on SQS messages, the pairs they name, reporting partial batch
//! failures; invoked directly with `{"tenant_id", "source"}`, that one pair.

use std::sync::Arc;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use defender_partner::fetch::{FetchService, PairTask, QueuedTask};
use defender_partner::runtime::Services;
use defender_partner::telemetry;
use defender_partner::{ErrorCode, deadline};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init(telemetry::format_from_env());
    let services = Services::from_env_for_fetch().await.inspect_err(|error| {
        tracing::error!(error = %error, "fetch-incidents cannot start");
    })?;
    let service = Arc::new(
        FetchService::build(&services, |name| std::env::var(name).ok())
            .await
            .inspect_err(|error| {
                tracing::error!(error = %error, "fetch-incidents cannot start");
            })?,
    );
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let service = service.clone();
        async move {
            let deadline = deadline::monotonic_deadline(event.context.deadline);
            handle(&service, event.payload, deadline).await
        }
    }))
    .await
}

async fn handle(
    service: &FetchService,
    payload: Value,
    deadline: Instant,
) -> Result<Value, Diagnostic> {
    let failure = |code: ErrorCode, message: String| Diagnostic {
        error_type: code.as_str().to_owned(),
        error_message: message,
    };
    if payload.get("Records").is_some() {
        let event: SqsEvent = serde_json::from_value(payload).map_err(|error| {
            failure(
                ErrorCode::InvalidRequest,
                format!("malformed SQS event: {error}"),
            )
        })?;
        let messages = event
            .records
            .into_iter()
            .map(|record| QueuedTask {
                message_id: record.message_id.unwrap_or_default(),
                body: record.body.unwrap_or_default(),
            })
            .collect();
        let report = service.batch(messages, deadline).await;
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = report
            .failed_message_ids
            .into_iter()
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        return Ok(serde_json::to_value(response).expect("a batch response serialises"));
    }
    if payload.get("detail-type").is_some()
        || payload.as_object().is_some_and(|object| object.is_empty())
    {
        let report = service
            .scheduled(deadline)
            .await
            .map_err(|error| failure(error.code(), error.to_string()))?;
        tracing::info!(
            tenants = report.tenants,
            pairs = report.pairs,
            enqueued = report.enqueued,
            failures = report.failures(),
            "scheduled run finished"
        );
        return Ok(serde_json::to_value(report).expect("a report serialises"));
    }
    let task: PairTask = serde_json::from_value(payload).map_err(|error| {
        failure(
            ErrorCode::InvalidRequest,
            format!(
                "{error}; expected a schedule event, an SQS event or {{\"tenant_id\", \"source\"}}"
            ),
        )
    })?;
    let outcomes = service.pairs(vec![task], deadline).await;
    Ok(serde_json::to_value(outcomes).expect("outcomes serialise"))
}

//! `hunt`: the function's work between the Lambda runtime and the hunting service. It is reached four
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
//!
//! Callers are held to their mapping (`dp-operator callers`, as for `mint-token`): over HTTP the
//! IAM principal API Gateway authenticated, directly `direct-invoke`. The queue and the schedule
//! act for hunts already admitted or saved by the operator.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{Value, json};

use lambda_runtime::{Diagnostic, LambdaEvent};

use super::{json_of, lambda_error};
use crate::CallerError;
use crate::ErrorCode;
use crate::callers::{
    Caller, DIRECT_INVOKE, ScopeError, http_event_trusted, http_identity_trusted,
};
use crate::edge::{self, EdgeError, Invocation};
use crate::hunting::error::HuntError;
use crate::hunting::queue::HuntTask;
use crate::hunting::service::{Asker, HuntService, Submitted};
use crate::runtime::Services;

/// The `hunt` function: built once per cold start.
pub struct HuntFunction {
    service: HuntService,
    /// The alias API Gateway invokes (`DP_CALLER_HTTP_QUALIFIER`), if set.
    http_qualifier: Option<String>,
}

impl HuntFunction {
    /// The function as the environment configures it, with the clients `services` holds.
    pub async fn build(
        services: &Services,
    ) -> Result<HuntFunction, Box<dyn std::error::Error + Send + Sync>> {
        let service = HuntService::build(services, |name| std::env::var(name).ok()).await?;
        Ok(HuntFunction {
            service,
            http_qualifier: services.settings.callers.http_qualifier.clone(),
        })
    }

    /// One invocation: a refusal to a direct caller is a function error whose `errorType` is
    /// the code; HTTP answers are always `Ok`.
    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
        let invoked = Invoked {
            qualifier: self.http_qualifier.as_deref(),
            function_arn: &event.context.invoked_function_arn,
        };
        handle(&self.service, event.payload, invoked)
            .await
            .map_err(|error| lambda_error(&error))
    }
}

fn edge_error(error: HuntError) -> EdgeError {
    let error = EdgeError::from(&error);
    tracing::warn!(code = %error.code, error = %error.message, "hunt request refused");
    error
}

/// What arrived, told apart by the payload's shape.
#[derive(Debug)]
enum HuntEvent {
    /// One message per tenant of a hunt.
    Queue(SqsEvent),
    /// The EventBridge schedule: the saved hunts that are due start.
    Schedule,
    Http(Box<ApiGatewayV2httpRequest>),
    Direct(Value),
}

fn decode(payload: Value) -> Result<HuntEvent, EdgeError> {
    if is_sqs(&payload) {
        let event = serde_json::from_value(payload).map_err(|error| {
            EdgeError::new(
                ErrorCode::InvalidRequest,
                format!("malformed SQS event: {error}"),
            )
        })?;
        return Ok(HuntEvent::Queue(event));
    }
    if payload.get("detail-type").is_some() {
        return Ok(HuntEvent::Schedule);
    }
    Ok(match Invocation::classify(payload)? {
        Invocation::Http(request) => HuntEvent::Http(request),
        Invocation::Direct(body) => HuntEvent::Direct(body),
    })
}

/// How the function was invoked: through which ARN, and the alias the API, the queue and the
/// schedule use (`DP_CALLER_HTTP_QUALIFIER`), if set.
struct Invoked<'a> {
    qualifier: Option<&'a str>,
    function_arn: &'a str,
}

/// One invocation. `Err` goes to the Lambda runtime (a direct caller reads the code from
/// `errorType`); HTTP answers are always `Ok`. Invoked through the alias (or with no alias
/// configured), an HTTP event's principal is believed, and queue and schedule events are what
/// they say. Anyone else who sends one is a direct invoker: queue work and schedule ticks act
/// as the operator, so they are refused from it.
async fn handle(
    service: &HuntService,
    payload: Value,
    invoked: Invoked<'_>,
) -> Result<Value, EdgeError> {
    let event = decode(payload)?;
    let through_alias = match event {
        HuntEvent::Http(_) => http_event_trusted(invoked.qualifier, invoked.function_arn),
        _ => http_identity_trusted(invoked.qualifier, invoked.function_arn),
    };
    admit_internal(&event, through_alias).map_err(edge_error)?;
    match event {
        HuntEvent::Queue(event) => Ok(batch(service, event).await),
        HuntEvent::Schedule => {
            let started = service
                .scheduled(chrono::Utc::now())
                .await
                .map_err(edge_error)?;
            finish_locally(service).await;
            Ok(json!({ "started": started }))
        }
        HuntEvent::Http(request) => Ok(json_of(http(service, &request, through_alias).await)),
        HuntEvent::Direct(body) => direct(service, body).await.map_err(edge_error),
    }
}

/// Queue work and schedule ticks act as the operator: taken only through the alias.
fn admit_internal(event: &HuntEvent, through_alias: bool) -> Result<(), HuntError> {
    match event {
        HuntEvent::Queue(_) | HuntEvent::Schedule if !through_alias => {
            Err(HuntError::Scope(ScopeError::NotAllowed {
                caller: Caller::DirectInvoke.to_string(),
                target: "the hunt queue's or the schedule's work".to_owned(),
                reason: "queue and schedule events are taken only through the function's alias",
            }))
        }
        _ => Ok(()),
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
#[derive(Debug, serde::Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records")]
    records: Vec<SqsRecord>,
}

#[derive(Debug, serde::Deserialize)]
struct SqsRecord {
    #[serde(rename = "messageId", default)]
    message_id: String,
    #[serde(default)]
    body: String,
}

async fn batch(service: &HuntService, event: SqsEvent) -> Value {
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
    json!({ "batchItemFailures": failures })
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
    let asker = Asker::Caller(&Caller::DirectInvoke);
    if let Some(id) = body.get("hunt_id").and_then(Value::as_str) {
        return Ok(serde_json::to_value(service.manifest_as(id, asker).await?)
            .expect("a manifest serialises"));
    }
    if let Some(name) = body.get("saved").and_then(Value::as_str) {
        let started = service.run_saved_as(name, DIRECT_INVOKE, asker).await?;
        return submitted(service, started).await;
    }
    let started = service.submit_json_as(&body, DIRECT_INVOKE, asker).await?;
    submitted(service, started).await
}

async fn http(
    service: &HuntService,
    request: &ApiGatewayV2httpRequest,
    trusted: bool,
) -> aws_lambda_events::apigw::ApiGatewayV2httpResponse {
    let (method, path) = edge::route_of(request);
    let (caller, principal) = if trusted {
        (
            edge::iam_caller(request),
            Caller::from_user_arn(edge::iam_user_arn(request)),
        )
    } else {
        (DIRECT_INVOKE.to_owned(), Caller::DirectInvoke)
    };
    let asker = Asker::Caller(&principal);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (method.as_str(), segments.as_slice()) {
        ("POST", [.., "hunts"]) => match edge::json_body(request) {
            Ok(body) => match service.submit_json_as(&body, &caller, asker).await {
                Ok(started) => submitted(service, started).await.map(|body| (202, body)),
                Err(error) => Err(error),
            },
            Err(error) => return edge::error_response(&error),
        },
        ("GET", [.., "hunts", id]) => service.manifest_as(id, asker).await.map(|manifest| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::samples::event;

    #[test]
    fn the_sample_events_decode_to_their_kind() {
        let HuntEvent::Queue(queue) = decode(event("hunt-sqs.json")).unwrap() else {
            panic!("a queue event");
        };
        assert_eq!(queue.records.len(), 2);
        let task: HuntTask = serde_json::from_str(&queue.records[0].body).unwrap();
        assert!(!queue.records[0].message_id.is_empty(), "{task:?}");
        assert!(matches!(
            decode(event("hunt-schedule.json")).unwrap(),
            HuntEvent::Schedule
        ));
        let HuntEvent::Http(request) = decode(event("hunt-http.json")).unwrap() else {
            panic!("an HTTP request");
        };
        assert_eq!(
            edge::route_of(&request),
            ("POST".to_owned(), "/hunts".to_owned())
        );
        assert_eq!(
            edge::iam_caller(&request),
            "arn:aws:sts::123456789012:assumed-role/soc-hunting/analyst"
        );
        let HuntEvent::Direct(body) = decode(event("hunt-direct.json")).unwrap() else {
            panic!("a direct request");
        };
        assert!(body.get("query").is_some());
    }

    #[test]
    fn a_malformed_queue_event_is_refused() {
        let error =
            decode(json!({"Records": [{"eventSource": "aws:sqs", "messageId": 7}]})).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn queue_and_schedule_events_outside_the_alias_are_refused() {
        for name in ["hunt-sqs.json", "hunt-schedule.json"] {
            let decoded = decode(event(name)).unwrap();
            let error = admit_internal(&decoded, false).unwrap_err();
            assert_eq!(error.code(), ErrorCode::CallerNotAllowed, "{name}");
            assert!(admit_internal(&decoded, true).is_ok(), "{name}");
        }
        // A direct or HTTP request is scoped by its caller instead, alias or not.
        for name in ["hunt-direct.json", "hunt-http.json"] {
            assert!(
                admit_internal(&decode(event(name)).unwrap(), false).is_ok(),
                "{name}"
            );
        }
    }
}

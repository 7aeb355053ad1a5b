//! `fetch-incidents`: on the EventBridge schedule, every active tenant and source (processed here
//! or fanned out to the queue); on SQS messages, the pairs they name, reporting partial batch
//! failures; invoked directly with `{"tenant_id", "source"}`, that one pair.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Diagnostic, LambdaEvent};
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;

use super::{json_of, lambda_error};
use crate::config::ConfigError;
use crate::edge::EdgeError;
use crate::fetch::{BatchReport, FetchService, PairTask, QueuedTask};
use crate::runtime::Services;
use crate::secrets::{CredentialStore, EXPIRY_WARNING_DAYS, credential_days_left};
use crate::telemetry::metrics;
use crate::{ErrorCode, deadline};

/// What `fetch-incidents` was invoked with.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchEvent {
    /// The EventBridge schedule (or an empty test event): every active tenant and source.
    Schedule,
    /// Messages of the fan-out queue, each naming one pair.
    Queue(Vec<QueuedTask>),
    /// One pair, invoked directly.
    Pair(PairTask),
}

impl FetchEvent {
    /// Recognises the event by its shape: SQS events carry `Records`, EventBridge events
    /// `detail-type`; anything else must be one pair.
    pub fn decode(payload: Value) -> Result<FetchEvent, EdgeError> {
        if payload.get("Records").is_some() {
            let event: SqsEvent = serde_json::from_value(payload).map_err(|error| {
                EdgeError::new(
                    ErrorCode::InvalidRequest,
                    format!("malformed SQS event: {error}"),
                )
            })?;
            return Ok(FetchEvent::Queue(
                event
                    .records
                    .into_iter()
                    .map(|record| QueuedTask {
                        message_id: record.message_id.unwrap_or_default(),
                        body: record.body.unwrap_or_default(),
                    })
                    .collect(),
            ));
        }
        if payload.get("detail-type").is_some()
            || payload.as_object().is_some_and(|object| object.is_empty())
        {
            return Ok(FetchEvent::Schedule);
        }
        serde_json::from_value(payload)
            .map(FetchEvent::Pair)
            .map_err(|error| {
                EdgeError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{error}; expected a schedule event, an SQS event or {{\"tenant_id\", \"source\"}}"
                    ),
                )
            })
    }
}

/// The queue's partial batch answer: only the messages that failed go back.
pub fn batch_response(report: BatchReport) -> SqsBatchResponse {
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
    response
}

pub struct FetchFunction {
    service: FetchService,
    /// Read after each scheduled run for the days left on the app credential.
    credentials: Option<Arc<CredentialStore>>,
}

impl FetchFunction {
    /// Reads the fetch, sink and queue settings from the environment; once per cold start.
    pub async fn build(services: &Services) -> Result<FetchFunction, ConfigError> {
        let service = FetchService::build(services, |name| std::env::var(name).ok()).await?;
        Ok(FetchFunction {
            service,
            credentials: Some(services.credentials.clone()),
        })
    }

    pub fn new(service: FetchService) -> FetchFunction {
        FetchFunction {
            service,
            credentials: None,
        }
    }

    pub async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
        let deadline = deadline::monotonic_deadline(event.context.deadline);
        self.answer(event.payload, deadline).await
    }

    /// Does the work `payload` asks for, stopping in time for `deadline`.
    pub async fn answer(&self, payload: Value, deadline: Instant) -> Result<Value, Diagnostic> {
        match FetchEvent::decode(payload).map_err(|error| lambda_error(&error))? {
            FetchEvent::Queue(messages) => Ok(json_of(batch_response(
                self.service.batch(messages, deadline).await,
            ))),
            FetchEvent::Schedule => {
                let report = self
                    .service
                    .scheduled(deadline)
                    .await
                    .map_err(|error| lambda_error(&error))?;
                tracing::info!(
                    busy = report.busy,
                    tenants = report.tenants,
                    pairs = report.pairs,
                    enqueued = report.enqueued,
                    failures = report.failures(),
                    "scheduled run finished"
                );
                metrics::fleet_run_completed(report.pairs, report.enqueued, report.failures());
                if let Some(credentials) = &self.credentials {
                    report_credential_end(credentials).await;
                }
                Ok(json_of(report))
            }
            FetchEvent::Pair(task) => Ok(json_of(self.service.pairs(vec![task], deadline).await)),
        }
    }
}

/// The days left on the app credential, for the expiry alarm (after every scheduled run, so the
/// alarm sees data as long as the fleet runs). A credential without a known end (secretless, or
/// no declared end date) writes nothing; one that cannot be read is the token path's alarm, not
/// this one's.
async fn report_credential_end(credentials: &CredentialStore) -> Option<i64> {
    let credential = credentials.current().await.ok()?;
    let days = credential_days_left(&credential, chrono::Utc::now())?;
    if days < EXPIRY_WARNING_DAYS {
        tracing::warn!(
            days_left = days,
            "the app credential expires soon: add a new one to the Entra app and the credential secret"
        );
    }
    metrics::credential_days_left(days as f64);
    Some(days)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::defender::Source;
    use crate::entry::samples;
    use crate::tenant_id::TenantId;

    fn contoso() -> TenantId {
        TenantId::parse("22222222-2222-4222-8222-222222222222").unwrap()
    }

    #[test]
    fn the_schedule_sample_and_an_empty_event_run_the_fleet() {
        assert_eq!(
            FetchEvent::decode(samples::event("fetch-incidents-schedule.json")).unwrap(),
            FetchEvent::Schedule
        );
        assert_eq!(FetchEvent::decode(json!({})).unwrap(), FetchEvent::Schedule);
    }

    #[test]
    fn the_sqs_sample_names_its_messages() {
        let FetchEvent::Queue(messages) =
            FetchEvent::decode(samples::event("fetch-incidents-sqs.json")).unwrap()
        else {
            panic!("a queue event")
        };
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0].message_id,
            "059f36b4-87a3-44ab-83d2-661975830a7d"
        );
        let first: PairTask = serde_json::from_str(&messages[0].body).unwrap();
        assert_eq!(
            first,
            PairTask {
                tenant_id: contoso(),
                source: Source::GraphIncidents,
            }
        );
    }

    #[test]
    fn the_pair_sample_is_one_pair() {
        assert_eq!(
            FetchEvent::decode(samples::event("fetch-incidents-pair.json")).unwrap(),
            FetchEvent::Pair(PairTask {
                tenant_id: contoso(),
                source: Source::GraphIncidents,
            })
        );
    }

    #[test]
    fn neither_shape_is_an_invalid_request_that_says_what_was_expected() {
        for payload in [
            json!({"tenant_id": "x", "source": "graph-incidents"}),
            json!({"tenant": "22222222-2222-4222-8222-222222222222"}),
            json!([1, 2]),
            json!({"Records": "not a list"}),
            samples::event("mint-token-http.json"),
        ] {
            let error = FetchEvent::decode(payload.clone()).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{payload}");
            let diagnostic = lambda_error(&error);
            assert_eq!(diagnostic.error_type, "invalid_request");
            assert!(
                diagnostic.error_message.contains("expected")
                    || diagnostic.error_message.starts_with("malformed SQS event"),
                "{}",
                diagnostic.error_message
            );
        }
    }

    #[test]
    fn only_failed_messages_go_back_to_the_queue() {
        let response = batch_response(BatchReport {
            outcomes: Vec::new(),
            failed_message_ids: vec!["m-2".into()],
        });
        assert_eq!(
            serde_json::to_value(response).unwrap(),
            json!({"batchItemFailures": [{"itemIdentifier": "m-2"}]})
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_scheduled_run_reports_the_days_left_on_the_credential() {
        use secrecy::SecretString;

        use crate::secrets::InlineSource;

        let store = |json: String| {
            CredentialStore::new(
                Arc::new(InlineSource(SecretString::from(json))),
                std::time::Duration::from_secs(60),
            )
        };
        let ends = chrono::Utc::now() + chrono::Duration::days(12) + chrono::Duration::hours(1);
        let expiring = store(
            json!({
                "client_id": "11111111-1111-4111-8111-111111111111",
                "client_secret": "not-a-real-secret",
                "expires_at": ends.to_rfc3339(),
            })
            .to_string(),
        );
        metrics::take_captured();
        assert_eq!(report_credential_end(&expiring).await, Some(12));
        let lines = metrics::take_captured();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["CredentialDaysLeft"], 12.0);
        // No declared end: nothing to report, no line that would read as "0 days".
        let undeclared = store(
            json!({
                "client_id": "11111111-1111-4111-8111-111111111111",
                "client_secret": "not-a-real-secret",
            })
            .to_string(),
        );
        assert_eq!(report_credential_end(&undeclared).await, None);
        assert!(metrics::take_captured().is_empty());
    }
}

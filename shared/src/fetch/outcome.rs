//! What one pair's run ends with ([`PairResult`], counted in a [`PairOutcome`]), how that is
//! reported (a log line and CloudWatch metrics), and why a run stopped short ([`Failure`]).

use crate::CallerError;
use crate::ErrorCode;
use crate::defender::{ApiError, Source};
use crate::store::RegistryError;
use crate::telemetry::metrics::{self, name};
use crate::tenant_id::TenantId;

/// How a pair's run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PairResult {
    /// The window was paged to its end.
    Complete,
    /// The deadline came first; the next run resumes where this one stopped.
    Partial,
    /// Microsoft (or our own limiter) asked to wait longer than the time left.
    Throttled {
        retry_after_seconds: u64,
    },
    /// The tenant no longer grants access: marked `revoked`.
    Revoked {
        message: String,
    },
    /// Another run owns this pair (its lease, or its checkpoint): skipped without reading or
    /// writing anything.
    Busy,
    /// The registry does not allow this pair (tenant not registered, not active, or without the
    /// source's roles): nothing fetched, and a queued message is deleted, not retried.
    Dropped {
        code: ErrorCode,
        message: String,
    },
    Failed {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PairOutcome {
    pub tenant_id: TenantId,
    pub source: Source,
    #[serde(flatten)]
    pub result: PairResult,
    /// Records delivered (new or updated).
    pub delivered: usize,
    pub new: usize,
    pub updated: usize,
    /// Records seen again (overlap, re-read page) and dropped.
    pub repeats: usize,
    pub pages: usize,
    pub api_calls: usize,
    pub unreadable: usize,
    /// Microsoft's throttled answers (429), waited out or not.
    pub throttled_answers: usize,
    /// Partial answers (206) from Microsoft.
    pub partial_answers: usize,
}

impl PairOutcome {
    /// A pair about to run: complete until something says otherwise, nothing counted yet.
    pub(super) fn new(tenant: &TenantId, source: Source) -> PairOutcome {
        PairOutcome {
            tenant_id: tenant.clone(),
            source,
            result: PairResult::Complete,
            delivered: 0,
            new: 0,
            updated: 0,
            repeats: 0,
            pages: 0,
            api_calls: 0,
            unreadable: 0,
            throttled_answers: 0,
            partial_answers: 0,
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(
            self.result,
            PairResult::Failed { .. } | PairResult::Throttled { .. }
        )
    }

    /// The pair's CloudWatch metrics; `lag_seconds` is how far its newest delivered record is
    /// behind now, when it has one.
    fn metrics(&self, lag_seconds: Option<f64>) -> Vec<(&'static str, f64, &'static str)> {
        let mut values = vec![
            (name::RECORDS_DELIVERED, self.delivered as f64, "Count"),
            (name::API_CALLS, self.api_calls as f64, "Count"),
            (
                name::PAIR_FAILED,
                f64::from(u8::from(self.is_failure())),
                "Count",
            ),
            (
                name::TENANT_REVOKED,
                f64::from(u8::from(matches!(self.result, PairResult::Revoked { .. }))),
                "Count",
            ),
        ];
        if let Some(lag) = lag_seconds {
            values.push((name::LAG_SECONDS, lag, "Seconds"));
        }
        values
    }

    /// Publishes the pair's metrics and logs its end.
    pub(super) fn report(&self, lag_seconds: Option<f64>) {
        metrics::per_source(self.source.as_str(), &self.metrics(lag_seconds));
        if let PairResult::Failed { code, .. } = &self.result
            && metrics::needs_operator(*code)
        {
            metrics::token_error(metrics::TokenPath::FetchIncidents, *code);
        }
        tracing::info!(
            tenant = %self.tenant_id,
            source = %self.source.as_str(),
            result = ?self.result,
            delivered = self.delivered,
            repeats = self.repeats,
            pages = self.pages,
            "pair finished"
        );
    }
}

/// Why a pair's run stopped short: what it becomes is decided where the run ends (a failure
/// recorded on the checkpoint, a revoked tenant, a busy pair).
#[derive(Debug)]
pub(super) enum Failure {
    Api(ApiError),
    Store(RegistryError),
    Other(ErrorCode, String),
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Self {
        Failure::Store(error)
    }
}

impl Failure {
    /// The stable code and the message the pair reports.
    pub(super) fn describe(&self) -> (ErrorCode, String) {
        match self {
            Failure::Api(error) => (error.code(), error.to_string()),
            Failure::Store(error) => (error.code(), error.to_string()),
            Failure::Other(code, message) => (*code, message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("22222222-2222-4222-8222-222222222222").unwrap()
    }

    #[test]
    fn failed_and_throttled_pairs_count_as_failures() {
        let mut outcome = PairOutcome::new(&tenant(), Source::GraphAlerts);
        assert_eq!(outcome.result, PairResult::Complete);
        assert!(!outcome.is_failure());
        for (result, failure) in [
            (PairResult::Partial, false),
            (PairResult::Busy, false),
            (
                PairResult::Revoked {
                    message: "gone".into(),
                },
                false,
            ),
            (
                PairResult::Throttled {
                    retry_after_seconds: 5,
                },
                true,
            ),
            (
                PairResult::Failed {
                    code: ErrorCode::MicrosoftUnavailable,
                    message: "down".into(),
                },
                true,
            ),
        ] {
            outcome.result = result;
            assert_eq!(outcome.is_failure(), failure, "{:?}", outcome.result);
        }
    }

    #[test]
    fn the_result_is_flattened_into_the_outcome() {
        let mut outcome = PairOutcome::new(&tenant(), Source::MdeAlerts);
        outcome.result = PairResult::Throttled {
            retry_after_seconds: 30,
        };
        outcome.delivered = 3;
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["result"], "throttled");
        assert_eq!(json["retry_after_seconds"], 30);
        assert_eq!(json["source"], "mde-alerts");
        assert_eq!(json["delivered"], 3);
    }

    #[test]
    fn metrics_count_failures_revocations_and_the_lag() {
        let mut outcome = PairOutcome::new(&tenant(), Source::GraphIncidents);
        outcome.result = PairResult::Revoked {
            message: "gone".into(),
        };
        outcome.api_calls = 2;
        let metrics = outcome.metrics(Some(12.0));
        assert!(metrics.contains(&(name::API_CALLS, 2.0, "Count")));
        assert!(metrics.contains(&(name::PAIR_FAILED, 0.0, "Count")));
        assert!(metrics.contains(&(name::TENANT_REVOKED, 1.0, "Count")));
        assert!(metrics.contains(&(name::LAG_SECONDS, 12.0, "Seconds")));
        assert_eq!(outcome.metrics(None).len(), 4);
    }

    #[test]
    fn a_failure_describes_itself_with_its_code() {
        let (code, message) = Failure::Api(ApiError::Unavailable(503)).describe();
        assert_eq!(code, ErrorCode::MicrosoftUnavailable);
        assert!(message.contains("503"), "{message}");
        let (code, _) = Failure::Other(ErrorCode::Internal, "sink: full".into()).describe();
        assert_eq!(code, ErrorCode::Internal);
    }
}

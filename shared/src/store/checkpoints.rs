//! Fetch progress per tenant and source: the checkpoint (what is delivered, where an unfinished
//! window stopped, health figures) and the ledger (id → last-update time delivered), which tells
//! a new record from an update and drops repeats from overlapping windows.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::tenant_id::TenantId;

/// A window being paged, newest first, from `upper` down to the checkpoint's `low`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenWindow {
    /// Inclusive upper bound of the window (an API time literal).
    pub upper: String,
    /// Everything newer than this, down from `upper`, is delivered; `None` before the first page.
    pub cursor: Option<String>,
    /// Sources whose pages come in no documented order (Graph): the lower bound of the query in
    /// progress when it covers only part of the rest of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// And that query's next page (`@odata.nextLink`), so that a run cut short resumes the
    /// chain instead of reading its first pages again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tenant_id: TenantId,
    pub source: String,
    /// Records last updated at or after this are (re)queried; everything before it is delivered.
    pub low: Option<String>,
    /// An unfinished window, resumed by the next run.
    pub window: Option<OpenWindow>,
    pub last_success: Option<DateTime<Utc>>,
    /// Last-update time of the newest record delivered (lag = now − this).
    pub newest_delivered: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    /// The stable code of the last failure; cleared by a complete run.
    pub last_error: Option<String>,
    /// When the last failure happened (kept after a complete run, like `recent_errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    /// The last [`RECENT_ERRORS_KEPT`] failures, newest first (the operator's `status --tenant`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_errors: Vec<RecentError>,
    /// Throttled (429) and partial (206) answers per hour, the last [`ANSWER_HOURS_KEPT`] hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answer_hours: Vec<AnswerHour>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency counter, maintained by the store.
    pub version: u64,
}

/// Failures a checkpoint remembers.
pub const RECENT_ERRORS_KEPT: usize = 10;
/// Hours of throttled and partial answers a checkpoint counts.
pub const ANSWER_HOURS_KEPT: i64 = 24;
/// Longest message kept per failure (a checkpoint is one DynamoDB item, at most 400 KB).
const ERROR_MESSAGE_CHARS: usize = 300;

/// One failure of a pair's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    pub at: DateTime<Utc>,
    /// The stable error code (README's error-code table).
    pub code: String,
    pub message: String,
}

/// The answers of one clock hour that were not plain successes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerHour {
    /// The start of the hour.
    pub hour: DateTime<Utc>,
    #[serde(default)]
    pub throttled: u32,
    #[serde(default)]
    pub partial: u32,
}

/// Throttled and partial answers summed over a span of hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AnswerCounts {
    pub throttled: u32,
    pub partial: u32,
}

impl Checkpoint {
    pub fn new(tenant_id: TenantId, source: impl Into<String>) -> Checkpoint {
        Checkpoint {
            tenant_id,
            source: source.into(),
            low: None,
            window: None,
            last_success: None,
            newest_delivered: None,
            consecutive_failures: 0,
            last_error: None,
            last_error_at: None,
            recent_errors: Vec::new(),
            answer_hours: Vec::new(),
            updated_at: super::stored_now(),
            version: 0,
        }
    }

    /// Records a failed run: one more consecutive failure, its code as the last error, and the
    /// failure at the head of the bounded history.
    pub fn record_error(&mut self, code: &str, message: &str, at: DateTime<Utc>) {
        self.consecutive_failures += 1;
        self.last_error = Some(code.to_owned());
        self.last_error_at = Some(at);
        self.recent_errors.insert(
            0,
            RecentError {
                at,
                code: code.to_owned(),
                // Control characters dropped: an operator's terminal prints it (`status --tenant`).
                message: message
                    .chars()
                    .filter(|character| !character.is_control())
                    .take(ERROR_MESSAGE_CHARS)
                    .collect(),
            },
        );
        self.recent_errors.truncate(RECENT_ERRORS_KEPT);
    }

    /// Adds throttled and partial answers seen at `at` to its hour, and forgets hours that fell
    /// out of the last [`ANSWER_HOURS_KEPT`].
    pub fn count_answers(&mut self, counts: AnswerCounts, at: DateTime<Utc>) {
        let hour = start_of_hour(at);
        self.answer_hours
            .retain(|kept| kept.hour > hour - Duration::hours(ANSWER_HOURS_KEPT));
        if counts == AnswerCounts::default() {
            return;
        }
        match self.answer_hours.iter_mut().find(|kept| kept.hour == hour) {
            Some(kept) => {
                kept.throttled = kept.throttled.saturating_add(counts.throttled);
                kept.partial = kept.partial.saturating_add(counts.partial);
            }
            None => self.answer_hours.push(AnswerHour {
                hour,
                throttled: counts.throttled,
                partial: counts.partial,
            }),
        }
        self.answer_hours.sort_by_key(|kept| kept.hour);
    }

    /// Throttled and partial answers in the [`ANSWER_HOURS_KEPT`] hours up to `now` (whole clock
    /// hours: the current one and the 23 before it).
    pub fn answers_last_day(&self, now: DateTime<Utc>) -> AnswerCounts {
        let oldest = start_of_hour(now) - Duration::hours(ANSWER_HOURS_KEPT - 1);
        self.answer_hours
            .iter()
            .filter(|kept| kept.hour >= oldest && kept.hour <= now)
            .fold(AnswerCounts::default(), |sum, kept| AnswerCounts {
                throttled: sum.throttled.saturating_add(kept.throttled),
                partial: sum.partial.saturating_add(kept.partial),
            })
    }
}

fn start_of_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

#[async_trait]
pub trait Checkpoints: Send + Sync {
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        source: &str,
    ) -> Result<Option<Checkpoint>, RegistryError>;

    /// Writes `checkpoint` if the stored one still has `checkpoint.version` (or none exists and
    /// the version is 0); returns the stored copy with its new version.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RegistryError>;

    /// Every checkpoint (the operator's and the metrics' view).
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, RegistryError>;

    /// The delivered last-update time of each of `ids` that the ledger knows.
    async fn delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, RegistryError>;

    /// Records `(id, last_update)` pairs as delivered.
    async fn mark_delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        entries: &[(String, String)],
    ) -> Result<(), RegistryError>;

    /// Takes the pair's lease for `holder` until `until`, with one conditional write: `true` if
    /// nobody else holds an unexpired one at `now` (or `holder` already does: the lease is
    /// extended), `false` if another run owns the pair. A run writes nothing for a pair (sink,
    /// ledger, checkpoint) before it holds the lease, so two overlapping runs never deliver the
    /// same page twice; the expiry frees the pair of a run that died holding it.
    async fn take_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError>;

    /// Ends `holder`'s lease on the pair; a lease another run holds now is left alone.
    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint::new(
            TenantId::parse("22222222-2222-4222-8222-222222222222").unwrap(),
            "graph-incidents",
        )
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn errors_are_counted_and_the_last_ten_kept_newest_first() {
        let mut checkpoint = checkpoint();
        let start = at("2026-12-01T00:00:00Z");
        for index in 0..12 {
            checkpoint.record_error(
                "microsoft_unavailable",
                &format!("attempt {index}: {}", "x".repeat(1000)),
                start + Duration::minutes(index),
            );
        }
        assert_eq!(checkpoint.consecutive_failures, 12);
        assert_eq!(
            checkpoint.last_error.as_deref(),
            Some("microsoft_unavailable")
        );
        assert_eq!(
            checkpoint.last_error_at,
            Some(start + Duration::minutes(11))
        );
        assert_eq!(checkpoint.recent_errors.len(), RECENT_ERRORS_KEPT);
        assert!(
            checkpoint.recent_errors[0]
                .message
                .starts_with("attempt 11")
        );
        assert!(checkpoint.recent_errors[9].message.starts_with("attempt 2"));
        assert_eq!(checkpoint.recent_errors[0].message.chars().count(), 300);
        checkpoint.record_error("partial_content", "a\u{1b}[31mred\nline", start);
        assert_eq!(checkpoint.recent_errors[0].message, "a[31mredline");
    }

    #[test]
    fn answers_are_counted_per_hour_for_the_last_day() {
        let mut checkpoint = checkpoint();
        let now = at("2026-12-02T10:30:00Z");
        let throttle = AnswerCounts {
            throttled: 1,
            partial: 0,
        };
        // 30 hours of one throttle an hour, and a partial answer now.
        for hours_ago in (0..30).rev() {
            checkpoint.count_answers(throttle, now - Duration::hours(hours_ago));
        }
        checkpoint.count_answers(
            AnswerCounts {
                throttled: 2,
                partial: 1,
            },
            now,
        );
        assert_eq!(checkpoint.answer_hours.len(), 24, "bounded");
        assert_eq!(
            checkpoint.answers_last_day(now),
            AnswerCounts {
                throttled: 26,
                partial: 1
            }
        );
        // A day later with nothing new, the old hours no longer count.
        assert_eq!(
            checkpoint.answers_last_day(now + Duration::hours(24)),
            AnswerCounts::default()
        );
        // Nothing to add still forgets the hours out of range.
        checkpoint.count_answers(AnswerCounts::default(), now + Duration::hours(30));
        assert!(checkpoint.answer_hours.is_empty());
    }

    #[test]
    fn a_checkpoint_stored_before_the_health_history_still_loads() {
        let stored = r#"{"tenant_id":"22222222-2222-4222-8222-222222222222","source":"mde-alerts",
            "low":"2026-11-25T05:00:00Z","window":null,"last_success":"2026-11-25T05:00:01Z",
            "newest_delivered":null,"consecutive_failures":2,"last_error":"throttled",
            "updated_at":"2026-11-25T05:00:01Z","version":3}"#;
        let checkpoint: Checkpoint = serde_json::from_str(stored).unwrap();
        assert_eq!(checkpoint.consecutive_failures, 2);
        assert_eq!(checkpoint.last_error_at, None);
        assert!(checkpoint.recent_errors.is_empty());
        assert!(checkpoint.answer_hours.is_empty());
        // And one without any history writes none of the new fields.
        let written = serde_json::to_value(&checkpoint).unwrap();
        assert!(written.get("recent_errors").is_none(), "{written}");
    }
}

//! One tenant, one source: bring in what changed since the checkpoint, page by page, each page
//! written durably before the checkpoint moves.
//!
//! The APIs answer newest first and records change while we page. A run therefore fixes a window
//! `[low, upper]` (upper = the run's start) and pages *down* through it by narrowing the upper
//! bound to the oldest last-update time seen (`le cursor`), never by an ever-growing `$skip`: a
//! record that changes mid-run leaves the window (its new time is after `upper`) without shifting
//! the others, and the next window catches it. Windows overlap by a margin, and the ledger
//! (id → last-update delivered) drops what was already delivered, so each change goes out once.
//! A crash anywhere repeats at most one page, never skips one.
//!
//! This file is the orchestration; the window arithmetic is in `window`, what a pair ends with in
//! `outcome`, and when a failure revokes the tenant in `revocation`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::admission::{SourceRoles, admit};
use super::outcome::{Failure, PairOutcome, PairResult};
use super::reverify::Reverifier;
use super::revocation;
use super::window::{
    UnorderedStep, after_unordered, answered_whole, lease_until, migration_start, narrowed_cursor,
    next_low, query_range, span,
};
use crate::CallerError;
use crate::ErrorCode;
use crate::config::FetchSettings;
use crate::defender::Source;
use crate::defender::graph_alerts::AlertsFallback;
use crate::defender::time::{odata_literal, parse_api_time};
use crate::defender::{ApiError, DefenderClient, FetchedRecord, SourceSpec, parse_page, spec};
use crate::sink::{Change, ChangeOrigin, Continues, RecordSink, RunId, SinkRecord};
use crate::store::{
    AnswerCounts, Checkpoint, Checkpoints, OpenWindow, RegistryError, TenantRegistry, UpdateRecords,
};
use crate::tenant_id::TenantId;
use crate::writeback::TargetKind;

pub struct Fetcher {
    pub client: Arc<DefenderClient>,
    pub reverify: Option<Reverifier>,
    pub checkpoints: Arc<dyn Checkpoints>,
    /// Our own write-back changes, to mark their echo.
    pub updates: Arc<dyn UpdateRecords>,
    pub registry: Arc<dyn TenantRegistry>,
    pub sink: Arc<dyn RecordSink>,
    pub settings: FetchSettings,
    /// The roles each source's API needs, to fetch only what a tenant granted.
    pub roles: SourceRoles,
}

/// Longest wait inside a run for Microsoft's `Retry-After`; a longer one ends the pair (in the
/// fanned-out path its continuation waits in the queue instead).
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);
/// Longest wait inside a run for our own limiter's next slot: a full minute's budget, spent in a
/// burst, frees its first slot a minute later. Waiting for it costs the same Lambda time as a
/// limiter that spaces calls evenly, and lets a backfill go on in the same invocation.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(65);
/// Retries of a 5xx or transport failure within a run.
const OUTAGE_RETRIES: u32 = 3;

impl Fetcher {
    pub async fn run_pair(
        &self,
        tenant: &TenantId,
        source: Source,
        deadline: Instant,
    ) -> PairOutcome {
        let mut outcome = PairOutcome::new(tenant, source);
        let run = RunId::new();
        if let Err(result) = self.admit_and_lease(tenant, source, deadline, &run).await {
            outcome.result = result;
            return outcome;
        }
        let result = self
            .page_through(tenant, source, deadline, &run, &mut outcome)
            .await;
        outcome.result = match result {
            Ok(result) => result,
            Err(failure) => self.record_failure(tenant, source, failure).await,
        };
        self.record_answers(tenant, source, &outcome).await;
        if let Err(error) = self
            .checkpoints
            .release_lease(tenant, source.as_str(), run.as_str())
            .await
        {
            // The lease expires on its own; the next run waits for that.
            tracing::warn!(tenant = %tenant, source = %source.as_str(), error = %error, "lease not released");
        }
        let lag = self
            .checkpoints
            .checkpoint(tenant, source.as_str())
            .await
            .ok()
            .flatten()
            .and_then(|checkpoint| checkpoint.newest_delivered)
            .map(|newest| (Utc::now() - newest).num_seconds().max(0) as f64);
        outcome.report(lag);
        outcome
    }

    /// Checks the registry, then takes the pair's lease: only then may the run read or write
    /// anything for the pair. `Err` is the pair's result when it may not run.
    async fn admit_and_lease(
        &self,
        tenant: &TenantId,
        source: Source,
        deadline: Instant,
        run: &RunId,
    ) -> Result<(), PairResult> {
        let unavailable = |error: RegistryError| PairResult::Failed {
            code: error.code(),
            message: error.to_string(),
        };
        let record = self.registry.get(tenant).await.map_err(unavailable)?;
        if let Err(refusal) = admit(record.as_ref(), source, &self.roles) {
            tracing::warn!(tenant = %tenant, source = %source.as_str(), code = %refusal.code, reason = %refusal.message, metric = "PairDropped", "pair dropped");
            crate::telemetry::metrics::per_source(
                source.as_str(),
                &[(crate::telemetry::metrics::name::PAIR_DROPPED, 1.0, "Count")],
            );
            return Err(PairResult::Dropped {
                code: refusal.code,
                message: refusal.message,
            });
        }
        let until = lease_until(Utc::now(), deadline, Instant::now());
        let taken = self
            .checkpoints
            .take_lease(tenant, source.as_str(), run.as_str(), Utc::now(), until)
            .await
            .map_err(unavailable)?;
        if !taken {
            tracing::info!(tenant = %tenant, source = %source.as_str(), "pair busy: another run holds its lease");
            return Err(PairResult::Busy);
        }
        Ok(())
    }

    async fn page_through(
        &self,
        tenant: &TenantId,
        source: Source,
        deadline: Instant,
        run: &RunId,
        outcome: &mut PairOutcome,
    ) -> Result<PairResult, Failure> {
        let spec = spec(source);
        let top = self.settings.page_size(source);
        let mut checkpoint = match self.checkpoints.checkpoint(tenant, source.as_str()).await? {
            Some(checkpoint) => checkpoint,
            None => self.first_checkpoint(tenant, source).await?,
        };
        let low = checkpoint
            .low
            .clone()
            .unwrap_or_else(|| odata_literal(&Utc::now()));
        if checkpoint.window.is_none() {
            checkpoint.window = Some(OpenWindow {
                upper: odata_literal(&Utc::now()),
                cursor: None,
                floor: None,
                next: None,
            });
        }
        // Records at exactly the cursor time already delivered on earlier pages: only needed when
        // a whole page shares one time (else narrowing alone makes progress).
        let mut skip: u32 = 0;
        let mut expand_alerts =
            source == Source::GraphIncidents && self.settings.graph_expand_alerts;
        // Once the expansion failed: the alerts the run read by time, kept for its next pages.
        let mut alerts_fallback = AlertsFallback::default();
        // A page that says there is more but holds nothing to narrow on: its link is followed.
        let mut follow: Option<url::Url> = None;
        // A resumed link (unordered sources) that the API refuses is dropped once per run, and
        // its query started again.
        let mut resumed_link_refused = false;

        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left <= self.settings.deadline_margin {
                self.save(&checkpoint).await?;
                return Ok(PairResult::Partial);
            }
            let budget = (left - self.settings.deadline_margin).min(MAX_LIMITER_WAIT);
            let window = checkpoint.window.clone().expect("opened above");
            let (lower, bound) = query_range(&window, &low);
            let fresh = self.page_url(&spec, &lower, &bound, top, skip, expand_alerts);
            let resumed = match window.next.as_deref() {
                Some(link) if !spec.newest_first => same_origin_link(&fresh, link).ok(),
                _ => None,
            };
            let url = follow.take().or(resumed.clone()).unwrap_or(fresh);

            let body = match self
                .get_with_retries(tenant, &spec, &url, budget, outcome)
                .await
            {
                Ok(body) => body,
                Err(ApiError::Unavailable(500)) if expand_alerts => {
                    tracing::warn!(tenant = %tenant, "Graph $expand=alerts failed; reading alerts from alerts_v2");
                    expand_alerts = false;
                    continue;
                }
                Err(error @ (ApiError::Throttled(_) | ApiError::LocalLimit(_))) => {
                    return self.throttled(&checkpoint, &error, outcome).await;
                }
                Err(ApiError::BadRequest { .. }) if resumed.is_some() && !resumed_link_refused => {
                    // A link kept from an earlier run may have expired: its query starts again.
                    resumed_link_refused = true;
                    if let Some(open) = checkpoint.window.as_mut() {
                        open.next = None;
                    }
                    checkpoint = self.save(&checkpoint).await?;
                    continue;
                }
                Err(ApiError::PartialContent { provider, body }) => {
                    // What a 206 holds is delivered; the checkpoint stays before it, so the next
                    // run reads the page again whole.
                    outcome.partial_answers += 1;
                    if let Ok(page) = parse_page(source, &body) {
                        outcome.pages += 1;
                        self.deliver(tenant, source, run, &page.records, outcome)
                            .await?;
                    }
                    tracing::warn!(tenant = %tenant, source = %source.as_str(), provider = %provider, "partial answer (206): delivered, not taken as complete");
                    crate::telemetry::metrics::partial_answer(source.as_str());
                    return Err(Failure::Api(ApiError::PartialContent {
                        provider,
                        body: bytes::Bytes::new(),
                    }));
                }
                Err(error) => return Err(Failure::Api(error)),
            };
            let mut page = parse_page(source, &body).map_err(|error| {
                Failure::Other(ErrorCode::MicrosoftUnavailable, error.to_string())
            })?;
            outcome.pages += 1;
            outcome.unreadable += page.unreadable;
            if page.unreadable > 0 {
                tracing::warn!(tenant = %tenant, source = %source.as_str(), count = page.unreadable, "records without id or last-update time skipped");
            }
            if source == Source::GraphIncidents
                && self.settings.graph_expand_alerts
                && !expand_alerts
                && !page.records.is_empty()
            {
                let calls_before = alerts_fallback.calls;
                let attached = alerts_fallback
                    .attach(
                        &self.client,
                        tenant,
                        &spec,
                        self.settings.page_size(Source::GraphAlerts),
                        &mut page.records,
                        deadline - self.settings.deadline_margin,
                    )
                    .await;
                outcome.api_calls += alerts_fallback.calls - calls_before;
                match attached {
                    Ok(()) => {}
                    // A throttle while reading alerts is a throttle of the pair, not a failure:
                    // the page is read again, alerts and all, once Microsoft's wait is over.
                    Err(error @ (ApiError::Throttled(_) | ApiError::LocalLimit(_))) => {
                        return self.throttled(&checkpoint, &error, outcome).await;
                    }
                    Err(error) => return Err(Failure::Api(error)),
                }
            }
            let returned = page.records.len() + page.unreadable;
            let next_link = page.next_link.take();

            self.deliver(tenant, source, run, &page.records, outcome)
                .await?;
            for record in &page.records {
                if checkpoint
                    .newest_delivered
                    .is_none_or(|newest| record.last_update_at > newest)
                {
                    checkpoint.newest_delivered = Some(record.last_update_at);
                }
            }

            if !spec.newest_first {
                // Only a range too narrow to split follows its links (`window::after_unordered`),
                // kept in the checkpoint so that a run cut short resumes the chain.
                let (Some(lower_at), Some(bound_at)) =
                    (parse_api_time(&lower), parse_api_time(&bound))
                else {
                    return Err(Failure::Other(
                        ErrorCode::Internal,
                        format!("unreadable window bounds {lower} / {bound}"),
                    ));
                };
                let step = after_unordered(
                    &window,
                    &low,
                    (lower_at, bound_at),
                    returned,
                    top,
                    next_link.is_some(),
                );
                let mut open = OpenWindow {
                    next: None,
                    ..window.clone()
                };
                match step {
                    // The whole window answered: completed below.
                    UnorderedStep::WindowDone => {}
                    UnorderedStep::FollowLink => {
                        let Some(link) = next_link.as_deref() else {
                            return Err(Failure::Other(
                                ErrorCode::MicrosoftUnavailable,
                                format!(
                                    "more than {top} records share the instant {bound}, and the API gives no link to the rest"
                                ),
                            ));
                        };
                        open.next = Some(same_origin_link(&url, link)?.to_string());
                    }
                    UnorderedStep::Split { floor } => {
                        tracing::debug!(tenant = %tenant, source = %source.as_str(), returned, "incomplete answer: splitting its time range");
                        open.floor = Some(odata_literal(&floor));
                    }
                    UnorderedStep::Below { floor } => {
                        // `[floor, bound]` is complete: the rest of the window lies below it.
                        open.cursor = Some(lower.clone());
                        open.floor = floor.map(|floor| odata_literal(&floor));
                    }
                }
                if step != UnorderedStep::WindowDone {
                    checkpoint.window = Some(open);
                    checkpoint = self.save(&checkpoint).await?;
                    continue;
                }
            }
            if answered_whole(returned, top, next_link.is_some()) {
                // A short page: the window is done. The next one starts a little before this
                // one's upper bound, for records that became visible late.
                let upper = parse_api_time(&window.upper).unwrap_or_else(Utc::now);
                let next_low = next_low(upper, span(self.settings.overlap), parse_api_time(&low));
                checkpoint.low = Some(odata_literal(&next_low));
                checkpoint.window = None;
                checkpoint.last_success = Some(Utc::now());
                checkpoint.consecutive_failures = 0;
                checkpoint.last_error = None;
                self.save(&checkpoint).await?;
                return Ok(PairResult::Complete);
            }

            if page.records.is_empty() {
                // Nothing to narrow on (only a link, or only unreadable records): the link.
                match next_link {
                    Some(link) => {
                        follow = Some(same_origin_link(&url, &link)?);
                        continue;
                    }
                    None => {
                        skip += returned as u32;
                        continue;
                    }
                }
            }
            let oldest = page
                .records
                .iter()
                .min_by_key(|record| record.last_update_at)
                .map(|record| record.last_update.as_str());
            let cursor = match narrowed_cursor(oldest, window.cursor.as_deref(), &bound) {
                Some(oldest) => {
                    skip = 0;
                    oldest
                }
                None => {
                    // The whole page shares the bound's time: step over it by position.
                    skip += returned as u32;
                    bound.clone()
                }
            };
            checkpoint.window = Some(OpenWindow {
                upper: window.upper.clone(),
                cursor: Some(cursor),
                floor: None,
                next: None,
            });
            checkpoint = self.save(&checkpoint).await?;
        }
    }

    /// Where a pair's first run starts: where the retiring source it succeeds had got to (so a
    /// deployment crossing over to Graph misses nothing and fetches no history again), else the
    /// look-back.
    async fn first_checkpoint(
        &self,
        tenant: &TenantId,
        source: Source,
    ) -> Result<Checkpoint, Failure> {
        let mut fresh = Checkpoint::new(tenant.clone(), source.as_str());
        let lookback = Utc::now() - span(self.settings.lookback);
        // Only a crossing over: while the retiring source still runs beside its successor, the
        // successor reads its own history (graph-alerts holds every product, not only MDE).
        let predecessor = match source
            .predecessor()
            .filter(|predecessor| !self.settings.sources.contains(predecessor))
        {
            Some(predecessor) => self
                .checkpoints
                .checkpoint(tenant, predecessor.as_str())
                .await?
                .map(|checkpoint| (predecessor, checkpoint)),
            None => None,
        };
        let start = match predecessor
            .as_ref()
            .and_then(|(_, checkpoint)| checkpoint.low.as_deref())
            .and_then(parse_api_time)
        {
            Some(low) => {
                let (predecessor, checkpoint) = predecessor.as_ref().expect("matched above");
                // Its `low` already lies an overlap before its last window's end; one more
                // overlap covers the difference between the two APIs' clocks.
                let overlap = span(self.settings.overlap);
                fresh.newest_delivered = checkpoint.newest_delivered;
                tracing::info!(tenant = %tenant, source = %source.as_str(), from = %predecessor.as_str(), low = %checkpoint.low.as_deref().unwrap_or(""), "first run continues from the retiring source's checkpoint");
                migration_start(low, overlap, lookback)
            }
            None => lookback,
        };
        fresh.low = Some(odata_literal(&start));
        Ok(fresh)
    }

    fn page_url(
        &self,
        spec: &SourceSpec,
        low: &str,
        bound: &str,
        top: u32,
        skip: u32,
        expand_alerts: bool,
    ) -> url::Url {
        let field = spec.time_field;
        let mut query: Vec<(&str, String)> = vec![
            (
                "$filter",
                format!("{field} ge {low} and {field} le {bound}"),
            ),
            ("$top", top.to_string()),
        ];
        if skip > 0 {
            query.push(("$skip", skip.to_string()));
        }
        if spec.accepts_orderby {
            query.push(("$orderby", format!("{field} desc")));
        }
        if expand_alerts {
            query.push(("$expand", "alerts".into()));
        }
        if spec.source == Source::MdeAlerts && self.settings.mde_expand_evidence {
            query.push(("$expand", "evidence".into()));
        }
        self.client.url(spec, spec.path, &query)
    }

    async fn get_with_retries(
        &self,
        tenant: &TenantId,
        spec: &SourceSpec,
        url: &url::Url,
        budget: Duration,
        outcome: &mut PairOutcome,
    ) -> Result<bytes::Bytes, ApiError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            outcome.api_calls += 1;
            let left = budget.saturating_sub(started.elapsed());
            let answer = self.client.get(tenant, spec, url, left).await;
            if matches!(answer, Err(ApiError::Throttled(_))) {
                crate::telemetry::metrics::throttled_answer(spec.source.as_str());
            }
            match answer {
                Err(ApiError::Throttled(wait))
                    if wait <= MAX_INLINE_WAIT.min(budget.saturating_sub(started.elapsed())) =>
                {
                    outcome.throttled_answers += 1;
                    tracing::info!(tenant = %tenant, wait_ms = wait.as_millis() as u64, "throttled; waiting as asked");
                    tokio::time::sleep(wait).await;
                }
                Err(error @ (ApiError::Unavailable(_) | ApiError::Transport(_)))
                    if attempt < OUTAGE_RETRIES =>
                {
                    attempt += 1;
                    let pause = Duration::from_millis(250 * 2u64.pow(attempt));
                    if pause >= budget.saturating_sub(started.elapsed()) {
                        return Err(error);
                    }
                    tracing::warn!(tenant = %tenant, error = %error, attempt, "API failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// Writes the page's new and changed records, then remembers them in the ledger.
    async fn deliver(
        &self,
        tenant: &TenantId,
        source: Source,
        run: &RunId,
        records: &[FetchedRecord],
        outcome: &mut PairOutcome,
    ) -> Result<(), Failure> {
        if records.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = records.iter().map(|record| record.id.clone()).collect();
        let delivered = self
            .checkpoints
            .delivered(tenant, source.as_str(), &ids)
            .await?;
        let inherited = self.inherited(tenant, source, records, &delivered).await?;
        let mut batch = Vec::new();
        let mut ledger = Vec::new();
        for record in records {
            let change = match delivered.get(&record.id) {
                Some(last) if *last == record.last_update => {
                    outcome.repeats += 1;
                    continue;
                }
                Some(_) => Change::Updated,
                None => match inherited.incidents.get(&record.id) {
                    // The retiring source delivered this incident (same id) at this version or
                    // a later one: nothing new for the consumer.
                    Some(then) if *then >= record.last_update_at => {
                        outcome.repeats += 1;
                        continue;
                    }
                    Some(_) => Change::Updated,
                    None => Change::New,
                },
            };
            // The same record twice on one page (it changed between two reads): keep one.
            if ledger.iter().any(|(id, last): &(String, String)| {
                *id == record.id && *last == record.last_update
            }) {
                outcome.repeats += 1;
                continue;
            }
            match change {
                Change::New => outcome.new += 1,
                Change::Updated => outcome.updated += 1,
            }
            ledger.push((record.id.clone(), record.last_update.clone()));
            batch.push(SinkRecord {
                tenant_id: tenant.clone(),
                source,
                id: record.id.clone(),
                last_update: record.last_update.clone(),
                last_update_at: record.last_update_at,
                change,
                redirected_to: record.redirected_to.clone(),
                continues: record
                    .mde_alert_id
                    .as_ref()
                    .filter(|id| inherited.mde_alerts.contains(*id))
                    .map(|id| Continues {
                        source: Source::MdeAlerts,
                        id: id.clone(),
                    }),
                change_origin: None,
                raw: record.raw.clone(),
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.mark_own_changes(tenant, source, &mut batch).await?;
        self.sink
            .write(run, &batch)
            .await
            .map_err(|error| Failure::Other(ErrorCode::Internal, format!("sink: {error}")))?;
        self.checkpoints
            .mark_delivered(tenant, source.as_str(), &ledger)
            .await?;
        outcome.delivered += batch.len();
        Ok(())
    }

    /// Marks the versions that are our own write-back changes, unchanged since: their
    /// `lastUpdateDateTime` is the one Microsoft answered to our change. A later edit (in the
    /// portal, by another tool) moved it again, and the record goes out as a plain update.
    async fn mark_own_changes(
        &self,
        tenant: &TenantId,
        source: Source,
        batch: &mut [SinkRecord],
    ) -> Result<(), Failure> {
        let Some(kind) = TargetKind::of_source(source) else {
            return Ok(());
        };
        let ids: Vec<String> = batch.iter().map(|record| record.id.clone()).collect();
        let ours = self
            .updates
            .own_changes(tenant, kind.as_str(), &ids)
            .await?;
        if ours.is_empty() {
            return Ok(());
        }
        for record in batch.iter_mut() {
            let Some(change) = ours.get(&record.id) else {
                continue;
            };
            // Compared as instants: Graph and M365 Defender spell fractions differently.
            if parse_api_time(&change.last_update) == Some(record.last_update_at) {
                record.change_origin = Some(ChangeOrigin {
                    request_id: change.request_id.clone(),
                    caller: change.caller.clone(),
                    fields: change.fields.clone(),
                });
            }
        }
        Ok(())
    }

    /// What the retiring source this one succeeds already delivered of these records:
    /// incidents keep their id across the crossing (a Graph incident's `id` is the M365 Defender
    /// `incidentId`); a Graph alert from Defender for Endpoint carries the MDE alert's id.
    async fn inherited(
        &self,
        tenant: &TenantId,
        source: Source,
        records: &[FetchedRecord],
        delivered: &std::collections::HashMap<String, String>,
    ) -> Result<Inherited, Failure> {
        let mut inherited = Inherited::default();
        // Only when crossing over: a deployment running both delivers each source's own copy.
        let crossing = source
            .predecessor()
            .filter(|predecessor| !self.settings.sources.contains(predecessor));
        match crossing {
            Some(Source::M365dIncidents) => {
                let unknown: Vec<String> = records
                    .iter()
                    .filter(|record| !delivered.contains_key(&record.id))
                    .map(|record| record.id.clone())
                    .collect();
                if !unknown.is_empty() {
                    inherited.incidents = self
                        .checkpoints
                        .delivered(tenant, Source::M365dIncidents.as_str(), &unknown)
                        .await?
                        .into_iter()
                        .filter_map(|(id, last)| parse_api_time(&last).map(|at| (id, at)))
                        .collect();
                }
            }
            Some(Source::MdeAlerts) => {
                let carried: Vec<String> = records
                    .iter()
                    .filter_map(|record| record.mde_alert_id.clone())
                    .collect();
                if !carried.is_empty() {
                    inherited.mde_alerts = self
                        .checkpoints
                        .delivered(tenant, Source::MdeAlerts.as_str(), &carried)
                        .await?
                        .into_keys()
                        .collect();
                }
            }
            _ => {}
        }
        Ok(inherited)
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, Failure> {
        Ok(self.checkpoints.save_checkpoint(checkpoint).await?)
    }

    /// Ends the pair as throttled (by Microsoft, or by our own limiter) for the wait asked, its
    /// place kept: the next run resumes there.
    async fn throttled(
        &self,
        checkpoint: &Checkpoint,
        error: &ApiError,
        outcome: &mut PairOutcome,
    ) -> Result<PairResult, Failure> {
        let wait = match error {
            ApiError::Throttled(wait) => {
                outcome.throttled_answers += 1;
                *wait
            }
            ApiError::LocalLimit(wait) => *wait,
            other => unreachable!("not a throttle: {other}"),
        };
        self.save(checkpoint).await?;
        Ok(PairResult::Throttled {
            retry_after_seconds: wait.as_secs_f64().ceil() as u64,
        })
    }

    /// Records the failure on the checkpoint, and on the tenant when the revocation policy says
    /// its consent is gone.
    async fn record_failure(
        &self,
        tenant: &TenantId,
        source: Source,
        failure: Failure,
    ) -> PairResult {
        if let Failure::Store(RegistryError::Conflict(_)) = failure {
            return PairResult::Busy;
        }
        let result = revocation::judge(
            self.registry.as_ref(),
            &self.client,
            tenant,
            source,
            &failure,
        )
        .await;
        let (code, message) = failure.describe();
        match self.checkpoints.checkpoint(tenant, source.as_str()).await {
            Ok(stored) => {
                // A pair that fails on its first run keeps the start its first run had (the
                // look-back, or its predecessor's place): a bare checkpoint would have no `low`,
                // and the next run would start from now, skipping the history.
                let mut checkpoint = match stored {
                    Some(stored) => stored,
                    None => match self.first_checkpoint(tenant, source).await {
                        Ok(first) => first,
                        Err(_) => Checkpoint::new(tenant.clone(), source.as_str()),
                    },
                };
                checkpoint.record_error(code.as_str(), &message, Utc::now());
                if let Err(error) = self.checkpoints.save_checkpoint(&checkpoint).await {
                    tracing::warn!(tenant = %tenant, error = %error, "failure not recorded on the checkpoint");
                }
            }
            Err(error) => tracing::warn!(tenant = %tenant, error = %error, "checkpoint unreadable"),
        }
        result
    }

    /// Adds the run's throttled (429) and partial (206) answers to the pair's hourly counts
    /// (`dp-operator status`). Only a run that held the pair writes; one without such answers
    /// writes nothing.
    async fn record_answers(&self, tenant: &TenantId, source: Source, outcome: &PairOutcome) {
        let counts = AnswerCounts {
            throttled: outcome.throttled_answers as u32,
            partial: outcome.partial_answers as u32,
        };
        if counts == AnswerCounts::default()
            || matches!(
                outcome.result,
                PairResult::Busy | PairResult::Dropped { .. }
            )
        {
            return;
        }
        let recorded = match self.checkpoints.checkpoint(tenant, source.as_str()).await {
            Ok(Some(mut checkpoint)) => {
                checkpoint.count_answers(counts, Utc::now());
                self.checkpoints
                    .save_checkpoint(&checkpoint)
                    .await
                    .map(drop)
            }
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            tracing::warn!(tenant = %tenant, source = %source.as_str(), error = %error, "throttled and partial answers not recorded on the checkpoint");
        }
    }
}

/// The API's `@odata.nextLink`, if it points where the page came from.
fn same_origin_link(page: &url::Url, link: &str) -> Result<url::Url, Failure> {
    crate::http::same_origin_link(page, link)
        .map_err(|message| Failure::Other(ErrorCode::MicrosoftUnavailable, message))
}

#[derive(Debug)]
/// What a retiring predecessor delivered of a page's records.
#[derive(Default)]
struct Inherited {
    /// Incident id → the last-update time the predecessor delivered.
    incidents: std::collections::HashMap<String, chrono::DateTime<Utc>>,
    /// MDE alert ids the predecessor delivered.
    mde_alerts: std::collections::HashSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> url::Url {
        url::Url::parse("https://graph.microsoft.com/v1.0/security/incidents?$top=50").unwrap()
    }

    #[test]
    fn a_next_link_on_the_same_host_is_followed() {
        let next = same_origin_link(
            &page(),
            "https://graph.microsoft.com/v1.0/security/incidents?$top=50&$skiptoken=abc",
        )
        .unwrap();
        assert_eq!(next.query(), Some("$top=50&$skiptoken=abc"));
    }

    #[test]
    fn a_next_link_elsewhere_never_gets_our_token() {
        for link in [
            "https://evil.example/v1.0/security/incidents",
            "http://graph.microsoft.com/v1.0/security/incidents",
            "https://graph.microsoft.com:8443/v1.0/security/incidents",
            "not a url",
        ] {
            let Err(Failure::Other(code, message)) = same_origin_link(&page(), link) else {
                panic!("{link} was accepted");
            };
            assert_eq!(code, ErrorCode::MicrosoftUnavailable);
            assert!(message.contains("nextLink"), "{message}");
        }
    }
}

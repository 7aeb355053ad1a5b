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

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::admission::{SourceRoles, admit};
use super::settings::FetchSettings;
use crate::defender::graph_alerts::attach_alerts;
use crate::defender::time::{odata_literal, parse_api_time};
use crate::defender::{ApiError, DefenderClient, FetchedRecord, SourceSpec, parse_page, spec};
use crate::sink::{Change, Continues, RecordSink, RunId, SinkRecord, Source};
use crate::tenant_id::TenantId;
use crate::tenants::{
    Checkpoint, Checkpoints, OpenWindow, RegistryError, TenantRegistry, TenantStatus,
};
use crate::{CallerError, ErrorCode};

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
}

impl PairOutcome {
    pub fn is_failure(&self) -> bool {
        matches!(
            self.result,
            PairResult::Failed { .. } | PairResult::Throttled { .. }
        )
    }
}

/// Proves a pending tenant's consent (the fetch cycle's re-verification), one API at a time: a
/// tenant that consented to some APIs only becomes active for what it granted (its other sources
/// are then reported `roles_missing` by the plan) instead of staying pending, re-proven with a
/// token request per API on every cycle.
pub struct Reverifier {
    pub tokens: Arc<crate::entra::AppTokenProvider>,
    pub settings: crate::config::Settings,
}

/// Writes of one outcome tried before giving up to a concurrent writer.
const REVERIFY_WRITE_ATTEMPTS: usize = 8;

impl Reverifier {
    pub async fn prove(
        &self,
        tenant: &TenantId,
        apis: &[crate::api::DefenderApi],
        registry: &dyn TenantRegistry,
    ) -> Result<crate::tenants::TenantRecord, RegistryError> {
        // Only what a proven administrator (or the operator) started is the cycle's to finish:
        // an unverified claim waits for the operator's decision, and costs no token request.
        if let Some(record) = registry.get(tenant).await?
            && (record.status != TenantStatus::Pending || !record.ownership.is_proven())
        {
            return Ok(record);
        }
        let mut roles: Vec<String> = Vec::new();
        let mut granted = Vec::new();
        let mut refused = Vec::new();
        let mut passing = None;
        for api in apis {
            // No waiting here: the next cycle tries again.
            match crate::consent::proof::prove_consent(
                &self.tokens,
                &self.settings,
                tenant,
                &[*api],
                Duration::ZERO,
            )
            .await
            {
                Ok(proven) => {
                    granted.push(*api);
                    for role in proven {
                        if !roles.contains(&role) {
                            roles.push(role);
                        }
                    }
                }
                // Throttling or an outage says nothing about the grant: no verdict this cycle,
                // or a tenant would be made active without an API it did grant.
                Err(failure) if failure.code.is_transient() => {
                    passing.get_or_insert(failure);
                }
                Err(failure) => refused.push((*api, failure)),
            }
        }
        roles.sort();
        let verdict = match (passing, refused.first()) {
            (Some(failure), _) => Err(format!("{}: {}", failure.code, failure.message)),
            (None, _) if !granted.is_empty() => Ok(roles),
            (None, Some((_, failure))) => Err(format!("{}: {}", failure.code, failure.message)),
            (None, None) => Err(format!("{}: no API to prove", ErrorCode::ConfigInvalid)),
        };
        match &verdict {
            Ok(roles) => {
                tracing::info!(tenant = %tenant, roles = ?roles, granted = ?granted, refused = refused.len(), "consent proven by the fetch cycle")
            }
            Err(reason) => tracing::warn!(tenant = %tenant, reason = %reason, "consent not proven"),
        }
        // Re-read and written only if nobody changed it since (conditional write): an offboarding
        // while the proof ran is never overwritten, and only a pending tenant is promoted.
        for _ in 0..REVERIFY_WRITE_ATTEMPTS {
            let current = registry
                .get(tenant)
                .await?
                .ok_or_else(|| RegistryError::NotFound(tenant.to_string()))?;
            if current.status != TenantStatus::Pending || !current.ownership.is_proven() {
                return Ok(current);
            }
            let mut next = current.clone();
            next.updated_at = crate::tenants::stored_now();
            match &verdict {
                Ok(roles) => {
                    next.status = TenantStatus::Active;
                    next.roles = roles.clone();
                    next.status_reason = None;
                }
                Err(reason) => next.status_reason = Some(reason.clone()),
            }
            match registry.replace(&next).await {
                Ok(()) => {
                    return Ok(crate::tenants::TenantRecord {
                        version: next.version + 1,
                        ..next
                    });
                }
                Err(RegistryError::Conflict(_)) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(RegistryError::Conflict(tenant.to_string()))
    }
}

pub struct Fetcher {
    pub client: Arc<DefenderClient>,
    pub reverify: Option<Reverifier>,
    pub checkpoints: Arc<dyn Checkpoints>,
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
/// The narrowest time range an unordered source's query is split to; below it, links.
const MIN_SPLIT: chrono::Duration = chrono::Duration::milliseconds(1);
/// Retries of a 5xx or transport failure within a run.
const OUTAGE_RETRIES: u32 = 3;
/// Lambda's longest timeout: a lease never needs to outlast more than this of a run.
const LONGEST_INVOCATION: Duration = Duration::from_secs(900);
/// A lease outlives its run's deadline by this much, for clocks that differ between instances.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Until when a run whose deadline is `deadline` holds its pair: past the deadline (the run is
/// over by then, finished or killed), so that no other run starts while it may still write.
pub fn lease_until(
    now: chrono::DateTime<Utc>,
    deadline: Instant,
    monotonic_now: Instant,
) -> chrono::DateTime<Utc> {
    let left = deadline
        .saturating_duration_since(monotonic_now)
        .min(LONGEST_INVOCATION);
    now + chrono::Duration::from_std(left + LEASE_MARGIN).unwrap_or_default()
}

impl Fetcher {
    pub async fn run_pair(
        &self,
        tenant: &TenantId,
        source: Source,
        deadline: Instant,
    ) -> PairOutcome {
        let mut outcome = PairOutcome {
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
        };
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
        let mut values = vec![
            ("RecordsDelivered", outcome.delivered as f64, "Count"),
            ("ApiCalls", outcome.api_calls as f64, "Count"),
            (
                "PairFailed",
                f64::from(u8::from(outcome.is_failure())),
                "Count",
            ),
            (
                "TenantRevoked",
                f64::from(u8::from(matches!(
                    outcome.result,
                    PairResult::Revoked { .. }
                ))),
                "Count",
            ),
        ];
        if let Some(lag) = lag {
            values.push(("LagSeconds", lag, "Seconds"));
        }
        crate::telemetry::metrics(&[("Source", source.as_str())], &values);
        tracing::info!(
            tenant = %tenant,
            source = %source.as_str(),
            result = ?outcome.result,
            delivered = outcome.delivered,
            repeats = outcome.repeats,
            pages = outcome.pages,
            "pair finished"
        );
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
            crate::telemetry::metrics(
                &[("Source", source.as_str())],
                &[("PairDropped", 1.0, "Count")],
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
            let bound = window
                .cursor
                .clone()
                .unwrap_or_else(|| window.upper.clone());
            let lower = window.floor.clone().unwrap_or_else(|| low.clone());
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
                Err(ApiError::Throttled(wait) | ApiError::LocalLimit(wait)) => {
                    return self.throttled(&checkpoint, wait).await;
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
                    if let Ok(page) = parse_page(source, &body) {
                        outcome.pages += 1;
                        self.deliver(tenant, source, run, &page.records, outcome)
                            .await?;
                    }
                    tracing::warn!(tenant = %tenant, source = %source.as_str(), provider = %provider, "partial answer (206): delivered, not taken as complete");
                    crate::telemetry::metrics(
                        &[("Source", source.as_str())],
                        &[("PartialAnswers", 1.0, "Count")],
                    );
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
                match attach_alerts(&self.client, tenant, &spec, &mut page.records, budget).await {
                    Ok(calls) => outcome.api_calls += calls,
                    // A throttle while reading alerts is a throttle of the pair, not a failure:
                    // the page is read again, alerts and all, once Microsoft's wait is over.
                    Err(ApiError::Throttled(wait) | ApiError::LocalLimit(wait)) => {
                        return self.throttled(&checkpoint, wait).await;
                    }
                    Err(error) => return Err(Failure::Api(error)),
                }
            }
            let returned = page.records.len() + page.unreadable;
            // A server may cut a page below `$top` and say so with a link: only a short page
            // without one ends the window.
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
                // Graph documents no order, and its links page by position: a record that
                // changes while a chain is followed shifts the rest, and one is skipped. So a
                // query counts as complete only when one answer holds all of it (short, no
                // link); otherwise its time range is split in two and read again (the ledger
                // drops what was delivered), never paged by `$skip` or by links. Only a range
                // too narrow to split (many records at one instant) follows its links, kept in
                // the checkpoint so that a run cut short resumes the chain.
                let mut open = window.clone();
                let (Some(lower_at), Some(bound_at)) =
                    (parse_api_time(&lower), parse_api_time(&bound))
                else {
                    return Err(Failure::Other(
                        ErrorCode::Internal,
                        format!("unreadable window bounds {lower} / {bound}"),
                    ));
                };
                let width = bound_at - lower_at;
                let splittable = width > MIN_SPLIT;
                let complete = (returned as u32) < top && next_link.is_none();
                if !complete && !splittable {
                    let Some(link) = next_link else {
                        return Err(Failure::Other(
                            ErrorCode::MicrosoftUnavailable,
                            format!(
                                "more than {top} records share the instant {bound}, and the API gives no link to the rest"
                            ),
                        ));
                    };
                    open.next = Some(same_origin_link(&url, &link)?.to_string());
                    checkpoint.window = Some(open);
                    checkpoint = self.save(&checkpoint).await?;
                    continue;
                }
                open.next = None;
                if !complete {
                    tracing::debug!(tenant = %tenant, source = %source.as_str(), returned, "incomplete answer: splitting its time range");
                    open.floor = Some(odata_literal(&(bound_at - width / 2)));
                    checkpoint.window = Some(open);
                    checkpoint = self.save(&checkpoint).await?;
                    continue;
                }
                if window.floor.is_some() || window.next.is_some() {
                    // `[floor, bound]` is complete: the rest of the window lies below it, read
                    // next in a range sized for this one's density.
                    open.cursor = Some(lower.clone());
                    let next_width = next_width(width, returned, top);
                    open.floor = next_floor(lower_at, Some(next_width), parse_api_time(&low))
                        .map(|floor| odata_literal(&floor));
                    let finished = open.floor.is_none() && lower == low;
                    checkpoint.window = Some(open);
                    if !finished {
                        checkpoint = self.save(&checkpoint).await?;
                        continue;
                    }
                }
                // The whole window answered: fall through to completing it.
            }
            if (returned as u32) < top && next_link.is_none() {
                // A short page: the window is done. The next one starts a little before this
                // one's upper bound, for records that became visible late.
                let upper = parse_api_time(&window.upper).unwrap_or_else(Utc::now);
                let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
                let next_low =
                    (upper - overlap).max(parse_api_time(&low).unwrap_or(upper - overlap));
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
                .map(|record| record.last_update.clone());
            match oldest {
                Some(oldest)
                    if Some(&oldest) != window.cursor.as_ref()
                        && parse_api_time(&oldest) < parse_api_time(&bound) =>
                {
                    checkpoint.window = Some(OpenWindow {
                        upper: window.upper.clone(),
                        cursor: Some(oldest),
                        floor: None,
                        next: None,
                    });
                    skip = 0;
                }
                _ => {
                    // The whole page shares the bound's time: step over it by position.
                    skip += returned as u32;
                    checkpoint.window = Some(OpenWindow {
                        upper: window.upper.clone(),
                        cursor: Some(bound.clone()),
                        floor: None,
                        next: None,
                    });
                }
            }
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
        let lookback =
            Utc::now() - chrono::Duration::from_std(self.settings.lookback).unwrap_or_default();
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
                let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
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
            match self.client.get(tenant, spec, url, left).await {
                Err(ApiError::Throttled(wait))
                    if wait <= MAX_INLINE_WAIT.min(budget.saturating_sub(started.elapsed())) =>
                {
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
                raw: record.raw.clone(),
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
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

    /// Ends the pair as throttled for `wait`, its place kept: the next run resumes there.
    async fn throttled(
        &self,
        checkpoint: &Checkpoint,
        wait: Duration,
    ) -> Result<PairResult, Failure> {
        self.save(checkpoint).await?;
        Ok(PairResult::Throttled {
            retry_after_seconds: wait.as_secs_f64().ceil() as u64,
        })
    }

    /// Records the failure on the checkpoint (and on the tenant, when consent is gone).
    async fn record_failure(
        &self,
        tenant: &TenantId,
        source: Source,
        failure: Failure,
    ) -> PairResult {
        if let Failure::Store(RegistryError::Conflict(_)) = failure {
            return PairResult::Busy;
        }
        let (code, mut message) = failure.describe();
        let consent_gone = failure.means_revoked();
        let revoked = consent_gone && self.others_still_accept_the_app(tenant, source).await;
        if consent_gone && !revoked {
            message = format!(
                "{message} Other tenants refuse the app too, so the tenant is not marked revoked: \
                 check the client_id in the app credential."
            );
        }
        if revoked {
            tracing::warn!(tenant = %tenant, code = %code, metric = "TenantRevoked", "consent gone; marking the tenant revoked");
            if let Err(error) = self
                .registry
                .set_status(
                    tenant,
                    TenantStatus::Revoked,
                    Some(format!("{code}: {message}")),
                )
                .await
            {
                tracing::error!(tenant = %tenant, error = %error, "could not mark the tenant revoked");
            }
        }
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
                checkpoint.consecutive_failures += 1;
                checkpoint.last_error = Some(code.as_str().to_owned());
                if let Err(error) = self.checkpoints.save_checkpoint(&checkpoint).await {
                    tracing::warn!(tenant = %tenant, error = %error, "failure not recorded on the checkpoint");
                }
            }
            Err(error) => tracing::warn!(tenant = %tenant, error = %error, "checkpoint unreadable"),
        }
        if revoked {
            PairResult::Revoked { message }
        } else {
            PairResult::Failed { code, message }
        }
    }

    /// Entra's "app not found in this tenant" (AADSTS700016) also comes back from every tenant
    /// when the credential names the wrong `client_id`, and one such run must not mark the whole
    /// fleet revoked. A second opinion tells the two apart: if another active tenant still
    /// accepts the app, this tenant withdrew its consent. With no other tenant to ask, Entra's
    /// word stands; with no clear answer (throttled, unavailable), nothing is marked this run.
    async fn others_still_accept_the_app(&self, tenant: &TenantId, source: Source) -> bool {
        /// Enough to outvote one or two tenants that also withdrew.
        const WITNESSES: usize = 3;
        let api = spec(source).api;
        let others: Vec<TenantId> = match self.registry.list().await {
            Ok(records) => records
                .into_iter()
                .filter(|record| {
                    record.status == TenantStatus::Active && record.tenant_id != *tenant
                })
                .map(|record| record.tenant_id)
                .take(WITNESSES)
                .collect(),
            Err(error) => {
                tracing::warn!(tenant = %tenant, error = %error, "registry unreadable; revocation not recorded this run");
                return false;
            }
        };
        if others.is_empty() {
            return true;
        }
        for other in &others {
            match self.client.app_accepted_by(other, api).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(tenant = %tenant, witness = %other, error = %error, "no second opinion on the revocation this run");
                }
            }
        }
        tracing::error!(tenant = %tenant, witnesses = others.len(), "other tenants refuse the app too: the credential's client_id is likely wrong");
        false
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

#[derive(Debug)]
enum Failure {
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
    fn describe(&self) -> (ErrorCode, String) {
        match self {
            Failure::Api(error) => (error.code(), error.to_string()),
            Failure::Store(error) => (error.code(), error.to_string()),
            Failure::Other(code, message) => (*code, message.clone()),
        }
    }

    fn means_revoked(&self) -> bool {
        // Only Entra saying the app is gone from the tenant means revoked. A 403 from the API can
        // be a product not enabled, and missing roles can be a tenant that consented to some
        // APIs only: those fail the pair, not the tenant.
        matches!(self, Failure::Api(ApiError::Token(error)) if error.code() == ErrorCode::NotConsented)
    }
}

/// Where a Graph source's first run starts after its retiring predecessor: an overlap before
/// where the predecessor had got to, never earlier than the look-back.
fn migration_start(
    predecessor_low: chrono::DateTime<Utc>,
    overlap: chrono::Duration,
    lookback: chrono::DateTime<Utc>,
) -> chrono::DateTime<Utc> {
    (predecessor_low - overlap).max(lookback)
}

/// The width of an unordered source's next query after one of `width` answered `returned`
/// records completely: sized to fill about four fifths of a page at the density just seen
/// (between half and four times the width), so that few answers come back full and are read
/// again split.
fn next_width(width: chrono::Duration, returned: usize, top: u32) -> chrono::Duration {
    let target = f64::from(top) * 0.8;
    let factor = if returned == 0 {
        4.0
    } else {
        (target / returned as f64).clamp(0.5, 4.0)
    };
    let micros = (width.num_microseconds().unwrap_or(i64::MAX / 8) as f64 * factor) as i64;
    chrono::Duration::microseconds(micros.max(1))
}

/// The next query's lower bound below `cursor` for an unordered source: one `span` down, or the
/// rest of the window (`None`) when that reaches its low end.
fn next_floor(
    cursor: chrono::DateTime<Utc>,
    span: Option<chrono::Duration>,
    low: Option<chrono::DateTime<Utc>>,
) -> Option<chrono::DateTime<Utc>> {
    let floor = cursor - span?;
    match low {
        Some(low) if floor <= low => None,
        _ => Some(floor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_starts_an_overlap_before_the_retiring_checkpoint() {
        let low = "2026-12-01T10:00:00Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap();
        let overlap = chrono::Duration::seconds(300);
        let lookback = low - chrono::Duration::days(7);
        assert_eq!(
            migration_start(low, overlap, lookback),
            low - overlap,
            "not the look-back: the history is not fetched again"
        );
        // A retiring checkpoint older than the look-back is not followed past it.
        assert_eq!(
            migration_start(lookback - chrono::Duration::days(30), overlap, lookback),
            lookback
        );
    }

    #[test]
    fn the_next_range_is_sized_for_the_density_just_seen() {
        let hour = chrono::Duration::hours(1);
        // 20 of 50 in an hour: two hours fill 40.
        assert_eq!(next_width(hour, 20, 50), hour * 2);
        assert_eq!(next_width(hour, 0, 50), hour * 4);
        let dense = next_width(hour, 49, 50);
        assert!(dense > hour / 2 && dense < hour, "{dense}");
        assert_eq!(next_width(hour, 500, 50), hour / 2);
    }

    #[test]
    fn the_next_query_goes_one_span_down_or_to_the_windows_end() {
        let cursor = "2026-12-01T10:00:00Z"
            .parse::<chrono::DateTime<Utc>>()
            .unwrap();
        let hour = chrono::Duration::hours(1);
        assert_eq!(
            next_floor(cursor, Some(hour), Some(cursor - chrono::Duration::days(1))),
            Some(cursor - hour)
        );
        assert_eq!(next_floor(cursor, Some(hour), Some(cursor - hour)), None);
        assert_eq!(next_floor(cursor, None, Some(cursor - hour)), None);
    }

    fn page() -> url::Url {
        url::Url::parse("https://graph.microsoft.com/v1.0/security/incidents?$top=50").unwrap()
    }

    #[test]
    fn a_lease_outlives_the_deadline_and_never_much_more_than_a_timeout() {
        let now = Utc::now();
        let monotonic = Instant::now();
        let until = lease_until(now, monotonic + Duration::from_secs(600), monotonic);
        assert_eq!((until - now).num_seconds(), 660);
        let until = lease_until(now, monotonic + Duration::from_secs(86_400), monotonic);
        assert_eq!(
            (until - now).num_seconds(),
            960,
            "capped at Lambda's 15 minutes"
        );
        let until = lease_until(now, monotonic, monotonic + Duration::from_secs(5));
        assert_eq!(
            (until - now).num_seconds(),
            60,
            "a deadline past still leaves the margin"
        );
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

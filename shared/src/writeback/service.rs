//! Applying one update: a token for the app or the analyst, the write permission checked, the
//! target read, the change written (tags merged into the current list and verified), a comment
//! posted at most once, our change remembered for the fetch, and every request audited.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::comments;
use super::error::UpdateError;
use super::events::UpdateEvents;
use super::graph::{Exchange, GraphCall, GraphWriter, error_of};
use super::request::{Actor, UpdateRequest};
use super::tags;
use super::vocabulary::TargetKind;
use crate::CallerError;
use crate::callers::{Caller, CallerScoping};
use crate::deadline;
use crate::defender::client::ApiError;
use crate::minting::{MintRequest, MintedToken, TokenService};
use crate::store::{AuditEntry, KeyClaim, OwnChange, TenantRegistry, UpdateRecords};
use crate::tenant_id::TenantId;

/// Attempts per Graph call (throttling and failures that are safe to repeat).
const CALL_ATTEMPTS: u32 = 3;
/// Rounds of re-applying a tag edit that a concurrent writer overwrote.
const TAG_ROUNDS: u32 = 3;
/// Rounds of posting a comment whose answer was lost (each checks the comments first).
const COMMENT_ROUNDS: u32 = 3;
/// When Microsoft throttles without saying for how long.
const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(5);
/// Longest wait for a call slot or for another request's hold on the same target.
const MAX_SLOT_WAIT: Duration = Duration::from_secs(10);
/// How long a request may hold its idempotency key or a target's tag lease before another
/// request may take it over (beyond the function's timeout: only a dead request holds it longer).
const HOLD: chrono::Duration = chrono::Duration::minutes(2);
/// The fields of a target kept in the audit trail and the answer.
const SUMMARY_FIELDS: [&str; 7] = [
    "status",
    "classification",
    "determination",
    "assignedTo",
    "customTags",
    "customDetails",
    "lastUpdateDateTime",
];

/// The answer to a caller (and what an idempotency key replays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    pub request_id: String,
    pub tenant_id: String,
    pub kind: String,
    pub id: String,
    /// The fields changed (`assigned_to`, `status`, …, `tags`, `comment`).
    pub applied: Vec<String>,
    /// The target as Microsoft answered after the change (summary fields).
    pub record: Value,
    /// `lastUpdateDateTime` after the change: the fetch recognises this version as ours.
    pub last_update: Option<String>,
    /// A comment whose first answer was lost was found already posted, not posted again.
    #[serde(default)]
    pub comment_already_posted: bool,
    pub acting_as: String,
    #[serde(default)]
    pub microsoft_request_ids: Vec<String>,
    /// This answer is the first request's, returned again for its idempotency key.
    #[serde(default)]
    pub replayed: bool,
}

pub struct UpdateService {
    tokens: Arc<TokenService>,
    writer: GraphWriter,
    records: Arc<dyn UpdateRecords>,
    registry: Arc<dyn TenantRegistry>,
    events: Arc<dyn UpdateEvents>,
    /// Who may change which tenant's incidents (the mapping `mint-token` also follows).
    scoping: Option<CallerScoping>,
}

/// What one request learned on its way, for its audit entry.
#[derive(Default)]
struct Trail {
    before: Value,
    after: Value,
    microsoft_request_ids: Vec<String>,
    acting_as: String,
}

/// A failed call, and whether it may have been applied.
enum CallError {
    Final(UpdateError),
    MaybeApplied(UpdateError),
}

impl CallError {
    fn error(self) -> UpdateError {
        match self {
            CallError::Final(error) | CallError::MaybeApplied(error) => error,
        }
    }
}

impl UpdateService {
    pub fn new(
        tokens: Arc<TokenService>,
        writer: GraphWriter,
        records: Arc<dyn UpdateRecords>,
        registry: Arc<dyn TenantRegistry>,
        events: Arc<dyn UpdateEvents>,
    ) -> UpdateService {
        UpdateService {
            tokens,
            writer,
            records,
            registry,
            events,
            scoping: None,
        }
    }

    /// Holds every request to its principal's mapping, checked before its idempotency key is
    /// claimed: a refused caller neither changes the tenant nor replays another's answer.
    pub fn with_caller_scoping(mut self, scoping: CallerScoping) -> UpdateService {
        self.scoping = Some(scoping);
        self
    }

    /// Whether `principal`'s mapping includes `tenant` (always, without scoping).
    async fn admit(&self, principal: &Caller, tenant: &TenantId) -> Result<(), UpdateError> {
        match &self.scoping {
            Some(scoping) => {
                scoping
                    .check_in(self.registry.as_ref(), principal, tenant)
                    .await?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Parses, validates and applies a raw JSON request for `caller` (as audited), scoped by
    /// `principal`'s mapping.
    pub async fn apply_json(
        &self,
        payload: Value,
        caller: &str,
        principal: &Caller,
    ) -> Result<UpdateOutcome, UpdateError> {
        match UpdateRequest::from_json(payload.clone()) {
            Ok(request) => self.apply(request, caller, principal).await,
            Err(refusal) => {
                self.audit_refusal(&payload, caller, principal, &refusal)
                    .await;
                Err(refusal)
            }
        }
    }

    /// A request refused before it could be read whole is audited too, when it names a valid
    /// tenant and target (anything else belongs to no tenant's trail) that its caller may act
    /// for (no caller writes into the trail of a tenant outside its mapping).
    async fn audit_refusal(
        &self,
        payload: &Value,
        caller: &str,
        principal: &Caller,
        refusal: &UpdateError,
    ) {
        let text = |name: &str| payload.get(name).and_then(Value::as_str);
        let Some(tenant) = text("tenant").and_then(|tenant| TenantId::parse(tenant).ok()) else {
            return;
        };
        if self.admit(principal, &tenant).await.is_err() {
            return;
        }
        let (kind, id) = match (text("incident_id"), text("alert_id")) {
            (Some(id), None) => (TargetKind::Incident, id),
            (None, Some(id)) => (TargetKind::Alert, id),
            _ => return,
        };
        let acting_as = if payload.get("user_token").is_some() || payload.get("user_oid").is_some()
        {
            "user"
        } else {
            "app"
        };
        let entry = AuditEntry {
            tenant_id: tenant,
            at: Utc::now(),
            request_id: uuid::Uuid::new_v4().to_string(),
            caller: caller.to_owned(),
            acting_as: acting_as.to_owned(),
            kind: kind.as_str().to_owned(),
            id: id.chars().take(128).collect(),
            before: Value::Null,
            after: Value::Null,
            result: refusal.code().as_str().to_owned(),
            microsoft_request_id: None,
        };
        self.record(&entry).await;
    }

    pub async fn apply(
        &self,
        request: UpdateRequest,
        caller: &str,
        principal: &Caller,
    ) -> Result<UpdateOutcome, UpdateError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let fingerprint = request.fingerprint();
        let mut trail = Trail {
            acting_as: acting_as(&request.actor),
            ..Trail::default()
        };
        // Refused callers are logged, not audited: the tenant's trail and the bus are for what
        // its own callers asked, and a caller outside the mapping must not write into them.
        if let Err(error) = self.admit(principal, &request.tenant).await {
            tracing::warn!(caller = %principal, audited_as = caller, tenant = %request.tenant, code = %error.code(), %request_id, "caller refused");
            return Err(error);
        }
        if let Some(key) = &request.idempotency_key {
            let now = Utc::now();
            match self
                .records
                .claim_key(&request.tenant, key, &fingerprint, now, now + HOLD)
                .await?
            {
                KeyClaim::Owned => {}
                KeyClaim::Answered(answer) => {
                    let mut outcome: UpdateOutcome =
                        serde_json::from_value(answer).map_err(|error| {
                            UpdateError::Store(crate::store::RegistryError::Corrupt(
                                error.to_string(),
                            ))
                        })?;
                    outcome.replayed = true;
                    trail.after = outcome.record.clone();
                    self.audit(&request, &request_id, caller, &trail, "replayed")
                        .await;
                    return Ok(outcome);
                }
                KeyClaim::Running => {
                    let error = UpdateError::InProgress(key.clone());
                    self.audit(&request, &request_id, caller, &trail, error.code().as_str())
                        .await;
                    return Err(error);
                }
                KeyClaim::OtherRequest => {
                    let error = UpdateError::IdempotencyKeyReused(key.clone());
                    self.audit(&request, &request_id, caller, &trail, error.code().as_str())
                        .await;
                    return Err(error);
                }
            }
        }
        let result = self
            .apply_owned(&request, &request_id, caller, &mut trail)
            .await;
        if let Some(key) = &request.idempotency_key {
            let kept = match &result {
                Ok(outcome) => {
                    let answer = serde_json::to_value(outcome).expect("an outcome serialises");
                    self.records
                        .answer_key(&request.tenant, key, &fingerprint, &answer)
                        .await
                }
                Err(_) => {
                    self.records
                        .release_key(&request.tenant, key, &fingerprint)
                        .await
                }
            };
            if let Err(error) = kept {
                tracing::warn!(code = %error.code(), %request_id, "idempotency key not updated: {error}");
            }
        }
        let verdict = match &result {
            Ok(_) => "applied".to_owned(),
            Err(error) => error.code().as_str().to_owned(),
        };
        self.audit(&request, &request_id, caller, &trail, &verdict)
            .await;
        result
    }

    async fn apply_owned(
        &self,
        request: &UpdateRequest,
        request_id: &str,
        caller: &str,
        trail: &mut Trail,
    ) -> Result<UpdateOutcome, UpdateError> {
        let token = self.token(request).await?;
        self.check_write_permission(request, &token).await?;
        if let Some(oid) = &token.user_oid {
            trail.acting_as = format!("user:{oid}");
        }
        let access = token.access_token.clone();
        // Our own writers of one target's tags take turns, so none overwrites another's edit;
        // a portal edit in between is caught by the verification below.
        let lease = if request.change.tags.is_empty() {
            None
        } else {
            Some(self.hold_target(request, request_id).await?)
        };
        let applied = self.write(request, request_id, &access, trail).await;
        if let Some(source) = lease
            && let Err(error) = self
                .records
                .release_target(&request.tenant, &source, request_id)
                .await
        {
            tracing::warn!(code = %error.code(), %request_id, "target hold not released (it expires): {error}");
        }
        let (record, comment_already_posted) = applied?;
        let last_update = record
            .get("lastUpdateDateTime")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let outcome = UpdateOutcome {
            request_id: request_id.to_owned(),
            tenant_id: request.tenant.to_string(),
            kind: request.target.kind.as_str().to_owned(),
            id: request.target.id.clone(),
            applied: request.applied_fields(),
            record: summary(&record),
            last_update: last_update.clone(),
            comment_already_posted,
            acting_as: trail.acting_as.clone(),
            microsoft_request_ids: trail.microsoft_request_ids.clone(),
            replayed: false,
        };
        if let Some(last_update) = last_update {
            let change = OwnChange {
                tenant_id: request.tenant.clone(),
                kind: request.target.kind.as_str().to_owned(),
                id: request.target.id.clone(),
                last_update,
                fields: outcome.applied.clone(),
                request_id: request_id.to_owned(),
                caller: caller.to_owned(),
                at: Utc::now(),
            };
            if let Err(error) = self.records.remember_change(&change).await {
                // The change is made; only its recognition as ours by the next fetch is lost.
                tracing::warn!(code = %error.code(), %request_id, "own change not remembered: {error}");
            }
        }
        Ok(outcome)
    }

    /// Reads, writes and verifies; answers the target as it stands after the change.
    async fn write(
        &self,
        request: &UpdateRequest,
        request_id: &str,
        token: &SecretString,
        trail: &mut Trail,
    ) -> Result<(Value, bool), UpdateError> {
        let path = request.target.path();
        let call = |method: Method, path: String, body: Option<Value>, repeatable: bool| {
            let tenant = request.tenant.clone();
            async move {
                let call = GraphCall {
                    tenant: &tenant,
                    token,
                    method,
                    path: &path,
                    body: body.as_ref(),
                    request_id,
                };
                self.call(call, repeatable, request.actor.is_user()).await
            }
        };
        let mut current =
            self.record_ids(call(Method::GET, path.clone(), None, true).await, trail)?;
        trail.before = summary(&current);
        let mut body: Map<String, Value> = request.change.patch_body();
        let edit = &request.change.tags;
        if !edit.is_empty() {
            body.insert(
                "customTags".into(),
                json!(tags::merged(&tags::of(&current), edit)),
            );
        }
        if !body.is_empty() {
            current = self.record_ids(
                call(Method::PATCH, path.clone(), Some(Value::Object(body)), true).await,
                trail,
            )?;
        }
        if !edit.is_empty() {
            let mut settled = false;
            for _ in 0..TAG_ROUNDS {
                current =
                    self.record_ids(call(Method::GET, path.clone(), None, true).await, trail)?;
                if tags::holds(&tags::of(&current), edit) {
                    settled = true;
                    break;
                }
                let again = json!({"customTags": tags::merged(&tags::of(&current), edit)});
                current = self.record_ids(
                    call(Method::PATCH, path.clone(), Some(again), true).await,
                    trail,
                )?;
            }
            if !settled {
                return Err(UpdateError::TagsUnsettled {
                    kind: request.target.kind.as_str(),
                    id: request.target.id.clone(),
                });
            }
        }
        let mut already_posted = false;
        if let Some(text) = &request.comment {
            let comment =
                json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": text});
            let first_attempt = Utc::now();
            let mut posted = false;
            let mut last_error = None;
            for _ in 0..COMMENT_ROUNDS {
                match call(
                    Method::POST,
                    format!("{path}/comments"),
                    Some(comment.clone()),
                    false,
                )
                .await
                {
                    Ok((_, id)) => {
                        trail.microsoft_request_ids.extend(id);
                        posted = true;
                        break;
                    }
                    Err(CallError::Final(error)) => return Err(error),
                    Err(CallError::MaybeApplied(error)) => {
                        // Microsoft may hold it already: look before posting a second copy.
                        let seen = self
                            .record_ids(call(Method::GET, path.clone(), None, true).await, trail)?;
                        if comments::already_posted(comments::of(&seen), text, first_attempt) {
                            already_posted = true;
                            posted = true;
                            break;
                        }
                        last_error = Some(error);
                    }
                }
            }
            if !posted {
                return Err(last_error.expect("a round that did not post failed"));
            }
            // The comment moved the target's last-update time: read the version that is ours.
            current = self.record_ids(call(Method::GET, path.clone(), None, true).await, trail)?;
        }
        trail.after = summary(&current);
        Ok((current, already_posted))
    }

    fn record_ids(
        &self,
        answer: Result<(Value, Option<String>), CallError>,
        trail: &mut Trail,
    ) -> Result<Value, UpdateError> {
        let (body, request_id) = answer.map_err(CallError::error)?;
        trail.microsoft_request_ids.extend(request_id);
        Ok(body)
    }

    /// One Graph call, repeated (within the invocation's deadline) after throttling, and after
    /// failures when `repeatable` (reads, and PATCHes, which set values and may be applied twice).
    async fn call(
        &self,
        call: GraphCall<'_>,
        repeatable: bool,
        as_user: bool,
    ) -> Result<(Value, Option<String>), CallError> {
        let mut last = CallError::Final(UpdateError::Api(ApiError::Unavailable(503)));
        for attempt in 1..=CALL_ATTEMPTS {
            let wait_for_slot = deadline::bounded(MAX_SLOT_WAIT);
            let exchange = self.writer.exchange(&call, wait_for_slot).await;
            let retry_in = match exchange {
                Exchange::Answered {
                    status: 200..=299,
                    body,
                    request_id,
                    ..
                } => {
                    return Ok((body, request_id));
                }
                Exchange::Answered {
                    status: 429,
                    retry_after,
                    ..
                } => {
                    let wait = retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT);
                    last = CallError::Final(UpdateError::Api(ApiError::Throttled(wait)));
                    wait
                }
                Exchange::Answered {
                    status: status @ 500..=599,
                    ..
                } => {
                    let error = UpdateError::Api(ApiError::Unavailable(status));
                    if !repeatable {
                        return Err(CallError::MaybeApplied(error));
                    }
                    last = CallError::Final(error);
                    backoff(attempt)
                }
                Exchange::Answered { status, body, .. } => {
                    return Err(CallError::Final(refusal(status, &body, as_user, call.path)));
                }
                Exchange::NotSent(described) => {
                    last = CallError::Final(UpdateError::Api(ApiError::Transport(described)));
                    backoff(attempt)
                }
                Exchange::AnswerLost(described) => {
                    let error = UpdateError::Api(ApiError::Transport(described));
                    if !repeatable {
                        return Err(CallError::MaybeApplied(error));
                    }
                    last = CallError::Final(error);
                    backoff(attempt)
                }
                Exchange::NoSlot(wait) => {
                    return Err(CallError::Final(UpdateError::Api(ApiError::LocalLimit(
                        wait,
                    ))));
                }
            };
            // Give up rather than wait past the invocation's deadline.
            if attempt == CALL_ATTEMPTS || deadline::bounded(retry_in) < retry_in {
                break;
            }
            tokio::time::sleep(retry_in).await;
        }
        Err(last)
    }

    async fn token(&self, request: &UpdateRequest) -> Result<MintedToken, UpdateError> {
        let (user_token, user_oid) = match &request.actor {
            Actor::App => (None, None),
            Actor::UserToken(token) => (Some(token.clone()), None),
            Actor::UserOid(oid) => (None, Some(oid.clone())),
        };
        let mint = MintRequest {
            tenant: Some(request.tenant.to_string()),
            api: Some("graph".into()),
            endpoint_version: None,
            user_token,
            user_oid,
        };
        Ok(self.tokens.mint(&mint).await?)
    }

    /// The app's roles (or the analyst's scopes) must include the write permission: refused here,
    /// without a call, with what to do.
    async fn check_write_permission(
        &self,
        request: &UpdateRequest,
        token: &MintedToken,
    ) -> Result<(), UpdateError> {
        let role = request.target.kind.write_role();
        let granted = if request.actor.is_user() {
            &token.scopes
        } else {
            &token.roles
        };
        let has = |name: &String| {
            let name = name.rsplit('/').next().unwrap_or(name);
            name.eq_ignore_ascii_case(role)
        };
        if granted.iter().any(has) {
            return Ok(());
        }
        let customer = self
            .registry
            .get(&request.tenant)
            .await
            .ok()
            .flatten()
            .and_then(|record| record.customer_ref)
            .unwrap_or_else(|| "<customer>".into());
        let hint = if request.actor.is_user() {
            format!(
                "the analyst's token lacks the delegated permission {role}: an administrator of tenant {} grants it by consenting again",
                request.tenant
            )
        } else {
            format!(
                "dp-operator consent-link --customer {customer} --tenant {} (deployed with WriteBack=enabled so that the link asks for it)",
                request.tenant
            )
        };
        Err(UpdateError::WritePermissionMissing {
            tenant: request.tenant.to_string(),
            role,
            hint,
        })
    }

    /// Takes the target's tag lease, waiting a little for another request of ours to finish.
    async fn hold_target(
        &self,
        request: &UpdateRequest,
        request_id: &str,
    ) -> Result<String, UpdateError> {
        let source = format!("{}:{}", request.target.kind.as_str(), request.target.id);
        let patience = deadline::bounded(MAX_SLOT_WAIT);
        let give_up = tokio::time::Instant::now() + patience;
        loop {
            let now = Utc::now();
            if self
                .records
                .hold_target(&request.tenant, &source, request_id, now, now + HOLD)
                .await?
            {
                return Ok(source);
            }
            if tokio::time::Instant::now() + Duration::from_millis(250) >= give_up {
                return Err(UpdateError::TargetBusy {
                    kind: request.target.kind.as_str(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn audit(
        &self,
        request: &UpdateRequest,
        request_id: &str,
        caller: &str,
        trail: &Trail,
        result: &str,
    ) {
        let entry = AuditEntry {
            tenant_id: request.tenant.clone(),
            at: Utc::now(),
            request_id: request_id.to_owned(),
            caller: caller.to_owned(),
            acting_as: trail.acting_as.clone(),
            kind: request.target.kind.as_str().to_owned(),
            id: request.target.id.clone(),
            before: trail.before.clone(),
            after: trail.after.clone(),
            result: result.to_owned(),
            microsoft_request_id: trail.microsoft_request_ids.last().cloned(),
        };
        self.record(&entry).await;
    }
}

impl UpdateService {
    /// Keeps an audit entry and announces it; neither failure fails the request (the change is
    /// made, and the log line below holds the same facts).
    async fn record(&self, entry: &AuditEntry) {
        let request_id = &entry.request_id;
        tracing::info!(
            tenant_id = %entry.tenant_id,
            %request_id,
            caller = %entry.caller,
            target = %format!("{}/{}", entry.kind, entry.id),
            acting_as = %entry.acting_as,
            result = %entry.result,
            "write-back request"
        );
        if let Err(error) = self.records.record_audit(entry).await {
            tracing::error!(code = %error.code(), %request_id, "audit entry not stored: {error}");
        }
        if let Err(error) = self.events.announce(entry).await {
            tracing::warn!(%request_id, "IncidentUpdated not announced on the bus: {error}");
        }
    }
}

/// 0.5 s, then 1 s: a short pause before repeating a failed call.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * u64::from(attempt))
}

fn acting_as(actor: &Actor) -> String {
    match actor {
        Actor::App => "app".into(),
        Actor::UserOid(oid) => format!("user:{oid}"),
        Actor::UserToken(_) => "user".into(),
    }
}

/// Microsoft's refusal, typed.
fn refusal(status: u16, body: &Value, as_user: bool, path: &str) -> UpdateError {
    let (code, message) = error_of(body);
    match status {
        401 => UpdateError::Api(ApiError::Unauthorized),
        403 if as_user => UpdateError::AnalystRoleMissing { code },
        403 => UpdateError::Api(ApiError::Forbidden(code)),
        404 => {
            let target = path.trim_end_matches("/comments");
            let id = target.rsplit('/').next().unwrap_or_default().to_owned();
            let kind = if path.contains("alerts_v2") {
                "alert"
            } else {
                "incident"
            };
            UpdateError::NotFound { kind, id }
        }
        410 => UpdateError::Api(ApiError::Retired { status, message }),
        _ => UpdateError::Refused {
            status,
            code,
            message,
        },
    }
}

fn summary(record: &Value) -> Value {
    let mut kept = Map::new();
    for field in SUMMARY_FIELDS {
        if let Some(value) = record.get(field) {
            kept.insert(field.to_owned(), value.clone());
        }
    }
    Value::Object(kept)
}

//! What an accepted consent changes in the emulated tenant, when it takes effect, and the log of
//! decisions.
//!
//! An accepted consent merges the app's required roles into the tenant's grants (union with
//! what the tenant already granted, so re-consenting is idempotent). With a propagation delay,
//! a task applies the grants once the delay has passed since the decision; the delay is read
//! again whenever the setting changes, so shortening it releases pending grants at once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::entra::directory::TenantLookup;
use crate::entra::resources::Resource;
use crate::scenario::GrantConfig;
use crate::state::Shared;

/// Decisions kept, oldest dropped first.
const LOG_CAPACITY: usize = 10_000;

/// Which consent link the admin followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentKind {
    /// `/{tenant}/v2.0/adminconsent`
    V2,
    /// `/{tenant}/adminconsent`
    AdminConsent,
    /// `/{tenant}/oauth2/authorize?prompt=consent|admin_consent`
    Legacy,
}

impl ConsentKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConsentKind::V2 => "v2",
            ConsentKind::AdminConsent => "adminconsent",
            ConsentKind::Legacy => "legacy",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<ConsentKind> {
        match text {
            "v2" => Some(ConsentKind::V2),
            "adminconsent" => Some(ConsentKind::AdminConsent),
            "legacy" => Some(ConsentKind::Legacy),
            _ => None,
        }
    }
}

/// What the admin clicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentDecision {
    Accept,
    Decline,
}

/// One decision on a consent page, as listed by `GET /_emulator/consent/log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentDecisionRecord {
    /// The GUID of the tenant the admin consented (or declined) for.
    pub tenant: String,
    /// The app's client id (lower case).
    pub client_id: String,
    pub kind: ConsentKind,
    pub decision: ConsentDecision,
    pub at: DateTime<Utc>,
}

/// The consent side of the shared state.
pub(crate) struct ConsentState {
    log: Mutex<VecDeque<ConsentDecisionRecord>>,
    /// Wakes the tasks holding pending grants when the propagation delay changes.
    delay_changed: Arc<Notify>,
}

impl Default for ConsentState {
    fn default() -> Self {
        ConsentState {
            log: Mutex::new(VecDeque::new()),
            delay_changed: Arc::new(Notify::new()),
        }
    }
}

impl ConsentState {
    fn log(&self) -> MutexGuard<'_, VecDeque<ConsentDecisionRecord>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, record: ConsentDecisionRecord) {
        let mut log = self.log();
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub(crate) fn decisions(&self) -> Vec<ConsentDecisionRecord> {
        self.log().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.log().clear();
    }

    pub(crate) fn delay_changed(&self) {
        self.delay_changed.notify_waiters();
    }
}

/// Roles of one resource that a consent grants.
#[derive(Debug, Clone)]
pub(crate) struct ResourceGrant {
    pub resource: &'static Resource,
    /// How the link or the app registration named the resource.
    pub named: String,
    pub roles: Vec<String>,
}

/// The grants of an accepted consent, waiting for the propagation delay.
struct Pending {
    tenant_id: String,
    client_id: String,
    grants: Vec<ResourceGrant>,
    decided: Instant,
}

/// Records the grants: at once without propagation delay (before the redirect is answered),
/// otherwise from a task once the delay has passed.
pub(crate) fn grant(
    shared: &Arc<Shared>,
    tenant_id: &str,
    client_id: &str,
    grants: Vec<ResourceGrant>,
) {
    let pending = Pending {
        tenant_id: tenant_id.to_owned(),
        client_id: client_id.to_owned(),
        grants,
        decided: Instant::now(),
    };
    if deadline(shared, &pending) <= Instant::now() {
        apply(shared, &pending);
        return;
    }
    let weak = Arc::downgrade(shared);
    let delay_changed = Arc::clone(&shared.consent().delay_changed);
    tokio::spawn(async move {
        loop {
            let notified = delay_changed.notified();
            tokio::pin!(notified);
            // Registered before the delay is read, so that a change in between is not missed.
            notified.as_mut().enable();
            let Some(due) = due_or_apply(&weak, &pending) else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = &mut notified => {}
            }
        }
    });
}

/// Applies the grants when they are due and returns `None`; otherwise returns when they will be.
/// `None` too once the emulator is gone.
fn due_or_apply(weak: &Weak<Shared>, pending: &Pending) -> Option<Instant> {
    let shared = weak.upgrade()?;
    let due = deadline(&shared, pending);
    if due <= Instant::now() {
        apply(&shared, pending);
        return None;
    }
    Some(due)
}

fn deadline(shared: &Shared, pending: &Pending) -> Instant {
    let delay = Duration::from_millis(shared.directory().consent_propagation_ms);
    pending
        .decided
        .checked_add(delay)
        .unwrap_or_else(|| pending.decided + Duration::from_secs(86_400 * 365))
}

fn apply(shared: &Shared, pending: &Pending) {
    let mut directory = shared.directory_mut();
    for grant in &pending.grants {
        let mut roles = match directory.lookup_tenant(&pending.tenant_id) {
            TenantLookup::Found(tenant) => tenant.roles(&pending.client_id, grant.resource),
            // The tenant cannot disappear; nothing to do if it did.
            _ => return,
        };
        for role in &grant.roles {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        let config = GrantConfig {
            client_id: pending.client_id.clone(),
            resource: grant.named.clone(),
            roles,
        };
        if let Err(error) = directory.set_grant(&pending.tenant_id, &config) {
            tracing::error!(%error, tenant = %pending.tenant_id, "cannot record a consent grant");
        }
    }
    tracing::info!(
        tenant = %pending.tenant_id,
        client_id = %pending.client_id,
        "consent grants in effect"
    );
}

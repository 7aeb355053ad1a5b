//! Who may act for which tenant: the tenants and customer references (`TenantRecord.customer_ref`)
//! each caller of `mint-token` and `update-incident` is allowed, keyed by the caller's normalised
//! principal (see `crate::callers`). Written by the operator (`dp-operator callers`), read by
//! both functions.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::tenant_id::TenantId;

/// What one caller may mint for. An empty scope allows nothing: revoking a caller's last tenant
/// keeps its (empty) mapping, so that the caller stays refused instead of falling back to the
/// unmapped default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerScope {
    /// The caller's key: a normalised IAM principal ARN, or `direct-invoke`.
    pub caller: String,
    /// Every tenant, present and future.
    #[serde(default)]
    pub all_tenants: bool,
    #[serde(default)]
    pub tenants: BTreeSet<TenantId>,
    /// Every tenant whose record carries one of these customer references.
    #[serde(default)]
    pub customer_refs: BTreeSet<String>,
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency counter, maintained by the store (0: never stored).
    #[serde(skip)]
    pub version: u64,
}

impl CallerScope {
    /// A scope that allows nothing yet.
    pub fn empty(caller: impl Into<String>) -> CallerScope {
        CallerScope {
            caller: caller.into(),
            all_tenants: false,
            tenants: BTreeSet::new(),
            customer_refs: BTreeSet::new(),
            updated_at: super::stored_now(),
            version: 0,
        }
    }

    /// Whether this caller may mint for `tenant`, whose record carries `customer_ref`.
    pub fn allows(&self, tenant: &TenantId, customer_ref: Option<&str>) -> bool {
        self.all_tenants
            || self.tenants.contains(tenant)
            || customer_ref.is_some_and(|reference| self.customer_refs.contains(reference))
    }

    pub fn allows_nothing(&self) -> bool {
        !self.all_tenants && self.tenants.is_empty() && self.customer_refs.is_empty()
    }
}

/// One read for a mint: the caller's scope, and whether any caller has a mapping at all (until
/// the first mapping, unmapped callers keep minting for every tenant in the default mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerLookup {
    pub scope: Option<CallerScope>,
    pub any_mapping: bool,
}

/// How often an update re-reads and retries after losing a race.
const UPDATE_ATTEMPTS: usize = 8;

#[async_trait]
pub trait CallerScopes: Send + Sync {
    /// `caller`'s scope and whether any mapping exists, in one read.
    async fn caller_lookup(&self, caller: &str) -> Result<CallerLookup, RegistryError>;

    /// Every caller's scope, ordered by caller (the operator's view).
    async fn caller_scopes(&self) -> Result<Vec<CallerScope>, RegistryError>;

    /// Writes `scope` if the stored one still has `scope.version` (0: none is stored); returns
    /// the stored copy with its new version. From the first write on, `any_mapping` is true.
    async fn save_caller_scope(&self, scope: &CallerScope) -> Result<CallerScope, RegistryError>;
}

/// Reads `caller`'s scope (empty when unmapped), applies `change`, writes it back; retried a
/// bounded number of times when another writer got there first.
pub async fn update_caller_scope(
    store: &dyn CallerScopes,
    caller: &str,
    change: impl Fn(&mut CallerScope),
) -> Result<CallerScope, RegistryError> {
    for _ in 0..UPDATE_ATTEMPTS {
        let mut scope = store
            .caller_lookup(caller)
            .await?
            .scope
            .unwrap_or_else(|| CallerScope::empty(caller));
        change(&mut scope);
        scope.updated_at = super::stored_now();
        match store.save_caller_scope(&scope).await {
            Err(RegistryError::Conflict(_)) => continue,
            other => return other,
        }
    }
    Err(RegistryError::Conflict(format!("caller {caller}")))
}

pub(super) fn scope_json(scope: &CallerScope) -> String {
    serde_json::to_string(scope).expect("a caller scope serialises")
}

pub(super) fn parse_scope(body: &str, version: u64) -> Result<CallerScope, RegistryError> {
    let mut scope: CallerScope = serde_json::from_str(body)
        .map_err(|error| RegistryError::Corrupt(format!("caller scope: {error}")))?;
    scope.version = version;
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_allows_its_tenants_its_customers_or_everything() {
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let other = TenantId::parse("22222222-2222-4222-8222-222222222222").unwrap();
        let mut scope = CallerScope::empty("direct-invoke");
        assert!(scope.allows_nothing());
        assert!(!scope.allows(&tenant, Some("CRM-1")));
        scope.tenants.insert(tenant.clone());
        assert!(scope.allows(&tenant, None));
        assert!(!scope.allows(&other, None));
        scope.customer_refs.insert("CRM-1".into());
        assert!(scope.allows(&other, Some("CRM-1")));
        assert!(!scope.allows(&other, Some("crm-1")), "references are exact");
        scope = CallerScope::empty("direct-invoke");
        scope.all_tenants = true;
        assert!(scope.allows(&other, None));
    }

    #[test]
    fn the_body_round_trips_without_its_version() {
        let mut scope = CallerScope::empty("arn:aws:iam::123456789012:role/soc");
        scope.customer_refs.insert("CRM-7".into());
        scope.version = 4;
        let back = parse_scope(&scope_json(&scope), 4).unwrap();
        assert_eq!(back, scope);
        assert!(matches!(
            parse_scope("{", 1),
            Err(RegistryError::Corrupt(_))
        ));
    }
}

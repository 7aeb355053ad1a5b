//! The check `mint-token` makes before any token is requested, and `update-incident` before any
//! change is claimed or written: may this caller act for this tenant? The mapping is read from
//! the store and kept per warm instance for a bounded time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::identity::Caller;
use crate::config::{CallerScopingMode, CallerScopingSettings};
use crate::store::{CallerLookup, CallerScope, CallerScopes, RegistryError, TenantRegistry};
use crate::tenant_id::TenantId;
use crate::{CallerError, ErrorCode};

/// Callers a warm instance remembers at most (real callers are a handful of roles); past it the
/// memory starts afresh.
const CACHE_LIMIT: usize = 1024;

/// Why a caller may mint for a tenant (logged with the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// `DP_CALLER_SCOPING=off`.
    ScopingOff,
    /// No caller has a mapping yet (`mapped` mode): every caller mints for every tenant.
    NoMappingExists,
    /// The caller's mapping includes the tenant.
    Mapping,
}

impl Admission {
    pub fn as_str(self) -> &'static str {
        match self {
            Admission::ScopingOff => "scoping_off",
            Admission::NoMappingExists => "no_mapping_exists",
            Admission::Mapping => "mapping",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// `target` says what was refused: `tenant ID`, `customer REF`, `hunt ID`.
    #[error("caller {caller} may not act for {target}: {reason}")]
    NotAllowed {
        caller: String,
        target: String,
        reason: &'static str,
    },
    /// The mapping could not be read: refused, never let through.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl CallerError for ScopeError {
    fn code(&self) -> ErrorCode {
        match self {
            ScopeError::NotAllowed { .. } => ErrorCode::CallerNotAllowed,
            ScopeError::Registry(error) => error.code(),
        }
    }
}

/// How far a caller reaches: what a request spanning tenants (a hunt) is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every tenant, present and future, and why.
    Everything(Admission),
    /// What its mapping names, and nothing else.
    Mapped(CallerScope),
}

impl Reach {
    pub fn allows(&self, tenant: &TenantId, customer_ref: Option<&str>) -> bool {
        match self {
            Reach::Everything(_) => true,
            Reach::Mapped(scope) => scope.allows(tenant, customer_ref),
        }
    }
}

/// A caller's reach, on what the store says of it (`None` only with scoping off); `Err` is why
/// it reaches nothing at all.
pub fn reach_of(
    mode: CallerScopingMode,
    lookup: Option<&CallerLookup>,
) -> Result<Reach, &'static str> {
    let Some(lookup) = lookup.filter(|_| mode != CallerScopingMode::Off) else {
        return Ok(Reach::Everything(Admission::ScopingOff));
    };
    match (&lookup.scope, mode) {
        (Some(scope), _) if scope.all_tenants => Ok(Reach::Everything(Admission::Mapping)),
        (Some(scope), _) => Ok(Reach::Mapped(scope.clone())),
        (None, CallerScopingMode::Mapped) if !lookup.any_mapping => {
            Ok(Reach::Everything(Admission::NoMappingExists))
        }
        (None, CallerScopingMode::Mapped) => {
            Err("it has no mapping, and once any caller has one, callers without one are refused")
        }
        (None, _) => Err("it has no mapping (DP_CALLER_SCOPING=enforced)"),
    }
}

/// Why a mapped caller is refused a tenant outside its mapping.
pub const OUTSIDE_MAPPING: &str = "its mapping does not include this tenant or its customer";

/// The decision for one tenant, on what the store says of the caller (`None` only with scoping
/// off).
pub fn decide(
    mode: CallerScopingMode,
    lookup: Option<&CallerLookup>,
    tenant: &TenantId,
    customer_ref: Option<&str>,
) -> Result<Admission, &'static str> {
    match reach_of(mode, lookup)? {
        Reach::Everything(admission) => Ok(admission),
        Reach::Mapped(scope) if scope.allows(tenant, customer_ref) => Ok(Admission::Mapping),
        Reach::Mapped(_) => Err(OUTSIDE_MAPPING),
    }
}

pub struct CallerScoping {
    settings: CallerScopingSettings,
    store: Arc<dyn CallerScopes>,
    remembered: Mutex<HashMap<String, (Instant, CallerLookup)>>,
}

impl CallerScoping {
    pub fn new(settings: CallerScopingSettings, store: Arc<dyn CallerScopes>) -> CallerScoping {
        CallerScoping {
            settings,
            store,
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// May `caller` mint for `tenant`, whose record (if any) carries `customer_ref`? Asked
    /// before the registry's own verdict, so a refused caller learns nothing of the tenant.
    pub async fn check(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        customer_ref: Option<&str>,
    ) -> Result<Admission, ScopeError> {
        let lookup = match self.settings.mode {
            CallerScopingMode::Off => None,
            _ => Some(self.lookup(caller).await?),
        };
        decide(self.settings.mode, lookup.as_ref(), tenant, customer_ref).map_err(|reason| {
            ScopeError::NotAllowed {
                caller: caller.to_string(),
                target: format!("tenant {tenant}"),
                reason,
            }
        })
    }

    /// How far `caller` reaches (for requests that span tenants); refused when not at all.
    pub async fn reach(&self, caller: &Caller) -> Result<Reach, ScopeError> {
        let lookup = match self.settings.mode {
            CallerScopingMode::Off => None,
            _ => Some(self.lookup(caller).await?),
        };
        reach_of(self.settings.mode, lookup.as_ref()).map_err(|reason| ScopeError::NotAllowed {
            caller: caller.to_string(),
            target: "any tenant".to_owned(),
            reason,
        })
    }

    /// [`CallerScoping::check`] for a tenant whose customer reference is read from `registry`
    /// (not read at all with scoping off). An unregistered tenant has none: only a mapping that
    /// names the tenant, or all tenants, lets the caller on to learn that it is not registered.
    pub async fn check_in(
        &self,
        registry: &dyn TenantRegistry,
        caller: &Caller,
        tenant: &TenantId,
    ) -> Result<Admission, ScopeError> {
        if self.settings.mode == CallerScopingMode::Off {
            return Ok(Admission::ScopingOff);
        }
        let record = registry.get(tenant).await?;
        let customer_ref = record
            .as_ref()
            .and_then(|record| record.customer_ref.as_deref());
        self.check(caller, tenant, customer_ref).await
    }

    /// The caller's mapping, from this instance's memory while younger than the cache time.
    async fn lookup(&self, caller: &Caller) -> Result<CallerLookup, RegistryError> {
        let ttl = self.settings.cache_ttl;
        if let Some(lookup) = self.remembered(caller.key(), ttl) {
            return Ok(lookup);
        }
        let lookup = self.store.caller_lookup(caller.key()).await?;
        if ttl > Duration::ZERO {
            let mut remembered = self.memory();
            if remembered.len() >= CACHE_LIMIT {
                remembered.clear();
            }
            remembered.insert(caller.key().to_owned(), (Instant::now(), lookup.clone()));
        }
        Ok(lookup)
    }

    fn remembered(&self, key: &str, ttl: Duration) -> Option<CallerLookup> {
        self.memory()
            .get(key)
            .filter(|(read_at, _)| read_at.elapsed() < ttl)
            .map(|(_, lookup)| lookup.clone())
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, CallerLookup)>> {
        self.remembered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::DIRECT_INVOKE;
    use crate::store::{SqliteRegistry, update_caller_scope};

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    const CONTOSO: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const FABRIKAM: &str = "22222222-2222-4222-8222-222222222222";

    fn lookup(scope: Option<CallerScope>, any_mapping: bool) -> CallerLookup {
        CallerLookup { scope, any_mapping }
    }

    #[test]
    fn unmapped_callers_keep_everything_until_the_first_mapping_in_mapped_mode_only() {
        use CallerScopingMode::*;
        let contoso = tenant(CONTOSO);
        let nobody_mapped = lookup(None, false);
        let others_mapped = lookup(None, true);
        assert_eq!(
            decide(Mapped, Some(&nobody_mapped), &contoso, None),
            Ok(Admission::NoMappingExists)
        );
        assert!(decide(Mapped, Some(&others_mapped), &contoso, None).is_err());
        assert!(decide(Enforced, Some(&nobody_mapped), &contoso, None).is_err());
        assert_eq!(
            decide(Off, Some(&others_mapped), &contoso, None),
            Ok(Admission::ScopingOff)
        );
        assert_eq!(decide(Off, None, &contoso, None), Ok(Admission::ScopingOff));
    }

    #[test]
    fn a_mapped_caller_is_held_to_its_mapping_in_every_mode_but_off() {
        use CallerScopingMode::*;
        let mut scope = CallerScope::empty(DIRECT_INVOKE);
        scope.tenants.insert(tenant(CONTOSO));
        scope.customer_refs.insert("CRM-9".into());
        let mapped = lookup(Some(scope), true);
        for mode in [Mapped, Enforced] {
            assert_eq!(
                decide(mode, Some(&mapped), &tenant(CONTOSO), None),
                Ok(Admission::Mapping)
            );
            assert_eq!(
                decide(mode, Some(&mapped), &tenant(FABRIKAM), Some("CRM-9")),
                Ok(Admission::Mapping)
            );
            assert!(decide(mode, Some(&mapped), &tenant(FABRIKAM), Some("CRM-1")).is_err());
            assert!(decide(mode, Some(&mapped), &tenant(FABRIKAM), None).is_err());
        }
        // A revoked caller keeps an empty mapping: refused, not back to the unmapped default.
        let revoked = lookup(Some(CallerScope::empty(DIRECT_INVOKE)), true);
        assert!(decide(Mapped, Some(&revoked), &tenant(CONTOSO), None).is_err());
    }

    #[tokio::test]
    async fn a_mapping_is_read_once_per_cache_time_and_a_change_shows_after_it() {
        let store = Arc::new(SqliteRegistry::in_memory().unwrap());
        let settings = |seconds| CallerScopingSettings {
            mode: CallerScopingMode::Mapped,
            cache_ttl: Duration::from_secs(seconds),
            http_qualifier: None,
        };
        let cached = CallerScoping::new(settings(60), store.clone());
        let fresh = CallerScoping::new(settings(0), store.clone());
        let caller = Caller::Iam("arn:aws:iam::123456789012:role/soc".into());
        let contoso = tenant(CONTOSO);
        assert_eq!(
            cached.check(&caller, &contoso, None).await,
            Ok(Admission::NoMappingExists)
        );
        update_caller_scope(store.as_ref(), DIRECT_INVOKE, |scope| {
            scope.all_tenants = true;
        })
        .await
        .unwrap();
        assert_eq!(
            cached.check(&caller, &contoso, None).await,
            Ok(Admission::NoMappingExists),
            "the remembered answer holds for the cache time"
        );
        let refused = fresh.check(&caller, &contoso, None).await.unwrap_err();
        assert_eq!(refused.code(), ErrorCode::CallerNotAllowed);
        assert!(refused.to_string().contains("role/soc"), "{refused}");
        assert_eq!(
            fresh.check(&Caller::DirectInvoke, &contoso, None).await,
            Ok(Admission::Mapping)
        );
        assert!(
            fresh
                .check(&Caller::Anonymous, &contoso, None)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn check_in_reads_the_customer_reference_from_the_registry() {
        use crate::store::{TenantRecord, TenantStatus};
        let store = Arc::new(SqliteRegistry::in_memory().unwrap());
        let mut record = TenantRecord::new(tenant(FABRIKAM), "Fabrikam", TenantStatus::Active);
        record.customer_ref = Some("CRM-9".into());
        store.insert(&record).await.unwrap();
        update_caller_scope(store.as_ref(), DIRECT_INVOKE, |scope| {
            scope.customer_refs.insert("CRM-9".into());
        })
        .await
        .unwrap();
        let settings = |mode| CallerScopingSettings {
            mode,
            cache_ttl: Duration::ZERO,
            http_qualifier: None,
        };
        let scoping = CallerScoping::new(settings(CallerScopingMode::Mapped), store.clone());
        let caller = Caller::DirectInvoke;
        assert_eq!(
            scoping
                .check_in(store.as_ref(), &caller, &tenant(FABRIKAM))
                .await,
            Ok(Admission::Mapping),
            "allowed through the customer reference of its record"
        );
        let refused = scoping
            .check_in(store.as_ref(), &caller, &tenant(CONTOSO))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), ErrorCode::CallerNotAllowed);
        assert!(
            refused.to_string().contains("may not act for tenant"),
            "{refused}"
        );

        // With scoping off the mapping decides nothing.
        let off = CallerScoping::new(settings(CallerScopingMode::Off), store.clone());
        assert_eq!(
            off.check_in(store.as_ref(), &caller, &tenant(CONTOSO))
                .await,
            Ok(Admission::ScopingOff)
        );
    }

    #[test]
    fn a_reach_is_everything_or_exactly_the_mapping() {
        use CallerScopingMode::*;
        let mut scope = CallerScope::empty(DIRECT_INVOKE);
        scope.customer_refs.insert("CRM-9".into());
        let mapped = reach_of(Mapped, Some(&lookup(Some(scope.clone()), true))).unwrap();
        assert_eq!(mapped, Reach::Mapped(scope.clone()));
        assert!(mapped.allows(&tenant(FABRIKAM), Some("CRM-9")));
        assert!(!mapped.allows(&tenant(FABRIKAM), None));
        scope.all_tenants = true;
        assert_eq!(
            reach_of(Enforced, Some(&lookup(Some(scope), true))),
            Ok(Reach::Everything(Admission::Mapping))
        );
        assert_eq!(
            reach_of(Mapped, Some(&lookup(None, false))),
            Ok(Reach::Everything(Admission::NoMappingExists))
        );
        assert!(reach_of(Mapped, Some(&lookup(None, true))).is_err());
        assert!(reach_of(Enforced, Some(&lookup(None, false))).is_err());
        assert_eq!(
            reach_of(Off, Some(&lookup(None, true))),
            Ok(Reach::Everything(Admission::ScopingOff))
        );
    }
}

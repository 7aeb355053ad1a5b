//! One behaviour, two stores: the callers' scopes (who may mint for which tenant). SQLite runs it
//! in `shared/tests/registry_sqlite.rs`, DynamoDB against moto in `tests/e2e/e2e_registry.rs`.
//! Fresh callers every run, so it can run again on a store holding earlier results.

use std::sync::Arc;

use defender_partner::store::{CallerScope, CallerScopes, RegistryError, update_caller_scope};
use defender_partner::tenant_id::TenantId;
use uuid::Uuid;

fn fresh_caller() -> String {
    format!(
        "arn:aws:iam::123456789012:role/conformance-{}",
        Uuid::new_v4().simple()
    )
}

fn fresh_tenant() -> TenantId {
    TenantId::parse(&Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

pub async fn run<S: CallerScopes>(store: &S) {
    before_any_mapping_nobody_is_mapped(store).await;
    a_saved_scope_reads_back_and_marks_scoping_started(store).await;
    saves_are_conditional_on_the_version(store).await;
    an_emptied_scope_stays_stored(store).await;
    listing_holds_every_scope_in_order(store).await;
}

async fn before_any_mapping_nobody_is_mapped<S: CallerScopes>(store: &S) {
    if store.caller_scopes().await.unwrap().is_empty() {
        let lookup = store.caller_lookup(&fresh_caller()).await.unwrap();
        assert_eq!(lookup.scope, None);
        assert!(!lookup.any_mapping, "an empty store has no mapping");
    }
}

async fn a_saved_scope_reads_back_and_marks_scoping_started<S: CallerScopes>(store: &S) {
    let caller = fresh_caller();
    let mut scope = CallerScope::empty(&caller);
    scope.tenants.insert(fresh_tenant());
    scope.customer_refs.insert("CRM-42".into());
    let saved = store.save_caller_scope(&scope).await.unwrap();
    assert_eq!(saved.version, 1);
    let lookup = store.caller_lookup(&caller).await.unwrap();
    assert_eq!(lookup.scope, Some(saved));
    assert!(lookup.any_mapping);
    let other = store.caller_lookup(&fresh_caller()).await.unwrap();
    assert_eq!(
        other.scope, None,
        "another caller's scope is not this one's"
    );
    assert!(
        other.any_mapping,
        "but scoping has started for every caller"
    );
}

async fn saves_are_conditional_on_the_version<S: CallerScopes>(store: &S) {
    let caller = fresh_caller();
    let first = store
        .save_caller_scope(&CallerScope::empty(&caller))
        .await
        .unwrap();
    assert!(matches!(
        store.save_caller_scope(&CallerScope::empty(&caller)).await,
        Err(RegistryError::Conflict(_))
    ));
    let mut wider = first.clone();
    wider.all_tenants = true;
    let second = store.save_caller_scope(&wider).await.unwrap();
    assert_eq!(second.version, 2);
    assert!(
        matches!(
            store.save_caller_scope(&first).await,
            Err(RegistryError::Conflict(_))
        ),
        "a stale copy does not overwrite"
    );
    let stored = store.caller_lookup(&caller).await.unwrap().scope.unwrap();
    assert!(stored.all_tenants);
}

async fn an_emptied_scope_stays_stored<S: CallerScopes>(store: &S) {
    let caller = fresh_caller();
    let tenant = fresh_tenant();
    update_caller_scope(store, &caller, |scope| {
        scope.tenants.insert(tenant.clone());
    })
    .await
    .unwrap();
    let emptied = update_caller_scope(store, &caller, |scope| {
        scope.tenants.remove(&tenant);
    })
    .await
    .unwrap();
    assert!(emptied.allows_nothing());
    let stored = store.caller_lookup(&caller).await.unwrap().scope;
    assert_eq!(stored, Some(emptied), "revoked, still mapped (to nothing)");
}

async fn listing_holds_every_scope_in_order<S: CallerScopes>(store: &S) {
    let callers = [fresh_caller(), fresh_caller()];
    for caller in &callers {
        store
            .save_caller_scope(&CallerScope::empty(caller))
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .caller_scopes()
        .await
        .unwrap()
        .into_iter()
        .map(|scope| scope.caller)
        .collect();
    for caller in &callers {
        assert!(listed.contains(caller), "{caller} is not listed");
    }
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

/// Concurrent changes of one caller's scope each apply: none is lost.
pub async fn concurrent_updates_all_apply(store: Arc<dyn CallerScopes>) {
    let caller = fresh_caller();
    let tenants: Vec<TenantId> = (0..5).map(|_| fresh_tenant()).collect();
    let writers: Vec<_> = tenants
        .iter()
        .cloned()
        .map(|tenant| {
            let (store, caller) = (store.clone(), caller.clone());
            tokio::spawn(async move {
                update_caller_scope(store.as_ref(), &caller, |scope| {
                    scope.tenants.insert(tenant.clone());
                })
                .await
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task").expect("update applies");
    }
    let stored = store.caller_lookup(&caller).await.unwrap().scope.unwrap();
    assert_eq!(stored.tenants, tenants.into_iter().collect());
}

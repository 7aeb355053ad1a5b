//! The DynamoDB registry against moto: the same conformance suite the embedded SQLite registry
//! passes (tenants, consent attempts, checkpoints, ledger), plus the races that conditional writes
//! exist for.

use std::sync::Arc;

use defender_partner::store::{
    CallerScopes, Checkpoints, ConsentAttempts, DynamoRegistry, RunLeases, TenantRegistry,
    UpdateRecords,
};
use defender_partner_e2e::moto::{Moto, create_registry_table};
use defender_partner_testkit::conformance::store as conformance;
use defender_partner_testkit::conformance::updates as conformance_updates;

/// Moto with the functions' table; moto stops when the first value is dropped.
async fn registry_on_moto() -> (Moto, DynamoRegistry) {
    let moto = Moto::start().await.expect("moto_server (run scripts/venv)");
    let client = moto.dynamodb().await;
    create_registry_table(&client, "registry")
        .await
        .expect("table");
    (moto, DynamoRegistry::new(client, "registry"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_registry_passes_the_conformance_suite() {
    let (_moto, registry) = registry_on_moto().await;

    conformance::run(&registry).await;

    let tenants: Arc<dyn TenantRegistry> = Arc::new(registry.clone());
    conformance::concurrent_upserts_leave_one_record(tenants).await;
    let leases: Arc<dyn Checkpoints> = Arc::new(registry.clone());
    conformance::concurrent_lease_takers_one_winner(leases).await;
    conformance_updates::run(&registry).await;
    let keys: Arc<dyn UpdateRecords> = Arc::new(registry.clone());
    conformance_updates::concurrent_key_claims_one_owner(keys).await;
    let attempts: Arc<dyn ConsentAttempts> = Arc::new(registry);
    conformance::concurrent_consumers_one_winner(attempts).await;
}

/// Who may mint for which tenant (`CALLER#…`) and the fleet's run lease (`FLEET#…`), on the same
/// table as the functions use.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_callers_and_run_leases_pass_their_conformance_suites() {
    use defender_partner_testkit::conformance::{callers, leases};
    let (_moto, registry) = registry_on_moto().await;
    callers::run(&registry).await;
    let scopes: Arc<dyn CallerScopes> = Arc::new(registry.clone());
    callers::concurrent_updates_all_apply(scopes).await;
    leases::run(&registry).await;
    let runs: Arc<dyn RunLeases> = Arc::new(registry);
    leases::concurrent_takers_one_winner(runs).await;
}

#[tokio::test]
async fn a_missing_table_is_reported_by_name() {
    let moto = Moto::start().await.expect("moto_server (run scripts/venv)");
    let registry = DynamoRegistry::new(moto.dynamodb().await, "no-such-table");
    let error = registry.list().await.unwrap_err();
    assert!(
        error.to_string().contains("ResourceNotFoundException"),
        "{error}"
    );
    assert!(error.to_string().contains("DP_TABLE_NAME"), "{error}");
}

//! The embedded SQLite registry passes the conformance suite every registry adapter passes
//! (DynamoDB's run is `tests/e2e/e2e_registry.rs`).

use std::sync::Arc;

use defender_partner::store::{Checkpoints, ConsentAttempts, SqliteRegistry, TenantRegistry};
use defender_partner_testkit::conformance::store as conformance;

#[tokio::test]
async fn passes_the_conformance_suite() {
    let registry = SqliteRegistry::in_memory().unwrap();
    conformance::run(&registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_upserts_leave_one_record() {
    let registry: Arc<dyn TenantRegistry> = Arc::new(SqliteRegistry::in_memory().unwrap());
    conformance::concurrent_upserts_leave_one_record(registry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lease_takers_one_winner() {
    let store: Arc<dyn Checkpoints> = Arc::new(SqliteRegistry::in_memory().unwrap());
    conformance::concurrent_lease_takers_one_winner(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_one_winner() {
    let store: Arc<dyn ConsentAttempts> = Arc::new(SqliteRegistry::in_memory().unwrap());
    conformance::concurrent_consumers_one_winner(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_write_back_conformance_suite() {
    let store = SqliteRegistry::in_memory().unwrap();
    defender_partner_testkit::conformance::updates::run(&store).await;
    defender_partner_testkit::conformance::updates::concurrent_key_claims_one_owner(Arc::new(
        store,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_hunting_conformance_suite() {
    let store = SqliteRegistry::in_memory().unwrap();
    defender_partner_testkit::conformance::hunts::run(&store).await;
    defender_partner_testkit::conformance::hunts::concurrent_finishers_one_sees_zero(Arc::new(
        store,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_caller_scope_conformance_suite() {
    let store = SqliteRegistry::in_memory().unwrap();
    defender_partner_testkit::conformance::callers::run(&store).await;
    defender_partner_testkit::conformance::callers::concurrent_updates_all_apply(Arc::new(store))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_run_lease_conformance_suite() {
    let store = SqliteRegistry::in_memory().unwrap();
    defender_partner_testkit::conformance::leases::run(&store).await;
    defender_partner_testkit::conformance::leases::concurrent_takers_one_winner(Arc::new(store))
        .await;
}

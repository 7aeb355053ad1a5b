//! One behaviour, two stores: run leases (one scheduled fleet run at a time). SQLite runs it in
//! `shared/tests/registry_sqlite.rs`, DynamoDB against moto in `tests/e2e/e2e_registry.rs`.

use std::sync::Arc;

use chrono::{Duration, Utc};
use defender_partner::store::RunLeases;
use uuid::Uuid;

fn fresh_run() -> String {
    format!("conformance-{}", Uuid::new_v4().simple())
}

pub async fn run<S: RunLeases>(store: &S) {
    let run = fresh_run();
    let now = Utc::now();
    let until = now + Duration::minutes(16);
    assert!(store.take_run_lease(&run, "a", now, until).await.unwrap());
    assert!(
        !store.take_run_lease(&run, "b", now, until).await.unwrap(),
        "another run holds it"
    );
    assert!(
        store
            .take_run_lease(&fresh_run(), "b", now, until)
            .await
            .unwrap(),
        "per run name"
    );
    assert!(
        store.take_run_lease(&run, "a", now, until).await.unwrap(),
        "the holder may extend its own lease"
    );
    store.release_run_lease(&run, "b").await.unwrap();
    assert!(
        !store.take_run_lease(&run, "b", now, until).await.unwrap(),
        "another holder's release leaves the lease alone"
    );
    store.release_run_lease(&run, "a").await.unwrap();
    assert!(
        store.take_run_lease(&run, "b", now, until).await.unwrap(),
        "released: free for the next run"
    );
    let before_expiry = until - Duration::seconds(1);
    assert!(
        !store
            .take_run_lease(
                &run,
                "c",
                before_expiry,
                before_expiry + Duration::minutes(16)
            )
            .await
            .unwrap(),
        "a run that died holding it keeps it until it expires"
    );
    assert!(
        store
            .take_run_lease(&run, "c", until, until + Duration::minutes(16))
            .await
            .unwrap(),
        "then it is free"
    );
}

/// Runs started together: exactly one takes the lease.
pub async fn concurrent_takers_one_winner(store: Arc<dyn RunLeases>) {
    let run = fresh_run();
    let now = Utc::now();
    let racers: Vec<_> = (0..8)
        .map(|index| {
            let (store, run) = (store.clone(), run.clone());
            tokio::spawn(async move {
                store
                    .take_run_lease(
                        &run,
                        &format!("run-{index}"),
                        now,
                        now + Duration::minutes(16),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    assert_eq!(winners, 1);
}

//! Fleet hunting's records' behaviour, for both stores (SQLite in unit tests, DynamoDB against
//! moto in the end-to-end tests). It panics on the first broken expectation.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use defender_partner::store::{
    HuntRecord, HuntRecords, HuntStatus, HuntTarget, SavedHunt, TenantHuntResult, TenantHuntStatus,
};
use defender_partner::tenant_id::TenantId;

fn fresh_tenant() -> TenantId {
    TenantId::parse(&Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

fn hunt(tenants: &[TenantId]) -> HuntRecord {
    HuntRecord {
        id: Uuid::new_v4().to_string(),
        name: Some("conformance".into()),
        query: "DeviceProcessEvents | take 1".into(),
        timespan: Some("P7D".into()),
        targets: tenants
            .iter()
            .map(|tenant| HuntTarget {
                tenant_id: tenant.clone(),
                customer_ref: Some("contoso".into()),
            })
            .collect(),
        submitted_at: Utc::now(),
        submitted_by: "conformance".into(),
        saved: None,
        status: HuntStatus::Running,
        remaining: tenants.len() as u64,
        error_code: None,
        error: None,
        finished_at: None,
    }
}

fn result(tenant: &TenantId, rows: u64) -> TenantHuntResult {
    TenantHuntResult {
        tenant_id: tenant.clone(),
        customer_ref: Some("contoso".into()),
        status: TenantHuntStatus::Succeeded,
        rows,
        truncated: false,
        parts: 1,
        new_rows: None,
        error_code: None,
        error: None,
        duration_ms: 12,
        attempts: 1,
        finished_at: Utc::now(),
    }
}

pub async fn run<S: HuntRecords>(store: &S) {
    a_hunt_counts_each_tenant_off_once(store).await;
    a_hunt_closes_once(store).await;
    saved_hunts_are_kept_by_name_and_run_once_per_claim(store).await;
    rows_are_new_once_until_their_memory_expires(store).await;
}

async fn a_hunt_counts_each_tenant_off_once<S: HuntRecords>(store: &S) {
    let tenants = [fresh_tenant(), fresh_tenant()];
    let record = hunt(&tenants);
    store.create_hunt(&record).await.unwrap();
    assert!(store.create_hunt(&record).await.is_err(), "ids are unique");
    assert_eq!(store.hunt(&record.id).await.unwrap(), Some(record.clone()));
    assert_eq!(store.hunt("no-such-hunt").await.unwrap(), None);

    let first = result(&tenants[0], 3);
    assert_eq!(
        store.finish_tenant(&record.id, &first).await.unwrap(),
        Some(1)
    );
    // A repeated message changes nothing.
    assert_eq!(
        store
            .finish_tenant(&record.id, &result(&tenants[0], 99))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.hunt(&record.id).await.unwrap().unwrap().remaining, 1);
    assert_eq!(
        store
            .finish_tenant(&record.id, &result(&tenants[1], 0))
            .await
            .unwrap(),
        Some(0)
    );
    let results = store.tenant_results(&record.id).await.unwrap();
    assert_eq!(results.len(), 2);
    let mut expected: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
    expected.sort();
    assert_eq!(
        results
            .iter()
            .map(|result| result.tenant_id.as_str())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        results
            .iter()
            .find(|result| result.tenant_id == tenants[0])
            .unwrap(),
        &first
    );
}

async fn a_hunt_closes_once<S: HuntRecords>(store: &S) {
    let record = hunt(&[fresh_tenant()]);
    store.create_hunt(&record).await.unwrap();
    let at = Utc::now();
    assert!(
        store
            .close_hunt(
                &record.id,
                HuntStatus::Failed,
                Some("hunt_query_invalid"),
                Some("Syntax error"),
                at
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .close_hunt(&record.id, HuntStatus::Completed, None, None, at)
            .await
            .unwrap()
    );
    let closed = store.hunt(&record.id).await.unwrap().unwrap();
    assert_eq!(closed.status, HuntStatus::Failed);
    assert_eq!(closed.error_code.as_deref(), Some("hunt_query_invalid"));
    assert_eq!(closed.error.as_deref(), Some("Syntax error"));
    assert_eq!(
        closed.finished_at.map(|at| at.timestamp_millis()),
        Some(at.timestamp_millis())
    );
}

async fn saved_hunts_are_kept_by_name_and_run_once_per_claim<S: HuntRecords>(store: &S) {
    let name = format!("saved-{}", Uuid::new_v4());
    let saved = SavedHunt {
        name: name.clone(),
        request: json!({"query": "EmailEvents | take 5", "tenants": "all"}),
        every_minutes: Some(60),
        last_run_at: None,
        last_hunt_id: None,
        created_at: Utc::now(),
    };
    store.save_hunt(&saved).await.unwrap();
    assert_eq!(store.saved_hunt(&name).await.unwrap(), Some(saved.clone()));
    assert!(
        store
            .saved_hunts()
            .await
            .unwrap()
            .iter()
            .any(|listed| listed.name == name)
    );
    let now = Utc::now();
    assert!(
        store
            .claim_saved_run(&name, None, now, "hunt-1")
            .await
            .unwrap()
    );
    // A second scheduler that read the same state loses.
    assert!(
        !store
            .claim_saved_run(&name, None, now, "hunt-2")
            .await
            .unwrap()
    );
    let claimed = store.saved_hunt(&name).await.unwrap().unwrap();
    assert_eq!(
        claimed.last_run_at.map(|at| at.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(claimed.last_hunt_id.as_deref(), Some("hunt-1"));
    // Saving again changes the request and keeps the last run.
    let edited = SavedHunt {
        every_minutes: Some(30),
        ..saved.clone()
    };
    store.save_hunt(&edited).await.unwrap();
    let read = store.saved_hunt(&name).await.unwrap().unwrap();
    assert_eq!(read.every_minutes, Some(30));
    assert_eq!(read.last_hunt_id.as_deref(), Some("hunt-1"));
    let later = now + Duration::minutes(30);
    assert!(
        store
            .claim_saved_run(&name, read.last_run_at, later, "hunt-3")
            .await
            .unwrap()
    );
    assert!(store.delete_saved_hunt(&name).await.unwrap());
    assert!(!store.delete_saved_hunt(&name).await.unwrap());
    assert_eq!(store.saved_hunt(&name).await.unwrap(), None);
    assert!(
        !store
            .claim_saved_run(&name, None, later, "hunt-4")
            .await
            .unwrap(),
        "a deleted saved hunt is not run"
    );
}

async fn rows_are_new_once_until_their_memory_expires<S: HuntRecords>(store: &S) {
    let (tenant, other) = (fresh_tenant(), fresh_tenant());
    let now = Utc::now();
    let expires = now + Duration::days(7);
    let hashes: Vec<String> = ["a1", "b2", "c3"].map(String::from).to_vec();
    assert_eq!(
        store
            .claim_new_rows("detector", &tenant, &hashes, now, expires)
            .await
            .unwrap(),
        hashes
    );
    let again: Vec<String> = ["b2", "d4"].map(String::from).to_vec();
    assert_eq!(
        store
            .claim_new_rows("detector", &tenant, &again, now, expires)
            .await
            .unwrap(),
        vec!["d4".to_owned()]
    );
    // Another tenant, and another saved hunt, keep their own memory.
    assert_eq!(
        store
            .claim_new_rows("detector", &other, &again, now, expires)
            .await
            .unwrap(),
        again
    );
    assert_eq!(
        store
            .claim_new_rows("other-detector", &tenant, &again, now, expires)
            .await
            .unwrap(),
        again
    );
    // Released rows (their announcement failed) are new again.
    store
        .release_rows("detector", &tenant, &["a1".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_new_rows("detector", &tenant, &hashes, now, expires)
            .await
            .unwrap(),
        vec!["a1".to_owned()]
    );
    // Past its memory, a row is new again.
    assert_eq!(
        store
            .claim_new_rows(
                "detector",
                &tenant,
                &hashes,
                expires,
                expires + Duration::days(7)
            )
            .await
            .unwrap(),
        hashes
    );
}

/// Many finishers at once: each tenant is counted off once, and the last sees zero (another may
/// read zero too; closing the hunt is what happens once).
pub async fn concurrent_finishers_one_sees_zero<S: HuntRecords + 'static>(store: Arc<S>) {
    let tenants: Vec<TenantId> = (0..12).map(|_| fresh_tenant()).collect();
    let record = hunt(&tenants);
    store.create_hunt(&record).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    // Every tenant twice: a redelivered message races its first delivery.
    for tenant in tenants.iter().chain(tenants.iter()) {
        let (store, id, result) = (store.clone(), record.id.clone(), result(tenant, 1));
        tasks.spawn(async move { store.finish_tenant(&id, &result).await.unwrap() });
    }
    let answers = tasks.join_all().await;
    assert_eq!(answers.iter().filter(|answer| answer.is_some()).count(), 12);
    assert!(answers.contains(&Some(0)));
    assert_eq!(store.hunt(&record.id).await.unwrap().unwrap().remaining, 0);
}

//! The write-back records' behaviour, for both stores (SQLite in the kit's tests, DynamoDB against
//! moto in the end-to-end tests). It panics on the first broken expectation.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use defender_partner::store::{AuditEntry, KeyClaim, OwnChange, UpdateRecords};
use defender_partner::tenant_id::TenantId;

fn fresh_tenant() -> TenantId {
    TenantId::parse(&Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

pub async fn run<S: UpdateRecords>(store: &S) {
    a_key_is_owned_once_then_answers_its_retries(store).await;
    a_failed_or_dead_request_frees_its_key(store).await;
    the_latest_own_change_is_remembered_per_target(store).await;
    the_audit_trail_lists_a_tenants_entries_since_a_time(store).await;
    a_target_is_held_by_one_request_at_a_time(store).await;
}

async fn a_target_is_held_by_one_request_at_a_time<S: UpdateRecords>(store: &S) {
    let tenant = fresh_tenant();
    let now = Utc::now();
    let until = now + Duration::minutes(2);
    assert!(
        store
            .hold_target(&tenant, "incident:7", "r1", now, until)
            .await
            .unwrap()
    );
    assert!(
        !store
            .hold_target(&tenant, "incident:7", "r2", now, until)
            .await
            .unwrap()
    );
    assert!(
        store
            .hold_target(&tenant, "incident:8", "r2", now, until)
            .await
            .unwrap()
    );
    // Another request's release leaves the hold alone.
    store
        .release_target(&tenant, "incident:7", "r2")
        .await
        .unwrap();
    assert!(
        !store
            .hold_target(&tenant, "incident:7", "r2", now, until)
            .await
            .unwrap()
    );
    store
        .release_target(&tenant, "incident:7", "r1")
        .await
        .unwrap();
    assert!(
        store
            .hold_target(&tenant, "incident:7", "r2", now, until)
            .await
            .unwrap()
    );
    // A dead request's hold ends with its time.
    assert!(
        store
            .hold_target(
                &tenant,
                "incident:7",
                "r3",
                until,
                until + Duration::minutes(2)
            )
            .await
            .unwrap()
    );
}

async fn a_key_is_owned_once_then_answers_its_retries<S: UpdateRecords>(store: &S) {
    let tenant = fresh_tenant();
    let now = Utc::now();
    let later = now + Duration::minutes(1);
    let claim = |fingerprint: &'static str| {
        let tenant = tenant.clone();
        async move {
            store
                .claim_key(&tenant, "ticket-1", fingerprint, now, later)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim("f1").await, KeyClaim::Owned);
    assert_eq!(claim("f1").await, KeyClaim::Running);
    assert_eq!(claim("f2").await, KeyClaim::OtherRequest);
    store
        .answer_key(&tenant, "ticket-1", "f1", &json!({"applied": true}))
        .await
        .unwrap();
    assert_eq!(
        claim("f1").await,
        KeyClaim::Answered(json!({"applied": true}))
    );
    assert_eq!(claim("f2").await, KeyClaim::OtherRequest);
    // An answered key is not released by a late failure report.
    store.release_key(&tenant, "ticket-1", "f1").await.unwrap();
    assert_eq!(
        claim("f1").await,
        KeyClaim::Answered(json!({"applied": true}))
    );
    // Keys are per tenant.
    let other = fresh_tenant();
    assert_eq!(
        store
            .claim_key(&other, "ticket-1", "f2", now, later)
            .await
            .unwrap(),
        KeyClaim::Owned
    );
}

async fn a_failed_or_dead_request_frees_its_key<S: UpdateRecords>(store: &S) {
    let tenant = fresh_tenant();
    let now = Utc::now();
    let soon = now + Duration::seconds(30);
    assert_eq!(
        store.claim_key(&tenant, "k", "f", now, soon).await.unwrap(),
        KeyClaim::Owned
    );
    store.release_key(&tenant, "k", "f").await.unwrap();
    assert_eq!(
        store.claim_key(&tenant, "k", "f", now, soon).await.unwrap(),
        KeyClaim::Owned
    );
    // Its request died: past its running time, the same request takes the key over...
    let after = soon + Duration::seconds(1);
    assert_eq!(
        store
            .claim_key(&tenant, "k", "f", after, after + Duration::seconds(30))
            .await
            .unwrap(),
        KeyClaim::Owned
    );
    // ...but another request never does, until the key's retention ends.
    assert_eq!(
        store
            .claim_key(
                &tenant,
                "k",
                "g",
                after + Duration::minutes(5),
                after + Duration::minutes(6)
            )
            .await
            .unwrap(),
        KeyClaim::OtherRequest
    );
    let expired = now + Duration::hours(25);
    assert_eq!(
        store
            .claim_key(&tenant, "k", "g", expired, expired + Duration::seconds(30))
            .await
            .unwrap(),
        KeyClaim::Owned
    );
}

async fn the_latest_own_change_is_remembered_per_target<S: UpdateRecords>(store: &S) {
    let tenant = fresh_tenant();
    let change = |id: &str, last_update: &str, request: &str| OwnChange {
        tenant_id: tenant.clone(),
        kind: "incident".into(),
        id: id.into(),
        last_update: last_update.into(),
        fields: vec!["status".into()],
        request_id: request.into(),
        caller: "arn:aws:iam::123456789012:role/soar".into(),
        at: Utc::now(),
    };
    store
        .remember_change(&change("7", "2026-12-07T10:00:00Z", "r1"))
        .await
        .unwrap();
    store
        .remember_change(&change("7", "2026-12-07T10:05:00Z", "r2"))
        .await
        .unwrap();
    store
        .remember_change(&change("8", "2026-12-07T10:06:00Z", "r3"))
        .await
        .unwrap();
    let ids: Vec<String> = ["7", "8", "9", "7"]
        .iter()
        .map(|id| id.to_string())
        .collect();
    let found = store.own_changes(&tenant, "incident", &ids).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["7"].request_id, "r2");
    assert_eq!(found["7"].last_update, "2026-12-07T10:05:00Z");
    assert!(
        store
            .own_changes(&tenant, "alert", &ids)
            .await
            .unwrap()
            .is_empty()
    );
    let many: Vec<String> = (0..250).map(|n| format!("x{n}")).collect();
    assert!(
        store
            .own_changes(&tenant, "incident", &many)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_audit_trail_lists_a_tenants_entries_since_a_time<S: UpdateRecords>(store: &S) {
    let tenant = fresh_tenant();
    let start = Utc::now() - Duration::hours(2);
    let entry = |minutes: i64, request: &str| AuditEntry {
        tenant_id: tenant.clone(),
        at: start + Duration::minutes(minutes),
        request_id: request.into(),
        caller: "arn:aws:iam::123456789012:role/soar".into(),
        acting_as: "app".into(),
        kind: "incident".into(),
        id: "7".into(),
        before: json!({"status": "active"}),
        after: json!({"status": "resolved"}),
        result: "applied".into(),
        microsoft_request_id: Some("ms-1".into()),
    };
    for (minutes, request) in [(30, "b"), (0, "a"), (60, "c")] {
        store.record_audit(&entry(minutes, request)).await.unwrap();
    }
    store
        .record_audit(&AuditEntry {
            tenant_id: fresh_tenant(),
            ..entry(10, "other")
        })
        .await
        .unwrap();
    let all = store.audit(&tenant, start).await.unwrap();
    let order: Vec<&str> = all.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert_eq!(all[0], entry(0, "a"));
    let recent = store
        .audit(&tenant, start + Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
}

/// Of many requests claiming one key at the same moment, exactly one owns it.
pub async fn concurrent_key_claims_one_owner(store: Arc<dyn UpdateRecords>) {
    let tenant = fresh_tenant();
    let now = Utc::now();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (store, tenant) = (store.clone(), tenant.clone());
            tokio::spawn(async move {
                store
                    .claim_key(&tenant, "same", "f", now, now + Duration::minutes(1))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut owners = 0;
    for racer in racers {
        if racer.await.unwrap() == KeyClaim::Owned {
            owners += 1;
        }
    }
    assert_eq!(owners, 1);
}

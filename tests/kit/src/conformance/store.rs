//! One behaviour, two stores: every registry adapter runs this suite (SQLite in
//! `shared/tests/registry_sqlite.rs`, DynamoDB against moto in `tests/e2e/e2e_registry.rs`). It panics on the first broken expectation.

use std::sync::Arc;

use uuid::Uuid;

use chrono::{Duration, Utc};

use defender_partner::store::{
    AnswerCounts, AttemptFlow, AttemptStatus, Checkpoint, Checkpoints, ConsentAttempt,
    ConsentAttempts, ConsumeError, OpenWindow, RECENT_ERRORS_KEPT, RegistryError, SignedInUser,
    SignedInUsers, TenantRecord, TenantRegistry, TenantStatus, stored_now,
};
use defender_partner::tenant_id::TenantId;

fn fresh_tenant() -> TenantId {
    TenantId::parse(&Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

pub async fn run<R: TenantRegistry + ConsentAttempts + Checkpoints + SignedInUsers + 'static>(
    registry: &R,
) {
    sign_ins_rotate_conditionally_and_are_forgotten(registry).await;
    checkpoints_are_versioned(registry).await;
    checkpoints_keep_their_failures_and_answer_counts(registry).await;
    leases_are_exclusive_until_released_or_expired(registry).await;
    the_ledger_remembers_the_last_delivery(registry).await;
    attempts_are_consumed_once(registry).await;
    expired_and_unknown_attempts_are_refused(registry).await;
    missing_tenant_reads_as_none(registry).await;
    insert_then_get_round_trips(registry).await;
    insert_refuses_an_existing_tenant(registry).await;
    replace_is_conditional_on_version(registry).await;
    upsert_creates_then_updates_keeping_created_at(registry).await;
    set_status_keeps_the_rest(registry).await;
    list_contains_every_tenant_in_order(registry).await;
}

/// Concurrent upserts of one tenant leave one consistent record whose version counts them all.
pub async fn concurrent_upserts_leave_one_record(registry: Arc<dyn TenantRegistry>) {
    let tenant = fresh_tenant();
    let writers: Vec<_> = (0..6)
        .map(|index| {
            let registry = registry.clone();
            let mut record = TenantRecord::new(
                tenant.clone(),
                format!("writer {index}"),
                TenantStatus::Active,
            );
            record.roles = vec![format!("Role.{index}")];
            tokio::spawn(async move { registry.upsert(&record).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task").expect("upsert succeeds");
    }
    let stored = registry.get(&tenant).await.unwrap().expect("stored");
    assert_eq!(stored.version, 5, "six writes: one insert, five replaces");
    let index = stored.display_name.trim_start_matches("writer ");
    assert_eq!(
        stored.roles,
        vec![format!("Role.{index}")],
        "fields come from one writer"
    );
    let listed = registry.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|record| record.tenant_id == tenant)
            .count(),
        1
    );
}

async fn missing_tenant_reads_as_none<R: TenantRegistry>(registry: &R) {
    assert_eq!(registry.get(&fresh_tenant()).await.unwrap(), None);
}

async fn insert_then_get_round_trips<R: TenantRegistry>(registry: &R) {
    let mut record = TenantRecord::new(fresh_tenant(), "Contoso", TenantStatus::Pending);
    record.customer_ref = Some("CRM-42".into());
    record.roles = vec!["Incident.Read.All".into(), "Alert.Read.All".into()];
    record.status_reason = Some("waiting for consent".into());
    record.ownership = defender_partner::store::Ownership::AdminSignIn;
    registry.insert(&record).await.unwrap();
    let stored = registry
        .get(&record.tenant_id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.display_name, "Contoso");
    assert_eq!(stored.customer_ref.as_deref(), Some("CRM-42"));
    assert_eq!(stored.roles, record.roles);
    assert_eq!(stored.status, TenantStatus::Pending);
    assert_eq!(stored.status_reason, record.status_reason);
    assert_eq!(
        stored.ownership,
        defender_partner::store::Ownership::AdminSignIn
    );
    assert_eq!(stored.version, 0);
    assert_eq!(
        stored.created_at.timestamp_micros(),
        record.created_at.timestamp_micros()
    );
}

async fn insert_refuses_an_existing_tenant<R: TenantRegistry>(registry: &R) {
    let record = TenantRecord::new(fresh_tenant(), "A", TenantStatus::Active);
    registry.insert(&record).await.unwrap();
    let second = TenantRecord::new(record.tenant_id.clone(), "B", TenantStatus::Active);
    assert!(matches!(
        registry.insert(&second).await,
        Err(RegistryError::Conflict(_))
    ));
    let stored = registry.get(&record.tenant_id).await.unwrap().unwrap();
    assert_eq!(stored.display_name, "A");
}

async fn replace_is_conditional_on_version<R: TenantRegistry>(registry: &R) {
    let record = TenantRecord::new(fresh_tenant(), "A", TenantStatus::Pending);
    registry.insert(&record).await.unwrap();
    let first = TenantRecord {
        status: TenantStatus::Active,
        ..record.clone()
    };
    registry.replace(&first).await.unwrap();
    // A writer that read version 0 has lost the race.
    let stale = TenantRecord {
        display_name: "stale".into(),
        ..record.clone()
    };
    assert!(matches!(
        registry.replace(&stale).await,
        Err(RegistryError::Conflict(_))
    ));
    let stored = registry.get(&record.tenant_id).await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.status, TenantStatus::Active);
    assert_eq!(stored.display_name, "A");
    let missing = TenantRecord::new(fresh_tenant(), "nobody", TenantStatus::Active);
    assert!(matches!(
        registry.replace(&missing).await,
        Err(RegistryError::Conflict(_))
    ));
}

async fn upsert_creates_then_updates_keeping_created_at<R: TenantRegistry>(registry: &R) {
    let tenant = fresh_tenant();
    let first = TenantRecord::new(tenant.clone(), "First", TenantStatus::Pending);
    let created = registry.upsert(&first).await.unwrap();
    assert_eq!(created.version, 0);
    let mut second = TenantRecord::new(tenant.clone(), "Second", TenantStatus::Active);
    second.created_at = first.created_at + chrono::Duration::days(1);
    second.roles = vec!["Incident.Read.All".into()];
    let updated = registry.upsert(&second).await.unwrap();
    assert_eq!(updated.version, 1);
    let stored = registry.get(&tenant).await.unwrap().unwrap();
    assert_eq!(stored, updated);
    assert_eq!(stored.display_name, "Second");
    assert_eq!(stored.roles, vec!["Incident.Read.All"]);
    assert_eq!(
        stored.created_at.timestamp_micros(),
        first.created_at.timestamp_micros(),
        "created_at is kept"
    );
}

async fn set_status_keeps_the_rest<R: TenantRegistry>(registry: &R) {
    let mut record = TenantRecord::new(fresh_tenant(), "Status", TenantStatus::Active);
    record.roles = vec!["Alert.Read.All".into()];
    registry.upsert(&record).await.unwrap();
    let revoked = registry
        .set_status(
            &record.tenant_id,
            TenantStatus::Revoked,
            Some("AADSTS700016".into()),
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, TenantStatus::Revoked);
    assert_eq!(revoked.roles, record.roles);
    assert_eq!(revoked.status_reason.as_deref(), Some("AADSTS700016"));
    assert_eq!(
        registry.get(&record.tenant_id).await.unwrap().unwrap(),
        revoked
    );
    assert!(matches!(
        registry
            .set_status(&fresh_tenant(), TenantStatus::Active, None)
            .await,
        Err(RegistryError::NotFound(_))
    ));
}

async fn list_contains_every_tenant_in_order<R: TenantRegistry>(registry: &R) {
    let ids: Vec<TenantId> = (0..3).map(|_| fresh_tenant()).collect();
    for id in &ids {
        registry
            .upsert(&TenantRecord::new(
                id.clone(),
                "Listed",
                TenantStatus::Active,
            ))
            .await
            .unwrap();
    }
    let listed: Vec<TenantId> = registry
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.tenant_id)
        .collect();
    for id in &ids {
        assert!(listed.contains(id));
    }
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

fn attempt(lifetime: Duration) -> ConsentAttempt {
    let now = stored_now();
    ConsentAttempt {
        nonce: Uuid::new_v4().simple().to_string(),
        flow: AttemptFlow::Consent {
            customer_ref: "CRM-7".into(),
            link: "v2".into(),
        },
        status: AttemptStatus::Issued,
        tenant_id: None,
        detail: None,
        created_at: now,
        expires_at: now + lifetime,
        updated_at: now,
    }
}

async fn attempts_are_consumed_once<R: ConsentAttempts>(store: &R) {
    let issued = attempt(Duration::minutes(10));
    store.issue(&issued).await.unwrap();
    assert!(matches!(
        store.issue(&issued).await,
        Err(RegistryError::Conflict(_))
    ));
    let consumed = store.consume(&issued.nonce, Utc::now()).await.unwrap();
    assert_eq!(consumed.status, AttemptStatus::Consumed);
    assert_eq!(consumed.flow, issued.flow);
    assert_eq!(
        store.consume(&issued.nonce, Utc::now()).await.unwrap_err(),
        ConsumeError::AlreadyUsed
    );
    let tenant = fresh_tenant();
    store
        .finish(&issued.nonce, AttemptStatus::Completed, Some(&tenant), None)
        .await
        .unwrap();
    let finished = store.attempt(&issued.nonce).await.unwrap().unwrap();
    assert_eq!(finished.status, AttemptStatus::Completed);
    assert_eq!(finished.tenant_id, Some(tenant));
    store
        .finish(
            &issued.nonce,
            AttemptStatus::Declined,
            None,
            Some("access_denied"),
        )
        .await
        .unwrap();
    let declined = store.attempt(&issued.nonce).await.unwrap().unwrap();
    assert_eq!(declined.detail.as_deref(), Some("access_denied"));
    assert!(
        declined.tenant_id.is_some(),
        "an absent tenant keeps the stored one"
    );
    assert!(matches!(
        store
            .finish("no-such-nonce", AttemptStatus::Declined, None, None)
            .await,
        Err(RegistryError::NotFound(_))
    ));
}

async fn expired_and_unknown_attempts_are_refused<R: ConsentAttempts>(store: &R) {
    assert_eq!(
        store.consume("never-issued", Utc::now()).await.unwrap_err(),
        ConsumeError::Unknown
    );
    let short = attempt(Duration::seconds(1));
    store.issue(&short).await.unwrap();
    let later = Utc::now() + Duration::seconds(5);
    assert_eq!(
        store.consume(&short.nonce, later).await.unwrap_err(),
        ConsumeError::Expired
    );
    assert_eq!(
        store.attempt(&short.nonce).await.unwrap().unwrap().status,
        AttemptStatus::Issued,
        "a refused consume changes nothing"
    );
}

/// Of many concurrent consumers of one nonce, exactly one wins.
pub async fn concurrent_consumers_one_winner(store: Arc<dyn ConsentAttempts>) {
    let issued = attempt(Duration::minutes(10));
    store.issue(&issued).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let nonce = issued.nonce.clone();
            tokio::spawn(async move { store.consume(&nonce, Utc::now()).await })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => winners += 1,
            Err(error) => assert_eq!(error, ConsumeError::AlreadyUsed),
        }
    }
    assert_eq!(winners, 1);
}

async fn checkpoints_are_versioned<R: Checkpoints>(store: &R) {
    let tenant = fresh_tenant();
    assert_eq!(
        store.checkpoint(&tenant, "m365d-incidents").await.unwrap(),
        None
    );
    let mut first = Checkpoint::new(tenant.clone(), "m365d-incidents");
    first.window = Some(OpenWindow {
        upper: "2026-11-25T05:00:00.1234567Z".into(),
        cursor: Some("2026-11-25T04:00:00Z".into()),
        // What an unordered source keeps between runs round-trips too.
        floor: Some("2026-11-25T03:30:00Z".into()),
        next: Some("https://graph.microsoft.com/v1.0/security/alerts_v2?$skiptoken=x".into()),
    });
    let saved = store.save_checkpoint(&first).await.unwrap();
    assert_eq!(saved.version, 1);
    assert!(matches!(
        store.save_checkpoint(&first).await,
        Err(RegistryError::Conflict(_))
    ));
    let mut next = saved.clone();
    next.low = Some("2026-11-25T05:00:00.1234567Z".into());
    next.window = None;
    next.consecutive_failures = 2;
    next.last_error = Some("throttled".into());
    let saved = store.save_checkpoint(&next).await.unwrap();
    assert_eq!(saved.version, 2);
    let stored = store
        .checkpoint(&tenant, "m365d-incidents")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, saved);
    assert_eq!(store.checkpoint(&tenant, "mde-alerts").await.unwrap(), None);
    let stale = Checkpoint { version: 1, ..next };
    assert!(matches!(
        store.save_checkpoint(&stale).await,
        Err(RegistryError::Conflict(_))
    ));
    assert!(
        store
            .checkpoints()
            .await
            .unwrap()
            .iter()
            .any(|checkpoint| checkpoint.tenant_id == tenant)
    );
}

/// What `dp-operator status` reads: the last failures (bounded) and the throttled and partial
/// answers per hour round-trip through the store.
async fn checkpoints_keep_their_failures_and_answer_counts<R: Checkpoints>(store: &R) {
    let tenant = fresh_tenant();
    let mut checkpoint = Checkpoint::new(tenant.clone(), "graph-alerts");
    let now = Utc::now();
    for index in 0..=RECENT_ERRORS_KEPT {
        checkpoint.record_error(
            "microsoft_unavailable",
            &format!("Microsoft answered 503 (attempt {index}) \"quoted\" ✓"),
            now - Duration::minutes(30 - index as i64),
        );
    }
    checkpoint.count_answers(
        AnswerCounts {
            throttled: 3,
            partial: 0,
        },
        now - Duration::hours(2),
    );
    checkpoint.count_answers(
        AnswerCounts {
            throttled: 1,
            partial: 2,
        },
        now,
    );
    let saved = store.save_checkpoint(&checkpoint).await.unwrap();
    let stored = store
        .checkpoint(&tenant, "graph-alerts")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, saved);
    assert_eq!(stored.recent_errors.len(), RECENT_ERRORS_KEPT);
    assert!(stored.recent_errors[0].message.contains("attempt 10"));
    assert_eq!(stored.last_error_at, Some(stored.recent_errors[0].at));
    assert_eq!(
        stored.answers_last_day(now),
        AnswerCounts {
            throttled: 4,
            partial: 2
        }
    );
    let listed = store.checkpoints().await.unwrap();
    let listed = listed
        .iter()
        .find(|checkpoint| checkpoint.tenant_id == tenant)
        .expect("listed");
    assert_eq!(listed.answer_hours, stored.answer_hours);
}

async fn the_ledger_remembers_the_last_delivery<R: Checkpoints>(store: &R) {
    let tenant = fresh_tenant();
    let ids: Vec<String> = (0..130).map(|index| format!("inc-{index}")).collect();
    assert!(
        store
            .delivered(&tenant, "graph-incidents", &ids)
            .await
            .unwrap()
            .is_empty()
    );
    let entries: Vec<(String, String)> = ids
        .iter()
        .map(|id| (id.clone(), "2026-01-01T00:00:00Z".to_owned()))
        .collect();
    store
        .mark_delivered(&tenant, "graph-incidents", &entries)
        .await
        .unwrap();
    store
        .mark_delivered(
            &tenant,
            "graph-incidents",
            &[("inc-7".into(), "2026-02-02T00:00:00.29Z".into())],
        )
        .await
        .unwrap();
    let mut asked = ids.clone();
    asked.push("never".into());
    asked.push("inc-7".into());
    let found = store
        .delivered(&tenant, "graph-incidents", &asked)
        .await
        .unwrap();
    assert_eq!(found.len(), 130);
    assert_eq!(found["inc-7"], "2026-02-02T00:00:00.29Z");
    assert_eq!(found["inc-129"], "2026-01-01T00:00:00Z");
    assert!(
        store
            .delivered(&tenant, "mde-alerts", &asked)
            .await
            .unwrap()
            .is_empty(),
        "per source"
    );
}

fn sign_in(tenant: &TenantId, user_oid: &str, sealed: &[u8]) -> SignedInUser {
    SignedInUser {
        tenant_id: tenant.clone(),
        user_oid: user_oid.to_owned(),
        user_name: Some("analyst@contoso.example".into()),
        scopes: vec!["Incident.Read".into(), "offline_access".into()],
        sealed_refresh_token: sealed.to_vec(),
        signed_in_at: stored_now(),
        updated_at: stored_now(),
        version: 0,
    }
}

async fn sign_ins_rotate_conditionally_and_are_forgotten<R: SignedInUsers>(store: &R) {
    let tenant = fresh_tenant();
    let oid = "aaaaaaaa-0000-4000-8000-00000000000a";
    assert!(store.signed_in_user(&tenant, oid).await.unwrap().is_none());

    let first = store
        .save_sign_in(&sign_in(&tenant, oid, b"sealed-1"))
        .await
        .unwrap();
    let stored = store
        .signed_in_user(&tenant, &oid.to_ascii_uppercase())
        .await
        .unwrap()
        .expect("stored; the oid is matched case-insensitively");
    assert_eq!(stored.version, first);
    assert_eq!(stored.sealed_refresh_token, b"sealed-1");
    assert_eq!(stored.scopes, vec!["Incident.Read", "offline_access"]);
    assert_eq!(stored.user_name.as_deref(), Some("analyst@contoso.example"));

    // A fresh sign-in overwrites and bumps the version.
    let mut again = sign_in(&tenant, oid, b"sealed-2");
    again.user_name = None;
    let second = store.save_sign_in(&again).await.unwrap();
    assert!(second > first);
    let stored = store.signed_in_user(&tenant, oid).await.unwrap().unwrap();
    assert_eq!(stored.user_name, None);
    assert_eq!(stored.sealed_refresh_token, b"sealed-2");

    // Rotation is conditional on the version read.
    let rotated = store
        .rotate_refresh_token(&stored, b"sealed-3")
        .await
        .unwrap();
    assert_eq!(rotated, stored.version + 1);
    assert!(matches!(
        store.rotate_refresh_token(&stored, b"stale").await,
        Err(RegistryError::Conflict(_))
    ));
    let current = store.signed_in_user(&tenant, oid).await.unwrap().unwrap();
    assert_eq!(current.sealed_refresh_token, b"sealed-3");
    assert_eq!(current.version, rotated);

    // Forgetting is conditional too: a stale version leaves the rotated sign-in alone.
    assert!(
        !store
            .forget_sign_in(&tenant, oid, stored.version)
            .await
            .unwrap()
    );
    assert!(store.signed_in_user(&tenant, oid).await.unwrap().is_some());
    assert!(
        store
            .forget_sign_in(&tenant, oid, current.version)
            .await
            .unwrap()
    );
    assert!(store.signed_in_user(&tenant, oid).await.unwrap().is_none());
    assert!(
        !store
            .forget_sign_in(&tenant, oid, current.version)
            .await
            .unwrap()
    );

    // Made again after a delete, a sign-in never repeats a version: an instance still holding
    // the deleted one's version can neither rotate nor delete the new one.
    let remade = store
        .save_sign_in(&sign_in(&tenant, oid, b"a"))
        .await
        .unwrap();
    assert!(
        remade > current.version,
        "{remade} after {}",
        current.version
    );
    assert!(
        !store
            .forget_sign_in(&tenant, oid, current.version)
            .await
            .unwrap()
    );
    assert!(matches!(
        store.rotate_refresh_token(&current, b"stale").await,
        Err(RegistryError::Conflict(_))
    ));

    // Users are kept apart.
    let other = "aaaaaaaa-0000-4000-8000-00000000000b";
    assert!(
        store
            .signed_in_user(&tenant, other)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .signed_in_user(&fresh_tenant(), oid)
            .await
            .unwrap()
            .is_none()
    );
}

async fn leases_are_exclusive_until_released_or_expired<R: Checkpoints>(store: &R) {
    let tenant = fresh_tenant();
    let source = "graph-incidents";
    let now = Utc::now();
    let until = now + Duration::minutes(16);
    assert!(
        store
            .take_lease(&tenant, source, "run-a", now, until)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease(&tenant, source, "run-b", now, until)
            .await
            .unwrap(),
        "another run holds it"
    );
    assert!(
        store
            .take_lease(&tenant, "mde-alerts", "run-b", now, until)
            .await
            .unwrap(),
        "per source"
    );
    assert!(
        store
            .take_lease(&fresh_tenant(), source, "run-b", now, until)
            .await
            .unwrap(),
        "per tenant"
    );
    assert!(
        store
            .take_lease(&tenant, source, "run-a", now, until)
            .await
            .unwrap(),
        "the holder may extend its own lease"
    );
    // Another run's release leaves the lease alone.
    store.release_lease(&tenant, source, "run-b").await.unwrap();
    assert!(
        !store
            .take_lease(&tenant, source, "run-b", now, until)
            .await
            .unwrap()
    );
    // Released: free for the next run.
    store.release_lease(&tenant, source, "run-a").await.unwrap();
    assert!(
        store
            .take_lease(&tenant, source, "run-b", now, until)
            .await
            .unwrap()
    );
    // A run that died holding it: free once the lease has expired, not before.
    let later = until - Duration::seconds(1);
    assert!(
        !store
            .take_lease(
                &tenant,
                source,
                "run-c",
                later,
                later + Duration::minutes(16)
            )
            .await
            .unwrap()
    );
    let expired = until + Duration::seconds(1);
    assert!(
        store
            .take_lease(
                &tenant,
                source,
                "run-c",
                expired,
                expired + Duration::minutes(16)
            )
            .await
            .unwrap()
    );
    // Releasing an unknown lease is no error.
    store
        .release_lease(&fresh_tenant(), source, "run-z")
        .await
        .unwrap();
}

/// Of many runs taking one pair's lease at the same moment, exactly one gets it.
pub async fn concurrent_lease_takers_one_winner(store: Arc<dyn Checkpoints>) {
    let tenant = fresh_tenant();
    let now = Utc::now();
    let racers: Vec<_> = (0..8)
        .map(|index| {
            let store = store.clone();
            let tenant = tenant.clone();
            tokio::spawn(async move {
                store
                    .take_lease(
                        &tenant,
                        "m365d-incidents",
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

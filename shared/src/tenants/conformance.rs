//! One behaviour, two stores: every registry adapter runs this suite (SQLite in unit tests,
//! DynamoDB against moto in the end-to-end tests). It panics on the first broken expectation.

use std::sync::Arc;

use uuid::Uuid;

use super::{RegistryError, TenantRecord, TenantRegistry, TenantStatus};
use crate::tenant_id::TenantId;

fn fresh_tenant() -> TenantId {
    TenantId::parse(&Uuid::new_v4().to_string()).expect("a v4 uuid is a tenant id")
}

pub async fn run<R: TenantRegistry + 'static>(registry: &R) {
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

//! Leases in DynamoDB, one conditional write for both kinds: a pair's lease sits in its tenant's
//! partition (`pk = TENANT#{id}`, `sk = LEASE#{source}`), a run lease in a partition of its own
//! (`pk = FLEET#{run}`, `sk = LEASE`), so that IAM can scope each function to the items it may
//! write (`dynamodb:LeadingKeys`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::dynamo::{LEASE_RETENTION_DAYS, condition_held};
use super::leases::RunLeases;
use super::{DynamoRegistry, RegistryError};

/// The partition of run leases.
pub const FLEET_PREFIX: &str = "FLEET#";
const RUN_LEASE: &str = "LEASE";

pub(super) type Key = HashMap<String, AttributeValue>;

pub(super) fn key(pk: String, sk: String) -> Key {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk)),
    ])
}

fn run_key(run: &str) -> Key {
    key(format!("{FLEET_PREFIX}{run}"), RUN_LEASE.to_owned())
}

/// The lease item: no `kind`, so listings never see it; the table's TTL removes it a day after
/// it ends (a released or expired lease is harmless; the TTL keeps old items from piling up).
fn lease_item(mut item: Key, holder: &str, until: DateTime<Utc>) -> Key {
    item.insert("holder".into(), AttributeValue::S(holder.to_owned()));
    item.insert(
        "lease_until".into(),
        AttributeValue::N(until.timestamp_millis().to_string()),
    );
    let remove_after = until.max(Utc::now()) + chrono::Duration::days(LEASE_RETENTION_DAYS);
    item.insert(
        "expires_at".into(),
        AttributeValue::N(remove_after.timestamp().to_string()),
    );
    item
}

impl DynamoRegistry {
    /// Puts the lease at `key` for `holder` if it is absent, expired at `now` or the holder's.
    pub(super) async fn take_lease_item(
        &self,
        key: Key,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        condition_held(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(lease_item(key, holder, until)))
                .condition_expression(
                    "attribute_not_exists(pk) OR #until <= :now OR #holder = :holder",
                )
                // Names, not the bare words: DynamoDB reserves many attribute names.
                .expression_attribute_names("#until", "lease_until")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_values(
                    ":now",
                    AttributeValue::N(now.timestamp_millis().to_string()),
                )
                .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
                .send()
                .await,
        )
    }

    /// Ends `holder`'s lease at `key` by writing an expired one (PutItem, which the functions'
    /// roles have), not by a delete: fetch-incidents' role deletes nothing in the table.
    pub(super) async fn release_lease_item(
        &self,
        key: Key,
        holder: &str,
    ) -> Result<(), RegistryError> {
        condition_held(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(lease_item(key, holder, DateTime::<Utc>::UNIX_EPOCH)))
                .condition_expression("#holder = :holder")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
                .send()
                .await,
        )
        .map(|_| ())
    }
}

#[async_trait]
impl RunLeases for DynamoRegistry {
    async fn take_run_lease(
        &self,
        run: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        self.take_lease_item(run_key(run), holder, now, until).await
    }

    async fn release_run_lease(&self, run: &str, holder: &str) -> Result<(), RegistryError> {
        self.release_lease_item(run_key(run), holder).await
    }
}

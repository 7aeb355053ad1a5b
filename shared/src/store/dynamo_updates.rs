//! Write-back records in DynamoDB, in a partition of their own per tenant
//! (`pk = WRITEBACK#{tenant}`) so that IAM can confine the update function to it:
//! `sk = KEY#{idempotency key}`, `CHANGE#{kind}#{id}`, `AUDIT#{time}#{request id}`. No `kind`
//! attribute: listings never see them. The table's TTL (`expires_at`) removes each when its
//! retention ends; DynamoDB deletes late, so every read checks the expiry itself.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};

use super::dynamo::{condition_held, every_page, is_condition_failure, unavailable};
use super::dynamo_items::{Item, body_of, item_key, number, serialised, text_of};
use super::updates::{
    AUDIT_RETENTION_DAYS, AuditEntry, IDEMPOTENCY_RETENTION_HOURS, KeyClaim,
    OWN_CHANGE_RETENTION_DAYS, OwnChange,
};
use super::{DynamoRegistry, RegistryError, UpdateRecords};
use crate::tenant_id::TenantId;

/// The partition of a tenant's write-back records (the IAM condition in template.yaml names it).
pub const WRITEBACK_PREFIX: &str = "WRITEBACK#";
/// Sort keys of the audit trail: the time in milliseconds, zero-padded so text order is time order.
const AUDIT_PREFIX: &str = "AUDIT#";

fn key(tenant: &TenantId, sort: String) -> Item {
    item_key(format!("{WRITEBACK_PREFIX}{tenant}"), sort)
}

fn change_sort(kind: &str, id: &str) -> String {
    format!("CHANGE#{kind}#{id}")
}

fn audit_sort(at: DateTime<Utc>, request_id: &str) -> String {
    format!(
        "{AUDIT_PREFIX}{:015}#{request_id}",
        at.timestamp_millis().max(0)
    )
}

impl DynamoRegistry {
    /// Writes a write-back record as its JSON body, removed by the table's TTL at `expires`.
    async fn put_record(
        &self,
        tenant: &TenantId,
        sort: String,
        record: &impl serde::Serialize,
        what: &str,
        expires: DateTime<Utc>,
    ) -> Result<(), RegistryError> {
        let mut item = key(tenant, sort);
        item.insert("body".into(), AttributeValue::S(serialised(record, what)?));
        item.insert("expires_at".into(), number(expires.timestamp()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Ends a key or a hold by setting its time `attribute` to zero, if `condition` (on
    /// `:owner`) still holds; otherwise it is another's now and left alone. An UpdateItem, not a
    /// delete: the update function's role deletes nothing in the table.
    async fn end_if(
        &self,
        tenant: &TenantId,
        sort: String,
        attribute: &str,
        condition: &str,
        owner: &str,
    ) -> Result<(), RegistryError> {
        let ended = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, sort)))
            .update_expression(format!("SET {attribute} = :zero"))
            .condition_expression(condition)
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":owner", AttributeValue::S(owner.into()))
            .send()
            .await;
        condition_held(ended).map(|_| ())
    }
}

#[async_trait]
impl UpdateRecords for DynamoRegistry {
    async fn claim_key(
        &self,
        tenant: &TenantId,
        key_text: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        running_until: DateTime<Utc>,
    ) -> Result<KeyClaim, RegistryError> {
        let expires = now + Duration::hours(IDEMPOTENCY_RETENTION_HOURS);
        let mut item = key(tenant, format!("KEY#{key_text}"));
        item.insert("fingerprint".into(), AttributeValue::S(fingerprint.into()));
        item.insert(
            "running_until".into(),
            number(running_until.timestamp_millis()),
        );
        item.insert("expires_ms".into(), number(expires.timestamp_millis()));
        item.insert("expires_at".into(), number(expires.timestamp()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR expires_ms <= :now \
                 OR (attribute_not_exists(answer) AND running_until <= :now AND fingerprint = :fingerprint)",
            )
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":fingerprint", AttributeValue::S(fingerprint.into()))
            .send()
            .await;
        match put {
            Ok(_) => return Ok(KeyClaim::Owned),
            Err(error) if is_condition_failure(&error) => {}
            Err(error) => return Err(unavailable(error)),
        }
        let stored = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, format!("KEY#{key_text}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?
            .item
            .unwrap_or_default();
        if text_of(&stored, "fingerprint") != Some(fingerprint) {
            return Ok(KeyClaim::OtherRequest);
        }
        match text_of(&stored, "answer") {
            Some(answer) => serde_json::from_str(answer)
                .map(KeyClaim::Answered)
                .map_err(|error| RegistryError::Corrupt(format!("idempotency answer: {error}"))),
            None => Ok(KeyClaim::Running),
        }
    }

    async fn answer_key(
        &self,
        tenant: &TenantId,
        key_text: &str,
        fingerprint: &str,
        answer: &serde_json::Value,
    ) -> Result<(), RegistryError> {
        let written = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, format!("KEY#{key_text}"))))
            .update_expression("SET answer = :answer")
            .condition_expression("fingerprint = :fingerprint")
            .expression_attribute_values(":answer", AttributeValue::S(answer.to_string()))
            .expression_attribute_values(":fingerprint", AttributeValue::S(fingerprint.into()))
            .send()
            .await;
        // Another request took the key over meanwhile; its own answer will be kept.
        condition_held(written).map(|_| ())
    }

    async fn release_key(
        &self,
        tenant: &TenantId,
        key_text: &str,
        fingerprint: &str,
    ) -> Result<(), RegistryError> {
        let sort = format!("KEY#{key_text}");
        let unanswered_and_ours = "fingerprint = :owner AND attribute_not_exists(answer)";
        self.end_if(tenant, sort, "expires_ms", unanswered_and_ours, fingerprint)
            .await
    }

    async fn remember_change(&self, change: &OwnChange) -> Result<(), RegistryError> {
        let sort = change_sort(&change.kind, &change.id);
        let expires = change.at + Duration::days(OWN_CHANGE_RETENTION_DAYS);
        self.put_record(&change.tenant_id, sort, change, "own change", expires)
            .await
    }

    async fn own_changes(
        &self,
        tenant: &TenantId,
        kind: &str,
        ids: &[String],
    ) -> Result<HashMap<String, OwnChange>, RegistryError> {
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        let keys = unique
            .iter()
            .map(|id| key(tenant, change_sort(kind, id)))
            .collect();
        self.batch_get(keys)
            .await?
            .iter()
            .map(|item| {
                body_of::<OwnChange>(item, "own change").map(|change| (change.id.clone(), change))
            })
            .collect()
    }

    async fn hold_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let mut item = key(tenant, format!("HOLD#{target}"));
        item.insert("holder".into(), AttributeValue::S(holder.into()));
        item.insert("hold_until".into(), number(until.timestamp_millis()));
        item.insert(
            "expires_at".into(),
            number((until + Duration::days(1)).timestamp()),
        );
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(pk) OR hold_until <= :now OR holder = :holder",
            )
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.into()))
            .send()
            .await;
        condition_held(put)
    }

    async fn release_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        let sort = format!("HOLD#{target}");
        self.end_if(tenant, sort, "hold_until", "holder = :owner", holder)
            .await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError> {
        let sort = audit_sort(entry.at, &entry.request_id);
        let expires = entry.at + Duration::days(AUDIT_RETENTION_DAYS);
        self.put_record(&entry.tenant_id, sort, entry, "audit entry", expires)
            .await
    }

    async fn audit(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(
                ":pk",
                AttributeValue::S(format!("{WRITEBACK_PREFIX}{tenant}")),
            )
            .expression_attribute_values(":from", AttributeValue::S(audit_sort(since, "")))
            .expression_attribute_values(
                ":to",
                AttributeValue::S(format!("{AUDIT_PREFIX}\u{10FFFF}")),
            );
        every_page(query)
            .await?
            .iter()
            .map(|item| body_of(item, "audit entry"))
            .collect()
    }
}

//! Write-back records in DynamoDB, in a partition of their own per tenant
//! (`pk = WRITEBACK#{tenant}`) so that IAM can confine the update function to it:
//! `sk = KEY#{idempotency key}`, `CHANGE#{kind}#{id}`, `AUDIT#{time}#{request id}`. No `kind`
//! attribute: listings never see them. The table's TTL (`expires_at`) removes each when its
//! retention ends; DynamoDB deletes late, so every read checks the expiry itself.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};

use super::dynamo::{condition_held, is_condition_failure, unavailable};
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

fn key(tenant: &TenantId, sort: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{WRITEBACK_PREFIX}{tenant}")),
        ),
        ("sk".to_owned(), AttributeValue::S(sort)),
    ])
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

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn text_of<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
}

fn body_of<T: serde::de::DeserializeOwned>(
    item: &HashMap<String, AttributeValue>,
    what: &str,
) -> Result<T, RegistryError> {
    let body = text_of(item, "body")
        .ok_or_else(|| RegistryError::Corrupt(format!("{what}: body is missing")))?;
    serde_json::from_str(body).map_err(|error| RegistryError::Corrupt(format!("{what}: {error}")))
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
        // Released by expiring it (UpdateItem), not by a delete: this function's role deletes
        // nothing in the table.
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, format!("KEY#{key_text}"))))
            .update_expression("SET expires_ms = :zero")
            .condition_expression("fingerprint = :fingerprint AND attribute_not_exists(answer)")
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":fingerprint", AttributeValue::S(fingerprint.into()))
            .send()
            .await;
        condition_held(released).map(|_| ())
    }

    async fn remember_change(&self, change: &OwnChange) -> Result<(), RegistryError> {
        let body = serde_json::to_string(change)
            .map_err(|error| RegistryError::Corrupt(format!("own change: {error}")))?;
        let mut item = key(&change.tenant_id, change_sort(&change.kind, &change.id));
        item.insert("body".into(), AttributeValue::S(body));
        let expires = change.at + Duration::days(OWN_CHANGE_RETENTION_DAYS);
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
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, format!("HOLD#{target}"))))
            .update_expression("SET hold_until = :zero")
            .condition_expression("holder = :holder")
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":holder", AttributeValue::S(holder.into()))
            .send()
            .await;
        condition_held(released).map(|_| ())
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError> {
        let body = serde_json::to_string(entry)
            .map_err(|error| RegistryError::Corrupt(format!("audit entry: {error}")))?;
        let mut item = key(&entry.tenant_id, audit_sort(entry.at, &entry.request_id));
        item.insert("body".into(), AttributeValue::S(body));
        let expires = entry.at + Duration::days(AUDIT_RETENTION_DAYS);
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

    async fn audit(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let mut entries = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
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
                )
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                entries.push(body_of(&item, "audit entry")?);
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(entries)
    }
}

//! The registry in DynamoDB: one item per tenant in the project's single table
//! (`pk = TENANT#{id}`, `sk = PROFILE`), written with conditions so concurrent writers never
//! lose each other's updates.
//!
//! Listing never scans the table (whose delivery ledger grows with every record ever delivered):
//! tenant profiles and checkpoints carry a `kind` attribute, and the sparse index `by-kind`
//! (`kind` → `pk`) holds those items alone. Index reads are eventually consistent: a tenant
//! written a moment ago may show up in a listing a moment later (the next fetch cycle).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use super::attempts::classify_failed_consume;
use super::record::{Ownership, format_time, parse_time, stored_now};
use super::{
    AttemptFlow, AttemptStatus, Checkpoint, Checkpoints, ConsentAttempt, ConsentAttempts,
    ConsumeError, RegistryError, TenantRecord, TenantRegistry,
};
use crate::tenant_id::TenantId;

const PROFILE: &str = "PROFILE";
const ATTEMPT: &str = "ATTEMPT";
const CHECKPOINT_PREFIX: &str = "CHECKPOINT#";
const LEDGER_PREFIX: &str = "LEDGER#";
const LEASE_PREFIX: &str = "LEASE#";
/// A lease item outlives its lease by this much before the table's TTL removes it (a released
/// or expired lease is harmless; the TTL only keeps offboarded tenants' items from piling up).
const LEASE_RETENTION_DAYS: i64 = 1;
/// DynamoDB's limits per BatchGetItem and BatchWriteItem call.
const BATCH_GET_LIMIT: usize = 100;
const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of retrying unprocessed batch items before giving up.
const BATCH_ROUNDS: u32 = 8;
const CONSENT_PREFIX: &str = "CONSENT#";
/// Consent attempts stay readable (for the operator and for telling a replay from a forgery) this
/// long after their link expires; then the table's TTL removes them.
const ATTEMPT_RETENTION_DAYS: i64 = 30;
pub(super) const TENANT_PREFIX: &str = "TENANT#";
/// The sparse index of the items worth listing, and the values of its `kind` key.
pub const KIND_INDEX: &str = "by-kind";
const KIND_TENANT: &str = "tenant";
const KIND_CHECKPOINT: &str = "checkpoint";

#[derive(Clone)]
pub struct DynamoRegistry {
    pub(super) client: Client,
    pub(super) table: String,
}

impl DynamoRegistry {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoRegistry {
        DynamoRegistry {
            client,
            table: table.into(),
        }
    }

    fn key(tenant: &TenantId) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".to_owned(),
                AttributeValue::S(format!("{TENANT_PREFIX}{tenant}")),
            ),
            ("sk".to_owned(), AttributeValue::S(PROFILE.to_owned())),
        ])
    }
}

fn item(record: &TenantRecord, version: u64) -> HashMap<String, AttributeValue> {
    let mut item = DynamoRegistry::key(&record.tenant_id);
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_owned(), value);
    };
    put("tenant_id", AttributeValue::S(record.tenant_id.to_string()));
    put("kind", AttributeValue::S(KIND_TENANT.to_owned()));
    put(
        "display_name",
        AttributeValue::S(record.display_name.clone()),
    );
    if let Some(customer_ref) = &record.customer_ref {
        put("customer_ref", AttributeValue::S(customer_ref.clone()));
    }
    put(
        "status",
        AttributeValue::S(record.status.as_str().to_owned()),
    );
    // A list, not a string set: a set cannot be empty, and a tenant may have granted nothing.
    put(
        "roles",
        AttributeValue::L(
            record
                .roles
                .iter()
                .cloned()
                .map(AttributeValue::S)
                .collect(),
        ),
    );
    if let Some(reason) = &record.status_reason {
        put("status_reason", AttributeValue::S(reason.clone()));
    }
    put(
        "ownership",
        AttributeValue::S(record.ownership.as_str().to_owned()),
    );
    put(
        "created_at",
        AttributeValue::S(format_time(&record.created_at)),
    );
    put(
        "updated_at",
        AttributeValue::S(format_time(&record.updated_at)),
    );
    put("version", AttributeValue::N(version.to_string()));
    item
}

fn record(item: &HashMap<String, AttributeValue>) -> Result<TenantRecord, RegistryError> {
    let text = |name: &str| -> Result<String, RegistryError> {
        item.get(name)
            .and_then(|value| value.as_s().ok())
            .cloned()
            .ok_or_else(|| {
                RegistryError::Corrupt(format!("attribute {name} is missing or not a string"))
            })
    };
    let optional = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    let corrupt = |problem: String| RegistryError::Corrupt(problem);
    let roles = match item.get("roles") {
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|value| {
                value
                    .as_s()
                    .cloned()
                    .map_err(|_| corrupt("roles holds a non-string".into()))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(AttributeValue::Ss(values)) => values.clone(),
        None => Vec::new(),
        Some(_) => return Err(corrupt("roles is not a list".into())),
    };
    let version = item
        .get("version")
        .and_then(|value| value.as_n().ok())
        .and_then(|number| number.parse::<u64>().ok())
        .ok_or_else(|| corrupt("version is missing".into()))?;
    Ok(TenantRecord {
        tenant_id: TenantId::parse(&text("tenant_id")?)
            .map_err(|error| corrupt(error.to_string()))?,
        display_name: text("display_name")?,
        customer_ref: optional("customer_ref"),
        status: text("status")?.parse().map_err(corrupt)?,
        roles,
        status_reason: optional("status_reason"),
        ownership: Ownership::from_stored(optional("ownership").as_deref()).map_err(corrupt)?,
        created_at: parse_time(&text("created_at")?).map_err(corrupt)?,
        updated_at: parse_time(&text("updated_at")?).map_err(corrupt)?,
        version,
    })
}

pub(super) fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R>(
    error: SdkError<E, R>,
) -> RegistryError {
    let code = error.code().unwrap_or("no error code").to_owned();
    let hint = match code.as_str() {
        "ResourceNotFoundException" => ": the table does not exist; check DP_TABLE_NAME",
        "AccessDeniedException" => ": the function's role may not use this table",
        _ => "",
    };
    RegistryError::Unavailable(format!("DynamoDB {code}{hint}"))
}

pub(super) fn is_condition_failure<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.code() == Some("ConditionalCheckFailedException")
}

#[async_trait]
impl TenantRegistry for DynamoRegistry {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, RegistryError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        answer.item.as_ref().map(record).transpose()
    }

    async fn insert(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(record, record.version)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => {
                Err(RegistryError::Conflict(record.tenant_id.to_string()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn replace(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(record, record.version + 1)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", AttributeValue::N(record.version.to_string()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => {
                Err(RegistryError::Conflict(record.tenant_id.to_string()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn list(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        let mut records = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(KIND_INDEX)
                .key_condition_expression("#kind = :kind")
                .expression_attribute_names("#kind", "kind")
                .expression_attribute_values(":kind", AttributeValue::S(KIND_TENANT.to_owned()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for found in page.items() {
                records.push(record(found)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        records.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(records)
    }
}

fn attempt_key(nonce: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{CONSENT_PREFIX}{nonce}")),
        ),
        ("sk".to_owned(), AttributeValue::S(ATTEMPT.to_owned())),
    ])
}

fn attempt_item(attempt: &ConsentAttempt) -> HashMap<String, AttributeValue> {
    let mut item = attempt_key(&attempt.nonce);
    let mut put = |name: &str, value: AttributeValue| {
        item.insert(name.to_owned(), value);
    };
    put("nonce", AttributeValue::S(attempt.nonce.clone()));
    let (customer_ref, link) = attempt.flow.to_stored(attempt.tenant_id.as_ref());
    put("customer_ref", AttributeValue::S(customer_ref));
    put("link", AttributeValue::S(link));
    put(
        "status",
        AttributeValue::S(attempt.status.as_str().to_owned()),
    );
    if let Some(tenant) = &attempt.tenant_id {
        put("tenant_id", AttributeValue::S(tenant.to_string()));
    }
    if let Some(detail) = &attempt.detail {
        put("detail", AttributeValue::S(detail.clone()));
    }
    put(
        "created_at",
        AttributeValue::S(format_time(&attempt.created_at)),
    );
    put(
        "state_expires_at",
        AttributeValue::S(format_time(&attempt.expires_at)),
    );
    put(
        "updated_at",
        AttributeValue::S(format_time(&attempt.updated_at)),
    );
    let remove_after = attempt.expires_at + chrono::Duration::days(ATTEMPT_RETENTION_DAYS);
    put(
        "expires_at",
        AttributeValue::N(remove_after.timestamp().to_string()),
    );
    item
}

fn attempt_record(item: &HashMap<String, AttributeValue>) -> Result<ConsentAttempt, RegistryError> {
    let corrupt = |problem: String| RegistryError::Corrupt(problem);
    let text = |name: &str| -> Result<String, RegistryError> {
        item.get(name)
            .and_then(|value| value.as_s().ok())
            .cloned()
            .ok_or_else(|| {
                RegistryError::Corrupt(format!("attribute {name} is missing or not a string"))
            })
    };
    let optional = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
    Ok(ConsentAttempt {
        nonce: text("nonce")?,
        flow: AttemptFlow::from_stored(text("customer_ref")?, text("link")?).map_err(corrupt)?,
        status: text("status")?.parse().map_err(corrupt)?,
        tenant_id: optional("tenant_id")
            .map(|id| TenantId::parse(&id))
            .transpose()
            .map_err(|error| corrupt(error.to_string()))?,
        detail: optional("detail"),
        created_at: parse_time(&text("created_at")?).map_err(corrupt)?,
        expires_at: parse_time(&text("state_expires_at")?).map_err(corrupt)?,
        updated_at: parse_time(&text("updated_at")?).map_err(corrupt)?,
    })
}

#[async_trait]
impl ConsentAttempts for DynamoRegistry {
    async fn issue(&self, attempt: &ConsentAttempt) -> Result<(), RegistryError> {
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attempt_item(attempt)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(RegistryError::Conflict(format!(
                "consent attempt {}",
                attempt.nonce
            ))),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn consume(
        &self,
        nonce: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ConsentAttempt, ConsumeError> {
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(attempt_key(nonce)))
            .update_expression("SET #status = :consumed, updated_at = :updated")
            .condition_expression("#status = :issued AND state_expires_at > :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(
                ":consumed",
                AttributeValue::S(AttemptStatus::Consumed.as_str().into()),
            )
            .expression_attribute_values(
                ":issued",
                AttributeValue::S(AttemptStatus::Issued.as_str().into()),
            )
            .expression_attribute_values(":now", AttributeValue::S(format_time(&now)))
            .expression_attribute_values(":updated", AttributeValue::S(format_time(&stored_now())))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match answer {
            Ok(output) => {
                let attributes = output.attributes.unwrap_or_default();
                Ok(attempt_record(&attributes)?)
            }
            Err(error) if is_condition_failure(&error) => {
                let stored = self.attempt(nonce).await?;
                Err(classify_failed_consume(stored.as_ref(), now))
            }
            Err(error) => Err(unavailable(error).into()),
        }
    }

    async fn finish(
        &self,
        nonce: &str,
        status: AttemptStatus,
        tenant_id: Option<&TenantId>,
        detail: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut update = "SET #status = :status, updated_at = :updated".to_owned();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(attempt_key(nonce)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", AttributeValue::S(status.as_str().into()))
            .expression_attribute_values(":updated", AttributeValue::S(format_time(&stored_now())));
        if let Some(tenant) = tenant_id {
            update.push_str(", tenant_id = :tenant");
            request = request
                .expression_attribute_values(":tenant", AttributeValue::S(tenant.to_string()));
        }
        match detail {
            Some(detail) => {
                update.push_str(", detail = :detail");
                request = request
                    .expression_attribute_values(":detail", AttributeValue::S(detail.to_owned()));
            }
            None => update.push_str(" REMOVE detail"),
        }
        match request.update_expression(update).send().await {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => {
                Err(RegistryError::NotFound(format!("consent attempt {nonce}")))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn attempt(&self, nonce: &str) -> Result<Option<ConsentAttempt>, RegistryError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(attempt_key(nonce)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        answer.item.as_ref().map(attempt_record).transpose()
    }
}

fn checkpoint_key(tenant: &TenantId, source: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{TENANT_PREFIX}{tenant}")),
        ),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("{CHECKPOINT_PREFIX}{source}")),
        ),
    ])
}

fn ledger_key(tenant: &TenantId, source: &str, id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{LEDGER_PREFIX}{tenant}#{source}")),
        ),
        ("sk".to_owned(), AttributeValue::S(id.to_owned())),
    ])
}

fn lease_item(
    tenant: &TenantId,
    source: &str,
    holder: &str,
    until: chrono::DateTime<chrono::Utc>,
) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{TENANT_PREFIX}{tenant}")),
        ),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("{LEASE_PREFIX}{source}")),
        ),
    ]);
    item.insert("holder".into(), AttributeValue::S(holder.to_owned()));
    item.insert(
        "lease_until".into(),
        AttributeValue::N(until.timestamp_millis().to_string()),
    );
    let remove_after = until.max(chrono::Utc::now()) + chrono::Duration::days(LEASE_RETENTION_DAYS);
    item.insert(
        "expires_at".into(),
        AttributeValue::N(remove_after.timestamp().to_string()),
    );
    item
}

fn checkpoint_from(item: &HashMap<String, AttributeValue>) -> Result<Checkpoint, RegistryError> {
    let body = item
        .get("body")
        .and_then(|value| value.as_s().ok())
        .ok_or_else(|| RegistryError::Corrupt("checkpoint body is missing".into()))?;
    let mut checkpoint: Checkpoint = serde_json::from_str(body)
        .map_err(|error| RegistryError::Corrupt(format!("checkpoint: {error}")))?;
    checkpoint.version = item
        .get("version")
        .and_then(|value| value.as_n().ok())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| RegistryError::Corrupt("checkpoint version is missing".into()))?;
    Ok(checkpoint)
}

async fn pause_before_round(round: u32) {
    tokio::time::sleep(std::time::Duration::from_millis(
        50 * 2u64.pow(round.min(6)),
    ))
    .await;
}

#[async_trait]
impl Checkpoints for DynamoRegistry {
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        source: &str,
    ) -> Result<Option<Checkpoint>, RegistryError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(checkpoint_key(tenant, source)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        answer.item.as_ref().map(checkpoint_from).transpose()
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RegistryError> {
        let mut saved = checkpoint.clone();
        saved.updated_at = stored_now();
        saved.version = checkpoint.version + 1;
        let mut item = checkpoint_key(&checkpoint.tenant_id, &checkpoint.source);
        item.insert(
            "body".into(),
            AttributeValue::S(serde_json::to_string(&saved).expect("a checkpoint serialises")),
        );
        item.insert(
            "version".into(),
            AttributeValue::N(saved.version.to_string()),
        );
        item.insert("kind".into(), AttributeValue::S(KIND_CHECKPOINT.to_owned()));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = if checkpoint.version == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(
                    ":expected",
                    AttributeValue::N(checkpoint.version.to_string()),
                )
        };
        match request.send().await {
            Ok(_) => Ok(saved),
            Err(error) if is_condition_failure(&error) => Err(RegistryError::Conflict(format!(
                "checkpoint {}/{}",
                checkpoint.tenant_id, checkpoint.source
            ))),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, RegistryError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(KIND_INDEX)
                .key_condition_expression("#kind = :kind")
                .expression_attribute_names("#kind", "kind")
                .expression_attribute_values(":kind", AttributeValue::S(KIND_CHECKPOINT.to_owned()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                found.push(checkpoint_from(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        found.sort_by(|a, b| (&a.tenant_id, &a.source).cmp(&(&b.tenant_id, &b.source)));
        Ok(found)
    }

    async fn delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, RegistryError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut found = HashMap::new();
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_LIMIT) {
            let keys: Vec<_> = chunk
                .iter()
                .map(|id| ledger_key(tenant, source, id))
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|error| RegistryError::Unavailable(error.to_string()))?,
            );
            let mut round = 0;
            while let Some(request) = pending.take() {
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in answer
                    .responses
                    .as_ref()
                    .and_then(|tables| tables.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let (Some(AttributeValue::S(id)), Some(AttributeValue::S(last_update))) =
                        (item.get("sk"), item.get("last_update"))
                    {
                        found.insert(id.clone(), last_update.clone());
                    }
                }
                pending = answer
                    .unprocessed_keys
                    .and_then(|mut tables| tables.remove(&self.table))
                    .filter(|rest| !rest.keys().is_empty());
                if pending.is_some() {
                    round += 1;
                    if round > BATCH_ROUNDS {
                        return Err(RegistryError::Unavailable(
                            "DynamoDB kept keys unprocessed (throttled)".into(),
                        ));
                    }
                    pause_before_round(round).await;
                }
            }
        }
        Ok(found)
    }

    async fn mark_delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        entries: &[(String, String)],
    ) -> Result<(), RegistryError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        // A batch may not name one key twice: the last write of an id wins.
        let mut latest: HashMap<&String, &String> = HashMap::new();
        for (id, last_update) in entries {
            latest.insert(id, last_update);
        }
        let requests: Vec<WriteRequest> = latest
            .into_iter()
            .map(|(id, last_update)| {
                let mut item = ledger_key(tenant, source, id);
                item.insert("last_update".into(), AttributeValue::S(last_update.clone()));
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|error| RegistryError::Unavailable(error.to_string()))
            })
            .collect::<Result<_, _>>()?;
        for chunk in requests.chunks(BATCH_WRITE_LIMIT) {
            let mut pending = chunk.to_vec();
            let mut round = 0;
            while !pending.is_empty() {
                let answer = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(unavailable)?;
                pending = answer
                    .unprocessed_items
                    .and_then(|mut tables| tables.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    round += 1;
                    if round > BATCH_ROUNDS {
                        return Err(RegistryError::Unavailable(
                            "DynamoDB kept writes unprocessed (throttled)".into(),
                        ));
                    }
                    pause_before_round(round).await;
                }
            }
        }
        Ok(())
    }

    async fn take_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, RegistryError> {
        // The lease item sits in the tenant's partition beside its checkpoint, so it is under the
        // same IAM scope; it carries no `kind`, so listings never see it.
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(tenant, source, holder, until)))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR #holder = :holder")
            // Names, not the bare words: DynamoDB reserves many attribute names.
            .expression_attribute_names("#until", "lease_until")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.timestamp_millis().to_string()),
            )
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failure(&error) => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        // Released by writing an expired lease (PutItem, which the role already has), not by a
        // delete: fetch-incidents' role deletes nothing in the table.
        let released = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_item(tenant, source, holder, released)))
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TenantStatus;

    #[test]
    fn items_round_trip_including_empty_roles() {
        let mut original = TenantRecord::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            "Contoso",
            TenantStatus::Pending,
        );
        let back = record(&item(&original, 3)).unwrap();
        assert_eq!(back.version, 3);
        assert!(back.roles.is_empty());
        original.roles = vec!["A".into()];
        original.customer_ref = Some("ref".into());
        let back = record(&item(&original, 0)).unwrap();
        assert_eq!(back.roles, vec!["A"]);
        assert_eq!(back.customer_ref.as_deref(), Some("ref"));
    }

    #[test]
    fn attempt_items_round_trip_for_both_flows() {
        let now = stored_now();
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let consent = ConsentAttempt {
            nonce: "n1".into(),
            flow: AttemptFlow::Consent {
                customer_ref: "CRM-7".into(),
                link: "v2".into(),
            },
            status: AttemptStatus::Issued,
            tenant_id: None,
            detail: None,
            created_at: now,
            expires_at: now + chrono::Duration::minutes(10),
            updated_at: now,
        };
        let sign_in = ConsentAttempt {
            nonce: "n2".into(),
            flow: AttemptFlow::SignIn {
                api: crate::api::DefenderApi::M365d,
            },
            tenant_id: Some(tenant.clone()),
            ..consent.clone()
        };
        for attempt in [consent, sign_in.clone()] {
            assert_eq!(attempt_record(&attempt_item(&attempt)).unwrap(), attempt);
        }
        // The attributes every release has written and read.
        let item = attempt_item(&sign_in);
        assert_eq!(item["customer_ref"], AttributeValue::S(tenant.to_string()));
        assert_eq!(item["link"], AttributeValue::S("signin:m365d".into()));
    }

    #[test]
    fn corrupt_items_are_reported() {
        let original = TenantRecord::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            "Contoso",
            TenantStatus::Active,
        );
        let mut broken = item(&original, 0);
        broken.insert("status".into(), AttributeValue::S("dormant".into()));
        assert!(matches!(record(&broken), Err(RegistryError::Corrupt(_))));
        broken.remove("version");
        assert!(matches!(record(&broken), Err(RegistryError::Corrupt(_))));
    }
}

//! Checkpoints, the delivery ledger and pair leases in DynamoDB, in the tenant's partition
//! (`sk = CHECKPOINT#{source}`, `LEDGER#{source}#{id}`, `LEASE#{source}`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::dynamo::*;
use super::dynamo_leases::{Key, key};
use super::record::stored_now;
use super::{Checkpoint, Checkpoints, DynamoRegistry, RegistryError};
use crate::tenant_id::TenantId;

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

/// The pair's lease, in the tenant's partition beside its checkpoint (under the same IAM scope).
fn lease_key(tenant: &TenantId, source: &str) -> Key {
    key(
        format!("{TENANT_PREFIX}{tenant}"),
        format!("{LEASE_PREFIX}{source}"),
    )
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
        self.put_versioned(item, checkpoint.version, || {
            format!("checkpoint {}/{}", checkpoint.tenant_id, checkpoint.source)
        })
        .await?;
        Ok(saved)
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, RegistryError> {
        let mut found = self
            .kind_items(KIND_CHECKPOINT)
            .await?
            .iter()
            .map(checkpoint_from)
            .collect::<Result<Vec<_>, _>>()?;
        found.sort_by(|a, b| (&a.tenant_id, &a.source).cmp(&(&b.tenant_id, &b.source)));
        Ok(found)
    }

    async fn delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, RegistryError> {
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        let keys = unique
            .iter()
            .map(|id| ledger_key(tenant, source, id))
            .collect();
        Ok(self
            .batch_get(keys)
            .await?
            .into_iter()
            .filter_map(|item| match (item.get("sk"), item.get("last_update")) {
                (Some(AttributeValue::S(id)), Some(AttributeValue::S(last_update))) => {
                    Some((id.clone(), last_update.clone()))
                }
                _ => None,
            })
            .collect())
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
        self.take_lease_item(lease_key(tenant, source), holder, now, until)
            .await
    }

    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        self.release_lease_item(lease_key(tenant, source), holder)
            .await
    }
}

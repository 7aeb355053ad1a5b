//! Fleet hunting's records in DynamoDB, all in partitions starting `HUNT#` so that IAM can
//! confine the hunt function's writes to them (template.yaml names the prefix):
//! a hunt is `pk = HUNT#{id}` with `sk = HUNT` (the record and its `remaining` counter) and
//! `sk = TENANT#{tenant}` (each tenant's result); saved hunts are `pk = HUNT#SAVED`,
//! `sk = SAVED#{name}`; rows seen by a saved hunt are `pk = HUNT#SEEN#{name}#{tenant}`,
//! `sk = ROW#{hash}`. No `kind` attribute: the registry's listings never see them. The table's
//! TTL (`expires_at`) removes hunts and seen rows when their time ends; reads check it
//! themselves, since DynamoDB deletes late. Only the operator deletes (a saved hunt): the function
//! expires what it gives up.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::{DateTime, Duration, Utc};

use super::dynamo::{condition_held, every_page, is_condition_failure, unavailable};
use super::dynamo_items::{body_of, item_key, number, number_of, serialised, text, text_of};
use super::hunts::{HUNT_RETENTION_DAYS, HuntRecord, HuntStatus, SavedHunt, TenantHuntResult};
use super::{DynamoRegistry, HuntRecords, RegistryError};
use crate::tenant_id::TenantId;

/// The partitions of hunting (the IAM condition in template.yaml names it).
pub const HUNT_PREFIX: &str = "HUNT#";
const SAVED_PARTITION: &str = "HUNT#SAVED";
const RECORD_SORT: &str = "HUNT";
const RESULT_PREFIX: &str = "TENANT#";

fn hunt_key(id: &str) -> HashMap<String, AttributeValue> {
    item_key(format!("{HUNT_PREFIX}{id}"), RECORD_SORT.to_owned())
}

fn saved_key(name: &str) -> HashMap<String, AttributeValue> {
    item_key(SAVED_PARTITION.to_owned(), format!("SAVED#{name}"))
}

fn seen_key(saved: &str, tenant: &TenantId, hash: &str) -> HashMap<String, AttributeValue> {
    item_key(
        format!("{HUNT_PREFIX}SEEN#{saved}#{tenant}"),
        format!("ROW#{hash}"),
    )
}

fn saved_of(item: &HashMap<String, AttributeValue>) -> Result<SavedHunt, RegistryError> {
    let mut saved: SavedHunt = body_of(item, "saved hunt")?;
    saved.last_run_at = number_of(item, "last_run_ms").and_then(DateTime::from_timestamp_millis);
    saved.last_hunt_id = text_of(item, "last_hunt").map(str::to_owned);
    Ok(saved)
}

impl DynamoRegistry {
    /// Every item of partition `pk` whose sort key starts with `prefix`, read consistently.
    async fn partition(
        &self,
        pk: String,
        prefix: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, RegistryError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", text(pk))
            .expression_attribute_values(":prefix", text(prefix))
            .consistent_read(true);
        every_page(query).await
    }
}

#[async_trait]
impl HuntRecords for DynamoRegistry {
    async fn create_hunt(&self, hunt: &HuntRecord) -> Result<(), RegistryError> {
        let mut item = hunt_key(&hunt.id);
        item.insert("body".into(), text(serialised(hunt, "hunt")?));
        item.insert("status".into(), text(hunt.status.as_str()));
        item.insert(
            "remaining".into(),
            number(i64::try_from(hunt.remaining).unwrap_or(i64::MAX)),
        );
        let expires = hunt.submitted_at + Duration::days(HUNT_RETENTION_DAYS);
        item.insert("expires_at".into(), number(expires.timestamp()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => {
                Err(RegistryError::Conflict(format!("hunt {}", hunt.id)))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn hunt(&self, id: &str) -> Result<Option<HuntRecord>, RegistryError> {
        let Some(item) = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(hunt_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?
            .item
        else {
            return Ok(None);
        };
        let mut hunt: HuntRecord = body_of(&item, "hunt")?;
        hunt.status = HuntStatus::parse(text_of(&item, "status").unwrap_or("running"))?;
        hunt.remaining = number_of(&item, "remaining")
            .and_then(|remaining| u64::try_from(remaining).ok())
            .unwrap_or(0);
        hunt.error_code = text_of(&item, "error_code").map(str::to_owned);
        hunt.error = text_of(&item, "error").map(str::to_owned);
        hunt.finished_at =
            number_of(&item, "finished_ms").and_then(DateTime::from_timestamp_millis);
        Ok(Some(hunt))
    }

    async fn finish_tenant(
        &self,
        hunt_id: &str,
        result: &TenantHuntResult,
    ) -> Result<Option<u64>, RegistryError> {
        let mut item = item_key(
            format!("{HUNT_PREFIX}{hunt_id}"),
            format!("{RESULT_PREFIX}{}", result.tenant_id),
        );
        item.insert("body".into(), text(serialised(result, "hunt result")?));
        let expires = result.finished_at + Duration::days(HUNT_RETENTION_DAYS);
        item.insert("expires_at".into(), number(expires.timestamp()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|error| RegistryError::Unavailable(error.to_string()))?;
        let decrement = Update::builder()
            .table_name(&self.table)
            .set_key(Some(hunt_key(hunt_id)))
            .update_expression("ADD remaining :minus_one")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":minus_one", number(-1))
            .build()
            .map_err(|error| RegistryError::Unavailable(error.to_string()))?;
        let written = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(decrement).build())
            .send()
            .await;
        if let Err(error) = written {
            let reasons: Vec<Option<String>> = match &error {
                SdkError::ServiceError(service) => match service.err() {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(cancelled) => cancelled
                        .cancellation_reasons()
                        .iter()
                        .map(|reason| reason.code().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            let failed = |index: usize| {
                reasons
                    .get(index)
                    .and_then(Option::as_deref)
                    .is_some_and(|code| code == "ConditionalCheckFailed")
            };
            if failed(0) {
                return Ok(None);
            }
            if failed(1) {
                return Err(RegistryError::NotFound(format!("hunt {hunt_id}")));
            }
            return Err(unavailable(error));
        }
        // Read after our own decrement: the last finisher reads zero (and closing the hunt is
        // conditional, so two readers of zero still close it once).
        let hunt = self
            .hunt(hunt_id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("hunt {hunt_id}")))?;
        Ok(Some(hunt.remaining))
    }

    async fn tenant_results(&self, hunt_id: &str) -> Result<Vec<TenantHuntResult>, RegistryError> {
        let items = self
            .partition(format!("{HUNT_PREFIX}{hunt_id}"), RESULT_PREFIX)
            .await?;
        let mut results: Vec<TenantHuntResult> = items
            .iter()
            .map(|item| body_of(item, "hunt result"))
            .collect::<Result<_, _>>()?;
        results.sort_by(|a, b| a.tenant_id.as_str().cmp(b.tenant_id.as_str()));
        Ok(results)
    }

    async fn close_hunt(
        &self,
        hunt_id: &str,
        status: HuntStatus,
        error_code: Option<&str>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(hunt_key(hunt_id)))
            .condition_expression("attribute_exists(pk) AND #status = :running")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":running", text(HuntStatus::Running.as_str()))
            .expression_attribute_values(":status", text(status.as_str()))
            .expression_attribute_values(":at", number(at.timestamp_millis()));
        let mut sets = vec!["#status = :status", "finished_ms = :at"];
        if let Some(code) = error_code {
            update = update.expression_attribute_values(":code", text(code));
            sets.push("error_code = :code");
        }
        if let Some(message) = error {
            update = update.expression_attribute_values(":error", text(message));
            sets.push("#error = :error");
            update = update.expression_attribute_names("#error", "error");
        }
        condition_held(
            update
                .update_expression(format!("SET {}", sets.join(", ")))
                .send()
                .await,
        )
    }

    async fn save_hunt(&self, saved: &SavedHunt) -> Result<(), RegistryError> {
        // An update keeps `last_run_ms` and `last_hunt` of an existing saved hunt.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(saved_key(&saved.name)))
            .update_expression("SET body = :body")
            .expression_attribute_values(":body", text(serialised(saved, "saved hunt")?))
            .send()
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn saved_hunt(&self, name: &str) -> Result<Option<SavedHunt>, RegistryError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(saved_key(name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?
            .item
            .map(|item| saved_of(&item))
            .transpose()
    }

    async fn saved_hunts(&self) -> Result<Vec<SavedHunt>, RegistryError> {
        let items = self.partition(SAVED_PARTITION.to_owned(), "SAVED#").await?;
        items.iter().map(saved_of).collect()
    }

    async fn delete_saved_hunt(&self, name: &str) -> Result<bool, RegistryError> {
        let answer = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(saved_key(name)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(answer.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn claim_saved_run(
        &self,
        name: &str,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        hunt_id: &str,
    ) -> Result<bool, RegistryError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(saved_key(name)))
            .update_expression("SET last_run_ms = :now, last_hunt = :hunt")
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .expression_attribute_values(":hunt", text(hunt_id));
        update = match previous {
            Some(previous) => update
                .condition_expression("last_run_ms = :previous")
                .expression_attribute_values(":previous", number(previous.timestamp_millis())),
            None => update
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(last_run_ms)"),
        };
        condition_held(update.send().await)
    }

    async fn claim_new_rows(
        &self,
        saved: &str,
        tenant: &TenantId,
        hashes: &[String],
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut new = Vec::new();
        for hash in hashes {
            let mut item = seen_key(saved, tenant, hash);
            item.insert("expires_ms".into(), number(expires.timestamp_millis()));
            item.insert("expires_at".into(), number(expires.timestamp()));
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR expires_ms <= :now")
                .expression_attribute_values(":now", number(now.timestamp_millis()))
                .send()
                .await;
            match put {
                Ok(_) => new.push(hash.clone()),
                Err(error) if is_condition_failure(&error) => {}
                Err(error) => return Err(unavailable(error)),
            }
        }
        Ok(new)
    }

    async fn release_rows(
        &self,
        saved: &str,
        tenant: &TenantId,
        hashes: &[String],
    ) -> Result<(), RegistryError> {
        // Expired rather than deleted: the next claim takes an expired row as new, and the hunt
        // function needs no right to delete.
        for hash in hashes {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(seen_key(saved, tenant, hash)))
                .update_expression("SET expires_ms = :expired")
                .expression_attribute_values(":expired", number(0))
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

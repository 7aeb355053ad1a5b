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
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;

use super::record::{Ownership, format_time, parse_time};
use super::{RegistryError, TenantRecord, TenantRegistry};
use crate::tenant_id::TenantId;

pub(super) const PROFILE: &str = "PROFILE";
pub(super) const ATTEMPT: &str = "ATTEMPT";
pub(super) const CHECKPOINT_PREFIX: &str = "CHECKPOINT#";
pub(super) const LEDGER_PREFIX: &str = "LEDGER#";
pub(super) const LEASE_PREFIX: &str = "LEASE#";
/// A lease item outlives its lease by this much before the table's TTL removes it (a released
/// or expired lease is harmless; the TTL only keeps offboarded tenants' items from piling up).
pub(super) const LEASE_RETENTION_DAYS: i64 = 1;
/// DynamoDB's limits per BatchGetItem and BatchWriteItem call.
pub(super) const BATCH_GET_LIMIT: usize = 100;
pub(super) const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of retrying unprocessed batch items before giving up.
pub(super) const BATCH_ROUNDS: u32 = 8;
pub(super) const CONSENT_PREFIX: &str = "CONSENT#";
/// Consent attempts stay readable (for the operator and for telling a replay from a forgery) this
/// long after their link expires; then the table's TTL removes them.
pub(super) const ATTEMPT_RETENTION_DAYS: i64 = 30;
pub(super) const TENANT_PREFIX: &str = "TENANT#";
/// The sparse index of the items worth listing, and the values of its `kind` key.
pub const KIND_INDEX: &str = "by-kind";
pub(super) const KIND_TENANT: &str = "tenant";
pub(super) const KIND_CHECKPOINT: &str = "checkpoint";

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

    /// Reads `keys` with BatchGetItem (strongly consistent), in requests of DynamoDB's limit,
    /// sending the keys it leaves unprocessed again (with a pause) a bounded number of rounds.
    /// Items that do not exist are simply absent from the answer.
    pub(super) async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, RegistryError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_GET_LIMIT) {
            let mut pending = chunk.to_vec();
            let mut round = 0;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|error| RegistryError::Unavailable(error.to_string()))?;
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(unavailable)?;
                found.extend(
                    answer
                        .responses
                        .and_then(|mut tables| tables.remove(&self.table))
                        .unwrap_or_default(),
                );
                pending = answer
                    .unprocessed_keys
                    .and_then(|mut tables| tables.remove(&self.table))
                    .map(|rest| rest.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
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

    /// Every item of `kind`, through the sparse `by-kind` index, page after page.
    pub(super) async fn kind_items(
        &self,
        kind: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, RegistryError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(KIND_INDEX)
            .key_condition_expression("#kind = :kind")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":kind", AttributeValue::S(kind.to_owned()));
        every_page(query).await
    }

    /// Puts `item` if the stored copy still has version `expected` (0: none is stored);
    /// `Conflict(what)` if another writer got there first.
    pub(super) async fn put_versioned(
        &self,
        item: HashMap<String, AttributeValue>,
        expected: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), RegistryError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = if expected == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(RegistryError::Conflict(what())),
            Err(error) => Err(unavailable(error)),
        }
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

/// Every item a query matches, page after page: the SDK's paginator follows `LastEvaluatedKey`.
pub(super) async fn every_page(
    query: QueryFluentBuilder,
) -> Result<Vec<HashMap<String, AttributeValue>>, RegistryError> {
    query
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(unavailable)
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

/// What a conditional write's answer says: `true` when it was written, `false` when its
/// condition did not hold; any other failure is the table's.
pub(super) fn condition_held<T, E: ProvideErrorMetadata + std::fmt::Debug, R>(
    answer: Result<T, SdkError<E, R>>,
) -> Result<bool, RegistryError> {
    match answer {
        Ok(_) => Ok(true),
        Err(error) if is_condition_failure(&error) => Ok(false),
        Err(error) => Err(unavailable(error)),
    }
}

/// The pause before sending unprocessed keys or items again: 100 ms, doubling, at most 3.2 s.
pub(super) async fn pause_before_round(round: u32) {
    tokio::time::sleep(std::time::Duration::from_millis(
        50 * 2u64.pow(round.min(6)),
    ))
    .await;
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
        let mut records = self
            .kind_items(KIND_TENANT)
            .await?
            .iter()
            .map(record)
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::super::dynamo_attempts::{attempt_item, attempt_record};
    use super::*;
    use crate::store::{AttemptFlow, AttemptStatus, ConsentAttempt, TenantStatus, stored_now};

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

//! Consent and sign-in attempts in DynamoDB: `pk = CONSENT#{nonce}`, `sk = ATTEMPT`, written
//! conditionally so that an attempt is consumed once.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::attempts::classify_failed_consume;
use super::dynamo::*;
use super::record::{format_time, parse_time, stored_now};
use super::{
    AttemptFlow, AttemptStatus, ConsentAttempt, ConsentAttempts, ConsumeError, DynamoRegistry,
    RegistryError,
};
use crate::tenant_id::TenantId;

fn attempt_key(nonce: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{CONSENT_PREFIX}{nonce}")),
        ),
        ("sk".to_owned(), AttributeValue::S(ATTEMPT.to_owned())),
    ])
}

pub(super) fn attempt_item(attempt: &ConsentAttempt) -> HashMap<String, AttributeValue> {
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

pub(super) fn attempt_record(
    item: &HashMap<String, AttributeValue>,
) -> Result<ConsentAttempt, RegistryError> {
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

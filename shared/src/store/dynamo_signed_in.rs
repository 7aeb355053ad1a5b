//! Signed-in users in DynamoDB: `pk = SIGNIN#{tenant}`, `sk = USER#{user oid}`, the sealed
//! refresh token as a binary attribute. No `kind`: these items never show in listings. A
//! partition key of their own lets IAM (`dynamodb:LeadingKeys` = `SIGNIN#*`) confine the function
//! that rotates and deletes sign-ins to them, away from tenant records and checkpoints.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::dynamo::{condition_held, is_condition_failure, unavailable};
use super::record::{format_time, parse_time, stored_now};
use super::signed_in::{SIGN_IN_RETENTION_DAYS, first_version};
use super::{DynamoRegistry, RegistryError, SignedInUser, SignedInUsers};
use crate::tenant_id::TenantId;
use chrono::Utc;

/// The partition of a tenant's sign-ins (the IAM condition in template.yaml names it).
const SIGNIN_PREFIX: &str = "SIGNIN#";
const USER_PREFIX: &str = "USER#";

fn key(tenant: &TenantId, user_oid: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{SIGNIN_PREFIX}{tenant}")),
        ),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("{USER_PREFIX}{}", user_oid.to_ascii_lowercase())),
        ),
    ])
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<SignedInUser, RegistryError> {
    let corrupt = |problem: String| RegistryError::Corrupt(format!("signed-in user: {problem}"));
    let text = |name: &str| {
        item.get(name)
            .and_then(|value| value.as_s().ok())
            .cloned()
            .ok_or_else(|| corrupt(format!("{name} is missing")))
    };
    let tenant = text("pk")?
        .strip_prefix(SIGNIN_PREFIX)
        .map(str::to_owned)
        .ok_or_else(|| corrupt("pk is not a sign-in partition".into()))?;
    let user_oid = text("sk")?
        .strip_prefix(USER_PREFIX)
        .map(str::to_owned)
        .ok_or_else(|| corrupt("sk is not a user key".into()))?;
    Ok(SignedInUser {
        tenant_id: TenantId::parse(&tenant).map_err(|error| corrupt(error.to_string()))?,
        user_oid,
        user_name: item
            .get("user_name")
            .and_then(|value| value.as_s().ok())
            .cloned(),
        scopes: serde_json::from_str(&text("scopes")?)
            .map_err(|error| corrupt(error.to_string()))?,
        sealed_refresh_token: item
            .get("refresh_token")
            .and_then(|value| value.as_b().ok())
            .map(|blob| blob.as_ref().to_vec())
            .ok_or_else(|| corrupt("refresh_token is missing".into()))?,
        signed_in_at: parse_time(&text("signed_in_at")?).map_err(corrupt)?,
        updated_at: parse_time(&text("updated_at")?).map_err(corrupt)?,
        version: version_of(item).ok_or_else(|| corrupt("version is missing".into()))?,
    })
}

fn version_of(item: &HashMap<String, AttributeValue>) -> Option<u64> {
    item.get("version")
        .and_then(|value| value.as_n().ok())
        .and_then(|number| number.parse().ok())
}

#[async_trait]
impl SignedInUsers for DynamoRegistry {
    async fn signed_in_user(
        &self,
        tenant: &TenantId,
        user_oid: &str,
    ) -> Result<Option<SignedInUser>, RegistryError> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, user_oid)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        answer.item.as_ref().map(from_item).transpose()
    }

    async fn save_sign_in(&self, user: &SignedInUser) -> Result<u64, RegistryError> {
        let set = "SET scopes = :scopes, refresh_token = :token, signed_in_at = :now, updated_at = :now, \
                   expires_at = :expires, version = if_not_exists(version, :first) + :one";
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&user.tenant_id, &user.user_oid)))
            .expression_attribute_values(
                ":scopes",
                AttributeValue::S(serde_json::to_string(&user.scopes).expect("strings serialise")),
            )
            .expression_attribute_values(
                ":token",
                AttributeValue::B(Blob::new(user.sealed_refresh_token.clone())),
            )
            .expression_attribute_values(":now", AttributeValue::S(format_time(&stored_now())))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":first", AttributeValue::N(first_version().to_string()))
            .expression_attribute_values(":expires", removal_time())
            .return_values(ReturnValue::UpdatedNew);
        request = match &user.user_name {
            Some(name) => request
                .update_expression(format!("{set}, user_name = :name"))
                .expression_attribute_values(":name", AttributeValue::S(name.clone())),
            None => request.update_expression(format!("{set} REMOVE user_name")),
        };
        let answer = request.send().await.map_err(unavailable)?;
        answer
            .attributes
            .as_ref()
            .and_then(version_of)
            .ok_or_else(|| RegistryError::Corrupt("signed-in user: no version after write".into()))
    }

    async fn rotate_refresh_token(
        &self,
        user: &SignedInUser,
        sealed: &[u8],
    ) -> Result<u64, RegistryError> {
        let next = user.version + 1;
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&user.tenant_id, &user.user_oid)))
            .update_expression(
                "SET refresh_token = :token, updated_at = :now, expires_at = :expires, version = :next",
            )
            .expression_attribute_values(":expires", removal_time())
            .condition_expression("version = :expected")
            .expression_attribute_values(":token", AttributeValue::B(Blob::new(sealed.to_vec())))
            .expression_attribute_values(":now", AttributeValue::S(format_time(&stored_now())))
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
            .expression_attribute_values(":expected", AttributeValue::N(user.version.to_string()))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(next),
            Err(error) if is_condition_failure(&error) => Err(RegistryError::Conflict(format!(
                "sign-in of user {} in tenant {}",
                user.user_oid, user.tenant_id
            ))),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn forget_sign_in(
        &self,
        tenant: &TenantId,
        user_oid: &str,
        version: u64,
    ) -> Result<bool, RegistryError> {
        let outcome = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, user_oid)))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(version.to_string()))
            .send()
            .await;
        condition_held(outcome)
    }
}

/// The table's TTL attribute (epoch seconds): an unused sign-in goes when Entra's refresh token
/// would have expired anyway.
fn removal_time() -> AttributeValue {
    let at = Utc::now() + chrono::Duration::days(SIGN_IN_RETENTION_DAYS);
    AttributeValue::N(at.timestamp().to_string())
}

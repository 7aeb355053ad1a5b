//! Caller scopes in DynamoDB: one item per caller (`pk = CALLER#{caller}`, `sk = SCOPE`, with
//! `kind = caller` for the operator's listing), and one marker item (`pk = CALLER#`,
//! `sk = MAPPED`) written before the first scope, so that `mint-token` learns in one
//! BatchGetItem, within the `CALLER#` partitions its role may read, both its caller's scope and
//! whether any mapping exists.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::callers::{CallerLookup, CallerScope, CallerScopes, parse_scope, scope_json};
use super::dynamo::unavailable;
use super::dynamo_leases::{Key, key};
use super::{DynamoRegistry, RegistryError};

/// The partitions of caller scopes.
pub const CALLER_PREFIX: &str = "CALLER#";
const SCOPE: &str = "SCOPE";
const MARKER: &str = "MAPPED";
const KIND_CALLER: &str = "caller";

fn scope_key(caller: &str) -> Key {
    key(format!("{CALLER_PREFIX}{caller}"), SCOPE.to_owned())
}

/// Its sort key differs from every scope's, so no caller name can collide with it.
fn marker_key() -> Key {
    key(CALLER_PREFIX.to_owned(), MARKER.to_owned())
}

fn scope_from(item: &HashMap<String, AttributeValue>) -> Result<CallerScope, RegistryError> {
    let body = item
        .get("body")
        .and_then(|value| value.as_s().ok())
        .ok_or_else(|| RegistryError::Corrupt("caller scope body is missing".into()))?;
    let version = item
        .get("version")
        .and_then(|value| value.as_n().ok())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| RegistryError::Corrupt("caller scope version is missing".into()))?;
    parse_scope(body, version)
}

#[async_trait]
impl CallerScopes for DynamoRegistry {
    async fn caller_lookup(&self, caller: &str) -> Result<CallerLookup, RegistryError> {
        let wanted = format!("{CALLER_PREFIX}{caller}");
        let mut lookup = CallerLookup {
            scope: None,
            any_mapping: false,
        };
        for item in self
            .batch_get(vec![scope_key(caller), marker_key()])
            .await?
        {
            lookup.any_mapping = true;
            let is_scope = matches!(item.get("pk"), Some(AttributeValue::S(pk)) if *pk == wanted)
                && matches!(item.get("sk"), Some(AttributeValue::S(sk)) if sk == SCOPE);
            if is_scope {
                lookup.scope = Some(scope_from(&item)?);
            }
        }
        Ok(lookup)
    }

    async fn caller_scopes(&self) -> Result<Vec<CallerScope>, RegistryError> {
        let mut found = self
            .kind_items(KIND_CALLER)
            .await?
            .iter()
            .map(scope_from)
            .collect::<Result<Vec<_>, _>>()?;
        found.sort_by(|a, b| a.caller.cmp(&b.caller));
        Ok(found)
    }

    async fn save_caller_scope(&self, scope: &CallerScope) -> Result<CallerScope, RegistryError> {
        // The marker first: a reader that sees the scope always sees the marker too (a scope
        // whose write then fails leaves scoping on, never off).
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(marker_key()))
            .send()
            .await
            .map_err(unavailable)?;
        let saved = CallerScope {
            version: scope.version + 1,
            ..scope.clone()
        };
        let mut item = scope_key(&scope.caller);
        item.insert("body".into(), AttributeValue::S(scope_json(&saved)));
        item.insert(
            "version".into(),
            AttributeValue::N(saved.version.to_string()),
        );
        item.insert("kind".into(), AttributeValue::S(KIND_CALLER.to_owned()));
        self.put_versioned(item, scope.version, || format!("caller {}", scope.caller))
            .await?;
        Ok(saved)
    }
}

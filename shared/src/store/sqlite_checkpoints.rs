//! Checkpoints, the delivery ledger and pair leases in the embedded SQLite store.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::record::stored_now;
use super::sqlite::{unavailable, versioned_bodies};
use super::{Checkpoint, Checkpoints, RegistryError, SqliteRegistry};
use crate::tenant_id::TenantId;

fn checkpoint_json(checkpoint: &Checkpoint) -> String {
    serde_json::to_string(checkpoint).expect("a checkpoint serialises")
}

fn parse_checkpoint(body: &str, version: i64) -> Result<Checkpoint, RegistryError> {
    let mut checkpoint: Checkpoint = serde_json::from_str(body)
        .map_err(|error| RegistryError::Corrupt(format!("checkpoint: {error}")))?;
    checkpoint.version =
        u64::try_from(version).map_err(|error| RegistryError::Corrupt(error.to_string()))?;
    Ok(checkpoint)
}

#[async_trait]
impl Checkpoints for SqliteRegistry {
    async fn checkpoint(
        &self,
        tenant: &TenantId,
        source: &str,
    ) -> Result<Option<Checkpoint>, RegistryError> {
        let (tenant, source) = (tenant.to_string(), source.to_owned());
        self.with_connection(move |connection| {
            connection
                .query_row(
                    "SELECT body, version FROM checkpoints WHERE tenant_id = ?1 AND source = ?2",
                    params![tenant, source],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(unavailable)?
                .map(|(body, version)| parse_checkpoint(&body, version))
                .transpose()
        })
        .await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, RegistryError> {
        let mut saved = checkpoint.clone();
        saved.updated_at = stored_now();
        saved.version = checkpoint.version + 1;
        let body = checkpoint_json(&saved);
        let expected = checkpoint.version as i64;
        let (tenant, source) = (checkpoint.tenant_id.to_string(), checkpoint.source.clone());
        self.with_connection(move |connection| {
            let changed = if expected == 0 {
                connection.execute(
                    "INSERT INTO checkpoints (tenant_id, source, body, version) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT(tenant_id, source) DO NOTHING",
                    params![tenant, source, body],
                )
            } else {
                connection.execute(
                    "UPDATE checkpoints SET body = ?3, version = ?4 + 1
                     WHERE tenant_id = ?1 AND source = ?2 AND version = ?4",
                    params![tenant, source, body, expected],
                )
            }
            .map_err(unavailable)?;
            if changed == 0 {
                return Err(RegistryError::Conflict(format!("checkpoint {tenant}/{source}")));
            }
            Ok(saved)
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, RegistryError> {
        self.with_connection(|connection| {
            let rows = versioned_bodies(
                connection,
                "SELECT body, version FROM checkpoints ORDER BY tenant_id, source",
            )?;
            rows.iter()
                .map(|(body, version)| parse_checkpoint(body, *version))
                .collect()
        })
        .await
    }

    async fn delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        ids: &[String],
    ) -> Result<HashMap<String, String>, RegistryError> {
        let (tenant, source, ids) = (tenant.to_string(), source.to_owned(), ids.to_vec());
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached("SELECT last_update FROM ledger WHERE tenant_id = ?1 AND source = ?2 AND id = ?3")
                .map_err(unavailable)?;
            let mut found = HashMap::new();
            for id in ids {
                if let Some(last_update) = statement
                    .query_row(params![tenant, source, id], |row| row.get::<_, String>(0))
                    .optional()
                    .map_err(unavailable)?
                {
                    found.insert(id, last_update);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn mark_delivered(
        &self,
        tenant: &TenantId,
        source: &str,
        entries: &[(String, String)],
    ) -> Result<(), RegistryError> {
        let (tenant, source, entries) = (tenant.to_string(), source.to_owned(), entries.to_vec());
        self.with_connection(move |connection| {
            let transaction = connection.unchecked_transaction().map_err(unavailable)?;
            {
                let mut statement = transaction
                    .prepare_cached(
                        "INSERT INTO ledger (tenant_id, source, id, last_update) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(tenant_id, source, id) DO UPDATE SET last_update = excluded.last_update",
                    )
                    .map_err(unavailable)?;
                for (id, last_update) in &entries {
                    statement.execute(params![tenant, source, id, last_update]).map_err(unavailable)?;
                }
            }
            transaction.commit().map_err(unavailable)
        })
        .await
    }

    async fn take_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, RegistryError> {
        self.take_lease_row(tenant.to_string(), source.to_owned(), holder, now, until)
            .await
    }

    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        self.release_lease_row(tenant.to_string(), source.to_owned(), holder)
            .await
    }
}

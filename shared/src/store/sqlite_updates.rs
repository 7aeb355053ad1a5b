//! Write-back records in the embedded SQLite store.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::sqlite::unavailable;
use super::updates::{AuditEntry, IDEMPOTENCY_RETENTION_HOURS, KeyClaim, OwnChange};
use super::{Checkpoints, RegistryError, SqliteRegistry, UpdateRecords};
use crate::tenant_id::TenantId;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id        TEXT NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    answer           TEXT,
    running_until_ms INTEGER NOT NULL,
    expires_ms       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE IF NOT EXISTS own_changes (
    tenant_id TEXT NOT NULL,
    kind      TEXT NOT NULL,
    id        TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kind, id)
);
CREATE TABLE IF NOT EXISTS audit (
    tenant_id  TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, at_ms, request_id)
);";

fn corrupt(what: &str, error: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt(format!("{what}: {error}"))
}

#[async_trait]
impl UpdateRecords for SqliteRegistry {
    async fn claim_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        running_until: DateTime<Utc>,
    ) -> Result<KeyClaim, RegistryError> {
        let (tenant, key, fingerprint) =
            (tenant.to_string(), key.to_owned(), fingerprint.to_owned());
        let expires =
            (now + chrono::Duration::hours(IDEMPOTENCY_RETENTION_HOURS)).timestamp_millis();
        let (now, running_until) = (now.timestamp_millis(), running_until.timestamp_millis());
        self.with_connection(move |connection| {
            // One statement decides: a fresh key, an expired one, or one whose request died
            // (unanswered and past its running time) is taken; anything else is read below.
            let taken = connection
                .execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, answer, running_until_ms, expires_ms)
                     VALUES (?1, ?2, ?3, NULL, ?4, ?5)
                     ON CONFLICT (tenant_id, key) DO UPDATE SET
                        fingerprint = excluded.fingerprint, answer = NULL,
                        running_until_ms = excluded.running_until_ms, expires_ms = excluded.expires_ms
                     WHERE idempotency_keys.expires_ms <= ?6
                        OR (idempotency_keys.answer IS NULL AND idempotency_keys.running_until_ms <= ?6
                            AND idempotency_keys.fingerprint = excluded.fingerprint)",
                    params![tenant, key, fingerprint, running_until, expires, now],
                )
                .map_err(unavailable)?;
            if taken == 1 {
                return Ok(KeyClaim::Owned);
            }
            let (stored, answer): (String, Option<String>) = connection
                .query_row(
                    "SELECT fingerprint, answer FROM idempotency_keys WHERE tenant_id = ?1 AND key = ?2",
                    params![tenant, key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(unavailable)?;
            Ok(if stored != fingerprint {
                KeyClaim::OtherRequest
            } else if let Some(answer) = answer {
                KeyClaim::Answered(
                    serde_json::from_str(&answer).map_err(|error| corrupt("idempotency answer", error))?,
                )
            } else {
                KeyClaim::Running
            })
        })
        .await
    }

    async fn answer_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        answer: &serde_json::Value,
    ) -> Result<(), RegistryError> {
        let (tenant, key, fingerprint, answer) = (
            tenant.to_string(),
            key.to_owned(),
            fingerprint.to_owned(),
            answer.to_string(),
        );
        self.with_connection(move |connection| {
            connection
                .execute(
                    "UPDATE idempotency_keys SET answer = ?4
                     WHERE tenant_id = ?1 AND key = ?2 AND fingerprint = ?3",
                    params![tenant, key, fingerprint, answer],
                )
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn release_key(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
    ) -> Result<(), RegistryError> {
        let (tenant, key, fingerprint) =
            (tenant.to_string(), key.to_owned(), fingerprint.to_owned());
        self.with_connection(move |connection| {
            connection
                .execute(
                    "DELETE FROM idempotency_keys
                     WHERE tenant_id = ?1 AND key = ?2 AND fingerprint = ?3 AND answer IS NULL",
                    params![tenant, key, fingerprint],
                )
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn remember_change(&self, change: &OwnChange) -> Result<(), RegistryError> {
        let body = serde_json::to_string(change).map_err(|error| corrupt("own change", error))?;
        let (tenant, kind, id) = (
            change.tenant_id.to_string(),
            change.kind.clone(),
            change.id.clone(),
        );
        self.with_connection(move |connection| {
            connection
                .execute(
                    "INSERT INTO own_changes (tenant_id, kind, id, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant_id, kind, id) DO UPDATE SET body = excluded.body",
                    params![tenant, kind, id, body],
                )
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn own_changes(
        &self,
        tenant: &TenantId,
        kind: &str,
        ids: &[String],
    ) -> Result<HashMap<String, OwnChange>, RegistryError> {
        let (tenant, kind, ids) = (tenant.to_string(), kind.to_owned(), ids.to_vec());
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT body FROM own_changes WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
                )
                .map_err(unavailable)?;
            let mut found = HashMap::new();
            for id in ids {
                let body: Option<String> = statement
                    .query_row(params![tenant, kind, id], |row| row.get(0))
                    .optional()
                    .map_err(unavailable)?;
                if let Some(body) = body {
                    let change: OwnChange = serde_json::from_str(&body)
                        .map_err(|error| corrupt("own change", error))?;
                    found.insert(id, change);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn hold_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        // The leases table already takes and releases conditionally; a target is one more key.
        self.take_lease(tenant, &format!("writeback:{target}"), holder, now, until)
            .await
    }

    async fn release_target(
        &self,
        tenant: &TenantId,
        target: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        self.release_lease(tenant, &format!("writeback:{target}"), holder)
            .await
    }

    async fn record_audit(&self, entry: &AuditEntry) -> Result<(), RegistryError> {
        let body = serde_json::to_string(entry).map_err(|error| corrupt("audit entry", error))?;
        let (tenant, at, request_id) = (
            entry.tenant_id.to_string(),
            entry.at.timestamp_millis(),
            entry.request_id.clone(),
        );
        self.with_connection(move |connection| {
            connection
                .execute(
                    "INSERT OR REPLACE INTO audit (tenant_id, at_ms, request_id, body) VALUES (?1, ?2, ?3, ?4)",
                    params![tenant, at, request_id, body],
                )
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn audit(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let (tenant, since) = (tenant.to_string(), since.timestamp_millis());
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare(
                    "SELECT body FROM audit WHERE tenant_id = ?1 AND at_ms >= ?2 ORDER BY at_ms, request_id",
                )
                .map_err(unavailable)?;
            let bodies = statement
                .query_map(params![tenant, since], |row| row.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            bodies
                .iter()
                .map(|body| serde_json::from_str(body).map_err(|error| corrupt("audit entry", error)))
                .collect()
        })
        .await
    }
}

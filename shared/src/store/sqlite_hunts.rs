//! Fleet hunting's records in the embedded SQLite store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::hunts::{HuntRecord, HuntStatus, SavedHunt, TenantHuntResult};
use super::sqlite::unavailable;
use super::{HuntRecords, RegistryError, SqliteRegistry};
use crate::tenant_id::TenantId;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hunts (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    remaining   INTEGER NOT NULL,
    error_code  TEXT,
    error       TEXT,
    finished_ms INTEGER,
    body        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hunt_results (
    hunt_id   TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (hunt_id, tenant_id)
);
CREATE TABLE IF NOT EXISTS saved_hunts (
    name        TEXT PRIMARY KEY,
    last_run_ms INTEGER,
    last_hunt   TEXT,
    body        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hunt_seen_rows (
    saved      TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (saved, tenant_id, hash)
);";

fn corrupt(what: &str, error: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt(format!("{what}: {error}"))
}

fn time_of(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

fn saved_from(
    body: &str,
    last_run: Option<i64>,
    last_hunt: Option<String>,
) -> Result<SavedHunt, RegistryError> {
    let mut saved: SavedHunt =
        serde_json::from_str(body).map_err(|error| corrupt("saved hunt", error))?;
    saved.last_run_at = time_of(last_run);
    saved.last_hunt_id = last_hunt;
    Ok(saved)
}

#[async_trait]
impl HuntRecords for SqliteRegistry {
    async fn create_hunt(&self, hunt: &HuntRecord) -> Result<(), RegistryError> {
        let body = serde_json::to_string(hunt).map_err(|error| corrupt("hunt", error))?;
        let (id, status, remaining) = (
            hunt.id.clone(),
            hunt.status.as_str(),
            i64::try_from(hunt.remaining).unwrap_or(i64::MAX),
        );
        self.with_connection(move |connection| {
            let inserted = connection
                .execute(
                    "INSERT INTO hunts (id, status, remaining, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO NOTHING",
                    params![id, status, remaining, body],
                )
                .map_err(unavailable)?;
            match inserted {
                1 => Ok(()),
                _ => Err(RegistryError::Conflict(format!("hunt {id}"))),
            }
        })
        .await
    }

    async fn hunt(&self, id: &str) -> Result<Option<HuntRecord>, RegistryError> {
        let id = id.to_owned();
        self.with_connection(move |connection| {
            let row = connection
                .query_row(
                    "SELECT status, remaining, error_code, error, finished_ms, body FROM hunts WHERE id = ?1",
                    params![id],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, Option<i64>>(4)?,
                            row.get::<_, String>(5)?,
                        ))
                    },
                )
                .optional()
                .map_err(unavailable)?;
            let Some((status, remaining, error_code, error, finished, body)) = row else {
                return Ok(None);
            };
            let mut hunt: HuntRecord =
                serde_json::from_str(&body).map_err(|error| corrupt("hunt", error))?;
            hunt.status = HuntStatus::parse(&status)?;
            hunt.remaining = u64::try_from(remaining).unwrap_or(0);
            hunt.error_code = error_code;
            hunt.error = error;
            hunt.finished_at = time_of(finished);
            Ok(Some(hunt))
        })
        .await
    }

    async fn finish_tenant(
        &self,
        hunt_id: &str,
        result: &TenantHuntResult,
    ) -> Result<Option<u64>, RegistryError> {
        let body = serde_json::to_string(result).map_err(|error| corrupt("hunt result", error))?;
        let (hunt_id, tenant) = (hunt_id.to_owned(), result.tenant_id.to_string());
        self.with_connection(move |connection| {
            // One transaction: the result and the decrement land together or not at all.
            let transaction = connection.unchecked_transaction().map_err(unavailable)?;
            let inserted = transaction
                .execute(
                    "INSERT INTO hunt_results (hunt_id, tenant_id, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (hunt_id, tenant_id) DO NOTHING",
                    params![hunt_id, tenant, body],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Ok(None);
            }
            let remaining: Option<i64> = transaction
                .query_row(
                    "UPDATE hunts SET remaining = remaining - 1 WHERE id = ?1 RETURNING remaining",
                    params![hunt_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            let Some(remaining) = remaining else {
                return Err(RegistryError::NotFound(format!("hunt {hunt_id}")));
            };
            transaction.commit().map_err(unavailable)?;
            Ok(Some(u64::try_from(remaining).unwrap_or(0)))
        })
        .await
    }

    async fn tenant_results(&self, hunt_id: &str) -> Result<Vec<TenantHuntResult>, RegistryError> {
        let hunt_id = hunt_id.to_owned();
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare("SELECT body FROM hunt_results WHERE hunt_id = ?1 ORDER BY tenant_id")
                .map_err(unavailable)?;
            let bodies = statement
                .query_map(params![hunt_id], |row| row.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            bodies
                .iter()
                .map(|body| {
                    serde_json::from_str(body).map_err(|error| corrupt("hunt result", error))
                })
                .collect()
        })
        .await
    }

    async fn close_hunt(
        &self,
        hunt_id: &str,
        status: HuntStatus,
        error_code: Option<&str>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let (hunt_id, status) = (hunt_id.to_owned(), status.as_str());
        let (error_code, error) = (error_code.map(str::to_owned), error.map(str::to_owned));
        let at = at.timestamp_millis();
        self.with_connection(move |connection| {
            connection
                .execute(
                    "UPDATE hunts SET status = ?2, error_code = ?3, error = ?4, finished_ms = ?5
                     WHERE id = ?1 AND status = 'running'",
                    params![hunt_id, status, error_code, error, at],
                )
                .map(|changed| changed == 1)
                .map_err(unavailable)
        })
        .await
    }

    async fn save_hunt(&self, saved: &SavedHunt) -> Result<(), RegistryError> {
        let body = serde_json::to_string(saved).map_err(|error| corrupt("saved hunt", error))?;
        let name = saved.name.clone();
        self.with_connection(move |connection| {
            connection
                .execute(
                    "INSERT INTO saved_hunts (name, body) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                    params![name, body],
                )
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn saved_hunt(&self, name: &str) -> Result<Option<SavedHunt>, RegistryError> {
        let name = name.to_owned();
        self.with_connection(move |connection| {
            let row = connection
                .query_row(
                    "SELECT body, last_run_ms, last_hunt FROM saved_hunts WHERE name = ?1",
                    params![name],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Option<i64>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(unavailable)?;
            row.map(|(body, last_run, last_hunt)| saved_from(&body, last_run, last_hunt))
                .transpose()
        })
        .await
    }

    async fn saved_hunts(&self) -> Result<Vec<SavedHunt>, RegistryError> {
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare("SELECT body, last_run_ms, last_hunt FROM saved_hunts ORDER BY name")
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                    ))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(body, last_run, last_hunt)| saved_from(&body, last_run, last_hunt))
                .collect()
        })
        .await
    }

    async fn delete_saved_hunt(&self, name: &str) -> Result<bool, RegistryError> {
        let name = name.to_owned();
        self.with_connection(move |connection| {
            connection
                .execute("DELETE FROM saved_hunts WHERE name = ?1", params![name])
                .map(|deleted| deleted == 1)
                .map_err(unavailable)
        })
        .await
    }

    async fn claim_saved_run(
        &self,
        name: &str,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        hunt_id: &str,
    ) -> Result<bool, RegistryError> {
        let (name, hunt_id) = (name.to_owned(), hunt_id.to_owned());
        let previous = previous.map(|at| at.timestamp_millis());
        let now = now.timestamp_millis();
        self.with_connection(move |connection| {
            connection
                .execute(
                    "UPDATE saved_hunts SET last_run_ms = ?3, last_hunt = ?4
                     WHERE name = ?1 AND last_run_ms IS ?2",
                    params![name, previous, now, hunt_id],
                )
                .map(|changed| changed == 1)
                .map_err(unavailable)
        })
        .await
    }

    async fn claim_new_rows(
        &self,
        saved: &str,
        tenant: &TenantId,
        hashes: &[String],
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError> {
        let (saved, tenant, hashes) = (saved.to_owned(), tenant.to_string(), hashes.to_vec());
        let (now, expires) = (now.timestamp_millis(), expires.timestamp_millis());
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "INSERT INTO hunt_seen_rows (saved, tenant_id, hash, expires_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (saved, tenant_id, hash) DO UPDATE SET expires_ms = excluded.expires_ms
                     WHERE hunt_seen_rows.expires_ms <= ?5",
                )
                .map_err(unavailable)?;
            let mut new = Vec::new();
            for hash in hashes {
                let taken = statement
                    .execute(params![saved, tenant, hash, expires, now])
                    .map_err(unavailable)?;
                if taken == 1 {
                    new.push(hash);
                }
            }
            Ok(new)
        })
        .await
    }

    async fn release_rows(
        &self,
        saved: &str,
        tenant: &TenantId,
        hashes: &[String],
    ) -> Result<(), RegistryError> {
        let (saved, tenant, hashes) = (saved.to_owned(), tenant.to_string(), hashes.to_vec());
        self.with_connection(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "DELETE FROM hunt_seen_rows WHERE saved = ?1 AND tenant_id = ?2 AND hash = ?3",
                )
                .map_err(unavailable)?;
            for hash in hashes {
                statement
                    .execute(params![saved, tenant, hash])
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }
}

//! The embedded registry: one SQLite file, the default when no DynamoDB table is configured.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::attempts::classify_failed_consume;
use super::record::{Ownership, format_time, parse_time, stored_now};
use super::{
    AttemptStatus, Checkpoint, Checkpoints, ConsentAttempt, ConsentAttempts, ConsumeError,
    RegistryError, TenantRecord, TenantRegistry,
};
use crate::tenant_id::TenantId;

#[derive(Clone)]
pub struct SqliteRegistry {
    connection: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id     TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    customer_ref  TEXT,
    status        TEXT NOT NULL,
    roles         TEXT NOT NULL,
    status_reason TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    version       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consent_attempts (
    nonce        TEXT PRIMARY KEY,
    customer_ref TEXT NOT NULL,
    link         TEXT NOT NULL,
    status       TEXT NOT NULL,
    tenant_id    TEXT,
    detail       TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);";

const CHECKPOINT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant_id TEXT NOT NULL,
    source    TEXT NOT NULL,
    body      TEXT NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source)
);
CREATE TABLE IF NOT EXISTS ledger (
    tenant_id   TEXT NOT NULL,
    source      TEXT NOT NULL,
    id          TEXT NOT NULL,
    last_update TEXT NOT NULL,
    PRIMARY KEY (tenant_id, source, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    tenant_id TEXT NOT NULL,
    source    TEXT NOT NULL,
    holder    TEXT NOT NULL,
    until_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source)
);";

const ATTEMPT_COLUMNS: &str =
    "nonce, customer_ref, link, status, tenant_id, detail, created_at, expires_at, updated_at";

const COLUMNS: &str = "tenant_id, display_name, customer_ref, status, roles, status_reason, created_at, updated_at, version, ownership";

/// Columns added after the first release, added to an older file when it is opened.
const ADDED_COLUMNS: [(&str, &str); 1] = [("tenants", "ownership TEXT")];

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file and its folder.
    pub fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                RegistryError::Unavailable(format!("cannot create {}: {error}", parent.display()))
            })?;
        }
        let connection = Connection::open(path).map_err(unavailable)?;
        Self::prepare(connection)
    }

    /// A registry that lives only as long as the process (tests).
    pub fn in_memory() -> Result<SqliteRegistry, RegistryError> {
        Self::prepare(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn prepare(connection: Connection) -> Result<SqliteRegistry, RegistryError> {
        // WAL lets the operator command read while a function writes.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        add_missing_columns(&connection)?;
        connection
            .execute_batch(CHECKPOINT_SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_signed_in::SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_updates::SCHEMA)
            .map_err(unavailable)?;
        connection
            .execute_batch(super::sqlite_hunts::SCHEMA)
            .map_err(unavailable)?;
        Ok(SqliteRegistry {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    pub(super) async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection
                .lock()
                .map_err(|_| RegistryError::Unavailable("registry lock poisoned".into()))?;
            work(&connection)
        })
        .await
        .map_err(|error| RegistryError::Unavailable(format!("registry task failed: {error}")))?
    }
}

/// Brings a file written by an older release up to the current columns; a row from before a
/// column existed reads as that column's default.
fn add_missing_columns(connection: &Connection) -> Result<(), RegistryError> {
    for (table, column) in ADDED_COLUMNS {
        let name = column.split_whitespace().next().unwrap_or(column);
        let present: bool = connection
            .query_row(
                &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![name],
                |row| row.get::<_, i64>(0),
            )
            .map_err(unavailable)?
            > 0;
        if !present {
            connection
                .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column}"))
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

pub(super) fn unavailable(error: rusqlite::Error) -> RegistryError {
    RegistryError::Unavailable(format!("sqlite: {error}"))
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TenantRecord, String>> {
    let tenant_id: String = row.get(0)?;
    let status: String = row.get(3)?;
    let roles: String = row.get(4)?;
    let created_at: String = row.get(6)?;
    let updated_at: String = row.get(7)?;
    let version: i64 = row.get(8)?;
    let display_name: String = row.get(1)?;
    let customer_ref: Option<String> = row.get(2)?;
    let status_reason: Option<String> = row.get(5)?;
    let ownership: Option<String> = row.get(9)?;
    Ok((|| {
        Ok(TenantRecord {
            tenant_id: TenantId::parse(&tenant_id).map_err(|error| error.to_string())?,
            display_name,
            customer_ref,
            status: status.parse()?,
            roles: serde_json::from_str(&roles).map_err(|error| error.to_string())?,
            status_reason,
            ownership: Ownership::from_stored(ownership.as_deref())?,
            created_at: parse_time(&created_at)?,
            updated_at: parse_time(&updated_at)?,
            version: u64::try_from(version).map_err(|error| error.to_string())?,
        })
    })())
}

fn read_attempt(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ConsentAttempt, String>> {
    let texts: Vec<Option<String>> = (0..9)
        .map(|index| row.get(index))
        .collect::<Result<_, _>>()?;
    Ok((|| {
        let required = |index: usize| {
            texts[index]
                .clone()
                .ok_or_else(|| format!("column {index} is null"))
        };
        Ok(ConsentAttempt {
            nonce: required(0)?,
            customer_ref: required(1)?,
            link: required(2)?,
            status: required(3)?.parse()?,
            tenant_id: texts[4]
                .as_deref()
                .map(TenantId::parse)
                .transpose()
                .map_err(|error| error.to_string())?,
            detail: texts[5].clone(),
            created_at: parse_time(&required(6)?)?,
            expires_at: parse_time(&required(7)?)?,
            updated_at: parse_time(&required(8)?)?,
        })
    })())
}

fn select_attempt(
    connection: &Connection,
    nonce: &str,
) -> Result<Option<ConsentAttempt>, RegistryError> {
    connection
        .query_row(
            &format!("SELECT {ATTEMPT_COLUMNS} FROM consent_attempts WHERE nonce = ?1"),
            params![nonce],
            read_attempt,
        )
        .optional()
        .map_err(unavailable)?
        .transpose()
        .map_err(RegistryError::Corrupt)
}

fn roles_json(record: &TenantRecord) -> String {
    serde_json::to_string(&record.roles).expect("a list of strings serialises")
}

#[async_trait]
impl TenantRegistry for SqliteRegistry {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, RegistryError> {
        let tenant = tenant.to_string();
        self.with_connection(move |connection| {
            connection
                .query_row(
                    &format!("SELECT {COLUMNS} FROM tenants WHERE tenant_id = ?1"),
                    params![tenant],
                    read_row,
                )
                .optional()
                .map_err(unavailable)?
                .transpose()
                .map_err(RegistryError::Corrupt)
        })
        .await
    }

    async fn insert(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        let record = record.clone();
        self.with_connection(move |connection| {
            let inserted = connection
                .execute(
                    &format!(
                        "INSERT INTO tenants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT(tenant_id) DO NOTHING"
                    ),
                    params![
                        record.tenant_id.as_str(),
                        record.display_name,
                        record.customer_ref,
                        record.status.as_str(),
                        roles_json(&record),
                        record.status_reason,
                        format_time(&record.created_at),
                        format_time(&record.updated_at),
                        record.version as i64,
                        record.ownership.as_str(),
                    ],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(RegistryError::Conflict(record.tenant_id.to_string()));
            }
            Ok(())
        })
        .await
    }

    async fn replace(&self, record: &TenantRecord) -> Result<(), RegistryError> {
        let record = record.clone();
        self.with_connection(move |connection| {
            let updated = connection
                .execute(
                    "UPDATE tenants SET display_name = ?2, customer_ref = ?3, status = ?4, roles = ?5,
                        status_reason = ?6, created_at = ?7, updated_at = ?8, version = ?9 + 1,
                        ownership = ?10
                     WHERE tenant_id = ?1 AND version = ?9",
                    params![
                        record.tenant_id.as_str(),
                        record.display_name,
                        record.customer_ref,
                        record.status.as_str(),
                        roles_json(&record),
                        record.status_reason,
                        format_time(&record.created_at),
                        format_time(&record.updated_at),
                        record.version as i64,
                        record.ownership.as_str(),
                    ],
                )
                .map_err(unavailable)?;
            if updated == 0 {
                return Err(RegistryError::Conflict(record.tenant_id.to_string()));
            }
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        self.with_connection(|connection| {
            let mut statement = connection
                .prepare(&format!("SELECT {COLUMNS} FROM tenants ORDER BY tenant_id"))
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], read_row)
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(RegistryError::Corrupt)
        })
        .await
    }
}

#[async_trait]
impl ConsentAttempts for SqliteRegistry {
    async fn issue(&self, attempt: &ConsentAttempt) -> Result<(), RegistryError> {
        let attempt = attempt.clone();
        self.with_connection(move |connection| {
            let inserted = connection
                .execute(
                    &format!(
                        "INSERT INTO consent_attempts ({ATTEMPT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT(nonce) DO NOTHING"
                    ),
                    params![
                        attempt.nonce,
                        attempt.customer_ref,
                        attempt.link,
                        attempt.status.as_str(),
                        attempt.tenant_id.as_ref().map(TenantId::as_str),
                        attempt.detail,
                        format_time(&attempt.created_at),
                        format_time(&attempt.expires_at),
                        format_time(&attempt.updated_at),
                    ],
                )
                .map_err(unavailable)?;
            if inserted == 0 {
                return Err(RegistryError::Conflict(format!("consent attempt {}", attempt.nonce)));
            }
            Ok(())
        })
        .await
    }

    async fn consume(
        &self,
        nonce: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ConsentAttempt, ConsumeError> {
        let nonce = nonce.to_owned();
        self.with_connection(move |connection| {
            let consumed = connection
                .execute(
                    "UPDATE consent_attempts SET status = 'consumed', updated_at = ?3
                     WHERE nonce = ?1 AND status = 'issued' AND expires_at > ?2",
                    params![nonce, format_time(&now), format_time(&stored_now())],
                )
                .map_err(unavailable)?;
            let stored = select_attempt(connection, &nonce)?;
            Ok(match (consumed, stored) {
                (1, Some(attempt)) => Ok(attempt),
                (_, stored) => Err(classify_failed_consume(stored.as_ref(), now)),
            })
        })
        .await?
    }

    async fn finish(
        &self,
        nonce: &str,
        status: AttemptStatus,
        tenant_id: Option<&TenantId>,
        detail: Option<&str>,
    ) -> Result<(), RegistryError> {
        let (nonce, tenant_id, detail) = (
            nonce.to_owned(),
            tenant_id.map(|id| id.to_string()),
            detail.map(str::to_owned),
        );
        self.with_connection(move |connection| {
            let updated = connection
                .execute(
                    "UPDATE consent_attempts SET status = ?2, tenant_id = COALESCE(?3, tenant_id),
                        detail = ?4, updated_at = ?5 WHERE nonce = ?1",
                    params![
                        nonce,
                        status.as_str(),
                        tenant_id,
                        detail,
                        format_time(&stored_now())
                    ],
                )
                .map_err(unavailable)?;
            if updated == 0 {
                return Err(RegistryError::NotFound(format!("consent attempt {nonce}")));
            }
            Ok(())
        })
        .await
    }

    async fn attempt(&self, nonce: &str) -> Result<Option<ConsentAttempt>, RegistryError> {
        let nonce = nonce.to_owned();
        self.with_connection(move |connection| select_attempt(connection, &nonce))
            .await
    }
}

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
            let mut statement = connection
                .prepare("SELECT body, version FROM checkpoints ORDER BY tenant_id, source")
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
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
        let (tenant, source, holder) = (tenant.to_string(), source.to_owned(), holder.to_owned());
        let (now_ms, until_ms) = (now.timestamp_millis(), until.timestamp_millis());
        self.with_connection(move |connection| {
            // One statement: the row is written only if it is new, expired or already ours.
            let changed = connection
                .execute(
                    "INSERT INTO leases (tenant_id, source, holder, until_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(tenant_id, source) DO UPDATE
                        SET holder = excluded.holder, until_ms = excluded.until_ms
                        WHERE leases.until_ms <= ?5 OR leases.holder = excluded.holder",
                    params![tenant, source, holder, until_ms, now_ms],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_lease(
        &self,
        tenant: &TenantId,
        source: &str,
        holder: &str,
    ) -> Result<(), RegistryError> {
        let (tenant, source, holder) = (tenant.to_string(), source.to_owned(), holder.to_owned());
        self.with_connection(move |connection| {
            connection
                .execute(
                    "DELETE FROM leases WHERE tenant_id = ?1 AND source = ?2 AND holder = ?3",
                    params![tenant, source, holder],
                )
                .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let registry = SqliteRegistry::in_memory().unwrap();
        crate::tenants::conformance::run(&registry).await;
    }

    #[tokio::test]
    async fn a_file_registry_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("dp-registry-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested/registry.sqlite");
        let record = crate::tenants::TenantRecord::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap(),
            "Contoso",
            crate::tenants::TenantStatus::Active,
        );
        SqliteRegistry::open(&path)
            .unwrap()
            .upsert(&record)
            .await
            .unwrap();
        let reopened = SqliteRegistry::open(&path).unwrap();
        assert_eq!(reopened.list().await.unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
mod concurrency_tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_upserts_leave_one_record() {
        let registry: Arc<dyn TenantRegistry> = Arc::new(SqliteRegistry::in_memory().unwrap());
        crate::tenants::conformance::concurrent_upserts_leave_one_record(registry).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lease_takers_one_winner() {
        let store: Arc<dyn Checkpoints> = Arc::new(SqliteRegistry::in_memory().unwrap());
        crate::tenants::conformance::concurrent_lease_takers_one_winner(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_consumers_one_winner() {
        let store: Arc<dyn ConsentAttempts> = Arc::new(SqliteRegistry::in_memory().unwrap());
        crate::tenants::conformance::concurrent_consumers_one_winner(store).await;
    }

    #[tokio::test]
    async fn passes_the_hunting_conformance_suite() {
        let store = SqliteRegistry::in_memory().unwrap();
        crate::tenants::conformance_hunts::run(&store).await;
        crate::tenants::conformance_hunts::concurrent_finishers_one_sees_zero(Arc::new(store))
            .await;
    }

    #[tokio::test]
    async fn passes_the_write_back_conformance_suite() {
        let store = SqliteRegistry::in_memory().unwrap();
        crate::tenants::conformance_updates::run(&store).await;
        crate::tenants::conformance_updates::concurrent_key_claims_one_owner(Arc::new(store)).await;
    }
}
